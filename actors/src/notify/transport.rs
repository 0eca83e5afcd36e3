//! How a message leaves dron, as a trait: SMTP and HTTP live in the server package, so this
//! crate needs neither.

use std::future::Future;
use std::pin::Pin;

use dron_model::notice::Channel;

/// One message for one channel.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub channel: Channel,
    /// Mail recipients (email only).
    pub to: Vec<String>,
    pub subject: String,
    /// The mail's text.
    pub text: String,
    /// The webhook's body (JSON).
    pub json: String,
    /// Key of the webhook's HMAC-SHA256 signature header; None: unsigned.
    pub secret: Option<String>,
    /// `failed`, ..., or `digest`.
    pub event: String,
    /// Unique per message (a receiver may use it to drop a repeat after a crash).
    pub id: String,
}

/// Why an attempt failed (logged, shown in the API).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendError {
    pub message: String,
    /// Trying again cannot help (an invalid address, a 4xx answer): give up at once.
    pub permanent: bool,
}

impl SendError {
    /// A failure worth retrying (a server down, a timeout, a 5xx).
    pub fn transient(message: impl Into<String>) -> SendError {
        SendError {
            message: message.into(),
            permanent: false,
        }
    }

    pub fn permanent(message: impl Into<String>) -> SendError {
        SendError {
            message: message.into(),
            permanent: true,
        }
    }
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

pub type SendResult = Result<(), SendError>;
pub type SendFuture = Pin<Box<dyn Future<Output = SendResult> + Send>>;

pub trait Transport: Send + Sync + 'static {
    /// Sends one message; resolves once the server (SMTP or HTTP) accepted it, or failed.
    fn send(&self, message: Outgoing) -> SendFuture;
}
