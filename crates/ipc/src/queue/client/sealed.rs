//! Sealed items on a holder's side (see [`large`]): a `GET` answered
//! `SEALED_ITEMS` brings a run of them, which this process copies out of
//! their objects at once (while the broker holds them in flight on the
//! connection), then hands out as a delivery of inline items is handed
//! out: the first now, the others from the [ledger](super::ledger), each
//! acknowledged before its `get` returns it. So one round trip brings
//! several, and their objects stay busy (the producer does not write them
//! again) until each is acknowledged, or given back with the rest; a
//! process killed with some buffered gives them back with its connection
//! (the broker never dropped their descriptors).

use std::sync::atomic::Ordering;
use std::sync::MutexGuard;
use std::time::{Duration, Instant};

use super::ledger::{Received, SealedRef};
use super::outcome::gone;
use super::prefetch::Extras;
use super::{Asked, Inbox, Link, Remote};
use crate::queue::large::{self, FetchError, Fetched};
use crate::queue::wire::{self, Reply};
use crate::tag::bulk::Shape;
use crate::util::lock::lock;
use crate::Result;

impl Remote {
    /// A `SEALED_ITEMS` answer on `link`: opens and reads the first item
    /// while they are all in flight there (the others are read when their
    /// turn comes, [`fetch_next`](Self::fetch_next)). An object that is
    /// not what the answer says is garbage, taken like an item that does
    /// not decode ([`Error::Decode`](crate::Error::Decode)); if it cannot
    /// be opened, they all go back (settled, seen by the broker, then the
    /// connection is dropped) and later connections take large items as
    /// bytes: the get asks again.
    pub(super) fn sealed(
        &self,
        link: Link,
        answer: &[u8],
        timeout: Option<Duration>,
        shape: Option<Shape>,
    ) -> Result<Asked> {
        let Ok(Reply::SealedItems { pid, items }) = wire::parse_reply(answer) else {
            return Err(gone("get", "malformed sealed items"));
        };
        let mut refs = items
            .iter()
            .map(|&(len, value)| SealedRef { pid, value, len });
        let Some(first) = refs.next() else {
            return Err(gone("get", "no sealed item in the answer"));
        };
        match read(first, shape) {
            Ok(first) => Ok(Asked::Sealed(link, first, refs.collect())),
            Err(e) => {
                self.unreachable(&e);
                let h = &self.holdings;
                // Back to the front, seen by the broker, before the get
                // asks again (on another connection): a dropped connection
                // would give them back only when the broker sees its end,
                // maybe after a later item answered the new request.
                lock(&h.inbox).returning += 1;
                let returned = u32::try_from(items.len()).unwrap_or(u32::MAX);
                let _ = h.settle_returned(link, returned, true);
                h.returned_back();
                self.ask(timeout, Vec::new(), shape)
            }
        }
    }

    /// Sealed items cannot be opened here (`e`): later connections take
    /// large items as bytes.
    fn unreachable(&self, e: &std::io::Error) {
        tracing::warn!("cannot open a sealed queue item ({e}): large items come as bytes");
        self.holdings.no_sealed.store(true, Ordering::Relaxed);
    }

    /// Reads the next buffered item if it is a sealed one (before it is
    /// acknowledged: the ack may free its object). `Ok(None)`: it is not;
    /// `Err`: it cannot be opened, and every buffered item went back to
    /// the broker (the get then asks it; `inbox` was released).
    pub(super) fn fetch_next<'a>(
        &self,
        inbox: MutexGuard<'a, Inbox>,
        shape: Option<Shape>,
    ) -> std::result::Result<(MutexGuard<'a, Inbox>, Option<Result<Fetched>>), ()> {
        let Some(next) = inbox.ledger.next_sealed() else {
            return Ok((inbox, None));
        };
        #[cfg(test)]
        let read = |r, shape| {
            if self
                .holdings
                .unreachable_once
                .swap(false, Ordering::Relaxed)
            {
                return Err(std::io::Error::from(std::io::ErrorKind::NotFound));
            }
            read(r, shape)
        };
        match read(next, shape) {
            Ok(fetched) => Ok((inbox, Some(fetched))),
            Err(e) => {
                drop(inbox);
                self.unreachable(&e);
                let h = &self.holdings;
                let parked = h.reclaim_all();
                let kept = h.give_back(parked, true);
                lock(&h.idle).give_back_all(kept);
                Err(())
            }
        }
    }

    /// Hands out the sealed item `first` (read) of a delivery on `link`
    /// as `sealed` makes it, and keeps the others (`extras`, unread) in
    /// the ledger (or gives them straight back when another thread of
    /// this process waits at the broker), as `get` does with a delivery
    /// of inline items. `first` is acknowledged before it is handed out.
    pub(super) fn hand_out_sealed<R>(
        &self,
        mut inbox: MutexGuard<'_, Inbox>,
        mut link: Link,
        (first, extras): (Result<Fetched>, Vec<SealedRef>),
        sealed: &impl Fn(Received) -> R,
    ) -> Result<R> {
        let h = &self.holdings;
        let first = hand(Some(first), sealed);
        let now = Instant::now();
        inbox.prefetch.delivered(now, 1 + extras.len());
        inbox.ledger.taken_at(now);
        match inbox.prefetch.extras(extras.len()) {
            Extras::None => {}
            Extras::GiveBack(n) => {
                // Another thread of this process waits at the broker:
                // the extras go back to the front, for it.
                inbox.returning += 1;
                drop(inbox);
                h.ack_and_give_back(link, n)?;
                return first;
            }
            Extras::Keep(_) => {
                // Buffered; each one's ack (and this first item's) is a
                // `SETTLE` (see [`ack_now`]).
                if let Err(e) = ack_now(&mut link, false) {
                    return Err(gone("ack", e));
                }
                inbox.ledger.receive_sealed(link.id, link, extras, now);
                h.janitor_watch(&mut inbox);
                return first;
            }
        }
        drop(inbox);
        // The only item: acknowledged before it is handed out.
        if let Err(e) = link.conn.send_bytes(&wire::settle(1, 0)) {
            return Err(gone("ack", e));
        }
        link.owed.sent_one_way();
        h.checkin(link);
        first
    }
}

/// Acknowledges a sealed item taken from `link`'s delivery with a
/// `SETTLE`, never on the ack page (which the broker reads only with the
/// connection's next message): the broker drops the item's descriptor at
/// once, and tells its producer the object is free again. (Acks on the
/// page freed a run's objects only once its last item was taken: a
/// consumer that fell behind then held up to a run of its producer's
/// objects, the producer ran out of them and made fresh ones, slower,
/// which let the consumer fall further behind.)
pub(super) fn ack_now(link: &mut Link, _last: bool) -> std::io::Result<()> {
    link.conn
        .send_bytes(&wire::settle(1, 0))
        .map_err(std::io::Error::other)?;
    link.owed.settled();
    Ok(())
}

/// A sealed item read (`Ok(Ok)`), refused as garbage (`Ok(Err)`: an
/// object that is not what the answer said, taken as an item that does
/// not decode), or out of reach (`Err`: it goes back).
type Read = std::result::Result<Result<Fetched>, std::io::Error>;

/// Opens and reads the sealed item `r` (see [`large::fetch`]).
fn read(r: SealedRef, shape: Option<Shape>) -> Read {
    match large::fetch(r.pid, r.value, r.len, shape) {
        Ok(fetched) => Ok(Ok(fetched)),
        Err(FetchError::Refused(e)) => {
            tracing::warn!("a sealed queue item was refused: {e}");
            Ok(Err(e))
        }
        Err(FetchError::Unreachable(e)) => Err(e),
    }
}

/// What `get` returns of a sealed item read (`None`: it was not read,
/// which [`fetch_next`](Remote::fetch_next) never lets happen).
pub(super) fn hand<R>(
    fetched: Option<Result<Fetched>>,
    sealed: &impl Fn(Received) -> R,
) -> Result<R> {
    match fetched {
        Some(Ok(f)) => Ok(sealed(Received::sealed(f))),
        Some(Err(e)) => Err(e),
        None => Err(gone("get", "a sealed item not read")),
    }
}
