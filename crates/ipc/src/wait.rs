//! `mproc::wait`: CPython's `multiprocessing.connection.wait`.

use std::time::Duration;

use crate::sys;
use crate::Result;

/// Something [`wait`] can wait on: a connection (ready when a message or
/// EOF is there to read) or a process sentinel (ready when the process has
/// ended).
pub trait Waitable {
    /// The OS object to wait on.
    #[doc(hidden)]
    fn wait_source(&self) -> Result<sys::BorrowedHandle<'_>>;
}

/// Waits until at least one of `objects` is ready and returns the indices
/// of the ready ones; `[]` after `timeout` (`None` waits forever,
/// `Some(Duration::ZERO)` returns at once).
pub fn wait(objects: &[&dyn Waitable], timeout: Option<Duration>) -> Result<Vec<usize>> {
    let handles = objects
        .iter()
        .map(|o| o.wait_source())
        .collect::<Result<Vec<_>>>()?;
    Ok(sys::poll_readable(&handles, timeout)?)
}
