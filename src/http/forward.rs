//! Any server answers every request: in a cluster, a server that is not scheduling passes
//! each API request to the leader and answers what the leader answered (status, headers and
//! body as they are). A request already forwarded once is never forwarded again, so two
//! servers with stale views cannot bounce it between them.
//!
//! Not forwarded: what a server answers about itself (`/health`, `/ping`, `/metrics`,
//! `/api/cluster`, `/api/backup` of its own stores), the agents' WebSocket (`/api/agents/connect` tells an agent where the
//! leader is instead), the cluster's own traffic (`/internal/...`) and the UI's files.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use super::json::MAX_BODY_BYTES;

/// Set on a forwarded request: the id of the server that forwarded it.
pub const FORWARDED_BY: &str = "x-dron-forwarded-by";

/// How long connecting to the leader may take before the request is answered 503.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest silence while reading the leader's answer (a reshard may take a while, a
/// followed log answers within seconds).
const READ_TIMEOUT: Duration = Duration::from_secs(300);

/// The HTTP client requests travel to the leader through.
pub struct Forwarder {
    http: reqwest::Client,
}

impl Forwarder {
    pub fn new(ca: Option<&crate::tls::TrustedCa>) -> Forwarder {
        let builder = reqwest::Client::builder()
            // The leader's answer goes back as it is, redirects included.
            .redirect(reqwest::redirect::Policy::none())
            // Servers reach each other directly, whatever proxy the environment names.
            .no_proxy()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT);
        let http = crate::tls::with_ca(builder, ca).build().unwrap_or_default();
        Forwarder { http }
    }
}

/// Whether requests to `path` go to the leader when this server does not schedule.
pub fn forwarded_path(path: &str) -> bool {
    const OWN: &[&str] = &[
        "/health",
        "/ping",
        "/metrics",
        "/api/cluster",
        "/api/agents/connect",
        "/api/backup",
        "/",
        "/ui",
    ];
    !(OWN.contains(&path) || path.starts_with("/ui/") || path.starts_with(super::INTERNAL_PREFIX))
}

/// The middleware: passes the request on where this server schedules (or is a single
/// server), else to the leader.
pub async fn to_leader(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(view) = &state.cluster else {
        return next.run(request).await;
    };
    if !forwarded_path(request.uri().path()) || view.scheduling() {
        return next.run(request).await;
    }
    let status = view.status();
    if status.scheduling {
        return next.run(request).await;
    }
    let this_node = status.this_node;
    if let Some(by) = request.headers().get(FORWARDED_BY) {
        let by = String::from_utf8_lossy(by.as_bytes()).into_owned();
        let message = format!(
            "node {by} forwarded this request to node {this_node}, which does not lead either \
             (it was elected or deposed meanwhile); a request is forwarded once only: retry shortly"
        );
        counted("loop");
        return unavailable(&message, status.leader_address.as_deref());
    }
    let (leader, address) = match (status.leader, status.leader_address) {
        (Some(leader), address) if leader == this_node => {
            let message =
                "this server was elected leader and is recovering its shards; retry shortly";
            counted("recovering");
            return unavailable(message, address.as_deref());
        }
        (Some(leader), Some(address)) => (leader, address),
        _ => {
            counted("no_leader");
            return unavailable("no leader is elected yet; retry shortly", None);
        }
    };
    let forwarder = state.forwarder.as_deref().expect("set with the cluster");
    forward(forwarder, request, this_node, leader, &address).await
}

/// Counts `dron_api_forwarded_total{outcome}`: `forwarded` (the leader answered), or why
/// not: `no_leader`, `unreachable`, `loop` (forwarded already), `recovering` (elected here).
fn counted(outcome: &'static str) {
    metrics::counter!("dron_api_forwarded_total", "outcome" => outcome).increment(1);
}

/// 503 with `Retry-After: 1` and `{"error", "leader"}` (the leader's address, or null).
pub fn unavailable(message: &str, leader: Option<&str>) -> Response {
    let body = json!({ "error": message, "leader": leader });
    let mut response = (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

async fn forward(
    forwarder: &Forwarder,
    request: Request,
    this_node: u64,
    leader: u64,
    address: &str,
) -> Response {
    let path = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let url = format!("{}{path}", address.trim_end_matches('/'));
    let method = request.method().clone();
    let mut headers = without_hop_by_hop(request.headers());
    // The body is read whole here: the leader gets its length, and nothing to continue.
    headers.remove(header::HOST);
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::EXPECT);
    headers.insert(FORWARDED_BY, HeaderValue::from(this_node));
    // Read under the API's body limit (the layer outside this one sets it), as a handler would.
    let body = match Bytes::from_request(request, &()).await {
        Ok(body) => body,
        Err(rejection) => {
            let status = rejection.status();
            let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
                format!("request body is larger than {MAX_BODY_BYTES} bytes")
            } else {
                format!("could not read the request body: {rejection}")
            };
            return super::error::ApiError::new(status, message).into_response();
        }
    };
    let sent = forwarder
        .http
        .request(method, &url)
        .headers(headers)
        .body(body)
        .send()
        .await;
    let answer = match sent {
        Ok(answer) => {
            counted("forwarded");
            answer
        }
        Err(error) => {
            tracing::warn!(leader, address, %error, "the leader did not answer a forwarded request");
            let message = format!(
                "this server does not lead, and the leader (node {leader} at {address}) cannot \
                 be reached: {}; retry shortly",
                chain(&error)
            );
            counted("unreachable");
            return unavailable(&message, Some(address));
        }
    };
    let status = answer.status();
    let headers = without_hop_by_hop(answer.headers());
    // The body streams through as the leader sends it (a large listing, a run's output).
    let body = futures_util::stream::unfold(Some(answer), |answer| async move {
        let mut answer = answer?;
        match answer.chunk().await {
            Ok(Some(chunk)) => Some((Ok(chunk), Some(answer))),
            Ok(None) => None,
            Err(error) => Some((Err(error), None)),
        }
    });
    let mut response = Response::new(Body::from_stream(body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// Headers meant for one hop only (RFC 9110 section 7.6.1), and any the `Connection` header
/// names, are not passed on.
fn without_hop_by_hop(headers: &HeaderMap) -> HeaderMap {
    const HOP_BY_HOP: &[&str] = &[
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ];
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .collect();
    let mut kept = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let name_text = name.as_str();
        if HOP_BY_HOP.contains(&name_text) || named.iter().any(|n| n == name_text) {
            continue;
        }
        kept.append(HeaderName::clone(name), value.clone());
    }
    kept
}

/// An error and its causes, `: `-separated.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_forwarded() {
        for path in [
            "/scheduler/jobs",
            "/v1/scheduler/iso8601",
            "/api/jobs/a/runs",
            "/resources",
        ] {
            assert!(forwarded_path(path), "{path}");
        }
        for path in [
            "/health",
            "/ping",
            "/metrics",
            "/api/cluster",
            "/api/agents/connect",
        ] {
            assert!(!forwarded_path(path), "{path}");
        }
        for path in ["/", "/ui", "/ui/", "/ui/app.js", "/internal/raft/append"] {
            assert!(!forwarded_path(path), "{path}");
        }
        assert!(
            forwarded_path("/api/agents"),
            "the agents' list is the leader's"
        );
    }

    #[test]
    fn hop_by_hop_headers_stay() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-private"),
        );
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("x-private", HeaderValue::from_static("1"));
        headers.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        headers.insert("authorization", HeaderValue::from_static("Bearer t"));
        headers.append("x-many", HeaderValue::from_static("a"));
        headers.append("x-many", HeaderValue::from_static("b"));
        let kept = without_hop_by_hop(&headers);
        let names: Vec<&str> = kept.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["authorization", "x-many"]);
        assert_eq!(kept.get_all("x-many").iter().count(), 2);
    }
}
