//! The real RabbitMQ on this machine, for the event tests: each test uses an exchange and
//! queues of its own (so tests never see each other's events) and deletes them at the end.

use std::time::Duration;

use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use serde_json::Value;

pub const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// A test's own exchange and dron queue on the shared broker.
#[derive(Clone)]
pub struct Broker {
    pub exchange: String,
    pub dron_queue: String,
}

impl Broker {
    pub fn new(test: &str) -> Broker {
        let unique = format!(
            "{test}.{}.{}",
            std::process::id(),
            chrono::Utc::now().timestamp_micros()
        );
        Broker {
            exchange: format!("dron.test.{unique}"),
            dron_queue: format!("dron.test.{unique}.server"),
        }
    }

    /// The `[events]` section of the server's config.
    pub fn config(&self) -> String {
        format!(
            "[events]\namqp_url = \"{URL}\"\nexchange = \"{}\"\nqueue = \"{}\"\n",
            self.exchange, self.dron_queue
        )
    }

    pub async fn channel(&self) -> Channel {
        self.try_channel()
            .await
            .expect("RabbitMQ runs on 127.0.0.1:5672 (scripts/test.sh starts it)")
    }

    /// A channel with publisher confirms, the test's exchange declared.
    pub async fn try_channel(&self) -> Result<Channel, lapin::Error> {
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
        Ok(channel)
    }

    /// Publishes a persistent event as a framework would; answers once RabbitMQ confirmed it.
    pub async fn publish(&self, channel: &Channel, body: &Value) -> Result<(), lapin::Error> {
        let routing_key = body["resource"].as_str().unwrap_or_default().to_string();
        let confirm = channel
            .basic_publish(
                self.exchange.as_str().into(),
                routing_key.as_str().into(),
                BasicPublishOptions::default(),
                body.to_string().as_bytes(),
                BasicProperties::default().with_delivery_mode(2),
            )
            .await?
            .await?;
        assert!(confirm.is_ack(), "RabbitMQ refused the event");
        Ok(())
    }

    /// A durable queue of the test's own bound to the exchange, to watch what dron publishes.
    pub async fn observe(&self, channel: &Channel, name: &str) -> lapin::Consumer {
        let queue = self.declare_observer(channel, name).await;
        channel
            .basic_consume(
                queue.as_str().into(),
                name.into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap()
    }

    /// Declares the observer queue `name` (durable, bound to everything) without consuming.
    pub async fn declare_observer(&self, channel: &Channel, name: &str) -> String {
        let queue = format!("{}.{name}", self.exchange);
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        channel
            .queue_declare(queue.as_str().into(), durable, FieldTable::default())
            .await
            .unwrap();
        channel
            .queue_bind(
                queue.as_str().into(),
                self.exchange.as_str().into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        queue
    }

    /// Deletes the test's exchange and queues.
    pub async fn clean_up(&self, channel: &Channel, observers: &[&str]) {
        let queues = observers
            .iter()
            .map(|name| format!("{}.{name}", self.exchange))
            .chain([self.dron_queue.clone()]);
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
    }
}

/// The next message of `consumer` as JSON, acked; None after `timeout`.
pub async fn next_message(consumer: &mut lapin::Consumer, timeout: Duration) -> Option<Value> {
    let delivery = tokio::time::timeout(timeout, consumer.next())
        .await
        .ok()??
        .ok()?;
    delivery.acker.ack(BasicAckOptions::default()).await.ok()?;
    serde_json::from_slice(&delivery.data).ok()
}

/// A TCP relay to RabbitMQ that a test can cut: cut, it closes every connection it carries
/// and every one that arrives, so dron's AMQP link is down (as when RabbitMQ is away) without
/// stopping the RabbitMQ the other tests share.
pub struct Relay {
    pub port: u16,
    open: tokio::sync::watch::Sender<bool>,
}

impl Relay {
    pub async fn start() -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (open, watch) = tokio::sync::watch::channel(true);
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                if !*watch.borrow() {
                    continue; // dropped: closed at once
                }
                let mut cut = watch.clone();
                tokio::spawn(async move {
                    let Ok(outbound) = tokio::net::TcpStream::connect("127.0.0.1:5672").await
                    else {
                        return;
                    };
                    let (mut inbound, mut outbound) = (inbound, outbound);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.wait_for(|open| !*open) => {}
                    }
                });
            }
        });
        Relay { port, open }
    }

    /// The URL dron connects to RabbitMQ through.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    pub fn cut(&self) {
        self.open.send_replace(false);
    }

    pub fn mend(&self) {
        self.open.send_replace(true);
    }
}
