//! Unix: the forkserver's two sides (see mproc's `forkserver.rs` and
//! docs/architecture.md, "The forkserver").
//!
//! Parent → server, one request per child: a frame with the entry token,
//! then (SCM_RIGHTS, one message) the write end of a fresh status pipe
//! and the child's end of its control channel (a socket pair the parent
//! made: [`control_pair`]). Server → parent: a frame `[0][pid: u32 LE]`
//! followed by the child's pidfd (SCM_RIGHTS), or `[1][reason]`. The
//! forked child finds its channel at [`CHANNEL_AT`], and takes it only if
//! the parent made it (the server tells it who that is: the peer of the
//! request channel, as the kernel names it). When the child ends, the
//! server reaps it and writes its exit code (`i32 LE`, CPython's: the
//! code or `-signal`) to the status pipe, then closes it.

use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

use std::io::Read;

use rustix::process::{pidfd_open, Pid, PidfdFlags};

use crate::sys::handles;
use crate::sys::poll::poll_readable;
use crate::sys::process::{imp::Child, ChildProcess};

/// Writes one message on the request channel: a 4-byte big-endian length
/// (CPython's frame header for short frames), then `payload`.
fn write_msg(mut s: &UnixStream, payload: &[u8]) -> io::Result<()> {
    let len = u32::try_from(payload.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "message too long"))?;
    let mut buf = Vec::with_capacity(4 + payload.len());
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(payload);
    s.write_all(&buf)
}

/// Reads one message written by [`write_msg`], of at most `max` bytes.
fn read_msg(mut s: &UnixStream, max: usize) -> io::Result<Vec<u8>> {
    let mut header = [0u8; 4];
    s.read_exact(&mut header)?;
    let len = u32::from_be_bytes(header) as usize;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a {len}-byte message (at most {max})"),
        ));
    }
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload)?;
    Ok(payload)
}

/// Whether this platform has the forkserver start method.
pub const SUPPORTED: bool = true;

/// The parent's end of the server's request channel.
pub type Channel = UnixStream;

/// The parent's end of the request channel, and the server's end (given
/// to the server at its launch, then closed here).
pub fn channel() -> io::Result<(Channel, OwnedFd)> {
    let (a, b) = UnixStream::pair()?;
    // A server that stops answering fails the start instead of hanging it.
    a.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
    Ok((a, OwnedFd::from(b)))
}

/// The descriptor a forked child finds its control channel at (its entry
/// token names it): the first after the standard streams.
pub const CHANNEL_AT: u64 = 3;

/// A fresh control channel for one forked child: this process's end, and
/// the child's, which goes to the server with the [`request`] (both
/// close-on-exec here: no process started meanwhile inherits either).
pub fn control_pair() -> io::Result<(UnixStream, OwnedFd)> {
    let (ours, theirs) = UnixStream::pair()?;
    Ok((ours, OwnedFd::from(theirs)))
}

/// The parent's side of one request: the server forks a child that
/// becomes the process the entry token names, holding `channel` (the
/// child's end of a [`control_pair`]) at [`CHANNEL_AT`]. The outer error
/// is a broken channel (the server is not to be used again), the inner
/// one a fork the server could not make.
pub fn request(
    server: &mut UnixStream,
    token: &str,
    channel: BorrowedFd<'_>,
) -> io::Result<io::Result<ChildProcess>> {
    let (status_r, status_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    write_msg(server, token.as_bytes())?;
    handles::send_handles(server.as_fd(), &[status_w.as_fd(), channel], handles::Peer)?;
    drop(status_w);
    let reply = read_msg(server, 1 << 16)
        .map_err(|e| io::Error::other(format!("no answer from the forkserver: {e}")))?;
    match reply.split_first() {
        Some((0, pid)) => {
            let pid = u32::from_le_bytes(
                pid.try_into()
                    .map_err(|_| io::Error::other("malformed forkserver answer"))?,
            );
            let pidfd = handles::recv_handles(server.as_fd(), 1)?
                .pop()
                .ok_or_else(|| io::Error::other("the forkserver sent no pidfd"))?;
            Ok(Ok(ChildProcess::from_os(Child::forked(
                pid, pidfd, status_r,
            ))))
        }
        Some((_, reason)) => Ok(Err(io::Error::other(format!(
            "the forkserver cannot fork: {}",
            String::from_utf8_lossy(reason)
        )))),
        None => Err(io::Error::other("malformed forkserver answer")),
    }
}

/// A child of the server: its pid, pidfd and status pipe.
struct Forked {
    pid: i32,
    pidfd: OwnedFd,
    status: OwnedFd,
}

/// The server's loop, single-threaded: requests from the parent, and the
/// end of its children. Returns (the server exits) at the end of file
/// of the request channel, that is when the parent is gone: the parent's
/// end is the only one (close-on-exec, never inherited).
///
/// `become_child(token)` is run in each forked child and never returns.
pub fn serve(channel: OwnedFd, become_child: fn(&str) -> !) -> io::Result<i32> {
    let sock = UnixStream::from(channel);
    // The process that made the request channel, that is the parent (the
    // kernel's word, not a message's): the one process whose channel
    // ends a forked child takes.
    let launcher = launcher_of(&sock);
    let mut children: Vec<Forked> = Vec::new();
    loop {
        let ready = {
            let mut fds: Vec<BorrowedFd<'_>> = vec![sock.as_fd()];
            fds.extend(children.iter().map(|c| c.pidfd.as_fd()));
            match poll_readable(&fds, None) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Ok(1),
            }
        };
        // Children first: their status pipes are closed before the
        // vector changes below.
        let mut ended: Vec<usize> = ready.iter().filter(|&&i| i > 0).map(|i| i - 1).collect();
        ended.sort_unstable_by(|a, b| b.cmp(a));
        for i in ended {
            let c = children.swap_remove(i);
            let code = reap(c.pid);
            let mut status = std::fs::File::from(c.status);
            let _ = status.write_all(&code.to_le_bytes());
        }
        if ready.contains(&0) {
            let token = match read_msg(&sock, 1 << 16) {
                Ok(t) => t,
                // The parent is gone (or spoke nonsense): the server ends.
                Err(_) => return Ok(0),
            };
            let Ok(mut received) = handles::recv_handles(sock.as_fd(), 2) else {
                return Ok(0);
            };
            let (Some(channel), Some(status)) = (received.pop(), received.pop()) else {
                return Ok(0);
            };
            let token = String::from_utf8_lossy(&token).into_owned();
            let forked = fork_child(&token, &channel, launcher, become_child);
            // The child has its end: the server's copy would keep its end
            // of file from the parent.
            drop(channel);
            match forked {
                Ok((pid, pidfd)) => {
                    let mut answer = vec![0u8];
                    answer.extend_from_slice(&(pid as u32).to_le_bytes());
                    if write_msg(&sock, &answer).is_err()
                        || handles::send_handles(sock.as_fd(), &[pidfd.as_fd()], handles::Peer)
                            .is_err()
                    {
                        return Ok(0);
                    }
                    children.push(Forked { pid, pidfd, status });
                }
                Err(e) => {
                    let mut answer = vec![1u8];
                    answer.extend_from_slice(e.to_string().as_bytes());
                    if write_msg(&sock, &answer).is_err() {
                        return Ok(0);
                    }
                }
            }
        }
    }
}

/// The pid of the process that made the socket pair `sock` is an end of
/// (`SO_PEERCRED` of a socket pair names its maker); 0 where the OS does
/// not say (the forked child then checks its channel against its OS
/// parent, the server, and refuses it).
fn launcher_of(sock: &UnixStream) -> i32 {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        rustix::net::sockopt::socket_peercred(sock).map_or(0, |c| c.pid.as_raw_nonzero().get())
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = sock;
        0
    }
}

/// Forks; the child moves `channel` to [`CHANNEL_AT`], closes every other
/// descriptor but stdin, stdout and stderr (the server's request channel,
/// its other children's pidfds, status pipes and channels), learns that
/// its channel must have been made by `launcher`, and becomes the process
/// `token` names.
fn fork_child(
    token: &str,
    channel: &OwnedFd,
    launcher: i32,
    become_child: fn(&str) -> !,
) -> io::Result<(i32, OwnedFd)> {
    // SAFETY: the server is single-threaded (nothing but this loop runs in
    // it), so the child is a consistent copy: no lock is held by a thread
    // that does not exist in the child, and it may allocate and run Rust
    // code. `fork` itself has no memory-safety preconditions.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        let at = CHANNEL_AT as i32;
        let from = channel.as_raw_fd();
        // SAFETY: dup2 and close only change this process's descriptor
        // table; whatever was at `at` (a copy of a server descriptor) is
        // not used by this child. A failed dup2 leaves `at` closed: the
        // child then refuses its token (descriptor not open).
        if from != at && unsafe { libc::dup2(from, at) } != at {
            // SAFETY: as above.
            unsafe { libc::close(at) };
        }
        close_inherited(at as u32 + 1);
        crate::sys::control::imp::expect_channel_from(launcher);
        become_child(token);
    }
    let raw = Pid::from_raw(pid).ok_or_else(|| io::Error::other("invalid child pid"))?;
    // Our child, not yet reaped: the pid names it.
    let pidfd = pidfd_open(raw, PidfdFlags::empty())?;
    Ok((pid, pidfd))
}

/// In a forked child: closes every descriptor from `first` up.
fn close_inherited(first: u32) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: close_range only closes descriptors; none of those
        // from `first` up is used by this process again (the child opens its
        // own from here on).
        let r = unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, 0u32) };
        if r == 0 {
            return;
        }
    }
    for fd in first as i32..4096 {
        // SAFETY: as above; closing a descriptor that is not open is
        // EBADF, harmless.
        unsafe {
            libc::close(fd);
        }
    }
}

/// Reaps a child of the server: its exit code, CPython's way.
fn reap(pid: i32) -> i32 {
    let mut status = 0;
    loop {
        // SAFETY: waitpid writes the status into a valid i32.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            break;
        }
        if r < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        return 1;
    }
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        -libc::WTERMSIG(status)
    } else {
        1
    }
}

/// Reads the exit code the server wrote to a child's status pipe.
pub(in crate::sys) fn read_status(pipe: &OwnedFd) -> io::Result<i32> {
    let mut buf = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match rustix::io::read(pipe, &mut buf[got..]) {
            Ok(0) => {
                return Err(io::Error::other(
                    "the forkserver ended before it reported the child's exit status",
                ))
            }
            Ok(n) => got += n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(i32::from_le_bytes(buf))
}
