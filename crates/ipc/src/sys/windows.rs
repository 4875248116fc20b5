//! Windows: handles, `DuplicateHandle` transfer, waiting on pipes and
//! waitable objects.

use std::io::{self, Write};
use std::mem::ManuallyDrop;
use std::os::windows::io::{
    AsHandle, AsRawHandle, BorrowedHandle as StdBorrowed, FromRawHandle, OwnedHandle as StdOwned,
};
use std::time::{Duration, Instant};

use windows_sys::Win32::Foundation::{
    DuplicateHandle, DUPLICATE_SAME_ACCESS, FALSE, HANDLE, WAIT_OBJECT_0,
};
use windows_sys::Win32::Storage::FileSystem::{GetFileType, FILE_TYPE_PIPE};
use windows_sys::Win32::System::Pipes::PeekNamedPipe;
use windows_sys::Win32::System::Threading::{GetCurrentProcess, WaitForSingleObject};

use crate::frame;

/// An owned OS handle.
pub type OwnedHandle = StdOwned;
/// A borrowed OS handle.
pub type BorrowedHandle<'a> = StdBorrowed<'a>;
/// A raw OS handle value.
pub type RawHandle = std::os::windows::io::RawHandle;

/// Borrows a raw handle that the caller keeps open for `'a`.
///
/// # Safety
/// `raw` must be an open handle that outlives the borrow.
pub unsafe fn borrow_raw<'a>(raw: RawHandle) -> BorrowedHandle<'a> {
    StdBorrowed::borrow_raw(raw)
}

/// The raw value of a borrowed handle.
pub fn raw_of(h: BorrowedHandle<'_>) -> RawHandle {
    h.as_raw_handle()
}

/// Where handles are sent: the target process (a handle to it), into which
/// they are duplicated (CPython's `reduction.DupHandle`).
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub RawHandle);

// SAFETY: a process handle value may be used from any thread.
unsafe impl Send for Peer {}
// SAFETY: as above.
unsafe impl Sync for Peer {}

/// A stream over a borrowed pipe handle that never closes it.
fn stream_of(h: BorrowedHandle<'_>) -> ManuallyDrop<std::fs::File> {
    // SAFETY: the handle is open for the borrow; ManuallyDrop never closes it.
    ManuallyDrop::new(unsafe { std::fs::File::from_raw_handle(h.as_raw_handle()) })
}

/// Duplicates `handles` into the peer process and sends their values over
/// `sock` as one frame; the receiver calls [`recv_handles`].
pub fn send_handles(
    sock: BorrowedHandle<'_>,
    handles: &[BorrowedHandle<'_>],
    peer: Peer,
) -> io::Result<()> {
    let mut values = Vec::with_capacity(handles.len() * 8);
    for h in handles {
        let mut out: HANDLE = std::ptr::null_mut();
        // SAFETY: plain Win32 call with valid handles and an out pointer.
        let ok = unsafe {
            DuplicateHandle(
                GetCurrentProcess(),
                h.as_raw_handle() as HANDLE,
                peer.0 as HANDLE,
                &mut out,
                0,
                FALSE,
                DUPLICATE_SAME_ACCESS,
            )
        };
        if ok == 0 {
            return Err(io::Error::last_os_error());
        }
        values.extend_from_slice(&(out as usize as u64).to_le_bytes());
    }
    let mut s = stream_of(sock);
    frame::write_frame(&mut *s, &values)?;
    s.flush()
}

/// Receives `n` handles sent by [`send_handles`] (already duplicated into
/// this process).
pub fn recv_handles(sock: BorrowedHandle<'_>, n: usize) -> io::Result<Vec<OwnedHandle>> {
    let mut s = stream_of(sock);
    let values = frame::read_frame(&mut *s, (n as u64) * 8)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    if values.len() != n * 8 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "wrong number of handles",
        ));
    }
    Ok(values
        .chunks_exact(8)
        .map(|c| {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            let raw = u64::from_le_bytes(b) as usize as RawHandle;
            // SAFETY: the sender duplicated this handle into this process
            // for us alone.
            unsafe { OwnedHandle::from_raw_handle(raw) }
        })
        .collect())
}

/// Whether one handle is ready: a pipe with data or a broken pipe (EOF),
/// or a signalled waitable object (a process that ended).
fn is_ready(h: BorrowedHandle<'_>) -> bool {
    let raw = h.as_raw_handle() as HANDLE;
    // SAFETY: plain Win32 calls on an open handle.
    unsafe {
        if GetFileType(raw) == FILE_TYPE_PIPE {
            let mut avail = 0u32;
            let ok = PeekNamedPipe(
                raw,
                std::ptr::null_mut(),
                0,
                std::ptr::null_mut(),
                &mut avail,
                std::ptr::null_mut(),
            );
            ok == 0 || avail > 0
        } else {
            WaitForSingleObject(raw, 0) == WAIT_OBJECT_0
        }
    }
}

/// Waits until one of `handles` is ready (data or EOF on a pipe, a
/// signalled object); returns the indices of the ready ones, empty on
/// timeout. Pipes are not waitable objects on Windows, so this polls with
/// a back-off from 50 µs to 5 ms (CPython uses overlapped zero-byte reads).
pub fn poll_readable(
    handles: &[BorrowedHandle<'_>],
    timeout: Option<Duration>,
) -> io::Result<Vec<usize>> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut pause = Duration::from_micros(50);
    loop {
        let ready: Vec<usize> = handles
            .iter()
            .enumerate()
            .filter(|(_, h)| is_ready(**h))
            .map(|(i, _)| i)
            .collect();
        if !ready.is_empty() {
            return Ok(ready);
        }
        if let Some(d) = deadline {
            let now = Instant::now();
            if now >= d {
                return Ok(Vec::new());
            }
            pause = pause.min(d - now);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(5));
    }
}

/// Duplicates a handle (not inheritable).
pub fn duplicate(h: BorrowedHandle<'_>) -> io::Result<OwnedHandle> {
    h.try_clone_to_owned()
}

/// Takes ownership of a raw handle.
///
/// # Safety
/// `raw` must be an open handle owned by nobody else.
pub unsafe fn own_raw(raw: RawHandle) -> OwnedHandle {
    OwnedHandle::from_raw_handle(raw)
}

/// Borrows any `AsHandle`.
pub fn borrow<T: AsHandle>(t: &T) -> BorrowedHandle<'_> {
    t.as_handle()
}
