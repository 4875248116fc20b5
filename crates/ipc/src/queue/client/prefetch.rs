//! How many items (or permits) to ask the broker for at once.
//!
//! A process that takes items quickly asks for a few at a time: about as
//! many as it went through in the last [`WINDOW`], judged by how fast it
//! went through the last delivery. After a pause (or at first) it asks
//! for one, so a slow consumer never holds items the others could take.
//! The same pacing sizes a producer's permit requests
//! ([`permits`](super::permits)).
//!
//! Plain bookkeeping, no clock of its own: every method takes `now`.

use std::time::{Duration, Instant};

/// A delivery holds about what this process takes in this long.
pub(super) const WINDOW: Duration = Duration::from_micros(500);

/// At most this many items are asked for at once.
pub(super) const MOST: u32 = 1024;

/// About what was used in the last [`WINDOW`], going by how fast the
/// last batch (`n` items, come at `at`) was used up by `now`: at least 1,
/// at most `most` (at least 1 too). `None` (no batch yet) is 1.
pub(super) fn pace(last: Option<(Instant, usize)>, now: Instant, most: usize) -> usize {
    let Some((at, n)) = last else {
        return 1;
    };
    // A batch used up "at once" counts as used in 0.1 µs: a high rate,
    // capped by `most`, never a division by zero.
    let spent = now.saturating_duration_since(at).as_secs_f64().max(1e-7);
    let rate = n as f64 / spent;
    (rate * WINDOW.as_secs_f64()).clamp(1.0, most.max(1) as f64) as usize
}

/// The largest delivery a bounded queue of `maxsize` allows (`None` for
/// an unbounded one, `maxsize == 0`): the whole queue. What one process
/// gets is kept to what it uses by the [`pace`] (what it took in the last
/// [`WINDOW`]: one after a pause), the broker's even share among the gets
/// waiting, and the janitor (extras go back 50–100 ms after the last
/// take). A quarter of `maxsize` (before issue 12 item 11's third pass)
/// cost a round trip per 4 items of a `Queue(16)` and kept its producers
/// and consumers in lockstep (docs/benchmarks.md, "Bounded queues:
/// ack on send and whole-queue batches").
pub(super) fn bounded_cap(maxsize: usize) -> Option<usize> {
    (maxsize > 0).then_some(maxsize)
}

/// Below this `maxsize` a put with no permit carries its item in its
/// request for room (`PUT_WAIT`): the broker stores it in the first place
/// it grants.
pub(super) const CARRY_BELOW: usize = 8;

/// Whether a put with no permit to a bounded queue of `maxsize` carries
/// its item in its request for room (see [`CARRY_BELOW`]).
pub(super) fn carries(maxsize: usize) -> bool {
    maxsize < CARRY_BELOW
}

/// The largest grant of permits a process asks for, to a bounded queue
/// of `maxsize` (> 0): the whole queue, kept to what the process uses by
/// the pace (see [`Permits::want`](super::permits::Permits::want)) and
/// given back 50–100 ms after its last put if unused. A small queue's
/// `PUT_WAIT` asks for as many: the broker stores its item in the first
/// place and the rest are held. (Below `maxsize` 8 it used to be one
/// place per `PUT_WAIT`: a round trip per item, with the queue empty most
/// of the time; docs/benchmarks.md, "Bounded queues, fourth pass".)
pub(super) fn permit_cap(maxsize: usize) -> usize {
    maxsize
}

/// The prefetch of `get`: when the last delivery came, and how many
/// threads of this process wait at the broker right now.
#[derive(Debug, Default)]
pub(super) struct Prefetch {
    /// When the last delivery came and how many items it had.
    last_delivery: Option<(Instant, usize)>,
    /// Threads of this process waiting for the broker's answer to a get.
    at_broker: usize,
}

impl Prefetch {
    /// A thread found the local buffer empty and goes to the broker.
    /// Counted from that moment: extras another thread receives meanwhile
    /// go back to the broker, where this thread's request can get them.
    pub(super) fn leave_for_broker(&mut self) {
        self.at_broker += 1;
    }

    /// A thread is back from the broker (with or without items).
    pub(super) fn back_from_broker(&mut self) {
        self.at_broker = self.at_broker.saturating_sub(1);
    }

    /// How many items a thread at the broker asks for (`maxsize` of the
    /// queue, `0` unbounded): about what this process took in the last
    /// [`WINDOW`], at most [`MOST`] and a bounded queue's
    /// [`bounded_cap`]; one when other threads of this process wait there
    /// too (the extras would only go straight back).
    pub(super) fn want(&self, now: Instant, maxsize: usize) -> u32 {
        let alone = self.at_broker <= 1;
        let most = if alone {
            pace(self.last_delivery, now, MOST as usize) as u32
        } else {
            1
        };
        match bounded_cap(maxsize) {
            Some(cap) => most.min(u32::try_from(cap).unwrap_or(u32::MAX)),
            None => most,
        }
    }

    /// A delivery of `n` items came at `now` (counted even if its extras
    /// go straight back: it measures the pace).
    pub(super) fn delivered(&mut self, now: Instant, n: usize) {
        self.last_delivery = Some((now, n));
    }

    /// What becomes of the `extras` items of a delivery beyond the one
    /// the receiving thread takes: none; kept in the local buffer; or,
    /// when another thread of this process already waits at the broker,
    /// straight back (to the front of the queue) for it.
    pub(super) fn extras(&self, extras: usize) -> Extras {
        let n = u32::try_from(extras).unwrap_or(u32::MAX);
        match (n, self.at_broker) {
            (0, _) => Extras::None,
            (n, 0) => Extras::Keep(n),
            (n, _) => Extras::GiveBack(n),
        }
    }
}

/// What becomes of a delivery's extra items (see [`Prefetch::extras`]).
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Extras {
    /// A delivery of one item.
    None,
    /// This many wait in the local buffer.
    Keep(u32),
    /// This many go back to the broker at once.
    GiveBack(u32),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn pace_is_one_at_first_and_after_a_pause() {
        let t = Instant::now();
        assert_eq!(pace(None, t, 1024), 1);
        // 10 items used in 1 s: far less than one per window.
        assert_eq!(pace(Some((t, 10)), t + Duration::from_secs(1), 1024), 1);
        // A full batch an hour ago is one now.
        assert_eq!(
            pace(Some((t, 1024)), t + Duration::from_secs(3600), 1024),
            1
        );
    }

    #[test]
    fn pace_follows_the_rate_of_the_last_batch() {
        let t = Instant::now();
        // 100 items in 100 µs: 1 per µs, 500 per 500 µs window.
        assert_eq!(pace(Some((t, 100)), t + us(100), 1024), 500);
        // 100 items in 1000 µs: 50 per window.
        assert_eq!(pace(Some((t, 100)), t + us(1000), 1024), 50);
    }

    #[test]
    fn pace_is_capped_even_for_a_batch_used_at_once() {
        let t = Instant::now();
        // No time passed (or a clock that went back): the cap, no panic.
        assert_eq!(pace(Some((t, 8)), t, 1024), 1024);
        assert_eq!(pace(Some((t + us(5), 8)), t, 16), 16);
        // A cap of 0 is taken as 1; an empty batch asks for 1.
        assert_eq!(pace(Some((t, 8)), t, 0), 1);
        assert_eq!(pace(Some((t, 0)), t + us(1), 1024), 1);
    }

    #[test]
    fn a_bounded_queue_caps_a_batch_at_the_whole_queue() {
        assert_eq!(bounded_cap(0), None);
        assert_eq!(bounded_cap(1), Some(1));
        assert_eq!(bounded_cap(3), Some(3));
        assert_eq!(bounded_cap(16), Some(16));
        assert_eq!(bounded_cap(usize::MAX), Some(usize::MAX));
    }

    #[test]
    fn permits_come_up_to_the_whole_queue_and_small_queues_carry() {
        assert_eq!(permit_cap(1), 1);
        assert_eq!(permit_cap(3), 3);
        assert_eq!(permit_cap(7), 7);
        assert_eq!(permit_cap(8), 8);
        assert_eq!(permit_cap(16), 16);
        assert_eq!(permit_cap(usize::MAX), usize::MAX);
        assert!(carries(1) && carries(3) && carries(7));
        assert!(!carries(8) && !carries(16));
    }

    #[test]
    fn a_lone_getter_asks_for_its_pace_capped() {
        let t = Instant::now();
        let mut p = Prefetch::default();
        p.leave_for_broker();
        assert_eq!(p.want(t, 0), 1, "first get: one item");
        p.delivered(t, 100);
        assert_eq!(p.want(t + us(100), 0), 500);
        assert_eq!(p.want(t, 0), MOST, "unbounded: at most MOST");
        assert_eq!(p.want(t, 16), 16, "Queue(16): the whole queue");
        assert_eq!(p.want(t, 1), 1, "Queue(1): one");
        assert_eq!(p.want(t, usize::MAX), MOST);
    }

    #[test]
    fn getters_waiting_together_ask_for_one_each_and_give_extras_back() {
        let t = Instant::now();
        let mut p = Prefetch::default();
        p.delivered(t, 1000);
        p.leave_for_broker();
        p.leave_for_broker();
        assert_eq!(p.want(t, 0), 1);
        // The first one back with extras: the other still waits there.
        p.back_from_broker();
        assert_eq!(p.extras(3), Extras::GiveBack(3));
        assert_eq!(p.extras(0), Extras::None);
        p.back_from_broker();
        assert_eq!(p.extras(3), Extras::Keep(3));
        assert_eq!(p.extras(0), Extras::None);
        assert_eq!(p.want(t, 0), MOST, "alone again: its pace");
        // An unmatched return never wraps around.
        p.back_from_broker();
        assert_eq!(p.extras(1), Extras::Keep(1));
    }
}
