//! The task shim: the small process standing between the dron server and one task.
//!
//! The server may be killed -9 while tasks run; the task must keep running and its
//! end must be left behind in the run directory, so that a restarted server learns
//! how it ended instead of guessing (as containerd-shim and the Mesos executor do).
//! The shim is forked by the agent's launcher ([`crate::launcher`]), or started as
//! `dron-shim task-shim <run_dir>` when the launcher is down.
//!
//! Files in the run directory (names in [`dron_task::spec`]):
//! - reads `task.json` (a [`TaskSpec`]), written by the server before it starts us, and opens
//!   its sealed secret variables with the key the agent gave us (`DRON_SEAL_KEY`);
//! - creates `shim.pid` (`"<pid> <starttime>"`) first and exclusively: it claims the run
//!   directory (a second shim for the same run only waits for the first to end), and
//!   lets a restarted server tell whether this very shim (not a process that reused its
//!   pid) is still alive;
//! - appends the task's pid to `shim.pid` as a second line right after the spawn: it is also
//!   the task's process group id, so the server can kill the task's whole tree;
//! - writes the task's output to `stdout` and `stderr`, each capped, each created when the
//!   task first writes to it (a silent task leaves neither);
//! - writes `status.json` (a [`TaskStatus`]) once the task has ended, through a rename.
//!
//! Every file is an inode to allocate, which is much of a short run's cost (see
//! docs/benchmarks.md): a silent run leaves four (the directory, `task.json`, `shim.pid`,
//! `status.json`).
//!
//! This is synchronous std code on purpose, on one thread: it runs in its own small process.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::container::{self, ContainerRun};
use dron_task::secret::SealKey;
use dron_task::{
    SHIM_PID_FILE, STATUS_FILE, STDERR_FILE, STDOUT_FILE, TASK_FILE, TaskCommand, TaskSpec,
    TaskStatus,
};

/// Shim exit code: the task ran and `status.json` records how it ended.
pub const EXIT_RECORDED: i32 = 0;
/// Shim exit code: the task could not be started; `status.json` says why.
pub const EXIT_NOT_STARTED: i32 = 1;
/// Shim exit code: nothing could be recorded (run directory unusable).
pub const EXIT_NO_RECORD: i32 = 2;
/// Shim exit code: another shim had already claimed the run directory; this one waited for
/// it to end and did nothing else.
pub const EXIT_CLAIMED: i32 = 3;

/// How long, after the task ended, the shim waits for its output pipes to close and
/// its leftover processes to be reaped. Only processes that escaped the task's
/// process group (setsid) can make this wait last.
const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// How often the task's end is looked for when the kernel has no pidfds (before 5.3).
const EXIT_POLL: Duration = Duration::from_millis(10);
/// How often a shim that lost the claim on its run directory looks at the winner.
const CLAIMED_POLL: Duration = Duration::from_millis(50);

/// Milliseconds since the Unix epoch: the clock of `status.json`, and of the agent. Here, at
/// the bottom of the agent's modules, so that the shim needs nothing from the server side.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Entry point of `dron task-shim <run_dir>`; returns the process exit code. Also what a
/// launcher's forked child runs (`launcher.rs`).
pub fn run_shim_main(run_dir: &Path) -> i32 {
    survive_hangup_signals();
    become_subreaper();
    // Absolute, because the shim moves into the task's working directory before starting it.
    let Ok(run_dir) = std::path::absolute(run_dir) else {
        return EXIT_NO_RECORD;
    };
    let run_dir = run_dir.as_path();
    let pid_file = match claim_run_dir(run_dir) {
        Ok(file) => file,
        Err(Claim::Taken(owner)) => return wait_for_other_shim(owner),
        Err(Claim::Failed(why)) => return record_failure(run_dir, now_ms(), why),
    };
    let started_at_ms = now_ms();
    let mut spec = match read_spec(run_dir) {
        Ok(spec) => spec,
        Err(why) => return record_failure(run_dir, started_at_ms, why),
    };
    // Secret variables are sealed in task.json with a key only the agent hands its shims.
    match spec.secret_env.open(SealKey::from_env().as_ref()) {
        Ok(secrets) => spec.env.extend(secrets),
        Err(why) => return record_failure(run_dir, started_at_ms, why),
    }
    let container = match ContainerRun::of(&spec) {
        Ok(container) => container,
        Err(why) => return record_failure(run_dir, now_ms(), why),
    };
    if let Some(container) = &container {
        container::stop_adopting_orphans();
        if let Err(why) = container.ensure_image() {
            return record_failure(run_dir, now_ms(), why);
        }
    }
    let task = match start_task(run_dir, pid_file, &spec, container.as_ref()) {
        Ok(task) => task,
        Err(why) => return record_failure(run_dir, now_ms(), why),
    };
    supervise(run_dir, task, container.as_ref())
}

/// A started task: its pid (= its process group), a pidfd for its end when the kernel has
/// them, and its two output pipes.
struct Started {
    pid: i32,
    pidfd: Option<OwnedFd>,
    started_at_ms: i64,
    outputs: [Output; 2],
}

/// How the task's main process ended.
enum Ended {
    Code(i32),
    Signal(i32),
}

/// Waits for the task while copying its output, records its end and reaps everything it
/// left behind. One thread: a poll loop over the two pipes and the task's pidfd.
fn supervise(run_dir: &Path, mut task: Started, container: Option<&ContainerRun>) -> i32 {
    let mut buf = vec![0u8; 64 * 1024];
    let mut ended: Option<(Ended, i64)> = None;
    let mut drain_deadline: Option<Instant> = None;
    loop {
        if ended.is_none() && (task.pidfd.is_none() || all_closed(&task.outputs)) {
            // No pidfd: look now. Both pipes closed: the end is near, block on it.
            let block = task.pidfd.is_some();
            match wait_exit_keep_zombie(task.pid, block) {
                Ok(Some(end)) => ended = Some((end, now_ms())),
                Ok(None) => {}
                // Cannot happen for our own child; without an end there is nothing to record.
                Err(_) => return EXIT_NO_RECORD,
            }
            if let Some((end, _)) = &ended {
                drain_deadline = Some(after_exit(task.pid, end, container));
            }
        }
        if ended.is_some() && all_closed(&task.outputs) {
            break;
        }
        if drain_deadline.is_some_and(|at| Instant::now() >= at) {
            break; // a process that escaped the group holds a pipe: its output is cut off
        }
        let timeout = match (drain_deadline, &task.pidfd) {
            (Some(at), _) => at.saturating_duration_since(Instant::now()),
            (None, None) => EXIT_POLL,
            (None, Some(_)) => Duration::MAX,
        };
        let watch_exit = if ended.is_none() {
            task.pidfd.as_ref().map(AsRawFd::as_raw_fd)
        } else {
            None
        };
        let ready = poll_once(&task.outputs, watch_exit, timeout);
        for (output, readable) in task.outputs.iter_mut().zip(ready.outputs) {
            if readable {
                output.read_once(&mut buf);
            }
        }
        if ready.exited {
            match wait_exit_keep_zombie(task.pid, true) {
                Ok(Some(end)) => {
                    drain_deadline = Some(after_exit(task.pid, &end, container));
                    ended = Some((end, now_ms()));
                }
                Ok(None) => {}
                Err(_) => return EXIT_NO_RECORD,
            }
        }
    }
    let Some((end, ended_at_ms)) = ended else {
        return EXIT_NO_RECORD;
    };
    let (exit_code, signal) = match end {
        Ended::Code(code) => (Some(code), None),
        Ended::Signal(sig) => (None, Some(sig)),
    };
    let status = TaskStatus {
        exit_code,
        signal,
        started_at_ms: task.started_at_ms,
        ended_at_ms,
        error: None,
    };
    let code = match write_status(run_dir, &status) {
        Ok(()) => EXIT_RECORDED,
        Err(_) => EXIT_NO_RECORD,
    };
    // Reap only after status.json exists: until then the server may rely on the
    // group id being ours when it signals it.
    reap_all(Instant::now() + DRAIN_GRACE);
    code
}

/// A task ends when its main process ends (as a Mesos container does): leftover
/// background processes of its group are killed, which also closes the output pipes they
/// hold. The main process is still an unreaped zombie, so its pid (= the group id) cannot
/// have been reused by an unrelated group. A container that may outlive its engine's process
/// (killed, or failed partway) is removed. Answers how long the pipes may take to drain.
fn after_exit(pid: i32, end: &Ended, container: Option<&ContainerRun>) -> Instant {
    kill_group(pid);
    let exit_code = match end {
        Ended::Code(code) => Some(*code),
        Ended::Signal(_) => None,
    };
    if let Some(container) = container
        && ContainerRun::may_remain(exit_code)
    {
        container.remove();
    }
    Instant::now() + DRAIN_GRACE
}

fn all_closed(outputs: &[Output; 2]) -> bool {
    outputs.iter().all(|output| output.pipe.is_none())
}

/// What one `poll(2)` found ready.
struct Ready {
    outputs: [bool; 2],
    exited: bool,
}

/// Polls the open output pipes and, if given, the task's pidfd, once.
fn poll_once(outputs: &[Output; 2], pidfd: Option<RawFd>, timeout: Duration) -> Ready {
    let mut fds: Vec<libc::pollfd> = Vec::with_capacity(3);
    let mut slots = [usize::MAX; 2];
    for (i, output) in outputs.iter().enumerate() {
        if let Some(pipe) = &output.pipe {
            slots[i] = fds.len();
            fds.push(pollfd(pipe.as_raw_fd()));
        }
    }
    let exit_slot = pidfd.map(|fd| {
        fds.push(pollfd(fd));
        fds.len() - 1
    });
    let timeout_ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    let timeout_ms = if timeout == Duration::MAX {
        -1
    } else {
        timeout_ms
    };
    // SAFETY: `fds` is a valid array of `fds.len()` pollfd structs for the whole call.
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    let fired = |slot: usize| rc > 0 && fds.get(slot).is_some_and(|fd| fd.revents != 0);
    Ready {
        outputs: [fired(slots[0]), fired(slots[1])],
        exited: exit_slot.is_some_and(fired),
    }
}

fn pollfd(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// The free space that task output leaves on a filesystem of `size` bytes: a tenth of it, at
/// most 256 MiB. RocksDB needs room to flush and to start a new write-ahead log.
fn output_reserve(size: u64) -> u64 {
    (size / 10).min(256 << 20)
}

/// One of the task's output pipes, copied into its capped file.
struct Output {
    /// None once closed (end of file, or a read error).
    pipe: Option<File>,
    /// Where the output goes; created on the first bytes, so a silent task costs no file.
    path: std::path::PathBuf,
    file: Option<File>,
    cap: u64,
    written: u64,
    truncated: bool,
    /// Output is best effort: after a write error (disk full) we only drain.
    sink_ok: bool,
}

impl Output {
    fn new(pipe: Option<OwnedFd>, path: std::path::PathBuf, cap: u64) -> Self {
        Output {
            pipe: pipe.map(File::from),
            path,
            file: None,
            cap,
            written: 0,
            truncated: false,
            sink_ok: true,
        }
    }

    /// Reads what the pipe holds (poll said it would not block), copies it up to the cap,
    /// then keeps draining (so the task never blocks on a full pipe) and notes the
    /// truncation once.
    fn read_once(&mut self, buf: &mut [u8]) {
        let Some(pipe) = &mut self.pipe else { return };
        let n = match pipe.read(buf) {
            Ok(0) => return self.pipe = None,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return,
            Err(_) => return self.pipe = None,
        };
        if !self.sink_ok {
            return;
        }
        let cap = self.cap;
        let take = (n as u64).min(cap.saturating_sub(self.written)) as usize;
        if take > 0 && !self.room_for(take as u64) {
            let note = format!(
                "\n[dron: output stopped after {} bytes: the disk is nearly full, and what is \
                 left is kept for dron's stores]\n",
                self.written
            );
            let _ = self.write(note.as_bytes());
            self.sink_ok = false; // only drained from now on
            return;
        }
        if take > 0 {
            self.sink_ok = self.write(&buf[..take]);
            self.written += take as u64;
        }
        if take < n && !self.truncated {
            self.truncated = true;
            let note = format!("\n[dron: output truncated after {cap} bytes]\n");
            self.sink_ok = self.sink_ok && self.write(note.as_bytes());
        }
    }

    /// Whether `bytes` more output leave the filesystem of the run directory at least its
    /// reserve free ([`output_reserve`]): output that fills the disk must not take the
    /// stores on it down with it. A filesystem that cannot say has room.
    fn room_for(&self, bytes: u64) -> bool {
        let Some(dir) = self.path.parent() else {
            return true;
        };
        let Ok(dir) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
            return true;
        };
        // SAFETY: a valid C string and a zeroed statvfs for the call to fill.
        let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(dir.as_ptr(), &mut stat) } != 0 {
            return true;
        }
        let block = stat.f_frsize as u64;
        let free = (stat.f_bavail as u64).saturating_mul(block);
        let size = (stat.f_blocks as u64).saturating_mul(block);
        free >= bytes.saturating_add(output_reserve(size))
    }

    /// Writes to the output's file, creating it the first time; false on an error.
    fn write(&mut self, bytes: &[u8]) -> bool {
        if self.file.is_none() {
            self.file = File::create(&self.path).ok();
        }
        self.file
            .as_mut()
            .is_some_and(|file| file.write_all(bytes).is_ok())
    }
}

fn child_pid(child: &Child) -> i32 {
    // Pids fit in pid_t; std only hands them out as u32.
    child.id() as i32
}

/// Records a task that could not be started; returns the shim's exit code.
fn record_failure(run_dir: &Path, at_ms: i64, why: String) -> i32 {
    let status = TaskStatus {
        exit_code: None,
        signal: None,
        started_at_ms: at_ms,
        ended_at_ms: at_ms,
        error: Some(why),
    };
    match write_status(run_dir, &status) {
        Ok(()) => EXIT_NOT_STARTED,
        Err(_) => EXIT_NO_RECORD,
    }
}

fn read_spec(run_dir: &Path) -> Result<TaskSpec, String> {
    let path = run_dir.join(TASK_FILE);
    let bytes = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("invalid {}: {e}", path.display()))
}

/// Spawns the task with its output going to pipes drained into the run directory, and
/// appends its pid to `shim.pid` (`pid_file`, which the claim left open at its end).
fn start_task(
    run_dir: &Path,
    mut pid_file: File,
    spec: &TaskSpec,
    container: Option<&ContainerRun>,
) -> Result<Started, String> {
    let mut cmd = build_command(run_dir, spec, container)?;
    let started_at_ms = now_ms();
    let mut child = cmd.spawn().map_err(|e| match container {
        Some(container) => container.cannot_start(e),
        None => spawn_error(&spec.command, e),
    })?;
    let pid = child_pid(&child);
    // One line in one write(2): a reader seeing it cut short retries (`read_task_pid`).
    if let Err(e) = pid_file.write_all(format!("{pid}\n").as_bytes()) {
        // Without the task's pid the server could neither kill nor time out the task:
        // refuse to run it unsupervised.
        kill_group(pid);
        let _ = child.wait();
        return Err(format!("cannot record the task's pid: {e}"));
    }
    let pipes = [
        child.stdout.take().map(OwnedFd::from),
        child.stderr.take().map(OwnedFd::from),
    ];
    let [out_pipe, err_pipe] = pipes;
    let cap = spec.output_cap_bytes;
    Ok(Started {
        pid,
        // Our own unreaped child: its pid cannot be reused before we reap it.
        pidfd: pidfd_open(pid).ok(),
        started_at_ms,
        outputs: [
            Output::new(out_pipe, run_dir.join(STDOUT_FILE), cap),
            Output::new(err_pipe, run_dir.join(STDERR_FILE), cap),
        ],
    })
}

/// A pidfd for `pid`: readable once the process has ended. Only race-free for our own
/// unreaped children (or when the caller checks the process's identity afterwards).
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open(2) takes two integers and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just handed us this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

fn build_command(
    run_dir: &Path,
    spec: &TaskSpec,
    container: Option<&ContainerRun>,
) -> Result<Command, String> {
    let mut cmd = match (&spec.command, container) {
        // The engine's process is the task; it passes the job's variables on by name.
        (_, Some(container)) => container.command(spec)?,
        (TaskCommand::Shell(script), None) => {
            let mut cmd = Command::new("/bin/sh");
            cmd.arg("-c").arg(script);
            cmd
        }
        (TaskCommand::Argv(argv), None) => {
            let (program, args) = argv.split_first().ok_or("empty argv")?;
            let mut cmd = Command::new(program);
            cmd.args(args);
            cmd
        }
        (TaskCommand::Sleep { .. }, None) => return Err("a built-in task has no process".into()),
    };
    enter_work_dir(spec.work_dir.as_deref().unwrap_or(run_dir))?;
    cmd.env_clear()
        .envs(base_env())
        .envs(
            container
                .map(|_| container::engine_env())
                .unwrap_or_default(),
        )
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group, so that killing the group kills the task's whole tree.
        .process_group(0);
    // No pre_exec closure and no `current_dir`: std then starts the task with posix_spawn (a
    // vfork), not a fork of the shim. (With a directory to enter, std needs glibc's
    // `posix_spawn_file_actions_addchdir_np`, which it looks up at run time and a static shim
    // cannot find.) The hangup handlers of `survive_hangup_signals` reset at exec.
    Ok(cmd)
}

/// What a task keeps of the environment the shim inherited (from the server or the agent):
/// these only, so that neither's secrets (an API token, a password) reach every task. The
/// rest of its environment is its job's variables and the `DRON_*` ones (`spec.env`).
pub const BASE_ENV: &[&str] = &["PATH", "HOME", "LANG", "USER"];
/// PATH when the shim has none.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

fn base_env() -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    let mut base: Vec<_> = BASE_ENV
        .iter()
        .filter_map(|name| Some((name.into(), std::env::var_os(name)?)))
        .collect();
    if std::env::var_os("PATH").is_none() {
        base.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    base
}

/// Moves the shim into the task's working directory, which the task inherits at spawn. The
/// shim itself only uses absolute paths.
fn enter_work_dir(work_dir: &Path) -> Result<(), String> {
    std::env::set_current_dir(work_dir).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => format!("working directory not found: {}", work_dir.display()),
        _ => format!("cannot enter working directory {}: {e}", work_dir.display()),
    })
}

fn spawn_error(command: &TaskCommand, e: io::Error) -> String {
    let program = match command {
        TaskCommand::Shell(_) => "/bin/sh",
        TaskCommand::Argv(argv) => argv.first().map(String::as_str).unwrap_or(""),
        TaskCommand::Sleep { .. } => "(built-in)",
    };
    match e.kind() {
        io::ErrorKind::NotFound if program.contains('/') => format!("no such file: {program}"),
        io::ErrorKind::NotFound => format!("program not found in PATH: {program}"),
        io::ErrorKind::PermissionDenied => format!("permission denied: {program}"),
        _ => format!("cannot start {program}: {e}"),
    }
}

/// Looks for the end of `pid` (waits for it when `block`) without reaping it, so its pid
/// stays reserved. `Ok(None)`: still running.
fn wait_exit_keep_zombie(pid: i32, block: bool) -> io::Result<Option<Ended>> {
    let flags = libc::WEXITED | libc::WNOWAIT | if block { 0 } else { libc::WNOHANG };
    loop {
        // SAFETY: siginfo_t is plain old data, for which all-zero bytes are valid.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a valid, writable siginfo_t for the whole call.
        let rc = unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, flags) };
        if rc == 0 {
            // SAFETY: waitid succeeded; si_pid is 0 when WNOHANG found nothing.
            if unsafe { info.si_pid() } == 0 {
                return Ok(None);
            }
            // SAFETY: waitid succeeded for an exited child, so si_status is set.
            let status = unsafe { info.si_status() };
            return Ok(Some(match info.si_code {
                libc::CLD_EXITED => Ended::Code(status),
                _ => Ended::Signal(status),
            }));
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Sends SIGKILL to the process group `pgid`; refuses ids that would mean
/// "every process" (-1) or "our own group" (0).
pub fn kill_group(pgid: i32) -> bool {
    if pgid <= 1 {
        return false;
    }
    // SAFETY: kill(2) has no memory-safety preconditions; pgid > 1 is checked above.
    unsafe { libc::kill(-pgid, libc::SIGKILL) == 0 }
}

/// Reaps every child (the task and, as we are a subreaper, its orphaned
/// descendants) until none is left or the deadline passes.
fn reap_all(deadline: Instant) {
    loop {
        let mut status = 0;
        // SAFETY: `status` is a valid, writable int.
        let rc = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if rc > 0 {
            continue;
        }
        if rc < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        // rc < 0 is ECHILD: nothing left. rc == 0: children are still dying.
        if rc < 0 || Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The shim must survive the death of the server (its parent) and of the terminal. A handler
/// that does nothing, rather than SIG_IGN: handlers reset to the default at exec, so the task
/// gets the default dispositions back without a `pre_exec` step (which would force a fork).
fn survive_hangup_signals() {
    extern "C" fn ignore(_: libc::c_int) {}
    for sig in [libc::SIGHUP, libc::SIGINT] {
        // SAFETY: sigaction is plain old data (all-zero valid); the handler is
        // async-signal-safe (it does nothing); SA_RESTART keeps our syscalls going.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = ignore as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
    }
}

/// Orphaned descendants of the task are reparented to us rather than to pid 1 (which,
/// in a container, may never reap them), so that we can reap them.
fn become_subreaper() {
    // SAFETY: PR_SET_CHILD_SUBREAPER takes a plain integer flag; no pointers.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
}

/// Why the run directory is not ours.
enum Claim {
    /// Another shim (pid and start time, when its file could be read) claimed it first.
    Taken(Option<(i32, u64)>),
    /// shim.pid could not be written: the task is not run, since nothing could kill it,
    /// time it out or tell a restarted server it runs.
    Failed(String),
}

/// Claims the run directory by creating `shim.pid` (`"<pid> <starttime>"`) exclusively: a
/// second shim started for the same run (a launcher that died after forking one, followed
/// by a direct start) finds it taken and must not run the task again. Answers the file,
/// open at its end for the task's pid.
fn claim_run_dir(run_dir: &Path) -> Result<File, Claim> {
    let pid = std::process::id() as i32;
    let path = run_dir.join(SHIM_PID_FILE);
    let failed = |e: io::Error| Claim::Failed(format!("cannot write {}: {e}", path.display()));
    let (_, starttime) = proc_stat(pid).map_err(failed)?;
    let mut file = match File::options().write(true).create_new(true).open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(Claim::Taken(read_pid_file(&path)));
        }
        Err(e) => return Err(failed(e)),
    };
    // One write(2): a reader that sees it empty or cut short retries (`read_pid_file`).
    file.write_all(format!("{pid} {starttime}\n").as_bytes())
        .map_err(failed)?;
    Ok(file)
}

/// Reads the shim's `"<pid> <starttime>\n"`, the first line of `shim.pid`; a file still
/// being written (empty, no newline yet) is read again for a little while.
pub fn read_pid_file(path: &Path) -> Option<(i32, u64)> {
    for _ in 0..20 {
        let text = std::fs::read_to_string(path).ok()?;
        if let Some((line, _)) = text.split_once('\n') {
            let mut fields = line.split_whitespace();
            let pid = fields.next()?.parse().ok()?;
            let starttime = fields.next()?.parse().ok()?;
            return Some((pid, starttime));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

/// The task's pid (its process group id), the second line of `shim.pid`; None until the
/// shim has written it whole. Runs started by an older shim kept it in `child.pid`.
pub fn read_task_pid(run_dir: &Path) -> Option<i32> {
    let pid_line = |text: &str| text.strip_suffix('\n')?.parse().ok();
    let pids = std::fs::read_to_string(run_dir.join(SHIM_PID_FILE)).ok()?;
    match pids.split_once('\n') {
        Some((_, second)) if !second.is_empty() => pid_line(second),
        _ => pid_line(&std::fs::read_to_string(run_dir.join(LEGACY_TASK_PID_FILE)).ok()?),
    }
}

/// Where shims before the one-file layout wrote the task's pid.
const LEGACY_TASK_PID_FILE: &str = "child.pid";

/// The run directory belongs to another shim: wait until it ends (the server watching us
/// then reads the status it recorded) and do nothing else. An owner whose file stayed
/// unreadable is not waited for, but its run directory is still left alone.
fn wait_for_other_shim(owner: Option<(i32, u64)>) -> i32 {
    let Some((pid, starttime)) = owner else {
        return EXIT_CLAIMED;
    };
    while proc_stat(pid).is_ok_and(|(state, start)| start == starttime && state != 'Z') {
        std::thread::sleep(CLAIMED_POLL);
    }
    EXIT_CLAIMED
}

fn write_status(run_dir: &Path, status: &TaskStatus) -> io::Result<()> {
    let bytes = serde_json::to_vec(status).map_err(io::Error::other)?;
    write_atomic(&run_dir.join(STATUS_FILE), &bytes)
}

/// Writes through a temporary file and a rename, so readers never see a partial
/// file: existence of the final name means complete content.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// State (field 3) and start time in clock ticks since boot (field 22) of a process,
/// from `/proc/<pid>/stat`. The start time tells a reused pid from the original.
pub fn proc_stat(pid: i32) -> io::Result<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) is in parentheses and may itself contain spaces or
    // parentheses: the fields that follow start after the last ')'.
    let rest = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .ok_or_else(|| io::Error::other("malformed /proc stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first().and_then(|s| s.chars().next());
    let starttime = fields.get(19).and_then(|s| s.parse().ok());
    match (state, starttime) {
        (Some(state), Some(starttime)) => Ok((state, starttime)),
        _ => Err(io::Error::other("malformed /proc stat")),
    }
}
