//! Unix: a connection end is a Unix or TCP stream socket.

use std::io::{self, IoSlice, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rustix::net::{SendAncillaryBuffer, SendFlags};

use crate::sys::handles::{BorrowedHandle, OwnedHandle};

/// Flags for every `send` on a stream: a closed peer is `EPIPE`, never a
/// SIGPIPE death.
#[cfg(not(target_vendor = "apple"))]
const STREAM_SEND_FLAGS: SendFlags = SendFlags::NOSIGNAL;
#[cfg(target_vendor = "apple")]
const STREAM_SEND_FLAGS: SendFlags = SendFlags::empty();

/// One end of a connection: a Unix or TCP socket, always a byte stream
/// (`SOCK_STREAM`), as CPython's: a `pipe()` end is a Unix stream
/// socketpair, which a Python process (or any code reading the descriptor
/// as CPython does: 4 header bytes, then the payload) reads as CPython's
/// `Pipe()`.
///
/// Every method takes `&self`: callers serialise readers and writers
/// themselves (a `Connection` holds a lock for each direction).
#[derive(Debug)]
pub struct Stream {
    fd: OwnedFd,
    /// A read saw `ECONNRESET`: the peer ended with bytes of ours unread.
    reset: AtomicBool,
}

/// Creates two connected ends (close-on-exec), both able to carry
/// SCM_RIGHTS and to be polled: a `SOCK_STREAM` socketpair (CPython's
/// `Pipe()`).
pub fn stream_pair() -> io::Result<(Stream, Stream)> {
    let (a, b) = UnixStream::pair()?;
    Ok((Stream::new(a.into())?, Stream::new(b.into())?))
}

impl Stream {
    pub(in crate::sys) fn new(fd: OwnedFd) -> io::Result<Stream> {
        #[cfg(target_vendor = "apple")]
        rustix::net::sockopt::set_socket_nosigpipe(&fd, true)?;
        Ok(Stream {
            fd,
            reset: AtomicBool::new(false),
        })
    }

    /// Wraps a handle received from another process (a connected stream
    /// socket). A socket that keeps record boundaries (`SOCK_SEQPACKET`,
    /// `SOCK_DGRAM`) is refused: frames are read as a byte stream, and a
    /// read shorter than a record would lose the record's rest.
    pub fn from_owned(h: OwnedHandle) -> io::Result<Stream> {
        let kind = rustix::net::sockopt::socket_type(&h)?;
        if kind != rustix::net::SocketType::STREAM {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("not a stream socket ({kind:?}): a connection is a byte stream"),
            ));
        }
        Stream::new(h)
    }

    /// The OS handle, for polling, `fileno` and handle transfer.
    pub fn handle(&self) -> BorrowedHandle<'_> {
        self.fd.as_fd()
    }

    /// Reads at most `buf.len()` bytes; `Ok(0)` is end of file. A reset
    /// connection reads as end of file; interrupted reads are retried.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        retry_read(&self.reset, || rustix::io::read(&self.fd, &mut *buf))
    }

    /// Reads at most `max` bytes into the spare capacity of `buf`,
    /// appending them; `Ok(0)` is end of file. No byte of `buf` is
    /// initialised before the OS fills it.
    pub fn read_to_spare(&self, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        if max == 0 {
            return Ok(0);
        }
        if buf.capacity() == buf.len() {
            buf.reserve(1);
        }
        let spare = buf.spare_capacity_mut();
        let want = spare.len().min(max);
        let target = &mut spare[..want];
        let n = retry_read(&self.reset, || {
            rustix::io::read(&self.fd, &mut *target).map(|(f, _)| f.len())
        })?;
        // SAFETY: the OS initialised the first `n` spare bytes.
        unsafe { buf.set_len(buf.len() + n) };
        Ok(n)
    }

    /// Writes one frame, `header` then `payload`, completely, as one
    /// gathered write (the payload is never copied; a frame the socket
    /// buffer holds goes out in one system call). A closed peer is
    /// `ErrorKind::BrokenPipe`.
    pub fn write_frame(&self, header: &[u8], payload: &[u8]) -> io::Result<()> {
        self.write_all_parts(&[header, payload])
    }

    /// Writes the concatenation of `parts` completely on a byte stream,
    /// with as few system calls as the OS allows (one `sendmsg` gathers
    /// every part).
    fn write_all_parts(&self, parts: &[&[u8]]) -> io::Result<()> {
        const MAX_SLICES: usize = 8;
        let mut index = 0; // first part not completely written
        let mut offset = 0; // bytes of `parts[index]` already written
        while index < parts.len() {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let mut count = 0;
            for (i, part) in parts[index..].iter().enumerate().take(MAX_SLICES) {
                let start = if i == 0 { offset } else { 0 };
                slices[i] = IoSlice::new(&part[start..]);
                count += 1;
            }
            let written = retry_write(|| {
                rustix::net::sendmsg(
                    &self.fd,
                    &slices[..count],
                    &mut SendAncillaryBuffer::default(),
                    STREAM_SEND_FLAGS,
                )
            })?;
            if written == 0 && slices[..count].iter().any(|s| !s.is_empty()) {
                return Err(io::ErrorKind::WriteZero.into());
            }
            super::advance_parts(parts, &mut index, &mut offset, written);
        }
        Ok(())
    }

    /// Waits until the stream has data or end of file (`None` waits
    /// forever, `Some(ZERO)` returns at once). Never consumes anything.
    pub fn poll_readable(&self, timeout: Option<Duration>) -> io::Result<bool> {
        Ok(!crate::sys::poll::poll_readable(&[self.handle()], timeout)?.is_empty())
    }

    /// Closes the stream while keeping its handle value reserved until the
    /// `Stream` is dropped: the peer sees end of file (once no other process
    /// holds the socket), later I/O fails, and a handle borrowed from
    /// `&self` never names an unrelated, reused descriptor.
    ///
    /// An unconnected socket is put in the descriptor's place (`dup3`).
    pub fn close_in_place(&self) -> io::Result<()> {
        replace_in_place(&self.fd, &inert_socket()?)
    }

    /// Whether a read saw the peer end with bytes this end wrote still
    /// unread by it (Linux reports that as `ECONNRESET`, which reads as
    /// end of file here): what it was sent last never reached its code.
    pub fn ended_unread(&self) -> bool {
        self.reset.load(Ordering::Relaxed)
    }

    /// Whether [`close_in_place`](Self::close_in_place) keeps the handle
    /// value reserved until drop: always, here.
    pub fn close_keeps_handle(&self) -> bool {
        true
    }
}

/// Runs a read system call, retrying interrupted ones. A reset
/// connection reads as end of file, after the data still queued: Linux
/// reports `ECONNRESET` once when the peer closed with unread data of its
/// own (after the queued bytes on a `SOCK_STREAM` socket), so the read is
/// retried; `reset` remembers it ([`Stream::ended_unread`]).
fn retry_read<T: Default>(
    reset: &AtomicBool,
    mut f: impl FnMut() -> rustix::io::Result<T>,
) -> io::Result<T> {
    let mut resets = 0;
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(rustix::io::Errno::INTR) => continue,
            Err(rustix::io::Errno::CONNRESET) if resets < 3 => {
                reset.store(true, Ordering::Relaxed);
                resets += 1;
            }
            Err(rustix::io::Errno::CONNRESET) => return Ok(T::default()),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Runs a write system call, retrying interrupted ones; a closed or reset
/// peer is `BrokenPipe`.
fn retry_write(mut f: impl FnMut() -> rustix::io::Result<usize>) -> io::Result<usize> {
    loop {
        match f() {
            Ok(n) => return Ok(n),
            Err(rustix::io::Errno::INTR) => continue,
            Err(rustix::io::Errno::PIPE | rustix::io::Errno::CONNRESET) => {
                return Err(io::ErrorKind::BrokenPipe.into())
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// An unconnected socket: what a closed handle's value names until drop.
pub(in crate::sys) fn inert_socket() -> io::Result<OwnedFd> {
    Ok(rustix::net::socket_with(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::STREAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )?)
}

/// Puts `by` in place of `fd` (which stays open, now naming what `by`
/// names).
pub(in crate::sys) fn replace_in_place(fd: &OwnedFd, by: &OwnedFd) -> io::Result<()> {
    // SAFETY: the temporary `OwnedFd` aliases `fd` and is never dropped
    // (`ManuallyDrop`), so `fd` keeps sole ownership of the descriptor;
    // `dup3` only changes what the descriptor refers to.
    let mut alias = std::mem::ManuallyDrop::new(unsafe { OwnedFd::from_raw_fd(fd.as_raw_fd()) });
    rustix::io::dup3(by, &mut alias, rustix::io::DupFlags::CLOEXEC)?;
    Ok(())
}

impl Read for &Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Stream::read(self, buf)
    }
}

impl Write for &Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        retry_write(|| rustix::net::send(&self.fd, buf, STREAM_SEND_FLAGS))
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.write_all_parts(&[buf])
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod stream_tests {
    use super::*;
    use crate::sys::handles::duplicate;

    /// Reads exactly `n` bytes, as CPython's `_recv(n)` does.
    fn read_exactly(s: &Stream, n: usize) -> Vec<u8> {
        let mut got = vec![0u8; n];
        let mut filled = 0;
        while filled < n {
            let k = s.read(&mut got[filled..]).unwrap();
            assert!(k > 0, "early end of file");
            filled += k;
        }
        got
    }

    #[test]
    fn pipe_ends_are_byte_streams_and_survive_a_transfer() {
        let (a, b) = stream_pair().unwrap();
        assert_eq!(
            rustix::net::sockopt::socket_type(&a.fd).unwrap(),
            rustix::net::SocketType::STREAM
        );
        // CPython's reader: 4 header bytes, then the payload; two frames
        // written back to back are read apart, nothing lost.
        a.write_frame(&[0, 0, 0, 5], b"hello").unwrap();
        a.write_frame(&[0, 0, 0, 5], b"world").unwrap();
        for word in [b"hello", b"world"] {
            assert_eq!(read_exactly(&b, 4), [0, 0, 0, 5]);
            assert_eq!(read_exactly(&b, 5), word);
        }
        let again = Stream::from_owned(duplicate(a.handle()).unwrap()).unwrap();
        again.write_frame(&[0, 0, 0, 1], b"x").unwrap();
        assert_eq!(read_exactly(&b, 5), b"\x00\x00\x00\x01x");
    }

    /// A peer that ends with bytes of ours unread is told apart from one
    /// that read everything (the pool's "never read, never started"
    /// rule); both read as end of file, after what the peer had sent.
    #[test]
    fn an_end_with_our_bytes_unread_is_known() {
        let (a, b) = stream_pair().unwrap();
        a.write_frame(&[0, 0, 0, 1], b"x").unwrap();
        b.write_frame(&[0, 0, 0, 1], b"y").unwrap();
        drop(b);
        assert_eq!(read_exactly(&a, 5), b"\x00\x00\x00\x01y");
        assert_eq!(a.read(&mut [0u8; 8]).unwrap(), 0);
        assert!(a.ended_unread());

        let (a, b) = stream_pair().unwrap();
        a.write_frame(&[0, 0, 0, 1], b"x").unwrap();
        assert_eq!(read_exactly(&b, 5), b"\x00\x00\x00\x01x");
        drop(b);
        assert_eq!(a.read(&mut [0u8; 8]).unwrap(), 0);
        assert!(!a.ended_unread());
    }

    #[test]
    fn a_record_keeping_socket_is_refused() {
        use rustix::net::{AddressFamily, SocketFlags, SocketType};
        for kind in [SocketType::SEQPACKET, SocketType::DGRAM] {
            let Ok((s, _t)) =
                rustix::net::socketpair(AddressFamily::UNIX, kind, SocketFlags::CLOEXEC, None)
            else {
                continue;
            };
            let e = Stream::from_owned(s).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
        }
    }

    #[test]
    fn reset_reads_as_end_of_file_after_queued_data() {
        let (a, b) = stream_pair().unwrap();
        b.write_frame(&[0, 0, 0, 1], b"u").unwrap(); // never read by `a`
        a.write_frame(&[0, 0, 0, 1], b"q").unwrap();
        drop(a);
        let mut buf = [0u8; 16];
        let n = b.read(&mut buf).unwrap();
        assert!(n > 0, "queued data first");
        let mut total = n;
        while total < 5 {
            total += b.read(&mut buf[total..]).unwrap();
        }
        assert_eq!(&buf[..5], b"\x00\x00\x00\x01q");
        assert_eq!(b.read(&mut buf).unwrap(), 0);
        let e = b.write_frame(&[0, 0, 0, 1], b"x").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
    }

    #[test]
    fn close_in_place_keeps_the_number_and_ends_the_peer() {
        let (a, b) = stream_pair().unwrap();
        let raw = a.handle().as_raw_fd();
        a.close_in_place().unwrap();
        assert_eq!(a.handle().as_raw_fd(), raw);
        assert_eq!(b.read(&mut [0u8; 8]).unwrap(), 0);
        assert!(a.write_frame(&[0, 0, 0, 0], b"").is_err());
    }
}
