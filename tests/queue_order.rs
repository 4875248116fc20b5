//! FIFO order with one producer and one consumer, when the consumer's
//! buffered items go back to the queue (docs/architecture.md, "Items
//! that go back"; docs/reliability.md).
//!
//! A consumer that takes quickly gets several items per answer and
//! buffers the extras; when it then takes none for a while (here: pauses
//! of 40–80 ms, about the janitor's hold limit) its janitor gives them
//! back to the front of the queue. Its next `get` must not overtake that
//! give-back: it used to ask the broker on another connection and could
//! be answered with a later item before the given-back ones were back
//! (item 17 where 16 was due). The pauses come at pseudo-random points
//! (fixed seeds), so each round races the give-back differently.

use std::time::Duration;

use mproc::Queue;

/// Items per round.
const N: u32 = 2000;

/// A small fixed-seed generator (xorshift64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[mproc::target]
fn produce(q: Queue<u32>) {
    for i in 0..N {
        q.put(i).unwrap();
    }
}

/// Takes the `N` items, pausing 40–80 ms at about one get in 100; the
/// first item out of order, if any.
#[mproc::target]
fn consume(q: Queue<u32>, seed: u64) -> Result<(), String> {
    let mut rng = Rng(seed | 1);
    for want in 0..N {
        let got = q
            .get_timeout(Duration::from_secs(30))
            .map_err(|e| format!("item {want}: {e}"))?;
        if got != want {
            return Err(format!("got item {got} where {want} was due"));
        }
        if rng.next().is_multiple_of(100) {
            std::thread::sleep(Duration::from_millis(40 + rng.next() % 41));
        }
    }
    Ok(())
}

#[mproc::test]
fn one_consumer_sees_fifo_order_across_janitor_give_backs() -> mproc::Result<()> {
    let mut failures = Vec::new();
    for seed in [0x5eed_0001_u64, 0x5eed_0002, 0x5eed_0003] {
        let q = Queue::<u32>::new(0)?;
        // The items are all in the queue first: each get can be answered
        // with many at once.
        mproc::spawn(produce, (q.clone(),))?.join()?;
        if let Err(e) = mproc::spawn(consume, (q.clone(), seed))?.join()? {
            failures.push(format!("seed {seed:#x}: {e}"));
        }
        assert!(q.empty());
    }
    assert!(failures.is_empty(), "out of order: {failures:?}");
    Ok(())
}
