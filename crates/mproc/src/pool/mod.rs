//! `Pool`: CPython's `multiprocessing.Pool`, typed.
//!
//! Each worker is a daemonic child started by the ordinary spawn path; it
//! runs the worker loop of `worker.rs` and holds one duplex [`Connection`]
//! to the pool. In the parent, one thread per worker slot feeds its worker
//! from the pool's task queue (several tasks in flight, so a round trip is
//! not paid per task), reads the answers and hands each to the caller's
//! channel. A task is a chunk of argument tuples plus the offset of the
//! monomorphised runner `worker::task_entry::<F, A>`, the way a launch
//! names its entry fn. With the queue empty and a worker idle, a caller
//! skips the slot's thread: `apply_async` writes the task to the worker
//! itself, `apply` also reads the answer itself (see `Shared::hand` and
//! `Shared::lend`).
//!
//! A worker answers its tasks in order, so when its connection ends
//! before it answered them all, the oldest unanswered task is the one it
//! was running: that task fails with [`Error::WorkerDied`], the tasks
//! sent after it go back to the front of the queue, and the slot starts a
//! new worker. See `docs/architecture.md`, "## Pool".

mod remote;
pub(crate) mod worker;

use mproc_ipc::__private::lock::{lock, wait};
use std::collections::{HashMap, VecDeque};
use std::iter::Fuse;
use std::marker::PhantomData;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mproc_ipc::__private::handles;
use mproc_ipc::{decode_from_slice as from_slice, pipe, Connection, EncodeError, Error, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::context;
use crate::registry::{Args, ProcessOutput, Target};
use crate::remote::Launcher;
use crate::spawn::entry;
use crate::spawn::parent::start_child;
use crate::spawn::prepare::{check_registered, Prepared};
use remote::WorkerProcess;

use worker::{Answer, ItemOutcome};

/// Most tasks (chunks) in flight to one worker: reached when its tasks
/// are short (see [`depth`]).
const PER_WORKER: usize = 16;
/// Bytes of tasks sent to a busy worker and not yet answered. Kept below
/// every OS's pipe buffer, so the pool's writes to a busy worker never
/// block (a worker blocked on writing a large answer while the pool is
/// blocked on writing it a task would be a deadlock). An idle worker gets
/// a task of any size.
const PIPELINE_BYTES: usize = 16 * 1024;
/// Chunks an `imap` keeps submitted ahead of its consumer, per worker.
const IMAP_AHEAD: usize = PER_WORKER + 2;

/// How many tasks a worker may hold, from how long its tasks take: short
/// tasks are pipelined (the worker never waits for a round trip), long
/// ones are not (no task waits behind a long one while another worker
/// could run it). Unknown at first: one.
fn depth(avg_task: Option<Duration>) -> usize {
    match avg_task {
        None => 1,
        Some(t) if t < Duration::from_micros(50) => PER_WORKER,
        Some(t) if t < Duration::from_micros(200) => 4,
        Some(t) if t < Duration::from_millis(2) => 2,
        Some(_) => 1,
    }
}

/// Why a task produced no answer.
#[derive(Clone)]
enum Failure {
    WorkerDied { pid: u32, exitcode: i32 },
    Terminated,
    NotRunning,
    Broken(String),
    Task(String),
    Encode(EncodeError),
}

impl Failure {
    fn error(&self) -> Error {
        match self {
            Failure::WorkerDied { pid, exitcode } => Error::WorkerDied {
                pid: *pid,
                exitcode: *exitcode,
            },
            Failure::Terminated => Error::PoolTerminated,
            Failure::NotRunning => Error::PoolNotRunning,
            Failure::Broken(why) => Error::PoolBroken(why.clone()),
            Failure::Task(why) => Error::TargetError(why.clone()),
            Failure::Encode(why) => Error::Encode(why.clone()),
        }
    }
}

/// A task's answer: the worker's `DONE` frame, or why there is none.
type Part = std::result::Result<Vec<u8>, Failure>;

/// An answer on its way to the caller: the chunk's index and its part.
struct Done {
    index: usize,
    part: Part,
}

/// Where a chunk's answer goes. A chunk dropped unanswered (the pool was
/// terminated) answers `Terminated`, so no caller waits forever.
struct Sink {
    tx: Tx,
    index: usize,
    sent: bool,
}

/// The sending end of a caller's answers: bounded when the number of
/// chunks is known (one slot per chunk, so a send never blocks; one small
/// allocation, where an unbounded channel allocates a block of 31 slots
/// at its first send: most of `apply_async`'s allocation cost), unbounded
/// for `imap`.
#[derive(Clone)]
enum Tx {
    Known(SyncSender<Done>),
    Open(Sender<Done>),
}

impl Tx {
    fn send(&self, done: Done) {
        // A receiver gone (the caller dropped its result) is no error.
        let _ = match self {
            Tx::Known(tx) => tx.send(done).map_err(|_| ()),
            Tx::Open(tx) => tx.send(done).map_err(|_| ()),
        };
    }
}

impl Sink {
    fn finish(mut self, part: Part) {
        self.tx.send(Done {
            index: self.index,
            part,
        });
        self.sent = true;
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if !self.sent {
            self.tx.send(Done {
                index: self.index,
                part: Err(Failure::Terminated),
            });
        }
    }
}

struct Chunk {
    entry: i64,
    payload: Vec<u8>,
    sink: Sink,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum PoolState {
    Running,
    Closed,
    Terminated,
}

struct Inner {
    state: PoolState,
    queue: VecDeque<Chunk>,
    /// The current worker of each slot (for `terminate`).
    workers: Vec<Option<WorkerProcess>>,
    /// Why the pool cannot run tasks any more (a worker failed to start).
    broken: Option<String>,
    /// Which slots have no task in flight (refreshed at each of their
    /// takes), and how many: a busy worker leaves the queue's last tasks
    /// to the idle ones.
    idle: Vec<bool>,
    idle_count: usize,
    /// Which slots wait on their `wake` condition variable.
    waiting: Vec<bool>,
    /// The connection of each slot that waits with an idle, ready worker
    /// which may take one task: a caller writes it one task itself and
    /// leaves it in `handed` (no hand-over to the slot's thread before the
    /// worker starts it).
    parked: Vec<Option<Arc<Connection>>>,
    /// The task a caller wrote to a parked slot's worker, for the slot to
    /// track as in flight.
    handed: Vec<Option<Chunk>>,
    /// How many more tasks each parked slot's worker may take
    /// (`maxtasksperchild`).
    left: Vec<u64>,
    /// Slots whose idle worker an `apply` caller borrowed: the caller
    /// writes the task and reads the answer itself (`Shared::lend`); the
    /// slot's thread keeps waiting meanwhile.
    lent: Vec<bool>,
    /// Tasks that borrowing callers ran on each slot's worker, for the
    /// slot's `maxtasksperchild` count.
    lent_done: Vec<u64>,
}

impl Inner {
    fn new(processes: usize) -> Inner {
        Inner {
            state: PoolState::Running,
            queue: VecDeque::new(),
            workers: vec![None; processes],
            broken: None,
            idle: vec![true; processes],
            idle_count: processes,
            waiting: vec![false; processes],
            parked: vec![None; processes],
            handed: (0..processes).map(|_| None).collect(),
            left: vec![0; processes],
            lent: vec![false; processes],
            lent_done: vec![0; processes],
        }
    }

    fn set_idle(&mut self, slot: usize, idle: bool) {
        if let Some(flag) = self.idle.get_mut(slot) {
            if *flag != idle {
                *flag = idle;
                if idle {
                    self.idle_count += 1;
                } else {
                    self.idle_count -= 1;
                }
            }
        }
    }

    /// How many queued tasks a slot may take now: its share of the queue,
    /// leaving one task for each idle slot when it is busy itself.
    fn share(&self, busy: bool) -> usize {
        let len = self.queue.len();
        if !busy {
            return (len / self.idle.len().max(1)).max(1).min(len);
        }
        let spare = len.saturating_sub(self.idle_count);
        if spare == 0 {
            0
        } else {
            (spare / self.idle.len().max(1)).max(1)
        }
    }
}

struct Shared {
    inner: Mutex<Inner>,
    /// One per slot: signalled when it has tasks or the state changes.
    wake: Vec<Condvar>,
    processes: usize,
    init: Option<(i64, Vec<u8>)>,
    maxtasks: Option<u64>,
    /// Where workers start (the local re-exec, or a cluster scheduler).
    launcher: Launcher,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// Wakes every waiting slot.
    fn notify_all(&self) {
        let mut inner = self.lock();
        for w in inner.waiting.iter_mut() {
            *w = false;
        }
        drop(inner);
        for c in &self.wake {
            c.notify_one();
        }
    }

    /// Writes a task straight to the worker of a parked slot (an idle,
    /// ready worker), when the queue is empty: the task skips the queue
    /// and the wake-up of the slot's thread before its worker starts it.
    /// Gives the chunk back when no worker can take it this way.
    fn hand(&self, inner: &mut Inner, chunk: Chunk) -> Option<Chunk> {
        if !inner.queue.is_empty() || chunk.payload.len() > PIPELINE_BYTES {
            return Some(chunk);
        }
        let Some(slot) = inner.parked.iter().position(Option::is_some) else {
            return Some(chunk);
        };
        let conn = inner.parked[slot].take()?;
        let mut batch = Vec::with_capacity(16 + chunk.payload.len());
        worker::push_task(&mut batch, chunk.entry, &chunk.payload);
        // The slot's thread waits on `wake` (this lock is held), so no
        // read of this connection is under way: no concurrent I/O on one
        // handle (which Windows would serialise).
        // A parked worker has sent READY and nothing since, so the only
        // thing it can have left to read is its end: then this write
        // fails, and the task goes through the queue, whose path reads
        // the end first and replaces the worker (a worker that died idle
        // fails no task). A worker still dying (the kernel releases a
        // killed process's descriptors one by one) takes the write; its
        // end then reads as a reset on the slot's side, and the task goes
        // to another worker (`ended_unread`).
        if conn.send_bytes(&batch).is_err() {
            return Some(chunk);
        }
        inner.handed[slot] = Some(chunk);
        inner.set_idle(slot, false);
        inner.waiting[slot] = false;
        if let Some(c) = self.wake.get(slot) {
            c.notify_one();
        }
        None
    }

    /// `apply`'s path: borrows an idle, ready worker (a parked slot, the
    /// queue empty), writes it the task and reads its answer on the
    /// caller's thread, so a round trip wakes no pool thread. The answer
    /// goes to the chunk's sink as on the slot's path. A worker that ends
    /// instead of answering is given back to its slot with the task in
    /// flight: the slot reads the end and applies the dead-worker rule
    /// (the task fails with the exit code, the worker is replaced).
    /// Gives the chunk back when no worker can be borrowed.
    fn lend(&self, chunk: Chunk) -> Option<Chunk> {
        let (slot, conn, state) = {
            let mut inner = self.lock();
            if inner.state != PoolState::Running
                || inner.broken.is_some()
                || !inner.queue.is_empty()
                || chunk.payload.len() > PIPELINE_BYTES
            {
                return Some(chunk);
            }
            let Some(slot) = inner.parked.iter().position(Option::is_some) else {
                return Some(chunk);
            };
            let Some(Some(state)) = inner.workers.get(slot).cloned() else {
                return Some(chunk);
            };
            let conn = inner.parked[slot].take()?;
            inner.lent[slot] = true;
            inner.waiting[slot] = false;
            inner.set_idle(slot, false);
            (slot, conn, state)
        };
        let mut batch = Vec::with_capacity(16 + chunk.payload.len());
        worker::push_task(&mut batch, chunk.entry, &chunk.payload);
        // As in `hand`: a worker that died idle makes this write fail, or
        // (still dying) its end reads as a reset below.
        if conn.send_bytes(&batch).is_err() {
            self.give_back(slot, None);
            return Some(chunk);
        }
        match conn.recv_bytes() {
            Ok(frame) if frame.first() == Some(&worker::DONE) => {
                chunk.sink.finish(Ok(frame));
                self.give_back(slot, Some(conn));
            }
            Ok(frame) if frame.first() == Some(&worker::FAILED) => {
                chunk.sink.finish(Err(Failure::Task(reason(&frame))));
                self.give_back(slot, Some(conn));
            }
            read => {
                if !is_end(&read) {
                    // Not the protocol, or not the end: stop it, so the
                    // slot reads its end.
                    tracing::error!(
                        pid = state.pid(),
                        "malformed answer from a pool worker: killing it"
                    );
                    let _ = state.kill();
                }
                let unread = is_end(&read) && ended_unread(&conn);
                let mut inner = self.lock();
                inner.lent[slot] = false;
                let mut chunk = Some(chunk);
                if inner.state != PoolState::Terminated && !unread {
                    // In flight on the slot's side: it reads the end.
                    inner.handed[slot] = chunk.take();
                }
                drop(inner);
                if let Some(chunk) = chunk.filter(|_| unread) {
                    // The worker ended without reading it: it never
                    // started, so it goes to another worker (the slot
                    // reads the end and replaces this one).
                    tracing::warn!(
                        pid = state.pid(),
                        "pool worker died before it read its task: the task goes to another worker"
                    );
                    self.requeue(VecDeque::from([chunk]));
                }
                self.wake_slot(slot);
            }
        }
        None
    }

    /// Ends a loan of `slot`'s worker: parks it again when it answered
    /// and may take more, else wakes the slot's thread.
    fn give_back(&self, slot: usize, answered: Option<Arc<Connection>>) {
        let mut inner = self.lock();
        inner.lent[slot] = false;
        if let Some(conn) = answered {
            inner.lent_done[slot] += 1;
            inner.left[slot] = inner.left[slot].saturating_sub(1);
            if inner.left[slot] > 0
                && inner.state == PoolState::Running
                && inner.broken.is_none()
                && inner.queue.is_empty()
            {
                // The slot's thread still waits: nothing to tell it.
                inner.parked[slot] = Some(conn);
                inner.waiting[slot] = true;
                inner.set_idle(slot, true);
                return;
            }
        }
        drop(inner);
        self.wake_slot(slot);
    }

    /// Wakes one slot's thread.
    fn wake_slot(&self, slot: usize) {
        self.lock().waiting[slot] = false;
        if let Some(c) = self.wake.get(slot) {
            c.notify_one();
        }
    }

    fn check_running(&self) -> Result<()> {
        let inner = self.lock();
        if inner.state != PoolState::Running {
            return Err(Error::PoolNotRunning);
        }
        if let Some(why) = &inner.broken {
            return Err(Error::PoolBroken(why.clone()));
        }
        Ok(())
    }

    /// Queues chunks; hands them back with the reason when the pool takes
    /// no more tasks.
    fn submit(&self, chunks: Vec<Chunk>) -> std::result::Result<(), (Vec<Chunk>, Failure)> {
        if chunks.is_empty() {
            return Ok(());
        }
        let mut inner = self.lock();
        if inner.state != PoolState::Running {
            return Err((chunks, Failure::NotRunning));
        }
        if let Some(why) = &inner.broken {
            let why = why.clone();
            return Err((chunks, Failure::Broken(why)));
        }
        let mut chunks = chunks;
        if chunks.len() == 1 {
            let Some(chunk) = chunks.pop() else {
                return Ok(());
            };
            match self.hand(&mut inner, chunk) {
                None => return Ok(()),
                Some(chunk) => chunks.push(chunk),
            }
        }
        // Only idle slots wait: one per task is woken, and none while
        // every slot is busy (it takes tasks after its next answer).
        let mut wake = chunks.len();
        inner.queue.extend(chunks);
        for slot in 0..inner.waiting.len() {
            if wake == 0 {
                break;
            }
            if inner.waiting[slot] {
                inner.waiting[slot] = false;
                wake -= 1;
                if let Some(c) = self.wake.get(slot) {
                    c.notify_one();
                }
            }
        }
        Ok(())
    }

    /// The pool cannot start workers: fail every queued task and refuse
    /// new ones.
    fn break_pool(&self, why: String) {
        tracing::error!("pool broken: {why}");
        let queued: Vec<Chunk> = {
            let mut inner = self.lock();
            if inner.broken.is_none() {
                inner.broken = Some(why);
            }
            inner.queue.drain(..).collect()
        };
        let failure = Failure::Broken(self.lock().broken.clone().unwrap_or_default());
        for c in queued {
            c.sink.finish(Err(failure.clone()));
        }
        self.notify_all();
    }

    /// Puts unstarted tasks back at the front of the queue, in order.
    fn requeue(&self, chunks: VecDeque<Chunk>) {
        if chunks.is_empty() {
            return;
        }
        let mut inner = self.lock();
        if inner.state == PoolState::Terminated {
            return; // dropped: their sinks answer `Terminated`
        }
        if let Some(why) = inner.broken.clone() {
            drop(inner);
            for c in chunks {
                c.sink.finish(Err(Failure::Broken(why.clone())));
            }
            return;
        }
        for c in chunks.into_iter().rev() {
            inner.queue.push_front(c);
        }
        drop(inner);
        self.notify_all();
    }

    /// Whether a slot whose worker ended should start another.
    fn wants_worker(&self) -> bool {
        let inner = self.lock();
        inner.state != PoolState::Terminated
            && inner.broken.is_none()
            && !(inner.state == PoolState::Closed && inner.queue.is_empty())
    }
}

/// A worker as the pool sees it.
struct Worker {
    conn: Connection,
    state: WorkerProcess,
}

fn start_worker(shared: &Shared) -> Result<Worker> {
    if shared.launcher.is_remote() {
        // A replacement: a step of one task (in this allocation, when the
        // pool runs inside one).
        return remote::start_workers(shared, 1)?
            .pop()
            .ok_or_else(|| Error::bootstrap("the job step started no task"));
    }
    let (conn, theirs) = pipe(true)?;
    let args = worker::WorkerArgs {
        conn: theirs,
        init: shared.init.clone(),
        maxtasks: shared.maxtasks,
    };
    let (encoded, handles) = handles::collect_outgoing(|| mproc_ipc::encode_to_vec(&args));
    let encoded = encoded?;
    let prepared = Prepared {
        entry: worker::worker_entry,
        target: "mproc::Pool worker".into(),
        args: encoded,
        handles,
    };
    let me = context::current();
    let (identity, _) = me.next_child();
    let name = worker_name(&identity);
    let state = start_child(
        prepared,
        &name,
        &identity,
        true,
        &me.authkey,
        false,
        &shared.launcher,
    )?;
    // Our copy of the worker's end: the launch duplicated what it sends.
    drop(args);
    Ok(Worker {
        conn,
        state: WorkerProcess::Local(state),
    })
}

/// `SpawnPoolWorker-N[:M]`, CPython's pool worker names.
fn worker_name(identity: &[u32]) -> String {
    format!(
        "SpawnPoolWorker-{}",
        identity
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(":")
    )
}

/// The pool's side of a remote worker's connection: its control channel,
/// as a connection with `like`'s settings (what the worker decodes as its
/// own end).
fn remote_connection(control: crate::sys::ControlStream, like: &Connection) -> Result<Connection> {
    let (encoded, _) = handles::collect_outgoing(|| mproc_ipc::encode_to_vec(like));
    let encoded = encoded?;
    let handle = mproc_ipc::__private::sys::OwnedHandle::from(control);
    handles::with_incoming(vec![handle], || postcard::from_bytes(&encoded))
        .map_err(|e| Error::bootstrap_with("the remote worker's channel", e))
}

/// How a worker's service ended.
enum Ending {
    /// Its connection ended (died, or retired after `maxtasksperchild`).
    Ended,
    /// Its initializer failed.
    InitFailed(String),
    /// The pool has no more work for it.
    Retire,
    /// The pool was terminated.
    Terminated,
}

/// One worker slot: serves its worker, replaces it when it ends.
fn slot_loop(shared: Arc<Shared>, slot: usize, first: Worker) {
    let mut next = Some(first);
    let mut failures = 0;
    loop {
        let worker = match next.take() {
            Some(w) => w,
            None => {
                if !shared.wants_worker() {
                    break;
                }
                match start_worker(&shared) {
                    Ok(w) => w,
                    Err(e) => {
                        shared.break_pool(format!("cannot start a pool worker: {e}"));
                        break;
                    }
                }
            }
        };
        {
            let mut inner = shared.lock();
            if inner.state == PoolState::Terminated {
                drop(inner);
                worker.state.stopping();
                let _ = worker.state.kill();
                let _ = worker.state.wait();
                worker.state.forget();
                break;
            }
            if let Some(w) = inner.workers.get_mut(slot) {
                *w = Some(worker.state.clone());
            }
        }
        let start_failure = serve(&shared, slot, worker);
        if let Some(w) = shared.lock().workers.get_mut(slot) {
            *w = None;
        }
        // A worker lost before it was ready (its launch failed, or it was
        // killed that early) is replaced; one lost that way several times
        // in a row means no worker can start: the pool is broken, rather
        // than starting workers forever.
        match start_failure {
            None => failures = 0,
            Some(why) => {
                failures += 1;
                if failures >= START_ATTEMPTS {
                    shared.break_pool(why);
                    break;
                }
            }
        }
    }
    shared.lock().set_idle(slot, false);
}

/// Workers in a row a slot may lose before they are ready.
const START_ATTEMPTS: u32 = 3;

/// Feeds one worker until it ends; settles its unanswered tasks. Returns
/// why the worker was lost before it was ready, if it was.
fn serve(shared: &Shared, slot: usize, w: Worker) -> Option<String> {
    let Worker { conn, state } = w;
    let conn = Arc::new(conn);
    let pid = state.pid();
    let limit = shared.maxtasks.unwrap_or(u64::MAX);
    let mut in_flight: VecDeque<Chunk> = VecDeque::new();
    let mut in_flight_bytes = 0usize;
    let mut sent = 0u64;
    let mut ready = false;
    // The connection ended with bytes of ours unread (`ended_unread`).
    let mut unread = false;
    let mut batch = Vec::new();
    // When each task in flight could start (sent, or the previous answer
    // came), and the running average of how long tasks take.
    let mut sent_at: VecDeque<Instant> = VecDeque::new();
    let mut last_answer = Instant::now();
    let mut avg_task: Option<Duration> = None;
    let ending = 'serve: loop {
        // Take what this worker may get now.
        let mut take: Vec<Chunk> = Vec::new();
        {
            let mut inner = shared.lock();
            loop {
                if inner.state == PoolState::Terminated {
                    break 'serve Ending::Terminated;
                }
                inner.set_idle(slot, in_flight.is_empty() && sent < limit);
                // A pipelined worker is topped up once half its tasks are
                // answered: tasks go in batches (fewer writes and reads
                // on both sides), and it still never runs dry.
                let depth = depth(avg_task);
                let room = if in_flight.len() > depth / 2 {
                    0
                } else {
                    depth - in_flight.len()
                };
                let room = room
                    .min(usize::try_from(limit - sent).unwrap_or(usize::MAX))
                    .min(inner.share(!in_flight.is_empty()));
                let mut bytes = in_flight_bytes;
                while take.len() < room {
                    let Some(front) = inner.queue.front() else {
                        break;
                    };
                    let idle = in_flight.is_empty() && take.is_empty();
                    if !idle && bytes + front.payload.len() > PIPELINE_BYTES {
                        break;
                    }
                    bytes += front.payload.len();
                    if let Some(c) = inner.queue.pop_front() {
                        take.push(c);
                    }
                }
                if !take.is_empty() || !in_flight.is_empty() || sent >= limit {
                    break;
                }
                if (inner.state == PoolState::Closed && inner.queue.is_empty())
                    || inner.broken.is_some()
                {
                    break 'serve Ending::Retire;
                }
                // A caller may write one task to this worker itself while
                // it waits idle and ready (`Shared::hand`).
                let Some(wake) = shared.wake.get(slot) else {
                    break 'serve Ending::Retire;
                };
                if ready && sent < limit && inner.state == PoolState::Running {
                    inner.parked[slot] = Some(conn.clone());
                    inner.left[slot] = limit - sent;
                }
                inner.waiting[slot] = true;
                inner = wait(wake, inner);
                // While a caller borrows the worker, the slot's thread
                // keeps off its connection (unless the pool ends).
                while inner.lent[slot] && inner.state != PoolState::Terminated {
                    inner = wait(wake, inner);
                }
                inner.waiting[slot] = false;
                inner.parked[slot] = None;
                sent += std::mem::take(&mut inner.lent_done[slot]);
                if let Some(c) = inner.handed[slot].take() {
                    // Already written: track it as in flight.
                    in_flight_bytes += c.payload.len();
                    sent += 1;
                    sent_at.push_back(Instant::now());
                    in_flight.push_back(c);
                }
            }
        }
        if !take.is_empty() && in_flight.is_empty() {
            // An idle worker may have died meanwhile (or sent READY or
            // INIT_FAILED): read that first, so that a death while idle
            // does not fail a task it never saw.
            while conn.poll(Some(Duration::ZERO)).unwrap_or(true) {
                match conn.recv_bytes() {
                    Ok(frame) if frame.first() == Some(&worker::READY) => ready = true,
                    Ok(frame) if frame.first() == Some(&worker::INIT_FAILED) => {
                        shared.requeue(take.into_iter().collect());
                        break 'serve Ending::InitFailed(reason(&frame));
                    }
                    other => {
                        if !is_end(&other) {
                            // Not the protocol, or not the end: stop it.
                            let _ = state.kill();
                        }
                        shared.requeue(take.into_iter().collect());
                        break 'serve Ending::Ended;
                    }
                }
            }
        }
        if !take.is_empty() {
            batch.clear();
            for c in &take {
                worker::push_task(&mut batch, c.entry, &c.payload);
                in_flight_bytes += c.payload.len();
            }
            sent += take.len() as u64;
            let now = Instant::now();
            sent_at.extend(take.iter().map(|_| now));
            in_flight.extend(take);
            // A failed write shows as the end of the connection below.
            let _ = conn.send_bytes(&batch);
        }
        match conn.recv_bytes() {
            Ok(frame) => match frame.first().copied() {
                Some(worker::READY) => ready = true,
                Some(worker::INIT_FAILED) => break 'serve Ending::InitFailed(reason(&frame)),
                Some(worker::DONE) => {
                    let now = Instant::now();
                    if let Some(start) = sent_at.pop_front() {
                        let took = now.saturating_duration_since(start.max(last_answer));
                        avg_task = Some(match avg_task {
                            None => took,
                            Some(avg) => (avg * 3 + took) / 4,
                        });
                    }
                    last_answer = now;
                    if let Some(c) = in_flight.pop_front() {
                        in_flight_bytes -= c.payload.len();
                        c.sink.finish(Ok(frame));
                    }
                }
                Some(worker::FAILED) => {
                    sent_at.pop_front();
                    last_answer = Instant::now();
                    if let Some(c) = in_flight.pop_front() {
                        in_flight_bytes -= c.payload.len();
                        c.sink.finish(Err(Failure::Task(reason(&frame))));
                    }
                }
                _ => {
                    tracing::error!(pid, "malformed answer from a pool worker: killing it");
                    let _ = state.kill();
                    break 'serve Ending::Ended;
                }
            },
            Err(e) => {
                unread = ended_unread(&conn);
                if !is_end(&Err(e)) {
                    tracing::error!(pid, "cannot read from a pool worker: killing it");
                    let _ = state.kill();
                }
                break 'serve Ending::Ended;
            }
        }
    };
    match ending {
        Ending::Retire => {
            // The worker reads the end of its connection and exits.
            drop(conn);
            let _ = state.wait();
        }
        Ending::Terminated => {
            state.stopping();
            let _ = state.kill();
            let _ = state.wait();
            drop(in_flight); // each answers `Terminated`
        }
        Ending::InitFailed(why) => {
            let _ = state.wait();
            shared.requeue(in_flight);
            shared.break_pool(format!(
                "pool worker process {pid} failed to initialise: {why}"
            ));
        }
        Ending::Ended => {
            drop(conn);
            let exitcode = state.wait().ok().flatten().unwrap_or(-1);
            let terminated = shared.lock().state == PoolState::Terminated;
            if terminated {
                drop(in_flight);
            } else if !ready {
                let why = match state.launched() {
                    Err(e) => e.to_string(),
                    Ok(()) => format!(
                        "pool worker process {pid} ended (exit code {exitcode}) before it was ready"
                    ),
                };
                // Its tasks never started: they go back to the queue.
                shared.requeue(in_flight);
                state.forget();
                return Some(why);
            } else if unread && in_flight.len() == 1 {
                // One task written, and the worker ended with bytes of it
                // unread: it never started it.
                tracing::warn!(
                    pid,
                    exitcode,
                    "pool worker died before it read its task: the task goes to another worker"
                );
                shared.requeue(in_flight);
            } else {
                if let Some(running) = in_flight.pop_front() {
                    tracing::warn!(pid, exitcode, "pool worker died while running a task");
                    running
                        .sink
                        .finish(Err(Failure::WorkerDied { pid, exitcode }));
                } else if sent < limit {
                    tracing::warn!(pid, exitcode, "idle pool worker died: replacing it");
                }
                shared.requeue(in_flight);
            }
        }
    }
    state.forget();
    None
}

/// Whether a worker's connection ended with bytes this side wrote still
/// unread by the worker: Linux reports a Unix socket whose peer was
/// released with data in its receive queue (a reset; a peer that read
/// everything gives a plain end of file). A task written in that state
/// was never read, so never started. Elsewhere (a named pipe) this is
/// never known and the rule stays the dead-worker one.
fn ended_unread(conn: &Connection) -> bool {
    mproc_ipc::__private::connection::ended_unread(conn)
}

/// Whether a read from a worker saw its connection end (it exited or
/// died: its exit code is then its own). Anything else — a frame out of
/// protocol, another error — means the worker may still run.
fn is_end(read: &Result<Vec<u8>>) -> bool {
    match read {
        Err(Error::Eof | Error::EofDuringMessage | Error::BrokenPipe) => true,
        Err(Error::Io(e)) => matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
        ),
        _ => false,
    }
}

fn reason(frame: &[u8]) -> String {
    String::from_utf8_lossy(frame.get(1..).unwrap_or_default()).into_owned()
}

/// One chunk's items, decoded: each its own `Result`.
fn decode_items<R: DeserializeOwned>(part: &Part, len: usize) -> Vec<Result<R>> {
    match part {
        Err(failure) => (0..len.max(1)).map(|_| Err(failure.error())).collect(),
        Ok(frame) => match from_slice::<Answer<R>>(frame.get(1..).unwrap_or_default()) {
            Ok(Answer::All(values)) => values.into_iter().map(Ok).collect(),
            Ok(Answer::Mixed(items)) => items
                .into_iter()
                .map(|item| match item {
                    ItemOutcome::Value(v) => Ok(v),
                    ItemOutcome::Panic {
                        name,
                        pid,
                        message,
                        location,
                    } => Err(Error::Panicked {
                        name,
                        pid,
                        message,
                        location,
                    }),
                })
                .collect(),
            Err(e) => (0..len.max(1))
                .map(|_| Err(Error::Decode(e.clone())))
                .collect(),
        },
    }
}

/// Encodes a chunk of argument tuples. Connections and queues cannot
/// travel in a task (as CPython refuses to pickle them for a Pool).
fn encode_chunk<A: Serialize>(items: &[A]) -> std::result::Result<Vec<u8>, EncodeError> {
    let (encoded, handles) = handles::collect_outgoing(|| mproc_ipc::encode_to_vec(items));
    if !handles.is_empty() {
        return Err(EncodeError::new(
            "a pool task's arguments cannot carry connections or queues",
        ));
    }
    encoded
}

/// The runner of `F` on `A`, after checking `F` is registered.
fn task_offset<F, A>() -> Result<i64>
where
    F: Target<A>,
    A: Args,
    F::Output: Serialize,
{
    if !is_registered::<F>() {
        // The error, with the names (allocated only here).
        check_registered::<F>()?;
    }
    Ok(entry::task_offset(worker::task_entry::<F, A>))
}

/// `check_registered`'s test without its allocations (it runs for every
/// `apply_async`).
fn is_registered<F: Copy + 'static>() -> bool {
    let full = std::any::type_name::<F>();
    let short = full.rsplit("::").next().unwrap_or(full);
    !full.contains("{{closure}}")
        && std::mem::size_of::<F>() == 0
        && crate::registry::registered_name::<F>() == Some(short)
}

/// The answers of a set of chunks, as they arrive.
struct Pending {
    rx: Receiver<Done>,
    parts: Vec<Option<Part>>,
    lens: Vec<usize>,
    missing: usize,
}

impl Pending {
    fn absorb(&mut self, done: Done) {
        if let Some(slot) = self.parts.get_mut(done.index) {
            if slot.is_none() {
                *slot = Some(done.part);
                self.missing -= 1;
            }
        }
    }

    /// Every answer that can no longer come (impossible while a chunk
    /// lives: each answers on drop) becomes `Terminated`.
    fn give_up(&mut self) {
        for slot in self.parts.iter_mut().filter(|s| s.is_none()) {
            *slot = Some(Err(Failure::Terminated));
        }
        self.missing = 0;
    }

    /// Waits for every answer until `deadline`; whether they all came.
    fn wait_until(&mut self, deadline: Option<Instant>) -> bool {
        while self.missing > 0 {
            let got = match deadline {
                None => self.rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(d) => self
                    .rx
                    .recv_timeout(d.saturating_duration_since(Instant::now())),
            };
            match got {
                Ok(done) => self.absorb(done),
                Err(RecvTimeoutError::Timeout) => return false,
                Err(RecvTimeoutError::Disconnected) => self.give_up(),
            }
        }
        true
    }

    fn drain(&mut self) {
        loop {
            match self.rx.try_recv() {
                Ok(done) => self.absorb(done),
                Err(mpsc::TryRecvError::Empty) => return,
                Err(mpsc::TryRecvError::Disconnected) => return self.give_up(),
            }
        }
    }

    /// All items in order; the first failing one (lowest index) is the error.
    fn decode_all<R: DeserializeOwned>(&self) -> Result<Vec<R>> {
        let mut out = Vec::with_capacity(self.lens.iter().sum());
        for part in &self.parts {
            decode_into(part.as_ref().ok_or(Error::PoolTerminated)?, &mut out)?;
        }
        Ok(out)
    }

    /// As [`decode_all`](Self::decode_all), decoding each answer as soon
    /// as every earlier one is in (the decoding overlaps the workers'
    /// work); every answer is waited for, as CPython's `map` does.
    fn collect_in_order<R: DeserializeOwned>(mut self) -> Result<Vec<R>> {
        let mut out = Vec::with_capacity(self.lens.iter().sum());
        let mut first_error = None;
        let mut next = 0;
        while next < self.parts.len() {
            while let Some(Some(part)) = self.parts.get_mut(next).map(Option::take) {
                if first_error.is_none() {
                    if let Err(e) = decode_into(&part, &mut out) {
                        first_error = Some(e);
                    }
                }
                next += 1;
            }
            if next < self.parts.len() {
                match self.rx.recv() {
                    Ok(done) => self.absorb(done),
                    Err(_) => self.give_up(),
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }
}

/// Appends a task's values to `out`; its first failure is the error.
fn decode_into<R: DeserializeOwned>(part: &Part, out: &mut Vec<R>) -> Result<()> {
    let frame = match part {
        Ok(frame) => frame,
        Err(failure) => return Err(failure.error()),
    };
    let answer: Answer<R> =
        from_slice(frame.get(1..).unwrap_or_default()).map_err(Error::Decode)?;
    let items = match answer {
        Answer::All(values) => {
            out.extend(values);
            return Ok(());
        }
        Answer::Mixed(items) => items,
    };
    for item in items {
        match item {
            ItemOutcome::Value(v) => out.push(v),
            ItemOutcome::Panic {
                name,
                pid,
                message,
                location,
            } => {
                return Err(Error::Panicked {
                    name,
                    pid,
                    message,
                    location,
                })
            }
        }
    }
    Ok(())
}

fn assemble_one<R: DeserializeOwned>(p: &Pending) -> Result<R> {
    p.decode_all::<R>()?
        .into_iter()
        .next()
        .ok_or_else(|| Error::decode_msg("a task answered without its value"))
}

fn assemble_all<T: DeserializeOwned>(p: &Pending) -> Result<Vec<T>> {
    p.decode_all::<T>()
}

/// The result of `apply_async`, `map_async` or `starmap_async`
/// (CPython's `AsyncResult`).
///
/// The value is kept encoded until asked for, so
/// [`get_timeout`](Self::get_timeout) can be called again and again. Terminating or
/// dropping the pool before the task completes makes it
/// [`Error::PoolTerminated`], never a wait forever.
///
/// ```
/// use std::time::Duration;
///
/// #[mproc::target]
/// fn add(a: u64, b: u64) -> u64 {
///     a + b
/// }
///
/// #[mproc::main]
/// fn main() -> mproc::Result<()> {
///     let pool = mproc::Pool::new(1)?;
///     let r = pool.apply_async(add, (2, 3))?;
///     assert!(r.wait_timeout(Duration::from_secs(60)));
///     assert_eq!(r.successful(), Some(true));
///     assert_eq!(r.get()?, 5);
///     Ok(())
/// }
/// ```
pub struct AsyncResult<R> {
    pending: Mutex<Pending>,
    assemble: fn(&Pending) -> Result<R>,
    _value: PhantomData<fn() -> R>,
}

impl<R> AsyncResult<R> {
    fn pending(&self) -> MutexGuard<'_, Pending> {
        lock(&self.pending)
    }

    /// Waits for the result and returns it (CPython's `get()`).
    pub fn get(self) -> Result<R> {
        let mut p = self.pending();
        p.wait_until(None);
        (self.assemble)(&p)
    }

    /// Waits at most `timeout`: [`Error::Timeout`] while not ready (the
    /// result stays for a later call), else the result (CPython's
    /// `get(timeout)`).
    pub fn get_timeout(&self, timeout: Duration) -> Result<R> {
        let mut p = self.pending();
        if !p.wait_until(Instant::now().checked_add(timeout)) {
            return Err(Error::Timeout);
        }
        (self.assemble)(&p)
    }

    /// Waits until the result is ready (CPython's `wait()`).
    pub fn wait(&self) {
        self.pending().wait_until(None);
    }

    /// Waits at most `timeout`; whether the result is ready.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.pending()
            .wait_until(Instant::now().checked_add(timeout))
    }

    /// Whether the result is ready (the call completed or failed).
    pub fn ready(&self) -> bool {
        let mut p = self.pending();
        p.drain();
        p.missing == 0
    }

    /// `None` until ready; then whether the call succeeded (for a map:
    /// every task). CPython raises ValueError before ready.
    pub fn successful(&self) -> Option<bool> {
        let mut p = self.pending();
        p.drain();
        (p.missing == 0).then(|| (self.assemble)(&p).is_ok())
    }
}

impl<R> std::fmt::Debug for AsyncResult<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.ready() {
            "<AsyncResult ready>"
        } else {
            "<AsyncResult pending>"
        })
    }
}

/// The lazy iterator of `imap`/`imap_unordered`.
struct IMap<I: Iterator, R> {
    shared: Arc<Shared>,
    entry: i64,
    input: Fuse<I>,
    chunksize: usize,
    window: usize,
    ordered: bool,
    tx: Sender<Done>,
    rx: Receiver<Done>,
    next_index: usize,
    /// Submitted chunks not yet yielded: index → number of items.
    lens: HashMap<usize, usize>,
    order: VecDeque<usize>,
    arrived: HashMap<usize, Part>,
    out: VecDeque<Result<R>>,
    _value: PhantomData<fn() -> R>,
}

impl<I, A, R> IMap<I, R>
where
    I: Iterator<Item = A>,
    A: Serialize,
{
    /// Pulls items and submits chunks until `window` chunks are out.
    fn fill(&mut self) {
        let mut chunks = Vec::new();
        while self.lens.len() < self.window {
            let items: Vec<A> = self.input.by_ref().take(self.chunksize).collect();
            if items.is_empty() {
                break;
            }
            let index = self.next_index;
            self.next_index += 1;
            self.lens.insert(index, items.len());
            self.order.push_back(index);
            let sink = Sink {
                tx: Tx::Open(self.tx.clone()),
                index,
                sent: false,
            };
            match encode_chunk(&items) {
                Ok(payload) => chunks.push(Chunk {
                    entry: self.entry,
                    payload,
                    sink,
                }),
                Err(why) => sink.finish(Err(Failure::Encode(why))),
            }
        }
        if let Err((chunks, failure)) = self.shared.submit(chunks) {
            for c in chunks {
                c.sink.finish(Err(failure.clone()));
            }
        }
    }
}

impl<I, A, R> Iterator for IMap<I, R>
where
    I: Iterator<Item = A>,
    A: Serialize,
    R: DeserializeOwned,
{
    type Item = Result<R>;

    fn next(&mut self) -> Option<Result<R>> {
        loop {
            if let Some(item) = self.out.pop_front() {
                return Some(item);
            }
            self.fill();
            let (index, part) = if self.ordered {
                let want = *self.order.front()?;
                loop {
                    if let Some(part) = self.arrived.remove(&want) {
                        break (want, part);
                    }
                    // We hold a sender: this never disconnects.
                    let done = self.rx.recv().ok()?;
                    self.arrived.insert(done.index, done.part);
                }
            } else {
                if self.lens.is_empty() {
                    return None;
                }
                let done = self.rx.recv().ok()?;
                (done.index, done.part)
            };
            if self.ordered {
                self.order.pop_front();
            }
            let len = self.lens.remove(&index).unwrap_or(1);
            self.out.extend(decode_items::<R>(&part, len));
        }
    }
}

/// A pool of worker processes (CPython's `multiprocessing.Pool`).
///
/// Tasks are registered targets (`#[mproc::target]`) and their arguments;
/// results come back typed. A task that panics or returns `Err` fails
/// alone; a worker that dies during a task (killed, aborted, out of
/// memory) fails that task with [`Error::WorkerDied`] and is replaced,
/// and every other task completes (CPython's Pool hangs forever there).
/// Dropping a `Pool` terminates it, as CPython's `with Pool(..)` does.
///
/// ```
/// #[mproc::target]
/// fn f(x: u64) -> u64 {
///     x * x
/// }
///
/// #[mproc::main]
/// fn main() -> mproc::Result<()> {
///     let pool = mproc::Pool::new(4)?;
///     assert_eq!(pool.map(f, [1, 2, 3])?, vec![1, 4, 9]);
///     Ok(())
/// }
/// ```
pub struct Pool {
    shared: Arc<Shared>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// Builds a [`Pool`] with CPython's keyword arguments: `processes`,
/// `initializer`/`initargs`, `maxtasksperchild`.
///
/// ```
/// #[mproc::target]
/// fn setup(level: String) {
///     // e.g. install a `tracing` subscriber in each worker
///     let _ = level;
/// }
///
/// #[mproc::target]
/// fn pid(_: u32) -> u32 {
///     std::process::id()
/// }
///
/// #[mproc::main]
/// fn main() -> mproc::Result<()> {
///     let pool = mproc::Pool::builder()
///         .processes(2)
///         .initializer(setup, ("info".to_string(),))
///         .maxtasksperchild(10)
///         .build()?;
///     assert_eq!(pool.map(pid, 0..4)?.len(), 4);
///     Ok(())
/// }
/// ```
#[must_use]
pub struct PoolBuilder {
    processes: Option<usize>,
    init: Option<Result<(i64, Vec<u8>)>>,
    maxtasks: Option<usize>,
    launcher: Launcher,
}

impl PoolBuilder {
    /// The number of workers (default [`cpu_count`](crate::cpu_count)()).
    pub fn processes(mut self, n: usize) -> Self {
        self.processes = Some(n);
        self
    }

    /// A registered fn each worker runs once before its first task
    /// (CPython's `initializer=f, initargs=args`), and each replacement
    /// worker too. It returns `()` or `Result<(), E: Display>`; when it
    /// panics or returns `Err`, the pool runs no more tasks: pending and
    /// later ones fail with [`Error::PoolBroken`] naming the reason
    /// (CPython starts worker after worker, failing forever).
    pub fn initializer<F, A>(mut self, f: F, args: A) -> Self
    where
        F: Target<A>,
        A: Args,
        F::Output: ProcessOutput,
    {
        let _ = f;
        self.init = Some(check_registered::<F>().and_then(|_| {
            let (encoded, handles) = handles::collect_outgoing(|| mproc_ipc::encode_to_vec(&args));
            if !handles.is_empty() {
                return Err(Error::encode_msg(
                    "a pool initializer's arguments cannot carry connections or queues",
                ));
            }
            let encoded = encoded?;
            Ok((entry::task_offset(worker::init_entry::<F, A>), encoded))
        }));
        self
    }

    /// Replaces a worker after it ran `k` tasks (a task is a chunk);
    /// `0` is an error at `build`.
    pub fn maxtasksperchild(mut self, k: usize) -> Self {
        self.maxtasks = Some(k);
        self
    }

    /// Where the workers start: [`Launcher::local`] (the default) or
    /// [`Launcher::srun`] (Slurm places each worker; a worker lost with
    /// its node or cancelled by the scheduler fails its task and is
    /// replaced, as a worker that dies here).
    pub fn launcher(mut self, launcher: Launcher) -> Self {
        self.launcher = launcher;
        self
    }

    /// Starts the workers.
    pub fn build(self) -> Result<Pool> {
        let processes = self.processes.unwrap_or_else(crate::cpu_count);
        if processes == 0 {
            return Err(Error::PoolSize);
        }
        if self.maxtasks == Some(0) {
            return Err(Error::PoolMaxTasks);
        }
        let init = self.init.transpose()?;
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner::new(processes)),
            wake: (0..processes).map(|_| Condvar::new()).collect(),
            processes,
            init,
            maxtasks: self.maxtasks.map(|k| k as u64),
            launcher: self.launcher,
        });
        let mut pool = Pool {
            shared: shared.clone(),
            threads: Vec::with_capacity(processes),
        };
        // Started here, so that what prevents a start (a daemonic caller,
        // the OS) is this call's error; a failure stops those started.
        let mut workers = Vec::with_capacity(processes);
        if shared.launcher.is_remote() {
            // One job step of `processes` tasks.
            workers = remote::start_workers(&shared, processes)?;
        }
        while workers.len() < processes {
            match start_worker(&shared) {
                Ok(w) => workers.push(w),
                Err(e) => {
                    for w in workers {
                        w.state.stopping();
                        let _ = w.state.kill();
                        let _ = w.state.wait();
                        w.state.forget();
                    }
                    return Err(e);
                }
            }
        }
        for (slot, w) in workers.into_iter().enumerate() {
            let shared = shared.clone();
            shared.lock().workers[slot] = Some(w.state.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("mproc-pool-{slot}"))
                .spawn(move || slot_loop(shared, slot, w));
            match spawned {
                Ok(t) => pool.threads.push(t),
                Err(e) => {
                    // Dropping `pool` terminates what was started.
                    return Err(Error::Io(e));
                }
            }
        }
        Ok(pool)
    }
}

impl Pool {
    /// A pool of `processes` workers (`Pool(processes=n)`); `0` is
    /// [`Error::PoolSize`]. `Pool::new(mproc::cpu_count())` is CPython's
    /// `Pool()`.
    pub fn new(processes: usize) -> Result<Pool> {
        Pool::builder().processes(processes).build()
    }

    /// A builder for `initializer` and `maxtasksperchild`.
    pub fn builder() -> PoolBuilder {
        PoolBuilder {
            processes: None,
            init: None,
            maxtasks: None,
            launcher: Launcher::local(),
        }
    }

    /// CPython's default `map` chunk size: ceil(len / (4 × processes)).
    fn default_chunksize(&self, len: usize) -> usize {
        len.div_ceil(4 * self.shared.processes).max(1)
    }

    fn submit_all<F, A>(&self, items: Vec<A>, chunksize: usize) -> Result<Pending>
    where
        F: Target<A>,
        A: Args,
        F::Output: Serialize,
    {
        if chunksize == 0 {
            return Err(Error::PoolChunksize);
        }
        let entry = task_offset::<F, A>()?;
        self.shared.check_running()?;
        let total = items.len().div_ceil(chunksize);
        let (tx, rx) = mpsc::sync_channel(total.max(1));
        let tx = Tx::Known(tx);
        // Submitted in groups as they are encoded: the workers start on
        // the first chunks while the later ones are encoded.
        let group = self.shared.processes.max(total / 16);
        let mut chunks = Vec::with_capacity(group);
        let mut lens = Vec::with_capacity(total);
        for (index, part) in items.chunks(chunksize).enumerate() {
            let payload = encode_chunk(part).map_err(Error::Encode)?;
            chunks.push(Chunk {
                entry,
                payload,
                sink: Sink {
                    tx: tx.clone(),
                    index,
                    sent: false,
                },
            });
            lens.push(part.len());
            if chunks.len() >= group || lens.len() == total {
                let ready = std::mem::replace(&mut chunks, Vec::with_capacity(group));
                if let Err((ready, failure)) = self.shared.submit(ready) {
                    drop(ready);
                    return Err(failure.error());
                }
            }
        }
        drop(tx);
        Ok(Pending {
            rx,
            parts: (0..lens.len()).map(|_| None).collect(),
            missing: lens.len(),
            lens,
        })
    }

    /// `f(x)` for every item, in order (CPython's `map`); `f` is a
    /// registered one-parameter target. The items are split into chunks
    /// of ceil(len / (4 × processes)) ([`map_chunked`](Self::map_chunked)
    /// chooses). The first failing task (lowest index) is the error.
    pub fn map<F, T>(&self, f: F, items: impl IntoIterator<Item = T>) -> Result<Vec<F::Output>>
    where
        F: Target<(T,)>,
        T: Args,
        F::Output: Serialize + DeserializeOwned,
    {
        let items: Vec<(T,)> = items.into_iter().map(|x| (x,)).collect();
        let chunksize = self.default_chunksize(items.len());
        self.map_chunked_tuples(f, items, chunksize)
    }

    /// [`map`](Self::map) with chunks of `chunksize` items (CPython's
    /// `map(f, it, chunksize)`); `0` is [`Error::PoolChunksize`].
    pub fn map_chunked<F, T>(
        &self,
        f: F,
        items: impl IntoIterator<Item = T>,
        chunksize: usize,
    ) -> Result<Vec<F::Output>>
    where
        F: Target<(T,)>,
        T: Args,
        F::Output: Serialize + DeserializeOwned,
    {
        let items: Vec<(T,)> = items.into_iter().map(|x| (x,)).collect();
        self.map_chunked_tuples(f, items, chunksize)
    }

    fn map_chunked_tuples<F, A>(
        &self,
        f: F,
        items: Vec<A>,
        chunksize: usize,
    ) -> Result<Vec<F::Output>>
    where
        F: Target<A>,
        A: Args,
        F::Output: Serialize + DeserializeOwned,
    {
        let _ = f;
        let pending = self.submit_all::<F, A>(items, chunksize)?;
        pending.collect_in_order()
    }

    /// `f(a, b, ..)` for every argument tuple, in order (CPython's
    /// `starmap`).
    pub fn starmap<F, A>(&self, f: F, items: impl IntoIterator<Item = A>) -> Result<Vec<F::Output>>
    where
        F: Target<A>,
        A: Args,
        F::Output: Serialize + DeserializeOwned,
    {
        let items: Vec<A> = items.into_iter().collect();
        let chunksize = self.default_chunksize(items.len());
        self.map_chunked_tuples(f, items, chunksize)
    }

    /// [`starmap`](Self::starmap) with chunks of `chunksize` items.
    pub fn starmap_chunked<F, A>(
        &self,
        f: F,
        items: impl IntoIterator<Item = A>,
        chunksize: usize,
    ) -> Result<Vec<F::Output>>
    where
        F: Target<A>,
        A: Args,
        F::Output: Serialize + DeserializeOwned,
    {
        self.map_chunked_tuples(f, items.into_iter().collect(), chunksize)
    }

    fn imap_inner<F, A, I>(
        &self,
        items: I,
        chunksize: usize,
        ordered: bool,
    ) -> Result<IMap<I::IntoIter, F::Output>>
    where
        F: Target<A>,
        A: Args,
        I: IntoIterator<Item = A>,
        F::Output: Serialize + DeserializeOwned,
    {
        if chunksize == 0 {
            return Err(Error::PoolChunksize);
        }
        let entry = task_offset::<F, A>()?;
        self.shared.check_running()?;
        let (tx, rx) = mpsc::channel();
        Ok(IMap {
            shared: self.shared.clone(),
            entry,
            input: items.into_iter().fuse(),
            chunksize,
            window: self.shared.processes * IMAP_AHEAD,
            ordered,
            tx,
            rx,
            next_index: 0,
            lens: HashMap::new(),
            order: VecDeque::new(),
            arrived: HashMap::new(),
            out: VecDeque::new(),
            _value: PhantomData,
        })
    }

    /// `f(x)` for every item, lazily and in order (CPython's `imap`, one
    /// item a task; [`imap_chunked`](Self::imap_chunked) chooses). Items
    /// are pulled as workers free up, a bounded number ahead: an endless
    /// iterator works. A failing task is one `Err` item; the others come.
    pub fn imap<F, T>(
        &self,
        f: F,
        items: impl IntoIterator<Item = T>,
    ) -> Result<impl Iterator<Item = Result<F::Output>>>
    where
        F: Target<(T,)>,
        T: Args,
        F::Output: Serialize + DeserializeOwned,
    {
        self.imap_chunked(f, items, 1)
    }

    /// [`imap`](Self::imap) with tasks of `chunksize` items.
    pub fn imap_chunked<F, T>(
        &self,
        f: F,
        items: impl IntoIterator<Item = T>,
        chunksize: usize,
    ) -> Result<impl Iterator<Item = Result<F::Output>>>
    where
        F: Target<(T,)>,
        T: Args,
        F::Output: Serialize + DeserializeOwned,
    {
        let _ = f;
        self.imap_inner::<F, (T,), _>(items.into_iter().map(|x| (x,)), chunksize, true)
    }

    /// As [`imap`](Self::imap), the results as they finish (CPython's
    /// `imap_unordered`).
    pub fn imap_unordered<F, T>(
        &self,
        f: F,
        items: impl IntoIterator<Item = T>,
    ) -> Result<impl Iterator<Item = Result<F::Output>>>
    where
        F: Target<(T,)>,
        T: Args,
        F::Output: Serialize + DeserializeOwned,
    {
        self.imap_unordered_chunked(f, items, 1)
    }

    /// [`imap_unordered`](Self::imap_unordered) with tasks of `chunksize`
    /// items.
    pub fn imap_unordered_chunked<F, T>(
        &self,
        f: F,
        items: impl IntoIterator<Item = T>,
        chunksize: usize,
    ) -> Result<impl Iterator<Item = Result<F::Output>>>
    where
        F: Target<(T,)>,
        T: Args,
        F::Output: Serialize + DeserializeOwned,
    {
        let _ = f;
        self.imap_inner::<F, (T,), _>(items.into_iter().map(|x| (x,)), chunksize, false)
    }

    /// `f(args..)` in a worker; waits for its value (CPython's `apply`).
    pub fn apply<F, A>(&self, f: F, args: A) -> Result<F::Output>
    where
        F: Target<A>,
        A: Args,
        F::Output: Serialize + DeserializeOwned,
    {
        let _ = f;
        let entry = task_offset::<F, A>()?;
        self.shared.check_running()?;
        let payload = encode_chunk(std::slice::from_ref(&args)).map_err(Error::Encode)?;
        let (tx, rx) = mpsc::sync_channel(1);
        let chunk = Chunk {
            entry,
            payload,
            sink: Sink {
                tx: Tx::Known(tx),
                index: 0,
                sent: false,
            },
        };
        if let Some(chunk) = self.shared.lend(chunk) {
            if let Err((chunks, failure)) = self.shared.submit(vec![chunk]) {
                drop(chunks);
                return Err(failure.error());
            }
        }
        let mut pending = Pending {
            rx,
            parts: vec![None],
            lens: vec![1],
            missing: 1,
        };
        pending.wait_until(None);
        assemble_one::<F::Output>(&pending)
    }

    /// `f(args..)` in a worker, without waiting (CPython's `apply_async`).
    pub fn apply_async<F, A>(&self, f: F, args: A) -> Result<AsyncResult<F::Output>>
    where
        F: Target<A>,
        A: Args,
        F::Output: Serialize + DeserializeOwned,
    {
        let _ = f;
        let pending = self.submit_all::<F, A>(vec![args], 1)?;
        Ok(AsyncResult {
            pending: Mutex::new(pending),
            assemble: assemble_one::<F::Output>,
            _value: PhantomData,
        })
    }

    /// [`map`](Self::map) without waiting (CPython's `map_async`).
    pub fn map_async<F, T>(
        &self,
        f: F,
        items: impl IntoIterator<Item = T>,
    ) -> Result<AsyncResult<Vec<F::Output>>>
    where
        F: Target<(T,)>,
        T: Args,
        F::Output: Serialize + DeserializeOwned,
    {
        let items: Vec<(T,)> = items.into_iter().map(|x| (x,)).collect();
        let chunksize = self.default_chunksize(items.len());
        self.async_chunked_tuples(f, items, chunksize)
    }

    /// [`map_async`](Self::map_async) with chunks of `chunksize` items.
    pub fn map_async_chunked<F, T>(
        &self,
        f: F,
        items: impl IntoIterator<Item = T>,
        chunksize: usize,
    ) -> Result<AsyncResult<Vec<F::Output>>>
    where
        F: Target<(T,)>,
        T: Args,
        F::Output: Serialize + DeserializeOwned,
    {
        let items: Vec<(T,)> = items.into_iter().map(|x| (x,)).collect();
        self.async_chunked_tuples(f, items, chunksize)
    }

    /// [`starmap`](Self::starmap) without waiting (CPython's
    /// `starmap_async`).
    pub fn starmap_async<F, A>(
        &self,
        f: F,
        items: impl IntoIterator<Item = A>,
    ) -> Result<AsyncResult<Vec<F::Output>>>
    where
        F: Target<A>,
        A: Args,
        F::Output: Serialize + DeserializeOwned,
    {
        let items: Vec<A> = items.into_iter().collect();
        let chunksize = self.default_chunksize(items.len());
        self.async_chunked_tuples(f, items, chunksize)
    }

    /// [`starmap_async`](Self::starmap_async) with chunks of `chunksize`
    /// items.
    pub fn starmap_async_chunked<F, A>(
        &self,
        f: F,
        items: impl IntoIterator<Item = A>,
        chunksize: usize,
    ) -> Result<AsyncResult<Vec<F::Output>>>
    where
        F: Target<A>,
        A: Args,
        F::Output: Serialize + DeserializeOwned,
    {
        self.async_chunked_tuples(f, items.into_iter().collect(), chunksize)
    }

    fn async_chunked_tuples<F, A>(
        &self,
        f: F,
        items: Vec<A>,
        chunksize: usize,
    ) -> Result<AsyncResult<Vec<F::Output>>>
    where
        F: Target<A>,
        A: Args,
        F::Output: Serialize + DeserializeOwned,
    {
        let _ = f;
        let pending = self.submit_all::<F, A>(items, chunksize)?;
        Ok(AsyncResult {
            pending: Mutex::new(pending),
            assemble: assemble_all::<F::Output>,
            _value: PhantomData,
        })
    }

    /// No more tasks; the workers end once the queued ones are done
    /// (CPython's `close()`).
    pub fn close(&mut self) {
        let mut inner = self.shared.lock();
        if inner.state == PoolState::Running {
            inner.state = PoolState::Closed;
        }
        drop(inner);
        self.shared.notify_all();
    }

    /// Stops the workers at once (SIGKILL / TerminateProcess) and waits
    /// for them: queued and running tasks fail with
    /// [`Error::PoolTerminated`] (CPython's `terminate()`).
    pub fn terminate(&mut self) -> Result<()> {
        let (queued, workers) = {
            let mut inner = self.shared.lock();
            inner.state = PoolState::Terminated;
            let queued: Vec<Chunk> = inner.queue.drain(..).collect();
            let workers: Vec<WorkerProcess> = inner.workers.iter().flatten().cloned().collect();
            (queued, workers)
        };
        self.shared.notify_all();
        drop(queued);
        for w in workers {
            w.stopping();
            if let Err(e) = w.kill() {
                tracing::warn!(pid = w.pid(), "cannot kill a pool worker: {e}");
            }
        }
        self.join_threads()
    }

    /// Waits for the workers to end; [`Error::PoolStillRunning`] before
    /// [`close`](Self::close) or [`terminate`](Self::terminate) (CPython's
    /// `join()`).
    pub fn join(&mut self) -> Result<()> {
        if self.shared.lock().state == PoolState::Running {
            return Err(Error::PoolStillRunning);
        }
        self.join_threads()
    }

    fn join_threads(&mut self) -> Result<()> {
        let mut result = Ok(());
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                result = Err(Error::bootstrap("a pool thread panicked"));
            }
        }
        result
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            if let Err(e) = self.terminate() {
                tracing::warn!("terminating a dropped pool: {e}");
            }
        }
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.shared.lock().state;
        write!(
            f,
            "<Pool processes={} state={state:?}>",
            self.shared.processes
        )
    }
}
