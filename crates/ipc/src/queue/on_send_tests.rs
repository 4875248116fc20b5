//! Ack on send (`ITEM_TAKEN`, issue 12 item 11) against the owner's real
//! broker: a holder speaking the wire by hand, at every step of a
//! one-item delivery — before it is served, parked, answered and never
//! read, answered and acknowledged again out of turn — and a get with a
//! timeout, which keeps the acknowledged delivery.

use super::*;
use crate::queue::wire::{self, Reply};
use crate::{Client, Connection};

const LONG: Duration = Duration::from_secs(20);

/// A queue of `maxsize` owned here and its handle.
fn owned(maxsize: usize) -> (Queue<u32>, Handle) {
    let q: Queue<u32> = Queue::new(maxsize).unwrap();
    let h: Handle = postcard::from_bytes(&postcard::to_stdvec(&q).unwrap()).unwrap();
    (q, h)
}

/// An ops connection for `session`, said hello to.
fn raw(h: &Handle, session: u64) -> Connection {
    let conn = Client::connect(&h.address, Some(&h.key)).unwrap();
    conn.send_bytes(&wire::hello_ops(h.id, session, false))
        .unwrap();
    let answer = conn.recv_bytes().unwrap();
    assert!(
        matches!(wire::parse_reply(&answer), Ok(Reply::HelloOk { .. })),
        "{answer:?}"
    );
    conn
}

/// Whether the broker takes a one-item answer on `c` on send: only on a
/// local stream socket ([`sys::is_local_stream`]; no Windows named pipe
/// is one, so there every delivery is acknowledged).
fn takes_on_send(c: &Connection) -> bool {
    crate::sys::is_local_stream(c.stream().handle())
}

/// The item of an answer, and whether it came taken (`ITEM_TAKEN`).
fn item_of(answer: &[u8]) -> (u32, bool) {
    let (range, taken) = match wire::parse_reply(answer) {
        Ok(Reply::Taken(r)) => (r, true),
        Ok(Reply::Items(mut r)) if r.len() == 1 => (r.remove(0), false),
        other => panic!("not one item: {other:?}"),
    };
    (crate::tag::decode(&answer[range]).unwrap(), taken)
}

/// Waits until the broker has read everything sent before on `conn`.
fn sync(conn: &Connection) {
    conn.send_bytes(&[wire::SYNC]).unwrap();
    assert_eq!(conn.recv_bytes().unwrap(), [wire::SYNCED]);
}

fn shared_of(q: &Queue<u32>) -> Arc<Shared> {
    match &q.inner.link {
        Link::Owner(s) => s.clone(),
        Link::Remote(_) => unreachable!(),
    }
}

/// Waits (by a generous bound) until a `GET` is parked at the broker.
fn until_parked(q: &Queue<u32>) {
    let shared = shared_of(q);
    let started = Instant::now();
    while shared.gets_waiting() == 0 {
        assert!(started.elapsed() < LONG, "the GET never parked");
        std::thread::yield_now();
    }
}

// A one-item answer to a get without a timeout is taken when written:
// the item is out of the queue with no SETTLE; a SETTLE sent for it
// anyway (out of turn) counts nothing out; and when the holder goes (the
// broker cannot tell one killed before it read its answer from one
// killed after), the item never comes back — while a delivery with a
// timeout on the same connection, unacknowledged, does.
#[test]
fn a_one_item_answer_to_a_get_that_waits_for_good_is_taken_on_send() {
    let (q, h) = owned(0);
    for i in 0..3 {
        q.put(i).unwrap();
    }
    let c = raw(&h, 91);
    let on_send = takes_on_send(&c);
    c.send_bytes(&wire::get(1, None, 0, &[])).unwrap();
    assert_eq!(item_of(&c.recv_bytes().unwrap()), (0, on_send));
    if !on_send {
        // Windows: an acknowledged delivery, as the other queue tests
        // check it.
        return;
    }
    sync(&c);
    assert_eq!(q.qsize(), 2, "taken when written, no ack needed");
    // An ack it does not owe: nothing else is in flight there.
    c.send_bytes(&wire::settle(1, 0)).unwrap();
    sync(&c);
    assert_eq!(q.qsize(), 2, "an ack out of turn counts nothing out");
    // A get with a timeout: acknowledged as before, so in flight.
    c.send_bytes(&wire::get(1, Some(LONG), 0, &[])).unwrap();
    assert_eq!(item_of(&c.recv_bytes().unwrap()), (1, false));
    assert_eq!(q.qsize(), 2, "in flight until acknowledged");
    drop(c);
    // The unacknowledged one comes back when the broker sees the end
    // (with everything in flight there, at once); the taken one never
    // does.
    let mut rest = [q.get_timeout(LONG).unwrap(), q.get_timeout(LONG).unwrap()];
    rest.sort_unstable();
    assert_eq!(rest, [1, 2]);
    assert!(q.empty(), "the item taken on send came back");
}

// A parked get without a timeout answered by the thread that stores the
// item: taken on send there too, so the room of a `Queue(1)` is free at
// once, with no message from the holder.
#[test]
fn a_parked_get_is_taken_on_send_and_frees_its_place() {
    let (q, h) = owned(1);
    let c = raw(&h, 92);
    c.send_bytes(&wire::get(1, None, 0, &[])).unwrap();
    until_parked(&q);
    q.put(7).unwrap();
    let on_send = takes_on_send(&c);
    assert_eq!(item_of(&c.recv_bytes().unwrap()), (7, on_send));
    if !on_send {
        // Windows: an acknowledged delivery (see above).
        return;
    }
    // Counted out before the connection's thread reads on: after a SYNC
    // on it, the place is free.
    sync(&c);
    assert_eq!(q.qsize(), 0);
    assert!(!q.full());
    q.put_nowait(8).unwrap();
    drop(c);
    assert_eq!(q.get_timeout(LONG).unwrap(), 8);
    assert!(q.empty());
}

// A holder killed while its get is parked (its connection closed before
// an item came): the item put next is not lost — written to a closed
// connection, or taken out of the list at its end, it stays queued.
#[test]
fn a_holder_gone_while_parked_loses_nothing() {
    let (q, h) = owned(1);
    let c = raw(&h, 93);
    c.send_bytes(&wire::get(1, None, 0, &[])).unwrap();
    until_parked(&q);
    drop(c);
    q.put(5).unwrap();
    assert_eq!(q.get_timeout(LONG).unwrap(), 5);
    assert!(q.empty());
}
