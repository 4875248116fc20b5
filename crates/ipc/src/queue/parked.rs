//! Parked requests: a `GET` or `ACQUIRE` of another process that the
//! queue cannot answer yet, answered by whichever broker thread makes it
//! answerable, with no wake-up of the connection's own thread.
//!
//! Without parking, a blocking request waits on a condition variable in
//! its connection's thread: an item arriving (on a producer's feeder
//! stream) or room freed (by a consumer's `SETTLE`) wakes that thread,
//! which then writes the answer — one more thread switch on the path of
//! every item through a small bounded queue, where each put waits for
//! room and each get for an item. Parked, the request is in a list of the
//! queue's state ([`Core`](super::core)); the thread that stores the item
//! or frees the room takes what the request gets under the queue's lock
//! (the items are counted in flight, the room is reserved for its
//! session, exactly as the waiting thread would have) and, after the
//! lock, writes the answer on the request's connection itself — having
//! first moved the items into that connection's in-flight record
//! ([`Shared::answer_items`], as the connection's own thread does), so
//! no ack can come for them before they are recorded.
//!
//! It writes only when the write cannot block whatever the holder does
//! ([`sys::room_now`]: a local stream socket with room for the whole
//! answer, which a holder that reads its answers always has — it sends a
//! request only after reading the answer to the previous one). Otherwise
//! (a large answer, TCP, a holder that does not read) it hands what it
//! took to the connection's thread, woken through a pipe of its own, which
//! writes as before: a stalled holder only ever stalls its own
//! connection's thread.
//!
//! The connection's thread meanwhile waits ([`Parker::wait`]) for its
//! connection (the holder sends nothing while its request waits: anything
//! readable is its end), its wake-up pipe and the request's deadline. At
//! the deadline, or at the holder's end, it takes the request out of the
//! list under the queue's lock — unless it was served meanwhile, and then
//! the answer stands (or it writes it). A holder that dies after being
//! served is the broker's ordinary case: what was in flight on its
//! connection goes back when the connection ends; room reserved for its
//! session is released when its feeder stream ends.
//!
//! Only where `poll(2)` waits on streams ([`sys::poll::WAITS_ON_STREAMS`]); on
//! Windows a connection's thread waits on the condition variable as
//! before (a named pipe cannot be waited on with another object without
//! polling).

use crate::util::lock::{lock, wait};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use crate::queue::core::{items_answer_bound, Deadline, Item, Shared};
use crate::queue::wire;
use crate::{sys, Connection};

/// Whether requests park on this OS (see the module's documentation).
pub(crate) const PARKS: bool = sys::poll::WAITS_ON_STREAMS;

/// What a parked request asks for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Want {
    /// Up to `most` items (at least one). With `on_send` (a `GET` without
    /// a timeout), an answer of one item is `ITEM_TAKEN`: the item is
    /// counted out once the answer is written (ack on send).
    Get { most: usize, on_send: bool },
    /// Up to `wanted` places (at least one) for `session`'s feeder; with
    /// `carries`, the request holds an item (a `PUT_WAIT`) stored in the
    /// first place by the thread that reserves them.
    Acquire {
        session: u64,
        wanted: usize,
        carries: bool,
    },
}

/// What a parked request was given.
#[derive(Debug)]
pub(crate) enum Given {
    /// Items taken to send on the request's connection (counted in
    /// flight): whoever writes the answer records them as that
    /// connection's first ([`Shared::answer_items`]), as a `GET` answered
    /// by its own thread does.
    Items(Vec<Item>),
    /// Places reserved for the request's session.
    Granted(usize),
    /// Nothing: the session has no feeder stream (nothing could release a
    /// reservation), or the holder is gone ([`Parked::holder_gone`]); the
    /// connection closes.
    Refused,
}

#[derive(Debug)]
enum State {
    Waiting,
    /// Served; the answer is not written yet.
    Given(Given),
    /// A serving thread is writing the answer.
    Answering,
    /// The answer was written (or the connection broke on it).
    Answered,
    /// Taken out of the list unserved (deadline, or the holder's end).
    Cancelled,
}

/// A request waiting in a queue's list.
pub(crate) struct Parked {
    /// The broker's id of the request's connection.
    pub(crate) conn_id: u64,
    pub(crate) want: Want,
    conn: Arc<Connection>,
    wake: Arc<Connection>,
    /// A `PUT_WAIT`'s item, until stored (or dropped with the request).
    carried: Mutex<Option<Item>>,
    /// Whether `conn` is a local stream socket ([`sys::is_local_stream`],
    /// asked once per connection): answers written directly only there.
    local: bool,
    state: Mutex<State>,
    settled: Condvar,
}

impl std::fmt::Debug for Parked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parked")
            .field("conn_id", &self.conn_id)
            .field("want", &self.want)
            .finish()
    }
}

impl Parked {
    /// Served (under the queue's lock): what it gets.
    pub(crate) fn give(&self, given: Given) {
        *lock(&self.state) = State::Given(given);
    }

    /// Whether the request's holder is gone (it sends nothing while its
    /// request waits: anything readable is its end). Asked before a
    /// carried item is stored, so that the put of a process that died
    /// waiting (its end already there to see) stores nothing, and before
    /// items are taken for a `GET`, so that a consumer that died waiting
    /// gets none (they would come back to the front of the queue after
    /// later items went to the next consumer).
    pub(crate) fn holder_gone(&self) -> bool {
        !matches!(self.conn.poll(Some(std::time::Duration::ZERO)), Ok(false))
    }

    /// The item a `PUT_WAIT` carries, taken out to be stored (once).
    pub(crate) fn take_carried(&self) -> Option<Item> {
        lock(&self.carried).take()
    }
}

/// After the queue's lock: answers the requests it served, each on its
/// own connection when that cannot block, else by handing the answer to
/// the connection's thread. Returns whether an answer freed room (an
/// item taken on send): the caller serves again.
pub(crate) fn deliver(shared: &Shared, served: Vec<Arc<Parked>>) -> bool {
    let mut freed = false;
    let mut out = Vec::new();
    for p in served {
        let given = {
            let mut st = lock(&p.state);
            match std::mem::replace(&mut *st, State::Answering) {
                State::Given(g) => g,
                other => {
                    *st = other;
                    continue;
                }
            }
        };
        // Room for the whole answer (and its frame's head), or not direct.
        let fits = |len: usize| p.local && sys::room_now(p.conn.stream().handle(), len + 16);
        // Written here: the answer is in `out`, with the grant to free if
        // it is never received.
        let mut taken = None;
        let direct = match given {
            Given::Items(items) if fits(5 + items_answer_bound(&items)) => {
                let on_send = taken_on_send(p.want, items.len());
                // Recorded as in flight on the connection before the
                // answer is written (no ack can come for them first; if
                // the write fails they go back when the connection ends).
                shared.answer_items(p.conn_id, items, &mut out);
                if on_send {
                    // Taken before it is written (ack on send); the room
                    // it leaves is served by the caller's next pass.
                    wire::mark_taken(&mut out);
                    taken = shared.taken_on_send(p.conn_id, false);
                    freed |= taken.is_some();
                }
                Ok(None)
            }
            Given::Granted(n) if fits(GRANTED_LEN) => {
                out.clear();
                out.extend_from_slice(&wire::granted(u32::try_from(n).unwrap_or(u32::MAX)));
                Ok(Some(n))
            }
            other => Err(other),
        };
        match direct {
            Ok(grant) => {
                if let Err(e) = p.conn.send_bytes(&out) {
                    // Items in flight there go back when the connection
                    // ends; a grant nobody received is freed now (its
                    // session may live on, on other connections).
                    tracing::debug!("cannot answer a parked request: {e}");
                    if let (
                        Some(n),
                        Want::Acquire {
                            session, carries, ..
                        },
                    ) = (grant, p.want)
                    {
                        // A carried item was stored: it stays.
                        shared.release(session, n - usize::from(carries));
                    }
                    if let Some(item) = taken.take() {
                        // Taken on send, never received: back to the front
                        // (the caller's next pass serves it).
                        shared.restore(item, false);
                    }
                }
                *lock(&p.state) = State::Answered;
            }
            Err(given) => {
                *lock(&p.state) = State::Given(given);
                // Its thread writes (or closes); a failed wake-up means
                // that thread is gone, and its connection's end settles
                // the rest.
                let _ = p.wake.send_bytes(&[1]);
            }
        }
        p.settled.notify_all();
    }
    freed
}

/// Whether the answer of `n` items to a request that wants `want` is
/// `ITEM_TAKEN` (ack on send): one item, to a `GET` without a timeout.
pub(crate) fn taken_on_send(want: Want, n: usize) -> bool {
    matches!(want, Want::Get { on_send: true, .. }) && n == 1
}

/// The length of a `GRANTED` answer.
const GRANTED_LEN: usize = 5;

/// How a parked request ended, for its connection's thread.
#[derive(Debug)]
pub(crate) enum Waited {
    /// Answered by the thread that served it.
    Answered,
    /// Served: this thread writes the answer (or, for
    /// [`Given::Refused`], closes the connection).
    Write(Given),
    /// The deadline passed unserved: answer `EMPTY`/`FULL`.
    TimedOut,
    /// The holder is gone (or broke the protocol): close.
    Gone,
}

/// A connection thread's means to park its requests: its connection and
/// a wake-up pipe, made at its first park.
pub(crate) struct Parker {
    conn: Arc<Connection>,
    /// [`sys::is_local_stream`] of `conn`, at the first park.
    local: Option<bool>,
    wake: Option<(Connection, Arc<Connection>)>,
}

impl Parker {
    pub(crate) fn new(conn: Arc<Connection>) -> Parker {
        Parker {
            conn,
            local: None,
            wake: None,
        }
    }

    /// Whether an answer of `len` bytes can be written on the connection
    /// now without blocking whatever the holder does (a local stream
    /// socket with room for it, as [`deliver`] writes): only such an
    /// answer is taken on send, so an item counted out is in the holder's
    /// socket at once, never stuck in a write to a holder that does not
    /// read.
    pub(crate) fn fits_now(&mut self, len: usize) -> bool {
        let conn = &self.conn;
        let local = *self
            .local
            .get_or_insert_with(|| sys::is_local_stream(conn.stream().handle()));
        local && sys::room_now(conn.stream().handle(), len + 16)
    }

    /// A request to park (not yet in any list): `None` if no wake-up pipe
    /// can be made (out of descriptors): the caller waits as before.
    pub(crate) fn request(&mut self, conn_id: u64, want: Want) -> Option<Arc<Parked>> {
        self.request_carrying(conn_id, want, None)
    }

    /// [`request`](Self::request) for a `PUT_WAIT`, holding its `item`.
    pub(crate) fn request_carrying(
        &mut self,
        conn_id: u64,
        want: Want,
        item: Option<Item>,
    ) -> Option<Arc<Parked>> {
        if self.wake.is_none() {
            match crate::pipe(false) {
                Ok((r, w)) => self.wake = Some((r, Arc::new(w))),
                Err(e) => {
                    tracing::debug!("no wake-up pipe to park a request: {e}");
                    return None;
                }
            }
        }
        let local = *self
            .local
            .get_or_insert_with(|| sys::is_local_stream(self.conn.stream().handle()));
        let (_, w) = self.wake.as_ref()?;
        Some(Arc::new(Parked {
            local,
            conn_id,
            want,
            conn: self.conn.clone(),
            wake: w.clone(),
            carried: Mutex::new(item),
            state: Mutex::new(State::Waiting),
            settled: Condvar::new(),
        }))
    }

    /// Waits until `p` (in `shared`'s list) is served, its deadline
    /// passes or its holder is gone.
    pub(crate) fn wait(&self, shared: &Shared, p: &Parked, deadline: Deadline) -> Waited {
        let Some((wake, _)) = self.wake.as_ref() else {
            return Waited::Gone;
        };
        loop {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let objects: [&dyn crate::wait::Waitable; 2] = [&*self.conn, wake];
            let (gone, timed_out) = match crate::wait::wait(&objects, left) {
                Ok(ready) => {
                    if ready.contains(&1) {
                        // One byte per hand-over; a stale one is harmless.
                        let _ = wake.recv_bytes();
                    }
                    let passed = deadline.is_some_and(|d| Instant::now() >= d);
                    (ready.contains(&0), passed)
                }
                Err(e) => {
                    tracing::debug!("cannot wait for a parked request: {e}");
                    (true, false)
                }
            };
            // Served meanwhile, the answer stands; else leave the list if
            // there is a reason to.
            match shared.settle_parked(p, gone || timed_out) {
                Settled::Given(g) => return Waited::Write(g),
                Settled::Answered => return Waited::Answered,
                Settled::Cancelled => return if gone { Waited::Gone } else { Waited::TimedOut },
                Settled::Answering => {
                    // A serving thread is writing: it is quick (the write
                    // cannot block), then look again.
                    let mut st = lock(&p.state);
                    while matches!(*st, State::Answering) {
                        st = wait(&p.settled, st);
                    }
                }
                Settled::Waiting => {}
            }
        }
    }
}

/// A parked request's state, as the queue's lock sees it.
#[derive(Debug)]
pub(crate) enum Settled {
    /// Still in the list.
    Waiting,
    /// Served; the caller writes the answer.
    Given(Given),
    /// A serving thread is writing the answer.
    Answering,
    Answered,
    /// Out of the list, unserved: the caller removes it from the list.
    Cancelled,
}

/// Under the queue's lock: takes what `p` was given (the caller writes
/// it), or reports its state; a waiting request is cancelled if `leave`
/// (the caller then takes it out of the list).
pub(crate) fn settle(p: &Parked, leave: bool) -> Settled {
    let mut st = lock(&p.state);
    match std::mem::replace(&mut *st, State::Answered) {
        State::Given(g) => Settled::Given(g),
        State::Answered => Settled::Answered,
        State::Answering => {
            *st = State::Answering;
            Settled::Answering
        }
        State::Cancelled => {
            *st = State::Cancelled;
            Settled::Cancelled
        }
        State::Waiting if leave => {
            *st = State::Cancelled;
            Settled::Cancelled
        }
        State::Waiting => {
            *st = State::Waiting;
            Settled::Waiting
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::core::Acquired;
    use crate::queue::wire::{parse_reply, Reply};
    use std::time::Duration;

    /// A holder's end and the broker's end of one ops connection, and the
    /// broker end's parker.
    fn link() -> (Connection, Arc<Connection>, Parker) {
        let (holder, broker) = crate::pipe(true).unwrap();
        let broker = Arc::new(broker);
        let parker = Parker::new(broker.clone());
        (holder, broker, parker)
    }

    fn item(n: usize) -> Item {
        Item::whole(vec![7u8; n])
    }

    /// A `GET` of up to `most` items, with a timeout (acknowledged).
    fn get(most: usize) -> Want {
        Want::Get {
            most,
            on_send: false,
        }
    }

    /// A `GET` for `most` items on connection `conn`, parked on `shared`
    /// (empty, no deadline): the holder's end, the broker's end, its
    /// parker and the parked request.
    fn parked_get(
        shared: &Shared,
        conn: u64,
        most: usize,
    ) -> (Connection, Arc<Connection>, Parker, Arc<Parked>) {
        let (holder, broker, mut parker) = link();
        let p = parker.request(conn, get(most)).unwrap();
        assert!(shared.take_or_park(most, None, p.clone()).is_none());
        (holder, broker, parker, p)
    }

    /// [`finish_wait`] on a thread of its own, as the connection's thread
    /// runs it; the broker's end stays open after the waiter ends (the
    /// clone returned), as the connection's thread goes on serving it.
    fn wait_on_a_thread(
        parker: Parker,
        broker: Arc<Connection>,
        shared: &Arc<Shared>,
        p: Arc<Parked>,
    ) -> (Arc<Connection>, std::thread::JoinHandle<Waited>) {
        let open = broker.clone();
        let shared = shared.clone();
        let waiter = std::thread::spawn(move || finish_wait(&parker, &broker, &shared, &p));
        (open, waiter)
    }

    /// What the broker's connection thread does with a parked request's
    /// end (as `serve_ops` does).
    fn finish_wait(parker: &Parker, broker: &Connection, shared: &Shared, p: &Parked) -> Waited {
        let waited = parker.wait(shared, p, None);
        let mut out = Vec::new();
        match &waited {
            Waited::Write(Given::Items(items)) => {
                shared.answer_items(p.conn_id, items.clone(), &mut out);
            }
            Waited::Write(Given::Granted(n)) => out.extend_from_slice(&wire::granted(*n as u32)),
            _ => return waited,
        }
        broker.send_bytes(&out).unwrap();
        waited
    }

    fn items_in(answer: &[u8]) -> Vec<usize> {
        match parse_reply(answer).unwrap() {
            Reply::Items(ranges) => ranges.iter().map(|r| r.len()).collect(),
            other => panic!("{other:?}"),
        }
    }

    // The point of parking: the thread that stores an item answers the
    // waiting GET on its connection itself (where the OS can say the write
    // cannot block); the connection's thread only learns it was answered
    // when the holder's next message comes. Where it cannot (Windows), the
    // connection's thread is woken and writes.
    #[test]
    fn a_parked_get_is_answered_by_the_thread_that_stores_the_item() {
        let shared = Arc::new(Shared::new(0));
        let (holder, broker, parker, p) = parked_get(&shared, 5, 4);
        let (_open, waiter) = wait_on_a_thread(parker, broker, &shared, p);
        shared.push_all([item(10), item(20)]);
        assert_eq!(items_in(&holder.recv_bytes().unwrap()), [10, 20]);
        // The holder's next message (its SETTLE) ends the wait.
        holder.send_bytes(&wire::settle(2, 0)).unwrap();
        let waited = waiter.join().unwrap();
        let fd = holder.stream().handle();
        let direct = sys::is_local_stream(fd) && sys::room_now(fd, 64);
        assert_eq!(
            matches!(waited, Waited::Answered),
            direct,
            "{waited:?} (direct answers here: {direct})"
        );
        // In flight on connection 5 until acknowledged.
        assert_eq!(shared.qsize(), 2);
        shared.settle(5, 2, 0);
        assert_eq!(shared.qsize(), 0);
    }

    // A parked GET's items, whichever thread writes its answer, are its
    // connection's in-flight record (moved there, as a GET answered by its
    // own thread) before the answer is written: the holder's ack counts
    // as soon as it has them, and a holder killed before acknowledging
    // gives back the rest, once.
    #[test]
    fn a_parked_gets_items_are_in_flight_on_its_connection_before_the_answer() {
        let shared = Arc::new(Shared::new(0));
        let (holder, broker, parker, p) = parked_get(&shared, 11, 8);
        let (_open, waiter) = wait_on_a_thread(parker, broker, &shared, p);
        shared.push_all([item(1), item(2), item(3)]);
        assert_eq!(items_in(&holder.recv_bytes().unwrap()), [1, 2, 3]);
        shared.ack(&[(11, 1)]);
        assert_eq!(shared.qsize(), 2);
        // Killed before acknowledging the other two.
        drop(holder);
        waiter.join().unwrap();
        assert_eq!(shared.drop_conn(11), 2);
        assert_eq!(shared.drop_conn(11), 0, "given back once");
        let now = Some(Instant::now());
        match shared.take(None, 9, now, &|| true) {
            crate::queue::core::Taken::Items(v) => {
                assert_eq!(v.iter().map(Item::len).collect::<Vec<_>>(), [2, 3])
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(shared.qsize(), 0);
    }

    // Two GETs parked on an empty queue, then a batch of 4 arrives: in a
    // bounded queue the first takes all it asked for (every item of a
    // delivery holds its place until all are taken: one delivery, one
    // wake-up) and the second waits on for the next item; in an unbounded
    // one they share it. Either way each item is in flight on the
    // connection it went to, and given back from there if that holder
    // dies.
    #[test]
    fn a_batch_goes_to_the_first_parked_get_of_a_bounded_queue() {
        for maxsize in [16, 0] {
            let shared = Arc::new(Shared::new(maxsize));
            let (first, b1, parker1, p1) = parked_get(&shared, 21, 4);
            let (second, b2, parker2, p2) = parked_get(&shared, 22, 4);
            let (_o1, w1) = wait_on_a_thread(parker1, b1, &shared, p1);
            let (_o2, w2) = wait_on_a_thread(parker2, b2, &shared, p2);
            // Served under the queue's lock before `push_all` returns.
            shared.push_all([item(1), item(2), item(3), item(4)]);
            if maxsize > 0 {
                assert_eq!(shared.gets_waiting(), 1, "the second one still waits");
                assert_eq!(items_in(&first.recv_bytes().unwrap()), [1, 2, 3, 4]);
                shared.push_all([item(5)]);
                assert_eq!(items_in(&second.recv_bytes().unwrap()), [5]);
            } else {
                assert_eq!(shared.gets_waiting(), 0);
                assert_eq!(items_in(&first.recv_bytes().unwrap()), [1, 2]);
                assert_eq!(items_in(&second.recv_bytes().unwrap()), [3, 4]);
            }
            // Their next messages end the waits.
            first.send_bytes(&[wire::SYNC]).unwrap();
            second.send_bytes(&[wire::SYNC]).unwrap();
            w1.join().unwrap();
            w2.join().unwrap();
            assert_eq!(shared.qsize(), if maxsize > 0 { 5 } else { 4 });
            // A holder killed before acknowledging: its items come back.
            drop(first);
            let back = shared.drop_conn(21);
            assert_eq!(back, if maxsize > 0 { 4 } else { 2 });
            shared.ack(&[(22, 9)]);
            assert_eq!(shared.qsize(), back);
        }
    }

    // An answer too large to vouch for is handed to the connection's
    // thread through its wake-up pipe: a holder that stopped reading can
    // only ever stall its own connection's thread, never the one that
    // stored the item.
    #[test]
    fn a_large_answer_is_handed_to_the_connections_thread() {
        let shared = Arc::new(Shared::new(0));
        let (holder, broker, parker, p) = parked_get(&shared, 6, 1);
        // Nobody reads yet: storing returns at once all the same.
        shared.push_all([item(1 << 20)]);
        let reader = std::thread::spawn(move || items_in(&holder.recv_bytes().unwrap()));
        let waited = finish_wait(&parker, &broker, &shared, &p);
        assert!(
            matches!(waited, Waited::Write(Given::Items(_))),
            "{waited:?}"
        );
        assert_eq!(reader.join().unwrap(), [1 << 20]);
    }

    // A parked request whose deadline passes leaves the list: a later item
    // stays in the queue for others.
    #[test]
    fn a_parked_get_times_out_and_takes_nothing_later() {
        let shared = Shared::new(0);
        let (_holder, _broker, mut parker) = link();
        let p = parker.request(7, get(1)).unwrap();
        let soon = Some(Instant::now() + Duration::from_millis(30));
        assert!(shared.take_or_park(1, soon, p.clone()).is_none());
        assert!(matches!(parker.wait(&shared, &p, soon), Waited::TimedOut));
        shared.push_all([item(1)]);
        assert_eq!(shared.qsize(), 1);
        let now = Some(Instant::now());
        assert!(matches!(
            shared.take(None, 1, now, &|| true),
            crate::queue::core::Taken::Items(v) if v.len() == 1
        ));
        // A deadline already passed never parks.
        let p = parker.request(7, get(1)).unwrap();
        assert!(matches!(
            shared.take_or_park(1, now, p),
            Some(crate::queue::core::Taken::Empty)
        ));
    }

    // A holder gone while its request waits (its end closed): the wait
    // ends, the request leaves the list, nothing is taken for it.
    #[test]
    fn a_gone_holder_leaves_the_list() {
        let shared = Shared::new(0);
        let (holder, _broker, parker, p) = parked_get(&shared, 8, 1);
        drop(holder);
        assert!(matches!(parker.wait(&shared, &p, None), Waited::Gone));
        shared.push_all([item(1)]);
        assert_eq!(shared.qsize(), 1);
        assert_eq!(shared.drop_conn(8), 0, "nothing was in flight for it");
    }

    // A consumer killed while its GET waited, before its connection's
    // thread saw the end (a starved broker; here no thread waits for it
    // yet), gets no item: the item goes to the next waiting GET, and
    // nothing is in flight on the dead connection to come back to the
    // front later, after items the next consumer already took.
    #[test]
    fn a_parked_get_whose_holder_is_gone_takes_nothing() {
        let shared = Arc::new(Shared::new(0));
        let (dead, _dead_broker, mut dead_parker) = link();
        let gone = dead_parker
            .request(
                12,
                Want::Get {
                    most: 1,
                    on_send: false,
                },
            )
            .unwrap();
        assert!(shared.take_or_park(1, None, gone.clone()).is_none());
        let (holder, broker, mut parker) = link();
        let p = parker
            .request(
                13,
                Want::Get {
                    most: 1,
                    on_send: false,
                },
            )
            .unwrap();
        assert!(shared.take_or_park(1, None, p.clone()).is_none());
        drop(dead);
        let _open = broker.clone();
        let waiter = {
            let shared = shared.clone();
            std::thread::spawn(move || finish_wait(&parker, &broker, &shared, &p))
        };
        shared.push_all([item(1)]);
        assert_eq!(
            shared.drop_conn(12),
            0,
            "the item was given to the dead consumer's connection"
        );
        assert_eq!(items_in(&holder.recv_bytes().unwrap()), [1]);
        holder.send_bytes(&wire::settle(1, 0)).unwrap();
        waiter.join().unwrap();
        // In flight on the live connection until its SETTLE is read.
        assert_eq!(shared.qsize(), 1);
        shared.settle(13, 1, 0);
        assert_eq!(shared.qsize(), 0);
        // The dead consumer's thread, when it runs, closes its connection.
        let waited = dead_parker.wait(&shared, &gone, None);
        assert!(
            matches!(waited, Waited::Write(Given::Refused)),
            "{waited:?}"
        );
    }

    // A parked ACQUIRE gets the room a consumer's ack frees, reserved for
    // its session, from the thread that handled the ack; with no feeder
    // stream for the session it is refused (nothing could release it).
    #[test]
    fn a_parked_acquire_gets_the_room_an_ack_frees() {
        let shared = Arc::new(Shared::new(1));
        shared.feed_open(40);
        shared.push_all([item(1)]);
        let now = || Some(Instant::now());
        assert!(matches!(
            shared.take(Some(2), 1, now(), &|| true),
            crate::queue::core::Taken::Items(_)
        ));
        let (holder, broker, mut parker) = link();
        let p = parker
            .request(
                9,
                Want::Acquire {
                    session: 40,
                    wanted: 3,
                    carries: false,
                },
            )
            .unwrap();
        assert!(shared.acquire_or_park(40, 3, None, p.clone()).is_none());
        let (_open, waiter) = wait_on_a_thread(parker, broker, &shared, p);
        // The consumer's ack frees the one place: granted, one.
        shared.settle(2, 1, 0);
        assert!(matches!(
            parse_reply(&holder.recv_bytes().unwrap()).unwrap(),
            Reply::Granted(1)
        ));
        holder.send_bytes(&[wire::SYNC]).unwrap();
        waiter.join().unwrap();
        // Reserved: no room for anyone else until filled or released.
        assert!(matches!(
            shared.acquire(41, 1, now(), &|| true),
            Acquired::Full | Acquired::Abandoned
        ));
        shared.feed_closed(40);
        // No feeder stream: refused.
        let (_h, _b, mut parker) = link();
        let p = parker
            .request(
                10,
                Want::Acquire {
                    session: 41,
                    wanted: 1,
                    carries: false,
                },
            )
            .unwrap();
        assert!(matches!(
            shared.acquire_or_park(41, 1, None, p),
            Some(Acquired::Abandoned)
        ));
    }
}
