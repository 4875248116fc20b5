//! Windows: no forkserver (no `fork`).

use std::io;

use crate::sys::handles::{BorrowedHandle, OwnedHandle};
use crate::sys::process::ChildProcess;

/// Whether this platform has the forkserver start method.
pub const SUPPORTED: bool = false;

/// No request channel on Windows.
pub enum Channel {}

fn unsupported() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "no forkserver on Windows (no fork)",
    )
}

/// Always fails: no forkserver here.
pub fn channel() -> io::Result<(Channel, OwnedHandle)> {
    Err(unsupported())
}

/// Where a forked child finds its channel (never used: no forkserver).
pub const CHANNEL_AT: u64 = 0;

/// Always fails: no forkserver here.
pub fn control_pair() -> io::Result<(crate::sys::control::ControlStream, OwnedHandle)> {
    Err(unsupported())
}

/// Cannot be called: there is no [`Channel`].
pub fn request(
    channel: &mut Channel,
    _token: &str,
    _child_channel: BorrowedHandle<'_>,
) -> io::Result<io::Result<ChildProcess>> {
    match *channel {}
}

/// Always fails: no forkserver here.
pub fn serve(_channel: OwnedHandle, _become_child: fn(&str) -> !) -> io::Result<i32> {
    Err(unsupported())
}
