//! `Semaphore` and `BoundedSemaphore`: a counter guarded by the block's
//! state mutex; waiters sleep on the bell.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::block::{deadline_after, Block, Kind, Layout};
use crate::{Error, Result};

const VALUE: usize = 0;
const BOUND: usize = 1;
const UNBOUNDED: u64 = u64::MAX;
const LAYOUT: Layout = Layout {
    mutexes: 1,
    words: 2,
    bytes: 0,
};

#[derive(Clone)]
struct Core {
    block: Arc<Block>,
}

impl Core {
    fn new(value: u32, bound: u64) -> Result<Core> {
        let block = Block::create(Kind::Semaphore, LAYOUT)?;
        block.word(VALUE).store(value as u64, Ordering::Release);
        block.word(BOUND).store(bound, Ordering::Release);
        Ok(Core { block })
    }

    /// Takes one unit, waiting until `deadline` (`Some(now)`: not at all).
    fn acquire(&self, deadline: Option<Instant>) -> Result<bool> {
        self.block.lock_state()?;
        let r = loop {
            let v = self.block.word(VALUE).load(Ordering::Acquire);
            if v > 0 {
                self.block.word(VALUE).store(v - 1, Ordering::Release);
                break Ok(true);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break Ok(false);
            }
            if let Err(e) = self.block.wait_locked(deadline) {
                break Err(e);
            }
        };
        self.block.unlock_state();
        r
    }

    fn release(&self) -> Result<()> {
        self.block.lock_state()?;
        let v = self.block.word(VALUE).load(Ordering::Acquire);
        let bound = self.block.word(BOUND).load(Ordering::Acquire);
        let r = if v >= bound.min(u32::MAX as u64) {
            Err(Error::ReleasedTooManyTimes)
        } else {
            self.block.word(VALUE).store(v + 1, Ordering::Release);
            Ok(())
        };
        self.block.unlock_state();
        if r.is_ok() {
            self.block.ring();
        }
        r
    }

    fn value(&self) -> u32 {
        self.block
            .word(VALUE)
            .load(Ordering::Acquire)
            .min(u32::MAX as u64) as u32
    }
}

macro_rules! semaphore_type {
    ($(#[$doc:meta])* $name:ident, $bounded:expr) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $name {
            core: Core,
        }

        impl $name {
            /// A semaphore holding `value` units.
            pub fn new(value: u32) -> Result<$name> {
                let bound = if $bounded { value as u64 } else { UNBOUNDED };
                Ok($name { core: Core::new(value, bound)? })
            }

            /// Takes a unit, waiting for one as long as it takes.
            pub fn acquire(&self) -> Result<()> {
                self.core.acquire(None).map(drop)
            }

            /// Takes a unit if one is free (`acquire(block=False)`).
            pub fn try_acquire(&self) -> Result<bool> {
                self.core.acquire(Some(Instant::now()))
            }

            /// Waits at most `timeout` for a unit; whether one was taken.
            pub fn acquire_timeout(&self, timeout: Duration) -> Result<bool> {
                self.core.acquire(deadline_after(Some(timeout)))
            }

            /// Gives a unit back (any process may, not only an acquirer).
            pub fn release(&self) -> Result<()> {
                self.core.release()
            }

            /// The units free now (CPython's `get_value()`).
            pub fn get_value(&self) -> u32 {
                self.core.value()
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name)).field("value", &self.get_value()).finish()
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                self.core.block.serialize(s)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let block = Block::deserialize(d, Kind::Semaphore, |l| *l == LAYOUT)?;
                Ok($name { core: Core { block } })
            }
        }
    };
}

semaphore_type!(
    /// `multiprocessing.Semaphore`: a counter of units shared by processes.
    ///
    /// A unit held by a process that dies is not given back (it is a
    /// count, not an owned lock: CPython's rule too).
    ///
    /// ```
    /// let s = mproc_ipc::Semaphore::new(2)?;
    /// s.acquire()?;
    /// assert!(s.try_acquire()?);
    /// assert!(!s.try_acquire()?);
    /// s.release()?;
    /// assert_eq!(s.get_value(), 1);
    /// # Ok::<(), mproc_ipc::Error>(())
    /// ```
    Semaphore,
    false
);

semaphore_type!(
    /// `multiprocessing.BoundedSemaphore`: a [`Semaphore`] whose `release`
    /// past the initial value is [`Error::ReleasedTooManyTimes`].
    ///
    /// ```
    /// let s = mproc_ipc::BoundedSemaphore::new(1)?;
    /// assert!(s.release().is_err());
    /// # Ok::<(), mproc_ipc::Error>(())
    /// ```
    BoundedSemaphore,
    true
);
