//! Small Queue items on the fast path (issue 14 item 5): what the per-item
//! savings must not break, with real processes.
//!
//! - A consumer that stops taking gives its buffered items back although a
//!   `get` from its buffer reads no clock (the janitor notices takes on
//!   its own clock: docs/architecture.md, "Batched replies with prefetch").
//! - An answer that mixes the owner's own items with runs of a producer's
//!   batch (copied as runs, `core::put_items`) carries every item intact
//!   while receive buffers are reused.

use std::collections::HashSet;
use std::time::Duration;

use mproc::{Process, Queue};

/// Takes `n` items quickly (so that it receives them in batches and keeps
/// extras in its buffer), reports each, then stops taking for good
/// without letting go of the queue.
#[mproc::target]
fn take_some_then_stop(q: Queue<u32>, report: Queue<u32>, n: u32) {
    for _ in 0..n {
        report.put(q.get().unwrap()).unwrap();
    }
    report.close();
    report.join_thread().unwrap();
    std::thread::sleep(Duration::from_secs(3600));
}

/// A consumer that is alive and holds the queue, but takes nothing more,
/// keeps nothing from the others: what it received and did not take goes
/// back (its janitor), so another process gets every other item. Without
/// that this test waits for items held in the stopped consumer's buffer,
/// and fails at the first 30 s `get_timeout`.
#[mproc::test]
fn a_consumer_that_stops_taking_gives_its_buffered_items_back() -> mproc::Result<()> {
    const N: u32 = 20_000;
    const TAKEN: u32 = 2_000;
    let q = Queue::<u32>::new(0)?;
    let report = Queue::<u32>::new(0)?;
    for i in 0..N {
        q.put(i).unwrap();
    }
    let mut c = Process::new(take_some_then_stop, (q.clone(), report.clone(), TAKEN));
    c.start()?;
    let got = (|| -> mproc::Result<(Vec<u32>, Vec<u32>)> {
        let taken = (0..TAKEN)
            .map(|_| report.get_timeout(Duration::from_secs(30)))
            .collect::<mproc::Result<_>>()?;
        // The consumer lives on, holding the queue: the rest must come
        // here.
        let rest = (0..N - TAKEN)
            .map(|_| q.get_timeout(Duration::from_secs(30)))
            .collect::<mproc::Result<_>>()?;
        Ok((taken, rest))
    })();
    // Killed whatever happened (a failed check must not leave it to the
    // exit procedure, which would wait for it).
    let alive = c.is_alive()?;
    c.kill()?;
    c.join()?;
    let (taken, rest) = got?;
    assert!(alive, "the consumer must still hold the queue");
    let mut all: HashSet<u32> = taken.iter().copied().collect();
    assert_eq!(all.len(), taken.len(), "the consumer took an item twice");
    for i in &rest {
        assert!(all.insert(*i), "item {i} delivered twice");
    }
    assert_eq!(all.len(), N as usize, "items were lost");
    assert!(q.empty());
    Ok(())
}

/// An item whose bytes tell where it came from: producer, sequence
/// number, and a payload of a length that varies with both.
fn item(producer: u8, seq: u32) -> (u8, u32, String) {
    let len = (seq as usize * 7 + producer as usize * 13) % 200;
    let payload = std::iter::repeat_n(char::from(b'a' + producer), len).collect();
    (producer, seq, payload)
}

#[mproc::target]
fn produce_items(q: Queue<Option<(u8, u32, String)>>, producer: u8, n: u32) {
    for seq in 0..n {
        q.put(Some(item(producer, seq))).unwrap();
    }
}

/// Gets until `None`; returns every item in the order it came.
#[mproc::target]
fn consume_items(q: Queue<Option<(u8, u32, String)>>) -> Vec<(u8, u32, String)> {
    let mut got = Vec::new();
    while let Some(it) = q.get().unwrap() {
        got.push(it);
    }
    got
}

/// The owner's own puts (each item a buffer of its own in the broker)
/// interleave with two producers' batches (items that are ranges of the
/// batch they came in) in the answers two consumers receive: every item
/// arrives once, byte for byte.
#[mproc::test]
fn answers_mixing_the_owners_items_and_batches_arrive_intact() -> mproc::Result<()> {
    const EACH: u32 = 20_000;
    let q = Queue::<Option<(u8, u32, String)>>::new(0)?;
    let consumers: Vec<_> = (0..2)
        .map(|_| mproc::spawn(consume_items, (q.clone(),)))
        .collect::<mproc::Result<_>>()?;
    let producers: Vec<_> = (1..=2)
        .map(|p| mproc::spawn(produce_items, (q.clone(), p, EACH)))
        .collect::<mproc::Result<_>>()?;
    for seq in 0..EACH {
        q.put(Some(item(0, seq))).unwrap();
    }
    for p in producers {
        p.join()?;
    }
    q.put(None).unwrap();
    q.put(None).unwrap();
    // (Order is not asserted: a consumer descheduled past the janitor's
    // hold limit on a busy machine gives its extras back to the front,
    // and the other may then see them after later items.)
    let mut seen: HashSet<(u8, u32)> = HashSet::new();
    for c in consumers {
        for (producer, seq, payload) in c.join()? {
            assert!(
                producer <= 2 && seq < EACH,
                "an item nobody put: {producer} {seq}"
            );
            assert_eq!(
                payload,
                item(producer, seq).2,
                "item {producer}/{seq} damaged"
            );
            assert!(seen.insert((producer, seq)), "{producer}/{seq} twice");
        }
    }
    assert_eq!(seen.len(), 3 * EACH as usize, "items were lost");
    Ok(())
}
