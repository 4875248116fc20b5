//! The feeder: a process's puts to a queue it does not own, written in
//! batches by a thread (CPython's feeder thread). To a bounded queue each
//! item carries a permit taken before it came here (see
//! [`client`](super::client)): the broker set its place aside.
//!
//! `put` encodes the item into the batch being filled and returns; the
//! feeder thread writes whole batches, each one frame, on a connection of
//! its own. A producer putting in a loop thus pays a memory copy per item
//! and one system call per batch, not one round trip per item. The batch
//! is one frame, so a producer killed in the middle of writing it leaves
//! nothing behind: the broker stores a batch only once it has all of it.
//!
//! Nothing put is lost at exit: dropping the last handle, `join_thread`
//! and the exit hook wait until every batch is written (unless
//! `cancel_join_thread` was called); the broker reads it even after the
//! producer is gone.
//!
//! An item of [`large::THRESHOLD`] bytes or more, to a broker on this
//! host, goes into a sealed object instead ([`large`]): the batch holds
//! its length, and the thread sends its descriptor on the session's
//! handles connection (opened on first need) just before the batch.

use crate::util::lock::{lock, wait};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use crate::queue::{large, wire};
use crate::sys::OwnedHandle;
use crate::{Connection, Error};

/// Opens the session's handles connection (for the descriptors of
/// sealed items).
pub(crate) type ConnectHandles = Box<dyn Fn() -> crate::Result<Connection> + Send + Sync>;

/// A `put` waits while this many sealed items wait to be written.
const MAX_SEALED: usize = 64;

/// A `put` waits while this much is waiting to be written (and the
/// thread takes it as one batch, next); sealed items' bytes count too.
/// A batch that fits the cache and
/// a receive buffer the broker reuses: a producer that runs ahead of the
/// broker used to pile up batches of megabytes, which cost the broker a
/// page fault per 4 KiB and cache misses on every item (4 MiB before;
/// 256 KiB cut the CPU time of 64-byte items by about a fifth,
/// docs/benchmarks.md "Small Queue items"). A put waits only while
/// items are pending, so an item bigger than this (inline or sealed)
/// still goes, alone in its batch.
const HIGH_WATER: usize = 256 << 10;
/// A batch buffer bigger than this is not kept for reuse (reusing one
/// saves the page faults of fresh memory, which cost as much as copying).
const KEEP: usize = 64 << 20;

/// Why a feeder `put` failed.
pub(crate) enum FeedError {
    /// The item did not encode; nothing was queued.
    Encode(Error),
    /// The broker is gone.
    Disconnected,
}

struct State {
    /// The `PUT_BATCH` being filled.
    pending: Vec<u8>,
    /// Items in `pending`.
    items: usize,
    /// The descriptors of the sealed items in `pending`, in order.
    sealed: Vec<OwnedHandle>,
    /// Their bytes: they count towards [`HIGH_WATER`] as inline bytes do.
    sealed_bytes: usize,
    /// Reusable objects for large items ([`large::Pool`]).
    pool: large::Pool,
    /// An empty buffer to fill next.
    spare: Vec<u8>,
    /// The last batch written completely.
    written: u64,
    writing: bool,
    /// The thread waits for work.
    idle: bool,
    /// Threads waiting for a batch to be written.
    flushers: usize,
    broken: bool,
    stop: bool,
    /// The thread ended after writing everything (after `stop`).
    finished: bool,
    /// Threads waiting for the broker's answer to a `SYNC`.
    syncing: usize,
}

/// One process's feeder for one queue.
pub(crate) struct Feeder {
    conn: Connection,
    /// How to open the handles connection: `Some` when large items go
    /// out of band.
    handles: Option<ConnectHandles>,
    /// The handles connection, once a sealed item needed it (opened and
    /// written by the thread; `put` reads the broker's notices on it).
    handles_conn: OnceLock<Connection>,
    state: Mutex<State>,
    wake: Condvar,
    written: Condvar,
}

impl Feeder {
    /// Starts the feeder thread writing to `conn` (a connection whose
    /// hello the broker accepted as a feeder's).
    pub(crate) fn start(
        conn: Connection,
        handles: Option<ConnectHandles>,
    ) -> std::io::Result<Arc<Feeder>> {
        let mut pending = Vec::new();
        wire::batch_start(&mut pending);
        let feeder = Arc::new(Feeder {
            conn,
            handles,
            handles_conn: OnceLock::new(),
            state: Mutex::new(State {
                pending,
                items: 0,
                sealed: Vec::new(),
                sealed_bytes: 0,
                pool: large::Pool::default(),
                spare: Vec::new(),
                written: 0,
                writing: false,
                idle: false,
                flushers: 0,
                broken: false,
                stop: false,
                finished: false,
                syncing: 0,
            }),
            wake: Condvar::new(),
            written: Condvar::new(),
        });
        let thread = feeder.clone();
        std::thread::Builder::new()
            .name("mproc-queue-feeder".into())
            .spawn(move || thread.run())?;
        Ok(feeder)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn wait<'a>(&self, cv: &Condvar, g: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        wait(cv, g)
    }

    /// Queues the item `write` encodes (appending its bytes). With `now`,
    /// the caller writes the batch (this item and any pending) itself
    /// unless a write is already under way: a put that will not be
    /// followed by others soon (a bounded queue's put that used its last
    /// permit) reaches the broker without waking the feeder thread.
    ///
    /// The item is what `write` appends followed by `tail` (empty but for
    /// a large byte sequence, whose body is then copied once, straight
    /// into a memory object, never into the batch).
    pub(crate) fn put(
        &self,
        now: bool,
        write: impl FnOnce(&mut Vec<u8>) -> crate::Result<()>,
        tail: &[u8],
    ) -> Result<(), FeedError> {
        let mut st = self.lock();
        while !st.broken
            && st.items > 0
            && (st.pending.len() + st.sealed_bytes >= HIGH_WATER || st.sealed.len() >= MAX_SEALED)
        {
            st.flushers += 1;
            st = self.wait(&self.written, st);
            st.flushers -= 1;
        }
        if st.broken || st.finished {
            return Err(FeedError::Disconnected);
        }
        if st.items == 0 && !st.writing && st.syncing == 0 {
            // Nothing on its way: check the broker is still there before
            // accepting an item it could never get (the broker only ever
            // answers a `SYNC` on this stream: anything else readable is
            // its end). While batches flow, a failed write tells.
            if !matches!(self.conn.poll(Some(Duration::ZERO)), Ok(false)) {
                st.broken = true;
                return Err(FeedError::Disconnected);
            }
        }
        let start = st.pending.len();
        let out_of_band = self.handles.is_some() && tail.len() >= large::THRESHOLD;
        if out_of_band {
            if let Some(h) = self.handles_conn.get() {
                st.pool.take_notices(h);
            }
            if let Err(e) = write(&mut st.pending) {
                st.pending.truncate(start);
                return Err(FeedError::Encode(e));
            }
            seal_parts(&mut st, start, tail);
        } else {
            wire::put_item_with(&mut st.pending, |out| {
                write(out)?;
                out.extend_from_slice(tail);
                Ok(())
            })
            .map_err(FeedError::Encode)?;
            if self.handles.is_some() && st.pending.len() - start >= large::THRESHOLD {
                if let Some(h) = self.handles_conn.get() {
                    st.pool.take_notices(h);
                }
                seal_last(&mut st, start);
            }
        }
        st.items += 1;
        if now && !st.writing && st.syncing == 0 && st.sealed.is_empty() {
            // The caller writes the batch itself: no wake-up of the
            // feeder thread on the way to the broker. (A batch with sealed
            // items goes through the thread, which holds the handles
            // connection their descriptors travel on.)
            self.write_pending(st);
            return Ok(());
        }
        if st.idle {
            // Once: the puts that follow before the thread runs need not
            // wake it again (each wake-up is a system call).
            st.idle = false;
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Writes the pending batch from the calling thread (`put` with
    /// `now`); the feeder thread takes no batch meanwhile (`writing`), so
    /// batches stay in order.
    fn write_pending<'a>(&'a self, mut st: MutexGuard<'a, State>) {
        let mut next = std::mem::take(&mut st.spare);
        wire::batch_start(&mut next);
        let mut batch = std::mem::replace(&mut st.pending, next);
        st.items = 0;
        st.writing = true;
        let seq = st.written + 1;
        drop(st);

        wire::set_seq(&mut batch, seq);
        let sent = self.conn.send_bytes(&batch);

        let mut st = self.lock();
        written(&mut st, seq, sent);
        if batch.capacity() <= KEEP && st.spare.capacity() == 0 {
            batch.clear();
            st.spare = batch;
        }
        // The feeder thread waits for this write to end before it takes
        // the next batch, or before it finishes.
        self.written.notify_all();
        if st.idle && (st.items > 0 || st.stop || st.broken) {
            // Once, as `put` wakes it.
            st.idle = false;
            self.wake.notify_one();
        }
    }

    /// Waits until everything queued so far is written; returns the
    /// number of the last batch written (the barrier a later request
    /// carries), or `Err` when the broker is gone.
    pub(crate) fn flush(&self) -> Result<u64, FeedError> {
        let mut st = self.lock();
        while !st.broken && !st.finished && (st.items > 0 || st.writing) {
            st.flushers += 1;
            st = self.wait(&self.written, st);
            st.flushers -= 1;
        }
        if st.broken {
            Err(FeedError::Disconnected)
        } else {
            Ok(st.written)
        }
    }

    /// Waits until the broker has stored everything queued so far: the
    /// items are in the queue when this returns (`join_thread`, exit).
    pub(crate) fn sync(&self) -> Result<(), FeedError> {
        self.flush()?;
        self.lock().syncing += 1;
        let answer = self
            .conn
            .send_bytes(&[wire::SYNC])
            .and_then(|()| self.conn.recv_bytes());
        self.lock().syncing -= 1;
        match answer {
            Ok(a) if a == [wire::SYNCED] => Ok(()),
            Ok(other) => {
                tracing::warn!("unexpected answer on a feeder stream: {other:?}");
                Err(FeedError::Disconnected)
            }
            Err(e) => {
                tracing::debug!("queue feeder cannot sync: {e}");
                Err(FeedError::Disconnected)
            }
        }
    }

    /// No more puts: the thread ends once everything is written.
    pub(crate) fn stop(&self) {
        let mut st = self.lock();
        st.stop = true;
        if st.idle {
            st.idle = false;
            self.wake.notify_one();
        }
    }

    /// Sends the descriptors of a batch's sealed items, one per marker
    /// byte, on the handles connection (opened on first need).
    fn send_sealed(&self, sealed: &[OwnedHandle]) -> crate::Result<()> {
        if sealed.is_empty() {
            return Ok(());
        }
        if self.handles_conn.get().is_none() {
            let connect = self.handles.as_ref().ok_or(Error::Disconnected)?;
            // Only this thread sets it.
            let _ = self.handles_conn.set(connect()?);
        }
        let Some(h) = self.handles_conn.get() else {
            return Err(Error::Disconnected);
        };
        for fd in sealed {
            crate::sys::send_handles(
                h.stream().handle(),
                &[crate::sys::borrow(fd)],
                crate::sys::handles::Peer::current(),
            )?;
        }
        Ok(())
    }

    fn run(self: Arc<Self>) {
        loop {
            let mut st = self.lock();
            while (st.items == 0 || st.writing) && !st.stop && !st.broken {
                st.idle = true;
                st = self.wait(&self.wake, st);
                st.idle = false;
            }
            if st.writing && !st.broken {
                // Stopping while a put writes its batch itself (`put`
                // with `now`): that write ends first.
                st.flushers += 1;
                drop(self.wait(&self.written, st));
                self.lock().flushers -= 1;
                continue;
            }
            if st.broken || st.items == 0 {
                break;
            }
            let mut next = std::mem::take(&mut st.spare);
            wire::batch_start(&mut next);
            let mut batch = std::mem::replace(&mut st.pending, next);
            let sealed = std::mem::take(&mut st.sealed);
            st.sealed_bytes = 0;
            st.items = 0;
            st.writing = true;
            let seq = st.written + 1;
            drop(st);

            wire::set_seq(&mut batch, seq);
            // The descriptors first: the batch naming them must find them
            // there. Closed here once sent (the broker has its own).
            let sent = self
                .send_sealed(&sealed)
                .and_then(|()| self.conn.send_bytes(&batch));
            drop(sealed);

            let mut st = self.lock();
            if let Some(h) = self.handles_conn.get() {
                // The broker's notices of objects free again, for the
                // next large items.
                st.pool.take_notices(h);
            }
            written(&mut st, seq, sent);
            if batch.capacity() <= KEEP && st.spare.capacity() == 0 {
                batch.clear();
                st.spare = batch;
            }
            if st.flushers > 0 {
                self.written.notify_all();
            }
        }
        // Whatever ended the loop, nobody waits for this feeder any more.
        let mut st = self.lock();
        st.finished = true;
        self.written.notify_all();
        drop(st);
        self.conn.close();
        if let Some(h) = self.handles_conn.get() {
            h.close();
        }
    }
}

/// The end of a batch's write, by the feeder thread or by a put writing
/// its own batch: the batch is written, or the stream is broken and what
/// waits to be written (sealed descriptors included) is dropped.
fn written(st: &mut State, seq: u64, sent: crate::Result<()>) {
    st.writing = false;
    match sent {
        Ok(()) => st.written = seq,
        Err(e) => {
            tracing::debug!("queue feeder cannot write: {e}");
            st.broken = true;
            st.items = 0;
            st.sealed.clear();
            st.sealed_bytes = 0;
            wire::batch_start(&mut st.pending);
        }
    }
}

/// Moves the item just encoded at `start` of the batch (length, then its
/// bytes) into a sealed object: the batch keeps a sealed entry, the state
/// the descriptor. If no object can be made the item stays inline.
fn seal_last(st: &mut State, start: usize) {
    let long = st.pending.get(start..start + 4) == Some(&[0xff; 4][..]);
    let body = start + if long { 12 } else { 4 };
    let Some(bytes) = st.pending.get(body..) else {
        return;
    };
    match st.pool.object_for(&[bytes]) {
        Ok(fd) => {
            let bytes_len = bytes.len();
            st.pending.truncate(start);
            sealed_entry(st, fd, bytes_len);
        }
        Err(e) => tracing::debug!("a large item stays inline: {e}"),
    }
}

/// Queues the sealed entry of an item of `len` bytes held by `fd`.
fn sealed_entry(st: &mut State, fd: OwnedHandle, len: usize) {
    wire::put_sealed(&mut st.pending, len as u64);
    st.sealed.push(fd);
    st.sealed_bytes += len;
}

/// Queues the item whose encoding is the bytes just written at `start` of
/// the batch (a header) followed by `tail`, in an object: `tail` is copied
/// once, into it, never into the batch. If no object can be made the item
/// goes inline.
fn seal_parts(st: &mut State, start: usize, tail: &[u8]) {
    let header = st.pending.get(start..).unwrap_or(&[]);
    let len = header.len() + tail.len();
    match st.pool.object_for(&[header, tail]) {
        Ok(fd) => {
            st.pending.truncate(start);
            sealed_entry(st, fd, len);
        }
        Err(e) => {
            tracing::debug!("a large item stays inline: {e}");
            let header = st.pending.split_off(start);
            let _ = wire::put_item_with(&mut st.pending, |out| {
                out.extend_from_slice(&header);
                out.extend_from_slice(tail);
                Ok::<(), ()>(())
            });
        }
    }
}
