//! The link between the event bus and RabbitMQ.
//!
//! - **In:** a durable queue of this server's own (`dron.<server id>` by default), bound with
//!   `#` to the durable topic exchange `dron.resources`, so events published while dron is
//!   down wait for it. Each delivery is handed to the bus and acked only once the bus has
//!   recorded (durably) and applied it; a malformed one is rejected without requeueing, and a
//!   delivery the bus could not take is requeued. The queue also receives what this server
//!   published itself: those carry its id as their `app_id` and are acked at once, since the
//!   bus recorded and applied them before publishing.
//! - **Out:** events the bus publishes (dron's own `job:NAME@TIME`, and those POSTed over
//!   HTTP) go to the exchange as persistent messages with publisher confirms; the bus drops
//!   an event from its pending list only once RabbitMQ has confirmed it. At most
//!   `publish_queue` events wait here at once (the channel's size): the bus keeps the others
//!   on disk until there is room (`dron_actors::bus`'s `outbound.rs`).
//! - **Faults:** any connection or channel error ends the session; the link reconnects with
//!   backoff (capped at 10 s) while scheduling goes on, republishes what was not confirmed,
//!   and RabbitMQ redelivers what was not acked. Nothing is lost either way; a redelivered
//!   event is a duplicate for the bus and changes nothing.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use dron_actors::bus::{BusMsg, Origin};
use dron_actors::client::SchedulerClient;
use dron_model::resource::{EventMessage, ResourceEvent};
use futures_lite::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use ractor::ActorRef;
use tokio::sync::mpsc;

/// Deliveries handed to the bus at once.
const PREFETCH: u16 = 256;
/// Events published before their confirms are awaited together.
const PUBLISH_BATCH: usize = 256;
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct AmqpSettings {
    pub url: String,
    pub exchange: String,
    pub queue: String,
    /// Set as `app_id` on everything this server publishes (its server id).
    pub publisher_id: String,
    /// Take `job:` events that others published (else they are rejected).
    pub outside_job_events: bool,
    /// Events waiting for the broker's confirmation in memory, at most.
    pub publish_queue: usize,
}

/// The largest event body taken from the exchange; larger ones are rejected.
pub const MAX_EVENT_BYTES: usize = 64 * 1024;

/// Whether the link is connected now (for /health and metrics).
pub type Connected = Arc<AtomicBool>;

/// Starts the link; it runs until the bus stops.
pub fn spawn(settings: AmqpSettings, client: SchedulerClient, bus: ActorRef<BusMsg>) -> Connected {
    let (publisher, outgoing) = mpsc::channel(settings.publish_queue.max(1));
    let _ = bus.send_message(BusMsg::SetPublisher(publisher));
    let connected = Connected::default();
    let link = Link {
        settings,
        client,
        bus,
        outgoing,
        unconfirmed: VecDeque::new(),
        connected: connected.clone(),
    };
    tokio::spawn(link.run());
    connected
}

struct Link {
    settings: AmqpSettings,
    client: SchedulerClient,
    bus: ActorRef<BusMsg>,
    outgoing: mpsc::Receiver<ResourceEvent>,
    /// Events to publish, oldest first; kept across reconnections until confirmed.
    unconfirmed: VecDeque<ResourceEvent>,
    connected: Connected,
}

enum SessionEnd {
    /// The bus is gone: the server is stopping.
    Shutdown,
    Failed(String),
}

impl Link {
    async fn run(mut self) {
        let mut backoff = MIN_BACKOFF;
        loop {
            let end = self.session().await;
            // A session that got connected starts the backoff over: only failures in a row
            // lengthen it.
            if self.connected.swap(false, Ordering::Relaxed) {
                backoff = MIN_BACKOFF;
            }
            self.set_connected(false);
            match end {
                SessionEnd::Shutdown => return,
                SessionEnd::Failed(why) => {
                    tracing::warn!(%why, retry_in_ms = backoff.as_millis() as u64, "AMQP link down; reconnecting");
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    fn set_connected(&self, up: bool) {
        self.connected.store(up, Ordering::Relaxed);
        metrics::gauge!("dron_amqp_connected").set(if up { 1.0 } else { 0.0 });
    }

    async fn session(&mut self) -> SessionEnd {
        let (connection, publish, mut consumer) = match self.connect().await {
            Ok(parts) => parts,
            Err(error) => return SessionEnd::Failed(error.to_string()),
        };
        self.set_connected(true);
        tracing::info!(queue = %self.settings.queue, exchange = %self.settings.exchange, "AMQP link up");
        loop {
            if let Err(error) = self.publish_unconfirmed(&publish).await {
                return SessionEnd::Failed(error);
            }
            tokio::select! {
                delivery = consumer.next() => match delivery {
                    Some(Ok(delivery)) => {
                        if self.is_own(&delivery) {
                            metrics::counter!("dron_events_own_echo_total").increment(1);
                            let _ = delivery.acker.ack(BasicAckOptions::default()).await;
                        } else {
                            let outside_jobs = self.settings.outside_job_events;
                            tokio::spawn(take_delivery(delivery, self.client.clone(), outside_jobs));
                        }
                    }
                    Some(Err(error)) => return SessionEnd::Failed(error.to_string()),
                    None => return SessionEnd::Failed("the broker cancelled the consumer".into()),
                },
                event = self.outgoing.recv() => match event {
                    Some(event) => self.unconfirmed.push_back(event),
                    None => {
                        let _ = connection.close(200, "dron stopping".into()).await;
                        return SessionEnd::Shutdown;
                    }
                },
            }
        }
    }

    /// Whether this server published the delivery itself (see the module docs).
    fn is_own(&self, delivery: &Delivery) -> bool {
        delivery
            .properties
            .app_id()
            .as_ref()
            .is_some_and(|id| id.as_str() == self.settings.publisher_id)
    }

    /// Connects, declares the exchange and this server's queue, and starts consuming.
    async fn connect(&self) -> Result<(Connection, Channel, lapin::Consumer), lapin::Error> {
        let settings = &self.settings;
        let connection =
            Connection::connect(&settings.url, ConnectionProperties::default()).await?;
        let publish = connection.create_channel().await?;
        publish
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        let exchange = settings.exchange.as_str();
        publish
            .exchange_declare(
                exchange.into(),
                ExchangeKind::Topic,
                durable,
                FieldTable::default(),
            )
            .await?;
        let consume = connection.create_channel().await?;
        let queue = settings.queue.as_str();
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        consume
            .queue_declare(queue.into(), durable, FieldTable::default())
            .await?;
        consume
            .queue_bind(
                queue.into(),
                exchange.into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        consume
            .basic_qos(PREFETCH, BasicQosOptions::default())
            .await?;
        let consumer = consume
            .basic_consume(
                queue.into(),
                "dron".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok((connection, publish, consumer))
    }

    /// Publishes what waits, in batches whose confirms are awaited together; each confirmed
    /// event is reported to the bus.
    async fn publish_unconfirmed(&mut self, channel: &Channel) -> Result<(), String> {
        while let Ok(event) = self.outgoing.try_recv() {
            self.unconfirmed.push_back(event);
        }
        while !self.unconfirmed.is_empty() {
            let batch = self.unconfirmed.len().min(PUBLISH_BATCH);
            let mut confirms = Vec::with_capacity(batch);
            for event in self.unconfirmed.iter().take(batch) {
                confirms.push(publish(channel, &self.settings, event).await?);
            }
            for confirm in confirms {
                let confirmation = confirm.await.map_err(|e| e.to_string())?;
                if !confirmation.is_ack() {
                    return Err("the broker refused a published event (nack)".into());
                }
                let event = self.unconfirmed.pop_front().expect("one per confirm");
                let _ = self
                    .bus
                    .send_message(BusMsg::Published { key: event.key() });
            }
        }
        Ok(())
    }
}

async fn publish(
    channel: &Channel,
    settings: &AmqpSettings,
    event: &ResourceEvent,
) -> Result<lapin::PublisherConfirm, String> {
    let body = serde_json::to_vec(&event.to_message()).map_err(|e| e.to_string())?;
    // The routing key is the resource id by convention (AMQP caps it at 255 bytes).
    let routing_key = truncate_to_bytes(&event.resource, 255);
    let properties = BasicProperties::default()
        .with_delivery_mode(2) // persistent: survives a broker restart
        .with_content_type("application/json".into())
        .with_app_id(settings.publisher_id.as_str().into());
    channel
        .basic_publish(
            settings.exchange.as_str().into(),
            routing_key.into(),
            BasicPublishOptions::default(),
            &body,
            properties,
        )
        .await
        .map_err(|e| e.to_string())
}

fn truncate_to_bytes(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The event in a delivery from someone else, or why it is refused: too large, malformed, or
/// a `job:` event (a job's success or failure) while only dron may announce those.
fn accepted_event(delivery: &Delivery, outside_job_events: bool) -> Result<ResourceEvent, String> {
    if delivery.data.len() > MAX_EVENT_BYTES {
        let size = delivery.data.len();
        return Err(format!("{size} bytes, above the {MAX_EVENT_BYTES} taken"));
    }
    let event = EventMessage::parse(&delivery.data).map_err(|invalid| invalid.to_string())?;
    if event.resource.starts_with("job:") && !outside_job_events {
        return Err(format!(
            "'{}' is a job's announcement, which only dron makes ([events] outside_job_events)",
            event.resource
        ));
    }
    Ok(event)
}

/// Hands one delivery to the bus; acks it once recorded and applied.
async fn take_delivery(delivery: Delivery, client: SchedulerClient, outside_job_events: bool) {
    let event = match accepted_event(&delivery, outside_job_events) {
        Ok(event) => event,
        Err(invalid) => {
            metrics::counter!("dron_events_rejected_total").increment(1);
            tracing::warn!(error = %invalid, routing_key = %delivery.routing_key, "rejecting an event");
            let reject = BasicNackOptions {
                requeue: false,
                ..Default::default()
            };
            let _ = delivery.acker.nack(reject).await;
            return;
        }
    };
    match client.ingest(event, Origin::Amqp).await {
        Ok(_) => {
            let _ = delivery.acker.ack(BasicAckOptions::default()).await;
        }
        Err(error) => {
            tracing::warn!(%error, "the bus could not take an event; requeueing it");
            tokio::time::sleep(Duration::from_millis(500)).await;
            let requeue = BasicNackOptions {
                requeue: true,
                ..Default::default()
            };
            let _ = delivery.acker.nack(requeue).await;
        }
    }
}
