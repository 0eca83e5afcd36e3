//! Pins the task contract's serde form: `task.json` and `status.json` (read across versions
//! by the shim and by a restarted server) and the agent protocol (spoken by agents of other
//! versions). Each literal is what the code produced before the contract moved into this
//! crate; a change here breaks running agents or adoption of run directories, so it needs a
//! protocol version bump or a compatible reader, not an edited literal.

use std::fmt::Debug;

use dron_model::demand::Resources;
use dron_task::protocol::{AgentMessage, OutputChunk, PROTOCOL_VERSION, ServerMessage};
use dron_task::{TaskCommand, TaskEnd, TaskEvent, TaskSpec, TaskStatus};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// `value` serializes to exactly `literal`, and `literal` parses back to `value`.
#[track_caller]
fn pin<T: Serialize + DeserializeOwned + PartialEq + Debug>(value: &T, literal: &str) {
    assert_eq!(serde_json::to_string(value).unwrap(), literal);
    assert_eq!(&serde_json::from_str::<T>(literal).unwrap(), value);
}

fn spec(command: TaskCommand) -> TaskSpec {
    TaskSpec {
        task_id: "ct:1700000000000:0:nightly:".into(),
        command,
        env: vec![("DRON_JOB".into(), "nightly".into())],
        secret_env: Default::default(),
        work_dir: Some("/srv/work".into()),
        timeout_ms: Some(60_000),
        output_cap_bytes: 1_048_576,
        container: None,
    }
}

/// `task.json`, written by the server (or an agent) and read by the shim, maybe of another
/// version after an upgrade.
#[test]
fn task_json_is_pinned() {
    pin(
        &spec(TaskCommand::Shell("echo hi".into())),
        r#"{"task_id":"ct:1700000000000:0:nightly:","command":{"Shell":"echo hi"},"env":[["DRON_JOB","nightly"]],"work_dir":"/srv/work","timeout_ms":60000,"output_cap_bytes":1048576}"#,
    );
    pin(
        &spec(TaskCommand::Sleep { ms: 250 }),
        r#"{"task_id":"ct:1700000000000:0:nightly:","command":{"Sleep":{"ms":250}},"env":[["DRON_JOB","nightly"]],"work_dir":"/srv/work","timeout_ms":60000,"output_cap_bytes":1048576}"#,
    );
    let minimal = TaskSpec {
        task_id: "t1".into(),
        command: TaskCommand::Argv(vec!["/bin/true".into(), "-x".into()]),
        env: Vec::new(),
        secret_env: Default::default(),
        work_dir: None,
        timeout_ms: None,
        output_cap_bytes: 0,
        container: None,
    };
    pin(
        &minimal,
        r#"{"task_id":"t1","command":{"Argv":["/bin/true","-x"]},"env":[],"work_dir":null,"timeout_ms":null,"output_cap_bytes":0}"#,
    );
    // Secret variables: in the clear in a launch, sealed in task.json; absent when none.
    let with_secrets = TaskSpec {
        secret_env: dron_task::secret::SecretEnv::Plain(vec![("T".into(), "v".into())]),
        ..minimal.clone()
    };
    pin(
        &with_secrets,
        r#"{"task_id":"t1","command":{"Argv":["/bin/true","-x"]},"env":[],"secret_env":{"Plain":[["T","v"]]},"work_dir":null,"timeout_ms":null,"output_cap_bytes":0}"#,
    );
    let sealed = TaskSpec {
        secret_env: dron_task::secret::SecretEnv::Sealed {
            stream: 7,
            check: "00".into(),
            data: "ff".into(),
        },
        ..minimal
    };
    pin(
        &sealed,
        r#"{"task_id":"t1","command":{"Argv":["/bin/true","-x"]},"env":[],"secret_env":{"Sealed":{"stream":7,"check":"00","data":"ff"}},"work_dir":null,"timeout_ms":null,"output_cap_bytes":0}"#,
    );
}

/// A container task's `task.json` (new with containers; tasks without one are written as
/// before, which `task_json_is_pinned` checks).
#[test]
fn a_container_task_json_is_pinned() {
    use dron_model::container::{Container, Network, Volume};
    use dron_task::container::{ContainerRuntime, ContainerTask, Engine};
    let mut task = spec(TaskCommand::Shell("echo hi".into()));
    task.container = Some(Box::new(ContainerTask {
        container: Container {
            image: "busybox:1.36".into(),
            volumes: vec![Volume {
                container_path: "/data".into(),
                host_path: Some("/srv/data".into()),
                read_only: true,
            }],
            network: Network::None,
            force_pull_image: false,
            parameters: vec![("user".into(), "nobody".into())],
        },
        cpus: 0.5,
        mem_mb: 64.0,
        runtime: Some(ContainerRuntime {
            engine: Engine::Podman,
            program: "podman".into(),
            run_options: vec!["--runtime".into(), "runc".into()],
        }),
    }));
    pin(
        &task,
        r#"{"task_id":"ct:1700000000000:0:nightly:","command":{"Shell":"echo hi"},"env":[["DRON_JOB","nightly"]],"work_dir":"/srv/work","timeout_ms":60000,"output_cap_bytes":1048576,"container":{"container":{"image":"busybox:1.36","volumes":[{"container_path":"/data","host_path":"/srv/data","read_only":true}],"network":"None","force_pull_image":false,"parameters":[["user","nobody"]]},"cpus":0.5,"mem_mb":64.0,"runtime":{"engine":"Podman","program":"podman","run_options":["--runtime","runc"]}}}"#,
    );
}

/// `status.json`, written by the shim and read by the server after a restart.
#[test]
fn status_json_is_pinned() {
    let exited = TaskStatus {
        exit_code: Some(0),
        signal: None,
        started_at_ms: 1_700_000_000_001,
        ended_at_ms: 1_700_000_000_002,
        error: None,
    };
    pin(
        &exited,
        r#"{"exit_code":0,"signal":null,"started_at_ms":1700000000001,"ended_at_ms":1700000000002,"error":null}"#,
    );
    let failed = TaskStatus {
        exit_code: None,
        signal: Some(9),
        started_at_ms: 1,
        ended_at_ms: 2,
        error: Some("no such file".into()),
    };
    pin(
        &failed,
        r#"{"exit_code":null,"signal":9,"started_at_ms":1,"ended_at_ms":2,"error":"no such file"}"#,
    );
}

#[test]
fn task_ends_and_events_are_pinned() {
    pin(&TaskEnd::Exited(3), r#"{"Exited":3}"#);
    pin(&TaskEnd::Signaled(9), r#"{"Signaled":9}"#);
    pin(&TaskEnd::TimedOut, r#""TimedOut""#);
    pin(&TaskEnd::Killed, r#""Killed""#);
    pin(
        &TaskEnd::FailedToStart("why".into()),
        r#"{"FailedToStart":"why"}"#,
    );
    pin(&TaskEnd::Lost("gone".into()), r#"{"Lost":"gone"}"#);
    pin(
        &TaskEnd::AgentLost("silent".into()),
        r#"{"AgentLost":"silent"}"#,
    );
    pin(
        &TaskEnd::NotPlaced("full".into()),
        r#"{"NotPlaced":"full"}"#,
    );
    let started = TaskEvent::Started {
        at_ms: 5,
        agent: "a1".into(),
    };
    pin(&started, r#"{"kind":"started","atMs":5,"agent":"a1"}"#);
    let ended = TaskEvent::Ended {
        end: TaskEnd::Exited(0),
        at_ms: 6,
    };
    pin(&ended, r#"{"kind":"ended","end":{"Exited":0},"atMs":6}"#);
    pin(&TaskEvent::NeverLaunched, r#"{"kind":"neverLaunched"}"#);
    let waiting = TaskEvent::WaitingForOffer {
        reason: "no cpus".into(),
    };
    pin(&waiting, r#"{"kind":"waitingForOffer","reason":"no cpus"}"#);
}

#[test]
fn agent_messages_are_pinned() {
    let register = AgentMessage::Register {
        protocol: PROTOCOL_VERSION,
        agent_id: "id-1".into(),
        name: "a1".into(),
        resources: Resources::new(2.0, 1024.0, 4096.5),
        attributes: [("rack".to_string(), "r1".to_string())].into(),
        tasks: vec!["t1".into()],
        newest_epoch: 42,
        nonce: None,
        epochs_refused: 0,
    };
    pin(
        &register,
        r#"{"type":"register","protocol":1,"agentId":"id-1","name":"a1","resources":{"cpus":2.0,"mem":1024.0,"disk":4096.5},"attributes":{"rack":"r1"},"tasks":["t1"],"newestEpoch":42}"#,
    );
    let proving = AgentMessage::Register {
        protocol: PROTOCOL_VERSION,
        agent_id: "id-1".into(),
        name: "a1".into(),
        resources: Resources::new(2.0, 1024.0, 4096.5),
        attributes: Default::default(),
        tasks: vec![],
        newest_epoch: 42,
        nonce: Some("n1".into()),
        epochs_refused: 3,
    };
    pin(
        &proving,
        r#"{"type":"register","protocol":1,"agentId":"id-1","name":"a1","resources":{"cpus":2.0,"mem":1024.0,"disk":4096.5},"attributes":{},"tasks":[],"newestEpoch":42,"nonce":"n1","epochsRefused":3}"#,
    );
    pin(&AgentMessage::Heartbeat, r#"{"type":"heartbeat"}"#);
    let status = AgentMessage::Status {
        task_id: "t1".into(),
        event: TaskEvent::Ended {
            end: TaskEnd::Signaled(15),
            at_ms: 6,
        },
    };
    pin(
        &status,
        r#"{"type":"status","taskId":"t1","event":{"kind":"ended","end":{"Signaled":15},"atMs":6}}"#,
    );
    let chunk = OutputChunk {
        base64: "aGk=".into(),
        next: 2,
        finished: true,
    };
    let output = AgentMessage::Output {
        request: 7,
        chunk: Ok(chunk),
    };
    pin(
        &output,
        r#"{"type":"output","request":7,"chunk":{"Ok":{"base64":"aGk=","next":2,"finished":true}}}"#,
    );
    let unread = AgentMessage::Output {
        request: 8,
        chunk: Err("no such run".into()),
    };
    pin(
        &unread,
        r#"{"type":"output","request":8,"chunk":{"Err":"no such run"}}"#,
    );
    let rejected = AgentMessage::Rejected {
        task_id: Some("t1".into()),
        reason: "stale".into(),
    };
    pin(
        &rejected,
        r#"{"type":"rejected","taskId":"t1","reason":"stale"}"#,
    );
    let refused = AgentMessage::Rejected {
        task_id: None,
        reason: "busy".into(),
    };
    pin(
        &refused,
        r#"{"type":"rejected","taskId":null,"reason":"busy"}"#,
    );
}

#[test]
fn server_messages_are_pinned() {
    let registered = ServerMessage::Registered {
        epoch: 42,
        heartbeat_ms: 1000,
        proof: None,
    };
    pin(
        &registered,
        r#"{"type":"registered","epoch":42,"heartbeatMs":1000}"#,
    );
    let proved = ServerMessage::Registered {
        epoch: 42,
        heartbeat_ms: 1000,
        proof: Some("ab".into()),
    };
    pin(
        &proved,
        r#"{"type":"registered","epoch":42,"heartbeatMs":1000,"proof":"ab"}"#,
    );
    let refused = ServerMessage::Refused {
        reason: "old".into(),
    };
    pin(&refused, r#"{"type":"refused","reason":"old"}"#);
    pin(&ServerMessage::HeartbeatAck, r#"{"type":"heartbeatAck"}"#);
    let launch = ServerMessage::Launch {
        epoch: 42,
        task: spec(TaskCommand::Argv(vec!["/bin/echo".into(), "hi".into()])),
    };
    pin(
        &launch,
        r#"{"type":"launch","epoch":42,"task":{"task_id":"ct:1700000000000:0:nightly:","command":{"Argv":["/bin/echo","hi"]},"env":[["DRON_JOB","nightly"]],"work_dir":"/srv/work","timeout_ms":60000,"output_cap_bytes":1048576}}"#,
    );
    let kill = ServerMessage::Kill {
        epoch: 42,
        task_id: "t1".into(),
    };
    pin(&kill, r#"{"type":"kill","epoch":42,"taskId":"t1"}"#);
    let adopt = ServerMessage::Adopt {
        epoch: 42,
        task_id: "t1".into(),
        timeout_deadline_ms: Some(99),
    };
    pin(
        &adopt,
        r#"{"type":"adopt","epoch":42,"taskId":"t1","timeoutDeadlineMs":99}"#,
    );
    let adopt_unbounded = ServerMessage::Adopt {
        epoch: 42,
        task_id: "t2".into(),
        timeout_deadline_ms: None,
    };
    pin(
        &adopt_unbounded,
        r#"{"type":"adopt","epoch":42,"taskId":"t2","timeoutDeadlineMs":null}"#,
    );
    let read = ServerMessage::ReadOutput {
        request: 7,
        task_id: "t1".into(),
        file: "stdout".into(),
        offset: 10,
    };
    pin(
        &read,
        r#"{"type":"readOutput","request":7,"taskId":"t1","file":"stdout","offset":10}"#,
    );
    let ack = ServerMessage::Ack {
        task_id: "t1".into(),
        started: true,
    };
    pin(&ack, r#"{"type":"ack","taskId":"t1","started":true}"#);
}
