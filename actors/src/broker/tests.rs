//! The broker as an actor: everything it reports goes to the status sink it was built with,
//! from its first message on (no router to wait for).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use dron_model::demand::TaskDemand;
use dron_task::{StatusSink, TaskCommand, TaskEnd, TaskEvent, TaskSpec, TaskUpdate};
use ractor::Actor;
use tokio::sync::mpsc;

use super::{BrokerMsg, KnownAgentsRecord, LaunchRequest, OfferBroker, OfferBrokerArgs};
use crate::clock::{SharedClock, SystemClock, TokioClock};

fn request(task_id: &str) -> LaunchRequest {
    LaunchRequest {
        spec: TaskSpec {
            task_id: task_id.into(),
            command: TaskCommand::Shell("true".into()),
            env: Vec::new(),
            work_dir: None,
            timeout_ms: None,
            output_cap_bytes: 1,
        },
        demand: Arc::new(TaskDemand::default()),
        owner: "alice".into(),
        start_deadline_ms: None,
    }
}

async fn next(reported: &mut mpsc::UnboundedReceiver<TaskUpdate>) -> TaskUpdate {
    let update = tokio::time::timeout(Duration::from_secs(5), reported.recv()).await;
    update.expect("no status update").expect("sink dropped")
}

/// A broker with no local agent reporting to the returned channel.
fn broker_args(clock: SharedClock) -> (OfferBrokerArgs, mpsc::UnboundedReceiver<TaskUpdate>) {
    let (updates, reported) = mpsc::unbounded_channel();
    let status: StatusSink = Arc::new(move |update| {
        let _ = updates.send(update);
    });
    let args = OfferBrokerArgs {
        local: None,
        epoch: 1,
        heartbeat_ms: 1000,
        agent_timeout_ms: 5000,
        weights: HashMap::new(),
        max_offer: dron_model::demand::Resources::new(1e6, 1e9, 1e9),
        known_agents: KnownAgentsRecord::Memory,
        status,
        clock,
    };
    (args, reported)
}

#[tokio::test]
async fn reports_go_to_the_status_sink() {
    let (args, mut reported) = broker_args(Arc::new(SystemClock));
    let (broker, _) = Actor::spawn(None, OfferBroker, args).await.unwrap();

    // No agent at all: the task waits for an offer, and says so.
    broker
        .send_message(BrokerMsg::Launch(request("ct:1:0:a:")))
        .unwrap();
    let waiting = next(&mut reported).await;
    assert_eq!(waiting.task_id, "ct:1:0:a:");
    assert!(matches!(waiting.event, TaskEvent::WaitingForOffer { .. }));

    let task_id = "ct:1:0:a:".to_string();
    broker.send_message(BrokerMsg::Kill { task_id }).unwrap();
    let killed = next(&mut reported).await;
    assert!(matches!(
        killed.event,
        TaskEvent::Ended {
            end: TaskEnd::Killed,
            ..
        }
    ));

    // No local agent and no remote one ever seen: nothing can have launched it.
    let adopt = BrokerMsg::Adopt {
        request: request("ct:2:0:b:"),
        agent: None,
        timeout_deadline_ms: None,
    };
    broker.send_message(adopt).unwrap();
    let never = next(&mut reported).await;
    assert_eq!(never.task_id, "ct:2:0:b:");
    assert!(matches!(never.event, TaskEvent::NeverLaunched));
    broker.stop(None);
}

/// The broker's time is the clock it was given: in paused time a waiting task's epsilon passes
/// when tokio's clock reaches it, and its end carries that clock's time.
#[tokio::test(start_paused = true)]
async fn the_broker_keeps_the_time_of_the_clock_it_is_given() {
    let start = chrono::DateTime::from_timestamp_millis(1_000_000).unwrap();
    let (args, mut reported) = broker_args(Arc::new(TokioClock::starting_at(start)));
    let (broker, _) = Actor::spawn(None, OfferBroker, args).await.unwrap();
    let mut late = request("ct:1:0:a:");
    late.start_deadline_ms = Some(1_030_000);
    broker.send_message(BrokerMsg::Launch(late)).unwrap();
    let waiting = next(&mut reported).await;
    assert!(matches!(waiting.event, TaskEvent::WaitingForOffer { .. }));
    // Its ticks (every 500 ms) pass in paused time until the deadline.
    let update = tokio::time::timeout(Duration::from_secs(60), reported.recv()).await;
    let expired = update.expect("the deadline passed").expect("sink dropped");
    let TaskEvent::Ended {
        end: TaskEnd::NotPlaced(_),
        at_ms,
    } = expired.event
    else {
        panic!("expected the task not placed, got {:?}", expired.event);
    };
    assert!((1_030_000..=1_031_000).contains(&at_ms), "{at_ms}");
}
