//! The janitor's decisions: what to give back to the broker, and when.
//!
//! A process that stops taking (or putting) must not keep items (or room)
//! from the others: the janitor thread gives back the buffered items once
//! this process has taken none for [`HOLD_LIMIT`], and the held permits
//! once it has used none for as long. It sleeps while there is nothing to
//! watch; a `get` that buffers items or a put that holds permits wakes it
//! (or starts it, the first time).
//!
//! Plain decisions, no thread or clock of their own: the loop in the
//! client calls [`next`] with `now`.

use std::time::{Duration, Instant};

/// Buffered items (and held permits) go back to the queue for the others
/// when this process has taken (used) none for this long.
pub(super) const HOLD_LIMIT: Duration = Duration::from_millis(50);

/// Once it had something to watch, the janitor keeps looking (every
/// [`HOLD_LIMIT`]) for this long before it sleeps until woken: a process
/// that buffers items or holds permits again and again (a consumer's
/// every delivery, a producer's every grant) then wakes no thread for it.
pub(super) const LINGER: Duration = Duration::from_secs(1);

/// What the janitor does next.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Chore {
    /// Nothing to watch: wait until woken.
    Sleep,
    /// Something comes due then: wait until then (or woken).
    WaitUntil(Instant),
    /// Give back now the buffered items (`items`) and/or the held
    /// permits (`permits`).
    Reap { items: bool, permits: bool },
}

/// The janitor's next chore at `now`, given since when the buffered items
/// have waited untaken (`items_idle`, `None`: none buffered) and the held
/// permits unused (`permits_idle`, `None`: none held).
pub(super) fn next(
    items_idle: Option<Instant>,
    permits_idle: Option<Instant>,
    now: Instant,
) -> Chore {
    let items_due = items_idle.map(|t| t + HOLD_LIMIT);
    let permits_due = permits_idle.map(|t| t + HOLD_LIMIT);
    match items_due.into_iter().chain(permits_due).min() {
        None => Chore::Sleep,
        Some(due) if due > now => Chore::WaitUntil(due),
        Some(_) => Chore::Reap {
            items: items_due.is_some_and(|d| d <= now),
            permits: permits_due.is_some_and(|d| d <= now),
        },
    }
}

/// What it takes to have the janitor watch something new.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Call {
    /// Start its thread (the first time).
    Start,
    /// Wake it: it sleeps with nothing to watch.
    Wake,
    /// Nothing: it is awake and sees the change when it next looks.
    None,
}

/// The janitor thread's life: started, asleep with nothing to watch,
/// told to stop.
#[derive(Debug, Default)]
pub(super) struct Janitor {
    started: bool,
    idle: bool,
    stop: bool,
    /// It keeps looking until then (see [`LINGER`]).
    linger_until: Option<Instant>,
}

impl Janitor {
    /// Something new to watch (items buffered, permits held): what to do
    /// so the janitor sees it. `Start` is returned once.
    pub(super) fn watch(&mut self) -> Call {
        if !self.started {
            self.started = true;
            Call::Start
        } else if self.idle {
            Call::Wake
        } else {
            Call::None
        }
    }

    /// The thread goes to sleep with nothing to watch (`true`) or wakes
    /// (`false`).
    pub(super) fn set_idle(&mut self, idle: bool) {
        self.idle = idle;
    }

    /// The thread found something to watch at `now`: it lingers for
    /// [`LINGER`] once there is nothing left.
    pub(super) fn busy(&mut self, now: Instant) {
        self.linger_until = now.checked_add(LINGER);
    }

    /// Nothing to watch at `now`: when to look again without being woken
    /// (while it lingers), or `None`: sleep until woken.
    pub(super) fn linger(&self, now: Instant) -> Option<Instant> {
        let until = self.linger_until.filter(|&t| t > now)?;
        Some(now.checked_add(HOLD_LIMIT).map_or(until, |t| t.min(until)))
    }

    /// The queue's last handle in this process is gone: the thread ends.
    pub(super) fn stop(&mut self) {
        self.stop = true;
    }

    pub(super) fn stopped(&self) -> bool {
        self.stop
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn nothing_buffered_or_held_means_sleep() {
        assert_eq!(next(None, None, Instant::now()), Chore::Sleep);
    }

    #[test]
    fn items_are_given_back_after_the_hold_limit_not_before() {
        let t = Instant::now();
        assert_eq!(next(Some(t), None, t), Chore::WaitUntil(t + HOLD_LIMIT));
        assert_eq!(
            next(Some(t), None, t + HOLD_LIMIT - ms(1)),
            Chore::WaitUntil(t + HOLD_LIMIT)
        );
        let reap = Chore::Reap {
            items: true,
            permits: false,
        };
        assert_eq!(next(Some(t), None, t + HOLD_LIMIT), reap);
        assert_eq!(next(Some(t), None, t + ms(3_600_000)), reap);
    }

    #[test]
    fn permits_are_given_back_after_the_hold_limit_not_before() {
        let t = Instant::now();
        assert_eq!(next(None, Some(t), t), Chore::WaitUntil(t + HOLD_LIMIT));
        assert_eq!(
            next(None, Some(t), t + HOLD_LIMIT),
            Chore::Reap {
                items: false,
                permits: true
            }
        );
    }

    #[test]
    fn the_earlier_deadline_wakes_it_and_only_what_is_due_goes() {
        let t = Instant::now();
        // Items idle since t, permits since t + 20 ms.
        assert_eq!(
            next(Some(t), Some(t + ms(20)), t),
            Chore::WaitUntil(t + HOLD_LIMIT)
        );
        assert_eq!(
            next(Some(t + ms(20)), Some(t), t),
            Chore::WaitUntil(t + HOLD_LIMIT)
        );
        assert_eq!(
            next(Some(t), Some(t + ms(20)), t + HOLD_LIMIT),
            Chore::Reap {
                items: true,
                permits: false
            }
        );
        assert_eq!(
            next(Some(t), Some(t + ms(20)), t + HOLD_LIMIT + ms(20)),
            Chore::Reap {
                items: true,
                permits: true
            }
        );
    }

    // A process that keeps taking never has its buffer reaped: each take
    // moves `items_idle` (the ledger's clock) forward.
    #[test]
    fn a_busy_consumer_keeps_its_buffer() {
        let t = Instant::now();
        for k in 0..100 {
            let take = t + ms(10 * k);
            assert!(matches!(
                next(Some(take), None, take + ms(10)),
                Chore::WaitUntil(_)
            ));
        }
    }

    #[test]
    fn the_thread_starts_once_and_is_woken_only_when_asleep() {
        let mut j = Janitor::default();
        assert!(!j.stopped());
        assert_eq!(j.watch(), Call::Start);
        assert_eq!(j.watch(), Call::None, "running: it looks again by itself");
        j.set_idle(true);
        assert_eq!(j.watch(), Call::Wake);
        j.set_idle(false);
        assert_eq!(j.watch(), Call::None);
        j.stop();
        assert!(j.stopped());
    }

    // After something to watch, the thread keeps looking for LINGER
    // (every HOLD_LIMIT at most), awake: a new hold meanwhile wakes
    // nothing; then it sleeps until woken.
    #[test]
    fn the_thread_lingers_awake_after_work_then_sleeps() {
        let t = Instant::now();
        let mut j = Janitor::default();
        assert_eq!(j.watch(), Call::Start);
        assert_eq!(j.linger(t), None, "never busy: sleep");
        j.busy(t);
        assert_eq!(j.linger(t), Some(t + HOLD_LIMIT));
        assert_eq!(j.watch(), Call::None, "lingering: not asleep");
        assert_eq!(
            j.linger(t + LINGER - ms(10)),
            Some(t + LINGER),
            "never past the end of the linger"
        );
        assert_eq!(j.linger(t + LINGER), None, "then it sleeps");
        j.set_idle(true);
        assert_eq!(j.watch(), Call::Wake);
    }
}
