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
            secret_env: Default::default(),
            work_dir: None,
            timeout_ms: None,
            output_cap_bytes: 1,
            container: None,
        },
        demand: Arc::new(TaskDemand::default()),
        owner: "alice".into(),
        start_deadline_ms: None,
        backfill: false,
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

/// A task whose agent was not recorded (its start never reached storage before a restart),
/// not found in the local agent's runs: the local agent says so, and the broker asks the
/// remote agents it knows instead of reporting it never launched; only when none claims it
/// in the agents' timeout is it reported unlaunched (so it runs once, not twice).
#[tokio::test(start_paused = true)]
async fn an_adoption_not_found_locally_goes_to_the_known_remote_agents() {
    let dir = tempfile::tempdir().unwrap();
    let start = chrono::DateTime::from_timestamp_millis(1_000_000).unwrap();
    let (mut args, mut reported) = broker_args(Arc::new(TokioClock::starting_at(start)));
    args.local = Some(super::LocalAgentConfig {
        shim_program: dir.path().join("no-shim"),
        runs_root: dir.path().join("runs"),
        resources: Default::default(),
        containers: None,
    });
    args.known_agents = KnownAgentsRecord::Custom {
        names: vec!["far".into()],
        remember: Arc::new(|_| {}),
    };
    let (broker, _) = Actor::spawn(None, OfferBroker, args).await.unwrap();
    let asked = tokio::time::Instant::now();
    let adopt = BrokerMsg::Adopt {
        request: request("ct:2:0:b:"),
        agent: None,
        timeout_deadline_ms: None,
    };
    broker.send_message(adopt).unwrap();
    let never = tokio::time::timeout(Duration::from_secs(60), reported.recv())
        .await
        .expect("an answer after the agents' timeout")
        .unwrap();
    assert!(matches!(never.event, TaskEvent::NeverLaunched));
    assert!(
        asked.elapsed() >= Duration::from_millis(5000),
        "answered after {:?}: the remote agents were not waited for",
        asked.elapsed()
    );
    broker.stop(None);
}

/// A server that did not run for longer than the agents' timeout (SIGSTOP, a VM pause) does
/// not declare its agents lost the moment it resumes: their heartbeats may be waiting unread.
/// They get a new timeout instead, and an agent that then stays silent is lost as before.
#[tokio::test(start_paused = true)]
async fn a_paused_server_gives_its_agents_a_new_timeout_instead_of_losing_them() {
    use dron_task::protocol::{AgentMessage, PROTOCOL_VERSION};
    let start = chrono::DateTime::from_timestamp_millis(1_000_000).unwrap();
    let (args, _reported) = broker_args(Arc::new(TokioClock::starting_at(start)));
    let (broker, _) = Actor::spawn(None, OfferBroker, args).await.unwrap();
    let (outbox, _to_agent) = mpsc::channel(64);
    let send = |message: AgentMessage| {
        broker
            .send_message(BrokerMsg::FromAgent {
                connection: 1,
                message,
            })
            .unwrap()
    };
    broker
        .send_message(BrokerMsg::Connected {
            connection: 1,
            outbox,
        })
        .unwrap();
    send(AgentMessage::Register {
        protocol: PROTOCOL_VERSION,
        agent_id: "far-id".into(),
        name: "far".into(),
        resources: Default::default(),
        attributes: Default::default(),
        tasks: Vec::new(),
        newest_epoch: 0,
        nonce: None,
        epochs_refused: 0,
    });
    let state = || async {
        let agents = ractor::call!(broker, BrokerMsg::ListAgents).unwrap();
        let far = agents.into_iter().find(|a| a.name == "far").expect("far");
        format!("{:?}", far.state)
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(state().await, "Active");
    // The server stops for 30 s (its timeout is 5 s): no tick, no heartbeat read.
    tokio::time::advance(Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(state().await, "Active", "lost for the server's own pause");
    // Silent for the timeout after that: lost, as any silent agent is.
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(state().await, "Lost");
}

/// The nemesis's pause then partition (seed 5): a launch the server sent as it resumed went
/// into a connection the agent had already given up on (it found the server silent); the agent
/// registered again without it, and the server waited for that task until the agent was lost
/// and the target's epsilon had passed. A launch the agent does not name when it registers
/// again is sent again.
#[tokio::test(start_paused = true)]
async fn a_launch_lost_with_a_dropped_connection_is_sent_again_when_the_agent_registers() {
    let start = chrono::DateTime::from_timestamp_millis(1_000_000).unwrap();
    let (args, _reported) = broker_args(Arc::new(TokioClock::starting_at(start)));
    let (broker, _) = Actor::spawn(None, OfferBroker, args).await.unwrap();
    let connect = |connection, tasks| connect_far(&broker, connection, tasks, 64);
    let mut first = connect(1, Vec::new());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let launch = BrokerMsg::Launch(request("ct:1:0:a:"));
    broker.send_message(launch).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        launches(&mut first),
        ["ct:1:0:a:"],
        "sent on the first connection"
    );
    // The agent had left that connection: the launch is lost with it. It registers anew,
    // naming no task.
    drop(first);
    let mut second = connect(2, Vec::new());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(launches(&mut second), ["ct:1:0:a:"], "sent again");
    // Named at the next registration: it arrived, and is not sent a third time.
    let mut third = connect(3, vec!["ct:1:0:a:".to_string()]);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(launches(&mut third).is_empty());
}

/// Bug 3 of the nemesis run: a task ended during a short pause of the server (shorter than
/// the agents' timeout). Its agent, finding the server silent, left its connection with the
/// end sent and registered again naming the task (the end not acknowledged yet). The server,
/// resuming, read the end from the old connection first, then the registration: it asked the
/// coordinator about a task that no longer ran, and killed it "as a stale attempt". Nothing is
/// asked and nothing killed: the end is known, and the agent's resent end is acknowledged.
#[tokio::test(start_paused = true)]
async fn a_task_whose_end_was_read_before_its_agent_registered_again_is_not_killed_as_stale() {
    use dron_task::protocol::{AgentMessage, ServerMessage};
    let start = chrono::DateTime::from_timestamp_millis(1_000_000).unwrap();
    let (args, mut reported) = broker_args(Arc::new(TokioClock::starting_at(start)));
    let (broker, _) = Actor::spawn(None, OfferBroker, args).await.unwrap();
    let from_agent = |connection: u64, message: AgentMessage| {
        let message = BrokerMsg::FromAgent {
            connection,
            message,
        };
        broker.send_message(message).unwrap();
    };
    // The old connection stays open: its end is read before the new one's registration.
    let connect =
        |connection: u64, tasks: Vec<String>| register_far(&broker, connection, tasks, 64);
    let task = "ct:1:0:a:".to_string();
    let _first = connect(1, Vec::new());
    broker
        .send_message(BrokerMsg::Launch(request(&task)))
        .unwrap();
    let status = |event| AgentMessage::Status {
        task_id: task.clone(),
        event,
    };
    let started = TaskEvent::Started {
        at_ms: 1_000_100,
        agent: "far".into(),
    };
    from_agent(1, status(started));
    let ended = TaskEvent::Ended {
        end: TaskEnd::Exited(0),
        at_ms: 1_003_000,
    };
    from_agent(1, status(ended));
    for expected in ["Started", "Ended"] {
        let update = next(&mut reported).await;
        assert!(format!("{:?}", update.event).starts_with(expected));
    }
    // The old connection closes; the agent registers again, naming the unacknowledged task.
    let closed = BrokerMsg::Disconnected { connection: 1 };
    broker.send_message(closed).unwrap();
    let mut second = connect(2, vec![task.clone()]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Asked, the coordinator answers "not current": the instance has ended.
    let asked: Vec<String> = std::iter::from_fn(|| reported.try_recv().ok())
        .map(|update| {
            if let Some(ack) = &update.ack {
                ack.applied(false);
            }
            format!("{:?}", update.event)
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let kills: Vec<ServerMessage> = std::iter::from_fn(|| second.try_recv().ok())
        .filter(|message| matches!(message, ServerMessage::Kill { .. }))
        .collect();
    assert!(kills.is_empty(), "killed as stale: {kills:?}");
    assert!(asked.is_empty(), "asked about an ended task: {asked:?}");
}

/// Connects the agent `far` on `connection` with an outbox of `capacity` (closing the one
/// before) and registers it naming `tasks`: answers what the broker sends it.
fn connect_far(
    broker: &ractor::ActorRef<BrokerMsg>,
    connection: u64,
    tasks: Vec<String>,
    capacity: usize,
) -> mpsc::Receiver<dron_task::protocol::ServerMessage> {
    if connection > 1 {
        let closed = BrokerMsg::Disconnected {
            connection: connection - 1,
        };
        broker.send_message(closed).unwrap();
    }
    register_far(broker, connection, tasks, capacity)
}

/// Opens `connection` for the agent `far` with an outbox of `capacity` and registers it naming
/// `tasks` (leaving its earlier connections as they are): answers what the broker sends it.
fn register_far(
    broker: &ractor::ActorRef<BrokerMsg>,
    connection: u64,
    tasks: Vec<String>,
    capacity: usize,
) -> mpsc::Receiver<dron_task::protocol::ServerMessage> {
    use dron_task::protocol::{AgentMessage, PROTOCOL_VERSION};
    let (outbox, to_agent) = mpsc::channel(capacity);
    let connected = BrokerMsg::Connected { connection, outbox };
    broker.send_message(connected).unwrap();
    let register = AgentMessage::Register {
        protocol: PROTOCOL_VERSION,
        agent_id: "far-id".into(),
        name: "far".into(),
        resources: dron_model::demand::Resources::new(4.0, 4096.0, 4096.0),
        attributes: Default::default(),
        tasks,
        newest_epoch: 0,
        nonce: None,
        epochs_refused: 0,
    };
    let message = BrokerMsg::FromAgent {
        connection,
        message: register,
    };
    broker.send_message(message).unwrap();
    to_agent
}

/// The task ids of the launches waiting in an agent's outbox.
fn launches(to_agent: &mut mpsc::Receiver<dron_task::protocol::ServerMessage>) -> Vec<String> {
    std::iter::from_fn(|| to_agent.try_recv().ok())
        .filter_map(|message| match message {
            dron_task::protocol::ServerMessage::Launch { task, .. } => Some(task.task_id),
            _ => None,
        })
        .collect()
}

/// An agent that reads slower than it is sent to fills its outbox: nothing more is placed on
/// it, the commands that did not fit wait in order, and reach it as the outbox drains; then it
/// takes tasks again.
#[tokio::test(start_paused = true)]
async fn an_agent_whose_outbox_fills_gets_no_more_tasks_until_it_drains() {
    let start = chrono::DateTime::from_timestamp_millis(1_000_000).unwrap();
    let (args, _reported) = broker_args(Arc::new(TokioClock::starting_at(start)));
    let (broker, _) = Actor::spawn(None, OfferBroker, args).await.unwrap();
    // Room for its registration's answer and one launch: `a` fits, `b` is placed but waits
    // (the agent is congested from then on).
    let mut slow = connect_far(&broker, 1, Vec::new(), 2);
    tokio::time::sleep(Duration::from_millis(100)).await;
    for task in ["ct:1:0:a:", "ct:1:0:b:", "ct:1:0:c:", "ct:1:0:d:"] {
        broker
            .send_message(BrokerMsg::Launch(request(task)))
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let placed = || async {
        let agents = ractor::call!(broker, BrokerMsg::ListAgents).unwrap();
        agents
            .into_iter()
            .find(|a| a.name == "far")
            .expect("far")
            .tasks
    };
    // Congested: `c` and `d` are not placed on it, though they would fit.
    assert_eq!(placed().await, 2);
    // It reads: what waited arrives, in order, and then `c` and `d` are placed.
    // (Heartbeats keep it from being lost meanwhile.)
    let mut got = Vec::new();
    for _ in 0..10 {
        got.extend(launches(&mut slow));
        let heartbeat = BrokerMsg::FromAgent {
            connection: 1,
            message: dron_task::protocol::AgentMessage::Heartbeat,
        };
        broker.send_message(heartbeat).unwrap();
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    assert_eq!(got, ["ct:1:0:a:", "ct:1:0:b:", "ct:1:0:c:", "ct:1:0:d:"]);
    assert_eq!(placed().await, 4);
}

/// A launch sent to a connection its agent just left (the server not told yet) waits for the
/// agent's registration, and does not mark the agent congested: it still takes tasks (a closed
/// connection is not a slow reader; the nemesis's pauses logged false "outbox is full").
#[tokio::test(start_paused = true)]
async fn a_launch_to_a_connection_just_closed_does_not_congest_the_agent() {
    let start = chrono::DateTime::from_timestamp_millis(1_000_000).unwrap();
    let (args, _reported) = broker_args(Arc::new(TokioClock::starting_at(start)));
    let (broker, _) = Actor::spawn(None, OfferBroker, args).await.unwrap();
    let gone = connect_far(&broker, 1, Vec::new(), 64);
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(gone);
    for task in ["ct:1:0:a:", "ct:1:0:b:"] {
        broker
            .send_message(BrokerMsg::Launch(request(task)))
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let agents = ractor::call!(broker, BrokerMsg::ListAgents).unwrap();
    let far = agents.into_iter().find(|a| a.name == "far").expect("far");
    assert_eq!(
        far.tasks, 2,
        "both placed on it: it was not taken for congested"
    );
}
