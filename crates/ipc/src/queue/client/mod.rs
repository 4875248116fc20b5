//! A process's side of a queue another process owns.
//!
//! Requests go over a pool of connections to the owner's broker: an
//! operation takes an idle connection (or opens one), and gives it back
//! when done, so threads blocked in `get` never wait for each other.
//! Puts go through the [feeder](super::feeder). To a bounded queue, each
//! put first takes a *permit* (CPython's semaphore): a place in the queue
//! the broker reserved for this process. Without one it asks the broker
//! (`ACQUIRE`, waiting as a put waits on a full queue) for a few at once,
//! about as many as it used in the last half millisecond (at most a
//! quarter of `maxsize`). Permits it does not use go back: when this
//! process has used none for 50 ms (the janitor), when it asks the size of
//! the queue, at close and exit, and, if it dies, when its feeder stream
//! ends.
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

use crate::queue::acks::AckPage;
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

/// How to reach the broker, and who this process is to it.
struct Dial {
    queue: u64,
    address: Address,
    key: Vec<u8>,
    /// Tells the broker which connections (and feeder) are this process's.
    session: u64,
}

/// Why a put failed (the caller hands the item back).
pub(crate) enum PutFail {
    Full,
    Encode(Error),
    Disconnected,
}

/// An open connection to the broker and the id the broker gave it.
struct Link {
    /// Its ack page, once it delivered several items at once (see
    /// [`acks`](super::acks)).
    acks: Option<AckPage>,
    conn: Connection,
    id: u64,
    /// A one-way message went out since the last answer: a `SYNC` makes
    /// sure the broker has seen it.
    unsynced: bool,
    /// Acks counted on `acks` since the last message on `conn` (the
    /// broker reads them before each message on `conn`).
    unread_acks: u32,
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

    fn conns(&self) -> Vec<u64> {
        self.0.iter().map(|(c, _)| *c).collect()
    }
}

/// Places in a bounded queue the broker reserved for this process.
#[derive(Default)]
struct Permits {
    /// Held and unused.
    held: usize,
    /// When the last grant came and how many places it had.
    last_grant: Option<(Instant, usize)>,
    /// When one was last granted or used (the janitor's clock).
    active: Option<Instant>,
}

impl Permits {
    /// How many to ask for: about what this process used in the last
    /// [`PREFETCH_WINDOW`], going by how fast it used the last grant; one
    /// after a pause, at most `most`.
    fn want(&self, most: usize) -> usize {
        let Some((at, n)) = self.last_grant else {
            return 1;
        };
        let spent = at.elapsed().as_secs_f64().max(1e-7);
        let rate = n as f64 / spent;
        (rate * PREFETCH_WINDOW.as_secs_f64()).clamp(1.0, most.max(1) as f64) as usize
    }
}

/// What this process received and has not yet acknowledged, and the
/// permits it holds (both watched by the janitor).
#[derive(Default)]
struct Inbox {
    buffer: VecDeque<Buffered>,
    /// Items in `buffer`, per connection.
    buffered: Counts,
    /// The connections the buffered items came on: out of the idle pool
    /// (no request uses them) until their items are all taken or given
    /// back, so that each take is acknowledged on its own connection
    /// before `get` returns.
    parked: Vec<Link>,
    /// When the last delivery came and how many items it had.
    last_delivery: Option<(Instant, usize)>,
    /// When this process last took an item.
    last_take: Option<Instant>,
    /// Threads of this process waiting for the broker's answer to a get.
    at_broker: usize,
    permits: Permits,
    janitor_started: bool,
    /// The janitor waits for items to watch.
    janitor_idle: bool,
    stop: bool,
}

impl Inbox {
    /// Takes the oldest buffered item, acknowledging it on the connection
    /// it came on before handing it out: once `get` returns it, the
    /// broker has (or will read, before that connection's end) the ack,
    /// so it is never delivered again. Returns the item, and the
    /// connection if it delivered nothing else still buffered (for the
    /// idle pool). `Err` when the ack cannot be written: the item is not
    /// handed out, and the connection's end gives it back.
    fn pop(&mut self) -> Option<Result<(Received, Option<Link>)>> {
        let b = self.buffer.pop_front()?;
        self.last_take = Some(Instant::now());
        self.buffered.sub(b.conn, 1);
        let Some(i) = self.parked.iter().position(|l| l.id == b.conn) else {
            tracing::warn!("a buffered item without its connection: given up");
            self.buffer.retain(|x| x.conn != b.conn);
            self.buffered.take(b.conn);
            return Some(Err(Error::Disconnected));
        };
        let last = self.buffered.get(b.conn) == 0;
        if let Err(e) = ack(&mut self.parked[i], last) {
            // The connection is broken: what it delivered goes back to the
            // queue when the broker sees its end.
            self.parked.swap_remove(i);
            self.buffer.retain(|x| x.conn != b.conn);
            self.buffered.take(b.conn);
            return Some(Err(gone("ack", e)));
        }
        let drained = last.then(|| self.parked.swap_remove(i));
        Some(Ok((
            Received {
                frame: b.frame,
                range: b.range,
            },
            drained,
        )))
    }

    /// Takes the parked connection `conn` back out (with its buffered
    /// items still counted: [`settle`](Self::settle) gives them back).
    fn unpark(&mut self, conn: u64) -> Option<Link> {
        let i = self.parked.iter().position(|l| l.id == conn)?;
        Some(self.parked.swap_remove(i))
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

    /// Accounts for giving back everything buffered from `conn`: returns
    /// how many items that is.
    fn settle(&mut self, conn: u64) -> u32 {
        let returned = self.buffered.take(conn);
        if returned > 0 {
            self.buffer.retain(|b| b.conn != conn);
        }
        returned
    }
}

/// The connections, received items and permits of one process's hold,
/// shared with its janitor thread.
struct Holdings {
    dial: Dial,
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

/// Acknowledges one item taken from `link`'s deliveries: one more on its
/// ack page (a store to shared memory: the broker reads it later, no
/// system call, no wake-up), or, for the `last` item of a delivery or
/// without an ack page, a `SETTLE` on the connection itself, which the
/// broker reads at once (with every ack before it): a bounded queue's
/// room is free again when a delivery is all taken.
fn ack(link: &mut Link, last: bool) -> std::io::Result<()> {
    match &link.acks {
        Some(acks) if !last => {
            acks.add();
            link.unread_acks = link.unread_acks.saturating_add(1);
            Ok(())
        }
        _ => {
            link.conn
                .send_bytes(&wire::settle(1, 0))
                .map_err(std::io::Error::other)?;
            link.unsynced = true;
            link.unread_acks = 0;
            Ok(())
        }
    }
}

/// When a timed exchange with the broker gives up; `None` never.
type Deadline = Option<Instant>;

/// How long after a request's own timeout the broker's answer is awaited
/// (the broker keeps the same timeout, so its answer is normally there
/// first); past it the holder gives up on the connection, whatever the
/// owner is doing (stopped, swapped out, flooded).
const GRACE: Duration = Duration::from_millis(200);

fn client_deadline(timeout: Option<Duration>) -> Deadline {
    timeout.and_then(|t| Instant::now().checked_add(t.saturating_add(GRACE)))
}

/// Why a timed exchange with the broker failed.
pub(crate) enum Late {
    /// The deadline passed first; the connection is in an unknown state.
    Late,
    /// The broker is gone (or the connection broke).
    Gone(Error),
}

impl Late {
    fn into_error(self) -> Error {
        match self {
            Late::Late => Error::Disconnected,
            Late::Gone(e) => e,
        }
    }
}

/// How many times a connection the broker dropped before its handshake
/// is tried again (pauses of 1, 2, 4, … ms: about 1 s in all).
const RECONNECTS: u32 = 10;

/// Whether a failed connect is the broker dropping a connection it had
/// not authenticated yet (its list of pending handshakes was full).
fn dropped_early(e: &Error) -> bool {
    match e {
        Error::Eof | Error::EofDuringMessage | Error::BrokenPipe => true,
        Error::Io(io) => matches!(
            io.kind(),
            std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::BrokenPipe
                | std::io::ErrorKind::UnexpectedEof
        ),
        _ => false,
    }
}

/// Reads one message, by `deadline`.
fn recv_by(conn: &Connection, deadline: Deadline) -> Result<Vec<u8>, Late> {
    if let Some(d) = deadline {
        match conn.poll(Some(d.saturating_duration_since(Instant::now()))) {
            Ok(true) => {}
            Ok(false) => return Err(Late::Late),
            Err(e) => return Err(Late::Gone(e)),
        }
    }
    conn.recv_bytes().map_err(Late::Gone)
}

impl Holdings {
    /// Opens a connection of `role`: connect, handshake and `HELLO`, all
    /// within `deadline` (a silent or stopped owner makes it
    /// [`Error::Empty`]-like [`Late`], never a hang past it).
    fn connect(&self, role: Role, deadline: Deadline) -> Result<Link, Late> {
        let d = &self.dial;
        self.connect_with(&wire::hello(d.queue, d.session, role), deadline)
    }

    /// Opens the ack page of `link` (see [`acks`](super::acks)): asks
    /// the broker for it on a connection of its own, which then closes.
    fn open_acks(&self, link: &mut Link, deadline: Deadline) -> Result<(), Late> {
        if link.acks.is_none() {
            let d = &self.dial;
            let (conn, answer) =
                self.dial_with(&wire::hello_acks(d.queue, d.session, link.id), deadline)?;
            drop(conn);
            let Ok(Reply::AckPage { pid, value, .. }) = wire::parse_reply(&answer) else {
                return Err(Late::Gone(gone("ack page", "no page in the answer")));
            };
            let page = AckPage::open(pid, value).map_err(|e| Late::Gone(gone("ack page", e)))?;
            link.acks = Some(page);
        }
        Ok(())
    }

    fn connect_with(&self, hello: &[u8], deadline: Deadline) -> Result<Link, Late> {
        let (conn, answer) = self.dial_with(hello, deadline)?;
        match wire::parse_reply(&answer) {
            Ok(Reply::HelloOk { conn: id }) => Ok(Link {
                acks: None,
                conn,
                id,
                unsynced: false,
                unread_acks: 0,
            }),
            Ok(Reply::NoQueue) => Err(Late::Gone(gone(
                "hello",
                "the broker does not know this queue",
            ))),
            other => Err(Late::Gone(gone("hello", format!("{other:?}")))),
        }
    }

    /// Connects, says `hello` and reads the answer, all by `deadline`.
    fn dial_with(&self, hello: &[u8], deadline: Deadline) -> Result<(Connection, Vec<u8>), Late> {
        let d = &self.dial;
        let mut attempt = 0u32;
        let conn = loop {
            match Client::connect_by(&d.address, Some(&d.key), deadline) {
                Ok(c) => break c,
                Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    // A socket nobody listens at: its owner died.
                    super::broker::remove_dead(&d.address);
                    return Err(Late::Gone(gone("connect", e)));
                }
                Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::TimedOut => {
                    return Err(Late::Late)
                }
                // Closed before the challenge: a broker flooded with
                // pending connections drops the oldest. Connect again, a
                // little later each time (it lives: it accepted us).
                Err(e) if dropped_early(&e) && attempt < RECONNECTS => {
                    let pause = Duration::from_millis(1 << attempt);
                    if deadline.is_some_and(|d| Instant::now() + pause >= d) {
                        return Err(Late::Late);
                    }
                    tracing::debug!("queue broker dropped a new connection ({e}): again");
                    std::thread::sleep(pause);
                    attempt += 1;
                }
                Err(e) => return Err(Late::Gone(gone("connect", e))),
            }
        };
        conn.send_bytes(hello)
            .map_err(|e| Late::Gone(gone("hello", e)))?;
        let answer = recv_by(&conn, deadline).map_err(|e| match e {
            Late::Gone(e) => Late::Gone(gone("hello", e)),
            late => late,
        })?;
        Ok((conn, answer))
    }

    fn checkout(&self, deadline: Deadline) -> Result<Link, Late> {
        if let Some(link) = lock(&self.idle).pop() {
            return Ok(link);
        }
        self.connect(Role::Ops, deadline)
    }

    fn checkin(&self, link: Link) {
        lock(&self.idle).push(link);
    }

    /// Starts the janitor if it is not running, or wakes it if it waits
    /// for something to watch.
    fn janitor_watch(self: &Arc<Self>, inbox: &mut Inbox) {
        if !inbox.janitor_started {
            inbox.janitor_started = true;
            let holdings = self.clone();
            let started = std::thread::Builder::new()
                .name("mproc-queue-janitor".into())
                .spawn(move || holdings.janitor());
            if let Err(e) = started {
                tracing::warn!("cannot start the queue janitor: {e}");
            }
        } else if inbox.janitor_idle {
            self.janitor.notify_one();
        }
    }

    /// Gives back `n` permits this process took out of `held`, on `link`
    /// (one-way). Returns the link unless it failed.
    fn send_release(&self, mut link: Link, n: usize) -> Option<Link> {
        if n == 0 {
            return Some(link);
        }
        // More than u32::MAX permits cannot be held (a grant is a u32 and
        // a quarter of `maxsize`); saturate rather than wrap all the same.
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        if let Err(e) = link.conn.send_bytes(&wire::release(n)) {
            // The broker is gone, or it sees this connection end; in the
            // worst case the places come back when this process's feeder
            // stream ends.
            tracing::debug!("cannot give permits back to the queue broker: {e}");
            return None;
        }
        link.unsynced = true;
        Some(link)
    }

    /// Gives back `n` permits taken out of `held` (on any connection).
    fn release(&self, n: usize) {
        if n == 0 {
            return;
        }
        // Without a connection the broker is gone: nothing to give back.
        if let Ok(link) = self.checkout(None) {
            if let Some(link) = self.send_release(link, n) {
                self.checkin(link);
            }
        }
    }

    /// Gives back every permit this process holds.
    fn release_permits(&self) {
        let n = std::mem::take(&mut lock(&self.inbox).permits.held);
        self.release(n);
    }

    /// Gives back `returned` items buffered from `link` (already taken
    /// out of the buffer) and makes the broker read its acks; with `sync`,
    /// waits until the broker has seen it (and every earlier one-way
    /// message on `link`). Returns the link unless it failed.
    fn settle_returned(&self, mut link: Link, returned: u32, sync: bool) -> Option<Link> {
        if returned > 0 || link.unread_acks > 0 {
            if let Err(e) = link.conn.send_bytes(&wire::settle(0, returned)) {
                tracing::debug!("cannot settle with the queue broker: {e}");
                return None;
            }
            link.unsynced = true;
            link.unread_acks = 0;
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

    /// Settles every idle and parked connection (their buffered items go
    /// back) and returns them to the idle pool.
    fn settle_all(&self, sync: bool) {
        let idle: Vec<Link> = std::mem::take(&mut *lock(&self.idle));
        let parked: Vec<(Link, u32)> = {
            let mut inbox = lock(&self.inbox);
            let links = std::mem::take(&mut inbox.parked);
            links
                .into_iter()
                .map(|l| {
                    let returned = inbox.settle(l.id);
                    (l, returned)
                })
                .collect()
        };
        let kept: Vec<Link> = idle
            .into_iter()
            .map(|l| (l, 0))
            .chain(parked)
            .filter_map(|(l, returned)| self.settle_returned(l, returned, sync))
            .collect();
        lock(&self.idle).extend(kept);
    }

    /// The janitor: gives back the buffered items once this process has
    /// taken none for [`HOLD_LIMIT`], and the permits once it has used
    /// none for as long, so that a process that stops taking (or putting)
    /// does not keep items (or room) from the others.
    fn janitor(self: Arc<Self>) {
        let mut inbox = lock(&self.inbox);
        loop {
            if inbox.stop {
                return;
            }
            let items_due = inbox.buffer.front().map(|b| {
                let busy = inbox.last_take.map_or(b.at, |t| t.max(b.at));
                busy + HOLD_LIMIT
            });
            let permits_due = match (inbox.permits.held, inbox.permits.active) {
                (0, _) | (_, None) => None,
                (_, Some(at)) => Some(at + HOLD_LIMIT),
            };
            let Some(due) = items_due.into_iter().chain(permits_due).min() else {
                inbox.janitor_idle = true;
                inbox = self
                    .janitor
                    .wait(inbox)
                    .unwrap_or_else(PoisonError::into_inner);
                inbox.janitor_idle = false;
                continue;
            };
            let now = Instant::now();
            if due > now {
                inbox = self
                    .janitor
                    .wait_timeout(inbox, due - now)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
                continue;
            }
            let conns = if items_due.is_some_and(|d| d <= now) {
                inbox.buffered.conns()
            } else {
                Vec::new()
            };
            let release = if permits_due.is_some_and(|d| d <= now) {
                std::mem::take(&mut inbox.permits.held)
            } else {
                0
            };
            drop(inbox);
            self.release(release);
            for conn in conns {
                // Out of the parking and out of the buffer at once: a get
                // meanwhile finds neither.
                let parked = {
                    let mut inbox = lock(&self.inbox);
                    inbox.unpark(conn).map(|l| {
                        let returned = inbox.settle(conn);
                        (l, returned)
                    })
                };
                if let Some((link, returned)) = parked {
                    if let Some(link) = self.settle_returned(link, returned, false) {
                        self.checkin(link);
                    }
                }
            }
            inbox = lock(&self.inbox);
        }
    }
}

/// A queue owned by another process, as this process holds it.
pub(crate) struct Remote {
    maxsize: usize,
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
            maxsize,
            holdings: Arc::new(Holdings {
                dial: Dial {
                    queue,
                    address,
                    key,
                    session: u64::from_ne_bytes(session),
                },
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

    /// Sends a request and reads its answer, by `deadline`. On failure
    /// the caller drops the connection (the broker then puts back what it
    /// had in flight there): a late answer may still come on it.
    fn request(&self, link: &mut Link, msg: &[u8], deadline: Deadline) -> Result<Vec<u8>, Late> {
        link.conn
            .send_bytes(msg)
            .map_err(|e| Late::Gone(gone("send", e)))?;
        link.unread_acks = 0;
        let answer = recv_by(&link.conn, deadline).map_err(|e| match e {
            Late::Gone(e) => Late::Gone(gone("receive", e)),
            late => late,
        })?;
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

    fn feeder(&self, deadline: Deadline) -> Result<Arc<Feeder>, Late> {
        let mut slot = lock(&self.feeder);
        if let Some(f) = slot.as_ref() {
            return Ok(f.clone());
        }
        let link = self.holdings.connect(Role::Feeder, deadline)?;
        let f = Feeder::start(link.conn).map_err(|e| Late::Gone(gone("feeder thread", e)))?;
        *slot = Some(f.clone());
        Ok(f)
    }

    /// Puts the item `write` encodes: through the feeder, with a permit
    /// if the queue is bounded. With a `timeout`, returns by then (and a
    /// little grace for the owner's answer) whatever the owner does.
    pub(crate) fn put(
        &self,
        timeout: Option<Duration>,
        write: impl FnOnce(&mut Vec<u8>) -> Result<()>,
    ) -> Result<(), PutFail> {
        let deadline = client_deadline(timeout);
        // Started before the first `ACQUIRE`: the broker reserves room
        // only for a session whose feeder stream is open, and releases it
        // when that stream ends.
        let feeder = self.feeder(deadline).map_err(|e| match e {
            Late::Late => PutFail::Full,
            Late::Gone(_) => PutFail::Disconnected,
        })?;
        if self.bounded() {
            self.take_permit(timeout, deadline)?;
        }
        feeder.put(write).map_err(|e| match e {
            FeedError::Encode(e) => {
                if self.bounded() {
                    // The item was never queued: the place is still ours.
                    let mut inbox = lock(&self.holdings.inbox);
                    inbox.permits.held += 1;
                    inbox.permits.active = Some(Instant::now());
                    self.holdings.janitor_watch(&mut inbox);
                }
                PutFail::Encode(e)
            }
            // The broker is gone: the permit with it.
            FeedError::Disconnected => PutFail::Disconnected,
        })
    }

    /// Takes one of this process's permits, asking the broker for more
    /// (waiting up to `timeout` while the queue is full) if it has none.
    fn take_permit(&self, timeout: Option<Duration>, deadline: Deadline) -> Result<(), PutFail> {
        let h = &self.holdings;
        let most = (self.maxsize / 4).max(1);
        let wanted = {
            let mut inbox = lock(&h.inbox);
            if inbox.permits.held > 0 {
                inbox.permits.held -= 1;
                inbox.permits.active = Some(Instant::now());
                return Ok(());
            }
            inbox.permits.want(most)
        };
        let wanted = u32::try_from(wanted).unwrap_or(u32::MAX);
        let late = |e: Late| match e {
            // The owner did not answer in time: a timed-out put. A grant
            // that arrives later on the dropped connection is never
            // filled; the broker frees it when this process's feeder
            // stream ends (docs/architecture.md, "Not there yet").
            Late::Late => PutFail::Full,
            Late::Gone(_) => PutFail::Disconnected,
        };
        let mut link = h.checkout(deadline).map_err(late)?;
        let answer = self
            .request(&mut link, &wire::acquire(wanted, timeout, &[]), deadline)
            .map_err(late)?;
        let granted = match wire::parse_reply(&answer) {
            Ok(Reply::Granted(n)) if n >= 1 => n as usize,
            Ok(Reply::Full) => {
                h.checkin(link);
                return Err(PutFail::Full);
            }
            other => {
                tracing::warn!("unexpected answer to an acquire: {other:?}");
                return Err(PutFail::Disconnected);
            }
        };
        h.checkin(link);
        if granted > 1 {
            let mut inbox = lock(&h.inbox);
            let now = Instant::now();
            inbox.permits.held += granted - 1;
            inbox.permits.last_grant = Some((now, granted));
            inbox.permits.active = Some(now);
            h.janitor_watch(&mut inbox);
        } else {
            lock(&h.inbox).permits.last_grant = Some((Instant::now(), 1));
        }
        Ok(())
    }

    /// Takes one item: from this process's buffer, else from the broker
    /// (waiting up to `timeout`; `None` waits forever). The item is
    /// acknowledged (on the connection it came on) before it is returned:
    /// an item `get` returned is never delivered again, even if this
    /// process dies right after.
    pub(crate) fn get(&self, timeout: Option<Duration>) -> Result<Received> {
        let h = &self.holdings;
        {
            let mut inbox = lock(&h.inbox);
            if let Some(popped) = inbox.pop() {
                drop(inbox);
                let (item, drained) = popped?;
                if let Some(link) = drained {
                    h.checkin(link);
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
        let extras: Vec<Range<usize>> = ranges.collect();
        let now = Instant::now();
        inbox.last_delivery = Some((now, 1 + extras.len()));
        inbox.last_take = Some(now);
        // With other threads of this process already waiting at the
        // broker, the extras go straight back (to the front), for them.
        let give_back = if inbox.at_broker > 0 {
            extras.len() as u32
        } else {
            0
        };
        if give_back == 0 && !extras.is_empty() {
            // Extras wait in the buffer; their acks (and this first
            // item's) go on the connection's ack page.
            if h.open_acks(&mut link, None).is_err() {
                // No ack page: give the extras back, keep the first.
                drop(inbox);
                let n = extras.len() as u32;
                if let Err(e) = link.conn.send_bytes(&wire::settle(1, n)) {
                    return Err(gone("ack", e));
                }
                link.unsynced = true;
                h.checkin(link);
                return Ok(Received {
                    frame,
                    range: first,
                });
            }
            if let Err(e) = ack(&mut link, false) {
                return Err(gone("ack", e));
            }
            inbox.buffered.add(link.id, extras.len() as u32);
            for range in extras {
                inbox.buffer.push_back(Buffered {
                    conn: link.id,
                    frame: frame.clone(),
                    range,
                    at: now,
                });
            }
            inbox.parked.push(link);
            h.janitor_watch(&mut inbox);
        } else {
            drop(inbox);
            // The ack of the only item kept (and the extras given back)
            // before it is handed out.
            if let Err(e) = link.conn.send_bytes(&wire::settle(1, give_back)) {
                return Err(gone("ack", e));
            }
            link.unsynced = true;
            h.checkin(link);
        }
        Ok(Received {
            frame,
            range: first,
        })
    }

    /// Asks the broker for items; returns the connection, the answer and
    /// the items' ranges in it.
    fn ask(&self, timeout: Option<Duration>) -> Result<(Link, Vec<u8>, Vec<Range<usize>>)> {
        let deadline = client_deadline(timeout);
        let barrier = self.barrier()?;
        let late = |e: Late| match e {
            Late::Late => Error::Empty,
            Late::Gone(e) => e,
        };
        let mut link = self.holdings.checkout(deadline).map_err(late)?;
        let most = {
            let inbox = lock(&self.holdings.inbox);
            // With other threads of this process already waiting there,
            // extras would only go straight back.
            let alone = inbox.at_broker <= 1;
            // A bounded queue counts delivered items until they are
            // acknowledged (as CPython's semaphore counts items still in
            // its pipe), so a batch never lets the queue hold more than
            // `maxsize`; a quarter of it at most, so that producers do not
            // wait for a whole batch to be taken.
            let most = inbox.want(!alone);
            if self.bounded() {
                most.min(u32::try_from(self.maxsize / 4).unwrap_or(u32::MAX).max(1))
            } else {
                most
            }
        };
        // A late answer leaves `link` dropped: whatever the broker sends
        // on it afterwards goes back to the queue when it sees the end.
        let answer = self
            .request(&mut link, &wire::get(most, timeout, barrier, &[]), deadline)
            .map_err(late)?;
        match wire::parse_reply(&answer) {
            Ok(Reply::Items(ranges)) if !ranges.is_empty() => Ok((link, answer, ranges)),
            Ok(Reply::Empty) => {
                self.holdings.checkin(link);
                Err(Error::Empty)
            }
            other => Err(gone("get", format!("unexpected answer {other:?}"))),
        }
    }

    /// The number of items in the queue (after this process's puts and
    /// gets: they are all accounted for first).
    ///
    /// Permits this process holds go back first (on the same connection,
    /// so before the count): the answer, and `full()`, are about items,
    /// with no room kept from the others by the asker.
    pub(crate) fn qsize(&self) -> Result<usize> {
        let barrier = self.barrier()?;
        let link = self.holdings.checkout(None).map_err(Late::into_error)?;
        let permits = std::mem::take(&mut lock(&self.holdings.inbox).permits.held);
        let mut link = self
            .holdings
            .send_release(link, permits)
            .ok_or(Error::Disconnected)?;
        let answer = self
            .request(&mut link, &wire::qsize(barrier, &[]), None)
            .map_err(Late::into_error)?;
        match wire::parse_reply(&answer) {
            Ok(Reply::Size(n)) => {
                self.holdings.checkin(link);
                Ok(usize::try_from(n).unwrap_or(usize::MAX))
            }
            other => Err(gone("qsize", format!("unexpected answer {other:?}"))),
        }
    }

    /// Marks one item done (`JoinableQueue::task_done`): after this
    /// process's earlier puts are stored, so a put followed by its
    /// `task_done` is never "too many".
    pub(crate) fn task_done(&self) -> Result<()> {
        match self.exchange(wire::TASK_DONE)? {
            Reply::Done => Ok(()),
            Reply::TooMany => Err(Error::TaskDoneTooManyTimes),
            other => Err(gone("task_done", format!("unexpected answer {other:?}"))),
        }
    }

    /// Waits until every item put is done (`JoinableQueue::join`).
    pub(crate) fn join(&self) -> Result<()> {
        match self.exchange(wire::JOIN)? {
            Reply::Joined => Ok(()),
            other => Err(gone("join", format!("unexpected answer {other:?}"))),
        }
    }

    /// A request of `op` with this process's barrier, without a deadline.
    fn exchange(&self, op: u8) -> Result<Reply> {
        let barrier = self.barrier()?;
        let mut link = self.holdings.checkout(None).map_err(Late::into_error)?;
        let answer = self
            .request(&mut link, &wire::with_barrier(op, barrier), None)
            .map_err(Late::into_error)?;
        let reply = wire::parse_reply(&answer).map_err(|e| gone("answer", e))?;
        self.holdings.checkin(link);
        Ok(reply)
    }

    /// Gives back what this process received and did not take, and its
    /// permits (`close`: it puts no more).
    pub(crate) fn settle_all(&self) {
        self.holdings.release_permits();
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
        self.holdings.release_permits();
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
