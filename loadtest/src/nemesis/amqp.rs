//! Resource events published to RabbitMQ, as a framework would: persistent, to the run's own
//! exchange (so no other user of the machine's RabbitMQ sees them), and acknowledged only once
//! the broker confirms them.

use std::time::Duration;

use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions,
    QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use serde_json::Value;
use tokio::sync::Mutex;

pub const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Publisher {
    exchange: String,
    /// Made at the first publish, and again after an error (RabbitMQ may have restarted).
    link: Mutex<Option<(Connection, Channel)>>,
}

impl Publisher {
    pub fn new(exchange: &str) -> Publisher {
        Publisher {
            exchange: exchange.to_string(),
            link: Mutex::new(None),
        }
    }

    async fn connect(&self) -> Result<(Connection, Channel), lapin::Error> {
        let connection = Connection::connect(URL, ConnectionProperties::default()).await?;
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        channel
            .exchange_declare(
                self.exchange.as_str().into(),
                ExchangeKind::Topic,
                durable,
                FieldTable::default(),
            )
            .await?;
        Ok((connection, channel))
    }

    /// Publishes `event` (routed by its resource); true once RabbitMQ confirmed it.
    pub async fn publish(&self, event: &Value) -> bool {
        let mut link = self.link.lock().await;
        if link.is_none() {
            match tokio::time::timeout(CONFIRM_TIMEOUT, self.connect()).await {
                Ok(Ok(made)) => *link = Some(made),
                _ => return false,
            }
        }
        let (_, channel) = link.as_ref().expect("connected above");
        let confirmed =
            tokio::time::timeout(CONFIRM_TIMEOUT, publish(channel, &self.exchange, event))
                .await
                .unwrap_or(false);
        if !confirmed {
            // A broken link is made again at the next publish.
            *link = None;
        }
        confirmed
    }

    /// Deletes the servers' queues and the exchange: nothing of the run stays in RabbitMQ.
    pub async fn clean_up(&self, queues: &[String]) {
        let Ok((connection, channel)) = self.connect().await else {
            return;
        };
        for queue in queues {
            let _ = channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        let _ = channel
            .exchange_delete(
                self.exchange.as_str().into(),
                ExchangeDeleteOptions::default(),
            )
            .await;
        let _ = connection.close(200, "nemesis done".into()).await;
    }
}

async fn publish(channel: &Channel, exchange: &str, event: &Value) -> bool {
    let body = event.to_string().into_bytes();
    let key = event["resource"].as_str().unwrap_or_default();
    let properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into());
    let sent = channel
        .basic_publish(
            exchange.into(),
            key.into(),
            BasicPublishOptions::default(),
            &body,
            properties,
        )
        .await;
    match sent {
        Ok(confirm) => confirm.await.is_ok_and(|c| c.is_ack()),
        Err(_) => false,
    }
}
