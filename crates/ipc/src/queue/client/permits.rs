//! Permits: places in a bounded queue the broker reserved for this
//! process (CPython's semaphore, counted on the owner's side).
//!
//! A put to a bounded queue first takes a permit. Without one, the
//! process asks the broker (`ACQUIRE`) for about as many as it used in the
//! last [`WINDOW`](super::prefetch::WINDOW) (at most `maxsize`); the
//! first of a grant is used at once, the rest are held.
//! Held permits go back when this process has used none for a while (the
//! [janitor](super::janitor)), when it asks the queue's size, at close and
//! exit, and, if it dies, when its feeder stream ends (the broker's side).
//!
//! Plain bookkeeping, no clock of its own: every method takes `now`.

use std::time::Instant;

use super::prefetch;

/// The permits this process holds for one queue.
#[derive(Debug, Default)]
pub(super) struct Permits {
    /// Held and unused.
    held: usize,
    /// When the last grant came and how many places it had.
    last_grant: Option<(Instant, usize)>,
    /// When one was last granted or used (the janitor's clock).
    active: Option<Instant>,
}

impl Permits {
    /// Uses a held permit, if there is one.
    pub(super) fn take(&mut self, now: Instant) -> bool {
        if self.held == 0 {
            return false;
        }
        self.held -= 1;
        self.active = Some(now);
        true
    }

    /// How many to ask the broker for, for a queue of `maxsize` (> 0):
    /// about what this process used in the last window, going by how fast
    /// it used the last grant; one after a pause, at most
    /// [`prefetch::permit_cap`]. Never more than a grant can hold (`u32`).
    pub(super) fn want(&self, now: Instant, maxsize: usize) -> u32 {
        let most = prefetch::permit_cap(maxsize);
        u32::try_from(prefetch::pace(self.last_grant, now, most)).unwrap_or(u32::MAX)
    }

    /// The broker granted `granted` (≥ 1) places: one is used at once by
    /// the put that asked, the rest are held. Returns whether some are
    /// held now for the janitor to watch.
    pub(super) fn granted(&mut self, now: Instant, granted: usize) -> bool {
        self.last_grant = Some((now, granted));
        if granted > 1 {
            self.held += granted - 1;
            self.active = Some(now);
            true
        } else {
            false
        }
    }

    /// A put that took a permit did not queue its item (it did not
    /// encode): the place is still this process's.
    pub(super) fn unused(&mut self, now: Instant) {
        self.held += 1;
        self.active = Some(now);
    }

    /// Takes every held permit out, to give back to the broker.
    pub(super) fn take_all(&mut self) -> usize {
        std::mem::take(&mut self.held)
    }

    /// Since when the held permits have gone unused (`None` when none is
    /// held: nothing for the janitor to give back).
    pub(super) fn idle_since(&self) -> Option<Instant> {
        match (self.held, self.active) {
            (0, _) | (_, None) => None,
            (_, Some(at)) => Some(at),
        }
    }
}

/// How a count of permits goes on the wire (a `RELEASE` carries a
/// `u32`): more than `u32::MAX` cannot be held (a grant is a `u32`, a
/// part of `maxsize`), but it saturates rather than wraps all the same.
pub(super) fn wire_count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn no_permit_held_means_asking_the_broker_for_one() {
        let t = Instant::now();
        let mut p = Permits::default();
        assert!(!p.take(t));
        assert_eq!(p.want(t, 1000), 1);
        assert_eq!(p.idle_since(), None);
        assert_eq!(p.take_all(), 0);
    }

    #[test]
    fn a_grant_is_used_once_then_held() {
        let t = Instant::now();
        let mut p = Permits::default();
        assert!(p.granted(t, 3));
        assert_eq!(p.idle_since(), Some(t));
        assert!(p.take(t + us(1)));
        assert_eq!(p.idle_since(), Some(t + us(1)), "a use restarts the clock");
        assert!(p.take(t + us(2)));
        assert!(!p.take(t + us(3)), "3 granted: the asker's and 2 held");
        assert_eq!(p.idle_since(), None, "none held: nothing to give back");
    }

    #[test]
    fn a_grant_of_one_holds_nothing_but_sets_the_pace() {
        let t = Instant::now();
        let mut p = Permits::default();
        assert!(!p.granted(t, 1));
        assert_eq!(p.idle_since(), None);
        assert!(!p.take(t));
        // One used in 1 µs: 500 per window, under the cap of 1000.
        assert_eq!(p.want(t + us(1), 1000), 500);
        assert_eq!(p.want(t + us(1), 40), 40, "capped at the whole queue");
    }

    #[test]
    fn small_bounded_queues_ask_for_their_pace_up_to_the_whole_queue() {
        let t = Instant::now();
        let mut p = Permits::default();
        p.granted(t, 1);
        // Used at once: the whole queue, however small.
        assert_eq!(p.want(t, 1), 1);
        assert_eq!(p.want(t, 3), 3);
        assert_eq!(p.want(t, 7), 7);
        // After a pause: one.
        assert_eq!(p.want(t + std::time::Duration::from_secs(1), 3), 1);
        assert_eq!(p.want(t, 0), 1, "a cap of 0 is taken as 1");
        assert_eq!(p.want(t, 16), 16);
    }

    #[test]
    fn a_huge_queue_asks_for_no_more_than_a_grant_holds() {
        let t = Instant::now();
        let mut p = Permits::default();
        p.granted(t, usize::MAX);
        assert_eq!(p.want(t, usize::MAX), u32::MAX);
        assert_eq!(wire_count(usize::MAX), u32::MAX);
        assert_eq!(wire_count(7), 7);
    }

    #[test]
    fn a_put_that_failed_to_encode_keeps_its_permit() {
        let t = Instant::now();
        let mut p = Permits::default();
        p.granted(t, 1);
        p.unused(t + us(4));
        assert_eq!(p.idle_since(), Some(t + us(4)));
        assert!(p.take(t + us(5)));
        assert!(!p.take(t + us(6)));
    }

    #[test]
    fn giving_back_takes_every_held_permit_once() {
        let t = Instant::now();
        let mut p = Permits::default();
        p.granted(t, 5);
        assert_eq!(p.take_all(), 4);
        assert_eq!(p.take_all(), 0);
        assert!(!p.take(t));
        assert_eq!(p.idle_since(), None);
    }
}
