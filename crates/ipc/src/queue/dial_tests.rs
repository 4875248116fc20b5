//! A holder that gives up on a slow connection, or whose connection the
//! broker drops before its `HELLO` is answered, is not told the queue is
//! gone while its owner lives (issue 12 item 13, the Wine flake of
//! `a_carried_item_that_timed_out_is_never_stored`).
//!
//! Under load a holder's `put_timeout` can give up on a new connection
//! before the broker's answer to its `HELLO` reaches it (its deadline
//! passed): the broker's later end of that connection must touch only
//! what the connection itself opened, never the session's feeder stream
//! on another connection.

use std::collections::HashMap;
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::queue::broker::{self, Broker};
use crate::queue::core::Shared;
use crate::queue::wire::{self, Reply, Role};
use crate::queue::{remote_hold, Handle, PutError, Queue};
use crate::util::lock::{lock, wait_timeout};
use crate::{Client, Connection};

/// How many connections of each queue (and of each role of it) the
/// broker finished serving (hello read and everything after it done).
type Counts = HashMap<(u64, Option<u8>), usize>;
static ENDED: Mutex<Option<Counts>> = Mutex::new(None);
static ENDED_CHANGED: Condvar = Condvar::new();

/// Dropped by the broker's connection thread when it is done with a
/// connection of the queue (a test hook: see `Broker::serve`).
pub(super) struct Ended(pub(super) u64, pub(super) Role);

impl Drop for Ended {
    fn drop(&mut self) {
        let mut ended = lock(&ENDED);
        let counts = ended.get_or_insert_with(HashMap::new);
        *counts.entry((self.0, None)).or_default() += 1;
        *counts.entry((self.0, Some(self.1 as u8))).or_default() += 1;
        drop(ended);
        ENDED_CHANGED.notify_all();
    }
}

/// Waits until the broker has finished `n` connections of `queue` (a
/// minute at most, then fails naming the wait).
fn wait_ended(queue: u64, n: usize) {
    wait_counted((queue, None), n);
}

/// [`wait_ended`], counting only connections of `role`.
fn wait_ended_of(queue: u64, role: Role, n: usize) {
    wait_counted((queue, Some(role as u8)), n);
}

fn wait_counted(key: (u64, Option<u8>), n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut ended = lock(&ENDED);
    loop {
        let done = ended.as_ref().and_then(|m| m.get(&key)).copied();
        if done.unwrap_or(0) >= n {
            return;
        }
        let now = Instant::now();
        assert!(
            now < deadline,
            "the broker finished {done:?} of {n} connections {key:x?} in 60 s"
        );
        ended = wait_timeout(&ENDED_CHANGED, ended, deadline - now).0;
    }
}

/// Tests: the broker's answer to the next `HELLO` of `role` on a queue
/// listed here waits, in its connection's thread, until its sender sends
/// or is dropped (an answer that comes after the holder gave up, made
/// certain).
static HOLD_NEXT_HELLO: Mutex<Vec<(u64, Role, mpsc::Receiver<()>)>> = Mutex::new(Vec::new());

/// Takes back the hold of the next `HELLO` of `role` on `queue` if no
/// connection met it yet: whether it was still there.
fn take_back_hold(queue: u64, role: Role) -> bool {
    let mut held = lock(&HOLD_NEXT_HELLO);
    let before = held.len();
    held.retain(|(q, r, _)| !(*q == queue && *r == role));
    held.len() < before
}

/// Called by the broker before it answers a `HELLO` (see
/// [`HOLD_NEXT_HELLO`]).
pub(super) fn hold_hello(queue: u64, role: Role) {
    let held = {
        let mut held = lock(&HOLD_NEXT_HELLO);
        held.iter()
            .position(|(q, r, _)| *q == queue && *r == role)
            .map(|i| held.swap_remove(i).2)
    };
    if let Some(release) = held {
        let _ = release.recv();
    }
}

/// A bounded queue `queue` of `maxsize` registered with this process's
/// broker.
fn registered(queue: u64, maxsize: usize) -> (Arc<Broker>, Arc<Shared>) {
    let b = broker::get_or_start().unwrap();
    let shared = Arc::new(Shared::new(maxsize));
    b.register(queue, shared.clone());
    (b, shared)
}

/// A connection of `role` for `session`, its hello answered.
fn hello(b: &Broker, queue: u64, session: u64, role: Role) -> Connection {
    let c = Client::connect(b.address(), Some(b.key())).unwrap();
    c.send_bytes(&wire::hello(queue, session, role)).unwrap();
    let answer = c.recv_bytes().unwrap();
    assert!(
        matches!(wire::parse_reply(&answer), Ok(Reply::HelloOk { .. })),
        "{answer:?}"
    );
    c
}

/// A `PUT_WAIT` of one item for `session` on a fresh ops connection: the
/// broker's answer.
fn put_wait(b: &Broker, queue: u64, session: u64, item: u32) -> Reply {
    let ops = hello(b, queue, session, Role::Ops);
    let msg = wire::put_wait(1, Some(Duration::from_secs(20)), 0, |out| {
        crate::tag::encode(&item, out)
    })
    .unwrap();
    ops.send_bytes(&msg).unwrap();
    match ops.recv_bytes() {
        Ok(answer) => wire::parse_reply(&answer).unwrap(),
        Err(e) => panic!("the broker closed the put's connection ({e}): no feeder stream?"),
    }
}

// A holder's ops connections whose `HELLO` answers it never read (it gave
// up on them: closed right after saying hello, so the broker's answer
// finds them closed) end without closing the session's feeder stream: a
// put of that session still gets its place. Before, each such end closed
// the session's feed, and the next `PUT_WAIT` was refused (`Disconnected`).
#[test]
fn ops_hellos_given_up_leave_the_feeder_open() {
    let (queue, session) = (0xd1a1_0001, 0xd1a1_5e55_0001);
    let (b, shared) = registered(queue, 1);
    let _feeder = hello(&b, queue, session, Role::Feeder);
    const GIVEN_UP: usize = 20;
    for _ in 0..GIVEN_UP {
        let c = Client::connect(b.address(), Some(b.key())).unwrap();
        c.send_bytes(&wire::hello_ops(queue, session, false))
            .unwrap();
        drop(c);
    }
    wait_ended(queue, GIVEN_UP);
    assert!(shared.feeding(session), "the feeder stream was closed");
    assert!(matches!(put_wait(&b, queue, session, 7), Reply::Granted(1)));
    assert_eq!(shared.qsize(), 1);
}

// A holder dials its feeder again after giving up on the first one (its
// put timed out before the `HELLO` answer); the broker sees the first
// one end only after the second opened. The second stays the session's
// stream: its puts get places, and what an earlier stream held is free.
#[test]
fn a_late_end_of_a_given_up_feeder_leaves_the_new_one_open() {
    let (queue, session) = (0xd1a1_0002, 0xd1a1_5e55_0002);
    let (b, shared) = registered(queue, 1);
    let first = hello(&b, queue, session, Role::Feeder);
    let second = hello(&b, queue, session, Role::Feeder);
    drop(first);
    wait_ended(queue, 1);
    assert!(shared.feeding(session), "the new feeder stream was closed");
    assert!(matches!(put_wait(&b, queue, session, 8), Reply::Granted(1)));
    assert_eq!(shared.qsize(), 1);
    // The new stream's own end closes it.
    drop(second);
    wait_ended(queue, 3);
    assert!(!shared.feeding(session));
}

// Places granted to a session's first feeder stream are free again when
// a second stream of the session opens (nothing could fill them any
// more: the holder's permits went with the stream it gave up).
#[test]
fn a_new_feeder_stream_frees_what_the_old_one_held() {
    let (queue, session) = (0xd1a1_0003, 0xd1a1_5e55_0003);
    let (b, shared) = registered(queue, 1);
    let _first = hello(&b, queue, session, Role::Feeder);
    let ops = hello(&b, queue, session, Role::Ops);
    ops.send_bytes(&wire::acquire(1, None, &[])).unwrap();
    assert!(matches!(
        wire::parse_reply(&ops.recv_bytes().unwrap()),
        Ok(Reply::Granted(1))
    ));
    // The one place is reserved: until the second stream opens, a put
    // would wait for room.
    let _second = hello(&b, queue, session, Role::Feeder);
    assert!(matches!(put_wait(&b, queue, session, 9), Reply::Granted(1)));
    assert_eq!(shared.qsize(), 1);
}

// The Wine failure of `put_wait_tests::a_carried_item_that_timed_out_is_never_stored`,
// made certain: a holder's `put_timeout` on a full `Queue(1)` opens its
// ops connection, and the broker answers its `HELLO` only after the put
// gave up (`Full`: under load, late). The holder's next put gets the
// place once there is room. (Before, the broker's failed answer closed
// the holder's feeder stream, and that put was `Disconnected`.)
#[test]
fn a_put_late_for_its_hello_leaves_the_next_put_working() {
    let q: Queue<u32> = Queue::new(1).unwrap();
    let h: Handle = postcard::from_bytes(&postcard::to_stdvec(&q).unwrap()).unwrap();
    let remote = remote_hold(&q);
    q.put(1).unwrap();
    let mut timeout = Duration::from_millis(100);
    loop {
        let (release, held) = mpsc::channel::<()>();
        lock(&HOLD_NEXT_HELLO).push((h.id, Role::Ops, held));
        assert!(matches!(
            remote.put_timeout(99, timeout),
            Err(PutError::Full(99))
        ));
        if !take_back_hold(h.id, Role::Ops) {
            // Its `HELLO` met the hold: the answer now finds the
            // connection closed.
            drop(release);
            break;
        }
        // The put gave up before its `HELLO` reached the broker (its
        // feeder's or its own handshake was later than its timeout on a
        // loaded machine): again, with more time.
        timeout = (timeout * 2).min(Duration::from_secs(10));
    }
    wait_ended_of(h.id, Role::Ops, 1);
    assert_eq!(q.get().unwrap(), 1);
    remote.put_timeout(2, Duration::from_secs(20)).unwrap();
    assert_eq!(q.get_timeout(Duration::from_secs(20)).unwrap(), 2);
}
