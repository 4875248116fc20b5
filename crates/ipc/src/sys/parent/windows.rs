//! Windows: the parent link is a handle to the parent process itself
//! (SYNCHRONIZE access), signalled when it ends.

use std::io;
use std::os::windows::io::{
    AsHandle, AsRawHandle, BorrowedHandle, FromRawHandle, OwnedHandle, RawHandle,
};
use std::sync::OnceLock;
use std::time::Duration;

use windows_sys::Win32::Foundation::{DuplicateHandle, FALSE, HANDLE, WAIT_OBJECT_0};
use windows_sys::Win32::Storage::FileSystem::SYNCHRONIZE;
use windows_sys::Win32::System::Threading::{GetCurrentProcess, WaitForSingleObject};

use crate::sys::process::imp::millis;

static SELF_HANDLE: OnceLock<OwnedHandle> = OnceLock::new();

/// The handle a child receives as its parent sentinel: this process, with
/// SYNCHRONIZE access (signalled when this process ends).
pub fn parent_sentinel_for_child() -> io::Result<BorrowedHandle<'static>> {
    if SELF_HANDLE.get().is_none() {
        let mut h: HANDLE = std::ptr::null_mut();
        // SAFETY: duplicating the pseudo-handle of this process into a real one.
        let ok = unsafe {
            DuplicateHandle(
                GetCurrentProcess(),
                GetCurrentProcess(),
                GetCurrentProcess(),
                &mut h,
                SYNCHRONIZE,
                FALSE,
                0,
            )
        };
        if ok == 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh handle we own.
        let _ = SELF_HANDLE.set(unsafe { OwnedHandle::from_raw_handle(h as RawHandle) });
    }
    SELF_HANDLE
        .get()
        .map(|h| h.as_handle())
        .ok_or_else(|| io::Error::other("self handle"))
}

/// A child's view of its parent: signalled once the parent is gone.
pub struct ParentSentinel(OwnedHandle);

impl ParentSentinel {
    /// The child's handle to its parent, as the launch passed it.
    pub fn from_handle(h: OwnedHandle, _parent_pid: u32) -> ParentSentinel {
        ParentSentinel(h)
    }

    /// Waits up to `timeout` for the parent to end; true if it has.
    pub fn wait(&self, timeout: Option<Duration>) -> io::Result<bool> {
        // SAFETY: waiting on an open process handle.
        let r = unsafe { WaitForSingleObject(self.0.as_raw_handle() as HANDLE, millis(timeout)) };
        Ok(r == WAIT_OBJECT_0)
    }
}

/// Not on Windows: remote launchers are Unix only.
pub fn remote_parent_sentinel() -> io::Result<OwnedHandle> {
    Err(crate::sys::control::imp::no_remote())
}
