//! Deadlines of a holder's exchanges with the broker, and when to dial
//! again.
//!
//! A request with a timeout sends the broker that timeout; the broker
//! keeps it and answers by then. The holder waits for the answer until
//! the timeout plus a [`GRACE`]: past it, it gives up on the connection
//! whatever the owner is doing (stopped, swapped out, flooded), so a
//! timed call returns by then. A connection the broker drops before it
//! answered the `HELLO` (a broker flooded with pending handshakes drops
//! the oldest; one whose handshake took its peer too long under pressure
//! drops it) is dialled again, a little later each time ([`redial`]),
//! until the deadline: the broker lived when it accepted it, and a dead
//! owner shows on the next dial as nobody listening (refused, or no such
//! pipe), never as a count of drops.
//!
//! Plain arithmetic, no clock of its own: every function takes `now`.

use std::time::{Duration, Instant};

use crate::Error;

/// When a timed exchange with the broker gives up; `None` never.
pub(super) type Deadline = Option<Instant>;

/// How long after a request's own timeout the broker's answer is awaited
/// (the broker keeps the same timeout, so its answer is normally there
/// first).
pub(super) const GRACE: Duration = Duration::from_millis(200);

/// The longest pause between two dials (pauses of 1, 2, 4, … ms up to
/// this).
pub(super) const MOST_PAUSE: Duration = Duration::from_millis(512);

/// The deadline of an exchange that started at `now` with `timeout`: the
/// timeout and the [`GRACE`]. A timeout so large that the deadline is
/// past what the clock can tell is no deadline. (An exchange without a
/// timeout has none, and reads no clock.)
pub(super) fn deadline(timeout: Duration, now: Instant) -> Deadline {
    now.checked_add(timeout.saturating_add(GRACE))
}

/// How long is left of `deadline` at `now` (zero once it passed).
pub(super) fn remaining(deadline: Instant, now: Instant) -> Duration {
    deadline.saturating_duration_since(now)
}

/// What to do after dial `attempt` (0 for the first) was dropped by the
/// broker before it answered.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Redial {
    /// Dial again after this pause.
    After(Duration),
    /// The pause would reach the deadline: the exchange is late.
    Late,
}

/// Whether, and after what pause, to dial again at `now`.
pub(super) fn redial(attempt: u32, deadline: Deadline, now: Instant) -> Redial {
    let pause = Duration::from_millis(1u64 << attempt.min(20)).min(MOST_PAUSE);
    match (deadline, now.checked_add(pause)) {
        (Some(d), Some(then)) if then >= d => Redial::Late,
        (Some(_), None) => Redial::Late,
        _ => Redial::After(pause),
    }
}

/// Whether a failed connect or `HELLO` is the broker dropping a
/// connection before it answered (its list of pending handshakes was
/// full, or the handshake took too long while others waited): the broker
/// lived (it accepted the connection), dialling again may work.
pub(super) fn dropped_early(e: &Error) -> bool {
    match e {
        Error::Eof | Error::EofDuringMessage | Error::BrokenPipe => true,
        Error::Io(io) => matches!(
            io.kind(),
            std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::BrokenPipe
                | std::io::ErrorKind::UnexpectedEof
        ),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zero_timeout_still_waits_the_grace_for_the_answer() {
        // `get_nowait`/`put_nowait`: the broker answers at once; the
        // holder gives it the grace to arrive.
        let t = Instant::now();
        assert_eq!(deadline(Duration::ZERO, t), Some(t + GRACE));
        assert_eq!(
            deadline(Duration::from_secs(2), t),
            Some(t + Duration::from_secs(2) + GRACE)
        );
    }

    #[test]
    fn a_huge_timeout_is_no_deadline_not_a_panic() {
        let t = Instant::now();
        assert_eq!(deadline(Duration::MAX, t), None);
        assert_eq!(deadline(Duration::MAX - GRACE, t), None);
        assert_eq!(
            deadline(Duration::from_secs(u64::MAX / 2), t),
            t.checked_add(Duration::from_secs(u64::MAX / 2) + GRACE)
        );
    }

    #[test]
    fn remaining_time_never_goes_below_zero() {
        let t = Instant::now();
        let d = t + Duration::from_millis(5);
        assert_eq!(remaining(d, t), Duration::from_millis(5));
        assert_eq!(remaining(d, d), Duration::ZERO);
        assert_eq!(remaining(t, d), Duration::ZERO);
    }

    #[test]
    fn redials_back_off_and_never_give_up_on_their_own() {
        // Only the deadline (or a dial nobody answers) ends them.
        let t = Instant::now();
        let pause = |a| redial(a, None, t);
        assert_eq!(pause(0), Redial::After(Duration::from_millis(1)));
        assert_eq!(pause(1), Redial::After(Duration::from_millis(2)));
        assert_eq!(pause(9), Redial::After(MOST_PAUSE));
        assert_eq!(pause(10), Redial::After(MOST_PAUSE));
        assert_eq!(pause(u32::MAX), Redial::After(MOST_PAUSE));
    }

    #[test]
    fn a_redial_that_would_pass_the_deadline_is_late() {
        let t = Instant::now();
        let d = Some(t + Duration::from_millis(4));
        assert_eq!(redial(1, d, t), Redial::After(Duration::from_millis(2)));
        assert_eq!(redial(2, d, t), Redial::Late, "4 ms reaches it");
        assert_eq!(redial(0, Some(t), t), Redial::Late, "already past");
    }

    #[test]
    fn only_a_dropped_handshake_is_dialled_again() {
        use std::io::ErrorKind;
        let io = |kind: ErrorKind| Error::Io(kind.into());
        assert!(dropped_early(&Error::Eof));
        assert!(dropped_early(&Error::EofDuringMessage));
        assert!(dropped_early(&Error::BrokenPipe));
        assert!(dropped_early(&io(ErrorKind::ConnectionReset)));
        assert!(dropped_early(&io(ErrorKind::UnexpectedEof)));
        // Nobody listens (the owner died), a timeout, a closed queue: no.
        assert!(!dropped_early(&io(ErrorKind::ConnectionRefused)));
        assert!(!dropped_early(&io(ErrorKind::TimedOut)));
        assert!(!dropped_early(&Error::Empty));
        assert!(!dropped_early(&Error::Disconnected));
    }
}
