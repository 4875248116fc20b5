//! The platform seam: every OS difference of `mproc` lives here.

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub(crate) use unix::*;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub(crate) use windows::*;

/// The forkserver start method's OS side (Unix only).
#[cfg(unix)]
#[path = "forkserver_unix.rs"]
pub(crate) mod forkserver;

/// The forkserver start method's OS side: none on Windows (no fork).
#[cfg(windows)]
pub(crate) mod forkserver {
    /// Whether this platform has the forkserver start method.
    pub(crate) const SUPPORTED: bool = false;
}
