//! Windows: a connection end is a named pipe in byte mode, opened for
//! overlapped I/O (`pipe.rs`), or a TCP socket (`tcp.rs`).
//!
//! Both are byte streams, as on Unix: a frame is read as its header,
//! then exactly its payload. (A message-mode pipe would keep boundaries,
//! but a reader asking for 4 header bytes would then get ERROR_MORE_DATA
//! and the rest of the message in later reads: the same bytes, read
//! another way; byte mode is what every other mproc stream is.)

pub(in crate::sys) mod pipe;
pub(in crate::sys) mod tcp;

use std::io::{self, Read, Write};
use std::os::windows::io::{
    AsRawHandle, BorrowedHandle as StdBorrowed, FromRawSocket, IntoRawHandle, RawHandle, RawSocket,
};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use windows_sys::Win32::Foundation::HANDLE;

use crate::sys::handles::{BorrowedHandle, OwnedHandle};

pub use pipe::private_pipe_security;
pub(in crate::sys) use pipe::wide;

/// A frame at most this long is written with one system call (copied
/// together with its header); a longer one as header, then payload.
const SMALL_FRAME: usize = 8 * 1024;

/// The transport under a [`Stream`].
#[derive(Debug)]
pub(in crate::sys) enum End {
    Pipe(pipe::PipeEnd),
    Tcp(tcp::TcpEnd),
}

/// One end of a connection: a named pipe or a TCP socket.
///
/// Every method takes `&self`: callers serialise readers and writers
/// themselves (a `Connection` holds a lock for each direction); one
/// thread may read while another writes.
#[derive(Debug)]
pub struct Stream {
    pub(in crate::sys) end: End,
}

/// Creates two connected ends of a fresh, private named pipe (CPython's
/// `Pipe()` on Windows), both not inheritable and passable to a child.
pub fn stream_pair() -> io::Result<(Stream, Stream)> {
    let (a, b) = pipe::pair()?;
    Ok((Stream { end: End::Pipe(a) }, Stream { end: End::Pipe(b) }))
}

/// What a closed pipe end's [`Stream::handle`] names: an event that is
/// never signalled, kept for the life of the process.
fn inert_handle() -> BorrowedHandle<'static> {
    static INERT: OnceLock<usize> = OnceLock::new();
    let raw = *INERT.get_or_init(|| {
        use windows_sys::Win32::System::Threading::CreateEventW;
        // SAFETY: an unnamed manual-reset event, never closed.
        let h = unsafe { CreateEventW(std::ptr::null(), 1, 0, std::ptr::null()) };
        if h.is_null() {
            // The pseudo-handle of this process: always valid, never
            // signalled while anyone can ask.
            usize::MAX
        } else {
            h as usize
        }
    });
    // SAFETY: the handle is never closed.
    unsafe { StdBorrowed::borrow_raw(raw as RawHandle) }
}

impl Stream {
    /// Wraps a handle received from another process (a pipe end, or a
    /// socket duplicated in this process).
    pub fn from_owned(h: OwnedHandle) -> io::Result<Stream> {
        let raw = h.as_raw_handle();
        if pipe::is_pipe(raw as HANDLE) {
            return Ok(Stream {
                end: End::Pipe(pipe::PipeEnd::new(h)),
            });
        }
        if tcp::is_socket(raw as RawSocket) {
            // SAFETY: the socket's ownership moves from `h` to the stream.
            let sock =
                unsafe { std::net::TcpStream::from_raw_socket(h.into_raw_handle() as RawSocket) };
            return Ok(Stream {
                end: End::Tcp(tcp::TcpEnd::new(sock)),
            });
        }
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the handle is neither a pipe nor a socket",
        ))
    }

    /// Whether a read saw the peer end with bytes this end wrote still
    /// unread: never known here (a named pipe's or a socket's end reads
    /// the same either way), so always false.
    pub fn ended_unread(&self) -> bool {
        false
    }

    /// The OS handle, for polling, `fileno` and handle transfer. After
    /// [`close_in_place`](Self::close_in_place) a pipe end's handle is
    /// closed, and this names an inert object instead.
    pub fn handle(&self) -> BorrowedHandle<'_> {
        match &self.end {
            End::Pipe(p) => match p.raw() {
                // SAFETY: the handle stays open while `self` is not closed.
                Some(raw) => unsafe { StdBorrowed::borrow_raw(raw) },
                None => inert_handle(),
            },
            // SAFETY: the socket lives as long as `self`.
            End::Tcp(t) => unsafe { StdBorrowed::borrow_raw(t.raw() as RawHandle) },
        }
    }

    /// Reads at most `buf.len()` bytes; `Ok(0)` is end of file, as is a
    /// reset connection.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for writes of its length.
        unsafe { self.read_raw(buf.as_mut_ptr(), buf.len()) }
    }

    /// # Safety
    /// `buf` must be valid for writes of `len` bytes.
    unsafe fn read_raw(&self, buf: *mut u8, len: usize) -> io::Result<usize> {
        // SAFETY: the caller's `buf` is valid for writes of `len` bytes,
        // which is what each end's `read_raw` requires.
        unsafe {
            match &self.end {
                End::Pipe(p) => p.read_raw(buf, len),
                End::Tcp(t) => t.read_raw(buf, len),
            }
        }
    }

    /// Reads at most `max` bytes into the spare capacity of `buf`,
    /// appending them; `Ok(0)` is end of file. No byte of `buf` is
    /// initialised before the OS fills it.
    pub fn read_to_spare(&self, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        if buf.capacity() == buf.len() {
            buf.reserve(max.min(1));
        }
        let spare = buf.spare_capacity_mut();
        let want = spare.len().min(max);
        // SAFETY: the spare capacity is valid for writes of `want` bytes.
        let n = unsafe { self.read_raw(spare.as_mut_ptr().cast(), want)? };
        // SAFETY: the OS initialised the first `n` spare bytes.
        unsafe { buf.set_len(buf.len() + n) };
        Ok(n)
    }

    /// Writes one frame, `header` then `payload`, completely: a small
    /// frame in one system call, a big one without copying its payload.
    /// A closed peer is `ErrorKind::BrokenPipe`.
    pub fn write_frame(&self, header: &[u8], payload: &[u8]) -> io::Result<()> {
        match &self.end {
            End::Tcp(t) => t.write_parts(&[header, payload]),
            End::Pipe(p) => {
                let total = header.len() + payload.len();
                if total <= SMALL_FRAME {
                    let mut joined = [0u8; SMALL_FRAME];
                    joined[..header.len()].copy_from_slice(header);
                    joined[header.len()..total].copy_from_slice(payload);
                    return p.write_all(&joined[..total]);
                }
                p.write_all(header)?;
                p.write_all(payload)
            }
        }
    }

    /// Waits until the stream has data or end of file (`None` waits
    /// forever, `Some(ZERO)` returns at once). Never consumes anything.
    pub fn poll_readable(&self, timeout: Option<Duration>) -> io::Result<bool> {
        match &self.end {
            End::Tcp(t) => t.poll(timeout),
            End::Pipe(p) => {
                let deadline = timeout.map(|t| Instant::now() + t);
                let mut pause = Duration::from_micros(50);
                loop {
                    if p.ready()? {
                        return Ok(true);
                    }
                    if let Some(d) = deadline {
                        let left = d.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            return Ok(false);
                        }
                        pause = pause.min(left);
                    }
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(5));
                }
            }
        }
    }

    /// Closes the stream: the peer sees end of file (once no other process
    /// holds this end) and later I/O fails.
    ///
    /// A socket is shut down both ways and kept until drop, so its handle
    /// value stays reserved. A pipe has no shutdown: its handle is closed
    /// (after the operations other threads have in flight on it are
    /// cancelled and have returned), and [`handle`](Self::handle) names an
    /// inert object from then on.
    pub fn close_in_place(&self) -> io::Result<()> {
        match &self.end {
            End::Pipe(p) => {
                p.close();
                Ok(())
            }
            End::Tcp(t) => t.close(),
        }
    }

    /// Whether [`close_in_place`](Self::close_in_place) keeps the handle
    /// value reserved until drop: for a socket, not for a pipe.
    pub fn close_keeps_handle(&self) -> bool {
        matches!(self.end, End::Tcp(_))
    }
}

impl Read for &Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Stream::read(self, buf)
    }
}

impl Write for &Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match &self.end {
            End::Pipe(p) => p.write_all(buf),
            End::Tcp(t) => t.write_parts(&[buf]),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod stream_tests {
    use super::*;
    use std::path::PathBuf;
    use std::sync::Arc;

    use crate::sys::handles::Peer;
    use crate::sys::tests::{frame, read_exactly};
    use crate::sys::{
        bind_local, bind_tcp, connect_tcp, poll_readable, send_handles, unique_local_name,
    };

    #[test]
    fn pipe_ends_are_byte_streams_both_ways() {
        let (a, b) = stream_pair().unwrap();
        frame(&a, b"hello");
        assert_eq!(read_exactly(&b, 9), b"\x00\x00\x00\x05hello");
        frame(&b, b"back");
        assert_eq!(read_exactly(&a, 8), b"\x00\x00\x00\x04back");
    }

    #[test]
    fn one_thread_reads_while_another_writes() {
        let (a, b) = stream_pair().unwrap();
        let big: Vec<u8> = (0..3_000_000).map(|i| (i % 249) as u8).collect();
        std::thread::scope(|s| {
            // `a` is blocked reading while it also writes a big frame.
            let reader = s.spawn(|| read_exactly(&a, 4));
            s.spawn(|| frame(&a, &big));
            assert_eq!(read_exactly(&b, 4 + big.len())[4..], big[..]);
            frame(&b, b"");
            assert_eq!(reader.join().unwrap(), [0, 0, 0, 0]);
        });
    }

    #[test]
    fn close_ends_the_peer_and_wakes_a_blocked_reader() {
        let (a, b) = stream_pair().unwrap();
        let a = Arc::new(a);
        let blocked = {
            let a = a.clone();
            std::thread::spawn(move || a.read(&mut [0u8; 8]))
        };
        // Give the reader time to block; either way it must return.
        std::thread::sleep(Duration::from_millis(50));
        a.close_in_place().unwrap();
        assert!(blocked.join().unwrap().is_err(), "a read after close fails");
        assert_eq!(b.read(&mut [0u8; 8]).unwrap(), 0);
        assert!(b.poll_readable(Some(Duration::ZERO)).unwrap());
        let e = b.write_frame(&[0, 0, 0, 1], b"x").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
        assert!(a.write_frame(&[0, 0, 0, 0], b"").is_err());
        assert!(!a.poll_readable(Some(Duration::ZERO)).unwrap_or(false));
    }

    #[test]
    fn queued_data_before_end_of_file() {
        let (a, b) = stream_pair().unwrap();
        frame(&b, b"never read");
        frame(&a, b"q");
        drop(a);
        assert_eq!(read_exactly(&b, 5), b"\x00\x00\x00\x01q");
        assert_eq!(b.read(&mut [0u8; 8]).unwrap(), 0);
    }

    #[test]
    fn readiness_of_pipes_sockets_and_objects() {
        let (a, b) = stream_pair().unwrap();
        let (listener, addr) = bind_tcp("127.0.0.1:0".parse().unwrap()).unwrap();
        let c = connect_tcp(addr).unwrap();
        let d = listener.accept().unwrap();
        let hs = [b.handle(), d.handle(), inert_handle()];
        assert!(poll_readable(&hs, Some(Duration::ZERO)).unwrap().is_empty());
        assert!(poll_readable(&hs[1..2], Some(Duration::from_millis(20)))
            .unwrap()
            .is_empty());
        frame(&c, b"s");
        assert_eq!(poll_readable(&hs, None).unwrap(), vec![1]);
        assert_eq!(poll_readable(&hs[1..2], None).unwrap(), vec![0]);
        frame(&a, b"p");
        assert_eq!(poll_readable(&hs, None).unwrap(), vec![0, 1]);
        // An idle socket is not ready (it used to count as a broken pipe).
        assert!(!c.poll_readable(Some(Duration::ZERO)).unwrap());
    }

    #[test]
    fn sockets_are_not_passed_to_children() {
        let (listener, addr) = bind_tcp("127.0.0.1:0".parse().unwrap()).unwrap();
        let c = connect_tcp(addr).unwrap();
        let _d = listener.accept().unwrap();
        let (ctl, _other) = stream_pair().unwrap();
        let e = send_handles(ctl.handle(), &[c.handle()], Peer(std::ptr::null_mut())).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::Unsupported);
        assert!(e.to_string().contains("TCP connection"), "{e}");
    }

    /// What local names are on Windows (binding, accepting and closing
    /// are the conformance suite's `local_listener_accepts_and_owns_its_name`):
    /// fresh names are pipe paths, and a bare name means `\\.\pipe\<name>`.
    #[test]
    fn local_names_and_binding() {
        let name = unique_local_name();
        assert!(name.to_string_lossy().starts_with(r"\\.\pipe\mproc-"));
        let bare = PathBuf::from(format!("mproc-bare-{}", std::process::id()));
        let l = bind_local(&bare).unwrap();
        let full = PathBuf::from(format!(r"\\.\pipe\{}", bare.display()));
        assert!(bind_local(&full).is_err(), "the bare name's pipe is taken");
        drop(l);
    }

    #[test]
    fn private_security_descriptor_builds() {
        let sa = private_pipe_security().unwrap();
        assert!(!sa.lpSecurityDescriptor.is_null());
        assert_eq!(sa.bInheritHandle, 0);
    }
}
