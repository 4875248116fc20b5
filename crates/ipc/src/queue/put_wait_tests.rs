//! Puts that wait at the broker (`PUT_WAIT`, issue 12 item 11) against
//! the owner's real broker: a second holder in this process (a [`Remote`]
//! over the broker's socket, as a child's), and a hostile holder speaking
//! the wire by hand, who parks requests and never reads its answers.

use super::*;
use crate::queue::wire::{self, Reply, Role};
use crate::{Client, Connection};

/// A queue of `maxsize` owned here, and a second hold on it that goes
/// through the broker as another process's would.
fn owned_and_remote(maxsize: usize) -> (Queue<u32>, Queue<u32>, Handle) {
    let q: Queue<u32> = Queue::new(maxsize).unwrap();
    let h: Handle = postcard::from_bytes(&postcard::to_stdvec(&q).unwrap()).unwrap();
    let remote = remote_hold(&q);
    (q, remote, h)
}

/// A queue of `maxsize` 1 holding one item (put by its owner), a second
/// hold on it, and a hostile holder of `session` (a feeder connection and
/// an ops one) whose `PUT_WAIT` of 50 is parked at the broker: the queue
/// is full.
fn full_with_a_parked_put(session: u64) -> (Queue<u32>, Queue<u32>, Connection, Connection) {
    let (q, remote, h) = owned_and_remote(1);
    let feeder = raw(&h, session, Role::Feeder);
    let hostile = raw(&h, session, Role::Ops);
    q.put(1).unwrap();
    hostile.send_bytes(&put_wait(50, None)).unwrap();
    (q, remote, feeder, hostile)
}

/// A connection of `role` for `session`, said hello to.
fn raw(h: &Handle, session: u64, role: Role) -> Connection {
    let conn = Client::connect(&h.address, Some(&h.key)).unwrap();
    let hello = if role == Role::Ops {
        wire::hello_ops(h.id, session, false)
    } else {
        wire::hello(h.id, session, role)
    };
    conn.send_bytes(&hello).unwrap();
    let answer = conn.recv_bytes().unwrap();
    assert!(
        matches!(wire::parse_reply(&answer), Ok(Reply::HelloOk { .. })),
        "{answer:?}"
    );
    conn
}

fn put_wait(item: u32, timeout: Option<Duration>) -> Vec<u8> {
    wire::put_wait(1, timeout, 0, |out| crate::tag::encode(&item, out)).unwrap()
}

const LONG: Duration = Duration::from_secs(20);

// A put with no permit left carries its item; one that times out at the
// broker took no place and its item is never stored, even when room
// comes later.
#[test]
fn a_carried_item_that_timed_out_is_never_stored() {
    let (q, remote, _) = owned_and_remote(1);
    q.put(1).unwrap();
    assert!(matches!(
        remote.put_timeout(99, Duration::from_millis(100)),
        Err(PutError::Full(99))
    ));
    assert_eq!(q.get().unwrap(), 1);
    assert!(matches!(
        q.get_timeout(Duration::from_millis(200)),
        Err(Error::Empty)
    ));
    // The one place is there, once.
    remote.put_timeout(2, LONG).unwrap();
    assert!(q.full());
    assert!(matches!(remote.put_nowait(3), Err(PutError::Full(3))));
    assert_eq!(remote.get_timeout(LONG).unwrap(), 2);
    // Exact after its own gets (the owner's view may lag by its ack).
    assert!(remote.empty());
}

// Items that wait at the broker with their puts come out in each
// producer's order, and a full queue of one never holds more.
#[test]
fn carried_items_keep_their_order_through_one_place() {
    let (q, remote, _) = owned_and_remote(1);
    let producer = std::thread::spawn(move || {
        for i in 0..200 {
            remote.put(i).unwrap();
        }
        remote
    });
    for i in 0..200 {
        assert!(q.qsize() <= 1);
        assert_eq!(q.get_timeout(LONG).unwrap(), i);
    }
    drop(producer.join().unwrap());
}

// A hostile holder parks a `PUT_WAIT` and never reads: the room a
// consumer frees goes to its item (it asked first), its answer waits in
// its socket, and the other holders go on.
#[test]
fn a_holder_that_never_reads_its_grant_blocks_nobody() {
    let (q, remote, _feeder, hostile) = full_with_a_parked_put(77);
    // Parked (the queue is full) until the remote holder takes the 1.
    assert_eq!(remote.get_timeout(LONG).unwrap(), 1);
    assert_eq!(remote.get_timeout(LONG).unwrap(), 50);
    remote.put_timeout(60, LONG).unwrap();
    assert_eq!(q.get_timeout(LONG).unwrap(), 60);
    // Its grant is in its socket, unread; a second request while one
    // waits would be its end, and nothing it did holds a place.
    remote.put_timeout(61, LONG).unwrap();
    assert!(q.full());
    assert_eq!(remote.get_timeout(LONG).unwrap(), 61);
    drop(hostile);
    q.put_timeout(62, LONG).unwrap();
    assert_eq!(q.get().unwrap(), 62);
}

// A hostile holder's request parked, then garbage on the same connection
// (anything it sends while a request waits is its end): the connection
// closes, and the carried item is stored only if its grant was written
// first — never a place held for nothing.
#[test]
fn a_holder_that_speaks_while_parked_leaves_nothing() {
    let (q, remote, _feeder, hostile) = full_with_a_parked_put(78);
    hostile.send_bytes(&[0xee]).unwrap();
    assert_eq!(q.get().unwrap(), 1);
    // Granted before the broker saw the garbage (then its item is in), or
    // dropped with the connection.
    if let Ok(answer) = hostile.recv_bytes() {
        assert_eq!(answer, wire::granted(1));
        assert!(hostile.recv_bytes().is_err(), "closed after the garbage");
        assert_eq!(q.get_timeout(LONG).unwrap(), 50);
    }
    remote.put_timeout(2, LONG).unwrap();
    assert_eq!(q.get_timeout(LONG).unwrap(), 2);
    assert!(matches!(
        q.get_timeout(Duration::from_millis(100)),
        Err(Error::Empty)
    ));
}

// A hostile holder parks a `GET` and never reads: the large item it is
// given fills its socket and stalls only its own connection's thread;
// the other holders put and get through the same queue meanwhile, and
// the item comes back when the hostile holder goes.
#[test]
fn a_holder_that_never_reads_its_items_blocks_nobody() {
    let (q, remote, h) = owned_and_remote(3);
    let big: Queue<Vec<u8>> = Queue::from_inner(q.inner.clone());
    let hostile = raw(&h, 79, Role::Ops);
    hostile.send_bytes(&wire::get(1, None, 0, &[])).unwrap();
    // Wait until it is parked: an item put now goes to it.
    let started = Instant::now();
    loop {
        let shared = match &q.inner.link {
            Link::Owner(s) => s.clone(),
            Link::Remote(_) => unreachable!(),
        };
        if shared.gets_waiting() > 0 {
            break;
        }
        assert!(started.elapsed() < LONG, "the GET never parked");
        std::thread::yield_now();
    }
    big.put(vec![7u8; 4 << 20]).unwrap();
    // In flight to the hostile holder, its answer stuck in the write.
    for i in 0..20 {
        remote.put_timeout(i, LONG).unwrap();
        assert_eq!(remote.get_timeout(LONG).unwrap(), i);
    }
    // Exact after its own gets: only the hostile holder's item is in.
    assert_eq!(remote.qsize(), 1);
    drop(hostile);
    assert_eq!(big.get_timeout(LONG).unwrap().len(), 4 << 20);
}

// An item too large to carry (64 KiB and more) asks for room first and
// goes the feeder's way (sealed where it can), in order with the small
// ones around it.
#[test]
fn a_large_item_to_a_small_queue_takes_the_permit_path() {
    let (q, remote, _) = owned_and_remote(1);
    let big_q: Queue<Vec<u8>> = Queue::from_inner(q.inner.clone());
    let big_remote: Queue<Vec<u8>> = Queue::from_inner(remote.inner.clone());
    let producer = std::thread::spawn(move || {
        for n in [10usize, 200 << 10, 20, 1 << 20, 30] {
            big_remote.put(vec![n as u8; n]).unwrap();
        }
        big_remote
    });
    for n in [10usize, 200 << 10, 20, 1 << 20, 30] {
        assert_eq!(big_q.get_timeout(LONG).unwrap(), vec![n as u8; n]);
    }
    drop(producer.join().unwrap());
    assert!(q.empty());
}

/// A typed item (not a byte sequence: it is encoded whole, and a put
/// with no permit encodes it into its `PUT_WAIT`) whose encoding is
/// exactly `len` bytes, its first field `mark`.
fn typed_item_of(len: usize, mark: u8) -> (u8, Vec<u8>) {
    let encoded = |n: usize| {
        let mut out = Vec::new();
        crate::tag::encode(&(mark, vec![mark; n]), &mut out).unwrap();
        out.len()
    };
    let n = len - (encoded(len) - len);
    assert_eq!(encoded(n), len, "an item of {len} bytes encoded");
    (mark, vec![mark; n])
}

// Typed items at each size boundary of a small queue's put, through a
// `Queue(1)` from another holder, in order with small ones between:
// the last carried in its `PUT_WAIT` (the message one byte under 64 KiB)
// and the first sent the feeder's way (its encoded bytes taken from the
// `PUT_WAIT` built for it), the last inline in a batch and the first in
// a sealed object (128 KiB, where large items can be sealed). Each
// arrives whole and in its place.
#[test]
fn typed_items_at_each_size_boundary_through_a_queue_of_one() {
    use super::client::CARRY_MOST;
    // 1 opcode, wanted u32, timeout u64, barrier u64, the item's length.
    const PUT_WAIT_HEAD: usize = 1 + 4 + 8 + 8 + 4;
    let (q, remote, _) = owned_and_remote(1);
    let got: Queue<(u8, Vec<u8>)> = Queue::from_inner(q.inner.clone());
    let put: Queue<(u8, Vec<u8>)> = Queue::from_inner(remote.inner.clone());
    let sizes = [
        CARRY_MOST - PUT_WAIT_HEAD - 1,
        CARRY_MOST - PUT_WAIT_HEAD,
        large::THRESHOLD - 1,
        large::THRESHOLD,
        large::THRESHOLD + 1,
    ];
    let items: Vec<(u8, Vec<u8>)> = sizes
        .iter()
        .enumerate()
        .flat_map(|(i, &len)| [(i as u8, Vec::new()), typed_item_of(len, 100 + i as u8)])
        .collect();
    let expected = items.clone();
    let producer = std::thread::spawn(move || {
        for item in items {
            put.put(item).unwrap();
        }
        put
    });
    for want in expected {
        let item = got.get_timeout(LONG).unwrap();
        assert_eq!(
            (item.0, item.1.len()),
            (want.0, want.1.len()),
            "in its place"
        );
        assert_eq!(item, want, "whole");
    }
    drop(producer.join().unwrap());
    assert!(q.empty());
}

/// A `PUT_WAIT` of `item` asking for `wanted` places.
fn put_wait_for(wanted: u32, item: u32) -> Vec<u8> {
    wire::put_wait(wanted, None, 0, |out| crate::tag::encode(&item, out)).unwrap()
}

/// The owner puts `items` (waiting for room: places a dead holder had
/// come back once the broker sees its feeder stream end), then the queue
/// is full, and it holds `first` then `items`, in order.
fn refill_then_full(q: &Queue<u32>, first: u32, items: &[u32]) {
    for &i in items {
        q.put_timeout(i, LONG).unwrap();
    }
    assert!(matches!(q.put_nowait(99), Err(PutError::Full(99))));
    assert_eq!(q.get().unwrap(), first);
    for &i in items {
        assert_eq!(q.get().unwrap(), i);
    }
    assert!(q.empty());
}

// A small queue's `PUT_WAIT` asks for several places (its pace): the
// broker stores its item in the first and reserves the rest for its
// session (`GRANTED` 3: "your item is in, 2 places are yours"). They are
// its places, not the others': until its feeder stream ends (the holder
// died, with them unused), then they are free again, none lost, none
// extra.
#[test]
fn a_put_wait_granted_several_places_holds_them_until_its_holder_dies() {
    let (q, _remote, h) = owned_and_remote(3);
    let feeder = raw(&h, 80, Role::Feeder);
    let hostile = raw(&h, 80, Role::Ops);
    hostile.send_bytes(&put_wait_for(3, 50)).unwrap();
    assert_eq!(hostile.recv_bytes().unwrap(), wire::granted(3));
    assert_eq!(q.qsize(), 1, "its item is in");
    assert!(
        matches!(q.put_nowait(7), Err(PutError::Full(7))),
        "the other 2 places are reserved for it"
    );
    // Killed holding them.
    drop(hostile);
    drop(feeder);
    refill_then_full(&q, 50, &[1, 2]);
}

// A `PUT_WAIT` for 3 parked on a full `Queue(3)` gets all three places
// that one consumer's acknowledgement of a delivery of 3 frees, from the
// thread that reads it: its item in the first, 2 reserved; and they come
// back when its holder dies.
#[test]
fn a_parked_put_wait_gets_every_place_a_delivery_frees() {
    let (q, _remote, h) = owned_and_remote(3);
    for i in 1..=3 {
        q.put(i).unwrap();
    }
    let feeder = raw(&h, 81, Role::Feeder);
    let producer = raw(&h, 81, Role::Ops);
    producer.send_bytes(&put_wait_for(3, 50)).unwrap();
    let consumer = raw(&h, 82, Role::Ops);
    // With a timeout: acknowledged items, in flight until its `SETTLE`.
    consumer
        .send_bytes(&wire::get(3, Some(LONG), 0, &[]))
        .unwrap();
    match wire::parse_reply(&consumer.recv_bytes().unwrap()) {
        Ok(Reply::Items(items)) => assert_eq!(items.len(), 3),
        other => panic!("not 3 items: {other:?}"),
    }
    // Parked or not yet read, the put gets the 3 places once they are
    // free (never before: the delivered items hold them).
    assert!(!producer.poll(Some(Duration::ZERO)).unwrap());
    consumer.send_bytes(&wire::settle(3, 0)).unwrap();
    assert_eq!(producer.recv_bytes().unwrap(), wire::granted(3));
    assert!(matches!(q.put_nowait(7), Err(PutError::Full(7))));
    drop(producer);
    drop(feeder);
    refill_then_full(&q, 50, &[1, 2]);
}
