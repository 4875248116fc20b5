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
//!
//! Receiving reads a frame's header with one read of up to [`AHEAD`]
//! bytes, so a small message costs one system call; bytes of later
//! frames that came with it stay in the connection (its *read-ahead*),
//! count for `poll` and `wait`, and travel with the connection to a
//! child. Payload bytes beyond the read-ahead are read exactly, never
//! past the frame.

use crate::util::lock::lock;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Mutex;
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

/// A frame's header is read with one read of up to this many bytes: a
/// small message arrives with its header in one system call.
pub(crate) const AHEAD: usize = 4096;

/// Bytes read from the stream but not yet delivered: `buf[pos..]`, the
/// start of the next frame(s). At most [`AHEAD`] bytes.
#[derive(Default)]
struct ReadAhead {
    buf: Vec<u8>,
    pos: usize,
}

impl ReadAhead {
    fn available(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    fn consume(&mut self, n: usize) {
        self.pos += n;
        if self.pos >= self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
    }
}

/// What the receive lock guards.
#[derive(Default)]
struct Inbox {
    /// The typed-receive buffer, kept between messages.
    scratch: Vec<u8>,
    ahead: ReadAhead,
}

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
    /// Held while a frame is read; keeps the typed-receive buffer and
    /// the read-ahead.
    recv_lock: Mutex<Inbox>,
    /// How many bytes the read-ahead holds (read without the lock by
    /// `poll` and `wait`).
    buffered: AtomicUsize,
}

/// Creates a pipe: two connected ends (CPython's `Pipe(duplex)`).
///
/// `pipe(true)` gives two ends that both send and receive; `pipe(false)`
/// gives `(reader, writer)`: the first only receives, the second only
/// sends, and using either the other way is [`Error::WriteOnly`] /
/// [`Error::ReadOnly`].
///
/// Both kinds are a stream socketpair on Unix (a byte-mode named pipe on
/// Windows), so either end can be passed to a child and waited on, and
/// its descriptor reads as CPython's `Pipe()` does: a Python process
/// holding it receives with `multiprocessing.connection.Connection(fd)`
/// (the frames are CPython's: `docs/protocol.md`).
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
            recv_lock: Mutex::new(Inbox::default()),
            buffered: AtomicUsize::new(0),
        }
    }

    /// The OS stream (for the `sys` trait impls).
    pub(crate) fn stream(&self) -> &Stream {
        &self.stream
    }
}

// `AsFd`/`AsRawFd` on Unix, `AsHandle`/`AsRawHandle` on Windows.
crate::__impl_as_handle!(Connection, |c| c.stream().handle());

impl Connection {
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
    /// anything is written: an encoding error writes nothing. A byte
    /// sequence itself (`Vec<u8>`, `[u8]`, `String`, `str`, `ByteBuf`,
    /// `Bytes`) is written straight from the caller's buffer, at bytes
    /// speed (docs/protocol.md, "Byte sequences"); for `Vec<u8>` fields
    /// inside a struct, `#[serde(with = "serde_bytes")]` keeps them fast.
    pub fn send<T: Serialize + ?Sized>(&self, value: &T) -> Result<()> {
        self.check_writable()?;
        let mut scratch = lock(&self.send_lock);
        scratch.clear();
        if let Some(bytes) = tag::bulk::as_bytes(value) {
            // A byte sequence: frame header, tag and varint from the
            // scratch, the caller's bytes as they are, in one gathered
            // write (the same bytes postcard would produce). The scratch
            // starts with room for the longest frame header, filled in
            // once the tag's length is known.
            const ROOM: usize = 12;
            scratch.resize(ROOM, 0);
            tag::bulk_tag::<T>(bytes, &mut scratch);
            let header = Header::new(scratch.len() - ROOM + bytes.len());
            let start = ROOM - header.as_bytes().len();
            scratch[start..ROOM].copy_from_slice(header.as_bytes());
            self.check_open()?;
            return self
                .stream
                .write_frame(&scratch[start..], bytes)
                .map_err(|e| self.io_error(Error::from(e)));
        }
        tag::encode(value, &mut scratch)?;
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
        let mut inbox = lock(&self.recv_lock);
        self.check_readable()?;
        let Inbox { scratch, ahead } = &mut *inbox;
        let read = self.read_head(ahead).and_then(|len| self.admit(len, None));
        let result = read.and_then(|len| {
            if let Some(shape) = tag::bulk::shape_of::<T>() {
                if let Some(offset) = self.bulk_offset::<T>(ahead, len)? {
                    // A byte sequence: its bytes go straight into the
                    // value's own buffer, with no decode copy.
                    ahead.consume(offset);
                    let mut bytes = Vec::with_capacity((len - offset).min(READ_CHUNK));
                    self.read_payload_into(ahead, &mut bytes, len - offset)?;
                    return tag::bulk::into_value(shape, bytes).map_err(Error::decode);
                }
            }
            scratch.clear();
            self.read_payload_into(ahead, scratch, len)?;
            tag::decode(scratch)
        });
        self.note_buffered(ahead);
        if scratch.capacity() > KEEP_SCRATCH {
            *scratch = Vec::new();
        }
        result
    }

    /// Whether the next `len`-byte payload is a well-formed byte-sequence
    /// `T` (its tag, then a canonical varint announcing exactly the rest):
    /// `Some(offset of the bytes)`. Reads only as far as the tag and varint
    /// (into the read-ahead, consuming nothing), so on `None` the general
    /// path reads and judges the whole payload. The caller holds the
    /// receive lock.
    fn bulk_offset<T>(&self, ahead: &mut ReadAhead, len: usize) -> Result<Option<usize>> {
        let want = len.min(tag::MAX_BULK_PREFIX);
        while ahead.available().len() < want {
            if self.fill(ahead)? == 0 {
                return Err(self.io_error(Error::EofDuringMessage));
            }
        }
        Ok(tag::bulk_body_offset::<T>(&ahead.available()[..want], len))
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
        let mut inbox = lock(&self.recv_lock);
        self.check_readable()?;
        let ahead = &mut inbox.ahead;
        let result = self.recv_into(ahead, buf);
        self.note_buffered(ahead);
        result
    }

    fn recv_into(&self, ahead: &mut ReadAhead, buf: &mut [u8]) -> Result<usize> {
        let len = self.read_head(ahead)?;
        let len = self.admit(len, None)?;
        if len > buf.len() {
            let mut whole = Vec::with_capacity(len.min(READ_CHUNK));
            self.read_payload_into(ahead, &mut whole, len)?;
            return Err(Error::BufferTooShort(whole));
        }
        let early = ahead.available().len().min(len);
        buf[..early].copy_from_slice(&ahead.available()[..early]);
        ahead.consume(early);
        let mut filled = early;
        while filled < len {
            match self.stream.read(&mut buf[filled..len]) {
                Ok(0) => return Err(self.io_error(Error::EofDuringMessage)),
                Ok(n) => filled += n,
                Err(e) => return Err(self.io_error(Error::from(e))),
            }
        }
        Ok(len)
    }

    /// Like [`recv_bytes`](Self::recv_bytes), into `buf` (cleared first,
    /// its capacity reused: fresh memory costs a page fault per 4 KiB, as
    /// much as the copy). On an error `buf` holds nothing meaningful.
    pub(crate) fn recv_bytes_reusing(&self, buf: &mut Vec<u8>) -> Result<()> {
        buf.clear();
        self.check_readable()?;
        let mut inbox = lock(&self.recv_lock);
        self.check_readable()?;
        let ahead = &mut inbox.ahead;
        let result = self.read_head(ahead).and_then(|len| {
            let len = self.admit(len, None)?;
            self.read_payload_into(ahead, buf, len)
        });
        self.note_buffered(ahead);
        result
    }

    fn recv_message(&self, maxlength: Option<usize>) -> Result<Vec<u8>> {
        self.check_readable()?;
        let mut inbox = lock(&self.recv_lock);
        self.check_readable()?;
        let ahead = &mut inbox.ahead;
        let result = self.read_head(ahead).and_then(|len| {
            let len = self.admit(len, maxlength)?;
            let mut buf = Vec::with_capacity(len.min(READ_CHUNK));
            self.read_payload_into(ahead, &mut buf, len)?;
            Ok(buf)
        });
        self.note_buffered(ahead);
        result
    }

    /// Publishes how much the read-ahead holds (for `poll` and `wait`).
    fn note_buffered(&self, ahead: &ReadAhead) {
        self.buffered
            .store(ahead.available().len(), Ordering::Release);
    }

    /// Reads once from the stream into the read-ahead (at most [`AHEAD`]
    /// bytes in all); `Ok(0)` is end of file.
    fn fill(&self, ahead: &mut ReadAhead) -> Result<usize> {
        if ahead.pos > 0 {
            ahead.buf.drain(..ahead.pos);
            ahead.pos = 0;
        }
        let room = AHEAD - ahead.buf.len();
        if ahead.buf.capacity() < AHEAD {
            ahead.buf.reserve_exact(room);
        }
        self.stream
            .read_to_spare(&mut ahead.buf, room)
            .map_err(|e| self.io_error(Error::from(e)))
    }

    /// Reads the next frame's header (4 bytes, or 12 for the long form)
    /// and returns the payload length; what arrived beyond the header
    /// stays in `ahead`. A clean end of file is [`Error::Eof`], one inside
    /// the header [`Error::EofDuringMessage`]. The caller holds the
    /// receive lock.
    fn read_head(&self, ahead: &mut ReadAhead) -> Result<u64> {
        loop {
            let got = ahead.available();
            match got {
                [0xff, 0xff, 0xff, 0xff, long @ ..] if long.len() >= 8 => {
                    let mut be = [0u8; 8];
                    be.copy_from_slice(&long[..8]);
                    ahead.consume(12);
                    return Ok(u64::from_be_bytes(be));
                }
                [a, b, c, d, ..] if [*a, *b, *c, *d] != [0xff; 4] => {
                    let len = u32::from_be_bytes([*a, *b, *c, *d]);
                    ahead.consume(4);
                    return Ok(u64::from(len));
                }
                _ => {}
            }
            let partial = !got.is_empty();
            if self.fill(ahead)? == 0 {
                return Err(self.io_error(if partial {
                    Error::EofDuringMessage
                } else {
                    Error::Eof
                }));
            }
        }
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

    /// Reads a payload of `len` bytes into the empty `buf` (whose
    /// capacity may be reused): first what the read-ahead holds, then
    /// exactly the rest from the stream, never a byte of the next frame.
    /// The buffer grows only as bytes arrive: never beyond
    /// `max(2 × received, received + 1 MiB)` nor `len`, so a header
    /// announcing gigabytes costs nothing until they come. No byte is
    /// zeroed first.
    fn read_payload_into(
        &self,
        ahead: &mut ReadAhead,
        buf: &mut Vec<u8>,
        len: usize,
    ) -> Result<()> {
        debug_assert!(buf.is_empty());
        let early = ahead.available().len().min(len);
        buf.extend_from_slice(&ahead.available()[..early]);
        ahead.consume(early);
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
        if self.buffered.load(Ordering::Acquire) > 0 {
            return Ok(true);
        }
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
    ///
    /// The descriptor carries CPython's frames as a byte stream (a
    /// Python process reads it with `multiprocessing.connection.
    /// Connection(fd)`). A receive may read later messages ahead into this
    /// `Connection`: read the descriptor raw only before this end has
    /// received (passing the `Connection` itself to a child takes them
    /// along).
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

/// Whether a read on `conn` saw its peer end with bytes written here
/// still unread by the peer (Linux; never known elsewhere): what was sent
/// last never reached the peer's code. The pool's rule that a task its
/// worker never read never started (`__private::connection`).
pub fn ended_unread(conn: &Connection) -> bool {
    conn.stream.ended_unread()
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

    fn ready_now(&self) -> bool {
        self.readable() && self.buffered.load(Ordering::Acquire) > 0
    }
}

const NOT_IN_ARGS: &str = "a Connection can only be sent to a child process in its args";
const SEND_CLOSED: &str = "cannot send a closed Connection: handle is closed";
const RECEIVING: &str =
    "a Connection cannot be sent to a child while another thread receives on it";

/// A refusal to serialise a `Connection`, saying `why` (mproc's encoders
/// keep a custom error's text: see `crate::encode`).
fn refuse<E: serde::ser::Error>(why: &'static str) -> E {
    E::custom(why)
}

/// A connection in a launch's arguments: an index into the handle table.
#[derive(Serialize, Deserialize)]
struct Transfer {
    handle: u32,
    flags: u8,
    max_message: u64,
    /// The read-ahead: bytes of the next frames already read from the
    /// stream (at most [`AHEAD`]).
    pending: Vec<u8>,
}

impl Serialize for Connection {
    /// Registers the OS handle for transfer to the child being launched;
    /// an error anywhere else (a connection crosses processes only in a
    /// target's arguments).
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        if self.closed() {
            return Err(refuse(SEND_CLOSED));
        }
        // The read-ahead goes with the handle, so the child reads every
        // message this end has not delivered.
        let pending = match self.recv_lock.try_lock() {
            Ok(inbox) => inbox.ahead.available().to_vec(),
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner().ahead.available().to_vec(),
            Err(std::sync::TryLockError::WouldBlock) => return Err(refuse(RECEIVING)),
        };
        let handle = handles::register_outgoing(sys::raw_of(self.stream.handle()))
            .ok_or_else(|| refuse(NOT_IN_ARGS))?;
        Transfer {
            handle,
            flags: self.bits() & (READABLE | WRITABLE),
            max_message: self.max_message(),
            pending,
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
        if t.pending.len() > AHEAD {
            return Err(D::Error::custom("a connection's read-ahead is too long"));
        }
        let conn = Connection::new(stream, t.flags);
        conn.set_max_message(t.max_message);
        conn.buffered.store(t.pending.len(), Ordering::Release);
        lock(&conn.recv_lock).ahead.buf = t.pending;
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

    /// A connected pair over TCP (a `pipe()` end is a Unix stream socket
    /// or, on Windows, a named pipe).
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
        // data: the queued messages come first, then EOF.
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
        // A pipe end: the long header, a short payload.
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

    /// A pipe end is a byte stream (CPython's `Pipe()`): frames that a
    /// raw writer splits anywhere — the header a byte at a time — are read
    /// whole.
    #[test]
    fn frames_split_anywhere_are_read_whole() {
        let (a, b) = sys::stream_pair().unwrap();
        let b = Connection::new(b, DUPLEX);
        let long = vec![9u8; 5000];
        let mut wire = Vec::new();
        for m in [&b"hello"[..], b"", &long, b"end"] {
            frame::write_frame(&mut wire, m).unwrap();
        }
        thread::scope(|s| {
            s.spawn(|| {
                for piece in wire.chunks(1).take(12).chain(wire[12..].chunks(777)) {
                    (&a).write_all(piece).unwrap();
                }
            });
            assert_eq!(b.recv_bytes().unwrap(), b"hello");
            assert_eq!(b.recv_bytes().unwrap(), b"");
            assert_eq!(b.recv_bytes().unwrap(), long);
            assert_eq!(b.recv_bytes().unwrap(), b"end");
        });
    }

    /// Small frames sent back to back arrive in one read: what came after
    /// the delivered frame stays in the read-ahead, where `poll` and
    /// `wait` see it (the socket itself is empty) and a transfer to a
    /// child takes it along.
    #[test]
    fn the_read_ahead_counts_for_poll_and_wait_and_travels() {
        for (a, b) in pairs() {
            a.send_bytes(b"first").unwrap();
            a.send(&7u32).unwrap();
            a.send_bytes(&[5u8; 3000]).unwrap();
            // All three are queued before the first receive.
            while b.stream.poll_readable(Some(Duration::ZERO)).unwrap() {
                let mut inbox = lock(&b.recv_lock);
                if b.fill(&mut inbox.ahead).unwrap() == 0 {
                    break;
                }
                b.note_buffered(&inbox.ahead);
            }
            assert_eq!(b.recv_bytes().unwrap(), b"first");
            assert!(!b.stream.poll_readable(Some(Duration::ZERO)).unwrap());
            assert!(b.poll(Some(Duration::ZERO)).unwrap());
            assert_eq!(
                crate::wait(&[&a, &b], Some(Duration::from_secs(10))).unwrap(),
                [1]
            );
            let (bytes, raws) = handles::collect_outgoing(|| postcard::to_stdvec(&b));
            let bytes = bytes.unwrap();
            assert_eq!(raws.len(), 1);
            let owned = sys::duplicate(sys::borrow(&b)).unwrap();
            drop(b);
            let b2: Connection =
                handles::with_incoming(vec![owned], || postcard::from_bytes(&bytes)).unwrap();
            assert!(b2.poll(Some(Duration::ZERO)).unwrap());
            assert_eq!(b2.recv::<u32>().unwrap(), 7);
            assert_eq!(b2.recv_bytes().unwrap(), [5u8; 3000]);
            assert!(!b2.poll(Some(Duration::ZERO)).unwrap());
            drop(a);
            assert!(matches!(b2.recv_bytes(), Err(Error::Eof)));
        }
    }

    /// A connection another thread is receiving on cannot be handed to a
    /// child (its read-ahead is in flux): the transfer is refused, saying
    /// why, and the receiving thread is undisturbed.
    #[test]
    fn a_transfer_during_a_receive_is_refused() {
        let (a, b) = pipe(true).unwrap();
        thread::scope(|s| {
            let receiver = s.spawn(|| b.recv_bytes());
            // The receiver holds the lock once it blocks in the read.
            while b.recv_lock.try_lock().is_ok() {
                thread::yield_now();
            }
            let (bytes, _raws) = handles::collect_outgoing(|| crate::error::to_vec(&b));
            assert_eq!(bytes.unwrap_err().to_string(), RECEIVING);
            a.send_bytes(b"still mine").unwrap();
            assert_eq!(receiver.join().unwrap().unwrap(), b"still mine");
        });
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
                    m.to_string()
                        .contains("only be sent to a child process in its args"),
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
