//! The launcher: one long-lived, single-threaded process per agent that starts shims by
//! `fork()` alone, without an exec.
//!
//! Starting a shim as a program costs an exec, the dynamic loader and Rust's start-up on
//! every run, paid by a server process whose size makes even its `vfork` dear. The launcher
//! (`dron-shim task-launcher`, started by the agent with a Unix socket as its stdin) pays
//! them once. For each request (a run directory) it forks; the child detaches (`setsid`,
//! stdio on /dev/null) and runs exactly the shim of [`crate::shim`], so it outlives the launcher
//! and the agent and still writes `status.json`. The launcher answers with the child's pid
//! and a pidfd for it (passed over the socket), which the agent watches instead of a child
//! of its own (dron-actors' `agent/process.rs`).
//!
//! Requests are datagrams on a `SOCK_SEQPACKET` socket ([`Request`]): launch a shim for a run
//! directory, answered with an [`Answer`] (16 bytes) and the pidfd as `SCM_RIGHTS` when there is
//! one; or reap a shim that has ended, not answered. The agent asks for each reap as soon as it
//! has seen the shim end (dron-actors' `ShimReaper`, used by `RunningTask::wait`). Waiting for any child
//! instead makes the kernel walk every child (with 16,000 tasks running, 27 ms per look, under
//! a lock that every fork and exit on the machine needs), so the launcher does that only
//! rarely, for reaps nobody asked for.
//!
//! The launcher exits when the agent's end of the socket closes (the agent died or stopped, and
//! the last reap for its shims was sent); its shims carry on. When it is gone or fails, the
//! agent starts the shim itself and starts a new launcher for the next run. A shim forked for
//! a request the launcher never answered and a shim started directly for the same run cannot
//! both run the task: the first to create `shim.pid` owns the run directory
//! (`shim::claim_run_dir`).
//!
//! Here: the launcher process and the request and answer formats. The agent's side (starting
//! the launcher and asking it, over tokio) is dron-actors' `agent/launcher.rs`.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::shim;

/// The subcommand that runs the launcher: `dron-shim task-launcher` (or `dron task-launcher`).
pub const LAUNCHER_SUBCOMMAND: &str = "task-launcher";

/// How often the launcher looks for ended shims that nobody asked it to reap (a request lost
/// to a full socket, or a shim of a run the agent stopped watching).
const SCAN_EVERY: Duration = Duration::from_secs(10);
/// The longest run directory path a request may carry.
pub const MAX_REQUEST: usize = 8192;

/// What the agent asks of the launcher: one datagram, its first byte saying which.
#[derive(Debug, Clone, PartialEq)]
pub enum Request<'a> {
    /// Fork a shim for this run directory (answered).
    Launch(&'a Path),
    /// Reap this shim, which has ended (not answered).
    Reap(i32),
}

impl<'a> Request<'a> {
    const LAUNCH: u8 = b'L';
    const REAP: u8 = b'R';

    pub fn encode(&self) -> Vec<u8> {
        match self {
            Request::Launch(run_dir) => {
                let path = run_dir.as_os_str().as_bytes();
                let mut bytes = Vec::with_capacity(1 + path.len());
                bytes.push(Self::LAUNCH);
                bytes.extend_from_slice(path);
                bytes
            }
            Request::Reap(pid) => {
                let mut bytes = vec![Self::REAP];
                bytes.extend_from_slice(&pid.to_le_bytes());
                bytes
            }
        }
    }

    pub fn decode(bytes: &'a [u8]) -> Option<Request<'a>> {
        match bytes.split_first()? {
            (&Self::LAUNCH, path) if !path.is_empty() => {
                Some(Request::Launch(Path::new(OsStr::from_bytes(path))))
            }
            (&Self::REAP, pid) => Some(Request::Reap(i32::from_le_bytes(pid.try_into().ok()?))),
            _ => None,
        }
    }
}

/// The launcher's answer to one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Answer {
    /// The shim's pid, or 0 when the fork failed.
    pub pid: i32,
    /// The fork's errno when it failed.
    pub errno: i32,
    /// The shim's start time (`/proc/<pid>/stat`), only sent when there is no pidfd.
    pub starttime: u64,
}

impl Answer {
    pub const LEN: usize = 16;

    pub fn encode(self) -> [u8; Self::LEN] {
        let mut bytes = [0u8; Self::LEN];
        bytes[0..4].copy_from_slice(&self.pid.to_le_bytes());
        bytes[4..8].copy_from_slice(&self.errno.to_le_bytes());
        bytes[8..16].copy_from_slice(&self.starttime.to_le_bytes());
        bytes
    }

    pub fn decode(bytes: &[u8]) -> Option<Answer> {
        let bytes: &[u8; Self::LEN] = bytes.try_into().ok()?;
        let (pid, rest) = bytes.split_at(4);
        let (errno, starttime) = rest.split_at(4);
        Some(Answer {
            pid: i32::from_le_bytes(pid.try_into().ok()?),
            errno: i32::from_le_bytes(errno.try_into().ok()?),
            starttime: u64::from_le_bytes(starttime.try_into().ok()?),
        })
    }
}

/// Entry point of `dron-shim task-launcher`: serves requests on stdin (the agent's socket)
/// until the agent goes away; returns the process exit code.
pub fn run_launcher_main() -> i32 {
    let socket: RawFd = 0;
    let mut request = vec![0u8; MAX_REQUEST + 1];
    let mut next_scan = Instant::now() + SCAN_EVERY;
    loop {
        if Instant::now() >= next_scan {
            reap_finished_shims();
            next_scan = Instant::now() + SCAN_EVERY;
        }
        let mut pollfd = libc::pollfd {
            fd: socket,
            events: libc::POLLIN,
            revents: 0,
        };
        let timeout_ms = next_scan
            .saturating_duration_since(Instant::now())
            .as_millis() as i32;
        // SAFETY: one valid pollfd for the whole call.
        let rc = unsafe { libc::poll(&mut pollfd, 1, timeout_ms.max(1)) };
        if rc == 0 || (rc < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted) {
            continue;
        }
        // SAFETY: `request` is valid and writable for its length.
        let n = unsafe { libc::recv(socket, request.as_mut_ptr().cast(), request.len(), 0) };
        match n {
            0 => return 0, // the agent closed its end
            n if n < 0 => match io::Error::last_os_error().kind() {
                io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock => continue,
                _ => return 1,
            },
            n => match Request::decode(&request[..n as usize]) {
                Some(Request::Launch(run_dir)) => {
                    let (answer, pidfd) = fork_shim(socket, run_dir);
                    if send_answer(socket, answer, pidfd.as_ref()).is_err() {
                        return 1; // the agent is gone: our shims carry on without us
                    }
                }
                Some(Request::Reap(pid)) => reap_shim(pid),
                // Not from our agent's code: nothing to answer, and no fork for it.
                None => {}
            },
        }
    }
}

/// Forks the shim for `run_dir`. The child never returns.
fn fork_shim(socket: RawFd, run_dir: &Path) -> (Answer, Option<OwnedFd>) {
    // SAFETY: the launcher is single-threaded, so the child may run any code after fork.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        become_detached_shim(socket);
        let code = shim::run_shim_main(run_dir);
        // SAFETY: _exit ends the child without running the launcher's exit handlers.
        unsafe { libc::_exit(code) };
    }
    if pid < 0 {
        let errno = io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO);
        return (
            Answer {
                pid: 0,
                errno,
                starttime: 0,
            },
            None,
        );
    }
    // Our unreaped child: the pid is still its own, so the pidfd is too.
    let pidfd = shim::pidfd_open(pid).ok();
    let starttime = match pidfd {
        Some(_) => 0,
        None => shim::proc_stat(pid).map(|(_, start)| start).unwrap_or(0),
    };
    (
        Answer {
            pid,
            errno: 0,
            starttime,
        },
        pidfd,
    )
}

/// In the forked child: a session of its own (the shim outlives the launcher and the
/// agent, and signals aimed at their groups or terminal miss it), and stdio on /dev/null,
/// as a directly started shim has (stdin was the launcher's socket).
fn become_detached_shim(socket: RawFd) {
    // SAFETY: plain syscalls on descriptors this process owns; the path is NUL-terminated.
    unsafe {
        libc::setsid();
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            for fd in 0..=2 {
                libc::dup2(null, fd);
            }
            if null > 2 {
                libc::close(null);
            }
        } else {
            libc::close(socket);
        }
    }
}

fn send_answer(socket: RawFd, answer: Answer, pidfd: Option<&OwnedFd>) -> io::Result<()> {
    let bytes = answer.encode();
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // Room for one descriptor's control message, aligned as cmsghdr requires.
    let mut control = [0u64; 4];
    // SAFETY: msghdr is plain old data, for which all-zero bytes are valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if let Some(fd) = pidfd {
        let raw = fd.as_raw_fd();
        // SAFETY: `control` is large enough for CMSG_SPACE(one int) and outlives `msg`; the
        // header written is the first of the buffer, as CMSG_FIRSTHDR returns.
        unsafe {
            let space = libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) as usize;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = space;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), raw);
        }
    }
    loop {
        // SAFETY: `msg` points at live buffers for the whole call.
        let rc = unsafe { libc::sendmsg(socket, &msg, libc::MSG_NOSIGNAL) };
        if rc >= 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Reaps one shim that has ended. A pid that is not (or no longer) our child, or a child
/// still running, is left alone: the kernel checks that one child only.
fn reap_shim(pid: i32) {
    if pid <= 0 {
        return; // would mean "any child" or a group
    }
    let mut status = 0;
    // SAFETY: `status` is a valid, writable int.
    unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
}

/// Reaps every shim that has ended (they are our children until we exit). The kernel looks at
/// every child for this: only the rare scan for reaps nobody asked for.
fn reap_finished_shims() {
    loop {
        let mut status = 0;
        // SAFETY: `status` is a valid, writable int.
        let rc = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if rc <= 0 {
            return;
        }
    }
}

/// Sends one request without blocking.
pub fn send_request(socket: RawFd, request: &[u8]) -> io::Result<()> {
    // SAFETY: `request` is valid for its length during the call.
    let rc = unsafe {
        libc::send(
            socket,
            request.as_ptr().cast(),
            request.len(),
            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
        )
    };
    match rc {
        rc if rc < 0 => Err(io::Error::last_os_error()),
        _ => Ok(()),
    }
}

/// Receives one answer, and the pidfd passed with it, without blocking.
pub fn receive_answer(socket: RawFd) -> io::Result<(Answer, Option<OwnedFd>)> {
    let mut bytes = [0u8; Answer::LEN];
    let mut iov = libc::iovec {
        iov_base: bytes.as_mut_ptr().cast(),
        iov_len: bytes.len(),
    };
    let mut control = [0u64; 4];
    // SAFETY: msghdr is plain old data, for which all-zero bytes are valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: `msg` points at live, writable buffers for the whole call.
    let n = unsafe {
        libc::recvmsg(
            socket,
            &mut msg,
            libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: walking the control messages the kernel wrote into `control`, bounded by
    // msg_controllen; SCM_RIGHTS data holds descriptors now owned by this process.
    let pidfd = unsafe {
        let mut found = None;
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let fd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>());
                found = Some(OwnedFd::from_raw_fd(fd));
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
        found
    };
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the launcher closed its socket",
        ));
    }
    let answer = Answer::decode(&bytes[..n as usize])
        .ok_or_else(|| io::Error::other("malformed answer from the launcher"))?;
    Ok((answer, pidfd))
}

/// A connected pair of non-blocking, close-on-exec `SOCK_SEQPACKET` sockets.
pub fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` is a valid, writable array of two ints.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
            fds.as_mut_ptr(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: socketpair just created both descriptors; nothing else owns them.
    let (ours, theirs) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // The launcher's end blocks: it has nothing else to do while it waits.
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(theirs.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(theirs.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK);
    }
    Ok((ours, theirs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_junk_is_refused() {
        let launch = Request::Launch(Path::new("/runs/job/1-0"));
        assert_eq!(Request::decode(&launch.encode()), Some(launch));
        assert_eq!(
            Request::decode(&Request::Reap(4242).encode()),
            Some(Request::Reap(4242))
        );
        assert_eq!(Request::decode(b""), None);
        assert_eq!(Request::decode(b"L"), None, "a launch without a directory");
        assert_eq!(Request::decode(b"R12"), None, "a pid cut short");
        assert_eq!(
            Request::decode(b"/runs/job/1-0"),
            None,
            "an old-style request"
        );
    }

    #[test]
    fn answers_round_trip() {
        let answer = Answer {
            pid: 4242,
            errno: 0,
            starttime: 123_456_789_012,
        };
        assert_eq!(Answer::decode(&answer.encode()), Some(answer));
        assert_eq!(Answer::decode(&[0u8; 3]), None);
    }
}
