//! Unix: children with a pidfd as sentinel, reaped by this process or
//! by the forkserver (which reports the exit code on a status pipe).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child as StdChild, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rustix::process::{pidfd_open, pidfd_send_signal, Pid, PidfdFlags, Signal};

use super::{lock, Stop};
use crate::sys::handles::Peer;
use crate::sys::poll::poll_readable;

/// CPython's exit code for a finished child: the code, or `-signum`.
fn exitcode_of(status: ExitStatus) -> i32 {
    match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(sig)) => -sig,
        (None, None) => 1,
    }
}

/// The OS side of a child: its pid and a pidfd that becomes readable
/// when it ends (its sentinel).
pub(in crate::sys) struct Child {
    pid: u32,
    reaper: Reaper,
    pidfd: OwnedFd,
    /// The process held is a launcher (`srun`) whose task runs elsewhere:
    /// its exit code after `terminate`/`kill` is the launcher's own
    /// (137 for a cancelled step), not CPython's -15 / -9.
    via_launcher: bool,
    /// The signal `terminate`/`kill` delivered while the child ran (0:
    /// none), for `via_launcher`.
    stopped_by: AtomicI32,
}

/// Who reaps the child: this process (re-exec), or the forkserver, which
/// writes the exit code to a status pipe (`sys/forkserver/unix.rs`).
enum Reaper {
    Own(Mutex<StdChild>),
    Server(OwnedFd),
}

impl Child {
    /// See [`ChildProcess::spawn`](super::ChildProcess::spawn).
    pub(in crate::sys) fn spawn(token_env: &str, token: &str) -> io::Result<Child> {
        let exe = std::env::current_exe()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot find this executable: {e}")))?;
        let mut command = Command::new(running_image(&exe));
        // argv[0] stays the program's own path, as at its first start.
        command.arg0(&exe);
        let child = command
            .env(token_env, token)
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot re-execute {}: {e}", exe.display()),
                )
            })?;
        Child::adopt(child, false)
    }

    /// See [`ChildProcess::spawn_via`](super::ChildProcess::spawn_via).
    pub(in crate::sys) fn spawn_via(
        program: &str,
        args: &[String],
        token_env: &str,
        token: &str,
    ) -> io::Result<Child> {
        let exe = std::env::current_exe()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot find this executable: {e}")))?;
        let child = Command::new(program)
            .args(args)
            .arg(&exe)
            .env(token_env, token)
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot run {program}: {e}")))?;
        Child::adopt(child, true)
    }

    /// Takes over a child started with std's `Command`.
    pub(in crate::sys) fn adopt(child: StdChild, via_launcher: bool) -> io::Result<Child> {
        let pid = child.id();
        let raw = Pid::from_raw(pid as i32).ok_or_else(|| io::Error::other("invalid child pid"))?;
        // The child is ours and not yet reaped, so its pid cannot be reused.
        let pidfd = pidfd_open(raw, PidfdFlags::empty())?;
        Ok(Child {
            pid,
            reaper: Reaper::Own(Mutex::new(child)),
            pidfd,
            via_launcher,
            stopped_by: AtomicI32::new(0),
        })
    }

    /// A child the forkserver forked: its pidfd (opened by the server
    /// before it could reap it) and the pipe its exit code comes on.
    pub(in crate::sys) fn forked(pid: u32, pidfd: OwnedFd, status: OwnedFd) -> Child {
        Child {
            pid,
            reaper: Reaper::Server(status),
            pidfd,
            via_launcher: false,
            stopped_by: AtomicI32::new(0),
        }
    }

    /// The exit code to report for a reaped child. A launcher that this
    /// process terminated or killed while it ran reports what a local
    /// child would, -15 / -9 (as the Windows backend does), not its own
    /// code for the cancelled step (`srun`: 137), unless it ended with 0:
    /// then its task had finished cleanly before the signal.
    fn settle(&self, code: i32) -> i32 {
        let sig = self.stopped_by.load(Ordering::Acquire);
        if self.via_launcher && sig != 0 && code != 0 {
            -sig
        } else {
            code
        }
    }

    pub(in crate::sys) fn pid(&self) -> u32 {
        self.pid
    }

    pub(in crate::sys) fn try_reap(&self) -> io::Result<Option<i32>> {
        match &self.reaper {
            Reaper::Own(c) => Ok(lock(c).try_wait()?.map(|st| self.settle(exitcode_of(st)))),
            Reaper::Server(pipe) => {
                if poll_readable(&[self.pidfd.as_fd()], Some(Duration::ZERO))?.is_empty() {
                    return Ok(None);
                }
                let code = crate::sys::forkserver::imp::read_status(pipe)?;
                Ok(Some(self.settle(code)))
            }
        }
    }

    pub(in crate::sys) fn wait_ended(&self, timeout: Option<Duration>) -> io::Result<()> {
        poll_readable(&[self.pidfd.as_fd()], timeout).map(drop)
    }

    pub(in crate::sys) fn stop(&self, how: Stop) -> io::Result<()> {
        let sig = match how {
            Stop::Terminate => Signal::TERM,
            Stop::Kill => Signal::KILL,
        };
        // The pidfd names this very process, reaped or not.
        match pidfd_send_signal(&self.pidfd, sig) {
            Ok(()) => {
                // Only the first signal counts, as for a local child
                // (a kill after a terminate that already ended it).
                let _ = self.stopped_by.compare_exchange(
                    0,
                    sig.as_raw(),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
                Ok(())
            }
            Err(rustix::io::Errno::SRCH) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    pub(in crate::sys) fn sentinel(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    /// Daemonic children are tied to the parent by their watchdog (the
    /// parent pipe), which needs nothing here.
    pub(in crate::sys) fn tie_to_parent(&self) -> io::Result<()> {
        Ok(())
    }

    /// Handles sent with a launch go over the control socket itself.
    pub(in crate::sys) fn peer(&self) -> Peer {
        Peer
    }
}

/// What to execute to start this very program again.
fn running_image(exe: &Path) -> PathBuf {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let _ = exe;
        PathBuf::from("/proc/self/exe")
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        exe.to_path_buf()
    }
}

/// Unix control sockets have read timeouts; nothing to arm.
pub struct LaunchDeadline;

impl LaunchDeadline {
    /// Nothing to arm on Unix (see the module's documentation).
    pub fn arm(_child: &super::ChildProcess, _deadline: Instant) -> LaunchDeadline {
        LaunchDeadline
    }
}
