//! Issue 22: a job with a Chronos `container` runs its command inside that image, with podman,
//! under the task shim: output, environment, volumes, timeouts, kill -9 of the server, memory
//! limits and images that cannot be had, end to end with the real binary and the real podman.
//!
//! No registry is needed: the image is built here from busybox-static's binary in an otherwise
//! empty root filesystem (`podman import`). `scripts/test.sh` installs podman, runc and
//! busybox-static where they are missing.

mod support;

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::agents::{Agent, newest_run};
use support::{Server, find_files, wait_for};

/// The test image: busybox and its applets, nothing else.
const IMAGE: &str = "dron-test-busybox";
/// The local agent runs containers with podman.
const CONTAINERS: &str = "[containers]\nruntime = \"podman\"\n";

fn podman(args: &[&str]) -> std::process::Output {
    Command::new("podman")
        .args(args)
        .output()
        .expect("podman is required for these tests (scripts/test.sh installs it)")
}

/// Builds the test image once per test run, if podman does not have it yet.
fn test_image() -> &'static str {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        if podman(&["image", "exists", IMAGE]).status.success() {
            return;
        }
        let busybox = Path::new("/bin/busybox");
        assert!(
            busybox.exists(),
            "busybox-static is required (scripts/test.sh installs it)"
        );
        let root = tempfile::tempdir().unwrap();
        let bin = root.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(root.path().join("tmp")).unwrap();
        std::fs::copy(busybox, bin.join("busybox")).unwrap();
        let applets = Command::new(busybox).arg("--list").output().unwrap();
        for applet in String::from_utf8_lossy(&applets.stdout).lines() {
            let _ = std::os::unix::fs::symlink("busybox", bin.join(applet));
        }
        let script = format!(
            "tar -C {} -c . | podman import - {IMAGE}",
            root.path().display()
        );
        let imported = Command::new("sh").args(["-c", &script]).output().unwrap();
        assert!(imported.status.success(), "{imported:?}");
    });
    IMAGE
}

/// A job run by hand only (its schedule is far away) in the test image.
fn container_job(name: &str, command: &str, container: Value, more: Value) -> Value {
    let mut container_fields = json!({"type": "DOCKER", "image": test_image(), "network": "NONE"});
    for (key, value) in container.as_object().unwrap() {
        container_fields[key] = value.clone();
    }
    let mut job = json!({
        "name": name, "command": command, "schedule": "R/2099-01-01T00:00:00Z/P1D",
        "retries": 0, "container": container_fields
    });
    for (key, value) in more.as_object().unwrap() {
        job[key] = value.clone();
    }
    job
}

async fn run_now(server: &Server, name: &str) {
    server
        .ok("PUT", &format!("/scheduler/job/{name}"), None)
        .await;
}

/// What the job's only run printed, from its run directory under `runs_root`.
fn output(runs_root: &Path, job: &str, stream: &str) -> String {
    let files = find_files(&runs_root.join(job), stream);
    files
        .first()
        .map(|file| std::fs::read_to_string(file).unwrap())
        .unwrap_or_default()
}

/// The containers podman has for `job`, running or not.
fn containers_of(job: &str) -> Vec<String> {
    let listed = podman(&["ps", "--all", "--format", "{{.Names}}"]);
    String::from_utf8_lossy(&listed.stdout)
        .lines()
        .filter(|name| name.starts_with(&format!("dron-{job}-")))
        .map(str::to_string)
        .collect()
}

fn runs_root(server: &Server) -> std::path::PathBuf {
    server.data.path().join("data/runs")
}

/// Creates `job`, runs it now and waits until its container has printed `printed`; answers
/// the container's name.
async fn start_container(server: &Server, job: Value, printed: &str) -> String {
    let name = job["name"].as_str().unwrap().to_string();
    server.create(job).await;
    run_now(server, &name).await;
    let root = runs_root(server);
    wait_for(
        "the container to start",
        Duration::from_secs(20),
        || async { output(&root, &name, "stdout") == printed },
    )
    .await;
    let mut containers = containers_of(&name);
    assert_eq!(containers.len(), 1, "{containers:?}");
    containers.remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_job_runs_in_its_image_with_its_volume_read_only_and_its_environment() {
    let server = Server::start_with_config(1, CONTAINERS).await;
    let volume = server.scratch().join("volume");
    std::fs::create_dir_all(&volume).unwrap();
    std::fs::write(volume.join("hello.txt"), "from the host\n").unwrap();
    assert!(Path::new("/etc/debian_version").exists(), "a host file");
    let command = [
        "echo \"inside: $GREETING from $DRON_JOB\"",
        "cat /data/hello.txt",
        "test -e /etc/debian_version && echo host-root || echo image-root",
        "touch /data/written 2>/dev/null && echo volume-writable || echo volume-read-only",
        "echo to-stderr >&2",
    ]
    .join("; ");
    let volumes = json!([{"containerPath": "/data", "hostPath": volume, "mode": "RO"}]);
    let env = json!([{"name": "GREETING", "value": "hello there"}]);
    let job = container_job(
        "ctr-inside",
        &command,
        json!({"volumes": volumes}),
        json!({"environmentVariables": env}),
    );
    server.create(job.clone()).await;
    // Stored and answered as sent, as every Chronos field dron acts on or not.
    assert_eq!(
        server.job("ctr-inside").await["container"],
        job["container"]
    );
    run_now(&server, "ctr-inside").await;
    let run = server.wait_for_run("ctr-inside", "succeeded").await;
    assert_eq!(run["exitCode"], 0, "{run}");
    let stdout = output(&runs_root(&server), "ctr-inside", "stdout");
    assert_eq!(
        stdout,
        "inside: hello there from ctr-inside\nfrom the host\nimage-root\nvolume-read-only\n"
    );
    assert_eq!(
        output(&runs_root(&server), "ctr-inside", "stderr"),
        "to-stderr\n"
    );
    assert!(!volume.join("written").exists());
    // The container is gone with its run (`--rm`).
    assert!(containers_of("ctr-inside").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_job_is_killed_at_its_timeout_and_its_container_removed() {
    let server = Server::start_with_config(1, CONTAINERS).await;
    let job = container_job(
        "ctr-slow",
        "echo started; sleep 60",
        json!({}),
        // Long enough for podman to start the container on a loaded machine (its start counts
        // toward the timeout): with 2 s the echo was sometimes never reached.
        json!({"maxCompletionTime": 6000}),
    );
    server.create(job).await;
    let began = Instant::now();
    run_now(&server, "ctr-slow").await;
    wait_for("the container to run", Duration::from_secs(20), || async {
        !containers_of("ctr-slow").is_empty()
    })
    .await;
    server.wait_for_run("ctr-slow", "timed_out").await;
    assert!(
        began.elapsed() < Duration::from_secs(40),
        "killed at its timeout"
    );
    assert!(
        containers_of("ctr-slow").is_empty(),
        "the container outlived its timeout"
    );
    assert_eq!(
        output(&runs_root(&server), "ctr-slow", "stdout"),
        "started\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_job_survives_a_kill9_of_the_server_and_its_end_is_recorded() {
    let mut server = Server::start_with_config(1, CONTAINERS).await;
    let gate = server.scratch().join("gate");
    std::fs::create_dir_all(&gate).unwrap();
    let command = "echo started; while [ ! -f /gate/go ]; do sleep 0.1; done; echo finished";
    let volumes = json!([{"containerPath": "/gate", "hostPath": gate, "mode": "RO"}]);
    let job = container_job("ctr-long", command, json!({"volumes": volumes}), json!({}));
    let container = start_container(&server, job, "started\n").await;
    let root = runs_root(&server);

    server.kill9();
    // The container runs on without its server, under its shim, and is adopted.
    assert_eq!(
        containers_of("ctr-long"),
        std::slice::from_ref(&container),
        "lost with the server"
    );
    server.restart().await;
    assert_eq!(
        containers_of("ctr-long"),
        std::slice::from_ref(&container),
        "removed on restart"
    );
    assert_eq!(newest_run(&server, "ctr-long").await["state"], "running");
    std::fs::write(gate.join("go"), "").unwrap();
    let run = server.wait_for_run("ctr-long", "succeeded").await;
    assert_eq!(run["attempt"], 0, "adopted, not run again: {run}");
    assert_eq!(
        output(&root, "ctr-long", "stdout"),
        "started\nfinished\n",
        "it ran once, to its end"
    );
    wait_for("the container to go", Duration::from_secs(10), || async {
        containers_of("ctr-long").is_empty()
    })
    .await;
}

/// A shim killed -9 leaves its container without a supervisor: the agent removes it by its
/// name, and the attempt is lost and retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_container_of_a_shim_killed_9_is_removed_and_the_attempt_retried() {
    let server = Server::start_with_config(1, CONTAINERS).await;
    let command = "echo attempt $DRON_ATTEMPT; [ $DRON_ATTEMPT != 0 ] || sleep 60";
    let job = container_job("ctr-orphan", command, json!({}), json!({"retries": 1}));
    let first = start_container(&server, job, "attempt 0\n").await;
    let root = runs_root(&server);
    let pids = find_files(&root.join("ctr-orphan"), "shim.pid");
    let shim = std::fs::read_to_string(&pids[0]).unwrap();
    let shim: u32 = shim.split_whitespace().next().unwrap().parse().unwrap();
    support::kill9_pid(shim);
    let run = server.wait_for_run("ctr-orphan", "succeeded").await;
    assert_eq!(run["attempt"], 1, "{run}");
    assert!(
        !containers_of("ctr-orphan").contains(&first),
        "the orphaned container runs on"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_job_is_limited_to_its_mem() {
    let server = Server::start_with_config(1, CONTAINERS).await;
    // cgroup v2 shows the limit in memory.max, v1 in memory.limit_in_bytes.
    let command = "cat /sys/fs/cgroup/memory.max 2>/dev/null \
        || cat /sys/fs/cgroup/memory/memory.limit_in_bytes; \
        x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived ${#x}";
    let job = container_job("ctr-small", command, json!({}), json!({"mem": 32}));
    server.create(job).await;
    run_now(&server, "ctr-small").await;
    let run = server.wait_for_run("ctr-small", "failed").await;
    // Killed by the kernel's OOM killer inside its 32 MB: podman exits 128 + SIGKILL.
    assert_eq!(run["exitCode"], 137, "{run}");
    let stdout = output(&runs_root(&server), "ctr-small", "stdout");
    assert_eq!(stdout, format!("{}\n", 32 * 1024 * 1024), "{run}");
    assert!(containers_of("ctr-small").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_that_cannot_be_had_fails_the_run_with_that_reason() {
    let server = Server::start_with_config(1, CONTAINERS).await;
    let job = container_job(
        "ctr-missing",
        "echo never",
        json!({"image": "dron-test-no-such-image:1.0"}),
        json!({}),
    );
    server.create(job).await;
    run_now(&server, "ctr-missing").await;
    let run = server.wait_for_run("ctr-missing", "failed").await;
    let message = run["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("cannot pull image 'dron-test-no-such-image:1.0'"),
        "{run}"
    );
    assert_eq!(output(&runs_root(&server), "ctr-missing", "stdout"), "");
}

/// Container jobs go only to agents that run containers: not to the server's own agent (no
/// `[containers]`), which says so while nothing else is there, but to `dron agent --containers
/// podman` once it connects. Plain jobs still run anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_jobs_are_placed_only_on_agents_that_run_containers() {
    let server = Server::start_with_config(1, "[agents]\nheartbeat_ms = 100\n").await;
    let job = container_job(
        "ctr-placed",
        "echo placed",
        json!({}),
        json!({"epsilon": "PT5M"}),
    );
    server.create(job).await;
    run_now(&server, "ctr-placed").await;
    wait_for(
        "the run to explain its wait",
        Duration::from_secs(10),
        || async {
            let run = newest_run(&server, "ctr-placed").await;
            run["message"]
                .as_str()
                .is_some_and(|m| m.contains("no connected agent can run containers"))
        },
    )
    .await;

    let agent = Agent::start_with_flags(&server, "boxes", &["--containers", "podman"]).await;
    let run = server.wait_for_run("ctr-placed", "succeeded").await;
    assert_eq!(run["agent"], "boxes", "{run}");
    assert_eq!(
        output(&agent.runs_root(), "ctr-placed", "stdout"),
        "placed\n"
    );
    assert!(agent.log().contains("this agent runs container jobs"));
}

/// Bad input gets a 400 naming the field, and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_container_is_refused_naming_its_field() {
    let server = Server::start(1).await;
    let cases = [
        (json!({"type": "LXC"}), "container.type"),
        (json!({"image": "Not A/Valid:image"}), "container.image"),
        (
            json!({"volumes": [{"containerPath": "data", "hostPath": "/srv", "mode": "RO"}]}),
            "container.volumes[0].containerPath",
        ),
        (
            json!({"volumes": [{"containerPath": "/data", "hostPath": "srv/data", "mode": "RO"}]}),
            "container.volumes[0].hostPath",
        ),
        (
            json!({"volumes": [{"containerPath": "/data", "hostPath": "/srv", "mode": "READ"}]}),
            "container.volumes[0].mode",
        ),
        (json!({"network": "OVERLAY"}), "container.network"),
    ];
    for (container, named) in cases {
        let mut job = json!({"name": "ctr-bad", "command": "true", "schedule": "R//PT1H",
            "container": {"type": "DOCKER", "image": "busybox"}});
        for (key, value) in container.as_object().unwrap() {
            job["container"][key] = value.clone();
        }
        let (status, body) = server
            .request("POST", "/scheduler/iso8601", Some(job))
            .await;
        assert_eq!(status, 400, "{container}: {body}");
        assert_eq!(body["field"], "container", "{body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(error.contains(named), "{named} not in {error}");
    }
    let (status, _) = server.request("GET", "/scheduler/job/ctr-bad", None).await;
    assert_eq!(status, 404, "nothing was stored");
}
