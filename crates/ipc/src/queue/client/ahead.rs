//! Dialling ahead: a process that receives the handle of a queue another
//! process owns starts connecting to its broker at once, on a thread of
//! its own, so that its first `put` or `get` finds an authenticated
//! connection ready instead of paying the connect and the key's
//! challenge (three round trips through the broker's accept and
//! handshake threads, 0.5–3.6 ms each with 8 children dialling at once on
//! a loaded 2-core machine, docs/benchmarks.md "Small Queue items, 4P/4C").
//! A child handed a queue in its arguments thus dials while its target
//! starts, as a CPython child inherits the queue's pipe.
//!
//! Only the handshake is done ahead: the connection says nothing more
//! until its first user sends its `HELLO` (ops, feeder or handles
//! connection: the process does not know yet which it needs), so the
//! broker learns nothing of it but a proven key. The connection is used
//! once, by the first dial of the hold; later dials connect as before.
//!
//! A dial that finds one under way waits for it, by its own deadline: a
//! dial ahead stuck on a stopped owner never holds an operation past its
//! timeout (it then connects itself, by that same deadline, and is late
//! as before). A failed dial ahead leaves nothing: the operation dials
//! itself and sees the failure. At most [`MOST_AT_ONCE`] dials ahead run
//! in a process at a time (a process receiving many handles at once
//! dials the rest on first use).
//!
//! Plain bookkeeping, generic over the connection, as [`pool`](super::pool):
//! the thread and the dial are the caller's.

use crate::util::lock::{lock, wait, wait_timeout};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// Dials ahead under way in this process, at most.
pub(super) const MOST_AT_ONCE: usize = 4;

/// How long a dial ahead may take (connect and handshake): past it the
/// thread gives up and the first operation dials itself.
pub(super) const DEADLINE: Duration = Duration::from_secs(5);

/// Dials ahead under way in this process.
pub(super) static UNDER_WAY: AtomicUsize = AtomicUsize::new(0);

/// One of the [`MOST_AT_ONCE`] places of a count of dials under way
/// ([`UNDER_WAY`]), held by the dialling thread; given back when dropped.
#[derive(Debug)]
pub(super) struct Ticket(&'static AtomicUsize);

impl Ticket {
    fn take(under_way: &'static AtomicUsize) -> Option<Ticket> {
        under_way
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MOST_AT_ONCE).then_some(n + 1)
            })
            .ok()
            .map(|_| Ticket(under_way))
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Debug)]
enum Slot<C> {
    /// No dial ahead yet.
    Unstarted,
    Dialling,
    Ready(C),
    /// Used, failed, or not wanted any more: the hold dials itself.
    Done,
}

/// A hold's connection dialled ahead.
#[derive(Debug)]
pub(super) struct Ahead<C> {
    slot: Mutex<Slot<C>>,
    done: Condvar,
}

impl<C> Default for Ahead<C> {
    fn default() -> Self {
        Ahead {
            slot: Mutex::new(Slot::Unstarted),
            done: Condvar::new(),
        }
    }
}

impl<C> Ahead<C> {
    /// Starts a dial ahead, counted in `under_way`: its ticket, or `None`
    /// when this hold dialled ahead already or has dialled itself (it
    /// dials ahead once, before its first dial), or when too many are
    /// under way in this process.
    pub(super) fn begin(&self, under_way: &'static AtomicUsize) -> Option<Ticket> {
        let mut slot = lock(&self.slot);
        if !matches!(*slot, Slot::Unstarted) {
            return None;
        }
        let ticket = Ticket::take(under_way)?;
        *slot = Slot::Dialling;
        Some(ticket)
    }

    /// The dial ahead ended: with its connection, or `None` if it failed.
    pub(super) fn finish(&self, conn: Option<C>) {
        let mut slot = lock(&self.slot);
        if matches!(*slot, Slot::Dialling) {
            *slot = match conn {
                Some(c) => Slot::Ready(c),
                None => Slot::Done,
            };
        }
        drop(slot);
        self.done.notify_all();
    }

    /// The connection dialled ahead, once: waits for one under way until
    /// `deadline` (`None`: until it ends, which its own deadline bounds).
    /// `None`: dial now.
    pub(super) fn take(&self, deadline: Option<Instant>) -> Option<C> {
        let mut slot = lock(&self.slot);
        loop {
            match std::mem::replace(&mut *slot, Slot::Done) {
                Slot::Ready(c) => return Some(c),
                Slot::Unstarted | Slot::Done => return None,
                Slot::Dialling => *slot = Slot::Dialling,
            }
            slot = match deadline {
                None => wait(&self.done, slot),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return None;
                    }
                    wait_timeout(&self.done, slot, d - now).0
                }
            };
        }
    }

    /// Waits until no dial ahead is under way; whether one is ready (not
    /// used yet). Tests only.
    #[cfg(test)]
    pub(super) fn settled(&self) -> bool {
        let mut slot = lock(&self.slot);
        while matches!(*slot, Slot::Dialling) {
            slot = wait(&self.done, slot);
        }
        matches!(*slot, Slot::Ready(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A ticket from a count of the test's own (tests run at once).
    fn begin(a: &Ahead<u32>) -> Option<Ticket> {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        a.begin(&COUNT)
    }

    #[test]
    fn a_connection_dialled_ahead_is_used_once() {
        let a = Ahead::default();
        let t = begin(&a).expect("a ticket");
        a.finish(Some(7u32));
        drop(t);
        assert_eq!(a.take(None), Some(7));
        assert_eq!(a.take(None), None, "used: the next dial connects itself");
        assert!(begin(&a).is_none(), "a hold dials ahead only once");
    }

    #[test]
    fn nothing_dialled_ahead_means_dial_now() {
        let a = Ahead::<u32>::default();
        assert_eq!(a.take(Some(Instant::now())), None);
        assert_eq!(a.take(None), None);
        assert!(
            begin(&a).is_none(),
            "a hold that dialled itself does not dial ahead"
        );
    }

    #[test]
    fn a_failed_dial_ahead_leaves_nothing() {
        let a = Ahead::<u32>::default();
        let t = begin(&a).expect("a ticket");
        a.finish(None);
        drop(t);
        assert_eq!(a.take(None), None);
    }

    #[test]
    fn a_dial_waits_for_the_one_under_way() {
        let a = Arc::new(Ahead::<u32>::default());
        let t = begin(&a).expect("a ticket");
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = {
            let a = a.clone();
            std::thread::spawn(move || {
                tx.send(()).expect("main waits");
                a.take(None)
            })
        };
        rx.recv().expect("the waiter runs");
        // Whether the waiter already waits or not, it gets the connection.
        a.finish(Some(3));
        drop(t);
        assert_eq!(waiter.join().expect("no panic"), Some(3));
    }

    #[test]
    fn a_dial_under_way_never_holds_an_operation_past_its_deadline() {
        let a = Ahead::<u32>::default();
        let _t = begin(&a).expect("a ticket");
        // The dial ahead never ends (a stopped owner): a deadline already
        // passed, then a near one, both give up and dial themselves.
        assert_eq!(a.take(Some(Instant::now())), None);
        assert_eq!(
            a.take(Instant::now().checked_add(Duration::from_millis(1))),
            None
        );
        // A connection that arrives after its waiter gave up is there
        // for the next dial.
        a.finish(Some(9));
        assert_eq!(a.take(None), Some(9));
    }

    #[test]
    fn a_stray_finish_makes_no_connection_appear() {
        let a = Ahead::<u32>::default();
        a.finish(Some(1));
        assert_eq!(a.take(None), None);
    }

    #[test]
    fn at_most_a_few_dials_ahead_at_once() {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let holds: Vec<Ahead<u32>> = (0..MOST_AT_ONCE + 1).map(|_| Ahead::default()).collect();
        let mut tickets: Vec<Ticket> = holds[..MOST_AT_ONCE]
            .iter()
            .map(|a| a.begin(&COUNT).expect("a ticket"))
            .collect();
        let last = &holds[MOST_AT_ONCE];
        assert!(last.begin(&COUNT).is_none(), "too many under way");
        assert_eq!(last.take(None), None, "it dials itself");
        tickets.pop();
        let other = Ahead::<u32>::default();
        assert!(other.begin(&COUNT).is_some(), "a place is free again");
    }
}
