//! A process's side of a queue another process owns.
//!
//! Requests go over a pool of connections to the owner's broker: an
//! operation takes an idle connection (or opens one), and gives it back
//! when done, so threads blocked in `get` never wait for each other.
//! Puts go through the [feeder](super::feeder). To a bounded queue, each
//! put first takes a *permit* (CPython's semaphore): a place in the queue
//! the broker reserved for this process. Without one it asks the broker
//! (`ACQUIRE`, waiting as a put waits on a full queue) for a few at once,
//! about as many as it used in the last half millisecond (at most
//! `maxsize`); to a small queue (`maxsize` < 8) the request carries the
//! item itself (`PUT_WAIT`), which the broker stores in the first place
//! it grants. Permits it does not use go back: when this
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
//! this process has taken nothing for 50 ms (it notices takes on its own
//! clock, so 50–100 ms after the last), closing or dropping the queue
//! gives back the rest, and if the process dies, the broker puts back
//! everything not acknowledged. An item given back goes to the front of
//! the queue: a consumer that meanwhile took later items then sees it
//! after them (the one exception to FIFO order, with a consumer's death).
//!
//! This file is the I/O shell: it moves bytes, holds the locks and the
//! janitor thread, and asks plain parts (no sockets, threads or clocks of
//! their own; each unit-tested, as the broker's [`core`](super::core) is)
//! for every decision: [`pool`] (which connection to use), [`prefetch`]
//! (how many items to ask for), [`permits`] (a bounded queue's places),
//! [`ledger`] (buffered items and their parked connections), [`owed`]
//! (how an item is acknowledged, when to settle and sync), [`janitor`]
//! (what to give back, when), [`deadline`] (timeouts and redials) and
//! [`outcome`] (what an answer, or its absence, means for the caller).

use crate::util::lock::{lock, wait, wait_timeout};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use self::deadline::{Deadline, Redial};
use self::janitor::{Call, Chore, Janitor};
use self::ledger::{Ledger, PopError};
use self::outcome::{gone, Answer, Late};
use self::owed::{AckBy, Owed};
use self::permits::Permits;
use self::pool::Pool;
use self::prefetch::{Extras, Prefetch};
use crate::queue::acks::AckPage;
use crate::queue::feeder::{ConnectHandles, FeedError, Feeder};
use crate::queue::large;
use crate::queue::recycle::Recycler;
use crate::queue::wire::{self, Reply, Role};
use crate::tag::bulk::Shape;
use crate::{Address, Client, Connection, Error, Result};

mod deadline;
mod janitor;
mod ledger;
mod outcome;
mod owed;
mod permits;
mod pool;
mod prefetch;
mod sealed;

#[cfg(test)]
mod redial_tests;

pub(crate) use self::ledger::Received;
pub(crate) use self::outcome::PutFail;

/// How to reach the broker, and who this process is to it.
struct Dial {
    queue: u64,
    address: Address,
    key: Vec<u8>,
    /// Tells the broker which connections (and feeder) are this process's.
    session: u64,
}

/// How one dial failed.
enum Dialled {
    /// The broker closed the connection before it answered the `HELLO`:
    /// dial again.
    Dropped(Error),
    /// Late, or the owner is gone.
    Failed(Late),
}

/// An open connection to the broker and the id the broker gave it.
struct Link {
    /// Its ack page, once it delivered several items at once (see
    /// [`acks`](super::acks)).
    acks: Option<AckPage>,
    conn: Connection,
    id: u64,
    /// What the broker has not read or confirmed yet on `conn`.
    owed: Owed,
}

/// What this process received and has not yet taken, and the permits it
/// holds (both watched by the janitor).
#[derive(Default)]
struct Inbox {
    /// Buffered items and the connections they came on: out of the idle
    /// pool (no request uses them) until their items are all taken or
    /// given back, so that each take is acknowledged on its own
    /// connection before `get` returns.
    ledger: Ledger<Link>,
    prefetch: Prefetch,
    permits: Permits,
    janitor: Janitor,
    /// Answers' buffers, for reuse once their items are taken.
    frames: Recycler,
    /// Give-backs of buffered items under way (out of the buffer, not
    /// yet seen by the broker): a `get` that would ask the broker waits
    /// until there are none, or it could be answered with later items
    /// before these are back at the front of the queue.
    returning: usize,
}

/// Why a buffered item could not be handed out, as the caller sees it.
fn pop_failed(e: PopError) -> Error {
    match e {
        // The connection is broken: what it delivered goes back to the
        // queue when the broker sees its end.
        PopError::Ack(e) => gone("ack", e),
    }
}

/// The connections, received items and permits of one process's hold,
/// shared with its janitor thread.
struct Holdings {
    dial: Dial,
    idle: Mutex<Pool<Link>>,
    inbox: Mutex<Inbox>,
    janitor: Condvar,
    /// Notified when a give-back is seen by the broker (`returning`
    /// lowered).
    returned: Condvar,
    /// Called by the janitor between taking buffered items out and giving
    /// them back (tests make the give-back race a get there).
    #[cfg(test)]
    give_back_hook: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    /// Sealed items could not be opened here once: later ops connections
    /// take large items as bytes ([`large`]).
    no_sealed: AtomicBool,
    /// Tests: a `GET` asks for at least this many items (a run of sealed
    /// items without depending on the pace of the test's gets).
    #[cfg(test)]
    least_most: std::sync::atomic::AtomicU32,
    /// Tests: the next buffered sealed item cannot be opened (as when
    /// this process is out of descriptors), once.
    #[cfg(test)]
    unreachable_once: AtomicBool,
    /// Tests: the janitor never gives buffered items back (a test that
    /// looks at the buffer between its gets, however slow it runs).
    #[cfg(test)]
    keep_buffer: AtomicBool,
}

/// Acknowledges one item taken from `link`'s deliveries (see
/// [`owed::ack_by`]): one more on its ack page (a store to shared memory:
/// the broker reads it later, no system call, no wake-up), or, for the
/// `last` item of a delivery or without an ack page, a `SETTLE` on the
/// connection itself, which the broker reads at once (with every ack
/// before it): a bounded queue's room is free again when a delivery is
/// all taken.
fn ack(link: &mut Link, last: bool) -> std::io::Result<()> {
    ack_as(link, last, true)
}

/// [`ack`], the last item of a delivery with an ack page followed by a
/// `SETTLE` of nothing only with `settle_last` (a bounded queue). Without
/// `maxsize` the last item goes on the page like the others, with no
/// `SETTLE` after it: there is no room to free, a size read reads every
/// page anyway, and the broker reads the page before the connection's
/// next message (its next `GET`, or the `SETTLE` and `SYNC` of a
/// hand-over) and when it ends. One message and one broker wake-up less
/// per delivery.
#[inline]
fn ack_as(link: &mut Link, last: bool, settle_last: bool) -> std::io::Result<()> {
    match (
        owed::ack_by(link.acks.is_some(), last && settle_last),
        &link.acks,
    ) {
        (AckBy::Page, Some(acks)) => {
            acks.add();
            link.owed.acked_on_page();
            Ok(())
        }
        (AckBy::Settle, Some(acks)) => {
            // The last item of a delivery, on a connection with a page:
            // counted there first, so that a size read, which reads every
            // page, counts it out as soon as `get` returns it (a `SETTLE`
            // alone is read by the broker's thread some time later), then
            // a `SETTLE` of nothing makes the broker read the page now (a
            // bounded queue's room is free again). The page holds the ack
            // whatever becomes of that message: if it cannot be written
            // the connection is broken, and its end reads the page.
            acks.add();
            link.owed.acked_on_page();
            match link.conn.send_bytes(&wire::settle(0, 0)) {
                Ok(()) => link.owed.settled(),
                Err(e) => tracing::debug!("cannot settle with the queue broker: {e}"),
            }
            Ok(())
        }
        _ => {
            link.conn
                .send_bytes(&wire::settle(1, 0))
                .map_err(std::io::Error::other)?;
            link.owed.settled();
            Ok(())
        }
    }
}

/// The deadline of an exchange with `timeout` (`None`: none, and no
/// clock read on that path).
fn client_deadline(timeout: Option<Duration>) -> Deadline {
    timeout.and_then(|t| deadline::deadline(t, Instant::now()))
}

/// Reads one message, by `deadline`.
fn recv_by(conn: &Connection, deadline: Deadline) -> Result<Vec<u8>, Late> {
    recv_by_into(conn, deadline, Vec::new())
}

/// Reads one message into `buf` (its capacity reused), by `deadline`.
fn recv_by_into(conn: &Connection, deadline: Deadline, mut buf: Vec<u8>) -> Result<Vec<u8>, Late> {
    if let Some(d) = deadline {
        match conn.poll(Some(deadline::remaining(d, Instant::now()))) {
            Ok(true) => {}
            Ok(false) => return Err(Late::Late),
            Err(e) => return Err(Late::Gone(e)),
        }
    }
    conn.recv_bytes_reusing(&mut buf).map_err(Late::Gone)?;
    Ok(buf)
}

impl Holdings {
    /// Opens a connection of `role`: connect, handshake and `HELLO`, all
    /// within `deadline` (a silent or stopped owner makes it
    /// [`Error::Empty`]-like [`Late`], never a hang past it).
    fn connect(&self, role: Role, deadline: Deadline) -> Result<Link, Late> {
        let d = &self.dial;
        let hello = if role == Role::Ops {
            wire::hello_ops(d.queue, d.session, self.takes_sealed())
        } else {
            wire::hello(d.queue, d.session, role)
        };
        self.connect_with(&hello, deadline)
    }

    /// Whether this process's ops connections take sealed items.
    fn takes_sealed(&self) -> bool {
        large::usable(&self.dial.address) && !self.no_sealed.load(Ordering::Relaxed)
    }

    /// Opens the ack page of `link` (see [`acks`](super::acks)): asks
    /// the broker for it with a `PAGE` on `link` itself (idle: its
    /// `GET` was answered), one round trip and no new connection.
    fn open_acks(&self, link: &mut Link, deadline: Deadline) -> Result<(), Late> {
        if link.acks.is_none() {
            link.conn
                .send_bytes(&[wire::PAGE])
                .map_err(|e| Late::Gone(gone("ack page", e)))?;
            link.owed.request_sent();
            let answer = recv_by(&link.conn, deadline)?;
            link.owed.answered();
            let Ok(Reply::AckPage { pid, value, conn }) = wire::parse_reply(&answer) else {
                return Err(Late::Gone(gone("ack page", "no page in the answer")));
            };
            if conn != link.id {
                return Err(Late::Gone(gone(
                    "ack page",
                    "a page for another connection",
                )));
            }
            let page = AckPage::open(pid, value).map_err(|e| Late::Gone(gone("ack page", e)))?;
            link.acks = Some(page);
        }
        Ok(())
    }

    fn connect_with(&self, hello: &[u8], deadline: Deadline) -> Result<Link, Late> {
        let (conn, answer) = self.dial_with(hello, deadline)?;
        let id = outcome::hello(wire::parse_reply(&answer)).map_err(Late::Gone)?;
        Ok(Link {
            acks: None,
            conn,
            id,
            owed: Owed::default(),
        })
    }

    /// Connects, says `hello` and reads the answer, all by `deadline`.
    ///
    /// A connection the broker closes before it answered is dialled again
    /// until the deadline (see [`deadline::redial`]): under load the
    /// broker may drop a peer whose handshake took long while others
    /// waited, or after this side's handshake ended but before its own
    /// (its last read). Only a dial nobody answers says the owner is gone.
    fn dial_with(&self, hello: &[u8], deadline: Deadline) -> Result<(Connection, Vec<u8>), Late> {
        let mut attempt = 0u32;
        loop {
            let dropped = match self.dial_once(hello, deadline) {
                Ok(done) => return Ok(done),
                Err(Dialled::Dropped(e)) => e,
                Err(Dialled::Failed(late)) => return Err(late),
            };
            match deadline::redial(attempt, deadline, Instant::now()) {
                Redial::After(pause) => {
                    tracing::debug!("queue broker dropped a new connection ({dropped}): again");
                    std::thread::sleep(pause);
                    attempt = attempt.saturating_add(1);
                }
                Redial::Late => return Err(Late::Late),
            }
        }
    }

    /// One dial of [`dial_with`](Self::dial_with).
    fn dial_once(
        &self,
        hello: &[u8],
        deadline: Deadline,
    ) -> Result<(Connection, Vec<u8>), Dialled> {
        let d = &self.dial;
        let conn = match Client::connect_by(&d.address, Some(&d.key), deadline) {
            Ok(c) => c,
            Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                // A socket nobody listens at: its owner died.
                super::broker::remove_dead(&d.address);
                return Err(Dialled::Failed(Late::Gone(gone("connect", e))));
            }
            Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::TimedOut => {
                return Err(Dialled::Failed(Late::Late))
            }
            // Closed before the handshake ended.
            Err(e) if deadline::dropped_early(&e) => return Err(Dialled::Dropped(e)),
            Err(e) => return Err(Dialled::Failed(Late::Gone(gone("connect", e)))),
        };
        // Closed before the answer: dropped by the broker as above (an
        // owner that died meanwhile shows on the next dial).
        let answer = conn
            .send_bytes(hello)
            .map_err(Late::Gone)
            .and_then(|()| recv_by(&conn, deadline));
        match answer {
            Ok(answer) => Ok((conn, answer)),
            Err(Late::Gone(e)) if deadline::dropped_early(&e) => Err(Dialled::Dropped(e)),
            Err(Late::Gone(e)) => Err(Dialled::Failed(Late::Gone(gone("hello", e)))),
            Err(late) => Err(Dialled::Failed(late)),
        }
    }

    fn checkout(&self, deadline: Deadline) -> Result<Link, Late> {
        if let Some(link) = lock(&self.idle).take() {
            return Ok(link);
        }
        self.connect(Role::Ops, deadline)
    }

    fn checkin(&self, link: Link) {
        lock(&self.idle).give_back(link);
    }

    /// Starts the janitor if it is not running, or wakes it if it waits
    /// for something to watch.
    fn janitor_watch(self: &Arc<Self>, inbox: &mut Inbox) {
        match inbox.janitor.watch() {
            Call::Start => {
                let holdings = self.clone();
                let started = std::thread::Builder::new()
                    .name("mproc-queue-janitor".into())
                    .spawn(move || holdings.janitor());
                if let Err(e) = started {
                    tracing::warn!("cannot start the queue janitor: {e}");
                }
            }
            Call::Wake => self.janitor.notify_one(),
            Call::None => {}
        }
    }

    /// Gives back `n` permits this process took out of `held`, on `link`
    /// (one-way). Returns the link unless it failed.
    fn send_release(&self, mut link: Link, n: usize) -> Option<Link> {
        if n == 0 {
            return Some(link);
        }
        if let Err(e) = link.conn.send_bytes(&wire::release(permits::wire_count(n))) {
            // The broker is gone, or it sees this connection end; in the
            // worst case the places come back when this process's feeder
            // stream ends.
            tracing::debug!("cannot give permits back to the queue broker: {e}");
            return None;
        }
        link.owed.sent_one_way();
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
        let n = lock(&self.inbox).permits.take_all();
        self.release(n);
    }

    /// Gives back `returned` items buffered from `link` (already taken
    /// out of the buffer) and makes the broker read its acks; with `sync`,
    /// waits until the broker has seen it (and every earlier one-way
    /// message on `link`). Returns the link unless it failed.
    fn settle_returned(&self, mut link: Link, returned: u32, sync: bool) -> Option<Link> {
        if link.owed.must_settle(returned) {
            if let Err(e) = link.conn.send_bytes(&wire::settle(0, returned)) {
                tracing::debug!("cannot settle with the queue broker: {e}");
                return None;
            }
            link.owed.settled();
        }
        if link.owed.must_sync(sync) {
            let answer = link
                .conn
                .send_bytes(&[wire::SYNC])
                .and_then(|()| link.conn.recv_bytes());
            match answer {
                Ok(a) if a == [wire::SYNCED] => link.owed.answered(),
                other => {
                    tracing::debug!("cannot sync with the queue broker: {other:?}");
                    return None;
                }
            }
        }
        Some(link)
    }

    /// Acknowledges the one item kept from a delivery on `link` and gives
    /// back its `returned` extras, then waits (`SYNC`) until the broker
    /// has them back at the front, and ends the give-back the caller
    /// counted in `returning` (raised with the delivery under the inbox
    /// lock). An error when the ack cannot be written (the item is not
    /// handed out; the connection's end gives everything back).
    fn ack_and_give_back(&self, mut link: Link, returned: u32) -> Result<()> {
        if let Err(e) = link.conn.send_bytes(&wire::settle(1, returned)) {
            self.returned_back();
            return Err(gone("ack", e));
        }
        link.owed.settled();
        // The ack is written: the item is ours whether or not the sync
        // succeeds (a broker that closed the connection put the rest back
        // first).
        let kept = self.settle_returned(link, 0, true);
        self.returned_back();
        if let Some(link) = kept {
            self.checkin(link);
        }
        Ok(())
    }

    /// Settles every idle and parked connection (their buffered items go
    /// back) and returns them to the idle pool.
    fn settle_all(&self, sync: bool) {
        let idle: Vec<Link> = lock(&self.idle).take_all();
        let parked = self.reclaim_all();
        let kept: Vec<Link> = idle
            .into_iter()
            .filter_map(|l| self.settle_returned(l, 0, sync))
            .collect();
        let kept: Vec<Link> = kept
            .into_iter()
            .chain(self.give_back(parked, sync))
            .collect();
        lock(&self.idle).give_back_all(kept);
    }

    /// Takes every parked connection out, with its buffered items, as one
    /// give-back under way (`returning`, raised in the same critical
    /// section: a `get` meanwhile finds the buffer empty and waits for
    /// [`give_back`](Self::give_back) before it asks the broker).
    fn reclaim_all(&self) -> Vec<(Link, u32)> {
        let mut inbox = lock(&self.inbox);
        let parked = inbox.ledger.reclaim_all();
        inbox.returning += 1;
        parked
    }

    /// Gives back what [`reclaim_all`](Self::reclaim_all) took out, each
    /// connection's items with a `SYNC` (every connection's with `sync`) (so the broker has put them back
    /// at the front of the queue), then ends the give-back: `get`s may ask
    /// the broker again. Returns the connections that did not fail.
    ///
    /// A connection that fails here is dropped. A failure the broker
    /// caused (it closed the connection) comes after it put the
    /// connection's unacknowledged items back (the broker closes its end
    /// only after that), so the order holds then too; if the broker is
    /// gone there is no order left to keep.
    fn give_back(&self, parked: Vec<(Link, u32)>, sync: bool) -> Vec<Link> {
        let kept = parked
            .into_iter()
            .filter_map(|(l, returned)| self.settle_returned(l, returned, sync || returned > 0))
            .collect();
        self.returned_back();
        kept
    }

    /// A `GET` on `link` outlived its caller's deadline (the owner was
    /// slow: stopped, starved): its answer may still come, with items the
    /// broker counts in flight on `link`. Dropping the link would give
    /// them back only once the broker sees its end, maybe after a later
    /// get of this process, on another connection, was answered with
    /// later items. So the answer is awaited on a thread of its own,
    /// counted as a give-back under way (`returning`: this process's gets
    /// wait for it, by their own deadlines, rather than ask the broker),
    /// and its items go back to the front, seen by the broker (`SETTLE`
    /// then `SYNC`), before that ends.
    fn await_late_answer(self: &Arc<Self>, link: Link) {
        lock(&self.inbox).returning += 1;
        let holdings = self.clone();
        let started = std::thread::Builder::new()
            .name("mproc-queue-late".into())
            .spawn(move || {
                holdings.settle_late_answer(link);
                holdings.returned_back();
            });
        if let Err(e) = started {
            // The link went with the closure: the broker gives its items
            // back when it sees the end.
            tracing::warn!("cannot wait for a late queue answer: {e}");
            self.returned_back();
        }
    }

    /// Reads the late answer on `link` and gives back what it brought
    /// (see [`await_late_answer`](Self::await_late_answer)); the link
    /// goes back to the idle pool, or is dropped if it broke.
    fn settle_late_answer(&self, mut link: Link) {
        let answer = match link.conn.recv_bytes() {
            Ok(answer) => answer,
            Err(e) => {
                tracing::debug!("no late queue answer: {e}");
                return;
            }
        };
        link.owed.answered();
        let returned = match wire::parse_reply(&answer) {
            Ok(Reply::Items(ranges)) => ranges.len(),
            Ok(Reply::SealedItems { items, .. }) => items.len(),
            Ok(Reply::Empty) => 0,
            other => {
                tracing::debug!("unexpected late queue answer {other:?}: connection dropped");
                return;
            }
        };
        let returned = u32::try_from(returned).unwrap_or(u32::MAX);
        if let Some(link) = self.settle_returned(link, returned, true) {
            self.checkin(link);
        }
    }

    /// A give-back under way is seen by the broker: lowers `returning`
    /// and wakes the `get`s that wait for it.
    fn returned_back(&self) {
        let mut inbox = lock(&self.inbox);
        inbox.returning = inbox.returning.saturating_sub(1);
        if inbox.returning == 0 {
            self.returned.notify_all();
        }
    }

    /// The janitor: gives back the buffered items once this process has
    /// taken none for a while, and the permits once it has used none for
    /// as long (see [`janitor`]), so that a process that stops taking (or
    /// putting) does not keep items (or room) from the others.
    fn janitor(self: Arc<Self>) {
        let mut inbox = lock(&self.inbox);
        loop {
            if inbox.janitor.stopped() {
                return;
            }
            let now = Instant::now();
            inbox.ledger.observe(now);
            let items_idle = inbox.ledger.idle_since();
            #[cfg(test)]
            let items_idle = items_idle.filter(|_| !self.keep_buffer.load(Ordering::Relaxed));
            let chore = janitor::next(items_idle, inbox.permits.idle_since(), now);
            let (items, permits) = match chore {
                Chore::Sleep => {
                    if let Some(due) = inbox.janitor.linger(now) {
                        // Awake for a while after work: the next delivery
                        // or grant needs no wake-up of this thread.
                        inbox = wait_timeout(&self.janitor, inbox, deadline::remaining(due, now)).0;
                        continue;
                    }
                    inbox.janitor.set_idle(true);
                    inbox = wait(&self.janitor, inbox);
                    inbox.janitor.set_idle(false);
                    continue;
                }
                Chore::WaitUntil(due) => {
                    inbox.janitor.busy(now);
                    inbox = wait_timeout(&self.janitor, inbox, deadline::remaining(due, now)).0;
                    continue;
                }
                Chore::Reap { items, permits } => {
                    inbox.janitor.busy(now);
                    (items, permits)
                }
            };
            // Out of the parking and out of the buffer at once, with the
            // give-back counted as under way: a get meanwhile finds
            // neither, and waits until the broker has the items back at
            // the front before it asks for more (FIFO order).
            let parked = if items {
                inbox.returning += 1;
                Some(inbox.ledger.reclaim_all())
            } else {
                None
            };
            let release = if permits { inbox.permits.take_all() } else { 0 };
            drop(inbox);
            // Permits are counts, not places in the order: one-way.
            self.release(release);
            if let Some(parked) = parked {
                #[cfg(test)]
                if let Some(hook) = lock(&self.give_back_hook).take() {
                    hook();
                }
                let kept = self.give_back(parked, false);
                lock(&self.idle).give_back_all(kept);
            }
            inbox = lock(&self.inbox);
        }
    }
}

/// A put with no permit carries its item in its `PUT_WAIT` when the
/// request stays under this size; a larger item asks for room first and
/// goes through the feeder (sealed, where large items can be).
pub(super) const CARRY_MOST: usize = 64 << 10;

/// What a `GET` brought: items (the connection, the answer, their ranges
/// in it), or sealed items: the first one read, and where the others are
/// (see [`sealed`]).
enum Asked {
    Items(Link, Vec<u8>, Vec<Range<usize>>),
    /// One item the broker counted out when it wrote it (`ITEM_TAKEN`:
    /// ack on send): nothing to acknowledge.
    Taken(Link, Vec<u8>, Range<usize>),
    Sealed(Link, Result<large::Fetched>, Vec<ledger::SealedRef>),
}

/// A queue owned by another process, as this process holds it.
/// The broker's answer to `LANE`.
pub(crate) enum LaneAnswer {
    /// The ring's transfer.
    Lane(Vec<u8>),
    /// The queue has no lane (and never will).
    None,
    /// No answer by the deadline.
    Late,
    /// The owner is gone.
    Gone,
}

pub(crate) struct Remote {
    maxsize: usize,
    holdings: Arc<Holdings>,
    /// The feeder, once the first put started it: read with no lock and
    /// no reference count on the per-put path.
    feeder: OnceLock<Arc<Feeder>>,
    /// Held while the feeder starts, so that only one does.
    feeder_start: Mutex<()>,
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
                idle: Mutex::new(Pool::default()),
                inbox: Mutex::new(Inbox::default()),
                janitor: Condvar::new(),
                returned: Condvar::new(),
                #[cfg(test)]
                give_back_hook: Mutex::new(None),
                no_sealed: AtomicBool::new(false),
                #[cfg(test)]
                least_most: std::sync::atomic::AtomicU32::new(0),
                #[cfg(test)]
                unreachable_once: AtomicBool::new(false),
                #[cfg(test)]
                keep_buffer: AtomicBool::new(false),
            }),
            feeder: OnceLock::new(),
            feeder_start: Mutex::new(()),
        }
    }

    /// Runs `hook` once, in the janitor, the next time it has taken
    /// buffered items out and not yet given them back.
    #[cfg(test)]
    pub(crate) fn on_give_back(&self, hook: impl FnOnce() + Send + 'static) {
        *lock(&self.holdings.give_back_hook) = Some(Box::new(hook));
    }

    /// Takes back a hook [`on_give_back`](Self::on_give_back) set, if
    /// the janitor has not taken it yet: whether it had not.
    #[cfg(test)]
    pub(crate) fn take_back_give_back_hook(&self) -> bool {
        lock(&self.holdings.give_back_hook).take().is_some()
    }

    /// Makes every later `GET` ask for at least `n` items.
    #[cfg(test)]
    pub(crate) fn ask_at_least(&self, n: u32) {
        self.holdings.least_most.store(n, Ordering::Relaxed);
    }

    /// From now on this hold's janitor never gives buffered items back.
    #[cfg(test)]
    pub(crate) fn keep_buffer(&self) {
        self.holdings.keep_buffer.store(true, Ordering::Relaxed);
    }

    /// The next buffered sealed item this hold reads cannot be opened.
    #[cfg(test)]
    pub(crate) fn fail_next_open(&self) {
        self.holdings
            .unreachable_once
            .store(true, Ordering::Relaxed);
    }

    /// Whether this hold's new connections take sealed items.
    #[cfg(test)]
    pub(crate) fn takes_sealed(&self) -> bool {
        self.holdings.takes_sealed()
    }

    /// Whether items wait in this process's buffer.
    #[cfg(test)]
    pub(crate) fn buffered(&self) -> bool {
        !lock(&self.holdings.inbox).ledger.is_empty()
    }

    fn bounded(&self) -> bool {
        self.maxsize > 0
    }

    /// Acks counted on the pages of this hold's idle connections that no
    /// message on them has made the broker read yet.
    #[cfg(test)]
    pub(crate) fn unread_page_acks(&self) -> u32 {
        let mut idle = lock(&self.holdings.idle);
        let links = idle.take_all();
        let unread = links.iter().map(|l| l.owed.unread()).sum();
        idle.give_back_all(links);
        unread
    }

    /// Sends a request and reads its answer, by `deadline`. On failure
    /// the caller drops the connection (the broker then puts back what it
    /// had in flight there): a late answer may still come on it.
    fn request(&self, link: &mut Link, msg: &[u8], deadline: Deadline) -> Result<Vec<u8>, Late> {
        self.request_into(link, msg, deadline, Vec::new())
    }

    /// [`request`](Self::request), the answer read into `buf`.
    fn request_into(
        &self,
        link: &mut Link,
        msg: &[u8],
        deadline: Deadline,
        buf: Vec<u8>,
    ) -> Result<Vec<u8>, Late> {
        link.conn
            .send_bytes(msg)
            .map_err(|e| Late::Gone(gone("send", e)))?;
        link.owed.request_sent();
        let answer = recv_by_into(&link.conn, deadline, buf).map_err(|e| match e {
            Late::Gone(e) => Late::Gone(gone("receive", e)),
            late => late,
        })?;
        link.owed.answered();
        Ok(answer)
    }

    /// The barrier a request carries: the last batch of this process's
    /// feeder, once written.
    fn barrier(&self) -> Result<u64> {
        match self.feeder.get() {
            None => Ok(0),
            Some(f) => f.flush().map_err(|_| Error::Disconnected),
        }
    }

    fn feeder(&self, deadline: Deadline) -> Result<&Feeder, Late> {
        if let Some(f) = self.feeder.get() {
            return Ok(f);
        }
        let _starting = lock(&self.feeder_start);
        if let Some(f) = self.feeder.get() {
            return Ok(f);
        }
        let link = self.holdings.connect(Role::Feeder, deadline)?;
        let handles: Option<ConnectHandles> = if large::usable(&self.holdings.dial.address) {
            let h = self.holdings.clone();
            Some(Box::new(move || {
                h.connect(Role::Handles, None)
                    .map(|l| l.conn)
                    .map_err(Late::into_error)
            }))
        } else {
            None
        };
        let f =
            Feeder::start(link.conn, handles).map_err(|e| Late::Gone(gone("feeder thread", e)))?;
        Ok(self.feeder.get_or_init(|| f))
    }

    /// Puts the item `write` encodes: through the feeder, with a permit
    /// if the queue is bounded. With a `timeout`, returns by then (and a
    /// little grace for the owner's answer) whatever the owner does.
    ///
    /// The item is what `write` appends followed by `tail` (see
    /// [`Feeder::put`]).
    pub(crate) fn put(
        &self,
        timeout: Option<Duration>,
        write: impl FnOnce(&mut Vec<u8>) -> Result<()>,
        tail: &[u8],
    ) -> Result<(), PutFail> {
        let deadline = client_deadline(timeout);
        // Started before the first `ACQUIRE`: the broker reserves room
        // only for a session whose feeder stream is open, and releases it
        // when that stream ends.
        let feeder = self.feeder(deadline).map_err(Late::for_put)?;
        if !self.bounded() {
            return feeder
                .put(false, write, tail)
                .map_err(|e| self.feed_failed(e));
        }
        // A put that used this process's last permit writes its item
        // itself: the next put waits for room anyway, so there is no
        // batch to gather, and the feeder thread's wake-up is saved.
        let wanted = match self.own_permit() {
            Ok(last) => {
                return feeder
                    .put(last, write, tail)
                    .map_err(|e| self.feed_failed(e))
            }
            Err(wanted) => wanted,
        };
        if !prefetch::carries(self.maxsize) || !tail.is_empty() {
            // A larger queue (`maxsize` ≥ 8): the items go through the
            // feeder in batches. So does a large byte
            // sequence's body (`tail`: copied once, into its object).
            let last = self.take_permit(wanted, timeout, deadline)?;
            return feeder
                .put(last, write, tail)
                .map_err(|e| self.feed_failed(e));
        }
        // A small queue: the item goes with the request for room
        // (`PUT_WAIT`) and the broker stores it as soon as there is room,
        // handing it straight to a waiting get (no hop back through this
        // process); places granted beyond its own are held for the next
        // puts, as an `ACQUIRE`'s are.
        let barrier = feeder.flush().map_err(|_| PutFail::Disconnected)?;
        let msg = wire::put_wait(wanted, timeout, barrier, write).map_err(PutFail::Encode)?;
        if msg.len() >= CARRY_MOST {
            // A large item goes the feeder's way (sealed where it can):
            // its bytes, encoded once into `msg`, are the feeder put's
            // tail, copied once into the batch or straight into the
            // sealed object it travels in (never parsed back nor copied
            // out first).
            let last = self.take_permit(wanted, timeout, deadline)?;
            return feeder
                .put(last, |_| Ok(()), wire::put_wait_item(&msg))
                .map_err(|e| self.feed_failed(e));
        }
        self.ask_room(&msg, deadline)?;
        Ok(())
    }

    /// What a failed feeder put means for the caller.
    fn feed_failed(&self, e: FeedError) -> PutFail {
        match e {
            FeedError::Encode(e) => {
                if self.bounded() {
                    // The item was never queued: the place is still ours.
                    let mut inbox = lock(&self.holdings.inbox);
                    inbox.permits.unused(Instant::now());
                    self.holdings.janitor_watch(&mut inbox);
                }
                PutFail::Encode(e)
            }
            // The broker is gone: the permit with it.
            FeedError::Disconnected => PutFail::Disconnected,
        }
    }

    /// Takes one of the permits this process holds: `Ok(last)` (whether
    /// it was the last one held), or `Err(wanted)`, how many to ask for.
    fn own_permit(&self) -> Result<bool, u32> {
        let mut inbox = lock(&self.holdings.inbox);
        let now = Instant::now();
        if inbox.permits.take(now) {
            return Ok(inbox.permits.idle_since().is_none());
        }
        Err(inbox.permits.want(now, self.maxsize))
    }

    /// Asks the broker for `wanted` permits (waiting up to `timeout`
    /// while the queue is full) and uses the first. Returns whether it
    /// was the last one held.
    fn take_permit(
        &self,
        wanted: u32,
        timeout: Option<Duration>,
        deadline: Deadline,
    ) -> Result<bool, PutFail> {
        self.ask_room(&wire::acquire(wanted, timeout, &[]), deadline)
    }

    /// Sends `request` (an `ACQUIRE`, or a `PUT_WAIT` whose item the
    /// broker stores in the first place it grants) and holds the places
    /// granted beyond the first. Returns whether none is held.
    fn ask_room(&self, request: &[u8], deadline: Deadline) -> Result<bool, PutFail> {
        let h = &self.holdings;
        // The owner not answering in time is a timed-out put. A grant
        // that arrives later on the dropped connection is never filled;
        // the broker frees it when this process's feeder stream ends
        // (docs/architecture.md, "Not there yet").
        let mut link = h.checkout(deadline).map_err(Late::for_put)?;
        let answer = self
            .request(&mut link, request, deadline)
            .map_err(Late::for_put)?;
        let granted = match outcome::acquire(wire::parse_reply(&answer)) {
            Answer::Done(granted) => {
                h.checkin(link);
                granted?
            }
            Answer::Garbled(other) => {
                tracing::warn!("unexpected answer to an acquire: {other}");
                return Err(PutFail::Disconnected);
            }
        };
        let mut inbox = lock(&h.inbox);
        if inbox.permits.granted(Instant::now(), granted) {
            h.janitor_watch(&mut inbox);
            return Ok(false);
        }
        Ok(true)
    }

    /// Takes one item: from this process's buffer, else from the broker
    /// (waiting up to `timeout`; `None` waits forever). The item is
    /// acknowledged (on the connection it came on) before it is returned:
    /// an item `get` returned is never delivered again, even if this
    /// process dies right after.
    ///
    /// What `get` returns is `read` of the item's bytes: an item from
    /// the buffer is read in place, under the buffer's lock, with no
    /// reference to its delivery's frame taken and dropped per item. A
    /// sealed item is `sealed` of it instead: `shape` says the caller's
    /// type is a byte sequence of that shape, and a large item's body is
    /// then read straight into its buffer.
    pub(crate) fn get_with<R>(
        &self,
        timeout: Option<Duration>,
        shape: Option<Shape>,
        read: impl Fn(&[u8]) -> R,
        sealed: impl Fn(Received) -> R,
    ) -> Result<R> {
        let h = &self.holdings;
        // Set (with the time left) only when a give-back made this get
        // wait.
        let mut waited: Option<Deadline> = None;
        let mut timeout = timeout;
        let buf = {
            let mut inbox = lock(&h.inbox);
            // No clock read for a get from the buffer (the janitor
            // notices takes on its own clock) nor for one that goes to
            // the broker.
            loop {
                if !inbox.ledger.is_empty() || inbox.returning == 0 {
                    break;
                }
                // Items of this process are on their way back to the
                // front of the queue: asking the broker now could bring
                // later ones first. Wait until it has them (by this get's
                // deadline).
                let deadline = *waited.get_or_insert_with(|| client_deadline(timeout));
                inbox = match deadline {
                    None => wait(&h.returned, inbox),
                    Some(d) => {
                        let now = Instant::now();
                        if now >= d {
                            return Err(Error::Empty);
                        }
                        wait_timeout(&h.returned, inbox, deadline::remaining(d, now)).0
                    }
                };
            }
            if let Some(Some(d)) = waited {
                timeout = Some(deadline::remaining(d, Instant::now()));
            }
            if !inbox.ledger.is_empty() {
                // Acknowledged on its connection before it is handed out
                // (see [`Ledger::pop`]): `Err` when the ack cannot be
                // written, and the connection's end gives it back.
                let popped = if inbox.ledger.next_sealed().is_none() {
                    // The per-item path: an inline item, decoded
                    // straight from its frame (no sealed-item plumbing:
                    // it cost this path about a third more CPU).
                    let settle_last = self.bounded();
                    let how = |link: &mut Link, last| ack_as(link, last, settle_last);
                    inbox.ledger.pop_inline(how, |frame, range| {
                        Ok(read(frame.get(range).unwrap_or(&[])))
                    })
                } else {
                    // A sealed item is read before it is acknowledged
                    // (the ack may free its object); if it cannot be, the
                    // buffer went back and the get asks the broker.
                    let Ok((locked, mut fetched)) = self.fetch_next(inbox, shape) else {
                        return self.get_with(timeout, shape, read, sealed);
                    };
                    inbox = locked;
                    let how: fn(&mut Link, bool) -> std::io::Result<()> = if fetched.is_some() {
                        sealed::ack_now
                    } else {
                        ack
                    };
                    inbox.ledger.pop_with(
                        how,
                        |frame, range| Ok(read(frame.get(range).unwrap_or(&[]))),
                        |_| sealed::hand(fetched.take(), &sealed),
                    )
                };
                if let Some(popped) = popped {
                    let popped = popped.map_err(pop_failed)?;
                    let drained = if popped.drained {
                        inbox.ledger.unpark(popped.conn)
                    } else {
                        None
                    };
                    drop(inbox);
                    if let Some(link) = drained {
                        h.checkin(link);
                    }
                    return popped.item;
                }
            }
            // Counted from the moment the buffer was found empty: extras
            // another thread receives meanwhile go back to the broker,
            // where this thread's request can get them.
            inbox.prefetch.leave_for_broker();
            inbox.frames.take()
        };
        let exchanged = self.ask(timeout, buf, shape);
        let mut inbox = lock(&h.inbox);
        inbox.prefetch.back_from_broker();
        let (mut link, frame, ranges) = match exchanged? {
            Asked::Items(link, frame, ranges) => (link, frame, ranges),
            Asked::Taken(link, frame, range) => {
                // Out of the queue already: no ack, no wake-up of the
                // broker.
                let now = Instant::now();
                inbox.prefetch.delivered(now, 1);
                inbox.ledger.taken_at(now);
                let frame = inbox.frames.lend(frame);
                drop(inbox);
                h.checkin(link);
                return Ok(read(Received::new(frame, range).bytes()));
            }
            Asked::Sealed(link, first, extras) => {
                return self.hand_out_sealed(inbox, link, (first, extras), &sealed);
            }
        };
        let frame = inbox.frames.lend(frame);
        let mut ranges = ranges.into_iter();
        let first = ranges.next().unwrap_or(0..0);
        let extras: Vec<Range<usize>> = ranges.collect();
        let now = Instant::now();
        inbox.prefetch.delivered(now, 1 + extras.len());
        inbox.ledger.taken_at(now);
        // With other threads of this process already waiting at the
        // broker, the extras go straight back (to the front), for them.
        let give_back = match inbox.prefetch.extras(extras.len()) {
            Extras::None => 0,
            Extras::GiveBack(n) => n,
            Extras::Keep(n) => {
                // Extras wait in the buffer; their acks (and this first
                // item's) go on the connection's ack page.
                if h.open_acks(&mut link, None).is_err() {
                    // No ack page: give the extras back, keep the first.
                    inbox.returning += 1;
                    drop(inbox);
                    h.ack_and_give_back(link, n)?;
                    return Ok(read(Received::new(frame, first).bytes()));
                }
                if let Err(e) = ack(&mut link, false) {
                    return Err(gone("ack", e));
                }
                inbox.ledger.receive(link.id, link, &frame, extras, now);
                h.janitor_watch(&mut inbox);
                return Ok(read(Received::new(frame, first).bytes()));
            }
        };
        if give_back > 0 {
            // Extras going back: no get of this process asks the broker
            // until they are there (see `Inbox::returning`).
            inbox.returning += 1;
            drop(inbox);
            h.ack_and_give_back(link, give_back)?;
            return Ok(read(Received::new(frame, first).bytes()));
        }
        drop(inbox);
        // The ack of the only item kept before it is handed out.
        if let Err(e) = link.conn.send_bytes(&wire::settle(1, 0)) {
            return Err(gone("ack", e));
        }
        link.owed.sent_one_way();
        h.checkin(link);
        Ok(read(Received::new(frame, first).bytes()))
    }

    /// Asks the broker for items; returns the connection, the answer and
    /// the items' ranges in it.
    ///
    /// The answer is read into `buf` (a buffer to reuse).
    fn ask(&self, timeout: Option<Duration>, buf: Vec<u8>, shape: Option<Shape>) -> Result<Asked> {
        let deadline = client_deadline(timeout);
        let barrier = self.barrier()?;
        let mut link = self.holdings.checkout(deadline).map_err(Late::for_get)?;
        // One when other threads of this process already wait there
        // (extras would only go straight back). A bounded queue counts
        // delivered items until they are acknowledged (as CPython's
        // semaphore counts items still in its pipe), so a batch never lets
        // the queue hold more than `maxsize`; the pace keeps it to what
        // this process takes (docs/architecture.md, "Bounded queues:
        // whole-queue batches").
        let most = lock(&self.holdings.inbox)
            .prefetch
            .want(Instant::now(), self.maxsize);
        #[cfg(test)]
        let most = most.max(self.holdings.least_most.load(Ordering::Relaxed));
        let asked = self.request_into(
            &mut link,
            &wire::get(most, timeout, barrier, &[]),
            deadline,
            buf,
        );
        let answer = match asked {
            Ok(answer) => answer,
            Err(Late::Late) => {
                // The answer may still come, with items in flight on
                // `link`: they go back to the front before this process
                // asks again (see `await_late_answer`).
                self.holdings.await_late_answer(link);
                return Err(Error::Empty);
            }
            Err(gone) => return Err(gone.for_get()),
        };
        if answer.first() == Some(&wire::SEALED_ITEMS) {
            return self.sealed(link, &answer, timeout, shape);
        }
        if answer.first() == Some(&wire::ITEM_TAKEN) {
            return match outcome::taken(wire::parse_reply(&answer)) {
                Answer::Done(range) => Ok(Asked::Taken(link, answer, range)),
                Answer::Garbled(other) => Err(gone("get", format!("unexpected answer {other}"))),
            };
        }
        match outcome::get(wire::parse_reply(&answer)) {
            Answer::Done(Ok(ranges)) => Ok(Asked::Items(link, answer, ranges)),
            Answer::Done(Err(e)) => {
                self.holdings.checkin(link);
                Err(e)
            }
            Answer::Garbled(other) => Err(gone("get", format!("unexpected answer {other}"))),
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
        let permits = lock(&self.holdings.inbox).permits.take_all();
        let mut link = self
            .holdings
            .send_release(link, permits)
            .ok_or(Error::Disconnected)?;
        let answer = self
            .request(&mut link, &wire::qsize(barrier, &[]), None)
            .map_err(Late::into_error)?;
        match outcome::qsize(wire::parse_reply(&answer)) {
            Answer::Done(n) => {
                self.holdings.checkin(link);
                Ok(n)
            }
            Answer::Garbled(other) => Err(gone("qsize", format!("unexpected answer {other}"))),
        }
    }

    /// Asks the broker for the queue's lane (`LANE`), by `timeout` and
    /// the grace, as any timed exchange.
    pub(crate) fn ask_lane(&self, timeout: Option<Duration>) -> LaneAnswer {
        let deadline = client_deadline(timeout);
        let mut link = match self.holdings.checkout(deadline) {
            Ok(link) => link,
            Err(Late::Late) => return LaneAnswer::Late,
            Err(Late::Gone(_)) => return LaneAnswer::Gone,
        };
        let answer = match self.request(&mut link, &[wire::LANE], deadline) {
            Ok(answer) => answer,
            Err(Late::Late) => return LaneAnswer::Late,
            Err(Late::Gone(_)) => return LaneAnswer::Gone,
        };
        let got = match wire::parse_reply(&answer) {
            Ok(Reply::Lane(range)) => match answer.get(range) {
                Some(t) => LaneAnswer::Lane(t.to_vec()),
                None => LaneAnswer::None,
            },
            Ok(Reply::NoLane) => LaneAnswer::None,
            // A broker that does not know `LANE` closes the connection
            // (`Gone` above); anything else is no lane.
            _ => LaneAnswer::None,
        };
        self.holdings.checkin(link);
        got
    }

    /// Marks one item done (`JoinableQueue::task_done`): after this
    /// process's earlier puts are stored, so a put followed by its
    /// `task_done` is never "too many".
    pub(crate) fn task_done(&self) -> Result<()> {
        outcome::task_done(self.exchange(wire::TASK_DONE)?)
    }

    /// Waits until every item put is done (`JoinableQueue::join`).
    pub(crate) fn join(&self) -> Result<()> {
        outcome::join(self.exchange(wire::JOIN)?)
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
        match self.feeder.get() {
            None => Ok(()),
            Some(f) => f.sync().map_err(|_| Error::Disconnected),
        }
    }

    /// Hands everything over: the feeder's items stored (if `wait`), the
    /// taken items acknowledged and the others given back, and the broker
    /// has seen it all — what this process did is in the queue when the
    /// process (or its last handle) is gone.
    fn hand_over(&self, wait: bool) {
        if let (Some(f), true) = (self.feeder.get(), wait) {
            let _ = f.sync();
        }
        self.holdings.release_permits();
        self.holdings.settle_all(true);
    }

    /// The last handle in this process is gone: hand over, then close.
    pub(crate) fn shutdown(&self, wait: bool) {
        self.hand_over(wait);
        if let Some(f) = self.feeder.get() {
            f.stop();
        }
        {
            let mut inbox = lock(&self.holdings.inbox);
            inbox.janitor.stop();
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
