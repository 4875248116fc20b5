//! Windows handles, passed by `DuplicateHandle` into the receiver.

use std::io::{self, Read, Write};
use std::mem::ManuallyDrop;
use std::os::windows::io::{
    AsHandle, AsRawHandle, BorrowedHandle as StdBorrowed, FromRawHandle, FromRawSocket,
    IntoRawSocket, OwnedHandle as StdOwned, RawSocket,
};

use windows_sys::Win32::Foundation::{DuplicateHandle, DUPLICATE_SAME_ACCESS, FALSE, HANDLE};
use windows_sys::Win32::System::Threading::GetCurrentProcess;

use crate::sys::stream::imp::tcp;

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
    // SAFETY: the caller upholds this fn's contract (its `# Safety`
    // section), which is what each unsafe operation below relies on.
    unsafe { StdBorrowed::borrow_raw(raw) }
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
///
/// Sockets are refused: `DuplicateHandle` does not make a usable socket in
/// another process (that takes `WSADuplicateSocket` and the child's
/// cooperation), so only pipe connections can be passed to a child.
pub fn send_handles(
    sock: BorrowedHandle<'_>,
    handles: &[BorrowedHandle<'_>],
    peer: Peer,
) -> io::Result<()> {
    check_sendable(handles)?;
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
    // One frame as CPython's (4-byte big-endian length, then the values),
    // written in one piece.
    let mut frame = Vec::with_capacity(4 + values.len());
    frame.extend_from_slice(&(values.len() as u32).to_be_bytes());
    frame.extend_from_slice(&values);
    let mut s = stream_of(sock);
    s.write_all(&frame)?;
    s.flush()
}

/// Receives `n` handles sent by [`send_handles`] (already duplicated into
/// this process).
pub fn recv_handles(sock: BorrowedHandle<'_>, n: usize) -> io::Result<Vec<OwnedHandle>> {
    let mut s = stream_of(sock);
    let mut header = [0u8; 4];
    s.read_exact(&mut header)?;
    if u32::from_be_bytes(header) as usize != n * 8 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "wrong number of handles",
        ));
    }
    let mut values = vec![0u8; n * 8];
    s.read_exact(&mut values)?;
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

/// Duplicates a handle (not inheritable). A socket is duplicated as a
/// socket (`WSADuplicateSocket`, as std's `try_clone`).
pub fn duplicate(h: BorrowedHandle<'_>) -> io::Result<OwnedHandle> {
    let raw = h.as_raw_handle() as RawSocket;
    if tcp::is_socket(raw) {
        // SAFETY: the socket is open for the borrow; ManuallyDrop never
        // closes it.
        let sock = ManuallyDrop::new(unsafe { std::net::TcpStream::from_raw_socket(raw) });
        let copy = sock.try_clone()?;
        // SAFETY: a fresh socket we own; sockets are kernel handles.
        return Ok(unsafe { OwnedHandle::from_raw_handle(copy.into_raw_socket() as RawHandle) });
    }
    h.try_clone_to_owned()
}

/// Borrows any `AsHandle`.
pub fn borrow<T: AsHandle>(t: &T) -> BorrowedHandle<'_> {
    t.as_handle()
}

/// Whether [`send_handles`] can pass these handles to another process:
/// sockets cannot (see there). Lets a launch refuse before it starts a
/// child.
pub fn check_sendable(handles: &[BorrowedHandle<'_>]) -> io::Result<()> {
    if handles
        .iter()
        .any(|h| tcp::is_socket(h.as_raw_handle() as RawSocket))
    {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "a TCP connection cannot be passed to a child process on Windows \
             (only pipe() and local Listener/Client connections can)",
        ));
    }
    Ok(())
}

impl Peer {
    /// This very process as the receiver (its pseudo-handle).
    pub fn current() -> Peer {
        // SAFETY: the pseudo-handle of this process, always valid.
        Peer(unsafe { GetCurrentProcess() } as RawHandle)
    }
}

/// Implements `AsHandle` and `AsRawHandle` (`AsFd` and `AsRawFd` on
/// Unix) for a type: `__impl_as_handle!(Type, |s| s.handle())`, where the
/// body gives the type's `BorrowedHandle`. Lets code above the seam
/// expose its OS handle without a platform `cfg`.
#[doc(hidden)]
#[macro_export]
macro_rules! __impl_as_handle {
    ($ty:ty, |$s:ident| $body:expr) => {
        impl ::std::os::windows::io::AsHandle for $ty {
            fn as_handle(&self) -> ::std::os::windows::io::BorrowedHandle<'_> {
                let $s = self;
                $body
            }
        }
        impl ::std::os::windows::io::AsRawHandle for $ty {
            fn as_raw_handle(&self) -> ::std::os::windows::io::RawHandle {
                ::std::os::windows::io::AsRawHandle::as_raw_handle(
                    &::std::os::windows::io::AsHandle::as_handle(self),
                )
            }
        }
    };
}
