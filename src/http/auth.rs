//! Optional authentication: HTTP Basic (what Chronos clients send) or a bearer token, from
//! the `[auth]` section of the config. With neither configured every endpoint is open;
//! otherwise all but `/health` and `/ping` need credentials (and the cluster's `/internal/`
//! routes, which check the cluster secret instead, and `/api/agents/connect`, where agents
//! prove themselves with their own credentials).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::ApiError;
use crate::config::AuthConfig;

/// Where agents connect, with credentials of their own (`agent_tokens.rs`).
const AGENTS_CONNECT: &str = "/api/agents/connect";

/// Paths answered without credentials: probes must work for load balancers.
const OPEN_PATHS: &[&str] = &["/health", "/ping"];

/// The accepted credentials, kept as the exact header values they would arrive as.
#[derive(Debug, Default)]
pub struct Credentials {
    /// `user:password` pairs, decoded form.
    basic: Vec<Vec<u8>>,
    tokens: Vec<Vec<u8>>,
}

impl Credentials {
    pub fn from_config(config: &AuthConfig) -> Option<Arc<Credentials>> {
        if config.basic.is_empty() && config.tokens.is_empty() {
            return None;
        }
        let basic = config
            .basic
            .iter()
            .map(|user| format!("{}:{}", user.user, user.password).into_bytes())
            .collect();
        let tokens = config
            .tokens
            .iter()
            .map(|t| t.as_bytes().to_vec())
            .collect();
        Some(Arc::new(Credentials { basic, tokens }))
    }

    /// Whether an `Authorization` header value carries accepted credentials. Every
    /// configured credential is compared, in constant time, whatever matched first.
    pub fn accepts(&self, header: &[u8]) -> bool {
        let (scheme, rest) = match header.iter().position(|b| *b == b' ') {
            Some(space) => (&header[..space], trim(&header[space + 1..])),
            None => return false,
        };
        let (candidate, accepted) = if scheme.eq_ignore_ascii_case(b"basic") {
            match decode_base64(rest) {
                Some(decoded) => (decoded, &self.basic),
                None => return false,
            }
        } else if scheme.eq_ignore_ascii_case(b"bearer") {
            (rest.to_vec(), &self.tokens)
        } else {
            return false;
        };
        accepted.iter().fold(false, |found, secret| {
            found | constant_time_eq(&candidate, secret)
        })
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
/// credentials are accepted; answers 401 otherwise.
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
    let accepted = request
        .headers()
        .get(AUTHORIZATION)
        .is_some_and(|header| credentials.accepts(header.as_bytes()));
    if accepted {
        return next.run(request).await;
    }
    let mut response =
        ApiError::new(StatusCode::UNAUTHORIZED, "authentication required").into_response();
    response.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"dron\""),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BasicUser;

    fn credentials() -> Arc<Credentials> {
        Credentials::from_config(&AuthConfig {
            basic: vec![BasicUser {
                user: "ops".into(),
                password: "s3cret:x".into(),
            }],
            tokens: vec!["tok-123".into()],
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
