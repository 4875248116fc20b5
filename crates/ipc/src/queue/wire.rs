//! The queue protocol: what holders and the broker say to each other.
//!
//! Every message is one [frame](crate::frame) on an authenticated
//! [`Connection`](crate::Connection); its payload starts with an opcode
//! byte. Integers are big-endian. A list of items is the items one after
//! the other, each a length then its bytes (the typed payload of
//! [`tag::encode`](crate::tag::encode)); a length is 4 bytes, or
//! `FF FF FF FF` and 8 bytes for an item of 4 GiB or more (the frame
//! header's own trick).
//!
//! | message | direction | payload after the opcode | answer |
//! |---|---|---|---|
//! | `HELLO` | holder → broker, first | queue id u64, session u64, role u8 | `HELLO_OK` conn id u64, or `NO_QUEUE` |
//! | `PUT_BATCH` | feeder → broker | batch number u64, items (sealed ones too) | none |
//! | `ACQUIRE` | holder → broker | wanted u32, timeout, acks | `GRANTED` count u32, or `FULL` |
//! | `PUT_WAIT` | holder → broker | wanted u32, timeout, barrier u64, one item | `GRANTED` count u32 (the first place holds the item), or `FULL` (not stored) |
//! | `RELEASE` | holder → broker | count u32 | none |
//! | `GET` | holder → broker | most u32, timeout, barrier u64, acks | `ITEMS` count u32 + items, `ITEM_TAKEN` (as `ITEMS`, count 1), `SEALED_ITEMS` pid u32 + count u32 + (len u64, handle u64) each, or `EMPTY` |
//! | `SETTLE` | holder → broker | taken u32, returned u32 | none |
//! | `QSIZE` | holder → broker | barrier u64, acks | `SIZE` u64 |
//! | `SYNC` | holder or feeder → broker | nothing | `SYNCED`, once everything sent before it on this connection is stored |
//! | `TASK_DONE` | holder → broker | barrier u64 | `DONE`, or `TOO_MANY` when no item is unfinished |
//! | `JOIN` | holder → broker | barrier u64 | `JOINED`, once every item put is done |
//! | `PAGE` | holder → broker | nothing | `ACK_PAGE` (for this connection), or `NO_PAGE` |
//! | `LANE` | holder → broker | nothing | `LANE_AT` + the ring's transfer, or `NO_LANE` |
//!
//! `LANE` asks for the queue's shared-memory ring ([`lane`](super::lane)):
//! `LANE_AT` is followed by the ring's block in its serialised form (a
//! postcard record: kind, layout, nonce, and the broker's pid with its
//! handle values, opened with [`sys::import_handle`](crate::sys::import_handle)),
//! `NO_LANE` says the queue has none and never will.
//!
//! `PAGE` asks for the *ack page* of the ops connection it is sent on:
//! the broker answers `ACK_PAGE`: conn id u64, then where the holder
//! opens the page the broker made for that connection (the broker's pid
//! u32 and its handle value u64, see
//! [`sys::import_handle`](crate::sys::import_handle)), or `NO_PAGE` if it
//! cannot make one. The page's first 8 bytes count the items taken from
//! that connection's deliveries (the holder adds one before each `get`
//! returns); the broker reads it before each message on the ops
//! connection, and when the ops connection ends. Role 2 (an older
//! connection of its own that asked for the page of another) is no
//! longer a role: a `HELLO` naming it is malformed, and the broker closes
//! the connection unanswered.
//!
//! *Sealed items* ([`large`](super::large)): an item of a `PUT_BATCH` may
//! be `FF FF FF FF` then a u64 with its top bit set, [`SEALED`] | its
//! length, and no bytes: its bytes are in a sealed memory object whose
//! descriptor came, one per `sendmsg` with a marker byte, on the session's
//! *handles* connection (role 3, nothing else on it) before the batch.
//! Role 0 with bit `0x80` set (`OPS_SEALED`) is an ops connection whose
//! holder takes sealed items: a `GET` on it may be answered
//! `SEALED_ITEMS`, a run of sealed items from the front of the queue (at
//! least one, at most the `GET`'s *most*): the broker's pid, then each
//! object's length and its descriptor number there (the holder opens each
//! with [`sys::import_handle`](crate::sys::import_handle) while the items
//! are in flight on that connection, checks its seals and size, and reads
//! it). `ITEMS` never holds a sealed item.
//!
//! *Ack on send*: the answer to a `GET` without a timeout that delivers
//! one item (not sealed), written at once on a local stream socket, is
//! `ITEM_TAKEN`: the broker counted the item out of the queue as it wrote
//! it (back to the front if the write failed), so the holder acknowledges
//! nothing (no `SETTLE`); a holder killed before its `get` returned loses
//! that item, as a holder killed between its ack and the return did
//! (docs/reliability.md). A `GET` with a timeout keeps `ITEMS`: a holder
//! that gave up at its deadline drops the connection, and what was
//! written on it comes back.
//!
//! A timeout is microseconds as u64, [`FOREVER`] for none. Acks are a
//! count u32, then that many (conn id u64, taken u32) pairs.
//!
//! `ACQUIRE` and `RELEASE` are a bounded queue's permits: `ACQUIRE` asks
//! for room for up to *wanted* items, waiting as a bounded put does, and
//! `GRANTED` says how many places (at least one) are now reserved for the
//! session named in the connection's `HELLO`; the items then come through
//! that session's feeder stream (which must be open: without one the
//! broker closes the connection). `RELEASE` gives back unused places.
//! `PUT_WAIT` is an `ACQUIRE` that carries the put's item (a put with no
//! permit left, see [`client`](super::client)): once the broker reserves
//! the places it stores the item in the first, at once, so the item
//! reaches a waiting `GET` with no further hop through the producer
//! (docs/architecture.md, "Puts that wait at the broker").
//! (Opcodes 3 and 103, a one-item `PUT` and its `PUT_OK`, are retired.)
//!
//! Decoding never trusts the peer: every read is bounds-checked and a
//! malformed message is [`Malformed`], never a panic.

use std::ops::Range;
use std::time::Duration;

pub(crate) const HELLO: u8 = 1;
pub(crate) const PUT_BATCH: u8 = 2;
pub(crate) const GET: u8 = 4;
pub(crate) const SETTLE: u8 = 5;
pub(crate) const QSIZE: u8 = 6;
pub(crate) const SYNC: u8 = 7;
pub(crate) const ACQUIRE: u8 = 8;
pub(crate) const RELEASE: u8 = 9;
pub(crate) const TASK_DONE: u8 = 10;
pub(crate) const JOIN: u8 = 11;
pub(crate) const PAGE: u8 = 12;
pub(crate) const PUT_WAIT: u8 = 13;
pub(crate) const LANE: u8 = 14;

pub(crate) const HELLO_OK: u8 = 101;
pub(crate) const NO_QUEUE: u8 = 102;
pub(crate) const FULL: u8 = 104;
pub(crate) const ITEMS: u8 = 105;
pub(crate) const EMPTY: u8 = 106;
pub(crate) const SIZE: u8 = 107;
pub(crate) const SYNCED: u8 = 108;
pub(crate) const GRANTED: u8 = 109;
pub(crate) const DONE: u8 = 110;
pub(crate) const TOO_MANY: u8 = 111;
pub(crate) const JOINED: u8 = 112;
pub(crate) const ACK_PAGE: u8 = 113;
pub(crate) const SEALED_ITEMS: u8 = 114;
pub(crate) const NO_PAGE: u8 = 115;
pub(crate) const LANE_AT: u8 = 116;
pub(crate) const NO_LANE: u8 = 117;
/// An `ITEMS` answer of one item that the broker counted out when it
/// wrote it (ack on send): the holder sends no `SETTLE` for it.
pub(crate) const ITEM_TAKEN: u8 = 121;

/// The top bit of a long item length: a sealed item (no bytes follow).
pub(crate) const SEALED: u64 = 1 << 63;

/// The role bit of an ops connection whose holder takes sealed items.
pub(crate) const OPS_SEALED: u8 = 0x80;

/// A timeout of "wait forever".
pub(crate) const FOREVER: u64 = u64::MAX;

/// Bytes before the first item of a `PUT_BATCH`: opcode and batch number.
pub(crate) const BATCH_HEADER: usize = 1 + 8;

/// What a connection is for, said in `HELLO`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// Requests and answers (get, acquire, qsize).
    Ops = 0,
    /// The one-way stream of a process's feeder (`PUT_BATCH` only).
    Feeder = 1,
    /// Carries the descriptors of a session's sealed items (marker bytes
    /// with SCM_RIGHTS), read by the broker's feeder thread.
    Handles = 3,
}

/// An item of a `PUT_BATCH`.
#[derive(Debug, PartialEq, Eq, Clone)]
pub(crate) enum Entry {
    /// Its bytes: a range of the message.
    Bytes(Range<usize>),
    /// A sealed item of this length: its descriptor came on the handles
    /// connection.
    Sealed(u64),
}

/// A message that does not parse.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Malformed(&'static str);

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed queue message: {}", self.0)
    }
}

/// Acks: for each connection, how many of the items it delivered were
/// taken (they leave the queue for good).
pub(crate) type Acks = Vec<(u64, u32)>;

/// A request, as the broker reads it. Items are byte ranges of the
/// message, so the broker can keep the message and share it between them.
#[derive(Debug, PartialEq)]
pub(crate) enum Request {
    Hello {
        queue: u64,
        session: u64,
        role: Role,
        /// An ops connection whose holder takes sealed items.
        sealed: bool,
    },
    PutBatch {
        seq: u64,
        items: Vec<Entry>,
    },
    Acquire {
        wanted: u32,
        timeout: Option<Duration>,
        acks: Acks,
    },
    /// An `ACQUIRE` carrying one item (its range in the message).
    PutWait {
        wanted: u32,
        timeout: Option<Duration>,
        barrier: u64,
        item: Range<usize>,
    },
    Release {
        count: u32,
    },
    Get {
        most: u32,
        timeout: Option<Duration>,
        barrier: u64,
        acks: Acks,
    },
    Settle {
        taken: u32,
        returned: u32,
    },
    Qsize {
        barrier: u64,
        acks: Acks,
    },
    Sync,
    TaskDone {
        barrier: u64,
    },
    Join {
        barrier: u64,
    },
    /// The ack page of this ops connection.
    Page,
    /// `LANE`: the queue's ring, if it has (or can have) one.
    Lane,
}

/// An answer, as a holder reads it (items as byte ranges of the message).
#[derive(Debug, PartialEq)]
pub(crate) enum Reply {
    HelloOk {
        conn: u64,
    },
    AckPage {
        conn: u64,
        pid: u32,
        value: u64,
    },
    NoQueue,
    /// No ack page could be made.
    NoPage,
    Granted(u32),
    Full,
    Items(Vec<Range<usize>>),
    /// `ITEM_TAKEN`: one item, already counted out by the broker.
    Taken(Range<usize>),
    /// Sealed items: the broker's pid, and each one's length and
    /// descriptor number there (where the holder opens it).
    SealedItems {
        pid: u32,
        items: Vec<(u64, u64)>,
    },
    Empty,
    Size(u64),
    Synced,
    Done,
    TooMany,
    Joined,
    /// `LANE_AT`: the ring's transfer (its range in the answer).
    Lane(Range<usize>),
    NoLane,
}

// ---- encoding ----

pub(crate) fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

pub(crate) fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// Appends an item's length.
pub(crate) fn put_len(out: &mut Vec<u8>, len: usize) {
    match u32::try_from(len) {
        Ok(short) if short != u32::MAX => put_u32(out, short),
        _ => {
            put_u32(out, u32::MAX);
            put_u64(out, len as u64);
        }
    }
}

/// Appends one item: its length, then its bytes.
pub(crate) fn put_item(out: &mut Vec<u8>, item: &[u8]) {
    put_len(out, item.len());
    out.extend_from_slice(item);
}

/// Appends a sealed item's entry (its length, flagged; no bytes).
pub(crate) fn put_sealed(out: &mut Vec<u8>, len: u64) {
    put_u32(out, u32::MAX);
    put_u64(out, SEALED | len);
}

/// Appends an item produced by `write` (which appends its bytes to `out`)
/// with its length in front, without copying it. If `write` fails, `out`
/// is left as it was.
pub(crate) fn put_item_with<E>(
    out: &mut Vec<u8>,
    write: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
) -> Result<(), E> {
    let start = out.len();
    put_u32(out, 0);
    if let Err(e) = write(out) {
        out.truncate(start);
        return Err(e);
    }
    let len = out.len() - start - 4;
    match u32::try_from(len) {
        Ok(short) if short != u32::MAX => {
            out[start..start + 4].copy_from_slice(&short.to_be_bytes());
        }
        _ => {
            // 4 GiB or more: make room for the long form (rare enough
            // that moving the item once is fine).
            out[start..start + 4].copy_from_slice(&u32::MAX.to_be_bytes());
            let tail = start + 4;
            out.splice(tail..tail, (len as u64).to_be_bytes());
        }
    }
    Ok(())
}

pub(crate) fn timeout_code(timeout: Option<Duration>) -> u64 {
    match timeout {
        None => FOREVER,
        Some(t) => u64::try_from(t.as_micros())
            .unwrap_or(FOREVER - 1)
            .min(FOREVER - 1),
    }
}

fn put_acks(out: &mut Vec<u8>, acks: &[(u64, u32)]) {
    put_u32(out, acks.len() as u32);
    for (conn, n) in acks {
        put_u64(out, *conn);
        put_u32(out, *n);
    }
}

pub(crate) fn hello(queue: u64, session: u64, role: Role) -> Vec<u8> {
    let mut out = Vec::with_capacity(26);
    out.push(HELLO);
    put_u64(&mut out, queue);
    put_u64(&mut out, session);
    out.push(role as u8);
    out
}

/// The `HELLO` of an ops connection, saying whether its holder takes
/// sealed items.
pub(crate) fn hello_ops(queue: u64, session: u64, sealed: bool) -> Vec<u8> {
    let mut out = hello(queue, session, Role::Ops);
    if sealed {
        if let Some(role) = out.last_mut() {
            *role |= OPS_SEALED;
        }
    }
    out
}

/// An empty `PUT_BATCH` with room for its batch number (see [`set_seq`]).
pub(crate) fn batch_start(out: &mut Vec<u8>) {
    out.clear();
    out.push(PUT_BATCH);
    put_u64(out, 0);
}

/// Writes the batch number into a batch started by [`batch_start`].
pub(crate) fn set_seq(batch: &mut [u8], seq: u64) {
    if let Some(slot) = batch.get_mut(1..BATCH_HEADER) {
        slot.copy_from_slice(&seq.to_be_bytes());
    }
}

pub(crate) fn acquire(wanted: u32, timeout: Option<Duration>, acks: &[(u64, u32)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(17 + 12 * acks.len());
    out.push(ACQUIRE);
    put_u32(&mut out, wanted);
    put_u64(&mut out, timeout_code(timeout));
    put_acks(&mut out, acks);
    out
}

/// A `PUT_WAIT`, its item produced by `write` (as [`put_item_with`]).
pub(crate) fn put_wait<E>(
    wanted: u32,
    timeout: Option<Duration>,
    barrier: u64,
    write: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
) -> Result<Vec<u8>, E> {
    let mut out = Vec::with_capacity(128);
    out.push(PUT_WAIT);
    put_u32(&mut out, wanted);
    put_u64(&mut out, timeout_code(timeout));
    put_u64(&mut out, barrier);
    put_item_with(&mut out, write)?;
    Ok(out)
}

/// The item's bytes in `msg`, a `PUT_WAIT` that [`put_wait`] made in this
/// process: what follows the head and the item's length (4 bytes, or 12
/// in the long form). Not a parse (the message is our own): a put that
/// sends the item another way takes it from here, with no second encode
/// nor copy.
pub(crate) fn put_wait_item(msg: &[u8]) -> &[u8] {
    const HEAD: usize = 1 + 4 + 8 + 8;
    let long = msg.get(HEAD..HEAD + 4) == Some(&u32::MAX.to_be_bytes()[..]);
    msg.get(HEAD + if long { 12 } else { 4 }..).unwrap_or(&[])
}

/// A message of its tag `op` and one `u32`.
fn op_u32(op: u8, value: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(5);
    out.push(op);
    put_u32(&mut out, value);
    out
}

/// A message of its tag `op` and one `u64`.
fn op_u64(op: u8, value: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(9);
    out.push(op);
    put_u64(&mut out, value);
    out
}

pub(crate) fn release(count: u32) -> Vec<u8> {
    op_u32(RELEASE, count)
}

pub(crate) fn granted(count: u32) -> Vec<u8> {
    op_u32(GRANTED, count)
}

pub(crate) fn get(
    most: u32,
    timeout: Option<Duration>,
    barrier: u64,
    acks: &[(u64, u32)],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(25 + 12 * acks.len());
    out.push(GET);
    put_u32(&mut out, most);
    put_u64(&mut out, timeout_code(timeout));
    put_u64(&mut out, barrier);
    put_acks(&mut out, acks);
    out
}

pub(crate) fn settle(taken: u32, returned: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(9);
    out.push(SETTLE);
    put_u32(&mut out, taken);
    put_u32(&mut out, returned);
    out
}

pub(crate) fn qsize(barrier: u64, acks: &[(u64, u32)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(13 + 12 * acks.len());
    out.push(QSIZE);
    put_u64(&mut out, barrier);
    put_acks(&mut out, acks);
    out
}

/// `TASK_DONE` or `JOIN` (`op`), after the feeder's batch `barrier`.
pub(crate) fn with_barrier(op: u8, barrier: u64) -> Vec<u8> {
    op_u64(op, barrier)
}

/// A message of its tag `op`, a `u64`, then a handle's `pid` and
/// `value` (an object the receiver opens from that process).
fn op_u64_handle(op: u8, first: u64, pid: u32, value: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(21);
    out.push(op);
    put_u64(&mut out, first);
    put_u32(&mut out, pid);
    put_u64(&mut out, value);
    out
}

/// A `LANE_AT` answer carrying the ring's `transfer`.
pub(crate) fn lane_at(transfer: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + transfer.len());
    out.push(LANE_AT);
    out.extend_from_slice(transfer);
    out
}

pub(crate) fn ack_page(conn: u64, pid: u32, value: u64) -> Vec<u8> {
    op_u64_handle(ACK_PAGE, conn, pid, value)
}

/// A `SEALED_ITEMS` answer: the broker's `pid`, and each item's length
/// and descriptor number.
pub(crate) fn sealed_items(pid: u32, items: &[(u64, u64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + 16 * items.len());
    out.push(SEALED_ITEMS);
    put_u32(&mut out, pid);
    put_u32(&mut out, u32::try_from(items.len()).unwrap_or(u32::MAX));
    for &(len, value) in items {
        put_u64(&mut out, len);
        put_u64(&mut out, value);
    }
    out
}

pub(crate) fn hello_ok(conn: u64) -> Vec<u8> {
    op_u64(HELLO_OK, conn)
}

pub(crate) fn size(n: u64) -> Vec<u8> {
    op_u64(SIZE, n)
}

/// The start of an `ITEMS` answer for `count` items; append them with
/// [`put_item`].
#[cfg(test)]
pub(crate) fn items_start(count: u32, capacity: usize) -> Vec<u8> {
    let mut out = Vec::new();
    items_start_in(&mut out, count, capacity);
    out
}

/// [`items_start`] in a buffer that is reused (cleared first).
pub(crate) fn items_start_in(out: &mut Vec<u8>, count: u32, capacity: usize) {
    out.clear();
    out.reserve(5 + capacity);
    out.push(ITEMS);
    put_u32(out, count);
}

/// Turns the `ITEMS` answer of one item in `out` (from
/// [`items_start_in`]) into `ITEM_TAKEN`: the same bytes under the other
/// opcode.
pub(crate) fn mark_taken(out: &mut [u8]) {
    if let Some(op) = out.first_mut() {
        *op = ITEM_TAKEN;
    }
}

// ---- decoding ----

/// A bounds-checked reader over a message.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }

    fn left(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn range(&mut self, n: usize) -> Result<Range<usize>, Malformed> {
        if self.left() < n {
            return Err(Malformed("truncated"));
        }
        let r = self.pos..self.pos + n;
        self.pos += n;
        Ok(r)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Malformed> {
        let r = self.range(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(&self.buf[r]);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, Malformed> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, Malformed> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn timeout(&mut self) -> Result<Option<Duration>, Malformed> {
        Ok(match self.u64()? {
            FOREVER => None,
            us => Some(Duration::from_micros(us)),
        })
    }

    /// One item: a length, then that many bytes.
    fn item(&mut self) -> Result<Range<usize>, Malformed> {
        let short = self.u32()?;
        let len = if short == u32::MAX {
            usize::try_from(self.u64()?).map_err(|_| Malformed("item too long"))?
        } else {
            short as usize
        };
        self.range(len)
    }

    /// One entry of a `PUT_BATCH`: an item, or a sealed item's length.
    fn entry(&mut self) -> Result<Entry, Malformed> {
        let short = self.u32()?;
        if short != u32::MAX {
            return Ok(Entry::Bytes(self.range(short as usize)?));
        }
        let long = self.u64()?;
        if long & SEALED != 0 {
            return Ok(Entry::Sealed(long & !SEALED));
        }
        let len = usize::try_from(long).map_err(|_| Malformed("item too long"))?;
        Ok(Entry::Bytes(self.range(len)?))
    }

    /// Entries up to the end of the message.
    fn entries_to_end(&mut self) -> Result<Vec<Entry>, Malformed> {
        let mut items = Vec::new();
        self.entries_into(&mut items)?;
        Ok(items)
    }

    /// Entries up to the end of the message, appended to `items`.
    fn entries_into(&mut self, items: &mut Vec<Entry>) -> Result<(), Malformed> {
        while self.left() > 0 {
            items.push(self.entry()?);
        }
        Ok(())
    }

    /// Items up to the end of the message.
    fn items_to_end(&mut self) -> Result<Vec<Range<usize>>, Malformed> {
        let mut items = Vec::new();
        while self.left() > 0 {
            items.push(self.item()?);
        }
        Ok(items)
    }

    fn acks(&mut self) -> Result<Acks, Malformed> {
        let n = self.u32()? as usize;
        // Each ack is 12 bytes: refuse a count the message cannot hold
        // before allocating for it.
        if n > self.left() / 12 {
            return Err(Malformed("ack count"));
        }
        (0..n).map(|_| Ok((self.u64()?, self.u32()?))).collect()
    }

    fn end(&self) -> Result<(), Malformed> {
        if self.left() == 0 {
            Ok(())
        } else {
            Err(Malformed("trailing bytes"))
        }
    }
}

/// Parses a request (broker side).
pub(crate) fn parse_request(msg: &[u8]) -> Result<Request, Malformed> {
    let mut r = Reader::new(msg);
    let req = match r.u8()? {
        HELLO => {
            let queue = r.u64()?;
            let session = r.u64()?;
            let (role, sealed) = match r.u8()? {
                0 => (Role::Ops, false),
                x if x == OPS_SEALED => (Role::Ops, true),
                1 => (Role::Feeder, false),
                3 => (Role::Handles, false),
                _ => return Err(Malformed("unknown role")),
            };
            Request::Hello {
                queue,
                session,
                role,
                sealed,
            }
        }
        PUT_BATCH => {
            let seq = r.u64()?;
            let items = r.entries_to_end()?;
            return Ok(Request::PutBatch { seq, items });
        }
        ACQUIRE => Request::Acquire {
            wanted: r.u32()?,
            timeout: r.timeout()?,
            acks: r.acks()?,
        },
        PUT_WAIT => Request::PutWait {
            wanted: r.u32()?,
            timeout: r.timeout()?,
            barrier: r.u64()?,
            item: r.item()?,
        },
        RELEASE => Request::Release { count: r.u32()? },
        GET => Request::Get {
            most: r.u32()?,
            timeout: r.timeout()?,
            barrier: r.u64()?,
            acks: r.acks()?,
        },
        SETTLE => Request::Settle {
            taken: r.u32()?,
            returned: r.u32()?,
        },
        QSIZE => Request::Qsize {
            barrier: r.u64()?,
            acks: r.acks()?,
        },
        SYNC => Request::Sync,
        TASK_DONE => Request::TaskDone { barrier: r.u64()? },
        JOIN => Request::Join { barrier: r.u64()? },
        PAGE => Request::Page,
        LANE => Request::Lane,
        _ => return Err(Malformed("unknown request")),
    };
    r.end()?;
    Ok(req)
}

/// Parses a `PUT_BATCH` as [`parse_request`] does, its entries (items'
/// ranges, sealed items' lengths) into `items` (cleared first, its capacity reused: a batch of small
/// items has thousands): the batch number. `None` when `msg` is another
/// request (for [`parse_request`]).
pub(crate) fn parse_batch_into(
    msg: &[u8],
    items: &mut Vec<Entry>,
) -> Option<Result<u64, Malformed>> {
    items.clear();
    let mut r = Reader::new(msg);
    if r.u8() != Ok(PUT_BATCH) {
        return None;
    }
    Some(r.u64().and_then(|seq| r.entries_into(items).map(|()| seq)))
}

/// Parses an answer (holder side).
pub(crate) fn parse_reply(msg: &[u8]) -> Result<Reply, Malformed> {
    let mut r = Reader::new(msg);
    let reply = match r.u8()? {
        HELLO_OK => Reply::HelloOk { conn: r.u64()? },
        ACK_PAGE => Reply::AckPage {
            conn: r.u64()?,
            pid: r.u32()?,
            value: r.u64()?,
        },
        NO_QUEUE => Reply::NoQueue,
        NO_PAGE => Reply::NoPage,
        NO_LANE => Reply::NoLane,
        LANE_AT => return Ok(Reply::Lane(1..msg.len())),
        GRANTED => Reply::Granted(r.u32()?),
        FULL => Reply::Full,
        ITEMS => {
            let count = r.u32()?;
            let items = r.items_to_end()?;
            if items.len() != count as usize || items.is_empty() {
                return Err(Malformed("item count"));
            }
            return Ok(Reply::Items(items));
        }
        ITEM_TAKEN => {
            let count = r.u32()?;
            let mut items = r.items_to_end()?;
            return match (count, items.pop()) {
                (1, Some(item)) if items.is_empty() => Ok(Reply::Taken(item)),
                _ => Err(Malformed("item count")),
            };
        }
        SEALED_ITEMS => {
            let pid = r.u32()?;
            let count = r.u32()?;
            // Each entry is 16 bytes: a count the message cannot hold is
            // refused before anything is allocated for it.
            if count == 0 || count as usize > msg.len() / 16 {
                return Err(Malformed("sealed item count"));
            }
            let items = (0..count)
                .map(|_| Ok((r.u64()?, r.u64()?)))
                .collect::<Result<Vec<_>, Malformed>>()?;
            Reply::SealedItems { pid, items }
        }
        EMPTY => Reply::Empty,
        SIZE => Reply::Size(r.u64()?),
        SYNCED => Reply::Synced,
        DONE => Reply::Done,
        TOO_MANY => Reply::TooMany,
        JOINED => Reply::Joined,
        _ => return Err(Malformed("unknown answer")),
    };
    r.end()?;
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The length of a `PUT_WAIT`'s head (before its item's length).
    const PUT_WAIT_HEAD: usize = 1 + 4 + 8 + 8;

    #[test]
    fn requests_round_trip() {
        let h = hello(7, 9, Role::Feeder);
        assert_eq!(
            parse_request(&h),
            Ok(Request::Hello {
                queue: 7,
                session: 9,
                role: Role::Feeder,
                sealed: false,
            })
        );

        let mut b = Vec::new();
        batch_start(&mut b);
        put_item(&mut b, b"one");
        put_item_with::<()>(&mut b, |o| {
            o.extend_from_slice(b"two!");
            Ok(())
        })
        .unwrap();
        assert_eq!(put_item_with(&mut b, |_| Err("no")), Err("no"));
        set_seq(&mut b, 3);
        assert_eq!(
            parse_request(&b),
            Ok(Request::PutBatch {
                seq: 3,
                items: vec![Entry::Bytes(13..16), Entry::Bytes(20..24)]
            })
        );

        assert_eq!(
            parse_request(&acquire(16, Some(Duration::from_millis(5)), &[(2, 3)])),
            Ok(Request::Acquire {
                wanted: 16,
                timeout: Some(Duration::from_millis(5)),
                acks: vec![(2, 3)]
            })
        );
        let w = put_wait::<()>(2, None, 5, |o| {
            o.extend_from_slice(b"item");
            Ok(())
        })
        .unwrap();
        assert_eq!(
            parse_request(&w),
            Ok(Request::PutWait {
                wanted: 2,
                timeout: None,
                barrier: 5,
                item: PUT_WAIT_HEAD + 4..PUT_WAIT_HEAD + 8
            })
        );
        assert_eq!(put_wait(1, None, 0, |_| Err("no")), Err("no"));
        let m = put_wait(1, None, 0, |out| {
            out.extend_from_slice(b"the item");
            Ok::<_, ()>(())
        })
        .unwrap();
        assert_eq!(put_wait_item(&m), b"the item");
        // One item, nothing after it.
        let mut two = w.clone();
        two.push(0);
        assert!(parse_request(&two).is_err());
        assert!(parse_request(&w[..w.len() - 1]).is_err());
        assert_eq!(
            parse_request(&release(7)),
            Ok(Request::Release { count: 7 })
        );

        let g = get(64, None, 2, &[(1, 5), (4, 1)]);
        assert_eq!(
            parse_request(&g),
            Ok(Request::Get {
                most: 64,
                timeout: None,
                barrier: 2,
                acks: vec![(1, 5), (4, 1)]
            })
        );
        assert_eq!(
            parse_request(&settle(2, 3)),
            Ok(Request::Settle {
                taken: 2,
                returned: 3
            })
        );
        assert_eq!(
            parse_request(&qsize(0, &[])),
            Ok(Request::Qsize {
                barrier: 0,
                acks: vec![]
            })
        );
    }

    #[test]
    fn replies_round_trip() {
        assert_eq!(parse_reply(&hello_ok(5)), Ok(Reply::HelloOk { conn: 5 }));
        assert_eq!(
            parse_reply(&ack_page(5, 77, 9)),
            Ok(Reply::AckPage {
                conn: 5,
                pid: 77,
                value: 9
            })
        );
        assert!(parse_reply(&ack_page(5, 77, 9)[..20]).is_err());
        assert_eq!(parse_reply(&[NO_QUEUE]), Ok(Reply::NoQueue));
        assert_eq!(parse_reply(&[NO_PAGE]), Ok(Reply::NoPage));
        assert_eq!(parse_reply(&[NO_LANE]), Ok(Reply::NoLane));
        assert_eq!(parse_reply(&lane_at(b"abc")), Ok(Reply::Lane(1..4)));
        assert_eq!(parse_request(&[LANE]), Ok(Request::Lane));
        assert!(parse_request(&[LANE, 0]).is_err(), "LANE carries nothing");
        assert_eq!(parse_request(&[PAGE]), Ok(Request::Page));
        assert!(parse_request(&[PAGE, 0]).is_err(), "PAGE has no payload");
        assert_eq!(parse_reply(&granted(4)), Ok(Reply::Granted(4)));
        assert_eq!(parse_reply(&[FULL]), Ok(Reply::Full));
        assert_eq!(parse_reply(&[EMPTY]), Ok(Reply::Empty));
        assert_eq!(parse_reply(&size(9)), Ok(Reply::Size(9)));
        assert_eq!(parse_reply(&[SYNCED]), Ok(Reply::Synced));
        assert_eq!(parse_request(&[SYNC]), Ok(Request::Sync));
        let mut m = items_start(2, 0);
        put_item(&mut m, b"");
        put_item(&mut m, b"ab");
        assert_eq!(parse_reply(&m), Ok(Reply::Items(vec![9..9, 13..15])));
    }

    #[test]
    fn malformed_messages_are_errors() {
        assert!(parse_request(&[]).is_err());
        assert!(parse_request(&[99]).is_err());
        assert!(parse_request(&[GET, 0, 0]).is_err());
        let mut g = get(1, None, 0, &[]);
        g.push(0);
        assert_eq!(parse_request(&g), Err(Malformed("trailing bytes")));
        // An ack count far beyond what the message holds.
        let mut q = vec![QSIZE];
        put_u64(&mut q, 0);
        put_u32(&mut q, u32::MAX);
        assert_eq!(parse_request(&q), Err(Malformed("ack count")));
        // An item longer than the message.
        let mut b = Vec::new();
        batch_start(&mut b);
        put_u32(&mut b, 100);
        b.extend_from_slice(b"short");
        assert!(parse_request(&b).is_err());
        // A count that does not match.
        let mut m = items_start(3, 0);
        put_item(&mut m, b"a");
        assert!(parse_reply(&m).is_err());
        assert!(parse_reply(&items_start(0, 0)).is_err());
    }

    // Role 2 (the ack page's old connection of its own) is no role: its
    // `HELLO` is malformed, with or without the conn id it carried.
    #[test]
    fn a_role_2_hello_is_malformed() {
        let mut old = hello(7, 9, Role::Ops);
        if let Some(role) = old.last_mut() {
            *role = 2;
        }
        assert!(parse_request(&old).is_err());
        old.extend_from_slice(&12u64.to_be_bytes());
        assert!(parse_request(&old).is_err());
    }

    #[test]
    fn sealed_entries_and_answers() {
        let mut b = Vec::new();
        batch_start(&mut b);
        put_item(&mut b, b"small");
        put_sealed(&mut b, 1 << 20);
        put_item(&mut b, &[0xff; 6]);
        assert_eq!(
            parse_request(&b),
            Ok(Request::PutBatch {
                seq: 0,
                items: vec![
                    Entry::Bytes(13..18),
                    Entry::Sealed(1 << 20),
                    Entry::Bytes(34..40)
                ]
            })
        );
        // A sealed entry is never an item of an answer.
        let mut m = items_start(1, 0);
        put_sealed(&mut m, 5);
        assert!(parse_reply(&m).is_err());
        assert_eq!(
            parse_reply(&sealed_items(7, &[(9, 3)])),
            Ok(Reply::SealedItems {
                pid: 7,
                items: vec![(9, 3)]
            })
        );
        let two = sealed_items(7, &[(9, 3), (1 << 20, 4)]);
        assert_eq!(
            parse_reply(&two),
            Ok(Reply::SealedItems {
                pid: 7,
                items: vec![(9, 3), (1 << 20, 4)]
            })
        );
        // Cut short, one entry too many or too few, none, or a count no
        // message could hold: refused.
        assert!(parse_reply(&two[..two.len() - 1]).is_err());
        let mut long = two.clone();
        long.extend_from_slice(&[0; 16]);
        assert!(parse_reply(&long).is_err());
        assert!(parse_reply(&sealed_items(7, &[])).is_err());
        let mut huge = sealed_items(7, &[(9, 3)]);
        huge[5..9].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(parse_reply(&huge).is_err());
        assert_eq!(
            parse_request(&hello_ops(1, 2, true)),
            Ok(Request::Hello {
                queue: 1,
                session: 2,
                role: Role::Ops,
                sealed: true,
            })
        );
        assert_eq!(hello_ops(1, 2, false), hello(1, 2, Role::Ops));
        let mut bad = hello(1, 2, Role::Ops);
        bad[17] = 0x81;
        assert!(parse_request(&bad).is_err());
    }

    #[test]
    fn joinable_requests_round_trip() {
        assert_eq!(
            parse_request(&with_barrier(TASK_DONE, 5)),
            Ok(Request::TaskDone { barrier: 5 })
        );
        assert_eq!(
            parse_request(&with_barrier(JOIN, 0)),
            Ok(Request::Join { barrier: 0 })
        );
        assert_eq!(parse_reply(&[DONE]), Ok(Reply::Done));
        assert_eq!(parse_reply(&[TOO_MANY]), Ok(Reply::TooMany));
        assert_eq!(parse_reply(&[JOINED]), Ok(Reply::Joined));
        assert!(parse_request(&[TASK_DONE, 1]).is_err());
    }

    #[test]
    fn long_lengths() {
        let mut out = Vec::new();
        put_len(&mut out, (u32::MAX - 1) as usize);
        assert_eq!(out, (u32::MAX - 1).to_be_bytes());
        if let Ok(big) = usize::try_from(u64::from(u32::MAX)) {
            out.clear();
            put_len(&mut out, big);
            assert_eq!(&out[..4], &[0xff; 4]);
            assert_eq!(&out[4..], &u64::from(u32::MAX).to_be_bytes());
        }
        assert_eq!(timeout_code(None), FOREVER);
        assert_eq!(timeout_code(Some(Duration::MAX)), FOREVER - 1);
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..96)) {
            let _ = parse_request(&data);
            let _ = parse_reply(&data);
        }

        // The broker's reusing parser reads a batch exactly as
        // `parse_request` does, refuses what it refuses, and leaves other
        // requests to it.
        #[test]
        fn the_batch_parser_agrees_with_parse_request(
            mut data in proptest::collection::vec(any::<u8>(), 0..96),
            batch in any::<bool>(),
        ) {
            if batch && !data.is_empty() {
                data[0] = PUT_BATCH;
            }
            let mut items = vec![Entry::Bytes(0..1), Entry::Sealed(3)];
            match (parse_batch_into(&data, &mut items), parse_request(&data)) {
                (None, Ok(Request::PutBatch { .. })) => prop_assert!(false, "batch not seen"),
                (None, _) => prop_assert!(data.first() != Some(&PUT_BATCH)),
                (Some(Ok(seq)), Ok(Request::PutBatch { seq: s, items: want })) => {
                    prop_assert_eq!(seq, s);
                    prop_assert_eq!(items, want);
                }
                (Some(Err(_)), Err(_)) => {}
                (mine, theirs) => prop_assert!(false, "{:?} vs {:?}", mine, theirs),
            }
        }

        #[test]
        fn batches_round_trip(items in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..20)) {
            let mut b = Vec::new();
            batch_start(&mut b);
            for it in &items {
                put_item(&mut b, it);
            }
            set_seq(&mut b, 11);
            let mut reused = vec![Entry::Bytes(5..9), Entry::Sealed(2)];
            prop_assert_eq!(parse_batch_into(&b, &mut reused), Some(Ok(11)));
            match parse_request(&b) {
                Ok(Request::PutBatch { seq, items: got }) => {
                    prop_assert_eq!(seq, 11);
                    prop_assert_eq!(&reused, &got);
                    let got: Vec<&[u8]> = got
                        .into_iter()
                        .map(|e| match e {
                            Entry::Bytes(r) => &b[r],
                            Entry::Sealed(_) => &[][..],
                        })
                        .collect();
                    let want: Vec<&[u8]> = items.iter().map(|v| &v[..]).collect();
                    prop_assert_eq!(got, want);
                }
                other => prop_assert!(false, "{:?}", other),
            }
        }
    }
}
