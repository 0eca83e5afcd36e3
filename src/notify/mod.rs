//! How notices leave dron: the [`Transport`] the notifier actor sends through, over SMTP
//! ([`smtp`], lettre) and HTTP ([`webhook`], reqwest with an HMAC signature), to the hosts
//! allowed ([`hosts`]).

pub mod hosts;
pub mod smtp;
pub mod webhook;

use std::sync::Arc;

use dron_actors::notify::{Outgoing, SendError, SendFuture, Transport};
use dron_model::notice::Channel;

use crate::config::NotifyConfig;

/// Mail (when `[notify.smtp]` is configured) and webhooks.
pub struct Transports {
    mailer: Option<Arc<smtp::Mailer>>,
    poster: Arc<webhook::Poster>,
}

impl Transports {
    pub fn new(config: &NotifyConfig) -> anyhow::Result<Transports> {
        let mailer = match &config.smtp {
            Some(smtp) => Some(Arc::new(smtp::Mailer::new(smtp)?)),
            None => None,
        };
        Ok(Transports {
            mailer,
            poster: Arc::new(webhook::Poster::new(config.allowed_webhook_hosts())?),
        })
    }
}

impl Transport for Transports {
    fn send(&self, message: Outgoing) -> SendFuture {
        let (mailer, poster) = (self.mailer.clone(), self.poster.clone());
        Box::pin(async move {
            match message.channel.clone() {
                Channel::Email => match mailer {
                    Some(mailer) => mailer.send(&message).await,
                    None => Err(SendError::permanent("no SMTP server is configured")),
                },
                Channel::Webhook(url) => poster.send(&url, &message).await,
            }
        })
    }
}

/// An error and its causes, `: `-separated (reqwest and lettre hide the useful part there).
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(&format!(": {more}"));
        }
        source = cause.source();
    }
    text
}
