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
    use std::io;

    use mproc_ipc::sys::OwnedHandle;

    use super::ChildProcess;

    /// Whether this platform has the forkserver start method.
    pub(crate) const SUPPORTED: bool = false;

    /// No request channel on Windows.
    pub(crate) enum Channel {}

    fn unsupported() -> io::Error {
        io::Error::new(
            io::ErrorKind::Unsupported,
            "no forkserver on Windows (no fork)",
        )
    }

    pub(crate) fn channel() -> io::Result<(Channel, OwnedHandle)> {
        Err(unsupported())
    }

    pub(crate) fn request(
        channel: &mut Channel,
        _token: &str,
    ) -> io::Result<io::Result<ChildProcess>> {
        match *channel {}
    }

    pub(crate) fn serve(_channel: OwnedHandle, _become_child: fn(&str) -> !) -> i32 {
        crate::BOOTSTRAP_EXIT_CODE
    }
}
