//! `Lock` and `RLock`: one robust mutex in a shared block, held for as
//! long as a [`LockGuard`] lives.

use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::block::{deadline_after, me, Block, Kind, Layout};
use crate::sys::Acquired;
use crate::{Error, Result};

const OWNER: usize = 0;
const COUNT: usize = 1;
const LAYOUT: Layout = Layout {
    mutexes: 1,
    words: 2,
    bytes: 0,
};

/// The lock shared by [`Lock`], [`RLock`] and the `Condition`'s lock:
/// mutex 0 of `block`, its owner (pid and thread) and recursion count.
#[derive(Clone)]
pub(crate) struct Core {
    pub block: Arc<Block>,
    pub recursive: bool,
}

/// How `Core::take` waits.
#[derive(Clone, Copy)]
pub(crate) enum Wait {
    Forever,
    Try,
    Until(Instant),
}

impl Core {
    pub fn new(kind: Kind, layout: Layout, recursive: bool) -> Result<Core> {
        Ok(Core {
            block: Block::create(kind, layout)?,
            recursive,
        })
    }

    pub fn held_by_me(&self) -> bool {
        self.block.word(OWNER).load(Ordering::Acquire) == me()
    }

    /// Takes the lock; `Some(previous_owner_died)` when taken.
    pub fn take(&self, wait: Wait) -> Result<Option<bool>> {
        let me = me();
        // Only this thread ever stores its own identity here, so a relaxed
        // read that finds it is exact (and any other value means "not me").
        if self.block.word(OWNER).load(Ordering::Relaxed) == me {
            if self.recursive {
                self.block.word(COUNT).fetch_add(1, Ordering::Relaxed);
                return Ok(Some(false));
            }
            return match wait {
                Wait::Forever => Err(Error::WouldDeadlock),
                // CPython: a non-blocking or timed acquire of a Lock this
                // thread holds fails (after the timeout; here at once).
                Wait::Try | Wait::Until(_) => Ok(None),
            };
        }
        let sys = self.block.sys();
        let got = match wait {
            Wait::Forever => sys.lock(0, None)?,
            Wait::Try => sys.try_lock(0)?,
            Wait::Until(d) => sys.lock(0, Some(d))?,
        };
        let died = match got {
            Acquired::No => return Ok(None),
            Acquired::Clean => false,
            Acquired::OwnerDied => true,
        };
        // Under the mutex: relaxed stores suffice (its release/acquire
        // orders them for the next holder).
        self.block.word(OWNER).store(me, Ordering::Relaxed);
        if self.recursive {
            self.block.word(COUNT).store(1, Ordering::Relaxed);
        }
        Ok(Some(died))
    }

    /// Releases one level; the mutex when none is left.
    pub fn give(&self) {
        if self.recursive && self.block.word(COUNT).fetch_sub(1, Ordering::Relaxed) > 1 {
            return;
        }
        if self.recursive {
            self.block.word(COUNT).store(0, Ordering::Relaxed);
        }
        self.block.word(OWNER).store(0, Ordering::Relaxed);
        self.block.unlock_state();
    }
}

impl Drop for Core {
    /// A guard leaked with `mem::forget` leaves the OS mutex held by a
    /// thread of this process — on Linux on that thread's robust list,
    /// which glibc and the kernel walk later. Unmapping it would leave the
    /// list pointing at nothing, so the last handle of a lock held in this
    /// process keeps the mapping for the life of the process instead.
    fn drop(&mut self) {
        let owner = self.block.word(OWNER).load(Ordering::Relaxed);
        if Arc::strong_count(&self.block) == 1 && owner >> 32 == std::process::id() as u64 {
            std::mem::forget(Arc::clone(&self.block));
        }
    }
}

/// A held [`Lock`] or [`RLock`] (one level of it): released when dropped.
///
/// Tied to the thread that acquired it (not `Send`): a robust OS mutex is
/// owned by a thread.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct LockGuard<'a> {
    core: &'a Core,
    died: bool,
    _thread_bound: PhantomData<*const ()>,
}

impl LockGuard<'_> {
    /// Whether the previous holder died holding the lock (killed, crashed,
    /// exited) instead of releasing it: the state it protected may be half
    /// updated (the robust-mutex rule; CPython would deadlock instead).
    pub fn previous_owner_died(&self) -> bool {
        self.died
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        self.core.give();
    }
}

impl fmt::Debug for LockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard")
            .field("previous_owner_died", &self.died)
            .finish()
    }
}

fn guard(core: &Core, died: Option<bool>) -> Option<LockGuard<'_>> {
    died.map(|died| LockGuard {
        core,
        died,
        _thread_bound: PhantomData,
    })
}

macro_rules! lock_type {
    ($(#[$doc:meta])* $name:ident, $kind:expr, $recursive:expr) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $name {
            core: Core,
        }

        impl $name {
            /// A new, unlocked lock.
            pub fn new() -> Result<$name> {
                Ok($name {
                    core: Core::new($kind, LAYOUT, $recursive)?,
                })
            }

            /// Blocks until the lock is taken (CPython's `acquire()`).
            pub fn acquire(&self) -> Result<LockGuard<'_>> {
                guard(&self.core, self.core.take(Wait::Forever)?)
                    .ok_or_else(|| Error::Io(std::io::Error::other("lock wait failed")))
            }

            /// Takes the lock if it is free (`acquire(block=False)`).
            pub fn try_acquire(&self) -> Result<Option<LockGuard<'_>>> {
                Ok(guard(&self.core, self.core.take(Wait::Try)?))
            }

            /// Waits at most `timeout` (`acquire(timeout=t)`).
            pub fn acquire_timeout(&self, timeout: Duration) -> Result<Option<LockGuard<'_>>> {
                let until = deadline_after(Some(timeout)).unwrap_or_else(Instant::now);
                Ok(guard(&self.core, self.core.take(Wait::Until(until))?))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name)).finish_non_exhaustive()
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                self.core.block.serialize(s)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let block = Block::deserialize(d, $kind, |l| *l == LAYOUT)?;
                Ok($name {
                    core: Core {
                        block,
                        recursive: $recursive,
                    },
                })
            }
        }
    };
}

lock_type!(
    /// `multiprocessing.Lock`: a mutual-exclusion lock shared by processes.
    ///
    /// A clone, or a copy sent to a child in its args, is the same lock.
    /// Unlike CPython's, a holder's death does not deadlock the others:
    /// the next acquirer gets the lock and its guard's
    /// [`previous_owner_died`](LockGuard::previous_owner_died) says so.
    /// A blocking `acquire` by the thread that holds it is
    /// [`Error::WouldDeadlock`]; `try_acquire` then returns `None`.
    ///
    /// ```
    /// let lock = mproc_ipc::Lock::new()?;
    /// {
    ///     let g = lock.acquire()?;
    ///     assert!(!g.previous_owner_died());
    ///     assert!(lock.try_acquire()?.is_none());
    /// }
    /// assert!(lock.try_acquire()?.is_some());
    /// # Ok::<(), mproc_ipc::Error>(())
    /// ```
    Lock,
    Kind::Lock,
    false
);

lock_type!(
    /// `multiprocessing.RLock`: a lock the holding thread may take again;
    /// released when every guard is dropped.
    ///
    /// ```
    /// let lock = mproc_ipc::RLock::new()?;
    /// let a = lock.acquire()?;
    /// let b = lock.acquire()?;
    /// drop((a, b));
    /// # Ok::<(), mproc_ipc::Error>(())
    /// ```
    RLock,
    Kind::RLock,
    true
);
