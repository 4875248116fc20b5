//! The broker: serves this process's queues to the other processes.
//!
//! The first `Queue::new` in a process starts it: a [`Listener`] on a fresh
//! local address with a random 32-byte key (carried inside every queue
//! handle, which only travels inside launches and queue items), and a
//! thread accepting connections. Where local addresses are files (Unix
//! sockets), the socket lives in a directory of its own named like mproc's
//! runtime directories, `<tmp>/mproc-<pid>-<hex>/queues.sock`: the exit
//! hook removes it, and if the process is killed first, mproc removes it
//! as it removes any dead process's runtime directory (and a holder that
//! finds nobody listening there removes the socket at once). Accepted
//! connections wait in a bounded list (the oldest is dropped past 64) for
//! one of 4 handshake threads, which give each peer 1 s to prove the key
//! while others wait (as long as it takes while none does, so a holder
//! slowed down by a loaded machine is never refused for it): a flood of
//! silent connections costs neither threads nor more than a bounded
//! number of descriptors. Each proven connection gets a thread of its own
//! that reads requests and answers them; a blocking `get` or `ACQUIRE` blocks
//! only its own connection's thread. The broker lives as long as the
//! process: its queues die with it, and their other holders then see
//! [`Error::Disconnected`](crate::Error::Disconnected).

use crate::util::lock::{lock, wait};
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::listener::Pending;
use crate::queue::acks::AckPages;
use crate::queue::core::{self, Acquired, Deadline, Item, Shared, Taken};
use crate::queue::large::{self, Kept};
use crate::queue::parked::{self, Given, Parker, Waited, Want};
use crate::queue::recycle::Recycler;
use crate::queue::wire::{self, Entry, Request, Role};
use crate::{Address, Connection, Error, Listener, Result};

/// This process's broker.
pub(crate) struct Broker {
    listener: Listener,
    /// The directory the socket file lives in, if it has one of its own.
    dir: Option<PathBuf>,
    key: Vec<u8>,
    queues: Mutex<HashMap<u64, Arc<Shared>>>,
    next_conn: AtomicU64,
    acks: AckPages,
    /// Peers that connected and have not proven the key yet, from the
    /// local listener and the TCP one alike (one bound for both).
    pending: Arc<PendingList>,
    /// The handles connection of each (queue, session) whose feeder sends
    /// sealed items: at most one per open feeder stream.
    handles: Mutex<HashMap<(u64, u64), Arc<Connection>>>,
}

static BROKER: Mutex<Option<Arc<Broker>>> = Mutex::new(None);

/// The broker's TCP listener for holders on other hosts, once one is
/// needed, and the address they reach it at.
static TCP: Mutex<Option<(Arc<Listener>, Address)>> = Mutex::new(None);

/// This process's broker, started on first use.
pub(crate) fn get_or_start() -> Result<Arc<Broker>> {
    let mut slot = lock(&BROKER);
    if let Some(b) = slot.as_ref() {
        return Ok(b.clone());
    }
    let mut key = vec![0u8; 32];
    getrandom::getrandom(&mut key).map_err(|e| {
        Error::Io(std::io::Error::other(format!(
            "cannot read random bytes: {e}"
        )))
    })?;
    let (address, dir) = broker_address()?;
    let listener = match Listener::bind(address, Some(&key)).and_then(|l| {
        if let Address::Local(path) = l.address() {
            crate::sys::make_private(path)?;
        }
        Ok(l)
    }) {
        Ok(l) => l,
        Err(e) => {
            if let Some(dir) = &dir {
                let _ = crate::sys::remove_private_dir(dir);
            }
            return Err(e);
        }
    };
    let pending = Arc::new(PendingList::default());
    let broker = Arc::new(Broker {
        listener,
        dir,
        key,
        queues: Mutex::new(HashMap::new()),
        next_conn: AtomicU64::new(1),
        acks: AckPages::default(),
        pending: pending.clone(),
        handles: Mutex::new(HashMap::new()),
    });
    for _ in 0..HANDSHAKERS {
        let (b, p) = (broker.clone(), pending.clone());
        std::thread::Builder::new()
            .name("mproc-queue-auth".into())
            .spawn(move || b.handshake_loop(p))?;
    }
    let acceptor = broker.clone();
    std::thread::Builder::new()
        .name("mproc-queue-broker".into())
        .spawn(move || {
            accept_into(&acceptor.listener, &acceptor.pending, "local");
            acceptor.pending.close();
        })?;
    tracing::debug!(address = %broker.listener.address(), "queue broker started");
    *slot = Some(broker.clone());
    Ok(broker)
}

/// The broker, if this process runs one.
pub(crate) fn running() -> Option<Arc<Broker>> {
    lock(&BROKER).clone()
}

/// A fresh local address for the broker, and the directory made for it.
///
/// Where local names are files in the temporary directory (Unix sockets),
/// the socket goes in a directory of its own named `mproc-<pid>-<hex>`,
/// the pattern of mproc's runtime directories, so that mproc removes it
/// if this process dies without its exit hook. Elsewhere (Windows pipe
/// names, which vanish with their process) the fresh name is used as is.
fn broker_address() -> Result<(Address, Option<PathBuf>)> {
    let fresh = Address::unique_local();
    let tmp = std::env::temp_dir();
    match &fresh {
        Address::Local(name) if name.parent() == Some(tmp.as_path()) => {
            let mut random = [0u8; 8];
            getrandom::getrandom(&mut random).map_err(|e| {
                Error::Io(std::io::Error::other(format!(
                    "cannot read random bytes: {e}"
                )))
            })?;
            let hex = crate::util::hex::hex(&random);
            let dir = tmp.join(format!("mproc-{}-{hex}", std::process::id()));
            crate::sys::create_private_dir(&dir)?;
            Ok((Address::Local(dir.join("queues.sock")), Some(dir)))
        }
        _ => Ok((fresh, None)),
    }
}

/// A holder found nobody listening at `address`: the owner died without
/// its exit hook. Removes its socket file (and the directory made for
/// it), which nobody can listen at any more.
pub(crate) fn remove_dead(address: &Address) {
    let Address::Local(path) = address else {
        return;
    };
    if std::fs::remove_file(path).is_ok() {
        tracing::debug!(path = %path.display(), "removed a dead queue broker's socket");
    }
    let ours = path.file_name().is_some_and(|n| n == "queues.sock")
        && path
            .parent()
            .and_then(|d| d.file_name())
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("mproc-"));
    if let (true, Some(dir)) = (ours, path.parent()) {
        let _ = crate::sys::remove_dead_private_dir(dir);
    }
}

/// At exit: stop listening and remove the socket file and its directory.
pub(crate) fn close() {
    if let Some(b) = running() {
        b.listener.close();
        if let Some((tcp, _)) = lock(&TCP).as_ref() {
            tcp.close();
        }
        if let Some(dir) = &b.dir {
            let _ = crate::sys::remove_private_dir(dir);
        }
    }
}

impl Broker {
    pub(crate) fn address(&self) -> &Address {
        self.listener.address()
    }

    pub(crate) fn key(&self) -> &[u8] {
        &self.key
    }

    pub(crate) fn register(&self, id: u64, queue: Arc<Shared>) {
        lock(&self.queues).insert(id, queue);
    }

    /// Counts out of queue `id` the items its holders acknowledged on
    /// their ack pages and the broker has not read yet (before the owner
    /// answers its own `qsize`).
    pub(crate) fn read_acks(&self, id: u64, shared: &Shared) {
        self.acks.apply_queue(id, |acks| shared.ack(acks));
    }

    /// The queue `id` if this broker serves it.
    pub(crate) fn queue(&self, id: u64) -> Option<Arc<Shared>> {
        lock(&self.queues).get(&id).cloned()
    }

    /// One of the [`HANDSHAKERS`]: authenticates pending peers, newest
    /// first; a proven peer gets a thread of its own. A peer has
    /// [`HANDSHAKE_DEADLINE`] while other peers wait for a handshaker, and
    /// as long as it needs while none does: a holder slowed down by a
    /// loaded machine (or this thread, slowed down) is not refused for
    /// it, a silent one holds this thread only until another peer comes.
    fn handshake_loop(self: Arc<Self>, pending: Arc<PendingList>) {
        while let Some(p) = pending.pop() {
            match p.authenticate_unless(HANDSHAKE_DEADLINE, &|| pending.waiting()) {
                Ok(conn) => {
                    let broker = self.clone();
                    let spawned = std::thread::Builder::new()
                        .name("mproc-queue-conn".into())
                        .spawn(move || broker.serve(conn));
                    if let Err(e) = spawned {
                        tracing::warn!("queue broker cannot start a connection thread: {e}");
                    }
                }
                Err(e) => tracing::debug!("queue broker refused a connection: {e}"),
            }
        }
    }

    fn serve(&self, conn: Connection) {
        // Shared with the threads that answer its parked requests.
        let conn = Arc::new(conn);
        let hello = match conn.recv_bytes() {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!("queue connection closed before its hello: {e}");
                return;
            }
        };
        let Ok(Request::Hello {
            queue,
            session,
            role,
            sealed,
        }) = wire::parse_request(&hello)
        else {
            tracing::warn!("queue connection without a hello: closed");
            return;
        };
        // Tests: counted once everything below is done with (dropped last).
        #[cfg(test)]
        let _ended = super::dial_tests::Ended(queue, role);
        let Some(shared) = self.queue(queue) else {
            let _ = conn.send_bytes(&[wire::NO_QUEUE]);
            return;
        };
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        if role == Role::Handles {
            self.open_handles(&shared, queue, session, id, conn);
            return;
        }
        if role == Role::Feeder {
            // Registered before the answer: a request that follows the
            // holder's first put finds the feed.
            shared.feed_open_on(session, id);
        }
        if role == Role::Ops {
            // Before the answer: the holder may ask for its ack page next.
            self.acks.open(id, session, queue);
        }
        #[cfg(test)]
        super::dial_tests::hold_hello(queue, role);
        if conn.send_bytes(&wire::hello_ok(id)).is_err() {
            // The holder gave up waiting for this answer (or died): only
            // what this connection opened ends with it. (An ops
            // connection's end never closes its session's feeder stream:
            // a holder that gave up on a slow hello keeps its feeder.)
            if role == Role::Feeder {
                shared.feed_closed_on(session, id);
            }
            self.acks.finish(id);
            return;
        }
        let span = tracing::debug_span!("queue connection", queue, conn = id, ?role);
        let _enter = span.enter();
        match role {
            Role::Feeder => {
                serve_feeder(&shared, &conn, session, &|| {
                    lock(&self.handles).get(&(queue, session)).cloned()
                });
                // Under the map's lock, so that a handles connection is
                // either refused or taken out here; dropped (closed, its
                // descriptors still in flight freed with it) after the
                // lock, as closing can be slow. Only the end of the
                // connection that opened the feeder stream closes it.
                let gone = {
                    let mut handles = lock(&self.handles);
                    if shared.feed_closed_on(session, id) {
                        handles.remove(&(queue, session))
                    } else {
                        None
                    }
                };
                drop(gone);
            }
            Role::Handles => {}
            Role::Ops => {
                serve_ops(&shared, &self.acks, &conn, (queue, id), session, sealed);
                // What the holder took is counted out before the rest goes
                // back: its acks were written before its gets returned.
                let taken = self.acks.finish(id);
                shared.ack(&[(id, taken)]);
                let back = shared.drop_conn(id);
                if back > 0 {
                    tracing::debug!(
                        items = back,
                        "connection closed: its unacknowledged items are back in the queue"
                    );
                }
            }
        }
    }
}

impl Broker {
    /// Keeps a session's handles connection (role 3) for its feeder
    /// thread, which reads the descriptors of sealed items from it. Only
    /// for a session whose feeder stream is open (one per stream: a later
    /// one replaces it), so a peer cannot make the broker keep
    /// connections nobody reads.
    fn open_handles(
        &self,
        shared: &Shared,
        queue: u64,
        session: u64,
        id: u64,
        conn: Arc<Connection>,
    ) {
        let mut handles = lock(&self.handles);
        if !shared.feeding(session) {
            drop(handles);
            tracing::debug!(
                session,
                "handles connection without a feeder stream: closed"
            );
            return;
        }
        // Registered before the answer: descriptors only come after it.
        if conn.send_bytes(&wire::hello_ok(id)).is_ok() {
            let replaced = handles.insert((queue, session), conn);
            // Closed after the lock, as closing can be slow.
            drop(handles);
            drop(replaced);
        }
    }
}

/// Takes the descriptor of a sealed entry of `len` bytes from the
/// session's handles connection and checks it. The producer sent it
/// before the batch, so it is there already: a missing or wrong one is
/// a broken batch (`Err`).
fn take_sealed(handles: Option<Arc<Connection>>, len: u64) -> std::io::Result<Item> {
    let Some(h) = handles else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "a sealed item without a handles connection",
        ));
    };
    if !matches!(h.poll(Some(Duration::ZERO)), Ok(true)) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "a sealed item whose descriptor was not sent",
        ));
    }
    let mut fds = crate::sys::recv_handles(h.stream().handle(), 1)?;
    let fd = fds.pop().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, "no descriptor received")
    })?;
    // Only one rides on each marker byte; more is a broken batch.
    if !fds.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "more than one descriptor for a sealed item",
        ));
    }
    Ok(match large::keep(fd, len, Some(&h))? {
        Kept::Sealed(blob) => Item::sealed(blob),
        Kept::Bytes(bytes) => Item::whole(bytes),
    })
}

/// How long a connecting peer has to prove the queue's key while other
/// peers wait for a handshaker (a holder answers in well under a
/// millisecond of its own work).
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(1);

/// Threads that run handshakes: the only pre-authentication threads.
const HANDSHAKERS: usize = 4;

/// Accepted connections waiting for a handshaker, at most.
const MAX_PENDING: usize = 64;

/// Connections accepted and not yet authenticated (bounded).
#[derive(Default)]
struct PendingList {
    list: Mutex<(VecDeque<Pending>, bool)>,
    ready: Condvar,
}

impl PendingList {
    /// Adds a newly accepted peer; past [`MAX_PENDING`] the oldest is
    /// dropped (closed: a holder that was dropped connects again).
    fn push(&self, p: Pending) {
        let mut list = lock(&self.list);
        let oldest = if list.0.len() >= MAX_PENDING {
            list.0.pop_front()
        } else {
            None
        };
        list.0.push_back(p);
        drop(list);
        self.ready.notify_one();
        if oldest.is_some() {
            // Closed after the lock, as closing can be slow.
            drop(oldest);
            tracing::debug!("queue broker: too many pending handshakes, the oldest dropped");
        }
    }

    /// The newest pending peer (it is the likeliest to be a live holder
    /// that just connected); `None` once the broker closed.
    fn pop(&self) -> Option<Pending> {
        let mut list = lock(&self.list);
        loop {
            if list.1 {
                return None;
            }
            if let Some(p) = list.0.pop_back() {
                return Some(p);
            }
            list = wait(&self.ready, list);
        }
    }

    /// Whether a peer waits for a handshaker (or the broker closed).
    fn waiting(&self) -> bool {
        let list = lock(&self.list);
        list.1 || !list.0.is_empty()
    }

    fn close(&self) {
        let mut list = lock(&self.list);
        list.1 = true;
        let dropped = std::mem::take(&mut list.0);
        drop(list);
        self.ready.notify_all();
        // Closed after the lock, as closing can be slow.
        drop(dropped);
    }
}

/// An answer buffer bigger than this is not kept for the next answer.
const KEEP_REPLY: usize = 64 << 20;

fn deadline_of(timeout: Option<Duration>) -> Deadline {
    timeout.and_then(|t| Instant::now().checked_add(t))
}

/// Reads a feeder's batches until its stream ends. A batch cut short by
/// the sender's death never parses: nothing of it is stored. Sealed
/// items take their descriptors from the session's handles connection
/// (`handles`); a batch whose descriptors are missing or wrong is not
/// stored either, and ends the stream.
fn serve_feeder(
    shared: &Shared,
    conn: &Connection,
    session: u64,
    handles: &dyn Fn() -> Option<Arc<Connection>>,
) {
    // Batches are read into buffers their items no longer hold, and
    // their entries into one list: no fresh memory per batch.
    let mut buffers = Recycler::default();
    let mut ranges = Vec::new();
    loop {
        let mut msg = buffers.take();
        match conn.recv_bytes_reusing(&mut msg) {
            Ok(()) => {}
            Err(Error::Eof) => return,
            Err(e) => {
                tracing::debug!("feeder stream ended: {e}");
                return;
            }
        };
        let parsed = match wire::parse_batch_into(&msg, &mut ranges) {
            Some(batch) => batch.map(|seq| Request::PutBatch {
                seq,
                items: Vec::new(),
            }),
            None => wire::parse_request(&msg),
        };
        let seq = match parsed {
            Ok(Request::PutBatch { seq, .. }) => seq,
            Ok(Request::Sync) => {
                // Every batch before it is stored.
                if conn.send_bytes(&[wire::SYNCED]).is_err() {
                    return;
                }
                continue;
            }
            other => {
                tracing::warn!("unexpected message on a feeder stream: {other:?}");
                return;
            }
        };
        let buf = buffers.lend(msg);
        let stored = if ranges.iter().all(|e| matches!(e, Entry::Bytes(_))) {
            shared.feed(
                session,
                seq,
                ranges.drain(..).map(|e| match e {
                    Entry::Bytes(r) => Item::part(&buf, r),
                    Entry::Sealed(_) => Item::whole(Vec::new()),
                }),
            )
        } else {
            let mut items = Vec::with_capacity(ranges.len());
            for e in ranges.drain(..) {
                items.push(match e {
                    Entry::Bytes(r) => Item::part(&buf, r),
                    Entry::Sealed(len) => match take_sealed(handles(), len) {
                        Ok(item) => item,
                        Err(e) => {
                            tracing::warn!("feeder batch refused: {e}");
                            return;
                        }
                    },
                });
            }
            shared.feed(session, seq, items)
        };
        if !stored {
            tracing::warn!(seq, "feeder batch out of order");
            return;
        }
        if ranges.capacity() > KEEP_RANGES {
            ranges = Vec::new();
        }
    }
}

/// A list of a batch's item ranges longer than this (1 MiB of them) is
/// not kept for the next batch.
const KEEP_RANGES: usize = 1 << 16;

/// Answers requests until the connection ends. `sealed`: the holder
/// takes sealed items (a `SEALED_ITEMS` answer, a run of them); other
/// holders get their bytes.
/// Tests: the next `GET` on a queue listed here waits, in its
/// connection's thread before it is handled, until its sender sends or
/// is dropped (an owner too slow to answer in time, made certain).
#[cfg(test)]
pub(crate) static HOLD_NEXT_GET: Mutex<Vec<(u64, std::sync::mpsc::Receiver<()>)>> =
    Mutex::new(Vec::new());

#[cfg(test)]
fn hold_get(queue: u64) {
    let held = {
        let mut held = lock(&HOLD_NEXT_GET);
        held.iter()
            .position(|(q, _)| *q == queue)
            .map(|i| held.swap_remove(i).1)
    };
    if let Some(release) = held {
        let _ = release.recv();
    }
}

fn serve_ops(
    shared: &Shared,
    acks: &AckPages,
    conn: &Arc<Connection>,
    (queue, id): (u64, u64),
    session: u64,
    sealed: bool,
) {
    // While a request waits, the holder sends nothing more on this
    // connection: anything readable means it is gone.
    let alive = || matches!(conn.poll(Some(Duration::ZERO)), Ok(false));
    // Where the OS allows, a request that must wait is parked: the thread
    // that makes it answerable answers it (see [`parked`]).
    let mut parker = Parker::new(conn.clone());
    // Reused between answers: fresh memory costs a page fault per 4 KiB.
    let mut reply = Vec::new();
    let mut msg = Vec::new();
    loop {
        match conn.recv_bytes_reusing(&mut msg) {
            Ok(()) => {}
            Err(Error::Eof) => return,
            Err(e) => {
                tracing::debug!("queue connection ended: {e}");
                return;
            }
        };
        let req = match wire::parse_request(&msg) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("{e}: connection closed");
                return;
            }
        };
        // A `PUT_WAIT`'s item, out of the message (reused below).
        let mut carried = match &req {
            Request::PutWait { item, .. } => msg.get(item.clone()).map(|b| Item::whole(b.to_vec())),
            _ => None,
        };
        if msg.capacity() > KEEP_REPLY {
            msg = Vec::new();
        }
        // The items taken since the last message, first.
        let taken = acks.drain(id);
        if taken > 0 {
            shared.ack(&[(id, taken)]);
        }
        let sent = match req {
            Request::Acquire {
                wanted,
                timeout,
                acks,
            } => {
                shared.ack(&acks);
                let room = Room {
                    session,
                    wanted: wanted as usize,
                    deadline: deadline_of(timeout),
                    item: None,
                };
                match acquire(shared, &mut parker, conn, id, room, &alive) {
                    Step::Answered(sent) => sent,
                    Step::Next => continue,
                    Step::Close => return,
                }
            }
            Request::PutWait {
                wanted,
                timeout,
                barrier,
                ..
            } => {
                // This process's earlier puts (its feeder's batches) are
                // stored first: its items stay in order.
                shared.wait_barrier(session, barrier);
                let room = Room {
                    session,
                    wanted: wanted as usize,
                    deadline: deadline_of(timeout),
                    item: carried.take(),
                };
                match acquire(shared, &mut parker, conn, id, room, &alive) {
                    Step::Answered(sent) => sent,
                    Step::Next => continue,
                    Step::Close => return,
                }
            }
            Request::Release { count } => {
                shared.release(session, count as usize);
                Ok(())
            }
            Request::Get {
                most,
                timeout,
                barrier,
                acks,
            } => {
                #[cfg(test)]
                hold_get(queue);
                shared.ack(&acks);
                shared.wait_barrier(session, barrier);
                let (most, deadline) = (most as usize, deadline_of(timeout));
                // Ack on send for a one-item answer to a get that waits
                // for good (see [`wire::ITEM_TAKEN`]).
                let want = Want::Get {
                    most,
                    on_send: deadline.is_none(),
                };
                let parked = parked::PARKS.then(|| parker.request(id, want)).flatten();
                if parked.is_none() && !alive() {
                    // The holder's end already follows its request (it
                    // sends nothing more until answered): a consumer that
                    // died before this thread read its `GET` takes
                    // nothing, so no item goes to it and then back to the
                    // front after later ones went to others. (A parked
                    // request is asked this by `take_or_park` only when
                    // there are items to take at once, and by whoever
                    // serves it otherwise: one poll per `GET`, not two.)
                    return;
                }
                let taken = match parked {
                    Some(p) => match shared.take_or_park(most, deadline, p.clone()) {
                        Some(t) => t,
                        None => match parker.wait(shared, &p, deadline) {
                            Waited::Answered => continue,
                            Waited::Write(Given::Items(items)) => Taken::Items(items),
                            Waited::Write(Given::Granted(_) | Given::Refused) | Waited::Gone => {
                                return
                            }
                            Waited::TimedOut => Taken::Empty,
                        },
                    },
                    None => shared.take_to_send(most, deadline, &alive),
                };
                match taken {
                    Taken::Items(mut items) => {
                        if let Some(answer) = sealed_answer(shared, sealed, &mut items) {
                            // In flight on this connection before it is
                            // sent, like any delivered item: the broker
                            // keeps its descriptor until it is
                            // acknowledged, or back in the queue.
                            shared.sent(id, items);
                            conn.send_bytes(&answer)
                        } else {
                            // In flight on this connection before they are
                            // sent: the holder's acks for them come after.
                            // (A parked request answered by another thread
                            // takes this path too, sealed items as bytes.)
                            let on_send = parked::taken_on_send(want, items.len())
                                && parker.fits_now(5 + core::items_answer_bound(&items));
                            shared.answer_items(id, items, &mut reply);
                            // Taken before it is written (ack on send): its
                            // place is free for a parked put, and gone from
                            // `qsize` before the holder's get can return.
                            let taken = if on_send {
                                wire::mark_taken(&mut reply);
                                shared.taken_on_send(id, true)
                            } else {
                                None
                            };
                            // On failure the items are in flight on this
                            // connection (closing it puts them back), or
                            // taken on send and put back here.
                            let sent = conn.send_bytes(&reply);
                            if let (Err(_), Some(item)) = (&sent, taken) {
                                shared.restore(item, true);
                            }
                            if reply.capacity() > KEEP_REPLY {
                                reply = Vec::new();
                            }
                            sent
                        }
                    }
                    // (`Lane` only for the owner's own gets: this one
                    // switched the lane off first.)
                    Taken::Empty | Taken::Lane => conn.send_bytes(&[wire::EMPTY]),
                    Taken::Abandoned => return,
                }
            }
            Request::Settle { taken, returned } => {
                shared.settle(id, taken, returned);
                Ok(())
            }
            Request::Qsize {
                barrier,
                acks: owed,
            } => {
                shared.ack(&owed);
                // Items taken from every connection of this queue count out
                // too (their ack pages): the size is exact after this
                // process's own gets, and after any other holder's that
                // acknowledged through its page.
                acks.apply_queue(queue, |read| shared.ack(read));
                shared.wait_barrier(session, barrier);
                conn.send_bytes(&wire::size(shared.qsize() as u64))
            }
            Request::Sync => conn.send_bytes(&[wire::SYNCED]),
            Request::Page => match acks.add(id, session) {
                // Registered before the answer: the next message on this
                // connection reads it.
                Ok((pid, value)) => conn.send_bytes(&wire::ack_page(id, pid, value)),
                Err(e) => {
                    tracing::debug!(conn = id, "no ack page: {e}");
                    conn.send_bytes(&[wire::NO_PAGE])
                }
            },
            Request::Lane => match shared.open_lane() {
                Some(transfer) => conn.send_bytes(&wire::lane_at(&transfer)),
                None => conn.send_bytes(&[wire::NO_LANE]),
            },
            Request::TaskDone { barrier } => {
                shared.wait_barrier(session, barrier);
                if shared.task_done() {
                    conn.send_bytes(&[wire::DONE])
                } else {
                    conn.send_bytes(&[wire::TOO_MANY])
                }
            }
            Request::Join { barrier } => {
                shared.wait_barrier(session, barrier);
                if !shared.join(&alive) {
                    return;
                }
                conn.send_bytes(&[wire::JOINED])
            }
            other @ (Request::Hello { .. } | Request::PutBatch { .. }) => {
                tracing::warn!("unexpected request {other:?}: connection closed");
                return;
            }
        };
        if let Err(e) = sent {
            tracing::debug!("cannot answer a queue request: {e}");
            return;
        }
    }
}

/// What an `ACQUIRE` (or a `PUT_WAIT`, with its item) asks for.
struct Room {
    session: u64,
    wanted: usize,
    deadline: Deadline,
    /// A `PUT_WAIT`'s item: stored in the first place reserved.
    item: Option<Item>,
}

/// How a request ended, for [`serve_ops`]'s loop.
enum Step {
    /// Answered here (or not: the write's result).
    Answered(Result<()>),
    /// Answered by the thread that served it: read the next message.
    Next,
    /// The holder is gone (or broke the protocol): close.
    Close,
}

/// Reserves room for an `ACQUIRE` or a `PUT_WAIT` (then its item is
/// stored in the first place at once), parked where the OS allows,
/// and answers it.
fn acquire(
    shared: &Shared,
    parker: &mut Parker,
    conn: &Connection,
    id: u64,
    room: Room,
    alive: &dyn Fn() -> bool,
) -> Step {
    let Room {
        session,
        wanted,
        deadline,
        item,
    } = room;
    let carries = item.is_some();
    if carries && !alive() {
        // A holder that gave up before this was read (its end is there:
        // its put returned `Full` at its own deadline, with the owner
        // stopped or slow) gets nothing stored.
        return Step::Close;
    }
    let want = Want::Acquire {
        session,
        wanted,
        carries,
    };
    let mut item = item;
    let parked = if parked::PARKS {
        parker.request_carrying(id, want, item.take())
    } else {
        None
    };
    let acquired = match parked {
        Some(p) => match shared.acquire_or_park(session, wanted, deadline, p.clone()) {
            Some(a) => a,
            None => match parker.wait(shared, &p, deadline) {
                Waited::Answered => return Step::Next,
                Waited::Write(Given::Granted(n)) => Acquired::Granted(n),
                Waited::Write(Given::Refused | Given::Items(_)) | Waited::Gone => {
                    return Step::Close
                }
                Waited::TimedOut => Acquired::Full,
            },
        },
        None => {
            // Not parked: the item (if any) is still here.
            let acquired = shared.acquire(session, wanted, deadline, alive);
            if let (Acquired::Granted(_), Some(item)) = (&acquired, item.take()) {
                shared.fill_granted(session, item);
            }
            acquired
        }
    };
    match acquired {
        Acquired::Granted(n) => {
            let sent = conn.send_bytes(&wire::granted(n as u32));
            if sent.is_err() {
                // Never received: nobody will fill them (a carried item
                // was stored: it stays).
                shared.release(session, n - usize::from(carries));
            }
            Step::Answered(sent)
        }
        Acquired::Full => Step::Answered(conn.send_bytes(&[wire::FULL])),
        Acquired::Abandoned => Step::Close,
    }
}

/// A delivery with sealed items to a holder that takes them: the sealed
/// items it starts with go as `SEALED_ITEMS` (the answer, returned: a
/// run of at most [`large::RUN_ITEMS`]), or the items before the first
/// sealed one go as `ITEMS` (`items` is cut to them). Either way what is
/// not sent goes back to the front of the queue at once (taken to send,
/// never recorded as this connection's). `None` for an `ITEMS` answer of
/// what `items` holds.
fn sealed_answer(shared: &Shared, sealed: bool, items: &mut Vec<Item>) -> Option<Vec<u8>> {
    if !sealed {
        return None;
    }
    let first = items.iter().position(|i| i.blob().is_some())?;
    let keep = if first == 0 {
        large::run_len(items)
    } else {
        first
    };
    if items.len() > keep {
        shared.unsend(items.split_off(keep));
    }
    (first == 0).then(|| large::answer(items))
}

/// Serving holders on other hosts (a queue passed to a child that a
/// remote launcher placed).
impl Broker {
    /// The address holders on another host reach this broker at: a TCP
    /// listener (same key, same handshake) started on first use, on
    /// every interface, advertised as `host`'s address.
    pub(crate) fn tcp_address(self: &Arc<Self>, host: &str) -> Result<Address> {
        let mut tcp = lock(&TCP);
        if let Some((_, address)) = tcp.as_ref() {
            return Ok(address.clone());
        }
        let any = Address::Tcp(std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
        let listener = Arc::new(Listener::bind(any, Some(&self.key))?);
        let port = match listener.address() {
            Address::Tcp(a) => a.port(),
            Address::Local(_) => {
                return Err(Error::Io(std::io::Error::other("not a TCP listener")))
            }
        };
        let ip = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
            .map_err(|e| {
                Error::Io(std::io::Error::new(
                    e.kind(),
                    format!("cannot resolve {host:?} for the queue broker: {e}"),
                ))
            })?
            .find(|a| a.is_ipv4())
            .ok_or_else(|| {
                Error::Io(std::io::Error::other(format!(
                    "{host:?} has no IPv4 address for the queue broker"
                )))
            })?;
        let address = Address::Tcp(ip);
        let (broker, l) = (self.clone(), listener.clone());
        std::thread::Builder::new()
            .name("mproc-queue-broker-tcp".into())
            .spawn(move || broker.tcp_accept_loop(&l))?;
        tracing::debug!(%address, "queue broker serves TCP");
        *tcp = Some((listener, address.clone()));
        Ok(address)
    }

    /// The TCP listener's accept loop: its peers join the same bounded
    /// list of pending handshakes as the local listener's.
    fn tcp_accept_loop(self: &Arc<Self>, listener: &Listener) {
        accept_into(listener, &self.pending, "TCP");
    }
}

/// Takes connections off `listener`'s backlog into the bounded list of
/// pending handshakes, at once, until the listener closes: a full list
/// drops its oldest peer (the likeliest to be silent), so a flood of
/// connections costs at most [`MAX_PENDING`] descriptors and no thread.
fn accept_into(listener: &Listener, pending: &PendingList, what: &str) {
    loop {
        match listener.accept_pending() {
            Ok(p) => pending.push(p),
            Err(Error::ListenerClosed) => return,
            Err(Error::Io(e)) => {
                // Out of descriptors or memory: back off rather than spin.
                tracing::warn!("queue broker cannot accept ({what}): {e}");
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => tracing::debug!("queue broker: accept failed ({what}): {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::acks::AckPage;
    use crate::queue::core::Item;
    use crate::queue::wire::Reply;
    use crate::Client;

    /// A raw ops connection to this process's broker for queue `queue`:
    /// the connection and the id the broker gave it.
    fn ops(b: &Broker, queue: u64, session: u64) -> (Connection, u64) {
        let c = Client::connect(b.address(), Some(b.key())).unwrap();
        c.send_bytes(&wire::hello(queue, session, Role::Ops))
            .unwrap();
        match wire::parse_reply(&c.recv_bytes().unwrap()) {
            Ok(Reply::HelloOk { conn }) => (c, conn),
            other => panic!("no HELLO_OK: {other:?}"),
        }
    }

    /// A queue `queue` registered with this process's broker, holding one
    /// item `byte`, and an ops connection of `session` whose `GET` took
    /// it (in flight there): the broker, the queue, the connection and
    /// its id.
    fn one_in_flight(
        queue: u64,
        session: u64,
        byte: u8,
    ) -> (Arc<Broker>, Arc<Shared>, Connection, u64) {
        let b = get_or_start().unwrap();
        let shared = Arc::new(Shared::new(0));
        b.register(queue, shared.clone());
        shared.push_all([Item::whole(vec![byte])]);
        let (c, id) = ops(&b, queue, session);
        // With a timeout: acknowledged, not taken on send (in flight).
        c.send_bytes(&wire::get(1, Some(Duration::from_secs(60)), 0, &[]))
            .unwrap();
        c.recv_bytes().unwrap();
        (b, shared, c, id)
    }

    /// Waits (10 s at most) for the item `byte` to be back in `shared`
    /// and takes it: back when the broker sees its connection end, as
    /// an item nobody counted taken.
    fn comes_back(shared: &Shared, byte: u8) {
        let deadline = Instant::now() + Duration::from_secs(10);
        match shared.take(None, 1, Some(deadline), &|| true) {
            Taken::Items(items) => assert_eq!(items[0].bytes(), [byte]),
            _ => panic!("the in-flight item never came back"),
        }
    }

    fn page(c: &Connection) -> Reply {
        c.send_bytes(&[wire::PAGE]).unwrap();
        wire::parse_reply(&c.recv_bytes().unwrap()).unwrap()
    }

    // `PAGE` on an ops connection gives that connection's ack page (the
    // same one when asked again), and what a holder counts there before
    // its connection ends leaves the queue for good while the rest of
    // its delivery comes back: the exactly-once hand-over through a page
    // asked for without a second connection.
    #[test]
    fn page_on_the_ops_connection_counts_taken_items_once() {
        let b = get_or_start().unwrap();
        let queue = 0x5a6e_0001;
        let shared = Arc::new(Shared::new(0));
        b.register(queue, shared.clone());
        shared.push_all((0..5u8).map(|i| Item::whole(vec![i])));

        let (c, id) = ops(&b, queue, 77);
        c.send_bytes(&wire::get(5, None, 0, &[])).unwrap();
        let answer = c.recv_bytes().unwrap();
        assert!(matches!(wire::parse_reply(&answer), Ok(Reply::Items(r)) if r.len() == 5));
        let Reply::AckPage { conn, pid, value } = page(&c) else {
            panic!("no ACK_PAGE");
        };
        assert_eq!(conn, id, "the page of the asking connection");
        assert_eq!(pid, std::process::id());
        assert!(
            matches!(page(&c), Reply::AckPage { conn, value: v, .. } if conn == id && v == value),
            "asked again: the same page"
        );
        let holder = AckPage::open(pid, value).unwrap();
        holder.add();
        holder.add();
        assert_eq!(shared.qsize(), 5, "acks on the page are read later");
        drop(c);
        // The broker reads the page when the connection ends: 2 taken
        // for good, the other 3 back at the front, in order (all at once,
        // under the queue's lock).
        let deadline = Instant::now() + Duration::from_secs(10);
        let Taken::Items(back) = shared.take(None, 5, Some(deadline), &|| true) else {
            panic!("nothing came back");
        };
        let back: Vec<&[u8]> = back.iter().map(Item::bytes).collect();
        assert_eq!(back, [&[2u8][..], &[3], &[4]], "the untaken ones, in order");
        assert_eq!(shared.qsize(), 0, "the taken ones never come back");
    }

    // A consumer that died before its connection's thread read its `GET`
    // (a starved broker) takes nothing: the ready item is never in flight
    // on its connection, so it cannot come back to the front after later
    // items went to another consumer. With a timeout the answer would be
    // an acknowledged delivery (in flight until the connection's end, so
    // a taken item shows there); without one, taken on send (put back at
    // once when the write fails).
    #[test]
    fn a_get_read_after_its_holder_died_takes_nothing() {
        for timeout in [Some(Duration::from_secs(60)), None] {
            let shared = Shared::new(0);
            shared.push_all([Item::whole(vec![1]), Item::whole(vec![2])]);
            let (holder, conn) = crate::pipe(true).unwrap();
            holder.send_bytes(&wire::get(1, timeout, 0, &[])).unwrap();
            drop(holder);
            let acks = AckPages::default();
            acks.open(21, 79, 0x5a6e_0003);
            serve_ops(
                &shared,
                &acks,
                &Arc::new(conn),
                (0x5a6e_0003, 21),
                79,
                false,
            );
            assert_eq!(
                shared.drop_conn(21),
                0,
                "{timeout:?}: an item was given to the dead holder"
            );
            let now = Some(Instant::now());
            let Taken::Items(items) = shared.take(None, 2, now, &|| true) else {
                panic!("{timeout:?}: the items are gone");
            };
            let items: Vec<&[u8]> = items.iter().map(Item::bytes).collect();
            assert_eq!(items, [&[1u8][..], &[2]], "{timeout:?}");
        }
    }

    // A `PAGE` with bytes after it is malformed: the broker closes the
    // connection (its in-flight items come back), never a page.
    #[test]
    fn a_malformed_page_request_closes_the_connection() {
        let (_b, shared, c, _) = one_in_flight(0x5a6e_0002, 78, 9);
        c.send_bytes(&[wire::PAGE, 0]).unwrap();
        assert!(matches!(c.recv_bytes(), Err(Error::Eof)));
        // The in-flight item comes back when the broker closes it.
        comes_back(&shared, 9);
    }

    // A `HELLO` of role 2 (the ack page's old connection of its own,
    // naming another ops connection: what an old or hostile client
    // sends) is malformed: the broker closes that connection unanswered.
    // The ops connection it named is untouched: its delivery stays in
    // flight (no page was made for anyone to count on), it goes on being
    // served, and what it held comes back when it ends.
    #[test]
    fn a_role_2_hello_is_closed_unanswered() {
        let queue = 0x5a6e_0003;
        let (b, shared, c, id) = one_in_flight(queue, 79, 4);
        for with_link in [true, false] {
            let old = Client::connect(b.address(), Some(b.key())).unwrap();
            let mut hello = wire::hello(queue, 79, Role::Ops);
            if let Some(role) = hello.last_mut() {
                *role = 2;
            }
            if with_link {
                hello.extend_from_slice(&id.to_be_bytes());
            }
            old.send_bytes(&hello).unwrap();
            assert!(matches!(old.recv_bytes(), Err(Error::Eof)));
        }
        assert_eq!(shared.qsize(), 1, "the in-flight item is still in flight");
        assert!(
            matches!(page(&c), Reply::AckPage { conn, .. } if conn == id),
            "the named connection is still served"
        );
        drop(c);
        // Back when the broker sees the end (taken, it never would be).
        comes_back(&shared, 4);
    }
}
