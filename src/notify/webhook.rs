//! Webhooks: the notice's JSON POSTed to a URL (http or https), signed when a secret is
//! configured so the receiver can check it came from dron:
//!
//! `X-Dron-Signature: sha256=<hex of HMAC-SHA256(secret, body)>`
//!
//! with `X-Dron-Event` (`failed`, ..., `digest`, `test`) and `X-Dron-Delivery` (the same
//! for every attempt of one message, so a receiver can drop a repeat).

use std::time::Duration;

use dron_actors::notify::{Outgoing, SendError, SendResult};
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use sha2::Sha256;

use super::chain;

/// How long one POST may take, connection included.
const TIMEOUT: Duration = Duration::from_secs(10);

pub const SIGNATURE_HEADER: &str = "x-dron-signature";
pub const EVENT_HEADER: &str = "x-dron-event";
pub const DELIVERY_HEADER: &str = "x-dron-delivery";

pub struct Poster {
    http: reqwest::Client,
    hosts: super::hosts::WebhookHosts,
}

impl Poster {
    pub fn new(hosts: super::hosts::WebhookHosts) -> anyhow::Result<Poster> {
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            // A redirect could lead the POST where no one allowed it to go (an internal
            // address): it is answered as a failure instead.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("dron/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Poster { http, hosts })
    }

    pub async fn send(&self, url: &str, message: &Outgoing) -> SendResult {
        // Jobs stored before their host was taken off the list are stopped here too.
        self.hosts
            .check_resolved(url)
            .await
            .map_err(SendError::permanent)?;
        let mut request = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(EVENT_HEADER, &message.event)
            .header(DELIVERY_HEADER, &message.id)
            .body(message.json.clone());
        if let Some(secret) = &message.secret {
            request = request.header(SIGNATURE_HEADER, signature(secret, message.json.as_bytes()));
        }
        let response = request
            .send()
            .await
            .map_err(|e| SendError::transient(chain(&e)))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let text = match status.is_redirection() {
            true => format!("{url} answered {status}: redirects are not followed"),
            false => format!("{url} answered {status}"),
        };
        // A 4xx says the request is wrong (a bad URL, a revoked hook), and a redirect will
        // not be followed: retrying cannot help, except for a timeout or rate limit.
        let permanent = status.is_redirection()
            || status.is_client_error()
                && status != StatusCode::REQUEST_TIMEOUT
                && status != StatusCode::TOO_MANY_REQUESTS;
        Err(SendError {
            message: text,
            permanent,
        })
    }
}

/// `sha256=<hex>`: the HMAC-SHA256 of `body` keyed by `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_match_rfc_4231() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
