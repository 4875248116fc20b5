//! Launcher threads: they finish launches in the background
//! (`Begun::finish`, `parent.rs`) and stay a
//! moment for the next one, so that a program starting children one
//! after another does not pay a thread's creation for each.

use mproc_ipc::__private::lock::{lock, wait};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

type Job = Box<dyn FnOnce() + Send>;

/// Launches in flight at most. Each holds a launcher thread and a socket
/// pair (an inherited channel), or a listener and, on Windows, two helper
/// threads until its child has connected: a
/// program starting hundreds of children in a loop waits in `start()`
/// for a slot, and still has this many start up side by side.
const MAX_IN_FLIGHT: usize = 16;

static IN_FLIGHT: Mutex<usize> = Mutex::new(0);
static SLOT_FREED: Condvar = Condvar::new();

/// One launch's place among those in flight; freed when dropped.
pub(crate) struct Slot(());

/// Waits for a free place among the launches in flight.
pub(crate) fn slot() -> Slot {
    let mut n = lock(&IN_FLIGHT);
    while *n >= MAX_IN_FLIGHT {
        n = wait(&SLOT_FREED, n);
    }
    *n += 1;
    Slot(())
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut n = lock(&IN_FLIGHT);
        *n -= 1;
        SLOT_FREED.notify_one();
    }
}

/// Launcher threads waiting for work, by id.
static IDLE: Mutex<Vec<(u64, Sender<Job>)>> = Mutex::new(Vec::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// How long an idle launcher thread waits for another launch.
const KEEP_IDLE: Duration = Duration::from_secs(2);

fn idle() -> MutexGuard<'static, Vec<(u64, Sender<Job>)>> {
    lock(&IDLE)
}

/// Runs `job` on a launcher thread: an idle one, or a new one.
pub(crate) fn run(job: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    let mut job: Job = Box::new(job);
    loop {
        let Some((_, worker)) = idle().pop() else {
            break;
        };
        // A popped worker waits for this job (it cannot leave once it is
        // out of the idle list); a send fails only if it died.
        match worker.send(job) {
            Ok(()) => return Ok(()),
            Err(mpsc::SendError(back)) => job = back,
        }
    }
    let (tx, rx) = mpsc::channel::<Job>();
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    std::thread::Builder::new()
        .name("mproc-launcher".into())
        .spawn(move || worker(id, job, tx, rx))?;
    Ok(())
}

fn worker(id: u64, first: Job, tx: Sender<Job>, rx: Receiver<Job>) {
    let mut job = first;
    loop {
        // A job that panics loses only its own launch (its result channel
        // closes, and `join` reports the launch as failed).
        let _ = catch_unwind(AssertUnwindSafe(job));
        idle().push((id, tx.clone()));
        job = match rx.recv_timeout(KEEP_IDLE) {
            Ok(next) => next,
            Err(RecvTimeoutError::Timeout) => {
                let mut list = idle();
                if let Some(at) = list.iter().position(|(i, _)| *i == id) {
                    list.remove(at);
                    return;
                }
                drop(list);
                // Taken from the idle list just now: its job is on its way.
                match rx.recv() {
                    Ok(next) => next,
                    Err(_) => return,
                }
            }
            Err(RecvTimeoutError::Disconnected) => return,
        };
    }
}
