//! The agent's side of the launcher (`dron_shim::launcher`, the long-lived process that
//! forks shims without an exec): starts it with a Unix socket as its stdin, asks it for each
//! shim over tokio, and starts it again when it died.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use dron_shim::launcher::{
    Answer, MAX_REQUEST, Request, receive_answer, send_request, seqpacket_pair,
};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

// The launcher process lives in dron-shim; re-exported under the old path.
pub use dron_shim::launcher::{LAUNCHER_SUBCOMMAND, run_launcher_main};

/// How long the agent waits for an answer before it gives the launcher up.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// A shim the launcher started: how to watch it.
#[derive(Debug)]
pub struct Forked {
    pub pid: i32,
    /// Readable once the shim has ended; None on kernels without pidfds.
    pub pidfd: Option<OwnedFd>,
    /// The shim's start time, when there is no pidfd (to poll it as an adopted shim).
    pub starttime: u64,
    /// How to have the launcher reap the shim once it has ended.
    pub reaper: ShimReaper,
}

/// Asks the launcher that forked a shim to reap it, once whoever watches the shim has seen it
/// end. Holds the launcher's socket: a launcher replaced meanwhile still gets its own shims'
/// reaps (it lives on until the last is sent), and a dead one makes the request fail quietly.
#[derive(Debug)]
pub struct ShimReaper {
    socket: Arc<AsyncFd<OwnedFd>>,
    pid: i32,
}

impl ShimReaper {
    #[cfg(test)]
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Best effort and not answered: a request that cannot be sent at once is dropped, and the
    /// launcher's rare scan reaps that shim instead. Datagrams are whole, so this may be sent
    /// from any task while the agent waits for a launch's answer.
    pub fn reap(self) {
        let _ = send_request(self.socket.as_raw_fd(), &Request::Reap(self.pid).encode());
    }
}

/// The agent's side: starts the launcher, sends it requests, and starts it again when it
/// died. Used by one task at a time (the local agent's launching task).
#[derive(Debug)]
pub struct Launcher {
    program: PathBuf,
    args_prefix: Vec<String>,
    running: Option<Running>,
}

#[derive(Debug)]
struct Running {
    socket: Arc<AsyncFd<OwnedFd>>,
    process: tokio::process::Child,
}

impl Launcher {
    /// A launcher run as `<program> <args_prefix...> task-launcher` (the prefix is for tests,
    /// whose launcher is the test binary). Not started until the first [`Launcher::fork`].
    pub fn new(program: &Path, args_prefix: &[&str]) -> Self {
        Launcher {
            program: program.to_path_buf(),
            args_prefix: args_prefix.iter().map(|arg| arg.to_string()).collect(),
            running: None,
        }
    }

    /// The launcher's pid, if it runs (for tests).
    pub fn pid(&self) -> Option<u32> {
        self.running
            .as_ref()
            .and_then(|running| running.process.id())
    }

    /// Has the launcher fork a shim for `run_dir`. On an error the launcher is given up (and
    /// started again by the next call); the caller starts the shim itself.
    pub async fn fork(&mut self, run_dir: &Path) -> io::Result<Forked> {
        if self.running.is_none() {
            self.running = Some(self.start()?);
        }
        let running = self.running.as_mut().expect("started above");
        let asked = tokio::time::timeout(ANSWER_TIMEOUT, running.ask(run_dir)).await;
        let answered = match asked {
            Ok(answered) => answered,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the launcher did not answer",
            )),
        };
        let forked = answered.and_then(|(answer, pidfd)| match answer.errno {
            0 => Ok(Forked {
                pid: answer.pid,
                pidfd,
                starttime: answer.starttime,
                reaper: ShimReaper {
                    socket: running.socket.clone(),
                    pid: answer.pid,
                },
            }),
            errno => Err(io::Error::from_raw_os_error(errno)),
        });
        if forked.is_err()
            && let Some(mut gone) = self.running.take()
        {
            // Dead, stuck or failing: a new one next time. Killing it spares its shims.
            let _ = gone.process.start_kill();
        }
        forked
    }

    fn start(&self) -> io::Result<Running> {
        let (ours, theirs) = seqpacket_pair()?;
        let mut command = tokio::process::Command::new(&self.program);
        command
            .args(&self.args_prefix)
            .arg(LAUNCHER_SUBCOMMAND)
            .stdin(Stdio::from(theirs))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own group, as a shim: a terminal's ^C aimed at the server misses it.
            .process_group(0);
        // The shims it forks inherit the key their secrets are sealed with.
        super::process::give_seal_key(&mut command);
        let process = command.spawn()?;
        Ok(Running {
            socket: Arc::new(register(ours, Interest::READABLE | Interest::WRITABLE)?),
            process,
        })
    }
}

impl Running {
    async fn ask(&mut self, run_dir: &Path) -> io::Result<(Answer, Option<OwnedFd>)> {
        if run_dir.as_os_str().len() > MAX_REQUEST {
            return Err(io::Error::other("run directory path too long"));
        }
        let request = Request::Launch(run_dir).encode();
        self.socket
            .async_io(Interest::WRITABLE, |fd| {
                send_request(fd.as_raw_fd(), &request)
            })
            .await?;
        self.socket
            .async_io(Interest::READABLE, |fd| receive_answer(fd.as_raw_fd()))
            .await
    }
}

/// Registers a descriptor with tokio's reactor.
pub(crate) fn register(fd: OwnedFd, interest: Interest) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd is open and keeps the same descriptor until it is dropped, which
    // only the AsyncFd that owns it can do.
    Ok(unsafe { AsyncFd::register_with_interest(fd, interest) }?)
}
