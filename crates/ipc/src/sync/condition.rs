//! `Condition`: its own recursive lock (mutex 0) plus one waiter slot per
//! concurrent waiter. A waiter holds its slot's robust mutex for as long
//! as it waits, so `notify` can tell a live waiter (slot busy) from one
//! that died waiting (its mutex reports the owner's death): a notification
//! is never spent on a dead waiter, and the condition stays usable.

use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::block::{deadline_after, Block, Kind, Layout};
use super::lock::{Core, Wait};
use crate::sys::Acquired;
use crate::{Error, Result};

/// How many processes' threads may wait on one condition at once.
pub(crate) const SLOTS: usize = 32;
// Words 0 and 1 are the lock's owner and count (see `lock.rs`).
const NEXT_TICKET: usize = 2;
const TICKET: usize = 3; // SLOTS words: 0 free, else the waiter's ticket
const NOTIFIED: usize = TICKET + SLOTS; // SLOTS words: 1 when notified
const LAYOUT: Layout = Layout {
    mutexes: 1 + SLOTS as u32,
    words: (NOTIFIED + SLOTS) as u32,
    bytes: 0,
};

/// `multiprocessing.Condition`: a lock (its own `RLock`) with waiting
/// and notifying, shared by processes.
///
/// At most 32 threads (in any processes) wait at once; one more `wait` is
/// an error. A waiter that dies while waiting leaves the condition usable:
/// `notify` skips it.
///
/// ```
/// let c = mproc_ipc::Condition::new()?;
/// let mut g = c.acquire()?;
/// assert!(!g.wait_timeout(std::time::Duration::from_millis(1))?);
/// c.notify_all();
/// # Ok::<(), mproc_ipc::Error>(())
/// ```
#[derive(Clone)]
pub struct Condition {
    core: Core,
}

/// A held [`Condition`] (one level of its lock), released when dropped.
#[must_use = "the condition's lock is released as soon as the guard is dropped"]
pub struct CondGuard<'a> {
    cond: &'a Condition,
    _thread_bound: PhantomData<*const ()>,
}

impl Condition {
    /// A new condition with its own recursive lock.
    pub fn new() -> Result<Condition> {
        Ok(Condition {
            core: Core::new(Kind::Condition, LAYOUT, true)?,
        })
    }

    fn block(&self) -> &Block {
        &self.core.block
    }

    /// Takes the condition's lock (recursively, like an `RLock`).
    pub fn acquire(&self) -> Result<CondGuard<'_>> {
        self.core
            .take(Wait::Forever)?
            .ok_or_else(|| Error::Io(std::io::Error::other("lock wait failed")))?;
        Ok(CondGuard {
            cond: self,
            _thread_bound: PhantomData,
        })
    }

    /// Wakes up to `n` of the threads waiting now. Takes the lock for the
    /// call if this thread does not hold it (CPython requires holding it).
    pub fn notify(&self, n: usize) {
        if let Err(e) = self.notify_n(n) {
            tracing::error!("mproc: Condition notify failed: {e}");
        }
    }

    /// Wakes every thread waiting now.
    pub fn notify_all(&self) {
        self.notify(usize::MAX);
    }

    fn notify_n(&self, n: usize) -> Result<()> {
        let _held = if self.core.held_by_me() {
            None
        } else {
            Some(self.acquire()?)
        };
        let b = self.block();
        let mut waiting: Vec<(u64, usize)> = (0..SLOTS)
            .filter_map(|j| {
                let t = b.word(TICKET + j).load(Ordering::Acquire);
                (t != 0 && b.word(NOTIFIED + j).load(Ordering::Acquire) == 0).then_some((t, j))
            })
            .collect();
        waiting.sort_unstable();
        let mut woken = 0;
        for (_, j) in waiting {
            if woken == n {
                break;
            }
            match b.sys().try_lock(1 + j)? {
                // Busy: its waiter is alive and waiting.
                Acquired::No => {
                    b.word(NOTIFIED + j).store(1, Ordering::Release);
                    woken += 1;
                }
                // Its waiter died waiting (or left it inconsistent): free it.
                Acquired::OwnerDied | Acquired::Clean => {
                    b.sys().unlock(1 + j)?;
                    b.word(TICKET + j).store(0, Ordering::Release);
                    b.word(NOTIFIED + j).store(0, Ordering::Release);
                }
            }
        }
        if woken > 0 {
            b.ring();
        }
        Ok(())
    }

    /// Waits for a notification (or `deadline`), the lock held on entry
    /// and on return; whether notified.
    fn wait_until(&self, deadline: Option<Instant>) -> Result<bool> {
        let b = self.block();
        let slot = (0..SLOTS)
            .find(|&j| b.word(TICKET + j).load(Ordering::Acquire) == 0)
            .ok_or_else(|| {
                Error::Io(std::io::Error::other(
                    "too many waiters on one Condition (at most 32)",
                ))
            })?;
        match b.sys().try_lock(1 + slot)? {
            Acquired::No => {
                return Err(Error::Io(std::io::Error::other(
                    "Condition waiter slot is held by another thread",
                )))
            }
            Acquired::Clean | Acquired::OwnerDied => {}
        }
        let ticket = b.word(NEXT_TICKET).fetch_add(1, Ordering::AcqRel) + 1;
        b.word(NOTIFIED + slot).store(0, Ordering::Release);
        b.word(TICKET + slot).store(ticket, Ordering::Release);
        let count = b.word(1).load(Ordering::Acquire);
        // Give up ownership (every level); mutex 0 itself is released only
        // inside `wait_locked`, after it read the bell, so a notify between
        // release and sleep is not missed.
        b.word(0).store(0, Ordering::Release);
        b.word(1).store(0, Ordering::Release);
        let mut r = Ok(false);
        loop {
            if b.word(NOTIFIED + slot).load(Ordering::Acquire) == 1 {
                r = Ok(true);
                break;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            if let Err(e) = b.wait_locked(deadline) {
                r = Err(e);
                break;
            }
        }
        b.word(TICKET + slot).store(0, Ordering::Release);
        b.word(NOTIFIED + slot).store(0, Ordering::Release);
        if let Err(e) = b.sys().unlock(1 + slot) {
            tracing::error!("mproc: releasing a Condition slot failed: {e}");
        }
        b.word(0).store(super::block::me(), Ordering::Release);
        b.word(1).store(count, Ordering::Release);
        r
    }
}

impl CondGuard<'_> {
    /// Releases the lock (every level), waits for a `notify`, takes it back.
    pub fn wait(&mut self) -> Result<()> {
        self.cond.wait_until(None).map(drop)
    }

    /// As [`wait`](Self::wait), at most `timeout`; whether notified
    /// (`false`: timed out).
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<bool> {
        self.cond.wait_until(deadline_after(Some(timeout)))
    }

    /// Waits until `pred()` is true (checked first, then after each
    /// wake-up, with the lock held).
    pub fn wait_for(&mut self, mut pred: impl FnMut() -> bool) -> Result<()> {
        while !pred() {
            self.wait()?;
        }
        Ok(())
    }
}

impl Drop for CondGuard<'_> {
    fn drop(&mut self) {
        self.cond.core.give();
    }
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Condition").finish_non_exhaustive()
    }
}

impl fmt::Debug for CondGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CondGuard").finish_non_exhaustive()
    }
}

impl Serialize for Condition {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.block().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Condition {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let block = Block::deserialize(d, Kind::Condition, |l| *l == LAYOUT)?;
        Ok(Condition {
            core: Core {
                block,
                recursive: true,
            },
        })
    }
}
