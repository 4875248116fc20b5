//! Unix: the forkserver's two sides (see `crate::forkserver` and
//! docs/architecture.md, "The forkserver").
//!
//! Parent → server, one request per child: a frame with the entry token,
//! then (SCM_RIGHTS) the write end of a fresh status pipe. Server →
//! parent: a frame `[0][pid: u32 LE]` followed by the child's pidfd
//! (SCM_RIGHTS), or `[1][reason]`. When the child ends, the server reaps
//! it and writes its exit code (`i32 LE`, CPython's: the code or
//! `-signal`) to the status pipe, then closes it.

use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

use mproc_ipc::frame;
use mproc_ipc::sys::{self as ipc_sys, poll_readable};
use rustix::process::{pidfd_open, Pid, PidfdFlags};

use super::ChildProcess;

/// Whether this platform has the forkserver start method.
pub(crate) const SUPPORTED: bool = true;

/// The parent's end of the server's request channel.
pub(crate) type Channel = UnixStream;

/// The parent's end of the request channel, and the server's end (given
/// to the server at its launch, then closed here).
pub(crate) fn channel() -> io::Result<(Channel, OwnedFd)> {
    let (a, b) = UnixStream::pair()?;
    // A server that stops answering fails the start instead of hanging it.
    a.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
    Ok((a, OwnedFd::from(b)))
}

/// The parent's side of one request: the server forks a child that
/// becomes the process the entry token names. The outer error is a
/// broken channel (the server is not to be used again), the inner one a
/// fork the server could not make.
pub(crate) fn request(
    server: &mut UnixStream,
    token: &str,
) -> io::Result<io::Result<ChildProcess>> {
    let (status_r, status_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    frame::write_frame(server, token.as_bytes())?;
    ipc_sys::send_handles(server.as_fd(), &[status_w.as_fd()], ipc_sys::Peer)?;
    drop(status_w);
    let reply = frame::read_frame(server, 1 << 16)
        .map_err(|e| io::Error::other(format!("no answer from the forkserver: {e}")))?;
    match reply.split_first() {
        Some((0, pid)) => {
            let pid = u32::from_le_bytes(
                pid.try_into()
                    .map_err(|_| io::Error::other("malformed forkserver answer"))?,
            );
            let pidfd = ipc_sys::recv_handles(server.as_fd(), 1)?
                .pop()
                .ok_or_else(|| io::Error::other("the forkserver sent no pidfd"))?;
            Ok(Ok(ChildProcess::forked(pid, pidfd, status_r)))
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
pub(crate) fn serve(channel: OwnedFd, become_child: fn(&str) -> !) -> i32 {
    let mut sock = UnixStream::from(channel);
    let mut children: Vec<Forked> = Vec::new();
    loop {
        let ready = {
            let mut fds: Vec<BorrowedFd<'_>> = vec![sock.as_fd()];
            fds.extend(children.iter().map(|c| c.pidfd.as_fd()));
            match poll_readable(&fds, None) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return 1,
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
            let token = match frame::read_frame(&mut sock, 1 << 16) {
                Ok(t) => t,
                // The parent is gone (or spoke nonsense): the server ends.
                Err(_) => return 0,
            };
            let Ok(status) = ipc_sys::recv_handles(sock.as_fd(), 1).map(|mut v| v.pop()) else {
                return 0;
            };
            let Some(status) = status else { return 0 };
            let token = String::from_utf8_lossy(&token).into_owned();
            match fork_child(&token, become_child) {
                Ok((pid, pidfd)) => {
                    let mut answer = vec![0u8];
                    answer.extend_from_slice(&(pid as u32).to_le_bytes());
                    if frame::write_frame(&mut sock, &answer).is_err()
                        || ipc_sys::send_handles(sock.as_fd(), &[pidfd.as_fd()], ipc_sys::Peer)
                            .is_err()
                    {
                        return 0;
                    }
                    children.push(Forked { pid, pidfd, status });
                }
                Err(e) => {
                    let mut answer = vec![1u8];
                    answer.extend_from_slice(e.to_string().as_bytes());
                    if frame::write_frame(&mut sock, &answer).is_err() {
                        return 0;
                    }
                }
            }
        }
    }
}

/// Forks; the child closes every descriptor but stdin, stdout and stderr
/// (the server's request channel, its other children's pidfds and status
/// pipes) and becomes the process `token` names.
fn fork_child(token: &str, become_child: fn(&str) -> !) -> io::Result<(i32, OwnedFd)> {
    // SAFETY: the server is single-threaded (nothing but this loop runs in
    // it), so the child is a consistent copy: no lock is held by a thread
    // that does not exist in the child, and it may allocate and run Rust
    // code. `fork` itself has no memory-safety preconditions.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        close_inherited();
        become_child(token);
    }
    let raw = Pid::from_raw(pid).ok_or_else(|| io::Error::other("invalid child pid"))?;
    // Our child, not yet reaped: the pid names it.
    let pidfd = pidfd_open(raw, PidfdFlags::empty())?;
    Ok((pid, pidfd))
}

/// In a forked child: closes every descriptor from 3 up.
fn close_inherited() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: close_range only closes descriptors; none of those
        // from 3 up is used by this process again (the child opens its
        // own from here on).
        let r = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
        if r == 0 {
            return;
        }
    }
    for fd in 3..4096 {
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
pub(super) fn read_status(pipe: &OwnedFd) -> io::Result<i32> {
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
