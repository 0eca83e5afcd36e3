//! End-to-end test support: the real `dron` binary on a temporary data directory, driven
//! over real HTTP, killed with a real SIGKILL.

#![allow(dead_code)]

use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod agents;
pub mod amqp;
pub mod cluster;
pub mod disk;
pub mod netns;
pub mod notify;
pub mod recording;
pub mod tls;
pub mod webdriver;

pub struct Server {
    pub data: tempfile::TempDir,
    pub port: u16,
    pub shards: u32,
    /// `http`, or `https` for a server with `[tls]`.
    pub scheme: &'static str,
    child: Option<Child>,
    pub http: reqwest::Client,
    /// TOML appended to the config file the server starts with.
    extra_config: String,
    /// Environment variables the server process starts with (e.g. libfaketime's).
    env: Vec<(String, String)>,
}

impl Server {
    /// Starts a server with `shards` shards and fault injection on, and waits for /health.
    pub async fn start(shards: u32) -> Server {
        Server::start_with_config(shards, "").await
    }

    /// As `start`, with `extra_toml` appended to the config file (new sections, e.g. `[auth]`).
    pub async fn start_with_config(shards: u32, extra_toml: &str) -> Server {
        let data = tempfile::tempdir().expect("temp dir");
        Server::start_on(data, shards, extra_toml).await
    }

    /// As `start_with_config`, on a data directory already prepared at `data/data` (e.g. by
    /// `dron restore`).
    pub async fn start_on(data: tempfile::TempDir, shards: u32, extra_toml: &str) -> Server {
        Server::start_with_env(data, shards, extra_toml, Vec::new()).await
    }

    /// As `start_on`, the process started with `env` added to its environment.
    pub async fn start_with_env(
        data: tempfile::TempDir,
        shards: u32,
        extra_toml: &str,
        env: Vec<(String, String)>,
    ) -> Server {
        let mut server = Server {
            data,
            port: free_port(),
            shards,
            scheme: "http",
            child: None,
            http: test_client(),
            extra_config: extra_toml.to_string(),
            env,
        };
        server.spawn().await;
        server
    }

    /// As `start_with_config`, serving HTTPS with `certs`' server certificate; the test's
    /// client trusts their CA.
    pub async fn start_tls(shards: u32, extra_toml: &str, certs: &tls::Certs) -> Server {
        let mut server = Server {
            data: tempfile::tempdir().expect("temp dir"),
            port: free_port(),
            shards,
            scheme: "https",
            child: None,
            http: tls::client_trusting(&certs.ca()),
            extra_config: format!(
                "{extra_toml}
{}",
                certs.server_toml()
            ),
            env: Vec::new(),
        };
        server.spawn().await;
        server
    }

    /// A scratch directory for the test's own files (job outputs), inside the data dir.
    pub fn scratch(&self) -> PathBuf {
        let dir = self.data.path().join("scratch");
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}://127.0.0.1:{}{path}", self.scheme, self.port)
    }

    async fn spawn(&mut self) {
        let config = self.data.path().join("dron.toml");
        std::fs::write(
            &config,
            format!(
                "fault_injection = true\n[scheduler]\nretry_backoff_ms = 200\n{}\n",
                self.extra_config
            ),
        )
        .unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data.path().join("server.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_dron"))
            .args(["serve", "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(self.data.path().join("data"))
            .args([
                "--listen",
                &format!("127.0.0.1:{}", self.port),
                "--shards",
                &self.shards.to_string(),
            ])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("DRON_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting dron");
        self.child = Some(child);
        wait_healthy(&self.http, &self.url("")).await;
    }

    /// The server process's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, as a crash would: no shutdown code runs.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill -9");
            child.wait().expect("reaping the killed server");
        }
    }

    /// Starts the server again on the same data directory and port.
    pub async fn restart(&mut self) {
        self.kill9();
        self.spawn().await;
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.path().join("server.log")).unwrap_or_default()
    }

    /// `GET /metrics`, the Prometheus text.
    pub async fn metrics(&self) -> String {
        let answer = self.http.get(self.url("/metrics")).send().await.unwrap();
        answer.text().await.unwrap()
    }

    pub async fn request(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.http.request(method, self.url(path));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    }

    pub async fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, answer) = self.request(method, path, body).await;
        assert!(
            (200..300).contains(&status),
            "{method} {path} answered {status}: {answer}\n{}",
            self.log()
        );
        answer
    }

    pub async fn create(&self, job: Value) {
        let endpoint = if job.get("parents").is_some() {
            "/scheduler/dependency"
        } else {
            "/scheduler/iso8601"
        };
        let (status, body) = self.request("POST", endpoint, Some(job)).await;
        assert_eq!(status, 204, "create answered {status}: {body}");
    }

    pub async fn job(&self, name: &str) -> Value {
        self.ok("GET", &format!("/scheduler/job/{name}"), None)
            .await
    }

    /// The job's runs, newest first (live, finished and skipped ranges).
    pub async fn runs(&self, name: &str) -> Vec<Value> {
        let body = self
            .ok("GET", &format!("/api/jobs/{name}/runs?limit=1000"), None)
            .await;
        body["runs"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until the job has a run in `state`; answers it.
    pub async fn wait_for_run(&self, name: &str, state: &str) -> Value {
        let mut found = Value::Null;
        let what = format!("a run of {name} in state {state}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(run) = self
                .runs(name)
                .await
                .into_iter()
                .find(|r| r["state"] == state)
            {
                found = run;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            !found.is_null(),
            "timed out waiting for {what}; runs: {:?}\n{}",
            self.runs(name).await,
            self.log()
        );
        found
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
        // Tasks still running under their shims belong to this test: end their groups.
        agents::kill_task_groups(&self.data.path().join("data/runs"));
    }
}

/// Every file called `name` below `dir`.
pub fn find_files(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(find_files(&path, name));
        } else if path.file_name().is_some_and(|n| n == name) {
            found.push(path);
        }
    }
    found
}

/// The children of process `parent` whose command line contains `needle`.
pub fn children_running(parent: u32, needle: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if parent_of(pid) != Some(parent) {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(needle) {
            found.push(pid);
        }
    }
    found
}

/// The parent pid of `pid` (field 4 of /proc/<pid>/stat).
pub fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// SIGKILL to `pid`.
pub fn kill9_pid(pid: u32) {
    let status = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .expect("kill -9");
    assert!(status.success(), "kill -9 {pid} failed");
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Sends `method path` with an optional JSON body; answers the status and the body as JSON
/// (or as a JSON string when it is not JSON).
pub async fn request_json(
    http: &reqwest::Client,
    method: &str,
    url: String,
    body: Option<Value>,
) -> Result<(u16, Value), reqwest::Error> {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = http.request(method, url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

/// Runs `dron <args> --url <server>`; answers (exit code, stdout, stderr).
pub async fn dron(url: &str, args: &[&str]) -> (i32, String, String) {
    let mut args = args.to_vec();
    args.extend(["--url", url]);
    dron_with_env(&args, &[]).await
}

/// Runs `dron <args>` with `env` and no other `DRON_URL`, `DRON_TOKEN` or `DRON_CA_FILE`;
/// answers (exit code, stdout, stderr).
pub async fn dron_with_env(args: &[&str], env: &[(&str, &Path)]) -> (i32, String, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_dron"))
        .args(args)
        .env_remove("DRON_URL")
        .env_remove("DRON_TOKEN")
        .env_remove("DRON_CA_FILE")
        .envs(env.iter().copied())
        .output()
        .await
        .expect("running dron");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Waits until the server at `url` (`http://HOST:PORT`) answers `GET /health` with 200.
/// The HTTP client of a test's server. No idle connections are kept: tests kill -9 and restart
/// servers on the same port, and once a GET after such a restart waited forever with no
/// socket open (the suite at c526b98). The timeout turns any such wait into a failure that
/// says so, instead of a suite that never ends.
pub fn test_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(120))
        .build()
        .expect("an HTTP client")
}

pub async fn wait_healthy(http: &reqwest::Client, url: &str) {
    let health = format!("{url}/health");
    wait_for(
        "the server to become healthy",
        Duration::from_secs(60),
        || {
            let (http, health) = (http.clone(), health.clone());
            async move { matches!(http.get(&health).send().await, Ok(r) if r.status() == 200) }
        },
    )
    .await;
}

/// Creates `job` (a Chronos ISO 8601 job running once now) on the server at `url` and waits
/// until its newest run has succeeded; `log` says what the server logged, for a failure.
pub async fn run_to_success(
    http: &reqwest::Client,
    url: &str,
    job: Value,
    log: impl Fn() -> String,
) {
    let name = job["name"].as_str().expect("a job name").to_string();
    let created = request_json(http, "POST", format!("{url}/scheduler/iso8601"), Some(job));
    assert_eq!(created.await.unwrap().0, 204, "{}", log());
    let runs = format!("{url}/api/jobs/{name}/runs");
    wait_for("the run to succeed", Duration::from_secs(30), || {
        let (http, runs) = (http.clone(), runs.clone());
        async move {
            let (_, body) = request_json(&http, "GET", runs, None).await.unwrap();
            body["runs"][0]["state"] == "succeeded"
        }
    })
    .await;
}

/// Polls `condition` every 50 ms until it holds; fails the test after `timeout`.
pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if condition().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

/// The environment that runs a process under libfaketime with its wall clock `offset_s`
/// seconds from real time (its monotonic clock untouched, as a wrong or stepped system clock
/// leaves it). Debian's `faketime` package (scripts/test.sh installs it).
pub fn faketime_env(offset_s: i64) -> Vec<(String, String)> {
    let libraries = [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
        "/usr/lib/faketime/libfaketimeMT.so.1",
    ];
    let library = libraries
        .iter()
        .find(|lib| Path::new(lib).exists())
        .expect("libfaketime is not installed (apt-get install faketime; scripts/test.sh does)");
    [
        ("LD_PRELOAD", library.to_string()),
        ("FAKETIME", format!("{offset_s:+}")),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Lines of a file the jobs append to (missing file: none).
pub fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The targets (ms) in task ids `ct:<target>:<attempt>:<job>:` logged one per line.
pub fn targets(path: &Path) -> Vec<i64> {
    lines(path)
        .iter()
        .filter_map(|line| line.split(':').nth(1)?.parse().ok())
        .collect()
}

/// A command that appends the task id to `<dir>/<job>.log`.
pub fn log_task_command(dir: &Path) -> String {
    format!(
        "echo \"$DRON_TASK_ID\" >> {}/\"$DRON_JOB\".log",
        dir.display()
    )
}
