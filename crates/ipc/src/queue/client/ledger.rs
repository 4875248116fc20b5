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
/// item's mapped bytes ([`large`](crate::queue::large)).
pub(crate) struct Received {
    frame: Arc<Vec<u8>>,
    range: Range<usize>,
    sealed: Option<crate::sys::SealedView>,
}

impl Received {
    pub(super) fn new(frame: Arc<Vec<u8>>, range: Range<usize>) -> Received {
        Received {
            frame,
            range,
            sealed: None,
        }
    }

    /// A sealed item, mapped.
    pub(super) fn sealed(view: crate::sys::SealedView) -> Received {
        Received {
            frame: Arc::default(),
            range: 0..0,
            sealed: Some(view),
        }
    }

    /// The item's encoded bytes (empty if its range is not in the frame:
    /// the wire parser never makes one).
    pub(crate) fn bytes(&self) -> &[u8] {
        if let Some(view) = &self.sealed {
            return view.bytes();
        }
        self.frame.get(self.range.clone()).unwrap_or(&[])
    }
}

/// Small maps from connection id to a count.
#[derive(Debug, Default)]
struct Counts(Vec<(u64, u32)>);

impl Counts {
    fn add(&mut self, conn: u64, n: u32) {
        match self.0.iter_mut().find(|(c, _)| *c == conn) {
            Some((_, k)) => *k = k.saturating_add(n),
            None => self.0.push((conn, n)),
        }
    }

    fn sub(&mut self, conn: u64, n: u32) {
        if let Some(i) = self.0.iter().position(|(c, _)| *c == conn) {
            self.0[i].1 = self.0[i].1.saturating_sub(n);
            if self.0[i].1 == 0 {
                self.0.swap_remove(i);
            }
        }
    }

    fn get(&self, conn: u64) -> u32 {
        self.0
            .iter()
            .find(|(c, _)| *c == conn)
            .map_or(0, |(_, k)| *k)
    }

    fn take(&mut self, conn: u64) -> u32 {
        match self.0.iter().position(|(c, _)| *c == conn) {
            Some(i) => self.0.swap_remove(i).1,
            None => 0,
        }
    }

    fn conns(&self) -> Vec<u64> {
        self.0.iter().map(|(c, _)| *c).collect()
    }
}

/// An item received and not yet taken.
struct Buffered {
    conn: u64,
    item: Received,
    at: Instant,
}

/// Why a buffered item could not be handed out. Either way everything
/// buffered from its connection is dropped from the ledger (and its
/// parked connection with it): the broker puts it back when it sees that
/// connection end.
#[derive(Debug)]
pub(super) enum PopError {
    /// Its connection was not parked (a bug: never expected).
    Unparked,
    /// The acknowledgement could not be written.
    Ack(std::io::Error),
}

/// An item taken from the buffer (see [`Ledger::pop`]).
pub(super) struct Popped {
    pub(super) item: Received,
    /// The connection it came on.
    pub(super) conn: u64,
    /// Nothing else from `conn` is buffered: it goes back to the pool.
    pub(super) drained: bool,
}

/// Items received and not yet taken, and the connections they came on.
pub(super) struct Ledger<L> {
    buffer: VecDeque<Buffered>,
    /// Items in `buffer`, per connection.
    buffered: Counts,
    /// The connections the buffered items came on, by id.
    parked: Vec<(u64, L)>,
    /// When this process last took an item.
    last_take: Option<Instant>,
}

impl<L> Default for Ledger<L> {
    fn default() -> Self {
        Ledger {
            buffer: VecDeque::new(),
            buffered: Counts::default(),
            parked: Vec::new(),
            last_take: None,
        }
    }
}

impl<L> Ledger<L> {
    /// Whether no item is buffered.
    pub(super) fn is_empty(&self) -> bool {
        self.buffer.is_empty()
    }

    /// This process took an item at `now` (from the buffer or straight
    /// from a delivery): the janitor's clock.
    pub(super) fn taken_at(&mut self, now: Instant) {
        self.last_take = Some(now);
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
        self.buffered
            .add(conn, u32::try_from(extras.len()).unwrap_or(u32::MAX));
        for range in extras {
            self.buffer.push_back(Buffered {
                conn,
                item: Received::new(frame.clone(), range),
                at: now,
            });
        }
        self.parked.push((conn, link));
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
    pub(super) fn pop(
        &mut self,
        now: Instant,
        ack: impl FnOnce(&mut L, bool) -> std::io::Result<()>,
    ) -> Option<Result<Popped, PopError>> {
        let b = self.buffer.pop_front()?;
        self.last_take = Some(now);
        self.buffered.sub(b.conn, 1);
        let Some(i) = self.parked.iter().position(|(id, _)| *id == b.conn) else {
            self.forget(b.conn);
            return Some(Err(PopError::Unparked));
        };
        let last = self.buffered.get(b.conn) == 0;
        if let Err(e) = ack(&mut self.parked[i].1, last) {
            self.forget(b.conn);
            return Some(Err(PopError::Ack(e)));
        }
        Some(Ok(Popped {
            item: b.item,
            conn: b.conn,
            drained: last,
        }))
    }

    /// Takes parked connection `conn` out once it has nothing buffered
    /// (`None` if it is not parked, or still has items buffered).
    pub(super) fn unpark(&mut self, conn: u64) -> Option<L> {
        if self.buffered.get(conn) > 0 {
            return None;
        }
        let i = self.parked.iter().position(|(id, _)| *id == conn)?;
        Some(self.parked.swap_remove(i).1)
    }

    /// Drops everything buffered from `conn`, and its parked connection.
    fn forget(&mut self, conn: u64) {
        if let Some(i) = self.parked.iter().position(|(id, _)| *id == conn) {
            self.parked.swap_remove(i);
        }
        self.buffer.retain(|x| x.conn != conn);
        self.buffered.take(conn);
    }

    /// Takes parked connection `conn` back out, with its buffered items
    /// out of the buffer at once (a `get` meanwhile finds neither): the
    /// connection, and how many items it must give back. `None` when
    /// `conn` is not parked (its items were all taken meanwhile).
    pub(super) fn reclaim(&mut self, conn: u64) -> Option<(L, u32)> {
        let i = self.parked.iter().position(|(id, _)| *id == conn)?;
        let link = self.parked.swap_remove(i).1;
        Some((link, self.settle(conn)))
    }

    /// Takes every parked connection back out, each with how many
    /// buffered items it must give back; the buffer is then empty.
    pub(super) fn reclaim_all(&mut self) -> Vec<(L, u32)> {
        let links = std::mem::take(&mut self.parked);
        links
            .into_iter()
            .map(|(id, l)| (l, self.settle(id)))
            .collect()
    }

    /// Accounts for giving back everything buffered from `conn`: returns
    /// how many items that is.
    fn settle(&mut self, conn: u64) -> u32 {
        let returned = self.buffered.take(conn);
        if returned > 0 {
            self.buffer.retain(|b| b.conn != conn);
        }
        returned
    }

    /// The connections with buffered items.
    pub(super) fn conns(&self) -> Vec<u64> {
        self.buffered.conns()
    }

    /// Since when the oldest buffered item has waited with this process
    /// taking nothing (`None` when nothing is buffered): when it arrived,
    /// or this process's last take if later.
    pub(super) fn idle_since(&self) -> Option<Instant> {
        self.buffer
            .front()
            .map(|b| self.last_take.map_or(b.at, |t| t.max(b.at)))
    }
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
    fn take(l: &mut Ledger<Conn>, t: Instant, ack: Ack) -> (String, Option<Conn>) {
        let p = l.pop(t, ack).unwrap().unwrap();
        let drained = if p.drained { l.unpark(p.conn) } else { None };
        (text(&p.item), drained)
    }

    #[test]
    fn an_empty_ledger_has_nothing_to_pop_or_reap() {
        let mut l = Ledger::<Conn>::default();
        assert!(l.is_empty());
        assert!(l.pop(Instant::now(), ok).is_none());
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
        let (item, drained) = take(&mut l, t, record);
        assert_eq!(item, "b");
        assert!(drained.is_none(), "c is still buffered from 7");
        assert!(l.unpark(7).is_none(), "not while c is buffered");
        let (item, drained) = take(&mut l, t, record);
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
        assert!(l.pop(t, ok).is_none());
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
        let (a, d) = take(&mut l, t, ok);
        assert_eq!((a, d), ("a".into(), None));
        let (b, d) = take(&mut l, t, ok);
        assert_eq!((b, d.map(|c| c.id)), ("b".into(), Some(1)));
        let (c, d) = take(&mut l, t, ok);
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
        assert!(matches!(l.pop(t, broken), Some(Err(PopError::Ack(_)))));
        assert_eq!(l.conns(), vec![2]);
        assert!(l.reclaim(1).is_none(), "its connection is gone");
        let (c, d) = take(&mut l, t, ok);
        assert_eq!((c, d.map(|c| c.id)), ("c".into(), Some(2)));
        assert!(l.pop(t, ok).is_none());
    }

    // Never expected (`receive` parks what it buffers, `reclaim` takes
    // both out at once); if the two ever disagree, the item is refused,
    // never handed out unacknowledged.
    #[test]
    fn an_item_without_its_connection_is_refused_not_handed_out() {
        let t = Instant::now();
        let mut l = Ledger::default();
        deliver(&mut l, 3, "xab", t);
        deliver(&mut l, 4, "yc", t);
        l.parked.retain(|(id, _)| *id != 3);
        assert!(matches!(l.pop(t, ok), Some(Err(PopError::Unparked))));
        assert_eq!(l.conns(), vec![4], "the rest of 3 is dropped too");
        let (c, d) = take(&mut l, t, ok);
        assert_eq!((c, d.map(|c| c.id)), ("c".into(), Some(4)));
        assert!(l.pop(t, ok).is_none());
    }

    #[test]
    fn reclaiming_a_connection_gives_back_its_untaken_items() {
        let t = Instant::now();
        let mut l = Ledger::default();
        deliver(&mut l, 1, "xabc", t);
        deliver(&mut l, 2, "yd", t);
        take(&mut l, t, ok);
        let (link, returned) = l.reclaim(1).unwrap();
        assert_eq!((link.id, returned), (1, 2), "b and c go back");
        assert!(l.reclaim(1).is_none());
        // A get meanwhile finds only 2's item.
        let (d, _) = take(&mut l, t, ok);
        assert_eq!(d, "d");
        assert!(l.pop(t, ok).is_none());
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
        assert!(l.pop(t, ok).is_none());
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
        take(&mut l, t + ms(5), ok);
        assert_eq!(l.idle_since(), Some(t + ms(5)), "a take restarts it");
        l.taken_at(t + ms(9));
        assert_eq!(l.idle_since(), Some(t + ms(9)));
    }

    #[test]
    fn counts_add_sub_and_take_per_connection() {
        let mut c = Counts::default();
        assert_eq!(c.get(1), 0);
        c.add(1, 2);
        c.add(1, u32::MAX);
        assert_eq!(c.get(1), u32::MAX, "saturates");
        c.add(2, 1);
        c.sub(2, 5);
        assert_eq!(c.get(2), 0, "down to 0: gone");
        assert_eq!(c.conns(), vec![1]);
        c.sub(9, 1);
        assert_eq!(c.take(1), u32::MAX);
        assert_eq!(c.take(1), 0);
        assert!(c.conns().is_empty());
    }

    #[test]
    fn a_range_outside_its_frame_reads_as_empty() {
        let r = Received::new(Arc::new(b"ab".to_vec()), 1..9);
        assert_eq!(r.bytes(), b"");
    }
}
