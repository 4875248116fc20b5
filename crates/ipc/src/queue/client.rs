//! A process's side of a queue another process owns.
//!
//! Requests go over a pool of connections to the owner's broker: an
//! operation takes an idle connection (or opens one), and gives it back
//! when done, so threads blocked in `get` never wait for each other.
//! Puts to an unbounded queue go through the [feeder](super::feeder).
//!
//! A `get` asks for up to a few items at once when this process has been
//! taking them quickly; the extras wait in a local buffer that later
//! `get`s of this process take from. The broker counts them in the queue
//! until this process says they were taken (an *ack*, sent with its next
//! request, or on its own when the items of a delivery are all taken);
//! closing or dropping the queue gives back those never taken, and if the
//! process dies, the broker puts back everything not acknowledged.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::queue::feeder::{FeedError, Feeder};
use crate::queue::wire::{self, Reply, Role};
use crate::{Address, Client, Connection, Error, Result};

/// A local buffer holds about what this process takes in this long.
const PREFETCH_WINDOW: Duration = Duration::from_micros(500);
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
}

/// An item received and not yet taken.
struct Buffered {
    conn: u64,
    frame: Arc<Vec<u8>>,
    range: Range<usize>,
}

/// A received item: a range of the message it came in.
pub(crate) struct Received {
    pub(crate) frame: Arc<Vec<u8>>,
    pub(crate) range: Range<usize>,
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
            Some((_, k)) => *k += n,
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
}

impl Inbox {
    /// Takes the oldest buffered item; returns it, and its connection if
    /// that was the last buffered item it delivered.
    fn pop(&mut self) -> Option<(Received, Option<u64>)> {
        let b = self.buffer.pop_front()?;
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
    /// last delivery; one after a pause, and always one for a bounded
    /// queue (where an item held here would keep a producer waiting).
    fn want(&self, bounded: bool) -> u32 {
        if bounded {
            return 1;
        }
        let Some((at, n)) = self.last_delivery else {
            return 1;
        };
        let spent = at.elapsed().as_secs_f64().max(1e-7);
        let rate = n as f64 / spent;
        (rate * PREFETCH_WINDOW.as_secs_f64()).clamp(1.0, f64::from(MOST)) as u32
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
    idle: Mutex<Vec<Link>>,
    inbox: Mutex<Inbox>,
    feeder: Mutex<Option<Arc<Feeder>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Any failure to talk to the broker: it is gone (or never answers again).
fn gone(what: &str, e: impl std::fmt::Display) -> Error {
    tracing::debug!("queue broker unreachable ({what}): {e}");
    Error::Disconnected
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
            idle: Mutex::new(Vec::new()),
            inbox: Mutex::new(Inbox::default()),
            feeder: Mutex::new(None),
        }
    }

    fn bounded(&self) -> bool {
        self.maxsize > 0
    }

    fn connect(&self, role: Role) -> Result<Link> {
        let conn =
            Client::connect(&self.address, Some(&self.key)).map_err(|e| gone("connect", e))?;
        conn.send_bytes(&wire::hello(self.queue, self.session, role))
            .map_err(|e| gone("hello", e))?;
        let answer = conn.recv_bytes().map_err(|e| gone("hello", e))?;
        match wire::parse_reply(&answer) {
            Ok(Reply::HelloOk { conn: id }) => Ok(Link { conn, id }),
            Ok(Reply::NoQueue) => Err(gone("hello", "the broker does not know this queue")),
            other => Err(gone("hello", format!("{other:?}"))),
        }
    }

    fn checkout(&self) -> Result<Link> {
        if let Some(link) = lock(&self.idle).pop() {
            return Ok(link);
        }
        self.connect(Role::Ops)
    }

    fn checkin(&self, link: Link) {
        lock(&self.idle).push(link);
    }

    /// Sends a request and reads its answer. On failure the connection is
    /// dropped (the broker then puts back what it had in flight there).
    fn request(&self, link: &Link, msg: &[u8]) -> Result<Vec<u8>> {
        link.conn.send_bytes(msg).map_err(|e| gone("send", e))?;
        link.conn.recv_bytes().map_err(|e| gone("receive", e))
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
        let link = self.checkout().map_err(|_| PutFail::Disconnected)?;
        let answer = self
            .request(&link, &msg)
            .map_err(|_| PutFail::Disconnected)?;
        let result = match wire::parse_reply(&answer) {
            Ok(Reply::PutOk) => Ok(()),
            Ok(Reply::Full) => Err(PutFail::Full),
            other => {
                tracing::warn!("unexpected answer to a put: {other:?}");
                return Err(PutFail::Disconnected);
            }
        };
        self.checkin(link);
        result
    }

    /// Takes one item: from this process's buffer, else from the broker
    /// (waiting up to `timeout`; `None` waits forever).
    pub(crate) fn get(&self, timeout: Option<Duration>) -> Result<Received> {
        let popped = lock(&self.inbox).pop();
        if let Some((item, drained)) = popped {
            if let Some(conn) = drained {
                self.settle_if_drained(conn, None);
            }
            return Ok(item);
        }
        let barrier = self.barrier()?;
        let link = self.checkout()?;
        let (acks, most) = {
            let mut inbox = lock(&self.inbox);
            (inbox.owed.take_all(), inbox.want(self.bounded()))
        };
        let answer = self.request(&link, &wire::get(most, timeout, barrier, &acks))?;
        let ranges = match wire::parse_reply(&answer) {
            Ok(Reply::Items(ranges)) => ranges,
            Ok(Reply::Empty) => {
                self.checkin(link);
                return Err(Error::Empty);
            }
            other => return Err(gone("get", format!("unexpected answer {other:?}"))),
        };
        let frame = Arc::new(answer);
        let mut ranges = ranges.into_iter();
        let first = ranges.next().unwrap_or(0..0);
        {
            let mut inbox = lock(&self.inbox);
            inbox.owed.add(link.id, 1);
            let mut n = 1;
            for range in ranges {
                inbox.buffer.push_back(Buffered {
                    conn: link.id,
                    frame: frame.clone(),
                    range,
                });
                n += 1;
            }
            inbox.buffered.add(link.id, n - 1);
            inbox.last_delivery = Some((Instant::now(), n as usize));
        }
        self.settle_if_drained(link.id, Some(link));
        Ok(Received {
            frame,
            range: first,
        })
    }

    /// Once every item a connection delivered is taken, tells the broker
    /// on that connection (if it is idle, or `held` is it): the items
    /// leave the queue at once, whether or not this process asks for more.
    fn settle_if_drained(&self, conn: u64, held: Option<Link>) {
        let link = match held {
            Some(link) => Some(link),
            None => {
                let mut idle = lock(&self.idle);
                idle.iter()
                    .position(|l| l.id == conn)
                    .map(|i| idle.swap_remove(i))
            }
        };
        let Some(link) = link else {
            // Busy: the acks go with this process's next request.
            return;
        };
        let taken = {
            let mut inbox = lock(&self.inbox);
            if inbox.buffered.get(conn) > 0 {
                0
            } else {
                inbox.owed.take(conn)
            }
        };
        if taken > 0 && link.conn.send_bytes(&wire::settle(taken, 0)).is_err() {
            return;
        }
        self.checkin(link);
    }

    /// The number of items in the queue (after this process's puts).
    pub(crate) fn qsize(&self) -> Result<usize> {
        let barrier = self.barrier()?;
        let link = self.checkout()?;
        let acks = lock(&self.inbox).owed.take_all();
        let answer = self.request(&link, &wire::qsize(barrier, &acks))?;
        match wire::parse_reply(&answer) {
            Ok(Reply::Size(n)) => {
                self.checkin(link);
                Ok(usize::try_from(n).unwrap_or(usize::MAX))
            }
            other => Err(gone("qsize", format!("unexpected answer {other:?}"))),
        }
    }

    /// Acknowledges what was taken and gives back what was not, on every
    /// idle connection: after `close`, and before the connections close.
    pub(crate) fn settle_all(&self) {
        let links: Vec<Link> = std::mem::take(&mut *lock(&self.idle));
        let mut keep = Vec::with_capacity(links.len());
        for link in links {
            let (taken, returned) = {
                let mut inbox = lock(&self.inbox);
                let returned = inbox.buffered.take(link.id);
                if returned > 0 {
                    inbox.buffer.retain(|b| b.conn != link.id);
                }
                (inbox.owed.take(link.id), returned)
            };
            if (taken > 0 || returned > 0)
                && link
                    .conn
                    .send_bytes(&wire::settle(taken, returned))
                    .is_err()
            {
                continue;
            }
            keep.push(link);
        }
        lock(&self.idle).extend(keep);
    }

    /// Waits until this process's puts are written (`join_thread`).
    pub(crate) fn flush(&self) -> Result<()> {
        self.barrier().map(drop)
    }

    /// The last handle in this process is gone: write out the puts
    /// (unless `wait` is false: `cancel_join_thread`), settle, close.
    pub(crate) fn shutdown(&self, wait: bool) {
        if let Some(f) = lock(&self.feeder).take() {
            f.stop();
            if wait {
                let _ = f.flush();
            }
        }
        self.settle_all();
        lock(&self.idle).clear();
    }

    /// The process exits with this handle alive: as `shutdown`, but the
    /// handle may still be used by other threads meanwhile.
    pub(crate) fn at_exit(&self, wait: bool) {
        let feeder = lock(&self.feeder).clone();
        if let (Some(f), true) = (feeder, wait) {
            let _ = f.flush();
        }
        self.settle_all();
    }
}
