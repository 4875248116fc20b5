//! The shared-memory lane of a small bounded queue: items go from the
//! producer's process straight into a ring that every holder maps, and
//! from there straight to the consumer's, with no hop through the broker.
//!
//! Why: through the broker, each place of a `Queue(3)` goes round a chain
//! of hand-offs between four threads in three processes (a consumer's
//! `GET`, the broker's grant to a waiting producer, the producer's item,
//! the broker's answer), about 4.4 context switches per item against
//! CPython's 2.75 (docs/benchmarks.md, "Small bounded queues"). Through the
//! ring, a put is a copy into a slot under a lock and a wake-up only when
//! someone waits: CPython's own design (a semaphore and a lock in shared
//! memory), without its feeder thread and pipe.
//!
//! The ring is a [`Block`] ([`Kind::QueueLane`]): robust mutex 0 guards
//! it; mutex 1 is held by the owner's *keeper* thread for the owner's
//! life, so that a holder waiting on the ring learns that the owner is gone
//! (the mutex is then free, or its holder died): as through the broker,
//! a queue whose owner is gone is [`Error::Disconnected`]. Its words: the
//! state (the head slot in the top half, the count in the bottom half,
//! written in one store: a holder killed at any point of a put or get
//! leaves the ring as it was before, or after, that operation — never a
//! torn item, never an item both taken and still there), the mode
//! ([`ON`], [`OFF`], [`DEAD`]), the numbers of puts and gets waiting (a
//! holder killed while waiting leaves its count too high: an extra
//! wake-up now and then, nothing else), and the number of places.
//!
//! A lane is made when the first holder in another process asks for it
//! (`LANE`, [`wire`](super::wire)), if the queue is bounded with at most
//! [`MOST_PLACES`] places, not a `JoinableQueue`, and nothing of it is
//! with other processes yet (no item in flight, no feeder, no reservation,
//! no parked request); the items the owner put before move into it. It
//! ends, once and for good, when anyone uses the broker for an item or a
//! place (an item bigger than a slot, a holder that cannot map the ring —
//! one on another host — or a holder that could not get it in time): the
//! broker then moves the ring's items to its own store first, in order,
//! and every holder waiting on the ring goes on through the broker.
//!
//! A slot is [`SLOT`] bytes: a length (4 bytes, native order), 4 unused,
//! then the encoded item. Everything read from the mapping is checked (a
//! head or count out of range, a length over the slot): a ring written
//! by a faulty or hostile holder is [`DEAD`], and its users get
//! `Disconnected`, never a panic or an out-of-bounds read.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::sync::block::{Block, Kind, Layout};
use crate::sys::Acquired;
use crate::util::lock::lock;
use crate::Result;

/// Bytes per slot.
pub(crate) const SLOT: usize = 512;

/// The largest encoded item a slot holds.
pub(crate) const SLOT_ITEM: usize = SLOT - 8;

/// The largest `maxsize` that gets a lane (the ring is `maxsize` slots:
/// 64 KiB of mapping). Past about 256 places the broker, which batches,
/// is faster (docs/architecture.md).
pub(crate) const MOST_PLACES: usize = 128;

/// The ring's words.
const STATE: usize = 0;
const MODE: usize = 1;
const PUTTERS: usize = 2;
const GETTERS: usize = 3;
const PLACES: usize = 4;
const WORDS: u32 = 5;

/// Modes: items go through the ring; through the broker (for good); the
/// owner is gone or the ring is corrupt.
const ON: u64 = 0;
const OFF: u64 = 1;
const DEAD: u64 = 2;

/// Robust mutexes: 0 is the ring's lock (the block's state lock), 1 the
/// owner's life.
const LIFE: usize = 1;

/// How long a waiter sleeps before it looks at the owner's life again.
const SLICE: Duration = Duration::from_millis(100);

/// Whether a queue of `maxsize` places may have a lane.
pub(crate) fn eligible(maxsize: usize) -> bool {
    (1..=MOST_PLACES).contains(&maxsize)
}

/// How a put on the lane ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Put {
    Done,
    /// (Inside [`Lane::put`] only: done, no waiter to wake.)
    DoneQuietly,
    /// The deadline passed while the ring was full.
    Full,
    /// The lane is off: put through the broker.
    Off,
    /// The owner is gone (or the ring is corrupt).
    Dead,
}

/// How a get on the lane ended (the item, if any, is in the caller's
/// buffer).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Got {
    Item,
    /// (Inside [`Lane::get`] only: taken, no waiter to wake.)
    ItemQuietly,
    /// The deadline passed while the ring was empty.
    Empty,
    /// The lane is off: get through the broker.
    Off,
    /// The owner is gone (or the ring is corrupt).
    Dead,
}

/// One queue's ring, mapped in this process.
pub(crate) struct Lane {
    block: Arc<Block>,
    places: usize,
}

/// The ring's lock, held; released when dropped (also on unwinding).
struct Held<'a>(&'a Lane);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.block.unlock_state();
    }
}

fn layout(places: usize) -> Option<Layout> {
    Some(Layout {
        mutexes: 2,
        words: WORDS,
        bytes: u64::try_from(places.checked_mul(SLOT)?).ok()?,
    })
}

impl Lane {
    /// A new, empty ring of `places` slots (the owner's broker, under the
    /// queue's lock); its keeper holds the life mutex before it is
    /// returned, so no holder ever sees the owner as gone while it lives.
    pub(crate) fn create(places: usize) -> Result<Lane> {
        let layout = layout(places)
            .filter(|_| eligible(places))
            .ok_or_else(|| crate::Error::InvalidShared("no lane for this size".into()))?;
        let block = Block::create(Kind::QueueLane, layout)?;
        block.word(PLACES).store(places as u64, Ordering::Release);
        keeper::hold(block.clone())?;
        Ok(Lane { block, places })
    }

    /// What a holder in another process needs to map the ring: the
    /// block's layout, nonce and where to open its handles (this
    /// process's handles, by value: see [`sys::import_handle`](crate::sys::import_handle)).
    pub(crate) fn transfer(&self) -> Option<Vec<u8>> {
        struct Ser<'a>(&'a Block);
        impl serde::Serialize for Ser<'_> {
            fn serialize<S: serde::Serializer>(
                &self,
                s: S,
            ) -> std::result::Result<S::Ok, S::Error> {
                self.0.serialize(s)
            }
        }
        postcard::to_stdvec(&Ser(&self.block)).ok()
    }

    /// The ring a [`transfer`](Self::transfer) names, for a queue of
    /// `maxsize` places: checked against the size before it is used.
    pub(crate) fn receive(bytes: &[u8], maxsize: usize) -> Result<Lane> {
        let expected = layout(maxsize).filter(|_| eligible(maxsize));
        let mut de = postcard::Deserializer::from_bytes(bytes);
        let block = Block::deserialize(&mut de, Kind::QueueLane, |l| Some(*l) == expected)
            .map_err(|e| crate::Error::InvalidShared(format!("queue lane: {e}")))?;
        if block.word(PLACES).load(Ordering::Acquire) != maxsize as u64 {
            return Err(crate::Error::InvalidShared(
                "queue lane of another size".into(),
            ));
        }
        Ok(Lane {
            block,
            places: maxsize,
        })
    }

    fn word(&self, i: usize) -> &AtomicU64 {
        self.block.word(i)
    }

    fn lock(&self) -> Option<Held<'_>> {
        // A holder that died holding it left the state as before or after
        // its operation (one store commits each): nothing to repair.
        self.block.lock_state().ok().map(|_| Held(self))
    }

    /// The head and count, if they make sense.
    fn state(&self) -> Option<(usize, usize)> {
        let s = self.word(STATE).load(Ordering::Acquire);
        let (head, count) = ((s >> 32) as usize, (s & 0xffff_ffff) as usize);
        (head < self.places && count <= self.places).then_some((head, count))
    }

    fn set_state(&self, head: usize, count: usize) {
        self.word(STATE)
            .store(((head as u64) << 32) | count as u64, Ordering::Release);
    }

    fn mode(&self) -> u64 {
        self.word(MODE).load(Ordering::Acquire)
    }

    fn slot(&self, i: usize) -> *mut u8 {
        debug_assert!(i < self.places);
        // SAFETY: slot `i` < places lies inside the byte area, which is
        // places × SLOT long (checked against the mapping on arrival).
        unsafe { self.block.bytes().add(i * SLOT) }
    }

    /// Writes `item` into slot `i` (under the lock; not yet counted).
    fn write_slot(&self, i: usize, item: &[u8]) {
        let len = (item.len() as u32).to_ne_bytes();
        // SAFETY: inside slot `i`: 4 bytes of length, then at most
        // SLOT_ITEM bytes from offset 8; the slot is not counted yet, so
        // no reader looks at it (a holder that maps the ring and writes
        // it anyway can only make a reader see garbage bytes, which the
        // length check and the decoder refuse).
        unsafe {
            std::ptr::copy_nonoverlapping(len.as_ptr(), self.slot(i), 4);
            std::ptr::copy_nonoverlapping(item.as_ptr(), self.slot(i).add(8), item.len());
        }
    }

    /// Appends slot `i`'s item to `out`; false if its length is not one.
    fn read_slot(&self, i: usize, out: &mut Vec<u8>) -> bool {
        let mut len = [0u8; 4];
        // SAFETY: the slot's first 4 bytes.
        unsafe { std::ptr::copy_nonoverlapping(self.slot(i), len.as_mut_ptr(), 4) };
        let len = u32::from_ne_bytes(len) as usize;
        if len > SLOT_ITEM {
            return false;
        }
        out.reserve(len);
        // SAFETY: `len` ≤ SLOT_ITEM bytes from offset 8 of the slot, into
        // spare capacity just reserved.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.slot(i).add(8),
                out.as_mut_ptr().add(out.len()),
                len,
            );
            out.set_len(out.len() + len);
        }
        true
    }

    /// Whether the owner still lives (its keeper holds the life mutex).
    /// Called with the ring's lock held, so that one holder at a time
    /// finds out and marks the ring [`DEAD`] for all.
    fn owner_alive(&self) -> bool {
        match self.block.sys().try_lock(LIFE) {
            Ok(Acquired::No) => true,
            Ok(Acquired::Clean) | Ok(Acquired::OwnerDied) => {
                let _ = self.block.sys().unlock(LIFE);
                false
            }
            Err(_) => false,
        }
    }

    fn mark_dead(&self) {
        self.word(MODE).store(DEAD, Ordering::Release);
    }

    /// Sleeps (the lock released meanwhile) until the ring changes, a
    /// [`SLICE`] passes or `deadline` does; `None` if the lock could not
    /// be taken again.
    fn wait(&self, held: Held<'_>, deadline: Option<Instant>) -> Option<Held<'_>> {
        let sys = self.block.sys();
        let seen = sys.bell();
        drop(held);
        let slice = Instant::now() + SLICE;
        let until = deadline.map_or(slice, |d| d.min(slice));
        let _ = sys.wait(seen, Some(until));
        self.lock()
    }

    fn waiting(&self, i: usize, more: bool) {
        let w = self.word(i);
        if more {
            w.fetch_add(1, Ordering::AcqRel);
        } else {
            let _ = w.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        }
    }

    /// Puts `item` (at most [`SLOT_ITEM`] bytes), waiting while the ring
    /// is full, until `deadline`.
    pub(crate) fn put(&self, item: &[u8], deadline: Option<Instant>) -> Put {
        if item.len() > SLOT_ITEM {
            return Put::Off;
        }
        let Some(mut held) = self.lock() else {
            return Put::Dead;
        };
        let mut waited = false;
        let outcome = loop {
            match self.mode() {
                ON => {}
                OFF => break Put::Off,
                _ => break Put::Dead,
            }
            // Every call, as through the broker: a queue whose owner is
            // gone is gone, items in it or not (a glance at a mutex held by
            // another: no system call on Linux).
            if !self.owner_alive() {
                self.mark_dead();
                break Put::Dead;
            }
            let Some((head, count)) = self.state() else {
                self.mark_dead();
                break Put::Dead;
            };
            if count < self.places {
                self.write_slot((head + count) % self.places, item);
                self.set_state(head, count + 1);
                // A get waits only on an empty ring, and the bell wakes
                // every waiter: the put that ends the emptiness wakes them
                // all, later ones need not.
                break if count == 0 {
                    Put::Done
                } else {
                    Put::DoneQuietly
                };
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break Put::Full;
            }
            if !waited {
                self.waiting(PUTTERS, true);
                waited = true;
            }
            held = match self.wait(held, deadline) {
                Some(h) => h,
                None => return Put::Dead,
            };
        };
        if waited {
            self.waiting(PUTTERS, false);
        }
        let wake = match outcome {
            Put::Done => self.word(GETTERS).load(Ordering::Acquire) > 0,
            Put::Dead => true,
            _ => false,
        };
        drop(held);
        if wake {
            self.block.ring();
        }
        match outcome {
            Put::DoneQuietly => Put::Done,
            other => other,
        }
    }

    /// Takes the oldest item into `out` (cleared first), waiting while the
    /// ring is empty, until `deadline`.
    pub(crate) fn get(&self, out: &mut Vec<u8>, deadline: Option<Instant>) -> Got {
        out.clear();
        let Some(mut held) = self.lock() else {
            return Got::Dead;
        };
        let mut waited = false;
        let outcome = loop {
            match self.mode() {
                ON => {}
                OFF => break Got::Off,
                _ => break Got::Dead,
            }
            // Every call, as through the broker: a queue whose owner is
            // gone is gone, items in it or not (a glance at a mutex held by
            // another: no system call on Linux).
            if !self.owner_alive() {
                self.mark_dead();
                break Got::Dead;
            }
            let Some((head, count)) = self.state() else {
                self.mark_dead();
                break Got::Dead;
            };
            if count > 0 {
                if !self.read_slot(head, out) {
                    out.clear();
                    self.mark_dead();
                    break Got::Dead;
                }
                self.set_state((head + 1) % self.places, count - 1);
                // A put waits only on a full ring (see `put`).
                break if count == self.places {
                    Got::Item
                } else {
                    Got::ItemQuietly
                };
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break Got::Empty;
            }
            if !waited {
                self.waiting(GETTERS, true);
                waited = true;
            }
            held = match self.wait(held, deadline) {
                Some(h) => h,
                None => return Got::Dead,
            };
        };
        if waited {
            self.waiting(GETTERS, false);
        }
        let wake = match outcome {
            Got::Item => self.word(PUTTERS).load(Ordering::Acquire) > 0,
            Got::Dead => true,
            _ => false,
        };
        drop(held);
        if wake {
            self.block.ring();
        }
        match outcome {
            Got::ItemQuietly => Got::Item,
            other => other,
        }
    }

    /// The number of items in the ring; `None` once the lane is off (ask
    /// the broker) or dead.
    pub(crate) fn qsize(&self) -> Option<usize> {
        let _held = self.lock()?;
        if self.mode() != ON {
            return None;
        }
        if !self.owner_alive() {
            self.mark_dead();
            return None;
        }
        self.state().map(|(_, count)| count)
    }

    /// Whether the lane is still on (a glance, without the lock).
    pub(crate) fn on(&self) -> bool {
        self.mode() == ON
    }

    /// Moves `items` into the new ring (the owner's items when the lane is
    /// made; the caller checked they fit: at most `places`, each at most
    /// [`SLOT_ITEM`] bytes).
    pub(crate) fn fill(&self, items: &[&[u8]]) {
        let Some(_held) = self.lock() else { return };
        for (i, item) in items.iter().take(self.places).enumerate() {
            self.write_slot(i, item);
        }
        self.set_state(0, items.len().min(self.places));
    }

    /// Ends the lane for good (the broker, under the queue's lock): its
    /// items, oldest first, for the broker's store; every holder waiting
    /// on it wakes up and goes through the broker.
    pub(crate) fn switch_off(&self) -> Vec<Vec<u8>> {
        let mut items = Vec::new();
        let Some(held) = self.lock() else {
            return items;
        };
        if self.mode() == ON {
            match self.state() {
                Some((head, count)) => {
                    for k in 0..count {
                        let mut item = Vec::new();
                        if !self.read_slot((head + k) % self.places, &mut item) {
                            // A corrupt slot: the rest cannot be trusted.
                            break;
                        }
                        items.push(item);
                    }
                    self.set_state(0, 0);
                    self.word(MODE).store(OFF, Ordering::Release);
                }
                None => self.mark_dead(),
            }
        }
        drop(held);
        self.block.ring();
        items
    }
}

/// The owner's keeper: one thread per process that takes the life mutex
/// of each lane the process makes and never lets go of it, so that the
/// mutex is free (or its holder dead) exactly when the owner is gone —
/// killed, crashed or exited. The broker keeps every queue for the
/// process's life, so a lane's mutex never needs letting go earlier.
mod keeper {
    use super::*;

    type Request = (Arc<Block>, mpsc::SyncSender<bool>);

    /// The keeper's inbox, and the process it was started in (a process
    /// forked from this one has no keeper thread: it starts its own).
    static KEEPER: Mutex<Option<(u32, mpsc::Sender<Request>)>> = Mutex::new(None);

    /// The lanes one process makes at most. Linux marks a dead thread's
    /// robust mutexes from a list it walks only so far (2,048 entries in
    /// the kernel): past that, a lane's holders could not see its owner
    /// gone. A process that made this many serves its later queues
    /// through the broker.
    const MOST_LANES: usize = 1024;

    /// Lanes held by this process's keeper.
    static HELD: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    pub(super) fn hold(block: Arc<Block>) -> Result<()> {
        let (tx, rx) = mpsc::sync_channel(1);
        {
            let mut keeper = lock(&KEEPER);
            let me = std::process::id();
            if keeper.as_ref().is_some_and(|(pid, _)| *pid == me)
                && HELD.load(Ordering::Relaxed) >= MOST_LANES
            {
                return Err(std::io::Error::other("this process made its most queue lanes").into());
            }
            if keeper.as_ref().is_some_and(|(pid, _)| *pid != me) {
                HELD.store(0, Ordering::Relaxed);
            }
            let sender = match keeper.as_ref() {
                Some((pid, s)) if *pid == me => s.clone(),
                _ => {
                    let (s, r) = mpsc::channel::<Request>();
                    std::thread::Builder::new()
                        .name("mproc-queue-lanes".into())
                        .spawn(move || keep(r))?;
                    *keeper = Some((me, s.clone()));
                    s
                }
            };
            sender
                .send((block, tx))
                .map_err(|_| std::io::Error::other("the queue lane keeper is gone"))?;
        }
        match rx.recv() {
            Ok(true) => {
                HELD.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            _ => Err(std::io::Error::other("cannot hold a queue lane's life lock").into()),
        }
    }

    fn keep(requests: mpsc::Receiver<Request>) {
        let mut held = Vec::new();
        for (block, reply) in requests {
            let ok = matches!(
                block.sys().lock(LIFE, None),
                Ok(Acquired::Clean) | Ok(Acquired::OwnerDied)
            );
            if ok {
                held.push(block);
            }
            let _ = reply.send(ok);
        }
        // Never reached while the process lives (the sender is kept in
        // KEEPER): the held mutexes go with the thread.
        std::mem::forget(held);
    }
}

#[cfg(test)]
mod tests;
