//! Runs of sealed items (several large items in one `GET` answer,
//! `SEALED_ITEMS`) against the owner's real broker: a producer and a
//! consumer in this process that go through the broker's sockets as
//! other processes' holds would (the consumer opens the objects as
//! `/proc/<pid>/fd/<n>`, here its own pid). The consumer is made to ask
//! for several items at once (a test hook), so the run does not depend on
//! how fast the test's gets come, and where a test looks at its buffer
//! its janitor keeps it (another hook: a test thread starved for 50 ms
//! would otherwise see it given back).

use super::*;
use serde_bytes::ByteBuf;

const LONG: Duration = Duration::from_secs(30);

fn remote(q: &Queue<ByteBuf>) -> &Remote {
    match &q.inner.link {
        Link::Remote(r) => r,
        _ => panic!("not a remote hold"),
    }
}

/// Item `i`: large (sealed), each of its own length and bytes.
fn item(i: usize) -> ByteBuf {
    ByteBuf::from(vec![i as u8; (200 << 10) + 7 * i])
}

fn assert_item(i: usize, got: &ByteBuf) {
    assert_eq!(got.len(), (200 << 10) + 7 * i, "item {i}'s length");
    assert!(got.iter().all(|&b| b == i as u8), "item {i}'s bytes");
}

/// A consumer's hold that asks for runs of up to 8 items; with
/// `keep_buffer`, the janitor leaves its buffer alone (the test decides
/// when what it holds goes back, not the janitor's timing).
fn run_taker(q: &Queue<ByteBuf>, keep_buffer: bool) -> Queue<ByteBuf> {
    let c = remote_hold(q);
    remote(&c).ask_at_least(8);
    if keep_buffer {
        remote(&c).keep_buffer();
    }
    c
}

/// A queue owned here, and a producer's hold with `n` large items stored
/// at the broker (in the producer's reusable objects).
fn stored(n: usize) -> (Queue<ByteBuf>, Queue<ByteBuf>) {
    let q: Queue<ByteBuf> = Queue::new(0).unwrap();
    let p = remote_hold(&q);
    for i in 0..n {
        p.put(item(i)).unwrap();
    }
    // Stored at the broker once the feeder's `SYNC` is answered.
    remote(&p).flush().unwrap();
    (q, p)
}

// A consumer that asks for several gets them as one run: each handed out
// whole and in order (read when its get comes), and the run's rest waits
// in its buffer meanwhile.
#[test]
fn a_run_of_sealed_items_is_handed_out_whole_and_in_order() {
    if !crate::sys::SEALED_ITEMS {
        return;
    }
    let n = 12;
    let (q, _p) = stored(n);
    let c = run_taker(&q, true);
    assert_item(0, &c.get_timeout(LONG).unwrap());
    assert!(remote(&c).buffered(), "no run: one item per answer");
    for i in 1..n {
        assert_item(i, &c.get_timeout(LONG).unwrap());
    }
    assert!(!remote(&c).buffered());
    // Its last acks are one-way messages: dropping the hold waits until
    // the broker has read them (a `SYNC`), then nothing is left.
    drop(c);
    assert!(q.empty());
    assert_eq!(q.qsize(), 0);
}

// A consumer that closes with part of a run untaken gives it back: the
// others get exactly those items, in order, and never the one it took.
#[test]
fn the_untaken_rest_of_a_run_goes_back_in_order() {
    if !crate::sys::SEALED_ITEMS {
        return;
    }
    let n = 6;
    let (q, _p) = stored(n);
    let c = run_taker(&q, true);
    assert_item(0, &c.get_timeout(LONG).unwrap());
    assert_item(1, &c.get_timeout(LONG).unwrap());
    assert!(remote(&c).buffered());
    c.close();
    drop(c);
    for i in 2..n {
        assert_item(i, &q.get_timeout(LONG).unwrap());
    }
    assert!(q.empty());
    // A later consumer finds nothing either.
    let d = run_taker(&q, false);
    assert!(matches!(
        d.get_timeout(Duration::from_millis(1)),
        Err(Error::Empty)
    ));
}

// Runs and single items mixed: a run stops before an inline item, and
// the inline ones after it come as items (in order all the same).
#[test]
fn a_run_stops_at_an_inline_item() {
    if !crate::sys::SEALED_ITEMS {
        return;
    }
    let q: Queue<ByteBuf> = Queue::new(0).unwrap();
    let p = remote_hold(&q);
    let small = |i: usize| ByteBuf::from(vec![i as u8; 10]);
    p.put(item(0)).unwrap();
    p.put(item(1)).unwrap();
    p.put(small(2)).unwrap();
    p.put(small(3)).unwrap();
    p.put(item(4)).unwrap();
    remote(&p).flush().unwrap();
    let c = run_taker(&q, false);
    assert_item(0, &c.get_timeout(LONG).unwrap());
    assert_item(1, &c.get_timeout(LONG).unwrap());
    for i in [2, 3] {
        assert_eq!(c.get_timeout(LONG).unwrap(), small(i));
    }
    assert_item(4, &c.get_timeout(LONG).unwrap());
    drop(c);
    assert!(q.empty());
}

// A buffered sealed item that cannot be opened (this process out of
// descriptors, say): the whole buffer goes back to the front of the
// queue, seen by the broker before the get asks again, so nothing is
// lost, nothing comes twice, and the order holds; later connections
// take large items as bytes.
#[test]
fn a_buffered_item_out_of_reach_sends_the_buffer_back_in_order() {
    if !crate::sys::SEALED_ITEMS {
        return;
    }
    let n = 6;
    let (q, _p) = stored(n);
    let c = run_taker(&q, true);
    assert_item(0, &c.get_timeout(LONG).unwrap());
    assert!(remote(&c).buffered());
    assert!(remote(&c).takes_sealed());
    remote(&c).fail_next_open();
    assert_item(1, &c.get_timeout(LONG).unwrap());
    assert!(!remote(&c).takes_sealed(), "the failed open was not seen");
    for i in 2..n {
        assert_item(i, &c.get_timeout(LONG).unwrap());
    }
    assert!(!remote(&c).buffered());
    drop(c);
    assert!(q.empty());
}
