//! Optional authentication: HTTP Basic (what Chronos clients send) or a bearer token, from
//! the `[auth]` section of the config, each with a role (`roles.rs`), and a limit on failed
//! logins per address (`logins.rs`). With neither configured every endpoint is open;
//! otherwise all but `/health` and `/ping` need credentials (and the cluster's `/internal/`
//! routes, which check the cluster secret instead, and `/api/agents/connect`, where agents
//! prove themselves with their own credentials).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{AUTHORIZATION, RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use super::error::ApiError;
use super::roles::Role;
use crate::config::AuthConfig;

/// Where agents connect, with credentials of their own (`agent_tokens.rs`).
const AGENTS_CONNECT: &str = "/api/agents/connect";

/// Paths answered without credentials: probes must work for load balancers.
const OPEN_PATHS: &[&str] = &["/health", "/ping"];

/// The accepted credentials, kept as the exact header values they would arrive as, each with
/// its role.
#[derive(Debug, Default)]
pub struct Credentials {
    /// `user:password` pairs, decoded form.
    basic: Vec<(Vec<u8>, Role)>,
    tokens: Vec<(Vec<u8>, Role)>,
}

impl Credentials {
    pub fn from_config(config: &AuthConfig) -> Option<Arc<Credentials>> {
        if config.basic.is_empty() && config.tokens.is_empty() {
            return None;
        }
        let basic = config
            .basic
            .iter()
            .map(|user| {
                let pair = format!("{}:{}", user.user, user.password).into_bytes();
                (pair, user.role)
            })
            .collect();
        let tokens = config
            .tokens
            .iter()
            .map(|t| (t.secret().as_bytes().to_vec(), t.role()))
            .collect();
        Some(Arc::new(Credentials { basic, tokens }))
    }

    /// The role of the credentials an `Authorization` header value carries; None when none
    /// is accepted. Every configured credential is compared, in constant time, whatever
    /// matched first (the same credential listed twice: the higher role).
    pub fn role_of(&self, header: &[u8]) -> Option<Role> {
        let (scheme, rest) = match header.iter().position(|b| *b == b' ') {
            Some(space) => (&header[..space], trim(&header[space + 1..])),
            None => return None,
        };
        let (candidate, accepted) = if scheme.eq_ignore_ascii_case(b"basic") {
            (decode_base64(rest)?, &self.basic)
        } else if scheme.eq_ignore_ascii_case(b"bearer") {
            (rest.to_vec(), &self.tokens)
        } else {
            return None;
        };
        accepted.iter().fold(None, |found, (secret, role)| {
            match constant_time_eq(&candidate, secret) {
                true => found.max(Some(*role)),
                false => found,
            }
        })
    }

    /// Whether an `Authorization` header value carries accepted credentials.
    pub fn accepts(&self, header: &[u8]) -> bool {
        self.role_of(header).is_some()
    }
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != b' ').unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| *b != b' ')
        .map_or(start, |e| e + 1);
    &bytes[start..end]
}

/// Compares without an early exit: the time taken depends on the lengths only.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut difference = u8::from(a.len() != b.len());
    for (i, byte) in a.iter().enumerate() {
        let other = b.get(i % b.len().max(1)).copied().unwrap_or(0);
        difference |= byte ^ other;
    }
    std::hint::black_box(difference) == 0
}

/// Standard base64 (RFC 4648, with or without `=` padding); None when malformed.
fn decode_base64(input: &[u8]) -> Option<Vec<u8>> {
    fn value(byte: u8) -> Option<u32> {
        Some(match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let unpadded = input
        .strip_suffix(b"==")
        .or_else(|| input.strip_suffix(b"="));
    let data = unpadded.unwrap_or(input);
    if (unpadded.is_some() && !input.len().is_multiple_of(4)) || data.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(data.len() * 3 / 4);
    for chunk in data.chunks(4) {
        let mut bits = 0u32;
        for (i, byte) in chunk.iter().enumerate() {
            bits |= value(*byte)? << (18 - 6 * i);
        }
        let bytes = bits.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

/// The middleware: lets a request through when auth is off, the path is open, or the
/// credentials are accepted and their role allows the call; answers 401, 403 (the role
/// needed named), or 429 to an address that sent too many refused credentials.
pub async fn require(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(credentials) = state.auth.as_deref() else {
        return next.run(request).await;
    };
    let path = request.uri().path();
    // The cluster's internal routes check the cluster secret themselves, and the agents'
    // endpoint their credentials (never the API's).
    let own_check = path.starts_with(super::INTERNAL_PREFIX) || path == AGENTS_CONNECT;
    if OPEN_PATHS.contains(&path) || own_check {
        return next.run(request).await;
    }
    let address = client_address(request.extensions());
    let now = Instant::now();
    if let Some(wait) = address.and_then(|a| state.failed_logins.blocked_for(a, now)) {
        return too_many_failed_logins(wait);
    }
    let header = request.headers().get(AUTHORIZATION);
    match header.and_then(|header| credentials.role_of(header.as_bytes())) {
        Some(role) => {
            let needed = Role::needed(request.method(), path);
            if role >= needed {
                return next.run(request).await;
            }
            role_refused(role, needed, request.method(), path)
        }
        None => {
            // Only credentials sent and refused count: not a browser's first request.
            if let (Some(address), Some(_)) = (address, header) {
                state.failed_logins.failed(address, now);
            }
            let mut response =
                ApiError::new(StatusCode::UNAUTHORIZED, "authentication required").into_response();
            response.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"dron\""),
            );
            response
        }
    }
}

fn role_refused(role: Role, needed: Role, method: &Method, path: &str) -> Response {
    let error = format!(
        "the {} role may not {method} {path}: it needs the {} role",
        role.name(),
        needed.name()
    );
    let body = json!({"error": error, "role": role.name(), "roleNeeded": needed.name()});
    (StatusCode::FORBIDDEN, Json(body)).into_response()
}

/// The client's address, as the server's accept loop records it (None in unit tests).
pub(super) fn client_address(extensions: &axum::http::Extensions) -> Option<IpAddr> {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| peer.ip())
}

/// 429 with `Retry-After`: the address sent too many refused credentials (API or agents').
pub(super) fn too_many_failed_logins(wait: Duration) -> Response {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let error = format!("too many refused credentials from this address: try again in {seconds} s");
    let mut response =
        (StatusCode::TOO_MANY_REQUESTS, Json(json!({"error": error}))).into_response();
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(seconds));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ApiToken, BasicUser, RoleToken};

    fn credentials() -> Arc<Credentials> {
        Credentials::from_config(&AuthConfig {
            basic: vec![BasicUser {
                user: "ops".into(),
                password: "s3cret:x".into(),
                role: Role::Operate,
            }],
            tokens: vec![
                "tok-123".into(),
                ApiToken::WithRole(RoleToken {
                    token: "reader".into(),
                    role: Role::Read,
                }),
            ],
        })
        .unwrap()
    }

    #[test]
    fn base64_decodes_padded_and_unpadded() {
        assert_eq!(decode_base64(b"b3BzOnMzY3JldA==").unwrap(), b"ops:s3cret");
        assert_eq!(decode_base64(b"b3BzOnMzY3JldA").unwrap(), b"ops:s3cret");
        assert_eq!(decode_base64(b"Zm9v").unwrap(), b"foo");
        assert_eq!(decode_base64(b"").unwrap(), b"");
        assert!(decode_base64(b"Zm9v!").is_none());
        assert!(decode_base64(b"Z").is_none());
    }

    #[test]
    fn accepts_basic_and_bearer_only_when_exact() {
        let credentials = credentials();
        // "ops:s3cret:x": the password may itself hold a colon.
        assert!(credentials.accepts(b"Basic b3BzOnMzY3JldDp4"));
        assert!(credentials.accepts(b"basic  b3BzOnMzY3JldDp4 "));
        assert!(credentials.accepts(b"Bearer tok-123"));
        assert!(!credentials.accepts(b"Bearer tok-12"));
        assert!(!credentials.accepts(b"Bearer tok-1234"));
        assert!(!credentials.accepts(b"Basic b3BzOnMzY3JldA=="));
        assert!(!credentials.accepts(b"Bearer"));
        assert!(!credentials.accepts(b"Digest tok-123"));
    }

    #[test]
    fn each_credential_carries_its_role() {
        let credentials = credentials();
        assert_eq!(credentials.role_of(b"Bearer tok-123"), Some(Role::Admin));
        assert_eq!(credentials.role_of(b"Bearer reader"), Some(Role::Read));
        assert_eq!(
            credentials.role_of(b"Basic b3BzOnMzY3JldDp4"),
            Some(Role::Operate)
        );
        assert_eq!(credentials.role_of(b"Bearer nobody"), None);
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(!constant_time_eq(b"a", b""));
    }

    #[test]
    fn no_credentials_means_no_auth() {
        assert!(Credentials::from_config(&AuthConfig::default()).is_none());
    }
}
