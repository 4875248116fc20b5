//! The broker's state: the items of one queue, who holds which delivered
//! item, and the waits (`get` on an empty queue, `put` on a full one).
//!
//! [`Core`] is the plain state machine (no locks, no I/O: unit-tested
//! below); [`Shared`] puts it under a mutex with the condition variables
//! that blocking `get`s and `put`s wait on. The owner's own handles call
//! [`Shared`] directly; the broker's connection threads call it for the
//! other processes.
//!
//! Items are encoded bytes ([`Item`]): a range of a buffer shared with the
//! other items of the batch they came in, so a batch of small items costs
//! one allocation, not one each.
//!
//! An item handed to a holder in another process stays *in flight* — still
//! counted by `qsize`, kept by the broker — until that holder says it was
//! taken (an ack). When the connection it went out on closes first (the
//! holder died, or gave it back), it returns to the front of the queue, in
//! order. A connection's in-flight items are taken in the order they were
//! delivered, so an ack is a count.
//!
//! A bounded queue also counts *reservations*: room granted to a producer
//! in another process (its permits, CPython's semaphore) that it has not
//! filled yet. Its items then come through its feeder without a room check
//! (the room was set aside); what it does not use it gives back, and when
//! its feeder stream ends (it died, or let go of the queue) whatever is
//! still reserved is released, after every batch that arrived is stored.

use crate::queue::lane::{self, Lane};
use crate::queue::large::Blob;
use crate::queue::wire;
use crate::util::lock::{lock, wait, wait_timeout};
use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use crate::queue::parked::{self, Given, Parked, Settled, Want};

/// A buffer this large (bytes of capacity) goes back to the OS when
/// freed (`munmap`): its items are dropped outside the queue's lock.
const SLOW_TO_FREE: usize = 128 << 10;

/// One encoded item: bytes of a shared buffer, or a sealed object
/// ([`large`](super::large)) whose descriptor the broker holds.
#[derive(Clone, Debug)]
pub(crate) struct Item {
    buf: Arc<Vec<u8>>,
    range: Range<usize>,
    blob: Option<Arc<Blob>>,
}

impl Item {
    /// An item made of a whole buffer.
    pub(crate) fn whole(buf: Vec<u8>) -> Item {
        let range = 0..buf.len();
        Item {
            buf: Arc::new(buf),
            range,
            blob: None,
        }
    }

    /// A sealed item: its bytes stay in the object.
    pub(crate) fn sealed(blob: Blob) -> Item {
        Item {
            buf: Arc::default(),
            range: 0..0,
            blob: Some(Arc::new(blob)),
        }
    }

    /// The sealed object, for a sealed item.
    pub(crate) fn blob(&self) -> Option<&Blob> {
        self.blob.as_deref()
    }

    /// The item's bytes, read from its object if it is sealed.
    pub(crate) fn content(&self) -> Cow<'_, [u8]> {
        super::large::bytes_of(self.bytes(), self.blob())
    }

    /// An item made of `range` of a shared buffer. The range must lie in
    /// `buf` (the wire parser guarantees it); an out-of-bounds range is
    /// cut to the buffer rather than trusted.
    pub(crate) fn part(buf: &Arc<Vec<u8>>, range: Range<usize>) -> Item {
        let end = range.end.min(buf.len());
        let start = range.start.min(end);
        Item {
            buf: buf.clone(),
            range: start..end,
            blob: None,
        }
    }

    /// Whether dropping the item may be slow enough to keep out of a
    /// lock: a sealed item closes its descriptor and tells its producer;
    /// a large buffer goes back to the OS.
    fn slow_to_drop(&self) -> bool {
        self.blob.is_some() || self.buf.capacity() >= SLOW_TO_FREE
    }

    /// The bytes of an item kept inline (none for a sealed item: see
    /// [`content`](Self::content)).
    pub(crate) fn bytes(&self) -> &[u8] {
        // In bounds by construction.
        self.buf.get(self.range.clone()).unwrap_or(&[])
    }

    pub(crate) fn len(&self) -> usize {
        match &self.blob {
            Some(b) => b.len(),
            None => self.range.len(),
        }
    }

    /// Where the item's 4-byte length starts in its buffer, if the bytes
    /// before it are exactly that (as in the feeder batch it came in).
    fn prefixed_start(&self) -> Option<usize> {
        if self.blob.is_some() {
            return None;
        }
        let start = self.range.start.checked_sub(4)?;
        let len = u32::try_from(self.range.len())
            .ok()
            .filter(|&l| l != u32::MAX)?;
        (self.buf.get(start..self.range.start)? == len.to_be_bytes()).then_some(start)
    }
}

/// Appends `items` as the wire lists them (each its length, then its
/// bytes: [`wire::put_item`]). Items that follow each other in the batch
/// they came in, each with its length in front, are already in that form
/// there: each such run is copied at once, not item by item. A sealed
/// item is never part of a run (its entry in the batch holds no bytes):
/// its bytes are read from its object.
pub(crate) fn put_items(out: &mut Vec<u8>, items: &[Item]) {
    let mut i = 0;
    while i < items.len() {
        let first = &items[i];
        let mut next = i + 1;
        if first.blob.is_some() {
            wire::put_item(out, &first.content());
            i = next;
            continue;
        }
        if let Some(start) = first.prefixed_start() {
            let mut end = first.range.end;
            while let Some(item) = items.get(next) {
                if !Arc::ptr_eq(&item.buf, &first.buf) || item.prefixed_start() != Some(end) {
                    break;
                }
                end = item.range.end;
                next += 1;
            }
            if let Some(run) = first.buf.get(start..end) {
                out.extend_from_slice(run);
                i = next;
                continue;
            }
            next = i + 1;
        }
        wire::put_item(out, first.bytes());
        i = next;
    }
}

/// At least the length of the `ITEMS` answer listing `items` after its
/// 5-byte head (each item's length takes 4 bytes, or 12 when huge).
pub(crate) fn items_answer_bound(items: &[Item]) -> usize {
    items.iter().map(|i| i.len() + 12).sum()
}

/// A feeder's progress: the last batch the broker stored, and the room
/// granted to its process and not yet filled or given back.
#[derive(Debug, Default)]
struct Feed {
    /// The connection the stream came on: only its own end closes it
    /// (a session's earlier stream, given up and ending late, does not).
    stream: u64,
    stored: u64,
    reserved: usize,
}

/// The state of one queue.
#[derive(Debug, Default)]
pub(crate) struct Core {
    items: VecDeque<Item>,
    /// Delivered and not yet acknowledged, per connection, oldest first.
    inflight: HashMap<u64, VecDeque<Item>>,
    inflight_total: usize,
    /// Open feeder streams, by session.
    feeds: HashMap<u64, Feed>,
    /// Room granted and not yet filled or given back (the sum of the
    /// feeds' `reserved`).
    reserved: usize,
    getters_waiting: usize,
    putters_waiting: usize,
    barrier_waiting: usize,
    /// Items stored and not yet marked done (`JoinableQueue`'s count):
    /// one more per item stored, one less per `task_done`. An item that
    /// comes back from a connection's end was never counted out.
    unfinished: usize,
    /// Other processes' `GET`s waiting for items, and `ACQUIRE`s waiting
    /// for room, first come first served (see [`parked`]).
    parked_gets: VecDeque<Arc<Parked>>,
    parked_acquires: VecDeque<Arc<Parked>>,
}

impl Core {
    /// Items in the queue, in flight ones included (CPython's `qsize`).
    pub(crate) fn qsize(&self) -> usize {
        self.items.len() + self.inflight_total
    }

    /// Items ready to hand out.
    pub(crate) fn ready(&self) -> usize {
        self.items.len()
    }

    pub(crate) fn push(&mut self, item: Item) {
        self.items.push_back(item);
        self.unfinished += 1;
    }

    /// One item is done; false (and nothing changes) if none is
    /// unfinished: CPython's "task_done() called too many times".
    pub(crate) fn task_done(&mut self) -> bool {
        match self.unfinished.checked_sub(1) {
            Some(n) => {
                self.unfinished = n;
                true
            }
            None => false,
        }
    }

    /// Items put and not yet done.
    pub(crate) fn unfinished(&self) -> usize {
        self.unfinished
    }

    /// How many items one taker gets when it asks for `most` and others
    /// wait too: an even share of what is there, at least one.
    pub(crate) fn share(&self, most: usize) -> usize {
        let ready = self.items.len();
        let share = if self.getters_waiting == 0 {
            ready
        } else {
            (ready / (self.getters_waiting + 1)).max(1)
        };
        share.min(most.max(1)).min(ready)
    }

    /// Takes up to `n` items from the front. For another process's
    /// connection (`Some(conn)`) they stay in flight until acknowledged.
    pub(crate) fn take(&mut self, conn: Option<u64>, n: usize) -> Vec<Item> {
        let n = n.min(self.items.len());
        let taken: Vec<Item> = self.items.drain(..n).collect();
        if let Some(conn) = conn {
            if !taken.is_empty() {
                self.inflight
                    .entry(conn)
                    .or_default()
                    .extend(taken.iter().cloned());
                self.inflight_total += taken.len();
            }
        }
        taken
    }

    /// Takes up to `n` items from the front, to be sent on a connection:
    /// counted in flight now, recorded as that connection's by
    /// [`sent`](Self::sent) (moved, not copied) before they are sent.
    pub(crate) fn take_out(&mut self, n: usize) -> Vec<Item> {
        let n = n.min(self.items.len());
        let taken: Vec<Item> = self.items.drain(..n).collect();
        self.inflight_total += taken.len();
        taken
    }

    /// `items` from [`take_out`](Self::take_out) go out on `conn`.
    pub(crate) fn sent(&mut self, conn: u64, items: Vec<Item>) {
        if !items.is_empty() {
            self.inflight.entry(conn).or_default().extend(items);
        }
    }

    /// The last item recorded on `conn` (a one-item answer about to be
    /// written: ack on send) is taken: it leaves the queue and is
    /// returned, for [`restore`](Self::restore) if the write fails.
    /// `None` if `conn` has nothing in flight.
    pub(crate) fn taken_on_send(&mut self, conn: u64) -> Option<Item> {
        let q = self.inflight.get_mut(&conn)?;
        let item = q.pop_back()?;
        if q.is_empty() {
            self.inflight.remove(&conn);
        }
        self.inflight_total -= 1;
        Some(item)
    }

    /// An item [`taken_on_send`](Self::taken_on_send) whose answer could
    /// not be written: back to the front of the queue.
    pub(crate) fn restore(&mut self, item: Item) {
        self.items.push_front(item);
    }

    /// `items` from [`take_out`](Self::take_out) are not sent after all:
    /// they come back to the front of the queue, in their order. Returns
    /// how many did.
    pub(crate) fn unsend(&mut self, items: Vec<Item>) -> usize {
        let n = items.len();
        self.inflight_total -= n;
        for item in items.into_iter().rev() {
            self.items.push_front(item);
        }
        n
    }

    /// `n` of the items `conn` was sent were taken: they leave the queue.
    /// Those slow to drop (a sealed item closes its descriptor and tells
    /// its producer) go into `gone`, for the caller to drop once it has
    /// released the lock; the others are dropped here (no allocation for
    /// `gone` on the small items' path). Returns how many left (an
    /// unknown connection has none).
    pub(crate) fn ack_into(&mut self, conn: u64, n: u32, gone: &mut Vec<Item>) -> usize {
        let Some(q) = self.inflight.get_mut(&conn) else {
            return 0;
        };
        let n = (n as usize).min(q.len());
        gone.extend(q.drain(..n).filter(Item::slow_to_drop));
        self.inflight_total -= n;
        if q.is_empty() {
            self.inflight.remove(&conn);
        }
        n
    }

    /// [`ack_into`](Self::ack_into), the taken items dropped at once.
    #[cfg(test)]
    pub(crate) fn ack(&mut self, conn: u64, n: u32) -> usize {
        self.ack_into(conn, n, &mut Vec::new())
    }

    /// The last `n` items `conn` was sent come back, untaken, to the front
    /// of the queue, in their order. Returns how many did.
    pub(crate) fn give_back(&mut self, conn: u64, n: u32) -> usize {
        let Some(q) = self.inflight.get_mut(&conn) else {
            return 0;
        };
        let n = (n as usize).min(q.len());
        let back = q.split_off(q.len() - n);
        if q.is_empty() {
            self.inflight.remove(&conn);
        }
        self.inflight_total -= n;
        for item in back.into_iter().rev() {
            self.items.push_front(item);
        }
        n
    }

    /// `conn` closed: everything it was sent and did not acknowledge
    /// returns to the front of the queue, in order. Returns how many.
    pub(crate) fn drop_conn(&mut self, conn: u64) -> usize {
        let Some(q) = self.inflight.remove(&conn) else {
            return 0;
        };
        let n = q.len();
        self.inflight_total -= n;
        for item in q.into_iter().rev() {
            self.items.push_front(item);
        }
        n
    }

    #[cfg(test)]
    pub(crate) fn feed_open(&mut self, session: u64) {
        self.feed_open_on(session, 0);
    }

    /// `session`'s feeder stream opened on connection `stream`. An earlier
    /// stream of the session (its holder gave it up before using it, and
    /// its end has not been seen yet) is over: its reservations are
    /// released. Returns how many were.
    pub(crate) fn feed_open_on(&mut self, session: u64, stream: u64) -> usize {
        let earlier = self.feeds.insert(
            session,
            Feed {
                stream,
                ..Feed::default()
            },
        );
        let released = earlier.map_or(0, |f| f.reserved);
        self.reserved -= released;
        released
    }

    /// Batch `seq` of `session`'s feeder was stored. Batches come in order
    /// on one stream; anything else is a protocol error (false).
    pub(crate) fn feed_stored(&mut self, session: u64, seq: u64) -> bool {
        match self.feeds.get_mut(&session) {
            Some(f) if seq == f.stored + 1 => {
                f.stored = seq;
                true
            }
            _ => false,
        }
    }

    /// `session`'s feeder stream ended: its reservations are released.
    /// Returns how many were.
    #[cfg(test)]
    pub(crate) fn feed_closed(&mut self, session: u64) -> usize {
        let released = self.feeds.remove(&session).map_or(0, |f| f.reserved);
        self.reserved -= released;
        released
    }

    /// The feeder stream of `session` on connection `stream` ended: if it
    /// is still the session's stream, it is closed and its reservations
    /// released (`Some(how many)`); `None` if a later stream replaced it
    /// (which stays open).
    pub(crate) fn feed_closed_on(&mut self, session: u64, stream: u64) -> Option<usize> {
        if !matches!(self.feeds.get(&session), Some(f) if f.stream == stream) {
            return None;
        }
        let released = self.feeds.remove(&session).map_or(0, |f| f.reserved);
        self.reserved -= released;
        Some(released)
    }

    /// Room granted and not yet used, all sessions together.
    pub(crate) fn reserved(&self) -> usize {
        self.reserved
    }

    /// Sets aside `n` places for `session`'s feeder. False if it has no
    /// open feeder stream (nothing could ever release them).
    pub(crate) fn reserve(&mut self, session: u64, n: usize) -> bool {
        match self.feeds.get_mut(&session) {
            Some(f) => {
                f.reserved += n;
                self.reserved += n;
                true
            }
            None => false,
        }
    }

    /// Gives back up to `n` of `session`'s reservations; returns how many.
    pub(crate) fn release(&mut self, session: u64, n: usize) -> usize {
        let Some(f) = self.feeds.get_mut(&session) else {
            return 0;
        };
        let n = n.min(f.reserved);
        f.reserved -= n;
        self.reserved -= n;
        n
    }

    /// Whether `session`'s feeder has stored batch `barrier` (or is gone:
    /// then everything it delivered was stored or discarded).
    pub(crate) fn barrier_met(&self, session: u64, barrier: u64) -> bool {
        barrier == 0 || !matches!(self.feeds.get(&session), Some(f) if f.stored < barrier)
    }
}

/// When a blocking operation gives up: `None` waits forever.
pub(crate) type Deadline = Option<Instant>;

/// How a `take` ended.
#[derive(Debug)]
pub(crate) enum Taken {
    Items(Vec<Item>),
    /// The queue has a lane now (made while the owner's get waited):
    /// take through it.
    Lane,
    /// The deadline passed with nothing to take.
    Empty,
    /// The waiter's peer is gone; nothing was taken.
    Abandoned,
}

/// How a bounded `put` ended.
#[derive(Debug)]
pub(crate) enum Stored {
    Done,
    /// The queue has a lane now (made while the owner's put waited): the
    /// item was not stored, put it through the lane.
    Lane,
    /// The deadline passed while the queue was full.
    Full,
    /// The putter's peer is gone; the item was not stored.
    Abandoned,
}

/// How a request for room (`ACQUIRE`) ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Acquired {
    /// This many places (at least one) are reserved for the session.
    Granted(usize),
    /// The deadline passed while the queue was full.
    Full,
    /// The requester is gone, or its session has no feeder stream:
    /// nothing was reserved.
    Abandoned,
}

/// How many of `avail` ready items a parked `GET` asking for `most` gets
/// when `others` parked gets wait behind it, in a queue of `maxsize`.
///
/// Unbounded (`maxsize` 0): an even share with the others, at least one,
/// so that a large batch feeds every waiting consumer at once. Bounded:
/// first come first served, up to `most` (its pace, at most `maxsize`), as
/// parked `ACQUIRE`s are granted room. In a bounded queue every item of a
/// delivery holds its place until the whole delivery is taken: a batch
/// split between two parked consumers costs two wake-ups and two
/// `SETTLE`s where one consumer taking it costs one of each, while the
/// other would only have waited again for the next items anyway. Measured
/// at `maxsize` 16, 2 producers and 2 consumers: 1.04–1.25 context
/// switches per item against 1.62–1.73 with the split (docs/benchmarks.md,
/// "Bounded queues, fourth pass").
fn parked_share(maxsize: usize, avail: usize, others: usize, most: usize) -> usize {
    let share = if maxsize == 0 {
        (avail / (others + 1)).max(1)
    } else {
        avail
    };
    share.min(most.max(1)).min(avail)
}

/// A [`Core`] under a mutex, with the waits.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    maxsize: usize,
    core: Mutex<Core>,
    not_empty: Condvar,
    not_full: Condvar,
    stored: Condvar,
    all_done: Condvar,
    /// Whether the queue may get a [`lane`](super::lane) (bounded and
    /// small enough, not a `JoinableQueue`).
    laneable: bool,
    /// The lane, once made.
    lane: OnceLock<Arc<Lane>>,
    /// The queue will never have a lane on again: it was refused, or
    /// switched off (set under the lock).
    lane_ended: AtomicBool,
}

impl std::fmt::Debug for Lane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Lane")
    }
}

fn wait_until<'a>(
    cv: &Condvar,
    guard: MutexGuard<'a, Core>,
    deadline: Deadline,
) -> MutexGuard<'a, Core> {
    match deadline {
        None => wait(cv, guard),
        Some(d) => {
            let left = d.saturating_duration_since(Instant::now());
            wait_timeout(cv, guard, left).0
        }
    }
}

/// Why a wait of [`Shared`] ended without what it waited for.
enum Unmet {
    /// The deadline passed.
    Late,
    /// The waiter is gone.
    Gone,
    /// The queue has a lane now: the owner's own call goes through it.
    Lane,
}

fn passed(deadline: Deadline) -> bool {
    deadline.is_some_and(|d| Instant::now() >= d)
}

/// Wakes up to `n` of `waiting` threads.
fn wake(cv: &Condvar, waiting: usize, n: usize) {
    if waiting == 0 || n == 0 {
        return;
    }
    if n >= waiting {
        cv.notify_all();
    } else {
        for _ in 0..n {
            cv.notify_one();
        }
    }
}

impl Shared {
    /// A queue of at most `maxsize` items (0: unbounded).
    pub(crate) fn new(maxsize: usize) -> Shared {
        Shared {
            maxsize,
            laneable: lane::eligible(maxsize),
            ..Shared::default()
        }
    }

    /// The queue's `maxsize` (0: unbounded).
    pub(crate) fn maxsize(&self) -> usize {
        self.maxsize
    }

    /// A queue that never gets a lane (a `JoinableQueue`: its count of
    /// unfinished items lives here).
    pub(crate) fn without_lane(mut self) -> Shared {
        self.laneable = false;
        self
    }

    /// The lane, while it is on (the owner's own puts and gets go
    /// through it then).
    pub(crate) fn lane(&self) -> Option<&Arc<Lane>> {
        if self.lane_ended.load(Ordering::Acquire) {
            return None;
        }
        self.lane.get()
    }

    /// `LANE`: the lane's transfer for a holder in another process, the
    /// lane made now if the queue can have one — bounded and small
    /// enough, and nothing of it with other processes yet (no item in
    /// flight, no feeder stream, no reservation, no parked request), its
    /// items each small enough for a slot (they move into the ring). A
    /// queue refused once is refused for good.
    pub(crate) fn open_lane(&self) -> Option<Vec<u8>> {
        if !self.laneable || self.lane_ended.load(Ordering::Acquire) {
            return None;
        }
        if let Some(l) = self.lane.get() {
            return l.transfer();
        }
        let mut core = self.lock();
        if self.lane_ended.load(Ordering::Acquire) {
            return None;
        }
        if let Some(l) = self.lane.get() {
            return l.transfer();
        }
        let alone = core.inflight_total == 0
            && core.feeds.is_empty()
            && core.reserved == 0
            && core.parked_gets.is_empty()
            && core.parked_acquires.is_empty()
            && core.barrier_waiting == 0
            && core.items.len() <= self.maxsize
            && core
                .items
                .iter()
                .all(|i| i.blob.is_none() && i.len() <= lane::SLOT_ITEM);
        if !alone {
            self.lane_ended.store(true, Ordering::Release);
            return None;
        }
        let made = match Lane::create(self.maxsize) {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!("no lane for a bounded queue: {e}");
                self.lane_ended.store(true, Ordering::Release);
                return None;
            }
        };
        let items: Vec<Item> = core.items.drain(..).collect();
        let bytes: Vec<&[u8]> = items.iter().map(|i| i.bytes()).collect();
        made.fill(&bytes);
        let transfer = made.transfer();
        let _ = self.lane.set(Arc::new(made));
        // The owner's own puts and gets waiting here go on through it.
        self.not_empty.notify_all();
        self.not_full.notify_all();
        drop(core);
        transfer
    }

    /// Called first by every request of another process's that puts,
    /// takes or reserves through the broker: the lane, if on, ends for
    /// good, its items moved here first, in order (a queue with no lane
    /// yet never gets one).
    pub(crate) fn lane_off(&self) {
        if !self.laneable || self.lane_ended.load(Ordering::Acquire) {
            return;
        }
        let mut core = self.lock();
        if self.lane_ended.load(Ordering::Acquire) {
            return;
        }
        let Some(l) = self.lane.get() else {
            self.lane_ended.store(true, Ordering::Release);
            return;
        };
        let items = l.switch_off();
        let n = items.len();
        for item in items {
            core.push(Item::whole(item));
        }
        self.lane_ended.store(true, Ordering::Release);
        tracing::debug!(items = n, "queue lane switched off");
        wake(&self.not_empty, core.getters_waiting, n);
        self.finish(core);
    }

    fn lock(&self) -> MutexGuard<'_, Core> {
        lock(&self.core)
    }

    /// Free places: neither holding an item nor reserved.
    fn room(&self, core: &Core) -> usize {
        if self.maxsize == 0 {
            return usize::MAX;
        }
        self.maxsize
            .saturating_sub(core.qsize())
            .saturating_sub(core.reserved())
    }

    fn has_room(&self, core: &Core) -> bool {
        self.room(core) > 0
    }

    /// Serves the parked requests that can be now (under the lock):
    /// items to parked gets, room to parked acquires, leaving enough for
    /// the threads waiting on the condition variables (the owner's own
    /// gets and puts). Returns them, to [`parked::deliver`] after the lock.
    fn serve(&self, core: &mut Core) -> Vec<Arc<Parked>> {
        let mut granted = Vec::new();
        // Room first: a `PUT_WAIT` served stores its item, which a parked
        // get may then take (one thread, no hop between them).
        while !core.parked_acquires.is_empty() {
            let avail = self.room(core).saturating_sub(core.putters_waiting);
            if avail == 0 {
                break;
            }
            let Some(p) = core.parked_acquires.pop_front() else {
                break;
            };
            let Want::Acquire {
                session,
                wanted,
                carries,
            } = p.want
            else {
                continue;
            };
            if carries && p.holder_gone() {
                // A process killed while its put waited: its item is not
                // stored (its put never returned), and the room stays free.
                p.give(Given::Refused);
                granted.push(p);
                continue;
            }
            let n = wanted.max(1).min(avail);
            if core.reserve(session, n) {
                if let Some(item) = p.take_carried() {
                    self.fill(core, session, item);
                }
                p.give(Given::Granted(n));
            } else {
                p.give(Given::Refused);
            }
            granted.push(p);
        }
        // The gets answered first: a consumer's item is the next step of
        // the chain, a producer's grant is not.
        let mut served = Vec::new();
        while !core.parked_gets.is_empty() && core.ready() > core.getters_waiting {
            let avail = core.ready() - core.getters_waiting;
            let Some(p) = core.parked_gets.pop_front() else {
                break;
            };
            let Want::Get { most, .. } = p.want else {
                continue;
            };
            if p.holder_gone() {
                // A consumer killed while its get waited, whose
                // connection's thread has not seen the end yet (a starved
                // broker): it gets nothing, so the items stay in order for
                // the next consumer instead of going back to the front
                // after later ones were delivered. Its thread closes.
                p.give(Given::Refused);
                served.push(p);
                continue;
            }
            let n = parked_share(self.maxsize, avail, core.parked_gets.len(), most);
            // Counted in flight now; whoever writes the answer records
            // them as the connection's first ([`Shared::answer_items`]).
            let items = core.take_out(n);
            p.give(Given::Items(items));
            served.push(p);
        }
        served.append(&mut granted);
        served
    }

    /// Stores `item` in a place just reserved for `session` (a
    /// `PUT_WAIT`'s: its item fills the first place of its grant).
    fn fill(&self, core: &mut Core, session: u64, item: Item) {
        core.push(item);
        core.release(session, 1);
        wake(&self.not_empty, core.getters_waiting, 1);
    }

    /// [`fill`](Self::fill) after an [`acquire`](Self::acquire) that
    /// granted room (where requests do not park), and answers the
    /// parked gets it makes answerable.
    pub(crate) fn fill_granted(&self, session: u64, item: Item) {
        let mut core = self.lock();
        self.fill(&mut core, session, item);
        self.finish(core);
    }

    /// Releases the lock, then answers the parked requests served under it
    /// (again while the answers free room: items taken on send).
    fn finish<'a>(&'a self, mut core: MutexGuard<'a, Core>) {
        loop {
            let served = self.serve(&mut core);
            drop(core);
            if served.is_empty() || !parked::deliver(self, served) {
                return;
            }
            core = self.lock();
        }
    }

    /// A one-item answer to a `GET` without a timeout is about to be
    /// written on `conn`: the item is taken now (ack on send), before the
    /// holder can see it, so a size read after the holder's `get` returned
    /// never counts it; the room it leaves may be a parked request's
    /// (served by the caller's `finish`, or here with `serve`). Returns the
    /// item for [`restore`](Self::restore) if the write fails.
    pub(crate) fn taken_on_send(&self, conn: u64, serve: bool) -> Option<Item> {
        let mut core = self.lock();
        let item = core.taken_on_send(conn);
        if item.is_some() {
            wake(&self.not_full, core.putters_waiting, 1);
        }
        if serve {
            self.finish(core);
        }
        item
    }

    /// An item taken on send whose answer could not be written (its
    /// holder is gone): back to the front of the queue. With `serve`, the
    /// parked requests it makes answerable are served here.
    pub(crate) fn restore(&self, item: Item, serve: bool) {
        let mut core = self.lock();
        core.restore(item);
        wake(&self.not_empty, core.getters_waiting, 1);
        if serve {
            self.finish(core);
        }
    }

    /// Takes up to `most` items to send if there are some (as
    /// [`take_to_send`](Self::take_to_send): the caller hands them to
    /// [`answer_items`](Self::answer_items)), else parks `p` (a `GET`) —
    /// unless the deadline has passed (`Empty`). `None`: parked.
    pub(crate) fn take_or_park(
        &self,
        most: usize,
        deadline: Deadline,
        p: Arc<Parked>,
    ) -> Option<Taken> {
        self.lane_off();
        let mut core = self.lock();
        if core.ready() > core.getters_waiting {
            // Items for it now: a holder whose end is already there (it
            // died before its `GET` was read, a starved broker) takes
            // none, so they never go back to the front after later ones
            // went to others. Asked only here: a request that parks is
            // asked again by whoever serves it (`holder_gone` in
            // `serve`), and its own thread waits on its connection.
            if p.holder_gone() {
                return Some(Taken::Abandoned);
            }
            let n = core.share(most);
            return Some(Taken::Items(core.take_out(n)));
        }
        if passed(deadline) {
            return Some(Taken::Empty);
        }
        core.parked_gets.push_back(p);
        None
    }

    /// Reserves up to `wanted` places for `session` if there is room,
    /// else parks `p` (an `ACQUIRE`) — unless the deadline has passed
    /// (`Full`). `None`: parked.
    pub(crate) fn acquire_or_park(
        &self,
        session: u64,
        wanted: usize,
        deadline: Deadline,
        p: Arc<Parked>,
    ) -> Option<Acquired> {
        self.lane_off();
        let mut core = self.lock();
        let avail = self.room(&core).saturating_sub(core.putters_waiting);
        if avail > 0 && core.parked_acquires.is_empty() {
            let n = wanted.max(1).min(avail);
            if !core.reserve(session, n) {
                return Some(Acquired::Abandoned);
            }
            if let Some(item) = p.take_carried() {
                // A `PUT_WAIT`: stored now, and parked gets served.
                self.fill(&mut core, session, item);
                self.finish(core);
            }
            return Some(Acquired::Granted(n));
        }
        if passed(deadline) {
            return Some(Acquired::Full);
        }
        core.parked_acquires.push_back(p);
        None
    }

    /// A parked request's state (see [`parked::settle`]); with `leave`, a
    /// request still waiting leaves its list.
    pub(crate) fn settle_parked(&self, p: &Parked, leave: bool) -> Settled {
        let mut core = self.lock();
        let settled = parked::settle(p, leave);
        if matches!(settled, Settled::Cancelled) {
            let me = |q: &Arc<Parked>| !std::ptr::eq(Arc::as_ptr(q), p);
            core.parked_gets.retain(me);
            core.parked_acquires.retain(me);
        }
        settled
    }

    pub(crate) fn qsize(&self) -> usize {
        if let Some(n) = self.lane().and_then(|l| l.qsize()) {
            return n;
        }
        self.lock().qsize()
    }

    /// Other processes' gets waiting for an item, parked or not.
    #[cfg(test)]
    pub(crate) fn gets_waiting(&self) -> usize {
        let core = self.lock();
        core.parked_gets.len() + core.getters_waiting
    }

    /// Stores items whatever the queue's size.
    #[cfg(test)]
    pub(crate) fn push_all(&self, items: impl IntoIterator<Item = Item>) -> usize {
        let mut core = self.lock();
        let before = core.ready();
        for item in items {
            core.push(item);
        }
        let added = core.ready() - before;
        wake(&self.not_empty, core.getters_waiting, added);
        self.finish(core);
        added
    }

    /// Waits while the queue is full, until `deadline`; returns the lock
    /// with room in the queue (`Ok`), or why not: the deadline passed
    /// (`Err(true)`) or, after a wait, `alive` (called without the lock
    /// held) said the waiter is gone (`Err(false)`; the wake-up it
    /// consumed is passed on).
    fn wait_for_room(
        &self,
        deadline: Deadline,
        alive: &dyn Fn() -> bool,
    ) -> Result<MutexGuard<'_, Core>, Unmet> {
        let mut core = self.lock();
        let mut waited = false;
        loop {
            if self.lane().is_some() {
                // Made while this owner's put waited (requests of other
                // processes switched it off before they got here).
                return Err(Unmet::Lane);
            }
            if self.has_room(&core) {
                if !waited {
                    return Ok(core);
                }
                drop(core);
                if !alive() {
                    self.not_full.notify_one();
                    // The room it leaves may be a parked request's.
                    self.finish(self.lock());
                    return Err(Unmet::Gone);
                }
                core = self.lock();
                waited = false;
                continue;
            }
            if passed(deadline) {
                if waited {
                    // Counted as waiting, it held room back from parked
                    // requests: they may have it now.
                    self.finish(core);
                }
                return Err(Unmet::Late);
            }
            core.putters_waiting += 1;
            core = wait_until(&self.not_full, core, deadline);
            core.putters_waiting -= 1;
            waited = true;
        }
    }

    /// Stores `item`, waiting while the queue is full, until `deadline`.
    /// After a wait, `alive` (called without the lock held) says whether
    /// the putter still wants it: a putter that died while waiting stores
    /// nothing.
    pub(crate) fn put(&self, item: Item, deadline: Deadline, alive: &dyn Fn() -> bool) -> Stored {
        match self.wait_for_room(deadline, alive) {
            Ok(mut core) => {
                core.push(item);
                wake(&self.not_empty, core.getters_waiting, 1);
                self.finish(core);
                Stored::Done
            }
            Err(Unmet::Late) => Stored::Full,
            Err(Unmet::Gone) => Stored::Abandoned,
            Err(Unmet::Lane) => Stored::Lane,
        }
    }

    /// Reserves up to `wanted` places (at least one) for `session`'s
    /// feeder, waiting while the queue is full, until `deadline` — a
    /// bounded put's wait, for several puts at once. After a wait, `alive`
    /// (called without the lock held) says whether the requester is still
    /// there.
    pub(crate) fn acquire(
        &self,
        session: u64,
        wanted: usize,
        deadline: Deadline,
        alive: &dyn Fn() -> bool,
    ) -> Acquired {
        self.lane_off();
        match self.wait_for_room(deadline, alive) {
            Ok(mut core) => {
                let n = wanted.max(1).min(self.room(&core));
                if core.reserve(session, n) {
                    Acquired::Granted(n)
                } else {
                    drop(core);
                    self.not_full.notify_one();
                    Acquired::Abandoned
                }
            }
            Err(Unmet::Late) => Acquired::Full,
            Err(Unmet::Gone) | Err(Unmet::Lane) => Acquired::Abandoned,
        }
    }

    /// Gives back up to `n` of `session`'s reserved places.
    pub(crate) fn release(&self, session: u64, n: usize) {
        let mut core = self.lock();
        let freed = core.release(session, n);
        wake(&self.not_full, core.putters_waiting, freed);
        self.finish(core);
    }

    /// Takes up to `most` items (at least one), waiting while the queue is
    /// empty, until `deadline`. For another process's connection
    /// (`Some(conn)`) they stay in flight until acknowledged; for the
    /// owner's own handles (`None`) they are gone. After a wait, `alive`
    /// (called without the lock held) says whether the taker is still
    /// there: a taker that died while waiting takes nothing.
    pub(crate) fn take(
        &self,
        conn: Option<u64>,
        most: usize,
        deadline: Deadline,
        alive: &dyn Fn() -> bool,
    ) -> Taken {
        if conn.is_some() {
            self.lane_off();
        }
        self.take_with(most, deadline, alive, |core, n| {
            let items = core.take(conn, n);
            if conn.is_none() {
                wake(&self.not_full, core.putters_waiting, items.len());
            }
            items
        })
    }

    /// [`take`](Self::take) for another process's connection `conn`,
    /// which sends the items: they count in flight at once, and the
    /// caller hands them to [`sent`](Self::sent) (on `conn`'s thread,
    /// before it sends them: no ack can come for them first). The
    /// in-flight record takes the items themselves, no copy of each.
    pub(crate) fn take_to_send(
        &self,
        most: usize,
        deadline: Deadline,
        alive: &dyn Fn() -> bool,
    ) -> Taken {
        self.lane_off();
        self.take_with(most, deadline, alive, |core, n| core.take_out(n))
    }

    /// `items` (from [`take_to_send`](Self::take_to_send)) go out on
    /// `conn`: in flight there until acknowledged.
    pub(crate) fn sent(&self, conn: u64, items: Vec<Item>) {
        self.lock().sent(conn, items);
    }

    /// Writes into `out` the `ITEMS` answer to a `GET` of `conn` and
    /// records `items` (taken to send: [`take_to_send`](Self::take_to_send),
    /// [`take_or_park`](Self::take_or_park), a parked request served) as
    /// in flight on `conn` — before the answer is sent, whichever thread
    /// sends it: no ack can come for them first, and if the holder is gone
    /// they go back when its connection ends.
    pub(crate) fn answer_items(&self, conn: u64, items: Vec<Item>, out: &mut Vec<u8>) {
        wire::items_start_in(out, items.len() as u32, items_answer_bound(&items));
        put_items(out, &items);
        self.sent(conn, items);
    }

    /// `items` (from [`take_to_send`](Self::take_to_send)) are not sent
    /// after all: back to the front of the queue, in their order.
    pub(crate) fn unsend(&self, items: Vec<Item>) {
        if items.is_empty() {
            return;
        }
        let mut core = self.lock();
        let back = core.unsend(items);
        wake(&self.not_empty, core.getters_waiting, back);
        // Items back in the queue may be a parked request's.
        self.finish(core);
    }

    /// The wait of [`take`](Self::take); `pick` takes `n` items.
    fn take_with(
        &self,
        most: usize,
        deadline: Deadline,
        alive: &dyn Fn() -> bool,
        pick: impl FnOnce(&mut Core, usize) -> Vec<Item>,
    ) -> Taken {
        let mut core = self.lock();
        let mut waited = false;
        loop {
            if self.lane().is_some() {
                // Made while this owner's get waited.
                return Taken::Lane;
            }
            if core.ready() > 0 {
                if waited {
                    drop(core);
                    if !alive() {
                        self.not_empty.notify_one();
                        // The items it leaves may be a parked request's.
                        self.finish(self.lock());
                        return Taken::Abandoned;
                    }
                    core = self.lock();
                    waited = false;
                    continue;
                }
                let n = core.share(most);
                let items = pick(&mut core, n);
                // Room a local take frees, or items a waiter counted in
                // `getters_waiting` no longer holds back, may be a parked
                // request's.
                self.finish(core);
                return Taken::Items(items);
            }
            if passed(deadline) {
                if waited {
                    // Counted as waiting, it held items back from parked
                    // requests: they may have them now.
                    self.finish(core);
                }
                return Taken::Empty;
            }
            core.getters_waiting += 1;
            core = wait_until(&self.not_empty, core, deadline);
            core.getters_waiting -= 1;
            waited = true;
        }
    }

    /// Applies acks (connection, taken count).
    pub(crate) fn ack(&self, acks: &[(u64, u32)]) {
        if acks.is_empty() {
            return;
        }
        let mut taken = Vec::new();
        {
            let mut core = self.lock();
            let freed: usize = acks
                .iter()
                .map(|&(c, n)| core.ack_into(c, n, &mut taken))
                .sum();
            wake(&self.not_full, core.putters_waiting, freed);
            if freed > 0 {
                self.finish(core);
            }
        }
        // Outside the lock: closing descriptors can be slow.
        drop(taken);
    }

    /// A holder's settlement on its own connection: `taken` items were
    /// taken, the last `returned` come back.
    pub(crate) fn settle(&self, conn: u64, taken: u32, returned: u32) {
        let mut gone = Vec::new();
        {
            let mut core = self.lock();
            let freed = core.ack_into(conn, taken, &mut gone);
            let back = core.give_back(conn, returned);
            wake(&self.not_full, core.putters_waiting, freed);
            wake(&self.not_empty, core.getters_waiting, back);
            self.finish(core);
        }
        // Outside the lock: closing descriptors can be slow.
        drop(gone);
    }

    /// `conn` closed: its unacknowledged items return to the front.
    pub(crate) fn drop_conn(&self, conn: u64) -> usize {
        let mut core = self.lock();
        let back = core.drop_conn(conn);
        wake(&self.not_empty, core.getters_waiting, back);
        self.finish(core);
        back
    }

    #[cfg(test)]
    pub(crate) fn feed_open(&self, session: u64) {
        self.feed_open_on(session, 0);
    }

    /// `session`'s feeder stream opened on connection `stream` (see
    /// [`Core::feed_open_on`]): room an earlier stream of the session
    /// still held is free again.
    pub(crate) fn feed_open_on(&self, session: u64, stream: u64) {
        let mut core = self.lock();
        let released = core.feed_open_on(session, stream);
        self.released(core, released);
    }

    /// Whether `session` has an open feeder stream.
    pub(crate) fn feeding(&self, session: u64) -> bool {
        self.lock().feeds.contains_key(&session)
    }

    /// Stores a feeder's batch `seq`; false if it is out of order.
    ///
    /// In a bounded queue each item fills a place reserved for `session`
    /// (its producer put it with a permit), without a room check. Items
    /// beyond its reservations (a producer never sends any) are stored
    /// all the same: an item that reached the broker is never dropped, at
    /// the cost of the queue holding more than `maxsize` for a while.
    pub(crate) fn feed(
        &self,
        session: u64,
        seq: u64,
        items: impl IntoIterator<Item = Item>,
    ) -> bool {
        self.lane_off();
        let mut core = self.lock();
        if !core.feed_stored(session, seq) {
            return false;
        }
        let before = core.ready();
        for item in items {
            core.push(item);
        }
        let added = core.ready() - before;
        if self.maxsize > 0 {
            let used = core.release(session, added);
            if used < added {
                tracing::debug!(
                    extra = added - used,
                    "feeder batch beyond its reservations: stored anyway"
                );
            }
        }
        wake(&self.not_empty, core.getters_waiting, added);
        if core.barrier_waiting > 0 {
            self.stored.notify_all();
        }
        self.finish(core);
        true
    }

    /// `session`'s feeder stream ended, every batch it carried stored:
    /// the room still reserved for it is free again.
    #[cfg(test)]
    pub(crate) fn feed_closed(&self, session: u64) {
        let mut core = self.lock();
        let released = core.feed_closed(session);
        self.released(core, released);
    }

    /// The feeder stream of `session` on connection `stream` ended (see
    /// [`Core::feed_closed_on`]). Returns whether it was still the
    /// session's stream.
    pub(crate) fn feed_closed_on(&self, session: u64, stream: u64) -> bool {
        let mut core = self.lock();
        match core.feed_closed_on(session, stream) {
            Some(released) => {
                self.released(core, released);
                true
            }
            None => false,
        }
    }

    /// A feed's end (or replacement) released `released` places, and
    /// whoever waited on its barriers is free to look again.
    fn released<'a>(&'a self, core: MutexGuard<'a, Core>, released: usize) {
        wake(&self.not_full, core.putters_waiting, released);
        if core.barrier_waiting > 0 {
            self.stored.notify_all();
        }
        self.finish(core);
    }

    /// One item is done (`JoinableQueue::task_done`); false when every
    /// item put is done already.
    pub(crate) fn task_done(&self) -> bool {
        let mut core = self.lock();
        if !core.task_done() {
            return false;
        }
        if core.unfinished() == 0 {
            self.all_done.notify_all();
        }
        true
    }

    /// Waits until every item put is done (`JoinableQueue::join`). After
    /// each wake-up, `alive` (called without the lock held) says whether
    /// the waiter is still there; false if it is gone.
    pub(crate) fn join(&self, alive: &dyn Fn() -> bool) -> bool {
        let mut core = self.lock();
        while core.unfinished() > 0 {
            core = wait(&self.all_done, core);
            if core.unfinished() > 0 {
                drop(core);
                if !alive() {
                    return false;
                }
                core = self.lock();
            }
        }
        true
    }

    /// Waits until `session`'s feeder has stored batch `barrier`: what a
    /// process put before it asks anything is in the queue when it asks.
    /// The feeder wrote that batch completely before the request was sent,
    /// so the wait is short and cannot miss it.
    pub(crate) fn wait_barrier(&self, session: u64, barrier: u64) {
        let mut core = self.lock();
        while !core.barrier_met(session, barrier) {
            core.barrier_waiting += 1;
            core = wait_until(&self.stored, core, None);
            core.barrier_waiting -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn item(s: &str) -> Item {
        Item::whole(s.as_bytes().to_vec())
    }

    fn texts(items: &[Item]) -> Vec<String> {
        items
            .iter()
            .map(|i| String::from_utf8_lossy(i.bytes()).into_owned())
            .collect()
    }

    fn core_with(names: &[&str]) -> Core {
        let mut c = Core::default();
        for n in names {
            c.push(item(n));
        }
        c
    }

    #[test]
    fn items_share_a_buffer() {
        let buf = Arc::new(b"abcdef".to_vec());
        let a = Item::part(&buf, 0..2);
        let b = Item::part(&buf, 2..6);
        assert_eq!(a.bytes(), b"ab");
        assert_eq!(b.bytes(), b"cdef");
        assert_eq!(b.len(), 4);
        // A range past the end is cut, never trusted.
        assert_eq!(Item::part(&buf, 4..99).bytes(), b"ef");
        assert_eq!(Item::part(&buf, 50..99).bytes(), b"");
    }

    // Runs of a batch's items are copied whole; whatever else (an
    // owner's own item, a gap, another batch, a range whose length in
    // front does not match) item by item: the bytes are those of
    // `put_item` for each, always.
    #[test]
    fn items_are_listed_as_put_item_lists_them() {
        let mut batch = Vec::new();
        wire::batch_start(&mut batch);
        for s in ["one", "", "three", "four"] {
            wire::put_item(&mut batch, s.as_bytes());
        }
        let Ok(wire::Request::PutBatch { items: entries, .. }) = wire::parse_request(&batch) else {
            panic!("batch does not parse");
        };
        let ranges: Vec<Range<usize>> = entries
            .into_iter()
            .filter_map(|e| match e {
                wire::Entry::Bytes(r) => Some(r),
                wire::Entry::Sealed(_) => None,
            })
            .collect();
        let batch = Arc::new(batch);
        let other = Arc::new(batch.to_vec());
        let part = |b: &Arc<Vec<u8>>, i: usize| Item::part(b, ranges[i].clone());
        let cases: Vec<Vec<Item>> = vec![
            vec![],
            (0..4).map(|i| part(&batch, i)).collect(),
            vec![part(&batch, 0), part(&batch, 2), part(&batch, 3)],
            vec![part(&batch, 1), part(&other, 2), part(&batch, 3)],
            vec![item("own"), part(&batch, 0), part(&batch, 1), item("")],
            vec![part(&batch, 3), part(&batch, 0)],
            // "ne": its length in front is not 2.
            vec![Item::part(&batch, ranges[0].start + 1..ranges[0].end)],
            vec![Item::part(&batch, 0..3), Item::part(&batch, 3..9)],
        ];
        for items in cases {
            let mut want = Vec::new();
            for i in &items {
                wire::put_item(&mut want, i.bytes());
            }
            let mut got = vec![7];
            put_items(&mut got, &items);
            assert_eq!(&got[1..], &want[..], "{:?}", texts(&items));
        }
    }

    // A sealed item among a batch's items (its entry holds no bytes)
    // breaks the run and is listed with its object's bytes.
    #[test]
    fn sealed_items_are_listed_with_their_bytes() {
        if !crate::sys::SEALED_ITEMS {
            return;
        }
        let big: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        let Ok(fd) = super::super::large::seal(&big) else {
            panic!("no sealed object");
        };
        let sealed = match super::super::large::keep(fd, big.len() as u64, None) {
            Ok(super::super::large::Kept::Sealed(blob)) => Item::sealed(blob),
            Ok(super::super::large::Kept::Bytes(bytes)) => Item::whole(bytes),
            Err(e) => panic!("{e}"),
        };
        assert_eq!(sealed.len(), big.len());
        let mut batch = Vec::new();
        wire::batch_start(&mut batch);
        wire::put_item(&mut batch, b"one");
        wire::put_sealed(&mut batch, big.len() as u64);
        wire::put_item(&mut batch, b"two");
        wire::put_item(&mut batch, b"three");
        let Ok(wire::Request::PutBatch { items: entries, .. }) = wire::parse_request(&batch) else {
            panic!("batch does not parse");
        };
        let batch = Arc::new(batch);
        let items: Vec<Item> = entries
            .into_iter()
            .map(|e| match e {
                wire::Entry::Bytes(r) => Item::part(&batch, r),
                wire::Entry::Sealed(_) => sealed.clone(),
            })
            .collect();
        let mut want = Vec::new();
        for i in [&b"one"[..], &big, b"two", b"three"] {
            wire::put_item(&mut want, i);
        }
        let mut got = Vec::new();
        put_items(&mut got, &items);
        assert_eq!(got, want);
    }

    // Taken to be sent: in flight (counted by qsize) from the take, the
    // connection's once sent, then acked or given back as any delivery.
    #[test]
    fn items_taken_to_send_count_at_once_and_belong_to_their_connection_once_sent() {
        let mut c = core_with(&["a", "b", "c", "d"]);
        let out = c.take_out(3);
        assert_eq!(texts(&out), ["a", "b", "c"]);
        assert_eq!((c.qsize(), c.ready()), (4, 1));
        c.sent(7, out);
        c.sent(7, Vec::new());
        assert_eq!(c.ack(7, 1), 1);
        assert_eq!(c.give_back(7, 1), 1);
        assert_eq!(c.qsize(), 3);
        assert_eq!(c.drop_conn(7), 1);
        assert_eq!(texts(&c.take(None, 9)), ["b", "c", "d"]);
        assert_eq!(c.qsize(), 0);
        assert!(c.take_out(2).is_empty());
        assert_eq!(c.qsize(), 0);
    }

    // Taken to be sent and not sent after all: back at the front, in
    // order, no longer counted in flight.
    #[test]
    fn items_taken_to_send_and_not_sent_come_back_in_order() {
        let mut c = core_with(&["a", "b", "c", "d"]);
        let mut out = c.take_out(3);
        let back = out.split_off(1);
        c.sent(7, out);
        assert_eq!(c.unsend(back), 2);
        assert_eq!((c.qsize(), c.ready()), (4, 3));
        assert_eq!(c.drop_conn(7), 1);
        assert_eq!(texts(&c.take(None, 9)), ["a", "b", "c", "d"]);
        assert_eq!(c.unsend(Vec::new()), 0);
        assert_eq!(c.qsize(), 0);
    }

    #[test]
    fn local_take_is_fifo_and_leaves_nothing_in_flight() {
        let mut c = core_with(&["a", "b", "c"]);
        assert_eq!(c.qsize(), 3);
        assert_eq!(texts(&c.take(None, 2)), ["a", "b"]);
        assert_eq!(c.qsize(), 1);
        assert_eq!(texts(&c.take(None, 5)), ["c"]);
        assert_eq!(c.qsize(), 0);
        assert!(c.take(None, 1).is_empty());
    }

    #[test]
    fn in_flight_items_count_until_acked() {
        let mut c = core_with(&["a", "b", "c", "d"]);
        assert_eq!(texts(&c.take(Some(1), 3)), ["a", "b", "c"]);
        assert_eq!(c.qsize(), 4);
        assert_eq!(c.ready(), 1);
        assert_eq!(c.ack(1, 2), 2);
        assert_eq!(c.qsize(), 2);
        // More acks than in flight: only what is there.
        assert_eq!(c.ack(1, 9), 1);
        assert_eq!(c.ack(1, 1), 0);
        assert_eq!(c.ack(42, 1), 0);
        assert_eq!(c.qsize(), 1);
    }

    #[test]
    fn a_closed_connection_returns_its_items_to_the_front_in_order() {
        let mut c = core_with(&["a", "b", "c", "d", "e"]);
        c.take(Some(1), 2); // a, b to conn 1
        c.take(Some(2), 2); // c, d to conn 2
        c.ack(1, 1); // a taken
        assert_eq!(c.drop_conn(1), 1); // b back
        assert_eq!(c.drop_conn(2), 2); // c, d back, before b
        assert_eq!(c.drop_conn(2), 0);
        assert_eq!(c.qsize(), 4);
        assert_eq!(texts(&c.take(None, 9)), ["c", "d", "b", "e"]);
    }

    #[test]
    fn give_back_returns_the_newest_in_order() {
        let mut c = core_with(&["a", "b", "c", "d"]);
        c.take(Some(7), 4);
        assert_eq!(c.ack(7, 1), 1); // a taken
        assert_eq!(c.give_back(7, 2), 2); // c, d back
        assert_eq!(c.qsize(), 3);
        assert_eq!(c.ack(7, 1), 1); // b taken
        assert_eq!(c.give_back(7, 5), 0);
        assert_eq!(texts(&c.take(None, 9)), ["c", "d"]);
    }

    #[test]
    fn parked_gets_split_a_batch_only_in_an_unbounded_queue() {
        // Unbounded: 10 ready, 1 other parked get: half each.
        assert_eq!(parked_share(0, 10, 1, 64), 5);
        assert_eq!(parked_share(0, 10, 19, 64), 1, "at least one");
        assert_eq!(parked_share(0, 10, 0, 3), 3, "at most what it asks");
        // Bounded: the first one gets what it asks for, others or not.
        assert_eq!(parked_share(16, 10, 1, 64), 10);
        assert_eq!(parked_share(16, 10, 1, 4), 4);
        assert_eq!(parked_share(3, 3, 1, 3), 3);
        assert_eq!(parked_share(3, 1, 1, 3), 1);
        assert_eq!(parked_share(3, 2, 1, 0), 1, "a get takes one at least");
        assert_eq!(parked_share(3, 0, 1, 3), 0, "never more than is there");
    }

    #[test]
    fn shares_split_between_waiters() {
        let mut c = core_with(&["a"; 10]);
        assert_eq!(c.share(64), 10);
        assert_eq!(c.share(3), 3);
        assert_eq!(c.share(0), 1);
        c.getters_waiting = 1;
        assert_eq!(c.share(64), 5);
        c.getters_waiting = 19;
        assert_eq!(c.share(64), 1);
        let empty = Core::default();
        assert_eq!(empty.share(64), 0);
    }

    #[test]
    fn feeds_and_barriers() {
        let mut c = Core::default();
        assert!(c.barrier_met(5, 0));
        c.feed_open(5);
        assert!(!c.barrier_met(5, 1));
        assert!(!c.feed_stored(5, 2), "out of order");
        assert!(c.feed_stored(5, 1));
        assert!(c.barrier_met(5, 1));
        assert!(!c.barrier_met(5, 2));
        assert!(!c.feed_stored(6, 1), "unknown session");
        c.feed_closed(5);
        assert!(c.barrier_met(5, 2), "a closed feed holds nobody up");
    }

    fn alive() -> bool {
        true
    }

    #[test]
    fn bounded_put_waits_and_times_out_with_the_item() {
        let s = Shared::new(2);
        let soon = || Some(Instant::now() + Duration::from_millis(50));
        assert!(matches!(s.put(item("a"), soon(), &alive), Stored::Done));
        assert!(matches!(s.put(item("b"), soon(), &alive), Stored::Done));
        let t = Instant::now();
        assert!(matches!(s.put(item("c"), soon(), &alive), Stored::Full));
        assert!(t.elapsed() >= Duration::from_millis(40));
        // Non-blocking: the deadline is now.
        assert!(matches!(
            s.put(item("c"), Some(Instant::now()), &alive),
            Stored::Full
        ));
        assert_eq!(s.qsize(), 2);
    }

    #[test]
    fn a_get_wakes_a_blocked_put() {
        let s = Arc::new(Shared::new(1));
        assert!(matches!(s.put(item("a"), None, &alive), Stored::Done));
        let s2 = s.clone();
        let putter =
            std::thread::spawn(move || matches!(s2.put(item("b"), None, &alive), Stored::Done));
        match s.take(None, 1, None, &alive) {
            Taken::Items(v) => assert_eq!(texts(&v), ["a"]),
            other => panic!("{other:?}"),
        }
        assert!(putter.join().unwrap());
        match s.take(None, 1, None, &alive) {
            Taken::Items(v) => assert_eq!(texts(&v), ["b"]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_ack_wakes_a_blocked_put() {
        let s = Arc::new(Shared::new(1));
        assert!(matches!(s.put(item("a"), None, &alive), Stored::Done));
        assert!(matches!(s.take(Some(3), 1, None, &alive), Taken::Items(_)));
        let s2 = s.clone();
        let putter =
            std::thread::spawn(move || matches!(s2.put(item("b"), None, &alive), Stored::Done));
        // In flight still counts: the putter waits until the ack.
        assert_eq!(s.qsize(), 1);
        s.ack(&[(3, 1)]);
        assert!(putter.join().unwrap());
        assert_eq!(s.qsize(), 1);
    }

    #[test]
    fn take_times_out_empty_and_wakes_on_put() {
        let s = Arc::new(Shared::new(0));
        let t = Instant::now();
        let soon = Some(Instant::now() + Duration::from_millis(50));
        assert!(matches!(s.take(None, 1, soon, &alive), Taken::Empty));
        assert!(t.elapsed() >= Duration::from_millis(40));
        assert!(matches!(
            s.take(None, 1, Some(Instant::now()), &alive),
            Taken::Empty
        ));
        let s2 = s.clone();
        let getter = std::thread::spawn(move || match s2.take(Some(1), 8, None, &alive) {
            Taken::Items(v) => texts(&v),
            other => panic!("{other:?}"),
        });
        s.push_all([item("x"), item("y")]);
        let got = getter.join().unwrap();
        assert!(!got.is_empty() && got[0] == "x", "{got:?}");
    }

    #[test]
    fn a_dead_waiter_passes_the_item_on() {
        let s = Arc::new(Shared::new(0));
        let dead = {
            let s = s.clone();
            std::thread::spawn(move || {
                matches!(s.take(Some(1), 1, None, &|| false), Taken::Abandoned)
            })
        };
        let live = {
            let s = s.clone();
            std::thread::spawn(move || match s.take(Some(2), 1, None, &alive) {
                Taken::Items(v) => texts(&v),
                other => panic!("{other:?}"),
            })
        };
        // Whichever wakes first, the live waiter ends up with the item
        // and the dead one takes nothing.
        while s.lock().getters_waiting < 2 {
            std::thread::yield_now();
        }
        s.push_all([item("only")]);
        assert_eq!(live.join().unwrap(), ["only"]);
        s.push_all([item("second")]);
        assert!(dead.join().unwrap());
        assert_eq!(s.qsize(), 2, "one in flight to conn 2, one ready");
    }

    #[test]
    fn barrier_waits_for_the_batch() {
        let s = Arc::new(Shared::new(0));
        s.feed_open(9);
        let s2 = s.clone();
        let waiter = std::thread::spawn(move || {
            s2.wait_barrier(9, 1);
            s2.qsize()
        });
        assert!(s.feed(9, 1, [item("a"), item("b")]));
        assert_eq!(waiter.join().unwrap(), 2);
        assert!(!s.feed(9, 1, [item("again")]), "replayed batch refused");
        s.feed_closed(9);
        s.wait_barrier(9, 7);
    }

    #[test]
    fn reservations_take_room_until_filled_or_released() {
        let s = Shared::new(5);
        let now = || Some(Instant::now());
        // No feeder stream: nothing could release them, none granted.
        assert_eq!(s.acquire(1, 2, now(), &alive), Acquired::Abandoned);
        s.feed_open(1);
        s.feed_open(2);
        assert!(matches!(s.put(item("a"), now(), &alive), Stored::Done));
        assert_eq!(s.acquire(1, 3, now(), &alive), Acquired::Granted(3));
        // One place left: granted whatever is wanted.
        assert_eq!(s.acquire(2, 9, now(), &alive), Acquired::Granted(1));
        assert_eq!(s.acquire(2, 1, now(), &alive), Acquired::Full);
        assert!(matches!(s.put(item("x"), now(), &alive), Stored::Full));
        // Reservations are not items.
        assert_eq!(s.qsize(), 1);
        // Filled: items in, reservations out, no room check.
        assert!(s.feed(1, 1, [item("b"), item("c")]));
        assert_eq!(s.qsize(), 3);
        assert_eq!(s.lock().reserved(), 2);
        // One left for session 1, given back; session 2's released with
        // its stream.
        s.release(1, 5);
        s.feed_closed(2);
        assert_eq!(s.lock().reserved(), 0);
        assert_eq!(s.acquire(1, 9, now(), &alive), Acquired::Granted(2));
        // Beyond its reservations: stored anyway.
        assert!(s.feed(1, 2, [item("d"), item("e"), item("f")]));
        assert_eq!(s.qsize(), 6);
        assert_eq!(s.lock().reserved(), 0);
        match s.take(None, 9, None, &alive) {
            Taken::Items(v) => assert_eq!(texts(&v), ["a", "b", "c", "d", "e", "f"]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_closed_feed_wakes_a_waiting_put() {
        let s = Arc::new(Shared::new(2));
        s.feed_open(3);
        assert_eq!(s.acquire(3, 2, None, &alive), Acquired::Granted(2));
        let s2 = s.clone();
        let putter =
            std::thread::spawn(move || matches!(s2.put(item("a"), None, &alive), Stored::Done));
        let s3 = s.clone();
        let acquirer = std::thread::spawn(move || {
            s3.feed_open(4);
            s3.acquire(4, 1, None, &alive)
        });
        while s.lock().putters_waiting < 2 {
            std::thread::yield_now();
        }
        // The producer died holding both places: they are free again.
        s.feed_closed(3);
        assert!(putter.join().unwrap());
        assert_eq!(acquirer.join().unwrap(), Acquired::Granted(1));
        assert_eq!(s.qsize(), 1);
    }

    #[test]
    fn task_done_counts_stored_items_not_returned_ones() {
        let mut c = core_with(&["a", "b"]);
        assert_eq!(c.unfinished(), 2);
        let _ = c.take(Some(1), 2);
        // Items back from a dead connection were never done.
        assert_eq!(c.drop_conn(1), 2);
        assert_eq!(c.unfinished(), 2);
        assert!(c.task_done());
        assert!(c.task_done());
        assert!(!c.task_done());
        assert_eq!(c.unfinished(), 0);
    }

    #[test]
    fn settle_acks_and_gives_back() {
        let s = Shared::new(0);
        s.push_all([item("a"), item("b"), item("c")]);
        assert!(matches!(s.take(Some(4), 3, None, &alive), Taken::Items(_)));
        s.settle(4, 1, 2);
        assert_eq!(s.qsize(), 2);
        match s.take(None, 5, None, &alive) {
            Taken::Items(v) => assert_eq!(texts(&v), ["b", "c"]),
            other => panic!("{other:?}"),
        }
        assert_eq!(s.drop_conn(4), 0);
    }
}
