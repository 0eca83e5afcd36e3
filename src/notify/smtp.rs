//! Mail through the configured SMTP server: plain, or upgraded with STARTTLS (OpenSSL via
//! native-tls), with optional credentials. One connection per message: notices are rare
//! (flood control sees to it), and a fresh connection never finds a stale one.

use std::time::Duration;

use anyhow::Context;
use dron_actors::notify::{Outgoing, SendError, SendResult};
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::chain;
use crate::config::SmtpConfig;

pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Mailer {
    pub fn new(config: &SmtpConfig) -> anyhow::Result<Mailer> {
        let from: Mailbox = config.from.parse().with_context(|| {
            format!(
                "[notify.smtp] from = {:?} is not a mail address",
                config.from
            )
        })?;
        // `builder_dangerous` starts without TLS; STARTTLS is added when configured.
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host)
            .port(config.port)
            .timeout(Some(Duration::from_secs(config.timeout_secs.max(1))));
        if config.starttls {
            let tls = TlsParameters::new(config.host.clone())
                .context("[notify.smtp] setting up STARTTLS")?;
            builder = builder.tls(Tls::Required(tls));
        }
        if let (Some(user), Some(password)) = (&config.username, &config.password) {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        }
        Ok(Mailer {
            transport: builder.build(),
            from,
        })
    }

    pub async fn send(&self, message: &Outgoing) -> SendResult {
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(message.subject.clone())
            .header(ContentType::TEXT_PLAIN);
        let mut recipients = 0;
        for address in &message.to {
            match address.parse::<Mailbox>() {
                Ok(mailbox) => {
                    builder = builder.to(mailbox);
                    recipients += 1;
                }
                Err(error) => tracing::warn!(address, %error, "skipping an invalid owner address"),
            }
        }
        if recipients == 0 {
            let message = format!("no valid mail address in the owner field {:?}", message.to);
            return Err(SendError::permanent(message));
        }
        let email = builder
            .body(message.text.clone())
            .map_err(|e| SendError::permanent(format!("cannot build the mail: {e}")))?;
        match self.transport.send(email).await {
            Ok(_) => Ok(()),
            Err(error) if error.is_permanent() => Err(SendError::permanent(chain(&error))),
            Err(error) => Err(SendError::transient(chain(&error))),
        }
    }
}
