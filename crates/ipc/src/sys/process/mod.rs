//! Child processes: start, wait, terminate, kill.
//!
//! [`ChildProcess`] is shared: it keeps a child's exit code once known,
//! under its lock, so that a code is reported the same way to every
//! caller and a child that has been reaped is never signalled. Each
//! backend provides the OS side as `imp::Child`:
//!
//! - `spawn_inheriting(token_env, token)`: re-executes this program the
//!   same way, handing it one end of a fresh channel (a socket pair on
//!   Unix, a named pipe's client end on Windows) that only this child
//!   inherits, and returns the other end; `token(value)` makes the entry
//!   token from the number the child finds its end at.
//!   `INHERITS_CHANNEL` says whether the backend can (both do).
//! - `spawn(token_env, token)`: re-executes this program with the entry
//!   token in its environment, stdin from the null device, stdout and
//!   stderr inherited; `spawn_via(program, args, token_env, token)`:
//!   `program args.. <this program>` (a remote launcher such as `srun`;
//!   Unix only).
//! - `pid()`, `sentinel()` (a handle that becomes ready, for
//!   [`poll_readable`](super::poll::poll_readable), once the child has
//!   ended: a pidfd, or the process handle).
//! - `try_reap()`: the exit code if the child has ended (CPython's: the
//!   code, or `-signal`; Windows reports mproc's own terminate and kill
//!   as -15 and -9), else `None`; called under the status lock, once per
//!   child with a result.
//! - `wait_ended(timeout)`: waits until the child has ended or `timeout`
//!   passed, without reaping it.
//! - `stop(Stop)`: terminates or kills a child that may still run
//!   (called under the status lock, only while no code is known).
//! - `tie_to_parent()`: makes a (daemonic) child die with this process
//!   however this process ends (Windows: a kill-on-close Job Object; on
//!   Unix the child's own watchdog does it); a no-op for a child
//!   `spawn_inheriting(.., daemon = true)` tied from its start.
//!
//! And `in_a_job_object()`: whether this process is in a Job Object
//! (Windows; `None` on Unix, which has none).
//! - `peer()`: where handles sent to the child go.
//!
//! And `LaunchDeadline::arm(child, deadline)`: a guard that kills a child
//! whose launch is not done a second after `deadline` (Windows, whose
//! control pipe has no read timeout; nothing on Unix).

#[cfg(unix)]
pub(in crate::sys) mod unix;
#[cfg(unix)]
pub(in crate::sys) use unix as imp;

#[cfg(windows)]
pub(in crate::sys) mod windows;
#[cfg(windows)]
pub(in crate::sys) use windows as imp;

pub use imp::{LaunchDeadline, INHERITS_CHANNEL};

use crate::util::lock::lock;
use std::io;
use std::sync::Mutex;
use std::time::Duration;

use super::control::ControlStream;
use super::handles::{BorrowedHandle, Peer};

/// How to stop a child.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(in crate::sys) enum Stop {
    /// SIGTERM; `TerminateProcess` with the code reported as -15.
    Terminate,
    /// SIGKILL; `TerminateProcess` with the code reported as -9.
    Kill,
}

/// A child process started by this process.
pub struct ChildProcess {
    /// The exit code, once known.
    status: Mutex<Option<i32>>,
    pub(in crate::sys) os: imp::Child,
}

impl ChildProcess {
    pub(in crate::sys) fn from_os(os: imp::Child) -> ChildProcess {
        ChildProcess {
            status: Mutex::new(None),
            os,
        }
    }

    /// Re-executes this program with `token_env=token` in its
    /// environment and stdin from the null device; stdout and stderr are
    /// inherited. On Linux the running image itself is executed (a file
    /// replaced or deleted meanwhile changes nothing); elsewhere the file
    /// at `current_exe()`, and an error names it.
    pub fn spawn(token_env: &str, token: &str) -> io::Result<ChildProcess> {
        imp::Child::spawn(token_env, token).map(ChildProcess::from_os)
    }

    /// Re-executes this program as [`spawn`](Self::spawn) does, handing
    /// it one end of a fresh channel that no other process inherits (not
    /// even a child another thread starts meanwhile), and returns the
    /// other end. `token(value)` gives the entry token, from the
    /// descriptor (or handle) value the child finds its end at; the child
    /// takes it with [`adopt_inherited_channel`](crate::sys::control).
    /// [`Unsupported`](io::ErrorKind::Unsupported) where
    /// [`INHERITS_CHANNEL`] is false.
    ///
    /// A `daemon` child is tied to this process (see
    /// [`tie_to_parent`](Self::tie_to_parent)) before it runs its first
    /// instruction: on Windows it is created suspended, put in the
    /// kill-on-close Job Object, then resumed (a child that ran outside
    /// the job a moment could outlive a parent killed then, and a process
    /// it started then would escape the job); on Unix its own watchdog
    /// ties it, nothing is done here.
    pub fn spawn_inheriting(
        token_env: &str,
        token: &dyn Fn(u64) -> String,
        daemon: bool,
    ) -> io::Result<(ChildProcess, ControlStream)> {
        imp::Child::spawn_inheriting(token_env, token, daemon)
            .map(|(child, channel)| (ChildProcess::from_os(child), channel))
    }

    /// Starts `program args.. <this program's path>` with `token_env=token`
    /// in its environment: a launcher (`srun`) that runs this program
    /// elsewhere, whose exit code is the remote child's. Unsupported on
    /// Windows.
    pub fn spawn_via(
        program: &str,
        args: &[String],
        token_env: &str,
        token: &str,
    ) -> io::Result<ChildProcess> {
        imp::Child::spawn_via(program, args, token_env, token).map(ChildProcess::from_os)
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.os.pid()
    }

    /// The exit code if the child has ended (reaping it), else `None`.
    pub fn poll(&self) -> io::Result<Option<i32>> {
        let mut status = lock(&self.status);
        if status.is_none() {
            *status = self.os.try_reap()?;
        }
        Ok(*status)
    }

    /// Waits up to `timeout` (`None`: forever) for the child to end; its
    /// exit code, or `None` if it still runs.
    pub fn wait(&self, timeout: Option<Duration>) -> io::Result<Option<i32>> {
        if let Some(code) = self.poll()? {
            return Ok(Some(code));
        }
        self.os.wait_ended(timeout)?;
        self.poll()
    }

    fn stop(&self, how: Stop) -> io::Result<()> {
        // Holding the status lock means nobody reaps the child meanwhile:
        // the pid or handle still names this very process.
        let status = lock(&self.status);
        if status.is_some() {
            return Ok(());
        }
        self.os.stop(how)
    }

    /// SIGTERM (exit code -15); a no-op once the child has ended.
    pub fn terminate(&self) -> io::Result<()> {
        self.stop(Stop::Terminate)
    }

    /// SIGKILL (exit code -9); a no-op once the child has ended.
    pub fn kill(&self) -> io::Result<()> {
        self.stop(Stop::Kill)
    }

    /// The sentinel: ready once the child has ended.
    pub fn sentinel(&self) -> BorrowedHandle<'_> {
        self.os.sentinel()
    }

    /// Makes a daemonic child die with this process, however it ends.
    pub fn tie_to_parent(&self) -> io::Result<()> {
        self.os.tie_to_parent()
    }
}

/// Where handles sent to `child` with its launch go.
pub fn handle_peer(child: &ChildProcess) -> Peer {
    child.os.peer()
}

/// Whether this process is in a Job Object (a daemonic child on Windows
/// is, from its first instruction); `None` where the OS has no such
/// thing (Unix) or cannot say.
pub fn in_a_job_object() -> Option<bool> {
    imp::in_a_job_object()
}
