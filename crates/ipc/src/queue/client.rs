//! A process's side of a queue another process owns.
//!
//! Requests go over a pool of connections to the owner's broker: an
//! operation takes an idle connection (or opens one), and gives it back
//! when done, so threads blocked in `get` never wait for each other.
//! Puts to an unbounded queue go through the [feeder](super::feeder).
//!
//! A `get` asks for up to a few items at once when this process has been
//! taking them quickly (about what it takes in half a millisecond); the
//! extras wait in a local buffer that later `get`s of this process take
//! from. The broker counts them in the queue until this process says they
//! were taken (an *ack*: with its next request, or on its own once every
//! item of a delivery is taken). Extras never wait while others could use
//! them: they go straight back when another thread of this process is
//! already waiting at the broker, a janitor thread gives them back once
//! this process has taken nothing for 50 ms, closing or dropping the queue
//! gives back the rest, and if the process dies, the broker puts back
//! everything not acknowledged. An item given back goes to the front of
//! the queue: a consumer that meanwhile took later items then sees it
//! after them (the one exception to FIFO order, with a consumer's death).

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::queue::feeder::{FeedError, Feeder};
use crate::queue::wire::{self, Reply, Role};
use crate::{Address, Client, Connection, Error, Result};

/// A local buffer holds about what this process takes in this long.
const PREFETCH_WINDOW: Duration = Duration::from_micros(500);
/// Buffered items go back to the queue for the others when this process
/// has taken none for this long.
const HOLD_LIMIT: Duration = Duration::from_millis(50);
/// At most this many items are asked for at once.
const MOST: u32 = 1024;

/// Why a put failed (the caller hands the item back).
pub(crate) enum PutFail {
    Full,
    Encode(Error),
    Disconnected,
}

/// An open connection to the broker and the id the broker gave it.
struct Link {
    conn: Connection,
    id: u64,
    /// A one-way message went out since the last answer: a `SYNC` makes
    /// sure the broker has seen it.
    unsynced: bool,
}

/// An item received and not yet taken.
struct Buffered {
    conn: u64,
    frame: Arc<Vec<u8>>,
    range: Range<usize>,
    at: Instant,
}

/// A received item: a range of the message it came in.
pub(crate) struct Received {
    frame: Arc<Vec<u8>>,
    range: Range<usize>,
}

impl Received {
    pub(crate) fn bytes(&self) -> &[u8] {
        self.frame.get(self.range.clone()).unwrap_or(&[])
    }
}

/// Small maps from connection id to a count.
#[derive(Default)]
struct Counts(Vec<(u64, u32)>);

impl Counts {
    fn add(&mut self, conn: u64, n: u32) {
        match self.0.iter_mut().find(|(c, _)| *c == conn) {
            Some((_, k)) => *k = k.saturating_add(n),
            None => self.0.push((conn, n)),
        }
    }

    fn sub(&mut self, conn: u64, n: u32) {
        if let Some(i) = self.0.iter().position(|(c, _)| *c == conn) {
            self.0[i].1 = self.0[i].1.saturating_sub(n);
            if self.0[i].1 == 0 {
                self.0.swap_remove(i);
            }
        }
    }

    fn get(&self, conn: u64) -> u32 {
        self.0
            .iter()
            .find(|(c, _)| *c == conn)
            .map_or(0, |(_, k)| *k)
    }

    fn take(&mut self, conn: u64) -> u32 {
        match self.0.iter().position(|(c, _)| *c == conn) {
            Some(i) => self.0.swap_remove(i).1,
            None => 0,
        }
    }

    fn take_all(&mut self) -> Vec<(u64, u32)> {
        std::mem::take(&mut self.0)
    }

    fn conns(&self) -> Vec<u64> {
        self.0.iter().map(|(c, _)| *c).collect()
    }
}

/// What this process received and has not yet acknowledged.
#[derive(Default)]
struct Inbox {
    buffer: VecDeque<Buffered>,
    /// Items in `buffer`, per connection.
    buffered: Counts,
    /// Items taken and not yet acknowledged, per connection.
    owed: Counts,
    /// When the last delivery came and how many items it had.
    last_delivery: Option<(Instant, usize)>,
    /// When this process last took an item.
    last_take: Option<Instant>,
    /// Threads of this process waiting for the broker's answer to a get.
    at_broker: usize,
    janitor_started: bool,
    /// The janitor waits for items to watch.
    janitor_idle: bool,
    stop: bool,
}

impl Inbox {
    /// Takes the oldest buffered item; returns it, and its connection if
    /// that was the last buffered item it delivered.
    fn pop(&mut self) -> Option<(Received, Option<u64>)> {
        let b = self.buffer.pop_front()?;
        self.last_take = Some(Instant::now());
        self.buffered.sub(b.conn, 1);
        self.owed.add(b.conn, 1);
        let drained = (self.buffered.get(b.conn) == 0).then_some(b.conn);
        Some((
            Received {
                frame: b.frame,
                range: b.range,
            },
            drained,
        ))
    }

    /// How many items to ask for: about what this process took in the
    /// last [`PREFETCH_WINDOW`], going by how fast it went through the
    /// last delivery; one after a pause or when `single`.
    fn want(&self, single: bool) -> u32 {
        if single {
            return 1;
        }
        let Some((at, n)) = self.last_delivery else {
            return 1;
        };
        let spent = at.elapsed().as_secs_f64().max(1e-7);
        let rate = n as f64 / spent;
        (rate * PREFETCH_WINDOW.as_secs_f64()).clamp(1.0, f64::from(MOST)) as u32
    }

    /// Accounts for giving back everything buffered from `conn` and
    /// acknowledging what was taken from it: returns (taken, returned).
    fn settle(&mut self, conn: u64) -> (u32, u32) {
        let returned = self.buffered.take(conn);
        if returned > 0 {
            self.buffer.retain(|b| b.conn != conn);
        }
        (self.owed.take(conn), returned)
    }
}

/// The connections and received items of one process's hold, shared with
/// its janitor thread.
struct Holdings {
    idle: Mutex<Vec<Link>>,
    inbox: Mutex<Inbox>,
    janitor: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Any failure to talk to the broker: it is gone (or never answers again).
fn gone(what: &str, e: impl std::fmt::Display) -> Error {
    tracing::debug!("queue broker unreachable ({what}): {e}");
    Error::Disconnected
}

impl Holdings {
    fn checkin(&self, link: Link) {
        lock(&self.idle).push(link);
    }

    /// Takes the idle connection `conn`, if it is idle.
    fn take_idle(&self, conn: u64) -> Option<Link> {
        let mut idle = lock(&self.idle);
        let i = idle.iter().position(|l| l.id == conn)?;
        Some(idle.swap_remove(i))
    }

    /// Acknowledges what was taken from `link` and gives back what is
    /// still buffered from it; with `sync`, waits until the broker has
    /// seen it (and every earlier one-way message on `link`). Returns the
    /// link unless it failed.
    fn settle_link(&self, mut link: Link, sync: bool) -> Option<Link> {
        let (taken, returned) = lock(&self.inbox).settle(link.id);
        if taken > 0 || returned > 0 {
            if let Err(e) = link.conn.send_bytes(&wire::settle(taken, returned)) {
                tracing::debug!("cannot settle with the queue broker: {e}");
                return None;
            }
            link.unsynced = true;
        }
        if sync && link.unsynced {
            let answer = link
                .conn
                .send_bytes(&[wire::SYNC])
                .and_then(|()| link.conn.recv_bytes());
            match answer {
                Ok(a) if a == [wire::SYNCED] => link.unsynced = false,
                other => {
                    tracing::debug!("cannot sync with the queue broker: {other:?}");
                    return None;
                }
            }
        }
        Some(link)
    }

    /// Settles every idle connection.
    fn settle_all(&self, sync: bool) {
        let links: Vec<Link> = std::mem::take(&mut *lock(&self.idle));
        let kept: Vec<Link> = links
            .into_iter()
            .filter_map(|l| self.settle_link(l, sync))
            .collect();
        lock(&self.idle).extend(kept);
    }

    /// Once every item a connection delivered is taken, tells the broker
    /// on that connection (if it is idle, or `held` is it): the items
    /// leave the queue at once, whether or not this process asks for more.
    fn settle_if_drained(&self, conn: u64, held: Option<Link>) {
        let Some(link) = held.or_else(|| self.take_idle(conn)) else {
            // Busy: the acks go with this process's next request.
            return;
        };
        let drained = lock(&self.inbox).buffered.get(conn) == 0;
        let link = if drained {
            self.settle_link(link, false)
        } else {
            Some(link)
        };
        if let Some(link) = link {
            self.checkin(link);
        }
    }

    /// The janitor: gives back the buffered items once this process has
    /// taken none for [`HOLD_LIMIT`], so that a process that stops taking
    /// does not keep them from the others.
    fn janitor(self: Arc<Self>) {
        let mut inbox = lock(&self.inbox);
        loop {
            if inbox.stop {
                return;
            }
            let Some(oldest) = inbox.buffer.front().map(|b| b.at) else {
                inbox.janitor_idle = true;
                inbox = self
                    .janitor
                    .wait(inbox)
                    .unwrap_or_else(PoisonError::into_inner);
                inbox.janitor_idle = false;
                continue;
            };
            let busy = inbox.last_take.map_or(oldest, |t| t.max(oldest));
            let age = busy.elapsed();
            if age < HOLD_LIMIT {
                inbox = self
                    .janitor
                    .wait_timeout(inbox, HOLD_LIMIT - age)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
                continue;
            }
            let conns = inbox.buffered.conns();
            drop(inbox);
            let mut settled = false;
            for conn in conns {
                if let Some(link) = self.take_idle(conn) {
                    if let Some(link) = self.settle_link(link, false) {
                        self.checkin(link);
                    }
                    settled = true;
                }
            }
            inbox = lock(&self.inbox);
            if !settled && !inbox.stop {
                // Every such connection is busy; look again later.
                inbox = self
                    .janitor
                    .wait_timeout(inbox, HOLD_LIMIT)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
        }
    }
}

/// A queue owned by another process, as this process holds it.
pub(crate) struct Remote {
    queue: u64,
    maxsize: usize,
    address: Address,
    key: Vec<u8>,
    /// Tells the broker which connections (and feeder) are this process's.
    session: u64,
    holdings: Arc<Holdings>,
    feeder: Mutex<Option<Arc<Feeder>>>,
}

impl Remote {
    pub(crate) fn new(queue: u64, maxsize: usize, address: Address, key: Vec<u8>) -> Remote {
        let mut session = [0u8; 8];
        // A failure leaves zeros: sessions then only differ by chance,
        // which costs a little precision in `qsize`, nothing else.
        let _ = getrandom::getrandom(&mut session);
        Remote {
            queue,
            maxsize,
            address,
            key,
            session: u64::from_ne_bytes(session),
            holdings: Arc::new(Holdings {
                idle: Mutex::new(Vec::new()),
                inbox: Mutex::new(Inbox::default()),
                janitor: Condvar::new(),
            }),
            feeder: Mutex::new(None),
        }
    }

    fn bounded(&self) -> bool {
        self.maxsize > 0
    }

    fn connect(&self, role: Role) -> Result<Link> {
        let conn = match Client::connect(&self.address, Some(&self.key)) {
            Ok(c) => c,
            Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                // A socket nobody listens at: its owner died.
                super::broker::remove_dead(&self.address);
                return Err(gone("connect", e));
            }
            Err(e) => return Err(gone("connect", e)),
        };
        conn.send_bytes(&wire::hello(self.queue, self.session, role))
            .map_err(|e| gone("hello", e))?;
        let answer = conn.recv_bytes().map_err(|e| gone("hello", e))?;
        match wire::parse_reply(&answer) {
            Ok(Reply::HelloOk { conn: id }) => Ok(Link {
                conn,
                id,
                unsynced: false,
            }),
            Ok(Reply::NoQueue) => Err(gone("hello", "the broker does not know this queue")),
            other => Err(gone("hello", format!("{other:?}"))),
        }
    }

    fn checkout(&self) -> Result<Link> {
        if let Some(link) = lock(&self.holdings.idle).pop() {
            return Ok(link);
        }
        self.connect(Role::Ops)
    }

    /// Sends a request and reads its answer. On failure the caller drops
    /// the connection (the broker then puts back what it had in flight
    /// there).
    fn request(&self, link: &mut Link, msg: &[u8]) -> Result<Vec<u8>> {
        link.conn.send_bytes(msg).map_err(|e| gone("send", e))?;
        let answer = link.conn.recv_bytes().map_err(|e| gone("receive", e))?;
        link.unsynced = false;
        Ok(answer)
    }

    /// The barrier a request carries: the last batch of this process's
    /// feeder, once written.
    fn barrier(&self) -> Result<u64> {
        let feeder = lock(&self.feeder).clone();
        match feeder {
            None => Ok(0),
            Some(f) => f.flush().map_err(|_| Error::Disconnected),
        }
    }

    fn feeder(&self) -> Result<Arc<Feeder>> {
        let mut slot = lock(&self.feeder);
        if let Some(f) = slot.as_ref() {
            return Ok(f.clone());
        }
        let link = self.connect(Role::Feeder)?;
        let f = Feeder::start(link.conn).map_err(|e| gone("feeder thread", e))?;
        *slot = Some(f.clone());
        Ok(f)
    }

    /// Puts the item `write` encodes.
    pub(crate) fn put(
        &self,
        timeout: Option<Duration>,
        write: impl FnOnce(&mut Vec<u8>) -> Result<()>,
    ) -> Result<(), PutFail> {
        if !self.bounded() {
            // Never full: hand it to the feeder.
            let feeder = self.feeder().map_err(|_| PutFail::Disconnected)?;
            return feeder.put(write).map_err(|e| match e {
                FeedError::Encode(e) => PutFail::Encode(e),
                FeedError::Disconnected => PutFail::Disconnected,
            });
        }
        let msg = wire::put(timeout, write).map_err(PutFail::Encode)?;
        let mut link = self.checkout().map_err(|_| PutFail::Disconnected)?;
        let answer = self
            .request(&mut link, &msg)
            .map_err(|_| PutFail::Disconnected)?;
        let result = match wire::parse_reply(&answer) {
            Ok(Reply::PutOk) => Ok(()),
            Ok(Reply::Full) => Err(PutFail::Full),
            other => {
                tracing::warn!("unexpected answer to a put: {other:?}");
                return Err(PutFail::Disconnected);
            }
        };
        self.holdings.checkin(link);
        result
    }

    /// Takes one item: from this process's buffer, else from the broker
    /// (waiting up to `timeout`; `None` waits forever).
    pub(crate) fn get(&self, timeout: Option<Duration>) -> Result<Received> {
        let h = &self.holdings;
        {
            let mut inbox = lock(&h.inbox);
            if let Some((item, drained)) = inbox.pop() {
                drop(inbox);
                if let Some(conn) = drained {
                    h.settle_if_drained(conn, None);
                }
                return Ok(item);
            }
            // Counted from the moment the buffer was found empty: extras
            // another thread receives meanwhile go back to the broker,
            // where this thread's request can get them.
            inbox.at_broker += 1;
        }
        let exchanged = self.ask(timeout);
        let mut inbox = lock(&h.inbox);
        inbox.at_broker -= 1;
        let (mut link, frame, ranges) = exchanged?;
        let frame = Arc::new(frame);
        let mut ranges = ranges.into_iter();
        let first = ranges.next().unwrap_or(0..0);
        inbox.owed.add(link.id, 1);
        let extras: Vec<Range<usize>> = ranges.collect();
        let now = Instant::now();
        inbox.last_delivery = Some((now, 1 + extras.len()));
        inbox.last_take = Some(now);
        let mut give_back = 0;
        if inbox.at_broker > 0 {
            give_back = extras.len() as u32;
        } else if !extras.is_empty() {
            let at = now;
            inbox.buffered.add(link.id, extras.len() as u32);
            for range in extras {
                inbox.buffer.push_back(Buffered {
                    conn: link.id,
                    frame: frame.clone(),
                    range,
                    at,
                });
            }
            if !inbox.janitor_started {
                inbox.janitor_started = true;
                let holdings = h.clone();
                let started = std::thread::Builder::new()
                    .name("mproc-queue-janitor".into())
                    .spawn(move || holdings.janitor());
                if let Err(e) = started {
                    tracing::warn!("cannot start the queue janitor: {e}");
                }
            } else if inbox.janitor_idle {
                h.janitor.notify_one();
            }
        }
        drop(inbox);
        if give_back > 0 {
            // Straight back to the queue (its front), for the threads of
            // this process already waiting there.
            let taken = lock(&h.inbox).owed.take(link.id);
            if link
                .conn
                .send_bytes(&wire::settle(taken, give_back))
                .is_err()
            {
                return Ok(Received {
                    frame,
                    range: first,
                });
            }
            link.unsynced = true;
            h.checkin(link);
        } else {
            h.settle_if_drained(link.id, Some(link));
        }
        Ok(Received {
            frame,
            range: first,
        })
    }

    /// Asks the broker for items; returns the connection, the answer and
    /// the items' ranges in it.
    fn ask(&self, timeout: Option<Duration>) -> Result<(Link, Vec<u8>, Vec<Range<usize>>)> {
        let barrier = self.barrier()?;
        let mut link = self.checkout()?;
        let (acks, most) = {
            let mut inbox = lock(&self.holdings.inbox);
            // With other threads of this process already waiting there,
            // extras would only go straight back.
            let alone = inbox.at_broker <= 1;
            // A bounded queue counts delivered items until they are
            // acknowledged (as CPython's semaphore counts items still in
            // its pipe), so a batch never lets the queue hold more than
            // `maxsize`; a quarter of it at most, so that producers do not
            // wait for a whole batch to be taken.
            let most = inbox.want(!alone);
            let most = if self.bounded() {
                most.min(u32::try_from(self.maxsize / 4).unwrap_or(u32::MAX).max(1))
            } else {
                most
            };
            (inbox.owed.take_all(), most)
        };
        let answer = self.request(&mut link, &wire::get(most, timeout, barrier, &acks))?;
        match wire::parse_reply(&answer) {
            Ok(Reply::Items(ranges)) => Ok((link, answer, ranges)),
            Ok(Reply::Empty) => {
                self.holdings.checkin(link);
                Err(Error::Empty)
            }
            other => Err(gone("get", format!("unexpected answer {other:?}"))),
        }
    }

    /// The number of items in the queue (after this process's puts and
    /// gets: they are all accounted for first).
    pub(crate) fn qsize(&self) -> Result<usize> {
        let barrier = self.barrier()?;
        let mut link = self.checkout()?;
        let acks = lock(&self.holdings.inbox).owed.take_all();
        let answer = self.request(&mut link, &wire::qsize(barrier, &acks))?;
        match wire::parse_reply(&answer) {
            Ok(Reply::Size(n)) => {
                self.holdings.checkin(link);
                Ok(usize::try_from(n).unwrap_or(usize::MAX))
            }
            other => Err(gone("qsize", format!("unexpected answer {other:?}"))),
        }
    }

    /// Gives back what this process received and did not take (`close`).
    pub(crate) fn settle_all(&self) {
        self.holdings.settle_all(false);
    }

    /// Waits until the owner has every item this process put
    /// (`join_thread`).
    pub(crate) fn flush(&self) -> Result<()> {
        let feeder = lock(&self.feeder).clone();
        match feeder {
            None => Ok(()),
            Some(f) => f.sync().map_err(|_| Error::Disconnected),
        }
    }

    /// Hands everything over: the feeder's items stored (if `wait`), the
    /// taken items acknowledged and the others given back, and the broker
    /// has seen it all — what this process did is in the queue when the
    /// process (or its last handle) is gone.
    fn hand_over(&self, wait: bool) {
        let feeder = lock(&self.feeder).clone();
        if let (Some(f), true) = (feeder, wait) {
            let _ = f.sync();
        }
        self.holdings.settle_all(true);
    }

    /// The last handle in this process is gone: hand over, then close.
    pub(crate) fn shutdown(&self, wait: bool) {
        self.hand_over(wait);
        if let Some(f) = lock(&self.feeder).take() {
            f.stop();
        }
        {
            let mut inbox = lock(&self.holdings.inbox);
            inbox.stop = true;
            self.holdings.janitor.notify_all();
        }
        lock(&self.holdings.idle).clear();
    }

    /// The process exits with this handle alive (other threads may still
    /// use it meanwhile): hand over.
    pub(crate) fn at_exit(&self, wait: bool) {
        self.hand_over(wait);
    }
}
