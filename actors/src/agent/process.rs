//! Launching and supervising tasks from the server, through the shim (`shim.rs`).
//!
//! Every task runs under its own shim process, which survives a server crash and
//! records the task's end in the run directory. The server side here starts the
//! shim ([`launch`], through the agent's launcher), waits for the end while enforcing the timeout and kill
//! requests ([`RunningTask::wait`]), and after a restart picks up the runs it
//! left behind ([`adopt`]).

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use dron_task::secret::{SEAL_KEY_ENV, SealKey};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::process::{Child, Command};
use tokio::sync::Notify;
use tracing::warn;

use super::launcher::{Launcher, ShimReaper, register};
use super::shim;

/// When a task's timeout kills it: tokio's clock, which paused-time tests drive, and which the
/// caller's [`crate::clock::Clock::instant_at`] gives for a wall-clock deadline.
pub type Deadline = tokio::time::Instant;

// The task contract lives in `dron-task`; re-exported so that `agent::process::TaskSpec` and
// the run directory's file names keep their old paths.
pub use dron_task::spec::{
    SHIM_PID_FILE, SHIM_SUBCOMMAND, STATUS_FILE, STDERR_FILE, STDOUT_FILE, TASK_FILE, TaskCommand,
    TaskEnd, TaskSpec, TaskStatus,
};

/// How often an adopted run (not our child: no exit notification) is checked.
const ADOPTED_POLL: Duration = Duration::from_millis(50);
/// How often a pending kill looks again for the task's pid (the shim may be starting).
const KILL_RETRY: Duration = Duration::from_millis(10);
/// A delivered kill is sent again at this pace until the shim reports the end, in
/// case a process of the group was being forked while the first one landed.
const KILL_RESEND: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("run directory {0} already holds a run (shim.pid or status.json exists)")]
    RunDirInUse(PathBuf),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot encode the task spec: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("cannot seal the task's secret variables: no key (/dev/urandom unreadable)")]
    NoSealKey,
}

/// The key this agent seals secret variables in `task.json` with ([`dron_task::secret`]):
/// made at start, kept in memory, handed to the shims it starts. None if the kernel's
/// generator cannot be read (tasks with secrets then fail to launch).
pub fn seal_key() -> Option<&'static SealKey> {
    static KEY: LazyLock<Option<SealKey>> = LazyLock::new(|| SealKey::generate().ok());
    KEY.as_ref()
}

/// Hands a shim (or the launcher that forks shims) the key to open secrets with.
pub(super) fn give_seal_key(command: &mut Command) {
    if let Some(key) = seal_key() {
        command.env(SEAL_KEY_ENV, key.to_hex());
    }
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> ProcessError {
    let context = context.into();
    move |source| ProcessError::Io { context, source }
}

/// Writes `task.json` into `run_dir` (creating it) and has `launcher` fork the shim. Without
/// a launcher, or when it is down or fails, starts `shim_program <shim_args_prefix...>
/// <run_dir>` itself, in its own process group with stdin, stdout and stderr null (the
/// prefix is `task-shim`; tests use their own binary as the shim).
pub async fn launch(
    launcher: Option<&mut Launcher>,
    shim_program: &Path,
    shim_args_prefix: &[&str],
    run_dir: &Path,
    spec: &TaskSpec,
) -> Result<RunningTask, ProcessError> {
    prepare_run_dir(run_dir, spec)?;
    let Some(launcher) = launcher else {
        return spawn_shim(shim_program, shim_args_prefix, run_dir, spec);
    };
    let forked = match launcher.fork(run_dir).await {
        Ok(forked) => forked,
        Err(error) => {
            warn!(run_dir = %run_dir.display(), %error, "launcher unavailable: starting the shim directly");
            return spawn_shim(shim_program, shim_args_prefix, run_dir, spec);
        }
    };
    let shim = match forked.pidfd.map(|fd| register(fd, Interest::READABLE)) {
        Some(Ok(pidfd)) => Shim::Pidfd(pidfd),
        // No pidfd (kernel before 5.3): polled, as a shim adopted after a restart.
        _ => {
            let starttime = match forked.starttime {
                0 => shim::proc_stat(forked.pid).map_or(0, |(_, start)| start),
                start => start,
            };
            Shim::Adopted {
                pid: forked.pid,
                starttime,
            }
        }
    };
    let mut task = RunningTask::new(run_dir, shim, timeout_deadline(spec));
    task.reaper = Some(forked.reaper);
    Ok(task)
}

fn timeout_deadline(spec: &TaskSpec) -> Option<Deadline> {
    spec.timeout_ms
        .map(|ms| Deadline::now() + Duration::from_millis(ms))
}

fn spawn_shim(
    shim_program: &Path,
    shim_args_prefix: &[&str],
    run_dir: &Path,
    spec: &TaskSpec,
) -> Result<RunningTask, ProcessError> {
    let mut command = Command::new(shim_program);
    command
        .args(shim_args_prefix)
        .arg(run_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own group: signals aimed at the server's group (a terminal's ^C)
        // must not reach the shim, which has to outlive the server.
        .process_group(0);
    give_seal_key(&mut command);
    let child = command.spawn().map_err(io_err(format!(
        "cannot start shim {}",
        shim_program.display()
    )))?;
    Ok(RunningTask::new(
        run_dir,
        Shim::Child(Box::new(child)),
        timeout_deadline(spec),
    ))
}

/// Creates the run directory and writes `task.json`, both for their owner only (the task's
/// command, environment and output are its job's, not every local user's). Plain blocking
/// calls: a few tens of microseconds, less than handing each to tokio's blocking pool.
fn prepare_run_dir(run_dir: &Path, spec: &TaskSpec) -> Result<(), ProcessError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let private_dir = |path: &Path| std::fs::DirBuilder::new().mode(0o700).create(path);
    let created = match private_dir(run_dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let parent = run_dir.parent().unwrap_or(run_dir);
            std::fs::create_dir_all(parent).and_then(|()| private_dir(run_dir))
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            // A second shim in the same directory would mix two runs' files.
            for name in [SHIM_PID_FILE, STATUS_FILE] {
                if std::fs::exists(run_dir.join(name)).unwrap_or(true) {
                    return Err(ProcessError::RunDirInUse(run_dir.to_path_buf()));
                }
            }
            Ok(())
        }
        Err(e) => Err(e),
    };
    created.map_err(io_err(format!("cannot create {}", run_dir.display())))?;
    // No rename needed: the shim starts only once this is written, and a task.json cut
    // short by a crash leaves a run that never started, which adoption reports as lost.
    let bytes = match spec.secret_env.is_none() {
        true => serde_json::to_vec(spec)?,
        // Never in plain text on disk: sealed with the key only this agent's shims get.
        false => {
            let key = seal_key().ok_or(ProcessError::NoSealKey)?;
            let sealed = spec.secret_env.sealed(key);
            serde_json::to_vec(&TaskSpec {
                secret_env: sealed,
                ..spec.clone()
            })?
        }
    };
    let path = run_dir.join(TASK_FILE);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut file| io::Write::write_all(&mut file, &bytes));
    written.map_err(io_err(format!("cannot write {}", path.display())))
}

/// After a server restart, a run whose directory exists.
#[derive(Debug)]
pub enum Adopted {
    Finished(TaskEnd),
    Running(RunningTask),
}

/// Picks up a run left behind by a previous server: finished if `status.json` exists,
/// running if its shim (same pid and start time) is alive, else lost (and its container, if
/// it ran in one, removed).
/// `timeout_deadline` is when its timeout kills it (the launch time plus the task's timeout,
/// turned into an instant by the caller's clock).
pub fn adopt(run_dir: &Path, timeout_deadline: Option<Deadline>) -> Adopted {
    if let Some(end) = recorded_end(run_dir) {
        return Adopted::Finished(end);
    }
    match shim::read_pid_file(&run_dir.join(SHIM_PID_FILE)) {
        Some((pid, starttime)) if shim_alive(pid, starttime) => Adopted::Running(RunningTask::new(
            run_dir,
            watch_adopted(pid, starttime),
            timeout_deadline,
        )),
        // Look again: the shim may have recorded the end and exited between our looks.
        _ => Adopted::Finished(recorded_end(run_dir).unwrap_or_else(|| {
            // Nobody supervises its container any more (if it has one): it must not run on.
            dron_shim::container::remove_orphaned(run_dir);
            TaskEnd::Lost("shim gone without a status".into())
        })),
    }
}

/// The end recorded in `status.json`, if there is one.
fn recorded_end(run_dir: &Path) -> Option<TaskEnd> {
    match read_status(run_dir) {
        Ok(Some(status)) => Some(end_of_status(&status, None)),
        Ok(None) => None,
        Err(why) => Some(TaskEnd::Lost(why)),
    }
}

/// A shim that is not our child: through a pidfd when the kernel has them (opened, then
/// checked to still be the same process, so a reused pid is never watched), else polled.
fn watch_adopted(pid: i32, starttime: u64) -> Shim {
    if let Ok(pidfd) = shim::pidfd_open(pid)
        && shim_alive(pid, starttime)
        && let Ok(pidfd) = register(pidfd, Interest::READABLE)
    {
        return Shim::Pidfd(pidfd);
    }
    Shim::Adopted { pid, starttime }
}

/// A task whose shim runs; [`RunningTask::wait`] yields its end.
#[derive(Debug)]
pub struct RunningTask {
    run_dir: PathBuf,
    shim: Shim,
    deadline: Option<Deadline>,
    stop: Arc<StopControl>,
    /// When the agent's launcher forked the shim: asks the launcher to reap it once `wait`
    /// has seen it end.
    reaper: Option<ShimReaper>,
}

/// The shim, as we know it.
#[derive(Debug)]
enum Shim {
    /// Started by this server: its exit is awaited, and it is reaped. Boxed to keep
    /// `Adopted` small.
    Child(Box<Child>),
    /// Forked by the launcher, or adopted after a restart: not our child, watched through
    /// a pidfd (readable once it has ended).
    Pidfd(AsyncFd<OwnedFd>),
    /// Not our child, and no pidfd: polled.
    Adopted { pid: i32, starttime: u64 },
}

impl RunningTask {
    fn new(run_dir: &Path, shim: Shim, deadline: Option<Deadline>) -> Self {
        RunningTask {
            run_dir: run_dir.to_path_buf(),
            shim,
            deadline,
            stop: Arc::new(StopControl::new(run_dir)),
            reaper: None,
        }
    }

    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// The shim's pid when the launcher forked it (the launcher reaps it once it has ended).
    #[cfg(test)]
    pub fn launcher_child(&self) -> Option<i32> {
        self.reaper.as_ref().map(ShimReaper::pid)
    }

    /// A handle to kill the task while `wait` runs elsewhere.
    pub fn killer(&self) -> TaskKiller {
        TaskKiller(self.stop.clone())
    }

    /// Waits for the task's end, killing its process group at the timeout or on a
    /// kill request. Dropping the future (or never calling it) leaves the task and
    /// its shim running; [`adopt`] can pick them up again.
    pub async fn wait(mut self) -> TaskEnd {
        let mut last_signal = None;
        let shim_end = loop {
            self.stop.deliver(&mut last_signal);
            let stopping = self.stop.reason().is_some();
            tokio::select! {
                shim_end = self.shim.finished(&self.run_dir) => break shim_end,
                _ = self.stop.wake.notified() => {}
                _ = sleep_until(self.deadline), if !stopping => {
                    self.stop.request(StopReason::TimedOut);
                }
                _ = tokio::time::sleep(KILL_RETRY), if stopping => {}
            }
        };
        let reason = self.stop.reason();
        let end = match read_status(&self.run_dir) {
            Ok(Some(status)) => end_of_status(&status, reason),
            Ok(None) => {
                // Its container, if it has one, must not run on unsupervised.
                let dir = self.run_dir.clone();
                let removing = move || dron_shim::container::remove_orphaned(&dir);
                let _ = tokio::task::spawn_blocking(removing).await;
                TaskEnd::Lost(shim_end)
            }
            Err(why) => TaskEnd::Lost(why),
        };
        if let Some(reaper) = self.reaper.take() {
            reaper.reap();
        }
        end
    }
}

impl Shim {
    /// Resolves when the shim is done, with a description of how it ended, used
    /// when it left no status. Cancel-safe: `wait` calls it in a loop.
    async fn finished(&mut self, run_dir: &Path) -> String {
        match self {
            Shim::Child(child) => match child.wait().await {
                Ok(status) => format!("shim ended ({status}) without a status"),
                Err(e) => format!("cannot wait for the shim: {e}"),
            },
            Shim::Pidfd(pidfd) => match pidfd.readable().await {
                Ok(_) => "shim ended without a status".into(),
                Err(e) => format!("cannot wait for the shim: {e}"),
            },
            Shim::Adopted { pid, starttime } => loop {
                if run_dir.join(STATUS_FILE).exists() {
                    return "status.json appeared, then vanished".into();
                }
                if !shim_alive(*pid, *starttime) {
                    // Recorded just before exiting? The caller reads status.json.
                    return "shim gone without a status".into();
                }
                tokio::time::sleep(ADOPTED_POLL).await;
            },
        }
    }
}

async fn sleep_until(deadline: Option<Deadline>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Maps a recorded status to the task's end. A stop we requested explains a death
/// by signal; an exit code means the task finished on its own before the signal.
fn end_of_status(status: &TaskStatus, stop: Option<StopReason>) -> TaskEnd {
    if let Some(why) = &status.error {
        return TaskEnd::FailedToStart(why.clone());
    }
    match (status.exit_code, status.signal, stop) {
        (Some(code), _, _) => TaskEnd::Exited(code),
        (None, Some(_), Some(StopReason::TimedOut)) => TaskEnd::TimedOut,
        (None, Some(_), Some(StopReason::Killed)) => TaskEnd::Killed,
        (None, Some(sig), None) => TaskEnd::Signaled(sig),
        (None, None, _) => TaskEnd::Lost("status.json records neither exit code nor signal".into()),
    }
}

/// `Ok(None)` when the shim has not recorded an end (yet).
fn read_status(run_dir: &Path) -> Result<Option<TaskStatus>, String> {
    let path = run_dir.join(STATUS_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| format!("invalid {}: {e}", path.display()))
}

/// Whether the process `pid` is still the shim that wrote shim.pid: same start time
/// (a reused pid has another) and not a zombie (exited, awaiting its reaper).
fn shim_alive(pid: i32, starttime: u64) -> bool {
    match shim::proc_stat(pid) {
        Ok((state, start)) => start == starttime && !matches!(state, 'Z' | 'X'),
        Err(_) => false,
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum StopReason {
    TimedOut,
    Killed,
}

/// A stop request shared by a [`RunningTask`] and its [`TaskKiller`]s.
#[derive(Debug)]
struct StopControl {
    run_dir: PathBuf,
    /// 0: none; else a `StopReason` (the first request wins).
    reason: AtomicU8,
    wake: Notify,
}

impl StopControl {
    fn new(run_dir: &Path) -> Self {
        StopControl {
            run_dir: run_dir.to_path_buf(),
            reason: AtomicU8::new(0),
            wake: Notify::new(),
        }
    }

    fn request(&self, reason: StopReason) {
        let code = match reason {
            StopReason::TimedOut => 1,
            StopReason::Killed => 2,
        };
        let _ = self
            .reason
            .compare_exchange(0, code, Ordering::SeqCst, Ordering::SeqCst);
        self.wake.notify_one();
    }

    fn reason(&self) -> Option<StopReason> {
        match self.reason.load(Ordering::SeqCst) {
            1 => Some(StopReason::TimedOut),
            2 => Some(StopReason::Killed),
            _ => None,
        }
    }

    /// Signals the task's group if a stop is requested and due: not yet sent (the
    /// shim may not have written the task's pid yet), or last sent long ago.
    fn deliver(&self, last_signal: &mut Option<Instant>) {
        if self.reason().is_none() {
            return;
        }
        if last_signal.is_some_and(|at| at.elapsed() < KILL_RESEND) {
            return;
        }
        if signal_task_group(&self.run_dir) {
            *last_signal = Some(Instant::now());
        }
    }
}

/// SIGKILLs the task's process group; false if its pid is not known yet.
fn signal_task_group(run_dir: &Path) -> bool {
    // Once the end is recorded the shim may have reaped the task, and its pid may
    // be reused: never signal then. Before, the shim keeps the task's pid reserved.
    if run_dir.join(STATUS_FILE).exists() {
        return true;
    }
    let Some(pgid) = shim::read_task_pid(run_dir) else {
        return false;
    };
    if !shim::kill_group(pgid) {
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ESRCH) {
            warn!(run_dir = %run_dir.display(), pgid, %err, "cannot kill task group");
        }
    }
    true
}

/// Kills a running task: its whole process group gets SIGKILL, and `wait` reports
/// [`TaskEnd::Killed`] (unless the task had already ended on its own).
#[derive(Debug, Clone)]
pub struct TaskKiller(Arc<StopControl>);

impl TaskKiller {
    pub fn kill(&self) {
        self.0.request(StopReason::Killed);
        // Immediately, in case nobody is waiting; `wait` retries until it lands.
        signal_task_group(&self.0.run_dir);
    }
}

#[cfg(test)]
mod tests {
    use super::super::launcher::LAUNCHER_SUBCOMMAND;
    use super::*;
    use dron_task::secret::SecretEnv;

    /// The shim of these tests is the test binary itself, run with the libtest
    /// arguments that select only [`shim_entry`], followed by `task-shim <run_dir>` as
    /// in production (libtest takes those two as extra name filters matching nothing).
    /// In a normal test run the arguments do not look so, and `shim_entry` does nothing.
    const SHIM_TEST: &str = "agent::process::tests::shim_entry";
    const SHIM_PREFIX: &[&str] = &["--exact", SHIM_TEST, SHIM_SUBCOMMAND];

    #[test]
    fn shim_entry() {
        let args: Vec<String> = std::env::args().collect();
        if let [.., sub, run_dir] = args.as_slice()
            && sub == SHIM_SUBCOMMAND
            && args.iter().any(|arg| arg == SHIM_TEST)
        {
            std::process::exit(shim::run_shim_main(Path::new(run_dir)));
        }
    }

    /// The launcher of these tests, selected the same way: `launcher_entry`, then
    /// `task-launcher`.
    const LAUNCHER_TEST: &str = "agent::process::tests::launcher_entry";
    const LAUNCHER_PREFIX: &[&str] = &["--exact", LAUNCHER_TEST];

    #[test]
    fn launcher_entry() {
        let args: Vec<String> = std::env::args().collect();
        if args.last().is_some_and(|arg| arg == LAUNCHER_SUBCOMMAND)
            && args.iter().any(|arg| arg == LAUNCHER_TEST)
        {
            std::process::exit(super::super::launcher::run_launcher_main());
        }
    }

    fn test_launcher() -> Launcher {
        let exe = std::env::current_exe().expect("current_exe");
        Launcher::new(&exe, LAUNCHER_PREFIX)
    }

    async fn start_through(launcher: &mut Launcher, dir: &Path, spec: &TaskSpec) -> RunningTask {
        let exe = std::env::current_exe().expect("current_exe");
        launch(Some(launcher), &exe, SHIM_PREFIX, dir, spec)
            .await
            .expect("launch")
    }

    /// The parent pid of `pid` (field 4 of /proc/<pid>/stat).
    fn parent_of(pid: i32) -> Option<i32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let rest = &stat[stat.rfind(')')? + 1..];
        rest.split_whitespace().nth(1)?.parse().ok()
    }

    fn kill9(pid: i32) {
        // SAFETY: kill(2) has no memory-safety preconditions; pid > 1 is asserted.
        assert!(pid > 1);
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }

    fn shim_pid(dir: &Path) -> i32 {
        shim::read_pid_file(&dir.join(SHIM_PID_FILE))
            .expect("shim.pid")
            .0
    }

    fn spec(command: TaskCommand) -> TaskSpec {
        TaskSpec {
            task_id: "t1".into(),
            command,
            env: vec![],
            secret_env: Default::default(),
            work_dir: None,
            timeout_ms: None,
            output_cap_bytes: 1 << 20,
            container: None,
        }
    }

    fn sh(script: &str) -> TaskSpec {
        spec(TaskCommand::Shell(script.into()))
    }

    async fn start(dir: &Path, spec: &TaskSpec) -> RunningTask {
        let exe = std::env::current_exe().expect("current_exe");
        launch(None, &exe, SHIM_PREFIX, dir, spec)
            .await
            .expect("launch")
    }

    async fn run(spec: TaskSpec) -> (TaskEnd, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let end = start(dir.path(), &spec).await.wait().await;
        (end, dir)
    }

    fn output(dir: &Path, name: &str) -> String {
        std::fs::read_to_string(dir.join(name)).expect("output file")
    }

    /// Waits until the shim has recorded the task's pid (the task has started).
    async fn wait_for_task_pid(dir: &Path) -> i32 {
        let give_up = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(pid) = shim::read_task_pid(dir) {
                return pid;
            }
            assert!(
                Instant::now() < give_up,
                "the task's pid never appeared in {}",
                dir.display()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn group_gone(pgid: i32) -> bool {
        // SAFETY: signal 0 only checks for existence; pgid > 1 is asserted below.
        assert!(pgid > 1);
        let rc = unsafe { libc::kill(-pgid, 0) };
        rc == -1 && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
    }

    #[tokio::test]
    async fn secret_variables_reach_the_task_but_never_task_json_in_the_clear() {
        let mut spec = sh(r#"[ "$TOKEN" = "$(printf '%s%s' hun ter2)" ]"#);
        spec.secret_env = SecretEnv::Plain(vec![("TOKEN".into(), "hunter2".into())]);
        let mut launcher = test_launcher();
        for through_launcher in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let task = match through_launcher {
                false => start(dir.path(), &spec).await,
                true => start_through(&mut launcher, dir.path(), &spec).await,
            };
            assert_eq!(task.wait().await, TaskEnd::Exited(0), "{through_launcher}");
            let written = std::fs::read_to_string(dir.path().join(TASK_FILE)).unwrap();
            assert!(written.contains("Sealed"), "{written}");
            assert!(!written.contains("hunter2"), "{written}");
        }
    }

    #[tokio::test]
    async fn success_captures_stdout_and_stderr() {
        let (end, dir) = run(sh("echo hello; echo oops >&2")).await;
        assert_eq!(end, TaskEnd::Exited(0));
        assert!(end.is_success());
        assert_eq!(output(dir.path(), STDOUT_FILE), "hello\n");
        assert_eq!(output(dir.path(), STDERR_FILE), "oops\n");
        let status = read_status(dir.path()).unwrap().unwrap();
        assert!(status.started_at_ms <= status.ended_at_ms);
    }

    #[tokio::test]
    async fn a_silent_task_leaves_four_inodes_and_both_pids_in_one_file() {
        let (end, dir) = run(sh("exit 0")).await;
        assert_eq!(end, TaskEnd::Exited(0));
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, [SHIM_PID_FILE, STATUS_FILE, TASK_FILE]);
        let pids = std::fs::read_to_string(dir.path().join(SHIM_PID_FILE)).unwrap();
        let lines: Vec<&str> = pids.lines().collect();
        assert_eq!(lines.len(), 2, "shim and task pid lines: {pids:?}");
        assert_eq!(lines[0].split(' ').count(), 2, "pid and start time");
        assert!(shim::read_task_pid(dir.path()).is_some_and(|pid| pid > 1));
    }

    #[test]
    fn the_task_pid_of_a_run_started_by_an_older_shim_is_read_from_child_pid() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SHIM_PID_FILE), "41 7\n").unwrap();
        assert_eq!(shim::read_task_pid(dir.path()), None, "not started yet");
        std::fs::write(dir.path().join("child.pid"), "42\n").unwrap();
        assert_eq!(shim::read_task_pid(dir.path()), Some(42));
        std::fs::write(dir.path().join(SHIM_PID_FILE), "41 7\n43").unwrap();
        assert_eq!(
            shim::read_task_pid(dir.path()),
            None,
            "second line cut short"
        );
    }

    #[tokio::test]
    async fn exit_code_is_reported() {
        let (end, _dir) = run(sh("exit 3")).await;
        assert_eq!(end, TaskEnd::Exited(3));
        assert!(!end.is_success());
    }

    #[tokio::test]
    async fn death_by_signal_is_reported() {
        let (end, _dir) = run(sh("kill -TERM $$")).await;
        assert_eq!(end, TaskEnd::Signaled(libc::SIGTERM));
    }

    #[tokio::test]
    async fn env_and_default_work_dir() {
        let mut spec = sh("echo \"$DRON_TEST_FOO\"; pwd");
        spec.env = vec![("DRON_TEST_FOO".into(), "bar baz".into())];
        let (end, dir) = run(spec).await;
        assert_eq!(end, TaskEnd::Exited(0));
        let cwd = dir.path().canonicalize().unwrap();
        let expected = format!("bar baz\n{}\n", cwd.display());
        assert_eq!(output(dir.path(), STDOUT_FILE), expected);
    }

    #[tokio::test]
    async fn argv_command_runs_without_shell() {
        let argv = ["echo", "hello", "$HOME"].map(String::from).to_vec();
        let (end, dir) = run(spec(TaskCommand::Argv(argv))).await;
        assert_eq!(end, TaskEnd::Exited(0));
        assert_eq!(output(dir.path(), STDOUT_FILE), "hello $HOME\n");
    }

    #[tokio::test]
    async fn output_is_capped_and_drained() {
        let mut spec = sh("head -c 200000 /dev/zero | tr '\\0' a; echo end >&2");
        spec.output_cap_bytes = 1000;
        let (end, dir) = run(spec).await;
        assert_eq!(end, TaskEnd::Exited(0));
        let expected = format!(
            "{}\n[dron: output truncated after 1000 bytes]\n",
            "a".repeat(1000)
        );
        assert_eq!(output(dir.path(), STDOUT_FILE), expected);
        assert_eq!(output(dir.path(), STDERR_FILE), "end\n");
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_group() {
        let mut spec = sh("sleep 30 & sleep 30");
        spec.timeout_ms = Some(300);
        let began = Instant::now();
        let (end, dir) = run(spec).await;
        assert_eq!(end, TaskEnd::TimedOut);
        assert!(began.elapsed() < Duration::from_secs(5));
        let pgid = shim::read_task_pid(dir.path()).unwrap();
        assert!(group_gone(pgid), "processes of group {pgid} remain");
    }

    #[tokio::test]
    async fn leftover_background_processes_do_not_hold_the_end() {
        let began = Instant::now();
        let (end, dir) = run(sh("sleep 30 & echo started")).await;
        assert_eq!(end, TaskEnd::Exited(0));
        assert!(began.elapsed() < Duration::from_secs(5));
        assert_eq!(output(dir.path(), STDOUT_FILE), "started\n");
        assert!(group_gone(shim::read_task_pid(dir.path()).unwrap()));
    }

    #[tokio::test]
    async fn kill_ends_the_task() {
        let dir = tempfile::tempdir().unwrap();
        let task = start(dir.path(), &sh("sleep 30 & sleep 30")).await;
        let killer = task.killer();
        let waiting = tokio::spawn(task.wait());
        wait_for_task_pid(dir.path()).await;
        killer.kill();
        assert_eq!(waiting.await.unwrap(), TaskEnd::Killed);
        assert!(group_gone(shim::read_task_pid(dir.path()).unwrap()));
    }

    #[tokio::test]
    async fn kill_before_the_task_started_still_lands() {
        let dir = tempfile::tempdir().unwrap();
        let task = start(dir.path(), &sh("sleep 30")).await;
        // Most likely before the shim has even read task.json.
        task.killer().kill();
        assert_eq!(task.wait().await, TaskEnd::Killed);
    }

    #[tokio::test]
    async fn nonexistent_program_fails_to_start() {
        let argv = vec!["/bin/nonexistent".to_string()];
        let (end, _dir) = run(spec(TaskCommand::Argv(argv))).await;
        assert_eq!(
            end,
            TaskEnd::FailedToStart("no such file: /bin/nonexistent".into())
        );
    }

    #[tokio::test]
    async fn missing_work_dir_fails_to_start() {
        let mut spec = sh("true");
        spec.work_dir = Some("/nonexistent/dron".into());
        let (end, _dir) = run(spec).await;
        assert_eq!(
            end,
            TaskEnd::FailedToStart("working directory not found: /nonexistent/dron".into())
        );
    }

    #[tokio::test]
    async fn run_dir_cannot_be_reused() {
        let (_, dir) = run(sh("true")).await;
        let exe = std::env::current_exe().unwrap();
        let again = launch(None, &exe, SHIM_PREFIX, dir.path(), &sh("true")).await;
        assert!(matches!(again, Err(ProcessError::RunDirInUse(_))));
    }

    #[tokio::test]
    async fn adopt_finished_run() {
        let (end, dir) = run(sh("exit 7")).await;
        assert_eq!(end, TaskEnd::Exited(7));
        match adopt(dir.path(), None) {
            Adopted::Finished(end) => assert_eq!(end, TaskEnd::Exited(7)),
            Adopted::Running(_) => panic!("a finished run was adopted as running"),
        }
    }

    #[tokio::test]
    async fn adopt_of_a_dir_without_live_shim_is_lost() {
        let dir = tempfile::tempdir().unwrap();
        // A pid that cannot be ours: pid 1 never has this start time.
        std::fs::write(dir.path().join(SHIM_PID_FILE), "1 0\n").unwrap();
        match adopt(dir.path(), None) {
            Adopted::Finished(TaskEnd::Lost(_)) => {}
            other => panic!("expected lost, got {other:?}"),
        }
    }

    /// Launches a task that blocks until the file `go` appears, then forgets it
    /// (as a crashing server would): the shim and the task must carry on.
    async fn launch_and_forget(dir: &Path, mut spec: TaskSpec) {
        if let TaskCommand::Shell(script) = &mut spec.command {
            *script = format!("while [ ! -f go ]; do sleep 0.02; done; {script}");
        }
        let task = start(dir, &spec).await;
        wait_for_task_pid(dir).await;
        drop(task);
    }

    #[tokio::test]
    async fn adopt_running_run_and_wait() {
        let dir = tempfile::tempdir().unwrap();
        launch_and_forget(dir.path(), sh("echo adopted; exit 5")).await;
        let Adopted::Running(task) = adopt(dir.path(), None) else {
            panic!("the forgotten run is not running");
        };
        std::fs::write(dir.path().join("go"), "").unwrap();
        assert_eq!(task.wait().await, TaskEnd::Exited(5));
        assert_eq!(output(dir.path(), STDOUT_FILE), "adopted\n");
    }

    #[tokio::test]
    async fn adopted_run_can_be_killed_and_timed_out() {
        let dir = tempfile::tempdir().unwrap();
        launch_and_forget(dir.path(), sh("true")).await;
        let Adopted::Running(task) = adopt(dir.path(), None) else {
            panic!("the forgotten run is not running");
        };
        task.killer().kill();
        assert_eq!(task.wait().await, TaskEnd::Killed);

        let dir = tempfile::tempdir().unwrap();
        launch_and_forget(dir.path(), sh("true")).await;
        let deadline = Deadline::now() + Duration::from_millis(100);
        let Adopted::Running(task) = adopt(dir.path(), Some(deadline)) else {
            panic!("the forgotten run is not running");
        };
        assert_eq!(task.wait().await, TaskEnd::TimedOut);
    }

    #[tokio::test]
    async fn the_launcher_forks_shims_that_report_through_a_pidfd() {
        let mut launcher = test_launcher();
        for code in [0, 3] {
            let dir = tempfile::tempdir().unwrap();
            let task = start_through(
                &mut launcher,
                dir.path(),
                &sh(&format!("echo out; exit {code}")),
            )
            .await;
            assert!(
                matches!(task.shim, Shim::Pidfd(_)),
                "not watched through a pidfd"
            );
            assert_eq!(task.wait().await, TaskEnd::Exited(code));
            assert_eq!(output(dir.path(), STDOUT_FILE), "out\n");
        }
        assert!(launcher.pid().is_some(), "no launcher runs");
    }

    #[tokio::test]
    async fn a_shim_that_ended_is_reaped_by_its_launcher_once_waited_for() {
        let mut launcher = test_launcher();
        let dir = tempfile::tempdir().unwrap();
        let task = start_through(&mut launcher, dir.path(), &sh("exit 0")).await;
        let shim = task.launcher_child().expect("forked by the launcher");
        assert_eq!(task.wait().await, TaskEnd::Exited(0));
        // The launcher's scan for unasked reaps is 10 s away: only the request can do this.
        let give_up = Instant::now() + Duration::from_secs(5);
        while shim::proc_stat(shim).is_ok_and(|(state, _)| state == 'Z') {
            assert!(Instant::now() < give_up, "the shim was never reaped");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The launcher still serves launches after a reap (no answer was owed for it).
        let dir = tempfile::tempdir().unwrap();
        let again = start_through(&mut launcher, dir.path(), &sh("exit 4")).await;
        assert_eq!(again.wait().await, TaskEnd::Exited(4));
    }

    #[tokio::test]
    async fn a_task_outlives_a_kill9_of_its_launcher() {
        let mut launcher = test_launcher();
        let dir = tempfile::tempdir().unwrap();
        let script = "while [ ! -f go ]; do sleep 0.02; done; echo survived; exit 4";
        let task = start_through(&mut launcher, dir.path(), &sh(script)).await;
        wait_for_task_pid(dir.path()).await;
        let launcher_pid = launcher.pid().expect("launcher pid") as i32;
        assert_eq!(
            parent_of(shim_pid(dir.path())),
            Some(launcher_pid),
            "the launcher forked the shim"
        );
        kill9(launcher_pid);
        std::fs::write(dir.path().join("go"), "").unwrap();
        assert_eq!(task.wait().await, TaskEnd::Exited(4));
        assert_eq!(output(dir.path(), STDOUT_FILE), "survived\n");
    }

    #[tokio::test]
    async fn a_dead_launcher_falls_back_to_a_direct_shim_then_is_started_again() {
        let mut launcher = test_launcher();
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            start_through(&mut launcher, dir.path(), &sh("true"))
                .await
                .wait()
                .await,
            TaskEnd::Exited(0)
        );
        let first = launcher.pid().expect("launcher pid") as i32;
        kill9(first);
        let dir = tempfile::tempdir().unwrap();
        let task = start_through(&mut launcher, dir.path(), &sh("exit 6")).await;
        assert!(matches!(task.shim, Shim::Child(_)), "not started directly");
        assert_eq!(task.wait().await, TaskEnd::Exited(6));
        let dir = tempfile::tempdir().unwrap();
        let task = start_through(&mut launcher, dir.path(), &sh("exit 7")).await;
        assert!(matches!(task.shim, Shim::Pidfd(_)), "no new launcher");
        assert_eq!(task.wait().await, TaskEnd::Exited(7));
        assert_ne!(launcher.pid(), Some(first as u32));
    }

    #[tokio::test]
    async fn a_second_shim_for_the_same_run_waits_for_the_first_and_runs_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let script = "echo ran >> runs; while [ ! -f go ]; do sleep 0.02; done; exit 5";
        let first = start(dir.path(), &sh(script)).await;
        wait_for_task_pid(dir.path()).await;
        // As after a launcher that forked a shim and died before answering: a direct start.
        let exe = std::env::current_exe().unwrap();
        let second = spawn_shim(&exe, SHIM_PREFIX, dir.path(), &sh(script)).unwrap();
        let second = tokio::spawn(second.wait());
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !second.is_finished(),
            "the second shim did not wait for the first"
        );
        std::fs::write(dir.path().join("go"), "").unwrap();
        assert_eq!(first.wait().await, TaskEnd::Exited(5));
        assert_eq!(second.await.unwrap(), TaskEnd::Exited(5));
        assert_eq!(output(dir.path(), "runs"), "ran\n", "the task ran once");
    }

    #[tokio::test]
    async fn an_adopted_shim_is_watched_through_a_pidfd() {
        let dir = tempfile::tempdir().unwrap();
        launch_and_forget(dir.path(), sh("exit 2")).await;
        let Adopted::Running(task) = adopt(dir.path(), None) else {
            panic!("the forgotten run is not running");
        };
        assert!(matches!(task.shim, Shim::Pidfd(_)), "polled instead");
        std::fs::write(dir.path().join("go"), "").unwrap();
        assert_eq!(task.wait().await, TaskEnd::Exited(2));
    }
}
