//! `Barrier`: arrival count and generation under the state mutex; each
//! waiting party holds a slot's robust mutex, so the others can tell
//! that a party died waiting and break the barrier instead of waiting
//! for ever.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::block::{deadline_after, Block, Kind, Layout};
use crate::sys::Acquired;
use crate::{Error, Result};

/// How many waiting parties are watched for death (parties beyond it
/// wait unwatched).
const SLOTS: usize = 64;
/// How often a waiting party checks whether another waiting party died.
const DEATH_CHECK: Duration = Duration::from_millis(50);

const PARTIES: usize = 0;
const COUNT: usize = 1;
const GENERATION: usize = 2;
const BROKEN: usize = 3;
const RESET_GEN: usize = 4; // the last generation ended by `reset`, + 1
const BUSY: usize = 5; // SLOTS words: 1 while a party waits in the slot

fn layout(parties: usize) -> Layout {
    let slots = parties.min(SLOTS) as u32;
    Layout {
        mutexes: 1 + slots,
        words: BUSY as u32 + slots,
        bytes: 0,
    }
}

/// `multiprocessing.Barrier`: `parties` processes (or threads) wait until
/// all have arrived.
///
/// Unlike CPython's, a party that dies while waiting (killed, crashed)
/// breaks the barrier: the others get [`Error::BrokenBarrier`] within
/// about 50 ms instead of waiting for ever. A party that dies before
/// arriving cannot be told from a slow one (use `wait_timeout`).
///
/// ```
/// let b = mproc_ipc::Barrier::new(1)?;
/// assert_eq!(b.wait()?, 0);
/// assert_eq!(b.parties(), 1);
/// # Ok::<(), mproc_ipc::Error>(())
/// ```
#[derive(Clone)]
pub struct Barrier {
    block: Arc<Block>,
    slots: usize,
}

impl Barrier {
    /// A barrier for `parties` (≥ 1) parties.
    pub fn new(parties: usize) -> Result<Barrier> {
        if parties == 0 {
            return Err(Error::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "a Barrier needs at least one party",
            )));
        }
        let block = Block::create(Kind::Barrier, layout(parties))?;
        block.word(PARTIES).store(parties as u64, Ordering::Release);
        Ok(Barrier {
            block,
            slots: parties.min(SLOTS),
        })
    }

    /// Waits until all parties arrived; this party's arrival index
    /// (`0..parties`, the last to arrive gets `parties - 1`).
    pub fn wait(&self) -> Result<usize> {
        self.wait_until(None)
    }

    /// As [`wait`](Self::wait), at most `timeout`; a timeout breaks the
    /// barrier ([`Error::BrokenBarrier`], CPython's rule).
    pub fn wait_timeout(&self, timeout: Duration) -> Result<usize> {
        self.wait_until(deadline_after(Some(timeout)))
    }

    fn break_locked(&self) {
        self.block.word(BROKEN).store(1, Ordering::Release);
        self.block.word(COUNT).store(0, Ordering::Release);
        self.block.ring();
    }

    fn wait_until(&self, deadline: Option<Instant>) -> Result<usize> {
        let b = &*self.block;
        if b.lock_state()? {
            // A party died inside the barrier's own bookkeeping.
            self.break_locked();
        }
        let r = self.wait_locked(deadline);
        b.unlock_state();
        r
    }

    fn wait_locked(&self, deadline: Option<Instant>) -> Result<usize> {
        let b = &*self.block;
        if b.word(BROKEN).load(Ordering::Acquire) != 0 {
            return Err(Error::BrokenBarrier);
        }
        let parties = self.parties() as u64;
        let generation = b.word(GENERATION).load(Ordering::Acquire);
        let index = b.word(COUNT).load(Ordering::Acquire);
        if index + 1 >= parties {
            b.word(COUNT).store(0, Ordering::Release);
            b.word(GENERATION)
                .store(generation.wrapping_add(1), Ordering::Release);
            b.ring();
            return Ok(index as usize);
        }
        // The slot first: once this party counts as waiting (others read
        // `n_waiting` unlocked), its death must be visible.
        let slot = self.take_slot()?;
        b.word(COUNT).store(index + 1, Ordering::Release);
        let r = loop {
            if b.word(GENERATION).load(Ordering::Acquire) != generation {
                break if b.word(RESET_GEN).load(Ordering::Acquire) == generation.wrapping_add(1) {
                    Err(Error::BrokenBarrier)
                } else {
                    Ok(index as usize)
                };
            }
            if b.word(BROKEN).load(Ordering::Acquire) != 0 {
                break Err(Error::BrokenBarrier);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) || self.a_party_died(slot)? {
                self.break_locked();
                break Err(Error::BrokenBarrier);
            }
            let check = Instant::now() + DEATH_CHECK;
            let until = deadline.map_or(check, |d| d.min(check));
            if let Err(e) = b.wait_locked(Some(until)) {
                break Err(e);
            }
        };
        if let Some(j) = slot {
            b.word(BUSY + j).store(0, Ordering::Release);
            if let Err(e) = b.sys().unlock(1 + j) {
                tracing::error!("mproc: releasing a Barrier slot failed: {e}");
            }
        }
        r
    }

    /// A free slot, held (robust mutex taken) for this waiting party.
    fn take_slot(&self) -> Result<Option<usize>> {
        let b = &*self.block;
        for j in 0..self.slots {
            if b.word(BUSY + j).load(Ordering::Acquire) == 0 {
                match b.sys().try_lock(1 + j)? {
                    Acquired::No => continue,
                    Acquired::Clean | Acquired::OwnerDied => {
                        b.word(BUSY + j).store(1, Ordering::Release);
                        return Ok(Some(j));
                    }
                }
            }
        }
        Ok(None)
    }

    /// Whether a party waiting in another slot died (frees its slot).
    fn a_party_died(&self, mine: Option<usize>) -> Result<bool> {
        let b = &*self.block;
        let mut died = false;
        for j in (0..self.slots).filter(|&j| Some(j) != mine) {
            if b.word(BUSY + j).load(Ordering::Acquire) == 0 {
                continue;
            }
            match b.sys().try_lock(1 + j)? {
                Acquired::No => {}
                Acquired::OwnerDied => {
                    died = true;
                    b.word(BUSY + j).store(0, Ordering::Release);
                    b.sys().unlock(1 + j)?;
                }
                Acquired::Clean => {
                    b.word(BUSY + j).store(0, Ordering::Release);
                    b.sys().unlock(1 + j)?;
                }
            }
        }
        Ok(died)
    }

    /// Breaks the barrier: waiting and future `wait`s get
    /// [`Error::BrokenBarrier`] until [`reset`](Self::reset).
    pub fn abort(&self) {
        match self.block.lock_state() {
            Ok(_) => {
                self.break_locked();
                self.block.unlock_state();
            }
            Err(e) => tracing::error!("mproc: Barrier state lock failed: {e}"),
        }
    }

    /// Back to the initial, unbroken state; parties waiting now get
    /// [`Error::BrokenBarrier`].
    pub fn reset(&self) {
        let b = &*self.block;
        match b.lock_state() {
            Ok(_) => {
                let g = b.word(GENERATION).load(Ordering::Acquire);
                if b.word(COUNT).load(Ordering::Acquire) > 0 {
                    b.word(RESET_GEN)
                        .store(g.wrapping_add(1), Ordering::Release);
                    b.word(GENERATION)
                        .store(g.wrapping_add(1), Ordering::Release);
                }
                b.word(COUNT).store(0, Ordering::Release);
                b.word(BROKEN).store(0, Ordering::Release);
                b.ring();
                b.unlock_state();
            }
            Err(e) => tracing::error!("mproc: Barrier state lock failed: {e}"),
        }
    }

    /// The number of parties.
    pub fn parties(&self) -> usize {
        self.block.word(PARTIES).load(Ordering::Acquire) as usize
    }

    /// How many parties are waiting now.
    pub fn n_waiting(&self) -> usize {
        self.block.word(COUNT).load(Ordering::Acquire) as usize
    }

    /// Whether the barrier is broken.
    pub fn broken(&self) -> bool {
        self.block.word(BROKEN).load(Ordering::Acquire) != 0
    }
}

impl fmt::Debug for Barrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Barrier")
            .field("parties", &self.parties())
            .field("n_waiting", &self.n_waiting())
            .field("broken", &self.broken())
            .finish()
    }
}

impl Serialize for Barrier {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.block.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Barrier {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let mut slots = 0;
        let block = Block::deserialize(d, Kind::Barrier, |l| {
            slots = l.mutexes.saturating_sub(1) as usize;
            (1..=SLOTS as u32 + 1).contains(&l.mutexes)
                && l.words == BUSY as u32 + l.mutexes - 1
                && l.bytes == 0
        })?;
        // The party count lives in shared memory: a peer could write
        // anything there, so the slot count is the transfer's (checked
        // against the mapping), and parties only bounds arrivals.
        if block.word(PARTIES).load(Ordering::Acquire) == 0 {
            use serde::de::Error as _;
            return Err(D::Error::custom(Error::InvalidShared(
                "a Barrier with no parties".into(),
            )));
        }
        Ok(Barrier { block, slots })
    }
}
