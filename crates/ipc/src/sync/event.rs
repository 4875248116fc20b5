//! `Event`: a flag guarded by the block's state mutex; waiters sleep on
//! the bell.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::block::{deadline_after, Block, Kind, Layout};
use crate::Result;

const FLAG: usize = 0;
const LAYOUT: Layout = Layout {
    mutexes: 1,
    words: 1,
    bytes: 0,
};

/// `multiprocessing.Event`: a flag that processes wait for.
///
/// `set`, `clear` and `wait` cannot fail for a valid event; an OS failure
/// (which would mean the shared mapping is gone) is logged through
/// `tracing` and `wait` then returns.
///
/// ```
/// let e = mproc_ipc::Event::new()?;
/// assert!(!e.wait_timeout(std::time::Duration::ZERO));
/// e.set();
/// e.wait();
/// assert!(e.is_set());
/// # Ok::<(), mproc_ipc::Error>(())
/// ```
#[derive(Clone)]
pub struct Event {
    block: Arc<Block>,
}

impl Event {
    /// A new, clear event.
    pub fn new() -> Result<Event> {
        Ok(Event {
            block: Block::create(Kind::Event, LAYOUT)?,
        })
    }

    fn update(&self, v: u64) {
        match self.block.lock_state() {
            Ok(_) => {
                self.block.word(FLAG).store(v, Ordering::Release);
                self.block.unlock_state();
            }
            Err(e) => {
                tracing::error!("mproc: Event state lock failed: {e}");
                self.block.word(FLAG).store(v, Ordering::Release);
            }
        }
        if v == 1 {
            self.block.ring();
        }
    }

    /// Sets the flag and wakes every waiter.
    pub fn set(&self) {
        self.update(1);
    }

    /// Clears the flag.
    pub fn clear(&self) {
        self.update(0);
    }

    /// Whether the flag is set.
    pub fn is_set(&self) -> bool {
        self.block.word(FLAG).load(Ordering::Acquire) == 1
    }

    /// Waits until the flag is set.
    pub fn wait(&self) {
        self.wait_until(None);
    }

    /// Waits at most `timeout`; whether the flag is set (CPython's
    /// `wait(timeout)` return value).
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.wait_until(deadline_after(Some(timeout)))
    }

    fn wait_until(&self, deadline: Option<Instant>) -> bool {
        if self.is_set() {
            return true;
        }
        if let Err(e) = self.block.lock_state() {
            tracing::error!("mproc: Event state lock failed: {e}");
            return self.is_set();
        }
        loop {
            if self.is_set() || deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            if let Err(e) = self.block.wait_locked(deadline) {
                tracing::error!("mproc: Event wait failed: {e}");
                break;
            }
        }
        let set = self.is_set();
        self.block.unlock_state();
        set
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("is_set", &self.is_set())
            .finish()
    }
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.block.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(Event {
            block: Block::deserialize(d, Kind::Event, |l| *l == LAYOUT)?,
        })
    }
}
