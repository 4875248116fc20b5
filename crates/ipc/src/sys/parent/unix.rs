//! Unix: the parent link is a pipe whose write end only the parent
//! holds; a child reads end of file once the parent is gone, whatever
//! way it died.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::OnceLock;
use std::time::Duration;

use crate::sys::poll::poll_readable;

/// A parent sentinel for a child on another host: never ready (the
/// parent's end of it does not cross hosts; the scheduler ends the child
/// with its step instead).
pub fn remote_parent_sentinel() -> io::Result<OwnedFd> {
    let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    // The write end stays open for the life of this process.
    std::mem::forget(w);
    Ok(r)
}

// ---------------------------------------------------------------------
// The parent link: a pipe whose write end only the parent holds. A child
// gets the read end; it reads EOF once the parent is gone, whatever way it
// died. `parent_process().is_alive()` and the daemon watchdog use it.

static PARENT_PIPE: OnceLock<(OwnedFd, OwnedFd)> = OnceLock::new();

/// The handle a child receives as its parent sentinel.
pub fn parent_sentinel_for_child() -> io::Result<BorrowedFd<'static>> {
    if PARENT_PIPE.get().is_none() {
        let pair = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        let _ = PARENT_PIPE.set(pair);
    }
    PARENT_PIPE
        .get()
        .map(|(r, _)| r.as_fd())
        .ok_or_else(|| io::Error::other("parent pipe"))
}

/// A child's view of its parent: ready (readable) once the parent is gone.
pub struct ParentSentinel(OwnedFd);

impl ParentSentinel {
    /// The child's end of the parent link, as the launch passed it.
    pub fn from_handle(h: OwnedFd, _parent_pid: u32) -> ParentSentinel {
        ParentSentinel(h)
    }

    /// Waits up to `timeout` for the parent to end; true if it has.
    pub fn wait(&self, timeout: Option<Duration>) -> io::Result<bool> {
        Ok(!poll_readable(&[self.0.as_fd()], timeout)?.is_empty())
    }
}
