//! Refuses changes asked by other web sites. The API reads JSON bodies whatever their
//! `Content-Type` (Chronos clients send all kinds), so without this a page an operator visits
//! could post a job, a command to run, to a dron their browser reaches, with the browser's
//! cached credentials. Browsers say where a request comes from in `Sec-Fetch-Site`; the UI's
//! own requests are `same-origin` (behind a proxy too, since the browser computes it), and
//! clients that are not browsers do not send it.
//!
//! And refuses requests for other names on a loopback server ([`HostNames`], DNS rebinding).

use axum::extract::Request;
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

/// What a browser says of a request it was asked for by another site.
const SEC_FETCH_SITE: &str = "sec-fetch-site";

pub async fn refuse_cross_site_writes(request: Request, next: Next) -> Response {
    let reads = [Method::GET, Method::HEAD, Method::OPTIONS];
    let site = request.headers().get(SEC_FETCH_SITE);
    let from_elsewhere = site.is_some_and(|s| s != "same-origin" && s != "none");
    if reads.contains(request.method()) || !from_elsewhere {
        return next.run(request).await;
    }
    let message =
        "a change asked by another web site is refused (Sec-Fetch-Site is not same-origin)";
    ApiError::new(StatusCode::FORBIDDEN, message).into_response()
}

/// The names a server listening on a loopback address answers to: loopback names, and those
/// configured (`allowed_hosts`). A web page can have its own domain resolve to 127.0.0.1
/// (DNS rebinding) and then call the API as same-origin, but its requests carry its domain in
/// `Host`: refused here.
#[derive(Debug, Clone)]
pub struct HostNames {
    allowed: Vec<String>,
}

impl HostNames {
    pub fn new(allowed: &[String]) -> HostNames {
        let allowed = allowed
            .iter()
            .map(|name| name.to_ascii_lowercase())
            .collect();
        HostNames { allowed }
    }

    /// Whether a `Host` header value (a name or address, with or without a port) is one of
    /// this server's names.
    pub fn accepts(&self, host: &str) -> bool {
        let host = host.trim().to_ascii_lowercase();
        let name = match host.strip_prefix('[') {
            // [::1]:4400
            Some(rest) => rest.split(']').next().unwrap_or_default(),
            None => host
                .rsplit_once(':')
                .map_or(host.as_str(), |(name, _)| name),
        };
        let loopback = name == "localhost"
            || name.ends_with(".localhost")
            || name
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        loopback || self.allowed.iter().any(|allowed| *allowed == name)
    }
}

/// The middleware: on a loopback server, refuses requests whose `Host` is not one of its
/// names (403, JSON). A request without `Host` (HTTP/1.0 tools) passes: browsers always
/// send one.
pub async fn refuse_foreign_hosts(
    axum::extract::State(names): axum::extract::State<Option<std::sync::Arc<HostNames>>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(names) = names else {
        return next.run(request).await;
    };
    let host = request
        .headers()
        .get(axum::http::header::HOST)
        .map(|host| String::from_utf8_lossy(host.as_bytes()).into_owned());
    match host {
        Some(host) if !names.accepts(&host) => {
            let message = format!(
                "Host '{host}' is not a name of this server (it listens on a loopback address: \
                 add the name to allowed_hosts in the config if it is yours)"
            );
            ApiError::new(StatusCode::FORBIDDEN, message).into_response()
        }
        _ => next.run(request).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names_and_configured_ones_are_accepted() {
        let names = HostNames::new(&["Dron.Internal".to_string()]);
        for host in [
            "localhost",
            "localhost:4400",
            "127.0.0.1:4400",
            "127.0.0.2",
            "[::1]:4400",
            "ui.localhost:80",
            "dron.internal:4400",
        ] {
            assert!(names.accepts(host), "{host}");
        }
        for host in [
            "attacker.example",
            "attacker.example:4400",
            "10.0.0.1",
            "[::2]:1",
            "",
        ] {
            assert!(!names.accepts(host), "{host}");
        }
    }
}
