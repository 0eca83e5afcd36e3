//! The task shim: the small process standing between the dron server and one task.
//!
//! The server may be killed -9 while tasks run; the task must keep running and its
//! end must be left behind in the run directory, so that a restarted server learns
//! how it ended instead of guessing (as containerd-shim and the Mesos executor do).
//! The shim is the dron binary itself, started as `dron task-shim <run_dir>`.
//!
//! Files in the run directory (names in [`super::process`]):
//! - reads `task.json` (a [`TaskSpec`]), written by the server before it starts us;
//! - writes `shim.pid` (`"<pid> <starttime>"`) first, so a restarted server can tell
//!   whether this very shim (not a process that reused its pid) is still alive;
//! - writes `child.pid` right after the spawn: the task's pid, which is also its
//!   process group id, so the server can kill the task's whole tree;
//! - writes the task's output to `stdout` and `stderr`, each capped;
//! - writes `status.json` (a [`TaskStatus`]) once the task has ended.
//!
//! This is synchronous std code on purpose: it runs in its own small process.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::process::{
    CHILD_PID_FILE, SHIM_PID_FILE, STATUS_FILE, STDERR_FILE, STDOUT_FILE, TASK_FILE, TaskCommand,
    TaskSpec, TaskStatus, now_ms,
};

/// Shim exit code: the task ran and `status.json` records how it ended.
pub const EXIT_RECORDED: i32 = 0;
/// Shim exit code: the task could not be started; `status.json` says why.
pub const EXIT_NOT_STARTED: i32 = 1;
/// Shim exit code: nothing could be recorded (run directory unusable).
pub const EXIT_NO_RECORD: i32 = 2;

/// How long, after the task ended, the shim waits for its output pipes to close and
/// its leftover processes to be reaped. Only processes that escaped the task's
/// process group (setsid) can make this wait last.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// Entry point of `dron task-shim <run_dir>`; returns the process exit code.
pub fn run_shim_main(run_dir: &Path) -> i32 {
    ignore_hangup_signals();
    become_subreaper();
    // Best effort: without shim.pid only adoption after a server restart suffers;
    // the task itself can still run and report.
    let _ = write_shim_pid(run_dir);
    let started_at_ms = now_ms();
    let spec = match read_spec(run_dir) {
        Ok(spec) => spec,
        Err(why) => return record_failure(run_dir, started_at_ms, why),
    };
    let task = match start_task(run_dir, &spec) {
        Ok(task) => task,
        Err(why) => return record_failure(run_dir, now_ms(), why),
    };
    supervise(run_dir, task)
}

/// A started task: the child and the completion signals of its output readers.
struct Started {
    child: Child,
    started_at_ms: i64,
    readers_done: mpsc::Receiver<()>,
}

/// How the task's main process ended.
enum Ended {
    Code(i32),
    Signal(i32),
}

/// Waits for the task, records its end and reaps everything it left behind.
fn supervise(run_dir: &Path, task: Started) -> i32 {
    let pid = child_pid(&task.child);
    let ended = match wait_exit_keep_zombie(pid) {
        Ok(ended) => ended,
        // Cannot happen for our own child; without an end there is nothing to record.
        Err(_) => return EXIT_NO_RECORD,
    };
    let ended_at_ms = now_ms();
    // A task ends when its main process ends (as a Mesos container does): leftover
    // background processes of its group are killed, which also closes the output
    // pipes they hold. The main process is still an unreaped zombie, so its pid
    // (= the group id) cannot have been reused by an unrelated group.
    kill_group(pid);
    wait_readers(&task.readers_done, Instant::now() + DRAIN_GRACE);
    let (exit_code, signal) = match ended {
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

/// Spawns the task with its output going to pipes drained into the run directory.
fn start_task(run_dir: &Path, spec: &TaskSpec) -> Result<Started, String> {
    let mut cmd = build_command(run_dir, spec)?;
    let out = create_output(run_dir, STDOUT_FILE)?;
    let err = create_output(run_dir, STDERR_FILE)?;
    let started_at_ms = now_ms();
    let mut child = cmd.spawn().map_err(|e| spawn_error(&spec.command, e))?;
    if let Err(e) = write_atomic(
        &run_dir.join(CHILD_PID_FILE),
        format!("{}\n", child.id()).as_bytes(),
    ) {
        // Without child.pid the server could neither kill nor time out the task:
        // refuse to run it unsupervised.
        kill_group(child_pid(&child));
        let _ = child.wait();
        return Err(format!("cannot record the task's pid: {e}"));
    }
    let readers_done = spawn_readers(&mut child, out, err, spec.output_cap_bytes);
    Ok(Started {
        child,
        started_at_ms,
        readers_done,
    })
}

fn build_command(run_dir: &Path, spec: &TaskSpec) -> Result<Command, String> {
    let mut cmd = match &spec.command {
        TaskCommand::Shell(script) => {
            let mut cmd = Command::new("/bin/sh");
            cmd.arg("-c").arg(script);
            cmd
        }
        TaskCommand::Argv(argv) => {
            let (program, args) = argv.split_first().ok_or("empty argv")?;
            let mut cmd = Command::new(program);
            cmd.args(args);
            cmd
        }
        TaskCommand::Sleep { .. } => return Err("a built-in task has no process".into()),
    };
    let work_dir = spec.work_dir.as_deref().unwrap_or(run_dir);
    // Checked here because a failed chdir in the child is reported as the same
    // NotFound as a missing program, which would give a misleading message.
    if !work_dir.is_dir() {
        return Err(format!(
            "working directory not found: {}",
            work_dir.display()
        ));
    }
    cmd.envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(work_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group, so that killing the group kills the task's whole tree.
        .process_group(0);
    restore_hangup_signals_in_child(&mut cmd);
    Ok(cmd)
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

fn create_output(run_dir: &Path, name: &str) -> Result<File, String> {
    let path = run_dir.join(name);
    File::create(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))
}

/// Starts one thread per output pipe; each sends on the returned channel when done.
fn spawn_readers(child: &mut Child, out: File, err: File, cap: u64) -> mpsc::Receiver<()> {
    let (done_tx, done_rx) = mpsc::channel();
    if let Some(pipe) = child.stdout.take() {
        let done = done_tx.clone();
        std::thread::spawn(move || {
            drain_capped(pipe, out, cap);
            let _ = done.send(());
        });
    }
    if let Some(pipe) = child.stderr.take() {
        let done = done_tx.clone();
        std::thread::spawn(move || {
            drain_capped(pipe, err, cap);
            let _ = done.send(());
        });
    }
    done_rx
}

/// Copies `from` into `to` up to `cap` bytes, then keeps draining (so the task never
/// blocks on a full pipe) and notes the truncation once.
fn drain_capped(mut from: impl Read, mut to: File, cap: u64) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut written: u64 = 0;
    let mut truncated = false;
    // Output is best effort: after a write error (disk full) we only drain.
    let mut sink_ok = true;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        if !sink_ok {
            continue;
        }
        let take = (n as u64).min(cap.saturating_sub(written)) as usize;
        if take > 0 {
            sink_ok = to.write_all(&buf[..take]).is_ok();
            written += take as u64;
        }
        if take < n && !truncated {
            truncated = true;
            let note = format!("\n[dron: output truncated after {cap} bytes]\n");
            sink_ok = sink_ok && to.write_all(note.as_bytes()).is_ok();
        }
    }
}

/// Waits until both readers are done or the deadline passes (a process that escaped
/// the task's group may hold a pipe open forever; its output is then cut off).
fn wait_readers(done: &mpsc::Receiver<()>, deadline: Instant) {
    for _ in 0..2 {
        let left = deadline.saturating_duration_since(Instant::now());
        if done.recv_timeout(left).is_err() {
            return;
        }
    }
}

/// Waits for `pid` to end without reaping it, so its pid stays reserved.
fn wait_exit_keep_zombie(pid: i32) -> io::Result<Ended> {
    loop {
        // SAFETY: siginfo_t is plain old data, for which all-zero bytes are valid.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a valid, writable siginfo_t for the whole call.
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if rc == 0 {
            // SAFETY: waitid succeeded for an exited child, so si_status is set.
            let status = unsafe { info.si_status() };
            return Ok(match info.si_code {
                libc::CLD_EXITED => Ended::Code(status),
                _ => Ended::Signal(status),
            });
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Sends SIGKILL to the process group `pgid`; refuses ids that would mean
/// "every process" (-1) or "our own group" (0).
pub(crate) fn kill_group(pgid: i32) -> bool {
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

/// The shim must survive the death of the server (its parent) and of the terminal.
fn ignore_hangup_signals() {
    for sig in [libc::SIGHUP, libc::SIGINT] {
        // SAFETY: installing SIG_IGN runs no handler code; no preconditions.
        unsafe { libc::signal(sig, libc::SIG_IGN) };
    }
}

/// Ignored signals survive exec; the task must get the default dispositions back.
fn restore_hangup_signals_in_child(cmd: &mut Command) {
    // SAFETY: the closure runs between fork and exec; it only calls signal(2),
    // which is async-signal-safe, and touches no memory shared with other threads.
    unsafe {
        cmd.pre_exec(|| {
            for sig in [libc::SIGHUP, libc::SIGINT] {
                libc::signal(sig, libc::SIG_DFL);
            }
            Ok(())
        });
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

fn write_shim_pid(run_dir: &Path) -> io::Result<()> {
    let pid = std::process::id() as i32;
    let (_, starttime) = proc_stat(pid)?;
    write_atomic(
        &run_dir.join(SHIM_PID_FILE),
        format!("{pid} {starttime}\n").as_bytes(),
    )
}

fn write_status(run_dir: &Path, status: &TaskStatus) -> io::Result<()> {
    let bytes = serde_json::to_vec(status).map_err(io::Error::other)?;
    write_atomic(&run_dir.join(STATUS_FILE), &bytes)
}

/// Writes through a temporary file and a rename, so readers never see a partial
/// file: existence of the final name means complete content.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// State (field 3) and start time in clock ticks since boot (field 22) of a process,
/// from `/proc/<pid>/stat`. The start time tells a reused pid from the original.
pub(crate) fn proc_stat(pid: i32) -> io::Result<(char, u64)> {
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
