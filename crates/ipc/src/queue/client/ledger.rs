//! The ack ledger: items this process received in a delivery and has not
//! taken yet, and the connections they came on.
//!
//! The extras of a delivery wait in a local buffer that later `get`s take
//! from, oldest first. The broker counts them in the queue until this
//! process acknowledges each one on the connection it came on, so that
//! connection is *parked* (out of the idle pool, no request uses it)
//! while any of its items is buffered: each take is acknowledged on its
//! own connection before `get` returns. When a delivery's last item is
//! taken its connection goes back to the pool. Buffered items that are
//! not taken go back to the broker (*settled*): when this process takes
//! nothing for a while (the [janitor](super::janitor)), at close, and, if
//! the process dies, when the broker sees the connection end.
//!
//! Plain bookkeeping, generic over the connection (`L`, a live `Link` in
//! the client): no I/O of its own, the acknowledgement is the caller's
//! closure.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

/// A received item: a range of the message it came in, or a sealed
/// item's bytes, copied out of its object ([`large`](crate::queue::large)).
pub(crate) struct Received {
    frame: Arc<Vec<u8>>,
    range: Range<usize>,
    sealed: Option<crate::queue::large::Fetched>,
}

impl Received {
    pub(super) fn new(frame: Arc<Vec<u8>>, range: Range<usize>) -> Received {
        Received {
            frame,
            range,
            sealed: None,
        }
    }

    /// A sealed item, read.
    pub(super) fn sealed(fetched: crate::queue::large::Fetched) -> Received {
        Received {
            frame: Arc::default(),
            range: 0..0,
            sealed: Some(fetched),
        }
    }

    /// The item's encoded bytes (empty if its range is not in the frame:
    /// the wire parser never makes one; and for a sealed item read as a
    /// byte sequence's body: see [`decode`](Self::decode)).
    pub(crate) fn bytes(&self) -> &[u8] {
        use crate::queue::large::Fetched;
        match &self.sealed {
            Some(Fetched::Payload(p)) => p,
            Some(Fetched::Body(..)) => &[],
            None => self.frame.get(self.range.clone()).unwrap_or(&[]),
        }
    }

    /// The item, decoded as a `T`.
    pub(crate) fn decode<T: serde::de::DeserializeOwned>(self) -> crate::Result<T> {
        match self.sealed {
            Some(crate::queue::large::Fetched::Body(shape, body)) => {
                crate::tag::bulk_value(shape, body)
            }
            _ => crate::tag::decode(self.bytes()),
        }
    }
}

/// One delivery's extras not yet taken, and the connection it came on
/// (parked: out of the idle pool while any of them is buffered, so a
/// connection has at most one delivery here).
struct Delivery<L> {
    conn: u64,
    link: L,
    frame: Arc<Vec<u8>>,
    items: Vec<Range<usize>>,
    /// A delivery of sealed items has these instead (its `items` empty):
    /// where each one is, still in its object.
    sealed: Vec<SealedRef>,
    /// The next item to hand out: `items[next..]` (or `sealed[next..]`)
    /// are buffered.
    next: usize,
    /// When it arrived.
    at: Instant,
}

impl<L> Delivery<L> {
    fn left(&self) -> usize {
        (self.items.len() + self.sealed.len()).saturating_sub(self.next)
    }
}

/// A sealed item of a delivery, still in its object (in flight on its
/// connection, so the broker holds its descriptor): where the holder
/// opens it, and its length. Read before it is acknowledged (the ack may
/// free the object for its producer): see [`Ledger::next_sealed`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct SealedRef {
    /// The broker's pid.
    pub(super) pid: u32,
    /// Its descriptor number there.
    pub(super) value: u64,
    pub(super) len: u64,
}

/// Why a buffered item could not be handed out: its acknowledgement could
/// not be written. Everything buffered from its connection is dropped
/// from the ledger (and its parked connection with it): the broker puts
/// it back when it sees that connection end.
#[derive(Debug)]
pub(super) enum PopError {
    /// The acknowledgement could not be written.
    Ack(std::io::Error),
}

/// An item taken from the buffer (see [`Ledger::pop_with`]): `R` is
/// what the caller's `read` made of its bytes.
pub(super) struct Popped<R = Received> {
    pub(super) item: R,
    /// The connection it came on.
    pub(super) conn: u64,
    /// Nothing else from `conn` is buffered: it goes back to the pool.
    pub(super) drained: bool,
}

/// Items received and not yet taken, and the connections they came on.
///
/// Kept per delivery (an item is a range of its delivery's frame), not
/// per item: taking one is an index step, with no per-item entry made
/// when the delivery arrives.
pub(super) struct Ledger<L> {
    /// In the order they arrived.
    deliveries: VecDeque<Delivery<L>>,
    /// Connections whose delivery was all taken, for the caller to take
    /// back to the pool ([`unpark`](Self::unpark)).
    drained: Vec<(u64, L)>,
    /// When this process last took an item, as far as it knows: a
    /// delivery sets it, and the janitor ([`observe`](Self::observe))
    /// moves it to its own clock when it sees `takes` grew. A take from
    /// the buffer reads no clock (it is the per-item path).
    last_take: Option<Instant>,
    /// Items taken from the buffer, ever.
    takes: u64,
    /// `takes` when [`observe`](Self::observe) last looked.
    seen_takes: u64,
}

impl<L> Default for Ledger<L> {
    fn default() -> Self {
        Ledger {
            deliveries: VecDeque::new(),
            drained: Vec::new(),
            last_take: None,
            takes: 0,
            seen_takes: 0,
        }
    }
}

impl<L> Ledger<L> {
    /// Whether no item is buffered.
    pub(super) fn is_empty(&self) -> bool {
        self.deliveries.iter().all(|d| d.left() == 0)
    }

    /// This process took an item at `now` (straight from a delivery):
    /// the janitor's clock.
    pub(super) fn taken_at(&mut self, now: Instant) {
        self.last_take = Some(now);
    }

    /// The janitor looks at `now`: if items were taken from the buffer
    /// since it last looked, the last take counts as `now`. So the last
    /// take is known late by at most the time between two looks, and the
    /// janitor, which looks at least once per
    /// [`HOLD_LIMIT`](super::janitor::HOLD_LIMIT) while items wait, gives
    /// them back between one and two hold limits after the last take —
    /// never sooner than one.
    pub(super) fn observe(&mut self, now: Instant) {
        if self.takes != self.seen_takes {
            self.seen_takes = self.takes;
            self.last_take = Some(self.last_take.map_or(now, |t| t.max(now)));
        }
    }

    /// The `extras` of a delivery on connection `conn` (`link`) wait in
    /// the buffer, in order, after what is there; `link` is parked until
    /// they are all taken or given back. The delivery's first item was
    /// handed out (and acknowledged) by the caller.
    pub(super) fn receive(
        &mut self,
        conn: u64,
        link: L,
        frame: &Arc<Vec<u8>>,
        extras: Vec<Range<usize>>,
        now: Instant,
    ) {
        self.deliveries.push_back(Delivery {
            conn,
            link,
            frame: frame.clone(),
            items: extras,
            sealed: Vec::new(),
            next: 0,
            at: now,
        });
    }

    /// [`receive`](Self::receive) for the `extras` of a delivery of
    /// sealed items: their objects stay in flight (busy for their
    /// producer) until each is read, acknowledged and taken, or given back
    /// with the rest.
    pub(super) fn receive_sealed(
        &mut self,
        conn: u64,
        link: L,
        extras: Vec<SealedRef>,
        now: Instant,
    ) {
        self.deliveries.push_back(Delivery {
            conn,
            link,
            frame: Arc::default(),
            items: Vec::new(),
            sealed: extras,
            next: 0,
            at: now,
        });
    }

    /// The item [`pop_with`](Self::pop_with) takes next, if it is a sealed
    /// one: the caller reads it first (the ack may free its object).
    pub(super) fn next_sealed(&self) -> Option<SealedRef> {
        let d = self.deliveries.iter().find(|d| d.left() > 0)?;
        d.sealed.get(d.next).copied()
    }

    /// Takes the oldest buffered item, acknowledging it on the connection
    /// it came on (`ack(link, last)`, `last` when it is the last buffered
    /// item of that connection) before handing it out: once `get` returns
    /// it, the broker has (or will read, before that connection's end)
    /// the ack, so it is never delivered again. `None` when nothing is
    /// buffered. On an error the item is not handed out ([`PopError`]).
    ///
    /// A connection with nothing else buffered ([`Popped::drained`]) is
    /// for the idle pool: the caller takes it out with
    /// [`unpark`](Self::unpark) under the same lock. (It is not returned
    /// here: a connection is a large value, and this is the per-item
    /// path.)
    ///
    /// No clock is read here (see [`observe`](Self::observe)).
    #[cfg(test)]
    pub(super) fn pop(
        &mut self,
        ack: impl FnOnce(&mut L, bool) -> std::io::Result<()>,
    ) -> Option<Result<Popped<Result<Received, SealedRef>>, PopError>> {
        self.pop_with(
            ack,
            |frame, range| Ok(Received::new(frame.clone(), range)),
            Err,
        )
    }

    /// [`pop`](Self::pop), the item handed to `read` (its delivery's
    /// frame and its range there) once acknowledged: a caller that
    /// decodes it right away takes no reference to the frame (`get`'s
    /// per-item path: no reference count touched per item). A sealed item
    /// is handed to `sealed` instead.
    pub(super) fn pop_with<R>(
        &mut self,
        ack: impl FnOnce(&mut L, bool) -> std::io::Result<()>,
        read: impl FnOnce(&Arc<Vec<u8>>, Range<usize>) -> R,
        sealed: impl FnOnce(SealedRef) -> R,
    ) -> Option<Result<Popped<R>, PopError>> {
        self.pop_by(ack, |d, at| match d.sealed.get(at) {
            Some(&t) => sealed(t),
            None => read(&d.frame, d.items.get(at).cloned().unwrap_or(0..0)),
        })
    }

    /// [`pop_with`](Self::pop_with) where the caller knows the next item
    /// is an inline one ([`next_sealed`](Self::next_sealed) said `None`):
    /// `get`'s per-item path, with nothing of sealed items in it. (A
    /// sealed item taken this way would be read as no bytes: garbage, not
    /// a fault.)
    #[inline]
    pub(super) fn pop_inline<R>(
        &mut self,
        ack: impl FnOnce(&mut L, bool) -> std::io::Result<()>,
        read: impl FnOnce(&Arc<Vec<u8>>, Range<usize>) -> R,
    ) -> Option<Result<Popped<R>, PopError>> {
        self.pop_by(ack, |d, at| {
            read(&d.frame, d.items.get(at).cloned().unwrap_or(0..0))
        })
    }

    /// The bookkeeping of a take: the oldest delivery with an item left
    /// gives its next one (index `at`, made into an `R` by `make`) once
    /// `ack` acknowledged it.
    #[inline]
    fn pop_by<R>(
        &mut self,
        ack: impl FnOnce(&mut L, bool) -> std::io::Result<()>,
        make: impl FnOnce(&Delivery<L>, usize) -> R,
    ) -> Option<Result<Popped<R>, PopError>> {
        let i = self.deliveries.iter().position(|d| d.left() > 0)?;
        let d = &mut self.deliveries[i];
        let at = d.next;
        d.next += 1;
        self.takes = self.takes.wrapping_add(1);
        let last = d.left() == 0;
        let conn = d.conn;
        if let Err(e) = ack(&mut d.link, last) {
            self.deliveries.remove(i);
            return Some(Err(PopError::Ack(e)));
        }
        let item = make(d, at);
        if last {
            if let Some(d) = self.deliveries.remove(i) {
                self.drained.push((conn, d.link));
            }
        }
        Some(Ok(Popped {
            item,
            conn,
            drained: last,
        }))
    }

    /// Takes parked connection `conn` out once it has nothing buffered
    /// (`None` if it is not parked, or still has items buffered).
    pub(super) fn unpark(&mut self, conn: u64) -> Option<L> {
        if let Some(i) = self.drained.iter().position(|(id, _)| *id == conn) {
            return Some(self.drained.swap_remove(i).1);
        }
        let i = self
            .deliveries
            .iter()
            .position(|d| d.conn == conn && d.left() == 0)?;
        self.deliveries.remove(i).map(|d| d.link)
    }

    /// Takes parked connection `conn` back out, with its buffered items
    /// out of the buffer at once (a `get` meanwhile finds neither): the
    /// connection, and how many items it must give back. `None` when
    /// `conn` is not parked (its items were all taken meanwhile).
    #[cfg(test)] // The client reclaims all at once (`reclaim_all`).
    pub(super) fn reclaim(&mut self, conn: u64) -> Option<(L, u32)> {
        if let Some(i) = self.deliveries.iter().position(|d| d.conn == conn) {
            let d = self.deliveries.remove(i)?;
            let n = count(d.left());
            return Some((d.link, n));
        }
        let i = self.drained.iter().position(|(id, _)| *id == conn)?;
        Some((self.drained.swap_remove(i).1, 0))
    }

    /// Takes every parked connection back out, each with how many
    /// buffered items it must give back; the buffer is then empty.
    pub(super) fn reclaim_all(&mut self) -> Vec<(L, u32)> {
        let deliveries = std::mem::take(&mut self.deliveries);
        let drained = std::mem::take(&mut self.drained);
        deliveries
            .into_iter()
            .map(|d| {
                let n = count(d.left());
                (d.link, n)
            })
            .chain(drained.into_iter().map(|(_, l)| (l, 0)))
            .collect()
    }

    /// The connections with buffered items.
    #[cfg(test)] // The client reclaims all at once (`reclaim_all`).
    pub(super) fn conns(&self) -> Vec<u64> {
        self.deliveries
            .iter()
            .filter(|d| d.left() > 0)
            .map(|d| d.conn)
            .collect()
    }

    /// Since when the oldest buffered item has waited with this process
    /// taking nothing (`None` when nothing is buffered): when it arrived,
    /// or this process's last take if later.
    pub(super) fn idle_since(&self) -> Option<Instant> {
        self.deliveries
            .iter()
            .find(|d| d.left() > 0)
            .map(|d| self.last_take.map_or(d.at, |t| t.max(d.at)))
    }
}

/// A count of items as the wire carries it.
fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A connection as the tests see it: its id and the acks written on
    /// it (`true` for a delivery's last item).
    #[derive(Debug, Default, PartialEq)]
    struct Conn {
        id: u64,
        acks: Vec<bool>,
    }

    fn conn(id: u64) -> Conn {
        Conn { id, acks: vec![] }
    }

    fn ok(_: &mut Conn, _: bool) -> std::io::Result<()> {
        Ok(())
    }

    fn record(c: &mut Conn, last: bool) -> std::io::Result<()> {
        c.acks.push(last);
        Ok(())
    }

    fn broken(_: &mut Conn, _: bool) -> std::io::Result<()> {
        Err(std::io::ErrorKind::BrokenPipe.into())
    }

    /// A delivery `"<first><extras…>"` of one-letter items.
    fn frame(s: &str) -> (Arc<Vec<u8>>, Vec<Range<usize>>) {
        let extras = (1..s.len()).map(|i| i..i + 1).collect();
        (Arc::new(s.as_bytes().to_vec()), extras)
    }

    fn deliver(l: &mut Ledger<Conn>, id: u64, s: &str, at: Instant) {
        let (f, extras) = frame(s);
        l.receive(id, conn(id), &f, extras, at);
    }

    fn text(r: &Received) -> String {
        String::from_utf8_lossy(r.bytes()).into_owned()
    }

    type Ack = fn(&mut Conn, bool) -> std::io::Result<()>;

    /// Takes an item as the client does: the item, and its connection
    /// once drained (out of the parking, for the pool).
    fn take(l: &mut Ledger<Conn>, ack: Ack) -> (String, Option<Conn>) {
        let p = l.pop(ack).unwrap().unwrap();
        let drained = if p.drained { l.unpark(p.conn) } else { None };
        let item = p.item.expect("an inline item");
        (text(&item), drained)
    }

    #[test]
    fn an_empty_ledger_has_nothing_to_pop_or_reap() {
        let mut l = Ledger::<Conn>::default();
        assert!(l.is_empty());
        assert!(l.pop(ok).is_none());
        assert_eq!(l.idle_since(), None);
        assert!(l.conns().is_empty());
        assert!(l.reclaim(1).is_none());
        assert!(l.reclaim_all().is_empty());
    }

    #[test]
    fn buffered_items_come_out_in_order_each_acked_on_its_connection() {
        let t = Instant::now();
        let mut l = Ledger::default();
        deliver(&mut l, 7, "abc", t);
        let (item, drained) = take(&mut l, record);
        assert_eq!(item, "b");
        assert!(drained.is_none(), "c is still buffered from 7");
        assert!(l.unpark(7).is_none(), "not while c is buffered");
        let (item, drained) = take(&mut l, record);
        assert_eq!(item, "c");
        // The last item's ack is the one the broker reads at once, and
        // the connection goes back to the pool with both acks on it.
        assert_eq!(
            drained,
            Some(Conn {
                id: 7,
                acks: vec![false, true]
            })
        );
        assert!(l.pop(ok).is_none());
        assert!(l.conns().is_empty());
        assert!(l.is_empty());
    }

    #[test]
    fn deliveries_on_two_connections_drain_separately() {
        let t = Instant::now();
        let mut l = Ledger::default();
        deliver(&mut l, 1, "xab", t);
        deliver(&mut l, 2, "yc", t);
        let mut conns = l.conns();
        conns.sort_unstable();
        assert_eq!(conns, vec![1, 2]);
        let (a, d) = take(&mut l, ok);
        assert_eq!((a, d), ("a".into(), None));
        let (b, d) = take(&mut l, ok);
        assert_eq!((b, d.map(|c| c.id)), ("b".into(), Some(1)));
        let (c, d) = take(&mut l, ok);
        assert_eq!((c, d.map(|c| c.id)), ("c".into(), Some(2)));
    }

    // A consumer whose connection broke while it held buffered items:
    // the item is not handed out (it was not acknowledged), everything
    // else from that connection leaves the ledger (the broker puts it
    // back when it sees the connection end), other connections' items
    // stay.
    #[test]
    fn a_failed_ack_hands_nothing_out_and_forgets_that_connection() {
        let t = Instant::now();
        let mut l = Ledger::default();
        deliver(&mut l, 1, "xab", t);
        deliver(&mut l, 2, "yc", t);
        assert!(matches!(l.pop(broken), Some(Err(PopError::Ack(_)))));
        assert_eq!(l.conns(), vec![2]);
        assert!(l.reclaim(1).is_none(), "its connection is gone");
        let (c, d) = take(&mut l, ok);
        assert_eq!((c, d.map(|c| c.id)), ("c".into(), Some(2)));
        assert!(l.pop(ok).is_none());
    }

    #[test]
    fn reclaiming_a_connection_gives_back_its_untaken_items() {
        let t = Instant::now();
        let mut l = Ledger::default();
        deliver(&mut l, 1, "xabc", t);
        deliver(&mut l, 2, "yd", t);
        take(&mut l, ok);
        let (link, returned) = l.reclaim(1).unwrap();
        assert_eq!((link.id, returned), (1, 2), "b and c go back");
        assert!(l.reclaim(1).is_none());
        // A get meanwhile finds only 2's item.
        let (d, _) = take(&mut l, ok);
        assert_eq!(d, "d");
        assert!(l.pop(ok).is_none());
    }

    #[test]
    fn closing_reclaims_every_parked_connection() {
        let t = Instant::now();
        let mut l = Ledger::default();
        deliver(&mut l, 1, "xab", t);
        deliver(&mut l, 2, "yc", t);
        let mut all: Vec<(u64, u32)> = l
            .reclaim_all()
            .into_iter()
            .map(|(c, n)| (c.id, n))
            .collect();
        all.sort_unstable();
        assert_eq!(all, vec![(1, 2), (2, 1)]);
        assert!(l.pop(ok).is_none());
        assert_eq!(l.idle_since(), None);
        assert!(l.reclaim_all().is_empty());
    }

    #[test]
    fn the_janitor_clock_starts_at_arrival_or_the_last_take() {
        let t = Instant::now();
        let ms = Duration::from_millis;
        let mut l = Ledger::default();
        l.taken_at(t);
        deliver(&mut l, 1, "xabc", t + ms(1));
        assert_eq!(l.idle_since(), Some(t + ms(1)), "arrived after the take");
        l.observe(t + ms(3));
        assert_eq!(l.idle_since(), Some(t + ms(1)), "nothing taken yet");
        take(&mut l, ok);
        assert_eq!(l.idle_since(), Some(t + ms(1)), "a take reads no clock");
        l.observe(t + ms(5));
        assert_eq!(l.idle_since(), Some(t + ms(5)), "seen by the janitor");
        l.observe(t + ms(7));
        assert_eq!(l.idle_since(), Some(t + ms(5)), "no take since");
        l.taken_at(t + ms(9));
        assert_eq!(l.idle_since(), Some(t + ms(9)));
        // A clock that went back never moves the last take back.
        take(&mut l, ok);
        l.observe(t + ms(8));
        assert_eq!(l.idle_since(), Some(t + ms(9)));
    }

    // Taking a delivery's last item parks its connection for `unpark`;
    // until then `reclaim` finds it with nothing to give back, and it is
    // never counted as buffered.
    #[test]
    fn a_drained_connection_waits_for_unpark_with_nothing_buffered() {
        let t = Instant::now();
        let mut l = Ledger::default();
        deliver(&mut l, 1, "xa", t);
        deliver(&mut l, 2, "yb", t);
        let p = l.pop(ok).unwrap().unwrap();
        assert!(p.drained);
        assert_eq!(l.conns(), vec![2]);
        assert!(!l.is_empty());
        assert!(l.unpark(2).is_none(), "b is still buffered");
        let (link, returned) = l.reclaim(1).unwrap();
        assert_eq!((link.id, returned), (1, 0));
        let p = l.pop(ok).unwrap().unwrap();
        assert!(p.drained && l.is_empty());
        assert_eq!(l.idle_since(), None);
        let all: Vec<(u64, u32)> = l
            .reclaim_all()
            .into_iter()
            .map(|(c, n)| (c.id, n))
            .collect();
        assert_eq!(all, vec![(2, 0)]);
        assert!(l.unpark(2).is_none());
    }

    #[test]
    fn a_range_outside_its_frame_reads_as_empty() {
        let r = Received::new(Arc::new(b"ab".to_vec()), 1..9);
        assert_eq!(r.bytes(), b"");
    }
}
