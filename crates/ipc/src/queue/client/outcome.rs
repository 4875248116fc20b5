//! What an exchange with the broker comes to for the caller: the
//! broker's answer, its silence past the deadline, or its absence.
//!
//! Each request reads its answer through one of the functions below,
//! which says what the caller returns and whether the connection is still
//! in a known state ([`Answer::Done`]: back to the pool) or not
//! ([`Answer::Garbled`]: dropped, the broker puts back what it had in
//! flight there). A broker that answers out of turn (confused or hostile)
//! makes the call fail as if it were gone, never succeed wrongly.
//!
//! Plain functions of the parsed answer; the messages are the caller's.

use std::ops::Range;

use crate::queue::wire::{Malformed, Reply};
use crate::Error;

/// Any failure to talk to the broker: it is gone (or never answers again).
pub(super) fn gone(what: &str, e: impl std::fmt::Display) -> Error {
    tracing::debug!("queue broker unreachable ({what}): {e}");
    Error::Disconnected
}

/// Why a put failed (the caller hands the item back).
pub(crate) enum PutFail {
    Full,
    Encode(Error),
    Disconnected,
}

/// Why a timed exchange with the broker failed.
pub(crate) enum Late {
    /// The deadline passed first; the connection is in an unknown state.
    Late,
    /// The broker is gone (or the connection broke).
    Gone(Error),
}

impl Late {
    /// For an exchange without a timeout (`qsize`, `task_done`, `join`):
    /// a deadline passed means the connect gave up, the broker is gone.
    pub(super) fn into_error(self) -> Error {
        match self {
            Late::Late => Error::Disconnected,
            Late::Gone(e) => e,
        }
    }

    /// For a put: the owner did not answer in time is a timed-out put
    /// (CPython's `Full`).
    pub(super) fn for_put(self) -> PutFail {
        match self {
            Late::Late => PutFail::Full,
            Late::Gone(_) => PutFail::Disconnected,
        }
    }

    /// For a get: the owner did not answer in time is a timed-out get
    /// (CPython's `Empty`).
    pub(super) fn for_get(self) -> Error {
        match self {
            Late::Late => Error::Empty,
            Late::Gone(e) => e,
        }
    }
}

/// What an answer means.
#[derive(Debug, PartialEq)]
pub(super) enum Answer<T> {
    /// The request's outcome; the connection can be used again.
    Done(T),
    /// Not an answer to this request (shown in the log): the connection
    /// is dropped and the call fails as if the broker were gone.
    Garbled(String),
}

fn garbled<T>(reply: Result<Reply, Malformed>) -> Answer<T> {
    Answer::Garbled(format!("{reply:?}"))
}

/// The answer to `HELLO`: the connection's id, or the broker does not
/// know the queue (its owner let go of it).
pub(super) fn hello(reply: Result<Reply, Malformed>) -> Result<u64, Error> {
    match reply {
        Ok(Reply::HelloOk { conn }) => Ok(conn),
        Ok(Reply::NoQueue) => Err(gone("hello", "the broker does not know this queue")),
        other => Err(gone("hello", format!("{other:?}"))),
    }
}

/// The answer to `ACQUIRE`: how many places were granted (at least one;
/// a grant of none is not an answer), or the queue stayed full until the
/// timeout.
pub(super) fn acquire(reply: Result<Reply, Malformed>) -> Answer<Result<usize, PutFail>> {
    match reply {
        Ok(Reply::Granted(n)) if n >= 1 => Answer::Done(Ok(n as usize)),
        Ok(Reply::Full) => Answer::Done(Err(PutFail::Full)),
        other => garbled(other),
    }
}

/// The answer to `GET`: the items' ranges in the answer (at least one;
/// a delivery of none is not an answer), or the queue stayed empty until
/// the timeout.
pub(super) fn get(reply: Result<Reply, Malformed>) -> Answer<Result<Vec<Range<usize>>, Error>> {
    match reply {
        Ok(Reply::Items(ranges)) if !ranges.is_empty() => Answer::Done(Ok(ranges)),
        Ok(Reply::Empty) => Answer::Done(Err(Error::Empty)),
        other => garbled(other),
    }
}

/// An `ITEM_TAKEN` answer to `GET`: the one item's range.
pub(super) fn taken(reply: Result<Reply, Malformed>) -> Answer<Range<usize>> {
    match reply {
        Ok(Reply::Taken(range)) => Answer::Done(range),
        other => garbled(other),
    }
}

/// The answer to `QSIZE` (a count past `usize` saturates).
pub(super) fn qsize(reply: Result<Reply, Malformed>) -> Answer<usize> {
    match reply {
        Ok(Reply::Size(n)) => Answer::Done(usize::try_from(n).unwrap_or(usize::MAX)),
        other => garbled(other),
    }
}

/// The answer to `TASK_DONE`.
pub(super) fn task_done(reply: Reply) -> Result<(), Error> {
    match reply {
        Reply::Done => Ok(()),
        Reply::TooMany => Err(Error::TaskDoneTooManyTimes),
        other => Err(gone("task_done", format!("unexpected answer {other:?}"))),
    }
}

/// The answer to `JOIN`.
pub(super) fn join(reply: Reply) -> Result<(), Error> {
    match reply {
        Reply::Joined => Ok(()),
        other => Err(gone("join", format!("unexpected answer {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::wire;

    fn malformed() -> Result<Reply, Malformed> {
        wire::parse_reply(&[])
    }

    fn is_disconnected(e: &Error) -> bool {
        matches!(e, Error::Disconnected)
    }

    #[test]
    fn a_silent_owner_is_a_timeout_for_put_and_get_and_gone_otherwise() {
        assert!(matches!(Late::Late.for_put(), PutFail::Full));
        assert!(matches!(Late::Late.for_get(), Error::Empty));
        assert!(is_disconnected(&Late::Late.into_error()));
        let gone = || Late::Gone(Error::Disconnected);
        assert!(matches!(gone().for_put(), PutFail::Disconnected));
        assert!(is_disconnected(&gone().for_get()));
        assert!(is_disconnected(&gone().into_error()));
        // A get keeps the broker's own error (a refused key, say).
        assert!(matches!(Late::Gone(Error::Eof).for_get(), Error::Eof));
    }

    #[test]
    fn a_grant_is_at_least_one_place() {
        assert!(matches!(
            acquire(Ok(Reply::Granted(3))),
            Answer::Done(Ok(3))
        ));
        assert!(matches!(
            acquire(Ok(Reply::Granted(u32::MAX))),
            Answer::Done(Ok(n)) if n == u32::MAX as usize
        ));
        // A broker granting nothing must not let a put in without a place.
        assert!(matches!(acquire(Ok(Reply::Granted(0))), Answer::Garbled(_)));
    }

    // A full bounded queue: the put times out as `Full`, and the
    // connection is still good (the broker answered in turn).
    #[test]
    fn a_full_queue_is_full_and_keeps_the_connection() {
        assert!(matches!(
            acquire(Ok(Reply::Full)),
            Answer::Done(Err(PutFail::Full))
        ));
    }

    #[test]
    fn an_answer_out_of_turn_drops_the_connection() {
        assert!(matches!(acquire(Ok(Reply::Empty)), Answer::Garbled(_)));
        assert!(matches!(acquire(malformed()), Answer::Garbled(_)));
        assert!(matches!(get(Ok(Reply::Full)), Answer::Garbled(_)));
        assert!(matches!(get(Ok(Reply::Size(1))), Answer::Garbled(_)));
        assert!(matches!(get(malformed()), Answer::Garbled(_)));
        assert!(matches!(qsize(Ok(Reply::Granted(1))), Answer::Garbled(_)));
        assert!(matches!(qsize(malformed()), Answer::Garbled(_)));
        assert!(is_disconnected(&task_done(Reply::Joined).unwrap_err()));
        assert!(is_disconnected(&join(Reply::Done).unwrap_err()));
    }

    #[test]
    fn a_delivery_has_at_least_one_item() {
        assert!(matches!(
            get(Ok(Reply::Items(vec![2..5, 5..9]))),
            Answer::Done(Ok(r)) if r == vec![2..5, 5..9]
        ));
        assert!(matches!(get(Ok(Reply::Items(vec![]))), Answer::Garbled(_)));
        assert!(matches!(
            get(Ok(Reply::Empty)),
            Answer::Done(Err(Error::Empty))
        ));
    }

    #[test]
    fn sizes_saturate_and_joinable_answers_map() {
        assert_eq!(qsize(Ok(Reply::Size(7))), Answer::Done(7));
        assert_eq!(
            qsize(Ok(Reply::Size(u64::MAX))),
            Answer::Done(usize::try_from(u64::MAX).unwrap_or(usize::MAX))
        );
        assert!(task_done(Reply::Done).is_ok());
        assert!(matches!(
            task_done(Reply::TooMany),
            Err(Error::TaskDoneTooManyTimes)
        ));
        assert!(join(Reply::Joined).is_ok());
    }

    // The owner let go of the queue (or another queue's broker answers):
    // the holder's calls fail as disconnected.
    #[test]
    fn a_broker_that_does_not_know_the_queue_is_gone() {
        assert_eq!(hello(Ok(Reply::HelloOk { conn: 9 })).ok(), Some(9));
        assert!(is_disconnected(&hello(Ok(Reply::NoQueue)).unwrap_err()));
        assert!(is_disconnected(&hello(Ok(Reply::Synced)).unwrap_err()));
        assert!(is_disconnected(&hello(malformed()).unwrap_err()));
    }
}
