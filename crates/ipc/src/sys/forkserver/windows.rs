//! Windows: no forkserver (no `fork`).

use std::io;

use crate::sys::handles::OwnedHandle;
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

/// Cannot be called: there is no [`Channel`].
pub fn request(channel: &mut Channel, _token: &str) -> io::Result<io::Result<ChildProcess>> {
    match *channel {}
}

/// Always fails: no forkserver here.
pub fn serve(_channel: OwnedHandle, _become_child: fn(&str) -> !) -> io::Result<i32> {
    Err(unsupported())
}
