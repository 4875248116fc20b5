//! `Connection` and `pipe()`: CPython's `multiprocessing.Pipe` and
//! `multiprocessing.connection.Connection`.
//!
//! A connection is one end of a byte stream (a socketpair for [`pipe`], a
//! Unix or TCP socket from a [`Listener`](crate::Listener) or
//! [`Client`](crate::Client)) carrying CPython's [frames](crate::frame):
//! `send_bytes`/`recv_bytes` interoperate with a Python process, and typed
//! messages carry a [tag](crate::tag) so a wrong type is an error, never
//! garbage.
//!
//! Every method takes `&self`. A send lock keeps concurrent senders'
//! frames whole and a receive lock gives each message to one receiver;
//! `close`, `poll` and the flags take neither.

use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use serde::de::{DeserializeOwned, Deserializer};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};

use crate::sys::{self, Stream};
use crate::{frame, handles, tag, Error, Result, Waitable};

/// State bits.
const READABLE: u8 = 1;
const WRITABLE: u8 = 2;
const CLOSED: u8 = 4;
/// Both directions: a duplex end.
pub(crate) const DUPLEX: u8 = READABLE | WRITABLE;

/// The receive buffer grows by at most this much beyond what has arrived
/// (or by what has arrived, whichever is larger), so a lying header costs
/// nothing until its bytes come.
const READ_CHUNK: usize = 1 << 20;

/// The typed send and receive buffers are kept between messages up to
/// this size: reusing one saves the page faults of fresh memory, which
/// cost more than the copy itself for large messages.
const KEEP_SCRATCH: usize = 16 << 20;

/// One end of a pipe or socket connection (CPython's `Connection`).
///
/// `Send + Sync`: share it between threads with `Arc` or scoped threads.
/// Pass it to a child process in a target's arguments; the child then owns
/// it and the parent keeps no copy.
///
/// ```
/// let (a, b) = mproc_ipc::pipe(true)?;
/// a.send("hello")?;
/// assert_eq!(b.recv::<String>()?, "hello");
/// b.send_bytes(b"raw")?;
/// assert_eq!(a.recv_bytes()?, b"raw");
/// # Ok::<(), mproc_ipc::Error>(())
/// ```
pub struct Connection {
    stream: Stream,
    state: AtomicU8,
    max_message: AtomicU64,
    /// Held while a frame is written; keeps the typed-send buffer.
    send_lock: Mutex<Vec<u8>>,
    /// Held while a frame is read; keeps the typed-receive buffer.
    recv_lock: Mutex<Vec<u8>>,
}

/// Creates a pipe: two connected ends (CPython's `Pipe(duplex)`).
///
/// `pipe(true)` gives two ends that both send and receive; `pipe(false)`
/// gives `(reader, writer)`: the first only receives, the second only
/// sends, and using either the other way is [`Error::WriteOnly`] /
/// [`Error::ReadOnly`].
///
/// Both kinds are a socketpair (so either end can be passed to a child
/// and waited on); on Linux a `SOCK_SEQPACKET` one, which keeps record
/// boundaries so a small message is read with one system call (the bytes
/// are CPython's frames all the same: `docs/protocol.md`).
///
/// ```
/// let (reader, writer) = mproc_ipc::pipe(false)?;
/// writer.send(&42u32)?;
/// assert_eq!(reader.recv::<u32>()?, 42);
/// assert!(matches!(reader.send(&1u8), Err(mproc_ipc::Error::ReadOnly)));
/// # Ok::<(), mproc_ipc::Error>(())
/// ```
pub fn pipe(duplex: bool) -> Result<(Connection, Connection)> {
    let (a, b) = sys::stream_pair()?;
    if duplex {
        Ok((Connection::new(a, DUPLEX), Connection::new(b, DUPLEX)))
    } else {
        Ok((Connection::new(a, READABLE), Connection::new(b, WRITABLE)))
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A frame header for a payload of `len` bytes, on the stack.
struct Header {
    bytes: [u8; 12],
    len: usize,
}

impl Header {
    fn new(len: usize) -> Header {
        let mut bytes = [0u8; 12];
        let len = match u32::try_from(len) {
            Ok(short) if short <= 0x7fff_ffff => {
                bytes[..4].copy_from_slice(&short.to_be_bytes());
                4
            }
            _ => {
                bytes[..4].copy_from_slice(&[0xff; 4]);
                bytes[4..].copy_from_slice(&(len as u64).to_be_bytes());
                12
            }
        };
        Header { bytes, len }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl Connection {
    /// Wraps a connected stream with the given direction bits.
    pub(crate) fn new(stream: Stream, flags: u8) -> Connection {
        Connection {
            stream,
            state: AtomicU8::new(flags & (READABLE | WRITABLE)),
            max_message: AtomicU64::new(frame::DEFAULT_MAX_MESSAGE),
            send_lock: Mutex::new(Vec::new()),
            recv_lock: Mutex::new(Vec::new()),
        }
    }

    /// The OS stream (for the `sys` trait impls).
    pub(crate) fn stream(&self) -> &Stream {
        &self.stream
    }

    fn bits(&self) -> u8 {
        self.state.load(Ordering::Acquire)
    }

    fn check_open(&self) -> Result<()> {
        if self.bits() & CLOSED != 0 {
            return Err(Error::HandleClosed);
        }
        Ok(())
    }

    fn check_readable(&self) -> Result<()> {
        let bits = self.bits();
        if bits & CLOSED != 0 {
            Err(Error::HandleClosed)
        } else if bits & READABLE == 0 {
            Err(Error::WriteOnly)
        } else {
            Ok(())
        }
    }

    fn check_writable(&self) -> Result<()> {
        let bits = self.bits();
        if bits & CLOSED != 0 {
            Err(Error::HandleClosed)
        } else if bits & WRITABLE == 0 {
            Err(Error::ReadOnly)
        } else {
            Ok(())
        }
    }

    /// An OS error seen after a concurrent `close()` is "handle is closed".
    fn io_error(&self, e: Error) -> Error {
        match e {
            Error::Io(_) | Error::BrokenPipe | Error::Eof | Error::EofDuringMessage
                if self.closed() =>
            {
                Error::HandleClosed
            }
            other => other,
        }
    }

    /// CPython's `_bad_message_length`: the unread payload leaves the
    /// stream out of step, so this end reads no more — a duplex end
    /// becomes write-only, a read-only end is closed.
    fn bad_message_length(&self) {
        if self.bits() & WRITABLE != 0 {
            self.state.fetch_and(!READABLE, Ordering::AcqRel);
        } else {
            self.close();
        }
    }

    /// Sends `value` as one typed message (CPython's `send(obj)`).
    ///
    /// The value is encoded (a small type tag, then postcard) before
    /// anything is written: an encoding error writes nothing. For bulk
    /// `Vec<u8>`/`&[u8]` fields, `#[serde(with = "serde_bytes")]` (or
    /// [`send_bytes`](Self::send_bytes)) keeps bytes at socket speed.
    pub fn send<T: Serialize + ?Sized>(&self, value: &T) -> Result<()> {
        self.check_writable()?;
        let mut scratch = lock(&self.send_lock);
        scratch.clear();
        REFUSAL.with(|r| r.set(None));
        if let Err(e) = tag::encode(value, &mut scratch) {
            // postcard drops a custom error's text: restore ours.
            return Err(match take_refusal() {
                Some(why) => Error::Encode(why.to_string()),
                None => e,
            });
        }
        let result = self.write_frame(&scratch);
        if scratch.capacity() > KEEP_SCRATCH {
            *scratch = Vec::new();
        }
        result
    }

    /// Sends `buf` as one raw message (CPython's `send_bytes`): a frame of
    /// exactly these bytes, which a Python peer receives with
    /// `recv_bytes()`. Use a slice for CPython's `offset`/`size`:
    /// `send_bytes(&data[offset..offset + size])`.
    pub fn send_bytes(&self, buf: &[u8]) -> Result<()> {
        self.check_writable()?;
        let _guard = lock(&self.send_lock);
        self.write_frame(buf)
    }

    /// Writes header and payload in one gathered write; the caller holds
    /// the send lock.
    fn write_frame(&self, payload: &[u8]) -> Result<()> {
        self.check_open()?;
        let header = Header::new(payload.len());
        self.stream
            .write_frame(header.as_bytes(), payload)
            .map_err(|e| self.io_error(Error::from(e)))
    }

    /// Receives one typed message sent with [`send`](Self::send)
    /// (CPython's `recv()`).
    ///
    /// A message sent as another type is [`Error::TypeMismatch`] naming
    /// both (the message is consumed); borrowed and owned forms are one
    /// type (`send("x")` → `recv::<String>()`). After the peer closed and
    /// every queued message was delivered: [`Error::Eof`].
    pub fn recv<T: DeserializeOwned>(&self) -> Result<T> {
        self.check_readable()?;
        let mut scratch = lock(&self.recv_lock);
        self.check_readable()?;
        let mut head = [0u8; sys::FIRST_RECORD];
        let (len, start) = self.read_head(&mut head)?;
        let len = self.admit(len, None)?;
        scratch.clear();
        let read = self.read_payload_into(&mut scratch, len, &head[start]);
        let decoded = read.and_then(|()| tag::decode(&scratch));
        if scratch.capacity() > KEEP_SCRATCH {
            *scratch = Vec::new();
        }
        decoded
    }

    /// Receives one message's raw bytes (CPython's `recv_bytes()`); for a
    /// typed message, its whole payload, tag included.
    pub fn recv_bytes(&self) -> Result<Vec<u8>> {
        self.recv_message(None)
    }

    /// Like [`recv_bytes`](Self::recv_bytes), but a message longer than
    /// `maxlength` is [`Error::BadMessageLength`] and leaves this end
    /// unreadable, as CPython's `recv_bytes(maxlength)`: a duplex end
    /// becomes write-only, a read-only end is closed.
    pub fn recv_bytes_max(&self, maxlength: usize) -> Result<Vec<u8>> {
        self.recv_message(Some(maxlength))
    }

    /// Receives one message into `buf` and returns its length (CPython's
    /// `recv_bytes_into`). A message longer than `buf` is consumed and
    /// returned whole in [`Error::BufferTooShort`].
    pub fn recv_bytes_into(&self, buf: &mut [u8]) -> Result<usize> {
        self.check_readable()?;
        let _guard = lock(&self.recv_lock);
        self.check_readable()?;
        let mut head = [0u8; sys::FIRST_RECORD];
        let (len, start) = self.read_head(&mut head)?;
        let len = self.admit(len, None)?;
        if len > buf.len() {
            return Err(Error::BufferTooShort(self.read_payload(len, &head[start])?));
        }
        let mut filled = start.len();
        buf[..filled].copy_from_slice(&head[start]);
        while filled < len {
            match self.stream.read(&mut buf[filled..len]) {
                Ok(0) => return Err(self.io_error(Error::EofDuringMessage)),
                Ok(n) => filled += n,
                Err(e) => return Err(self.io_error(Error::from(e))),
            }
        }
        Ok(len)
    }

    fn recv_message(&self, maxlength: Option<usize>) -> Result<Vec<u8>> {
        self.check_readable()?;
        let _guard = lock(&self.recv_lock);
        self.check_readable()?;
        let mut head = [0u8; sys::FIRST_RECORD];
        let (len, start) = self.read_head(&mut head)?;
        let len = self.admit(len, maxlength)?;
        self.read_payload(len, &head[start])
    }

    /// Reads the next frame's header: returns the payload length and where
    /// in `head` the payload bytes that came with it lie (a record-keeping
    /// stream delivers the header and the payload's start together; a
    /// byte stream is read exactly, header only). A clean end of file is
    /// [`Error::Eof`]. The caller holds the receive lock.
    fn read_head(&self, head: &mut [u8; sys::FIRST_RECORD]) -> Result<(u64, Range<usize>)> {
        if !self.stream.keeps_records() {
            return match frame::read_header(&mut &self.stream) {
                Ok(Some(len)) => Ok((len, 0..0)),
                Ok(None) => Err(self.io_error(Error::Eof)),
                Err(e) => Err(self.io_error(e)),
            };
        }
        let n = match self.stream.read(head) {
            Ok(0) => return Err(self.io_error(Error::Eof)),
            Ok(n) => n,
            Err(e) => return Err(self.io_error(Error::from(e))),
        };
        let got = &head[..n];
        let (len, start) = match got {
            [0xff, 0xff, 0xff, 0xff, long @ ..] if long.len() >= 8 => {
                let mut be = [0u8; 8];
                be.copy_from_slice(&long[..8]);
                (u64::from_be_bytes(be), 12)
            }
            [a, b, c, d, ..] if [*a, *b, *c, *d] != [0xff; 4] => {
                (u64::from(u32::from_be_bytes([*a, *b, *c, *d])), 4)
            }
            _ => return Err(self.corrupt("a record too short for a frame header")),
        };
        if (n - start) as u64 > len {
            return Err(self.corrupt("a record longer than its frame"));
        }
        Ok((len, start..n))
    }

    /// The stream broke the framing rules: this end reads no more.
    fn corrupt(&self, what: &str) -> Error {
        self.bad_message_length();
        Error::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("corrupt message: {what}"),
        ))
    }

    /// Checks an announced length against `maxlength` and the maximum
    /// message size; a refused payload stays unread and this end becomes
    /// unreadable.
    fn admit(&self, len: u64, maxlength: Option<usize>) -> Result<usize> {
        if let Some(maxlength) = maxlength {
            if len > maxlength as u64 {
                self.bad_message_length();
                return Err(Error::BadMessageLength);
            }
        }
        let max = self.max_message();
        let too_large = Error::MessageTooLarge { len, max };
        if len > max {
            self.bad_message_length();
            return Err(too_large);
        }
        usize::try_from(len).map_err(|_| {
            self.bad_message_length();
            too_large
        })
    }

    /// Reads a payload of `len` bytes whose first bytes, `head`, already
    /// arrived. The buffer grows only as bytes arrive: never beyond
    /// `max(2 × received, received + 1 MiB)` nor `len`, so a header
    /// announcing gigabytes costs nothing until they come. No byte is
    /// zeroed first.
    fn read_payload(&self, len: usize, head: &[u8]) -> Result<Vec<u8>> {
        let mut buf = Vec::with_capacity(len.min(READ_CHUNK).max(head.len()));
        self.read_payload_into(&mut buf, len, head)?;
        Ok(buf)
    }

    /// [`read_payload`](Self::read_payload) into an empty `buf` whose
    /// capacity may be reused.
    fn read_payload_into(&self, buf: &mut Vec<u8>, len: usize, head: &[u8]) -> Result<()> {
        debug_assert!(buf.is_empty());
        buf.extend_from_slice(head);
        while buf.len() < len {
            let filled = buf.len();
            let remaining = len - filled;
            if buf.capacity() - filled < remaining.min(READ_CHUNK) {
                buf.reserve_exact(READ_CHUNK.max(filled).min(remaining));
            }
            match self.stream.read_to_spare(buf, remaining) {
                Ok(0) => return Err(self.io_error(Error::EofDuringMessage)),
                Ok(_) => {}
                Err(e) => return Err(self.io_error(Error::from(e))),
            }
        }
        Ok(())
    }

    /// Whether a message (or end of file) is ready to read (CPython's
    /// `poll`). `None` waits forever; `Some(Duration::ZERO)` returns at
    /// once. Never consumes anything.
    pub fn poll(&self, timeout: Option<Duration>) -> Result<bool> {
        self.check_readable()?;
        self.stream
            .poll_readable(timeout)
            .map_err(|e| self.io_error(Error::from(e)))
    }

    /// Closes this end (idempotent). Afterwards every operation is
    /// [`Error::HandleClosed`]; the peer sees end of file once no process
    /// holds this end any more. A `recv` blocked in another thread is not
    /// woken (as with CPython).
    pub fn close(&self) {
        let before = self.state.fetch_or(CLOSED, Ordering::AcqRel);
        if before & CLOSED == 0 {
            if let Err(e) = self.stream.close_in_place() {
                tracing::debug!("closing a connection: {e}");
            }
        }
    }

    /// Whether [`close`](Self::close) was called.
    pub fn closed(&self) -> bool {
        self.bits() & CLOSED != 0
    }

    /// Whether this end receives (false for a `pipe(false)` writer, and
    /// after a message was refused for its length).
    pub fn readable(&self) -> bool {
        self.bits() & READABLE != 0
    }

    /// Whether this end sends (false for a `pipe(false)` reader).
    pub fn writable(&self) -> bool {
        self.bits() & WRITABLE != 0
    }

    /// The OS handle (a file descriptor on Unix); [`Error::HandleClosed`]
    /// after `close`.
    pub fn fileno(&self) -> Result<sys::RawHandle> {
        self.check_open()?;
        Ok(sys::raw_of(self.stream.handle()))
    }

    /// The largest message this end accepts (default
    /// [`frame::DEFAULT_MAX_MESSAGE`], 4 GiB). A header announcing more
    /// is [`Error::MessageTooLarge`], and this end reads no more.
    pub fn max_message(&self) -> u64 {
        self.max_message.load(Ordering::Relaxed)
    }

    /// Sets the largest message this end accepts.
    pub fn set_max_message(&self, max: u64) {
        self.max_message.store(max, Ordering::Relaxed);
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Connection");
        if !self.closed() {
            d.field("handle", &sys::raw_of(self.stream.handle()));
        }
        d.field("closed", &self.closed())
            .field("readable", &self.readable())
            .field("writable", &self.writable())
            .finish()
    }
}

impl Waitable for Connection {
    fn wait_source(&self) -> Result<sys::BorrowedHandle<'_>> {
        self.check_open()?;
        Ok(self.stream.handle())
    }
}

thread_local! {
    /// Why the last `Connection::serialize` on this thread refused:
    /// serde formats such as postcard keep no custom error text.
    static REFUSAL: std::cell::Cell<Option<&'static str>> = const { std::cell::Cell::new(None) };
}

const NOT_IN_ARGS: &str = "a Connection can only be sent to a child process in its args";
const SEND_CLOSED: &str = "cannot send a closed Connection: handle is closed";

/// Why the last attempt on this thread to serialise a `Connection` failed,
/// if it did (and forgets it). Encoders whose format loses custom error
/// text use it to report the reason.
pub(crate) fn take_refusal() -> Option<&'static str> {
    REFUSAL.with(|r| r.take())
}

fn refuse<E: serde::ser::Error>(why: &'static str) -> E {
    REFUSAL.with(|r| r.set(Some(why)));
    E::custom(why)
}

/// A connection in a launch's arguments: an index into the handle table.
#[derive(Serialize, Deserialize)]
struct Transfer {
    handle: u32,
    flags: u8,
    max_message: u64,
}

impl Serialize for Connection {
    /// Registers the OS handle for transfer to the child being launched;
    /// an error anywhere else (a connection crosses processes only in a
    /// target's arguments).
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        if self.closed() {
            return Err(refuse(SEND_CLOSED));
        }
        let handle = handles::register_outgoing(sys::raw_of(self.stream.handle()))
            .ok_or_else(|| refuse(NOT_IN_ARGS))?;
        Transfer {
            handle,
            flags: self.bits() & (READABLE | WRITABLE),
            max_message: self.max_message(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Connection {
    /// Takes the OS handle the parent sent with the launch.
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let t = Transfer::deserialize(d)?;
        let owned = handles::take_incoming(t.handle).ok_or_else(|| {
            D::Error::custom(format!(
                "connection handle {} was not received (a Connection can only come from a parent's args)",
                t.handle
            ))
        })?;
        let stream = Stream::from_owned(owned).map_err(D::Error::custom)?;
        let conn = Connection::new(stream, t.flags);
        conn.set_max_message(t.max_message);
        Ok(conn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Address, Client, Listener};
    use std::io::{Read, Write};
    use std::sync::Arc;
    use std::thread;

    /// A connected pair over TCP: a byte stream, unlike `pipe()`'s ends
    /// where the OS keeps records.
    fn tcp_pair() -> (Connection, Connection) {
        let l = Listener::bind("tcp:127.0.0.1:0".parse().unwrap(), None).unwrap();
        let c = Client::connect(l.address(), None).unwrap();
        (l.accept().unwrap(), c)
    }

    /// Both kinds of duplex pair.
    fn pairs() -> Vec<(Connection, Connection)> {
        vec![pipe(true).unwrap(), tcp_pair()]
    }

    /// A raw TCP socket and our end of it.
    fn raw_tcp() -> (std::net::TcpStream, Connection) {
        let l = Listener::bind("tcp:127.0.0.1:0".parse().unwrap(), None).unwrap();
        let Address::Tcp(a) = *l.address() else {
            unreachable!()
        };
        let raw = std::net::TcpStream::connect(a).unwrap();
        (raw, l.accept().unwrap())
    }

    #[test]
    fn duplex_round_trip_both_ways() {
        for (a, b) in pairs() {
            a.send(&(1u8, "two".to_string())).unwrap();
            assert_eq!(b.recv::<(u8, String)>().unwrap(), (1, "two".into()));
            b.send_bytes(b"back").unwrap();
            assert_eq!(a.recv_bytes().unwrap(), b"back");
            assert!(a.readable() && a.writable() && !a.closed());
        }
    }

    #[test]
    fn header_forms() {
        assert_eq!(Header::new(5).as_bytes(), [0, 0, 0, 5]);
        assert_eq!(
            Header::new(0x7fff_ffff).as_bytes(),
            [0x7f, 0xff, 0xff, 0xff]
        );
        assert_eq!(
            Header::new(0x8000_0000).as_bytes(),
            [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0x80, 0, 0, 0]
        );
    }

    #[test]
    fn direction_flags() {
        let (r, w) = pipe(false).unwrap();
        assert!(r.readable() && !r.writable());
        assert!(!w.readable() && w.writable());
        assert!(matches!(r.send_bytes(b"x"), Err(Error::ReadOnly)));
        assert!(matches!(w.recv_bytes(), Err(Error::WriteOnly)));
        assert!(matches!(
            w.poll(Some(Duration::ZERO)),
            Err(Error::WriteOnly)
        ));
    }

    #[test]
    fn eof_after_queued_messages() {
        for (a, b) in pairs() {
            a.send_bytes(b"1").unwrap();
            a.send_bytes(b"2").unwrap();
            drop(a);
            assert_eq!(b.recv_bytes().unwrap(), b"1");
            assert_eq!(b.recv_bytes().unwrap(), b"2");
            assert!(matches!(b.recv_bytes(), Err(Error::Eof)));
            assert!(matches!(b.recv_bytes(), Err(Error::Eof)));
            // TCP may accept a send or two before the peer's reset comes
            // back: wait for it, boundedly.
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                match b.send_bytes(b"x") {
                    Err(Error::BrokenPipe) => break,
                    Ok(()) if std::time::Instant::now() < deadline => {
                        thread::sleep(Duration::from_millis(1))
                    }
                    other => panic!("{other:?}"),
                }
            }
        }
    }

    #[test]
    fn eof_after_peer_closed_with_unread_data() {
        // Linux reports ECONNRESET once when the closing end had unread
        // data (on a SEQPACKET socket before the queued records): the
        // queued messages come first, then EOF.
        let (a, b) = pipe(true).unwrap();
        b.send_bytes(b"never read").unwrap();
        a.send_bytes(b"queued").unwrap();
        a.send_bytes(b"queued too").unwrap();
        a.close();
        assert_eq!(b.recv_bytes().unwrap(), b"queued");
        assert_eq!(b.recv_bytes().unwrap(), b"queued too");
        assert!(matches!(b.recv_bytes(), Err(Error::Eof)));
    }

    #[test]
    fn close_is_idempotent_and_everything_fails_after() {
        for (a, b) in pairs() {
            a.close();
            a.close();
            assert!(a.closed());
            assert!(matches!(a.send(&1u8), Err(Error::HandleClosed)));
            assert!(matches!(a.recv_bytes(), Err(Error::HandleClosed)));
            assert!(matches!(a.poll(None), Err(Error::HandleClosed)));
            assert!(matches!(a.fileno(), Err(Error::HandleClosed)));
            assert!(matches!(a.wait_source(), Err(Error::HandleClosed)));
            assert_eq!(a.fileno().unwrap_err().to_string(), "handle is closed");
            assert!(
                b.poll(Some(Duration::from_secs(10))).unwrap(),
                "EOF counts as ready"
            );
            assert!(matches!(b.recv_bytes(), Err(Error::Eof)));
        }
    }

    #[test]
    fn recv_bytes_into_short_buffer_consumes() {
        for (a, b) in pairs() {
            let long = vec![7u8; 10_000];
            a.send_bytes(&long).unwrap();
            a.send_bytes(b"ok").unwrap();
            a.send_bytes(&long).unwrap();
            let mut buf = [0u8; 4];
            match b.recv_bytes_into(&mut buf) {
                Err(Error::BufferTooShort(m)) => assert_eq!(m, long),
                other => panic!("{other:?}"),
            }
            assert_eq!(b.recv_bytes_into(&mut buf).unwrap(), 2);
            assert_eq!(&buf[..2], b"ok");
            let mut big = vec![0u8; 20_000];
            assert_eq!(b.recv_bytes_into(&mut big).unwrap(), 10_000);
            assert_eq!(&big[..10_000], &long[..]);
        }
    }

    #[test]
    fn max_length_makes_duplex_write_only_and_reader_closed() {
        for (a, b) in pairs() {
            a.send_bytes(b"too long").unwrap();
            assert!(matches!(b.recv_bytes_max(3), Err(Error::BadMessageLength)));
            assert!(!b.readable() && b.writable() && !b.closed());
            assert!(matches!(b.recv_bytes(), Err(Error::WriteOnly)));
        }
        let (r, w) = pipe(false).unwrap();
        w.send_bytes(b"too long").unwrap();
        assert!(matches!(r.recv_bytes_max(3), Err(Error::BadMessageLength)));
        assert!(r.closed());
    }

    #[test]
    fn configured_maximum_refuses_absurd_headers() {
        for (a, b) in pairs() {
            b.set_max_message(16);
            assert_eq!(b.max_message(), 16);
            a.send_bytes(&[0u8; 17]).unwrap();
            assert!(matches!(
                b.recv_bytes(),
                Err(Error::MessageTooLarge { len: 17, max: 16 })
            ));
            assert!(!b.readable());
        }
    }

    #[test]
    fn lying_header_then_eof() {
        // A record-keeping stream: the header record, a short payload.
        let (a, b) = sys::stream_pair().unwrap();
        let b = Connection::new(b, DUPLEX);
        (&a).write_all(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1, 0, 0, 0, 0])
            .unwrap();
        (&a).write_all(b"some").unwrap();
        drop(a);
        assert!(matches!(b.recv_bytes(), Err(Error::EofDuringMessage)));
        // A byte stream.
        let (mut raw, b) = raw_tcp();
        raw.write_all(b"\xff\xff\xff\xff\x00\x00\x00\x01\x00\x00\x00\x00some")
            .unwrap();
        drop(raw);
        assert!(matches!(b.recv_bytes(), Err(Error::EofDuringMessage)));
    }

    #[test]
    fn broken_records_are_refused() {
        // A record shorter than a header, then one longer than its frame.
        for bad in [&b"\x00\x00"[..], b"\x00\x00\x00\x01toolong"] {
            let (a, b) = sys::stream_pair().unwrap();
            if !a.keeps_records() {
                return;
            }
            let b = Connection::new(b, DUPLEX);
            (&a).write_all(bad).unwrap();
            assert!(matches!(b.recv_bytes(), Err(Error::Io(_))));
            assert!(!b.readable());
        }
    }

    #[test]
    fn a_record_is_never_cut_silently() {
        let (a, b) = sys::stream_pair().unwrap();
        if !a.keeps_records() {
            return;
        }
        (&a).write_all(&[1u8; 100]).unwrap();
        let e = b.read(&mut [0u8; 10]).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
    }

    #[test]
    fn big_message_round_trip_from_threads() {
        for (a, b) in pairs() {
            for len in [4095, 4096, 4097, 200_000, (3 << 20) + 17] {
                let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
                thread::scope(|s| {
                    let t = s.spawn(|| a.send_bytes(&data));
                    assert_eq!(b.recv_bytes().unwrap(), data);
                    t.join().unwrap().unwrap();
                    let t = s.spawn(|| a.send_bytes(&data));
                    let mut into = vec![0u8; len];
                    assert_eq!(b.recv_bytes_into(&mut into).unwrap(), len);
                    assert_eq!(into, data);
                    t.join().unwrap().unwrap();
                });
            }
        }
    }

    #[test]
    fn concurrent_senders_never_interleave() {
        for (a, b) in pairs() {
            let a = Arc::new(a);
            let threads: Vec<_> = (0..4u8)
                .map(|i| {
                    let a = a.clone();
                    thread::spawn(move || {
                        for _ in 0..50 {
                            a.send_bytes(&vec![i; 70_000]).unwrap();
                            a.send(&vec![i; 100]).unwrap();
                        }
                    })
                })
                .collect();
            for _ in 0..400 {
                let m = b.recv_bytes().unwrap();
                let items = if tag::is_typed(&m) {
                    tag::decode::<Vec<u8>>(&m).unwrap()
                } else {
                    assert_eq!(m.len(), 70_000);
                    m
                };
                assert!(items.iter().all(|&x| x == items[0]), "interleaved frames");
            }
            for t in threads {
                t.join().unwrap();
            }
            assert!(!b.poll(Some(Duration::ZERO)).unwrap());
        }
    }

    #[test]
    fn wire_bytes_match_cpython() {
        let (raw, ours) = sys::stream_pair().unwrap();
        let ours = Connection::new(ours, DUPLEX);
        ours.send_bytes(b"hello").unwrap();
        let mut got = [0u8; 9];
        (&raw).read_exact(&mut got).unwrap();
        assert_eq!(got, [0, 0, 0, 5, 0x68, 0x65, 0x6c, 0x6c, 0x6f]);
        let (mut raw, ours) = raw_tcp();
        ours.send_bytes(b"hello").unwrap();
        raw.read_exact(&mut got).unwrap();
        assert_eq!(got, [0, 0, 0, 5, 0x68, 0x65, 0x6c, 0x6c, 0x6f]);
    }

    #[test]
    fn serialising_outside_a_launch_is_an_error() {
        let (a, _b) = pipe(true).unwrap();
        assert!(postcard::to_stdvec(&a).is_err());
        let (c, d) = pipe(true).unwrap();
        match c.send(&d) {
            Err(Error::Encode(m)) => {
                assert!(
                    m.contains("only be sent to a child process in its args"),
                    "{m}"
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn transfer_through_the_handle_table() {
        for (a, b) in pairs() {
            let (bytes, raws) = handles::collect_outgoing(|| postcard::to_stdvec(&b));
            let bytes = bytes.unwrap();
            assert_eq!(raws.len(), 1);
            let owned = sys::duplicate(sys::borrow(&b)).unwrap();
            drop(b);
            let b2: Connection =
                handles::with_incoming(vec![owned], || postcard::from_bytes(&bytes)).unwrap();
            let big = vec![3u8; 300_000];
            thread::scope(|s| {
                s.spawn(|| a.send_bytes(&big).unwrap());
                assert_eq!(b2.recv_bytes().unwrap(), big);
            });
            a.send("across").unwrap();
            assert_eq!(b2.recv::<String>().unwrap(), "across");
            let missing: std::result::Result<Connection, _> =
                handles::with_incoming(Vec::new(), || postcard::from_bytes(&bytes));
            assert!(missing.is_err());
        }
    }

    #[test]
    fn close_keeps_the_handle_value_reserved() {
        let (a, _b) = pipe(true).unwrap();
        if !a.stream.close_keeps_handle() {
            // A Windows pipe has no shutdown: close releases its handle.
            return;
        }
        let raw = a.fileno().unwrap();
        a.close();
        // The descriptor number still belongs to `a`: a new descriptor
        // never reuses it while `a` lives.
        let (c, _d) = pipe(true).unwrap();
        assert_ne!(c.fileno().unwrap(), raw);
    }

    #[test]
    fn poll_never_consumes_and_timeouts() {
        for (a, b) in pairs() {
            assert!(!b.poll(Some(Duration::ZERO)).unwrap());
            assert!(!b.poll(Some(Duration::from_millis(10))).unwrap());
            a.send_bytes(b"").unwrap();
            assert!(b.poll(None).unwrap());
            assert!(b.poll(Some(Duration::ZERO)).unwrap());
            assert_eq!(b.recv_bytes().unwrap(), b"");
            assert!(!b.poll(Some(Duration::ZERO)).unwrap());
        }
    }

    #[test]
    fn connection_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Connection>();
    }
}
