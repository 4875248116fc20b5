//! Unix: file descriptors, SCM_RIGHTS handle transfer, poll.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, Timespec};
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
    BorrowedFd::borrow_raw(raw)
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
pub fn send_handles(sock: BorrowedFd<'_>, handles: &[BorrowedFd<'_>], _peer: Peer) -> io::Result<()> {
    for chunk in handles.chunks(FDS_PER_MESSAGE) {
        let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(FDS_PER_MESSAGE))];
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
        let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(FDS_PER_MESSAGE))];
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
            return Err(io::Error::new(io::ErrorKind::InvalidData, "expected handles, got none"));
        }
    }
    Ok(out)
}

/// Waits until one of `fds` is readable (or hung up); returns the indices
/// of the ready ones, empty on timeout. `None` waits forever.
pub fn poll_readable(fds: &[BorrowedFd<'_>], timeout: Option<Duration>) -> io::Result<Vec<usize>> {
    let deadline = timeout.map(|t| std::time::Instant::now() + t);
    loop {
        let mut pfds: Vec<PollFd<'_>> = fds.iter().map(|fd| PollFd::new(fd, PollFlags::IN)).collect();
        let ts = deadline.map(|d| {
            let left = d.saturating_duration_since(std::time::Instant::now());
            Timespec {
                tv_sec: left.as_secs() as _,
                tv_nsec: left.subsec_nanos() as _,
            }
        });
        match rustix::event::poll(&mut pfds, ts.as_ref()) {
            Ok(0) => return Ok(Vec::new()),
            Ok(_) => {
                let ready: Vec<usize> = pfds
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| !p.revents().is_empty())
                    .map(|(i, _)| i)
                    .collect();
                return Ok(ready);
            }
            Err(rustix::io::Errno::INTR) => {
                if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                    return Ok(Vec::new());
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Duplicates a handle (close-on-exec).
pub fn duplicate(h: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    h.try_clone_to_owned()
}

/// Takes ownership of a raw handle.
///
/// # Safety
/// `raw` must be an open descriptor owned by nobody else.
pub unsafe fn own_raw(raw: RawHandle) -> OwnedFd {
    OwnedFd::from_raw_fd(raw)
}

/// Borrows any `AsFd`.
pub fn borrow<T: AsFd>(t: &T) -> BorrowedFd<'_> {
    t.as_fd()
}
