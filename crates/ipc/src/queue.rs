//! `Queue<T>`: CPython's `multiprocessing.Queue`.
//!
//! The process that creates a queue serves it (the *owner*, with a
//! [broker](broker)); every other process holding it talks to that broker
//! over authenticated local-socket [`Connection`](crate::Connection)s. The
//! owner's own handles use the queue in memory. See `docs/architecture.md`
//! ("Queue") for the design and what it survives, and `mproc::guide` for
//! the Python → Rust table.

mod acks;
mod broker;
mod client;
mod core;
mod exit;
mod feeder;
mod joinable;
mod lane;
mod large;
mod parked;
mod recycle;
mod wire;

pub use self::joinable::{JoinableQueue, SimpleQueue};

use crate::util::lock::lock;
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use serde::de::{DeserializeOwned, Deserializer};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};

use self::client::{LaneAnswer, PutFail, Received, Remote};
use self::core::{Item, Shared, Stored, Taken};
use self::lane::Lane;
use crate::{tag, Address, Error, PutError, Result};

/// A FIFO queue shared by processes: CPython's `multiprocessing.Queue`.
///
/// Create it with [`Queue::new`] (`0` = unbounded), pass clones of it to
/// child processes in a target's arguments (or inside other messages,
/// even other queues' items), and `put`/`get` from any of them. Items are
/// any `Serialize + DeserializeOwned` type; an item of another type than
/// the one asked for is [`Error::TypeMismatch`], never garbage.
///
/// Every method takes `&self`; `Queue<T>` is `Clone + Send + Sync`, so
/// threads share it as they share a CPython queue. [`close`](Self::close)
/// is per process: it closes this process's clones, not the queue.
///
/// The creating process serves the queue: if it ends, the other holders'
/// `put`s are [`PutError::Disconnected`] and their `get`s
/// [`Error::Disconnected`], never a hang. Any other holder may die at any
/// moment without harming the queue: an item a dying consumer had
/// received but not taken goes back to the front, and a producer killed
/// in the middle of a put leaves nothing behind.
///
/// A small bounded queue (`1 <= maxsize <= 128`) that other processes use
/// moves its items through a ring in shared memory that each holder maps,
/// as CPython's does, not through the creating process: same guarantees,
/// several times faster, and a stopped (not dead) creator holds nobody
/// up. The first item that does not fit a slot (over 504 encoded bytes),
/// or a holder on another host, sends the queue back through the creator
/// for good, its items first and in order (the guide: "Small bounded
/// queues go through shared memory").
///
/// ```
/// use mproc_ipc::{Error, PutError, Queue};
///
/// let q = Queue::<Option<String>>::new(2)?;
/// q.put(Some("a".to_string())).unwrap();
/// q.put(Some("b".to_string())).unwrap();
/// assert!(q.full());
/// // A full queue hands the item back.
/// match q.put_nowait(None) {
///     Err(PutError::Full(item)) => assert_eq!(item, None),
///     other => panic!("{other:?}"),
/// }
/// assert_eq!(q.qsize(), 2);
///
/// // Clones are the same queue, in this thread or another.
/// let q2 = q.clone();
/// let t = std::thread::spawn(move || q2.get());
/// assert_eq!(t.join().unwrap()?, Some("a".to_string()));
/// assert_eq!(q.get()?, Some("b".to_string()));
/// assert!(matches!(q.get_nowait(), Err(Error::Empty)));
///
/// q.close();
/// assert!(q.get().unwrap_err().to_string().contains("is closed"));
/// # Ok::<(), mproc_ipc::Error>(())
/// ```
///
/// Across processes (with the `mproc` crate), the seed's producer and
/// consumer, `None` being the stop signal:
///
/// ```ignore
/// #[mproc::target]
/// fn consumer(q: mproc::Queue<Option<String>>, name: String) {
///     while let Ok(Some(item)) = q.get() {
///         println!("[consumer {name}] received item: {item}");
///     }
/// }
///
/// #[mproc::main]
/// fn main() -> mproc::Result<()> {
///     let q = mproc::Queue::new(3)?;
///     let mut c = mproc::Process::new(consumer, (q.clone(), "C1".to_string()));
///     c.start()?;
///     q.put(Some("P1-0".to_string()))?;
///     q.put(None)?;
///     c.join()
/// }
/// ```
pub struct Queue<T> {
    inner: Arc<Inner>,
    _item: PhantomData<fn(T) -> T>,
}

/// One process's hold on a queue, shared by its clones in this process.
struct Inner {
    id: u64,
    maxsize: usize,
    address: Address,
    key: Vec<u8>,
    closed: AtomicBool,
    cancelled: AtomicBool,
    link: Link,
    lane: LaneHold,
}

/// This hold's use of the queue's shared-memory [`lane`] (small bounded
/// queues).
#[derive(Default)]
struct LaneHold {
    /// A holder in another process: the ring, once asked for (`None`:
    /// the queue has none).
    ring: OnceLock<Option<Arc<Lane>>>,
    /// This hold went through the broker for an item: never the lane
    /// again (an item of its own still on its way there could be
    /// overtaken by a later one put through the ring).
    gave_up: AtomicBool,
}

impl LaneHold {
    /// A hold that never uses the lane (tests of the broker's paths).
    #[cfg(test)]
    fn never() -> LaneHold {
        LaneHold {
            ring: OnceLock::new(),
            gave_up: AtomicBool::new(true),
        }
    }
}

enum Link {
    /// This process owns the queue.
    Owner(Arc<Shared>),
    /// Another process does.
    Remote(Remote),
}

/// What a serialised handle carries: where the broker is, how to prove
/// the right to talk to it, and which of its queues this is.
#[derive(Serialize, Deserialize)]
struct Handle {
    address: Address,
    key: Vec<u8>,
    maxsize: u64,
    id: u64,
}

/// This process's holds, by queue id: one per queue, whichever way its
/// handles arrived (CPython has one Queue object per process).
static HOLDS: Mutex<Vec<(u64, Weak<Inner>)>> = Mutex::new(Vec::new());

fn holds() -> MutexGuard<'static, Vec<(u64, Weak<Inner>)>> {
    lock(&HOLDS)
}

/// The live holds of this process (for the exit hook).
fn live_holds() -> Vec<Arc<Inner>> {
    holds().iter().filter_map(|(_, w)| w.upgrade()).collect()
}

/// Encodes an item as a typed payload (see [`tag`]); a refusal keeps its
/// reason (a `Connection` outside a launch, a `Serialize` impl's text).
fn encode<T: Serialize>(item: &T, out: &mut Vec<u8>) -> Result<()> {
    tag::encode(item, out)
}

fn deadline(timeout: Option<Duration>) -> Option<Instant> {
    timeout.and_then(|t| Instant::now().checked_add(t))
}

impl Inner {
    fn register(inner: Inner) -> Arc<Inner> {
        exit::install();
        let inner = Arc::new(inner);
        let mut holds = holds();
        holds.retain(|(_, w)| w.strong_count() > 0);
        holds.push((inner.id, Arc::downgrade(&inner)));
        inner
    }

    /// The hold a deserialised handle names: this process's existing one,
    /// or a new one (in memory if this process owns the queue).
    fn attach(h: Handle) -> Arc<Inner> {
        exit::install();
        let mut holds = holds();
        if let Some(inner) = holds
            .iter()
            .find(|(id, _)| *id == h.id)
            .and_then(|(_, w)| w.upgrade())
        {
            return inner;
        }
        let maxsize = usize::try_from(h.maxsize).unwrap_or(usize::MAX);
        let owned = broker::running()
            .filter(|b| b.key() == h.key.as_slice() && b.address() == &h.address)
            .and_then(|b| b.queue(h.id));
        let link = match owned {
            Some(shared) => Link::Owner(shared),
            None => Link::Remote(Remote::new(h.id, maxsize, h.address.clone(), h.key.clone())),
        };
        let inner = Arc::new(Inner {
            id: h.id,
            maxsize,
            address: h.address,
            key: h.key,
            closed: AtomicBool::new(false),
            cancelled: AtomicBool::new(false),
            link,
            lane: LaneHold::default(),
        });
        holds.retain(|(_, w)| w.strong_count() > 0);
        holds.push((inner.id, Arc::downgrade(&inner)));
        inner
    }

    fn closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// The lane to use now, if the queue has one on: the owner's (once
    /// made), or, for a holder in another process, asked for on its first
    /// call (by that call's `timeout`: `Err(true)` it did not come in
    /// time, `Err(false)` the owner is gone).
    fn lane(&self, timeout: Option<Duration>) -> std::result::Result<Option<&Lane>, bool> {
        if self.maxsize == 0 || self.lane.gave_up.load(Ordering::Acquire) {
            return Ok(None);
        }
        match &self.link {
            Link::Owner(shared) => Ok(shared.lane().map(|l| &**l)),
            Link::Remote(r) => {
                // A holder over TCP (on another host) cannot map the ring:
                // it goes through the broker (which ends the lane).
                if !lane::eligible(self.maxsize) || matches!(self.address, Address::Tcp(_)) {
                    return Ok(None);
                }
                // Borrowed from this hold: no reference count per call.
                if let Some(got) = self.lane.ring.get() {
                    return Ok(on(got));
                }
                let got = match r.ask_lane(timeout) {
                    LaneAnswer::Lane(t) => match Lane::receive(&t, self.maxsize) {
                        Ok(l) => Some(Arc::new(l)),
                        Err(e) => {
                            tracing::debug!("queue lane refused, the broker serves: {e}");
                            None
                        }
                    },
                    LaneAnswer::None => None,
                    LaneAnswer::Late => return Err(true),
                    LaneAnswer::Gone => return Err(false),
                };
                Ok(on(self.lane.ring.get_or_init(|| got)))
            }
        }
    }

    /// This hold goes through the broker from now on; the owner's own
    /// hold switches the lane off itself (another process's first request
    /// to the broker does).
    fn give_up_lane(&self) {
        self.lane.gave_up.store(true, Ordering::Release);
        if let Link::Owner(shared) = &self.link {
            shared.lane_off();
        }
    }

    /// Puts the item made of what `write` appends followed by `tail`.
    fn put(
        &self,
        timeout: Option<Duration>,
        write: impl FnOnce(&mut Vec<u8>) -> Result<()>,
        tail: &[u8],
    ) -> Result<(), PutFail> {
        let until = deadline(timeout);
        let lane = match self.lane(timeout) {
            Ok(l) => l,
            Err(true) => return Err(PutFail::Full),
            Err(false) => return Err(PutFail::Disconnected),
        };
        let Some(lane) = lane else {
            return self.put_via_broker(timeout, until, write, tail);
        };
        if tail.len() > lane::SLOT_ITEM {
            self.give_up_lane();
            return self.put_via_broker(timeout, until, write, tail);
        }
        let mut buf = Vec::new();
        write(&mut buf).map_err(PutFail::Encode)?;
        buf.extend_from_slice(tail);
        if buf.len() <= lane::SLOT_ITEM {
            match lane.put(&buf, until) {
                lane::Put::Done | lane::Put::DoneQuietly => return Ok(()),
                lane::Put::Full => return Err(PutFail::Full),
                lane::Put::Dead => return Err(PutFail::Disconnected),
                lane::Put::Off => {}
            }
        }
        self.give_up_lane();
        self.put_via_broker(
            timeout,
            until,
            |out| {
                out.extend_from_slice(&buf);
                Ok(())
            },
            &[],
        )
    }

    fn put_via_broker(
        &self,
        _timeout: Option<Duration>,
        until: Option<Instant>,
        write: impl FnOnce(&mut Vec<u8>) -> Result<()>,
        tail: &[u8],
    ) -> Result<(), PutFail> {
        match &self.link {
            Link::Owner(shared) => {
                let mut buf = Vec::new();
                write(&mut buf).map_err(PutFail::Encode)?;
                buf.extend_from_slice(tail);
                self.owner_put(shared, Item::whole(buf), until)
            }
            Link::Remote(r) => r.put(
                until.map(|d| d.saturating_duration_since(Instant::now())),
                write,
                tail,
            ),
        }
    }

    /// The owner's own put, once encoded.
    fn owner_put(
        &self,
        shared: &Shared,
        item: Item,
        until: Option<Instant>,
    ) -> Result<(), PutFail> {
        loop {
            match shared.put(item.clone(), until, &|| true) {
                Stored::Done => return Ok(()),
                Stored::Full => return Err(PutFail::Full),
                Stored::Abandoned => return Err(PutFail::Disconnected),
                // Made while this put waited: through it.
                Stored::Lane => match shared.lane().map(|l| l.put(item.bytes(), until)) {
                    Some(lane::Put::Done | lane::Put::DoneQuietly) => return Ok(()),
                    Some(lane::Put::Full) => return Err(PutFail::Full),
                    Some(lane::Put::Dead) => return Err(PutFail::Disconnected),
                    Some(lane::Put::Off) | None => self.give_up_lane(),
                },
            }
        }
    }

    fn get<T: DeserializeOwned>(&self, timeout: Option<Duration>) -> Result<T> {
        if self.closed() {
            return Err(Error::QueueClosed);
        }
        let until = deadline(timeout);
        loop {
            let lane = match self.lane(timeout) {
                Ok(l) => l,
                Err(true) => return Err(Error::Empty),
                Err(false) => return Err(Error::Disconnected),
            };
            if let Some(lane) = lane {
                let mut buf = Vec::new();
                match lane.get(&mut buf, until) {
                    lane::Got::Item | lane::Got::ItemQuietly => return tag::decode(&buf),
                    lane::Got::Empty => return Err(Error::Empty),
                    lane::Got::Dead => return Err(Error::Disconnected),
                    lane::Got::Off => self.give_up_lane(),
                }
            }
            match &self.link {
                Link::Owner(shared) => match shared.take(None, 1, until, &|| true) {
                    Taken::Items(items) => {
                        return match items.first() {
                            Some(item) => tag::decode(&item.content()),
                            None => Err(Error::Empty),
                        }
                    }
                    Taken::Empty | Taken::Abandoned => return Err(Error::Empty),
                    // Made while this get waited: through it.
                    Taken::Lane => continue,
                },
                Link::Remote(r) => {
                    return r.get_with(
                        until.map(|d| d.saturating_duration_since(Instant::now())),
                        tag::bulk::shape_of::<T>(),
                        tag::decode,
                        Received::decode,
                    )?
                }
            }
        }
    }

    fn task_done(&self) -> Result<()> {
        match &self.link {
            Link::Owner(shared) => {
                if shared.task_done() {
                    Ok(())
                } else {
                    Err(Error::TaskDoneTooManyTimes)
                }
            }
            Link::Remote(r) => r.task_done(),
        }
    }

    fn join(&self) -> Result<()> {
        match &self.link {
            Link::Owner(shared) => {
                shared.join(&|| true);
                Ok(())
            }
            Link::Remote(r) => r.join(),
        }
    }

    fn qsize(&self) -> usize {
        if let Ok(Some(n)) = self.lane(None).map(|l| l.and_then(|l| l.qsize())) {
            return n;
        }
        match &self.link {
            Link::Owner(shared) => {
                // Items another process's `get` returned count out, also
                // when its acks are only on its ack page so far.
                if let Some(b) = broker::running() {
                    b.read_acks(self.id, shared);
                }
                shared.qsize()
            }
            Link::Remote(r) => r.qsize().unwrap_or_else(|e| {
                tracing::debug!("qsize: {e}");
                0
            }),
        }
    }
}

/// A ring that is still on, borrowed from where the hold keeps it.
fn on(l: &Option<Arc<Lane>>) -> Option<&Lane> {
    l.as_deref().filter(|l| l.on())
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Link::Remote(r) = &self.link {
            r.shutdown(!self.cancelled.load(Ordering::Acquire));
        }
    }
}

impl<T> Queue<T> {
    /// A new queue of at most `maxsize` items; `0` means unbounded (as
    /// CPython's `maxsize <= 0`). This process serves it: the first queue
    /// a process creates starts its broker (a listener on a fresh local
    /// socket and a thread), which fails only if the OS refuses them.
    pub fn new(maxsize: usize) -> Result<Queue<T>> {
        Queue::serving(Shared::new(maxsize))
    }

    /// A new queue served by this process, with the state `shared`.
    fn serving(shared: Shared) -> Result<Queue<T>> {
        let maxsize = shared.maxsize();
        let broker = broker::get_or_start()?;
        let mut id = [0u8; 8];
        getrandom::getrandom(&mut id).map_err(|e| {
            Error::Io(std::io::Error::other(format!(
                "cannot read random bytes: {e}"
            )))
        })?;
        let id = u64::from_ne_bytes(id);
        let shared = Arc::new(shared);
        broker.register(id, shared.clone());
        tracing::debug!(id, maxsize, "queue created");
        Ok(Queue::from_inner(Inner::register(Inner {
            id,
            maxsize,
            address: broker.address().clone(),
            key: broker.key().to_vec(),
            closed: AtomicBool::new(false),
            cancelled: AtomicBool::new(false),
            link: Link::Owner(shared),
            lane: LaneHold::default(),
        })))
    }

    fn from_inner(inner: Arc<Inner>) -> Queue<T> {
        Queue {
            inner,
            _item: PhantomData,
        }
    }

    /// The number of items in the queue (CPython's `qsize()`).
    ///
    /// Exact within one process after its own puts and gets: a process's
    /// earlier puts are counted before it asks. Items a consumer received
    /// but has not taken yet are counted; across processes the figure can
    /// be stale by what others did meanwhile, as with CPython (and it can
    /// still count, for a moment, items another process took since its
    /// last exchange with the owner). `0` when the owner is gone.
    pub fn qsize(&self) -> usize {
        self.inner.qsize()
    }

    /// Whether the queue is empty (`qsize() == 0`; same exactness).
    pub fn empty(&self) -> bool {
        self.qsize() == 0
    }

    /// Whether the queue is full (`qsize() >= maxsize` for a bounded
    /// queue; always false for an unbounded one). Exact right after this
    /// process filled it.
    pub fn full(&self) -> bool {
        self.inner.maxsize > 0 && self.qsize() >= self.inner.maxsize
    }

    /// Closes the queue *for this process* (CPython's `close()`): later
    /// `put`s are [`PutError::Closed`] and `get`s [`Error::QueueClosed`]
    /// ("Queue is closed"), in every clone in this process. Items this
    /// process already put are still delivered; items it had received
    /// and not taken go back to the queue for the others. Idempotent.
    pub fn close(&self) {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Link::Remote(r) = &self.inner.link {
            r.settle_all();
        }
    }

    /// Waits until every item this process put is handed over to the
    /// owner (CPython's `join_thread()`). An error before
    /// [`close`](Self::close), as CPython asserts; [`Error::Disconnected`]
    /// if the owner went away first. Dropping the last handle and process
    /// exit wait the same way, unless
    /// [`cancel_join_thread`](Self::cancel_join_thread) was called.
    pub fn join_thread(&self) -> Result<()> {
        if !self.inner.closed() {
            return Err(Error::NotClosed);
        }
        match &self.inner.link {
            Link::Owner(_) => Ok(()),
            Link::Remote(r) => r.flush(),
        }
    }

    /// Lets this process exit (or drop its last handle) without waiting
    /// for its items to be handed over (CPython's `cancel_join_thread()`):
    /// items put just before may then be lost. This is the only way a put
    /// that returned `Ok` can be lost while the owner lives.
    pub fn cancel_join_thread(&self) {
        self.inner.cancelled.store(true, Ordering::Release);
    }
}

impl<T: Serialize> Queue<T> {
    /// Puts `item`, waiting while the queue is full (CPython's `put`).
    ///
    /// Errors hand the item back: [`PutError::Closed`] after `close()` in
    /// this process, [`PutError::Encode`] when it does not serialise (the
    /// queue is unharmed), [`PutError::Disconnected`] when the owner is
    /// gone. `Ok` means the item is on its way: nothing put is lost when
    /// this process exits right after (see
    /// [`join_thread`](Self::join_thread)).
    pub fn put(&self, item: T) -> Result<(), PutError<T>> {
        self.put_with(item, None)
    }

    /// Puts `item`, waiting at most `timeout` while the queue is full
    /// (CPython's `put(item, timeout=t)`); still full then:
    /// [`PutError::Full`] with the item.
    pub fn put_timeout(&self, item: T, timeout: Duration) -> Result<(), PutError<T>> {
        self.put_with(item, Some(timeout))
    }

    /// Puts `item` only if there is room now (CPython's `put_nowait`); a
    /// full queue is [`PutError::Full`] at once, with the item.
    pub fn put_nowait(&self, item: T) -> Result<(), PutError<T>> {
        self.put_with(item, Some(Duration::ZERO))
    }

    fn put_with(&self, item: T, timeout: Option<Duration>) -> Result<(), PutError<T>> {
        if self.inner.closed() {
            return Err(PutError::Closed(item));
        }
        // A large byte sequence: its tag here, its body copied once, by
        // the feeder, into the memory object it travels in.
        let put = match tag::bulk::as_bytes(&item).filter(|b| b.len() >= large::THRESHOLD) {
            Some(body) => self.inner.put(
                timeout,
                |out| {
                    tag::bulk_tag::<T>(body, out);
                    Ok(())
                },
                body,
            ),
            None => self.inner.put(timeout, |out| encode(&item, out), &[]),
        };
        match put {
            Ok(()) => Ok(()),
            Err(PutFail::Full) => Err(PutError::Full(item)),
            Err(PutFail::Encode(e)) => Err(PutError::Encode(item, e)),
            Err(PutFail::Disconnected) => Err(PutError::Disconnected(item)),
        }
    }
}

impl<T: DeserializeOwned> Queue<T> {
    /// Takes the oldest item, waiting as long as it takes (CPython's
    /// `get()`). With no producer left this waits forever, as in CPython:
    /// use [`get_timeout`](Self::get_timeout) to bound it.
    ///
    /// Errors: [`Error::QueueClosed`] after `close()` in this process,
    /// [`Error::Disconnected`] when the owner is gone,
    /// [`Error::TypeMismatch`] for an item put as another type (the item
    /// is consumed).
    pub fn get(&self) -> Result<T> {
        self.inner.get(None)
    }

    /// Takes the oldest item, waiting at most `timeout` (CPython's
    /// `get(timeout=t)`); nothing by then: [`Error::Empty`]. A get that
    /// times out takes nothing: no item is ever stranded.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        self.inner.get(Some(timeout))
    }

    /// Takes the oldest item if there is one now (CPython's
    /// `get_nowait()`), else [`Error::Empty`] at once.
    pub fn get_nowait(&self) -> Result<T> {
        self.inner.get(Some(Duration::ZERO))
    }
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue::from_inner(self.inner.clone())
    }
}

impl<T> fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("maxsize", &self.inner.maxsize)
            .field("owner", &matches!(self.inner.link, Link::Owner(_)))
            .field("address", &self.inner.address)
            .field("closed", &self.inner.closed())
            .finish()
    }
}

/// A queue serialises as a handle: its owner's address and key, its
/// maxsize and id (no OS handle travels). The key is the right to use the
/// queue: handles are meant to travel only inside launches and other
/// mproc messages, never to be written where others can read them.
impl<T> Serialize for Queue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let address = match (crate::handles::remote_host(), &self.inner.address) {
            (None, a) | (Some(_), a @ Address::Tcp(_)) => a.clone(),
            // Into a launch for another host: the broker's TCP address.
            (Some(host), local) => match broker::running().filter(|b| b.address() == local) {
                Some(b) => b.tcp_address(&host).map_err(serde::ser::Error::custom)?,
                None => {
                    return Err(serde::ser::Error::custom(
                        "a queue received from another process cannot be passed to a \
                         child on another host (only its owner's broker serves TCP)",
                    ))
                }
            },
        };
        Handle {
            address,
            key: self.inner.key.clone(),
            maxsize: self.inner.maxsize as u64,
            id: self.inner.id,
        }
        .serialize(s)
    }
}

/// Deserialising a handle gives this process's hold on the queue: the
/// one it already has (so `close()` stays per process), or a new one.
impl<'de, T> Deserialize<'de> for Queue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let h = Handle::deserialize(d)?;
        Ok(Queue::from_inner(Inner::attach(h)))
    }
}

/// Tests: a second hold on `q` in this process that goes through the
/// broker as another process's would (a [`Remote`], never the hold this
/// process already has).
#[cfg(test)]
fn remote_hold<T>(q: &Queue<T>) -> Queue<T> {
    let h: Handle = postcard::from_bytes(&postcard::to_stdvec(q).unwrap()).unwrap();
    let maxsize = q.inner.maxsize;
    Queue::from_inner(Arc::new(Inner {
        id: h.id,
        maxsize,
        address: h.address.clone(),
        key: h.key.clone(),
        closed: AtomicBool::new(false),
        cancelled: AtomicBool::new(false),
        link: Link::Remote(Remote::new(h.id, maxsize, h.address.clone(), h.key.clone())),
        lane: LaneHold::never(),
    }))
}

#[cfg(test)]
mod put_wait_tests;

#[cfg(test)]
mod order_tests;

#[cfg(test)]
mod dial_tests;

#[cfg(test)]
mod sealed_tests;

#[cfg(test)]
mod on_send_tests;

#[cfg(test)]
mod unbounded_ack_tests;

#[cfg(test)]
mod remote_tests {
    use super::*;
    use crate::Client;

    /// A holder over TCP (on another host) never maps the lane: its first
    /// request goes to the broker, which ends the lane with the ring's
    /// items first, in order.
    #[test]
    fn a_holder_over_tcp_goes_through_the_broker_and_ends_the_lane() {
        let q: Queue<u32> = Queue::new(3).unwrap();
        let Link::Owner(shared) = &q.inner.link else {
            panic!("not the owner")
        };
        // A local holder asked for the lane: the owner's puts go there.
        assert!(shared.open_lane().is_some());
        q.put(1).unwrap();
        assert!(shared.lane().is_some_and(|l| l.qsize() == Some(1)));
        let bytes =
            crate::handles::encode_for_remote("127.0.0.1", || postcard::to_stdvec(&q)).unwrap();
        let h: Handle = postcard::from_bytes(&bytes).unwrap();
        assert!(matches!(h.address, Address::Tcp(_)));
        let tcp = Queue::<u32>::from_inner(Arc::new(Inner {
            id: h.id,
            maxsize: 3,
            address: h.address.clone(),
            key: h.key.clone(),
            closed: AtomicBool::new(false),
            cancelled: AtomicBool::new(false),
            link: Link::Remote(Remote::new(h.id, 3, h.address.clone(), h.key.clone())),
            lane: LaneHold::default(),
        }));
        tcp.put(2).unwrap();
        assert_eq!(tcp.get_timeout(Duration::from_secs(20)).unwrap(), 1);
        assert!(shared.lane().is_none(), "the lane ended");
        assert_eq!(q.get_timeout(Duration::from_secs(20)).unwrap(), 2);
        assert!(
            tcp.inner.lane.ring.get().is_none(),
            "never asked for over TCP"
        );
    }

    /// Encoded for a child on another host, a queue handle carries its
    /// broker's TCP address, served with the queue's key and handshake:
    /// the right key is welcomed, a wrong one refused.
    #[test]
    fn a_queue_encoded_for_another_host_carries_a_tcp_address_behind_its_key() {
        let q: Queue<u32> = Queue::new(0).unwrap();
        let local = postcard::to_stdvec(&q).unwrap();
        let local: Handle = postcard::from_bytes(&local).unwrap();
        assert!(matches!(local.address, Address::Local(_)));
        let bytes =
            crate::handles::encode_for_remote("127.0.0.1", || postcard::to_stdvec(&q)).unwrap();
        let h: Handle = postcard::from_bytes(&bytes).unwrap();
        let Address::Tcp(addr) = &h.address else {
            panic!("not a TCP address: {:?}", h.address);
        };
        assert_eq!(addr.ip().to_string(), "127.0.0.1");
        assert_eq!(h.key, local.key);
        assert!(Client::connect(&h.address, Some(&h.key)).is_ok());
        assert!(Client::connect(&h.address, Some(b"not the key")).is_err());
        // The same listener the second time.
        let again =
            crate::handles::encode_for_remote("127.0.0.1", || postcard::to_stdvec(&q)).unwrap();
        let again: Handle = postcard::from_bytes(&again).unwrap();
        assert_eq!(again.address, h.address);
    }
}
