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

    /// Whether the object is ready without looking at the OS object (a
    /// connection holding read-ahead bytes of a message).
    #[doc(hidden)]
    fn ready_now(&self) -> bool {
        false
    }
}

/// Waits until at least one of `objects` is ready and returns the indices
/// of the ready ones; `[]` after `timeout` (`None` waits forever,
/// `Some(Duration::ZERO)` returns at once).
pub fn wait(objects: &[&dyn Waitable], timeout: Option<Duration>) -> Result<Vec<usize>> {
    let handles = objects
        .iter()
        .map(|o| o.wait_source())
        .collect::<Result<Vec<_>>>()?;
    let ready: Vec<usize> = (0..objects.len())
        .filter(|&i| objects[i].ready_now())
        .collect();
    if ready.is_empty() {
        return Ok(sys::poll_readable(&handles, timeout)?);
    }
    // Some are ready already: add those the OS reports ready now.
    let mut all = sys::poll_readable(&handles, Some(Duration::ZERO))?;
    all.extend(ready);
    all.sort_unstable();
    all.dedup();
    Ok(all)
}
