//! Unix handles: file descriptors, passed with SCM_RIGHTS.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

/// An owned OS handle (a file descriptor here).
pub type OwnedHandle = OwnedFd;
/// A borrowed OS handle.
pub type BorrowedHandle<'a> = BorrowedFd<'a>;
/// A raw OS handle value.
pub type RawHandle = RawFd;

/// At most this many descriptors ride on one `sendmsg` (Linux's SCM_MAX_FD is 253).
const FDS_PER_MESSAGE: usize = 64;

/// Borrows a raw descriptor that the caller keeps open for `'a`.
///
/// # Safety
/// `raw` must be an open descriptor that outlives the borrow.
pub unsafe fn borrow_raw<'a>(raw: RawHandle) -> BorrowedHandle<'a> {
    // SAFETY: the caller promises `raw` is open for `'a`.
    unsafe { BorrowedFd::borrow_raw(raw) }
}

/// The raw value of a borrowed handle.
pub fn raw_of(h: BorrowedHandle<'_>) -> RawHandle {
    h.as_raw_fd()
}

/// Where handles are sent: on Unix the socket itself carries them.
#[derive(Clone, Copy, Debug, Default)]
pub struct Peer;

/// Sends `handles` over the Unix socket `sock` (SCM_RIGHTS, one marker byte
/// per batch). The receiver calls [`recv_handles`] with the same count.
pub fn send_handles(
    sock: BorrowedFd<'_>,
    handles: &[BorrowedFd<'_>],
    _peer: Peer,
) -> io::Result<()> {
    for chunk in handles.chunks(FDS_PER_MESSAGE) {
        let mut space =
            vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(FDS_PER_MESSAGE))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !control.push(SendAncillaryMessage::ScmRights(chunk)) {
            return Err(io::Error::other("cannot build SCM_RIGHTS message"));
        }
        let byte = [b'H'];
        loop {
            match rustix::net::sendmsg(
                sock,
                &[IoSlice::new(&byte)],
                &mut control,
                SendFlags::NOSIGNAL,
            ) {
                Ok(1) => break,
                Ok(_) => return Err(io::ErrorKind::WriteZero.into()),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

/// Receives `n` handles sent by [`send_handles`].
pub fn recv_handles(sock: BorrowedFd<'_>, n: usize) -> io::Result<Vec<OwnedFd>> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let mut space =
            vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(FDS_PER_MESSAGE))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let mut byte = [0u8; 1];
        let got = loop {
            match rustix::net::recvmsg(
                sock,
                &mut [IoSliceMut::new(&mut byte)],
                &mut control,
                RecvFlags::CMSG_CLOEXEC,
            ) {
                Ok(r) => break r,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        };
        if got.bytes == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "peer closed while sending handles",
            ));
        }
        let before = out.len();
        for msg in control.drain() {
            if let RecvAncillaryMessage::ScmRights(fds) = msg {
                out.extend(fds);
            }
        }
        if out.len() == before {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "expected handles, got none",
            ));
        }
    }
    Ok(out)
}

/// Duplicates a handle (close-on-exec).
pub fn duplicate(h: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    h.try_clone_to_owned()
}

/// Borrows any `AsFd`.
pub fn borrow<T: AsFd>(t: &T) -> BorrowedFd<'_> {
    t.as_fd()
}

/// Whether [`send_handles`] can pass these handles to another process:
/// every descriptor can on Unix.
pub fn check_sendable(_handles: &[BorrowedFd<'_>]) -> io::Result<()> {
    Ok(())
}

impl Peer {
    /// This very process as the receiver (a handle passed to oneself, as
    /// a test or an in-process hand-over does).
    pub fn current() -> Peer {
        Peer
    }
}

/// Implements `AsFd` and `AsRawFd` (`AsHandle` and `AsRawHandle` on
/// Windows) for a type: `__impl_as_handle!(Type, |s| s.handle())`, where
/// the body gives the type's `BorrowedHandle`. Lets code above the seam
/// expose its OS handle without a platform `cfg`.
#[doc(hidden)]
#[macro_export]
macro_rules! __impl_as_handle {
    ($ty:ty, |$s:ident| $body:expr) => {
        impl ::std::os::fd::AsFd for $ty {
            fn as_fd(&self) -> ::std::os::fd::BorrowedFd<'_> {
                let $s = self;
                $body
            }
        }
        impl ::std::os::fd::AsRawFd for $ty {
            fn as_raw_fd(&self) -> ::std::os::fd::RawFd {
                ::std::os::fd::AsRawFd::as_raw_fd(&::std::os::fd::AsFd::as_fd(self))
            }
        }
    };
}
