//! Queue through the public API, with real child processes. Each test
//! names the CPython checklist item it covers (the CPython 3.11
//! behaviour checklist, items 18–24), or the promise of the guide it checks (dying holders, a gone
//! owner, typed items, grandchildren). Most checks run twice: in the
//! owner (the process that created the queue, which uses it in memory)
//! and in a child (which talks to the owner's broker).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use mproc::{Error, Process, PutError, Queue};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

#[path = "common/sys/mod.rs"]
mod sys;

// ---------------------------------------------------------------------
// Checklist 18: a full queue.

fn check_full(q: &Queue<u32>) {
    for i in 0..6 {
        q.put(i).unwrap();
    }
    assert!(q.full());
    assert_eq!(q.qsize(), 6);
    let t = Instant::now();
    match q.put_nowait(99) {
        Err(PutError::Full(item)) => assert_eq!(item, 99),
        other => panic!("put_nowait on a full queue: {other:?}"),
    }
    assert!(t.elapsed() < Duration::from_secs(1), "put_nowait waited");
    let t = Instant::now();
    match q.put_timeout(100, Duration::from_millis(100)) {
        Err(PutError::Full(item)) => assert_eq!(item, 100),
        other => panic!("put_timeout on a full queue: {other:?}"),
    }
    let waited = t.elapsed();
    assert!(waited >= Duration::from_millis(90), "{waited:?}");
    let e = q.put_nowait(1).unwrap_err();
    assert!(e.to_string().contains("Full"), "{e}");
    assert_eq!(e.into_inner(), 1);
    for i in 0..6 {
        assert_eq!(q.get().unwrap(), i);
    }
    assert!(!q.full());
}

#[mproc::target]
fn full_in_child(q: Queue<u32>) {
    check_full(&q);
}

#[mproc::test]
fn checklist_18_full_queue_put_nowait_and_put_timeout() -> mproc::Result<()> {
    let q = Queue::<u32>::new(6)?;
    check_full(&q);
    mproc::spawn(full_in_child, (q.clone(),))?.join()?;
    assert!(q.empty());
    Ok(())
}

// ---------------------------------------------------------------------
// Checklist 19: an empty queue.

fn check_empty(q: &Queue<u32>) {
    let t = Instant::now();
    assert!(matches!(q.get_nowait(), Err(Error::Empty)));
    assert!(t.elapsed() < Duration::from_secs(1), "get_nowait waited");
    let t = Instant::now();
    let e = q.get_timeout(Duration::from_millis(200)).unwrap_err();
    assert!(matches!(e, Error::Empty), "{e}");
    assert!(e.to_string().contains("Empty"), "{e}");
    let waited = t.elapsed();
    assert!(waited >= Duration::from_millis(100), "{waited:?}");
    assert!(q.empty());
}

#[mproc::target]
fn empty_in_child(q: Queue<u32>) {
    check_empty(&q);
}

#[mproc::test]
fn checklist_19_empty_queue_get_nowait_and_get_timeout() -> mproc::Result<()> {
    for maxsize in [0, 4] {
        let q = Queue::<u32>::new(maxsize)?;
        check_empty(&q);
        mproc::spawn(empty_in_child, (q.clone(),))?.join()?;
        // A get that timed out stranded nothing.
        q.put(5).unwrap();
        assert_eq!(q.get_nowait()?, 5);
    }
    Ok(())
}

// ---------------------------------------------------------------------
// Checklist 20: FIFO across processes.

#[mproc::target]
fn put_range(q: Queue<u32>, from: u32, to: u32) {
    for i in from..to {
        q.put(i).unwrap();
    }
}

#[mproc::target]
fn get_n(q: Queue<u32>, n: u32) -> Vec<u32> {
    (0..n).map(|_| q.get().unwrap()).collect()
}

#[mproc::test]
fn checklist_20_fifo_across_processes() -> mproc::Result<()> {
    for maxsize in [0, 10] {
        let q = Queue::<u32>::new(maxsize)?;
        // Child to owner.
        let p = mproc::spawn(put_range, (q.clone(), 0, 1000))?;
        let got: Vec<u32> = (0..1000).map(|_| q.get().unwrap()).collect();
        assert_eq!(got, (0..1000).collect::<Vec<_>>());
        p.join()?;
        // Child to child.
        let c = mproc::spawn(get_n, (q.clone(), 1000))?;
        let p = mproc::spawn(put_range, (q.clone(), 0, 1000))?;
        p.join()?;
        assert_eq!(c.join()?, (0..1000).collect::<Vec<_>>());
        // Owner to child.
        let c = mproc::spawn(get_n, (q.clone(), 100))?;
        for i in 0..100 {
            q.put(i).unwrap();
        }
        assert_eq!(c.join()?, (0..100).collect::<Vec<_>>());
    }
    Ok(())
}

// ---------------------------------------------------------------------
// Checklist 21: qsize 0, 1, 2, 1, 0.

fn check_qsize(q: &Queue<u32>) -> Vec<usize> {
    let mut sizes = vec![q.qsize()];
    assert!(q.empty());
    q.put(1).unwrap();
    sizes.push(q.qsize());
    assert!(!q.empty());
    q.put(2).unwrap();
    sizes.push(q.qsize());
    assert_eq!(q.get().unwrap(), 1);
    sizes.push(q.qsize());
    assert_eq!(q.get().unwrap(), 2);
    sizes.push(q.qsize());
    assert!(q.empty());
    sizes
}

#[mproc::target]
fn qsize_in_child(q: Queue<u32>) -> Vec<usize> {
    check_qsize(&q)
}

#[mproc::test]
fn checklist_21_qsize_counts_0_1_2_1_0() -> mproc::Result<()> {
    for maxsize in [0, 2] {
        let q = Queue::<u32>::new(maxsize)?;
        assert_eq!(check_qsize(&q), [0, 1, 2, 1, 0]);
        let h = mproc::spawn(qsize_in_child, (q.clone(),))?;
        assert_eq!(h.join()?, [0, 1, 2, 1, 0]);
        // The owner sees what a child put.
        mproc::spawn(put_range, (q.clone(), 0, 2))?.join()?;
        assert_eq!(q.qsize(), 2);
        assert_eq!(q.full(), maxsize == 2);
        q.get()?;
        q.get()?;
    }
    Ok(())
}

// ---------------------------------------------------------------------
// Checklist 22: put and get after close.

fn check_closed(q: &Queue<u32>) {
    let clone = q.clone();
    q.put(1).unwrap();
    assert!(matches!(q.join_thread(), Err(Error::NotClosed)));
    q.close();
    q.close();
    for queue in [q, &clone] {
        match queue.put(2) {
            Err(e @ PutError::Closed(_)) => {
                assert!(e.to_string().contains("is closed"), "{e}");
                assert_eq!(e.into_inner(), 2);
            }
            other => panic!("put after close: {other:?}"),
        }
        let e = queue.get().unwrap_err();
        assert!(matches!(e, Error::QueueClosed), "{e}");
        assert!(e.to_string().contains("is closed"), "{e}");
        assert!(matches!(queue.get_nowait(), Err(Error::QueueClosed)));
    }
    q.join_thread().unwrap();
}

#[mproc::target]
fn closed_in_child(q: Queue<u32>) {
    check_closed(&q);
}

#[mproc::test]
fn checklist_22_put_and_get_after_close_is_closed() -> mproc::Result<()> {
    let q = Queue::<u32>::new(0)?;
    // A child's close is its own: the queue goes on for the others, and
    // what the child put before closing arrives.
    mproc::spawn(closed_in_child, (q.clone(),))?.join()?;
    assert_eq!(q.get_timeout(Duration::from_secs(10))?, 1);
    q.put(3).unwrap();
    assert_eq!(mproc::spawn(get_n, (q.clone(), 1))?.join()?, [3]);
    // The owner closes its own handles.
    check_closed(&q);
    Ok(())
}

// ---------------------------------------------------------------------
// Checklist 23: an item that does not serialise.

/// Serialises as its number, or fails to serialise when `fail`.
#[derive(Debug, PartialEq)]
struct Picky {
    fail: bool,
    n: u32,
}

impl Serialize for Picky {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.fail {
            Err(serde::ser::Error::custom(
                "this item refuses to be serialised",
            ))
        } else {
            self.n.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for Picky {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Picky {
            fail: false,
            n: u32::deserialize(d)?,
        })
    }
}

fn check_unserialisable(q: &Queue<Picky>) {
    q.put(Picky { fail: false, n: 1 }).unwrap();
    match q.put(Picky { fail: true, n: 2 }) {
        Err(PutError::Encode(item, e)) => {
            assert_eq!(item, Picky { fail: true, n: 2 });
            assert!(matches!(e, Error::Encode(_)), "{e}");
        }
        other => panic!("unserialisable put: {other:?}"),
    }
    assert!(matches!(
        q.put_nowait(Picky { fail: true, n: 3 }),
        Err(PutError::Encode(..))
    ));
    q.put(Picky { fail: false, n: 4 }).unwrap();
    assert_eq!(q.qsize(), 2);
    assert_eq!(q.get().unwrap().n, 1);
    assert_eq!(q.get().unwrap().n, 4);
}

#[mproc::target]
fn unserialisable_in_child(q: Queue<Picky>) {
    check_unserialisable(&q);
}

#[mproc::test]
fn checklist_23_unserialisable_item_is_encode_error_and_queue_keeps_working() -> mproc::Result<()> {
    for maxsize in [0, 5] {
        let q = Queue::<Picky>::new(maxsize)?;
        check_unserialisable(&q);
        mproc::spawn(unserialisable_in_child, (q.clone(),))?.join()?;
        assert!(q.empty());
    }
    Ok(())
}

#[mproc::test]
fn a_connection_cannot_travel_in_a_queue() -> mproc::Result<()> {
    let q = Queue::<mproc::Connection>::new(0)?;
    let (a, _b) = mproc::pipe(true)?;
    match q.put(a) {
        Err(PutError::Encode(conn, e)) => {
            assert!(
                e.to_string()
                    .contains("only be sent to a child process in its args"),
                "{e}"
            );
            assert!(!conn.closed());
        }
        other => panic!("{other:?}"),
    }
    assert!(q.empty());
    Ok(())
}

// ---------------------------------------------------------------------
// Checklist 24: a child that puts and exits at once loses nothing.

#[mproc::target]
fn put_big_and_return(q: Queue<ByteBuf>) {
    q.put(ByteBuf::from(vec![7u8; 1 << 20])).unwrap();
    for i in 0..100u8 {
        q.put(ByteBuf::from(vec![i])).unwrap();
    }
}

#[mproc::target]
fn put_big_and_exit(q: Queue<ByteBuf>) {
    q.put(ByteBuf::from(vec![7u8; 1 << 20])).unwrap();
    for i in 0..100u8 {
        q.put(ByteBuf::from(vec![i])).unwrap();
    }
    // No return, no drop: the exit hook hands the items over.
    std::process::exit(0);
}

fn check_all_arrive(q: &Queue<ByteBuf>) {
    let big = q.get_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(big.len(), 1 << 20);
    assert!(big.iter().all(|&b| b == 7));
    for i in 0..100u8 {
        assert_eq!(
            q.get_timeout(Duration::from_secs(30)).unwrap().as_slice(),
            [i]
        );
    }
    assert!(q.empty());
}

#[mproc::test]
fn checklist_24_a_child_that_puts_then_exits_loses_nothing() -> mproc::Result<()> {
    for maxsize in [0, 1000] {
        let q = Queue::<ByteBuf>::new(maxsize)?;
        let mut p = Process::new(put_big_and_return, (q.clone(),));
        p.start()?;
        p.join()?;
        assert_eq!(p.exitcode(), Some(0));
        check_all_arrive(&q);

        let mut p = Process::new(put_big_and_exit, (q.clone(),));
        p.start()?;
        p.join()?;
        assert_eq!(p.exitcode(), Some(0));
        check_all_arrive(&q);
    }
    Ok(())
}

// ---------------------------------------------------------------------
// Many producers and consumers: every item exactly once.

#[mproc::target]
fn produce(q: Queue<Option<(u8, u32)>>, id: u8, n: u32) {
    for i in 0..n {
        q.put(Some((id, i))).unwrap();
    }
}

/// Gets until `None`; returns, per producer id, the sequence numbers in
/// the order they arrived (compact: 4 bytes an item, no hashing).
#[mproc::target]
fn consume_until_none(q: Queue<Option<(u8, u32)>>, producers: u8) -> Vec<Vec<u32>> {
    let mut got = vec![Vec::new(); producers as usize];
    while let Some((id, seq)) = q.get().unwrap() {
        // An id out of range is kept (as an extra list) so the parent
        // reports it rather than this child panicking.
        if got.len() <= id as usize {
            got.resize(id as usize + 1, Vec::new());
        }
        got[id as usize].push(seq);
    }
    got
}

fn many_to_many(maxsize: usize, producers: u8, consumers: usize, each: u32) -> mproc::Result<()> {
    let started = Instant::now();
    let q = Queue::<Option<(u8, u32)>>::new(maxsize)?;
    let cons: Vec<_> = (0..consumers)
        .map(|_| mproc::spawn(consume_until_none, (q.clone(), producers)))
        .collect::<mproc::Result<_>>()?;
    let prods: Vec<_> = (0..producers)
        .map(|id| mproc::spawn(produce, (q.clone(), id, each)))
        .collect::<mproc::Result<_>>()?;
    for p in prods {
        p.join()?;
    }
    for _ in 0..consumers {
        q.put(None).unwrap();
    }
    // One bit per (producer, seq): set when received; a bit already set
    // is a duplicate, a bit still clear at the end a loss.
    let words = (each as usize).div_ceil(64);
    let mut seen = vec![vec![0u64; words]; producers as usize];
    let mut total = 0usize;
    let mut duplicates = Vec::new();
    let mut strangers = Vec::new();
    // Items of one producer that a consumer saw after a later one of the
    // same producer. Each consumer sees each producer's items in order,
    // except for items another consumer received and gave back unused
    // (they return to the front of the queue) and a dead consumer's items
    // (architecture.md, "Batched replies with prefetch"): counted and
    // reported, not asserted, since it depends on scheduling.
    let mut out_of_order = 0usize;
    let mut furthest_back = 0u32;
    for h in cons {
        for (id, seqs) in h.join()?.into_iter().enumerate() {
            total += seqs.len();
            for w in seqs.windows(2).filter(|w| w[1] < w[0]) {
                out_of_order += 1;
                furthest_back = furthest_back.max(w[0] - w[1]);
            }
            for seq in seqs {
                if id >= producers as usize || seq >= each {
                    strangers.push((id, seq));
                    continue;
                }
                let (word, bit) = (seq as usize / 64, 1u64 << (seq % 64));
                if seen[id][word] & bit != 0 {
                    duplicates.push((id, seq));
                }
                seen[id][word] |= bit;
            }
        }
    }
    let missing: Vec<(usize, u32)> = (0..producers as usize)
        .flat_map(|id| (0..each).map(move |seq| (id, seq)))
        .filter(|&(id, seq)| seen[id][seq as usize / 64] & (1 << (seq % 64)) == 0)
        .collect();
    eprintln!(
        "many_to_many({maxsize}, {producers}, {consumers}, {each}): {total} items in {:.2} s, \
         {out_of_order} seen after a later item of their producer (at most {furthest_back} behind)",
        started.elapsed().as_secs_f64()
    );
    // (Only the first few of a kind are shown: a broken queue can get
    // every one of a million items wrong.)
    let first =
        |v: &[(usize, u32)]| format!("{} of them, first {:?}", v.len(), &v[..v.len().min(20)]);
    assert!(
        strangers.is_empty(),
        "items nobody put (producer, seq): {}",
        first(&strangers)
    );
    assert!(
        duplicates.is_empty(),
        "delivered twice (producer, seq): {}",
        first(&duplicates)
    );
    assert!(
        missing.is_empty(),
        "lost (producer, seq): {}",
        first(&missing)
    );
    assert_eq!(total, producers as usize * each as usize);
    assert!(q.empty());
    Ok(())
}

#[mproc::test]
fn four_producers_four_consumers_every_item_exactly_once() -> mproc::Result<()> {
    many_to_many(0, 4, 4, 50_000)
}

/// Issue 7's load test.
#[mproc::test]
fn a_million_items_eight_producers_eight_consumers_each_exactly_once() -> mproc::Result<()> {
    many_to_many(0, 8, 8, 125_000)
}

#[mproc::test]
fn bounded_many_to_many_every_item_exactly_once() -> mproc::Result<()> {
    many_to_many(16, 3, 3, 2_000)
}

// ---------------------------------------------------------------------
// Dying holders.

/// Says it is about to block, then blocks in `get` until killed.
#[mproc::target]
fn block_in_get(q: Queue<u32>, ready: Queue<u32>) {
    ready.put(1).unwrap();
    let _ = q.get();
    // An item that reached a consumer about to be killed: stay until
    // killed, holding it, so that the test sees it come back.
    std::thread::sleep(Duration::from_secs(3600));
}

#[mproc::test]
fn a_consumer_killed_while_blocked_in_get_leaves_the_queue_working() -> mproc::Result<()> {
    for maxsize in [0, 3] {
        let q = Queue::<u32>::new(maxsize)?;
        let ready = Queue::<u32>::new(0)?;
        let mut blocked = Process::new(block_in_get, (q.clone(), ready.clone()));
        blocked
            .start()
            .unwrap_or_else(|e| panic!("maxsize {maxsize}, step 1, starting the consumer: {e}"));
        // The bound only keeps a broken start from hanging the suite: a
        // child that has not started within the default start timeout
        // has failed anyway.
        ready
            .get_timeout(Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("maxsize {maxsize}, step 2, the consumer's ready: {e}"));
        // Give it time to be waiting in the broker (not needed for the
        // property, only to make the killed-while-waiting case the likely
        // one; killed before its GET arrives, or before the broker read
        // it, is a case the test covers as well).
        std::thread::sleep(Duration::from_millis(200));
        blocked
            .kill()
            .unwrap_or_else(|e| panic!("maxsize {maxsize}, step 3, the kill: {e}"));
        blocked
            .join()
            .unwrap_or_else(|e| panic!("maxsize {maxsize}, step 4, joining the killed: {e}"));
        assert_eq!(
            blocked.exitcode(),
            Some(-9),
            "maxsize {maxsize}, step 4: the consumer ended otherwise than by the kill"
        );

        // Its death is there to see (joined) before any item is put: none
        // goes to it, whether or not the broker's thread for it ran yet.
        let consumer = mproc::spawn(get_n, (q.clone(), 10))
            .unwrap_or_else(|e| panic!("maxsize {maxsize}, step 5, the next consumer: {e}"));
        for i in 0..10 {
            q.put(i)
                .unwrap_or_else(|e| panic!("maxsize {maxsize}, step 6, put {i}: {e}"));
        }
        let got = consumer
            .join()
            .unwrap_or_else(|e| panic!("maxsize {maxsize}, step 7, the next consumer's join: {e}"));
        assert_eq!(
            got,
            (0..10).collect::<Vec<_>>(),
            "maxsize {maxsize}, step 7: the next consumer got other items or another order"
        );
        assert!(
            q.empty(),
            "maxsize {maxsize}, step 8: items left after the next consumer took all 10 ({} left)",
            q.qsize()
        );
    }
    Ok(())
}

/// Takes items quickly (so that it receives them in batches), reports
/// each, then stops taking and waits to be killed.
#[mproc::target]
fn take_some_then_hang(q: Queue<u32>, report: Queue<u32>, n: u32) {
    for _ in 0..n {
        report.put(q.get().unwrap()).unwrap();
    }
    report.close();
    report.join_thread().unwrap();
    std::thread::sleep(Duration::from_secs(3600));
}

#[mproc::test]
fn a_consumer_killed_holding_items_loses_none() -> mproc::Result<()> {
    let q = Queue::<u32>::new(0)?;
    let report = Queue::<u32>::new(0)?;
    for i in 0..20_000 {
        q.put(i).unwrap();
    }
    let mut c = Process::new(take_some_then_hang, (q.clone(), report.clone(), 500));
    c.start()?;
    let mut taken: Vec<u32> = (0..500)
        .map(|_| report.get_timeout(Duration::from_secs(30)))
        .collect::<mproc::Result<_>>()?;
    c.kill()?;
    c.join()?;
    // Every item is still there or was taken by the killed consumer; items
    // it had received but not taken came back, and none it took (each was
    // acknowledged before its get returned).
    let mut rest = Vec::new();
    while q.qsize() > 0 {
        rest.push(q.get_timeout(Duration::from_secs(30))?);
    }
    let mut all: HashSet<u32> = rest.iter().copied().collect();
    assert_eq!(all.len(), rest.len(), "an item is in the queue twice");
    let again: Vec<u32> = taken.iter().copied().filter(|i| all.contains(i)).collect();
    assert!(again.is_empty(), "taken items came back: {again:?}");
    all.extend(taken.drain(..));
    assert_eq!(all.len(), 20_000, "items were lost");
    Ok(())
}

const BIG: usize = 64 << 20;

/// Puts 64 MiB items, each filled with its number, until killed.
#[mproc::target]
fn put_big_forever(q: Queue<ByteBuf>) {
    for i in 0u8.. {
        q.put(ByteBuf::from(vec![i; BIG])).unwrap();
    }
}

fn assert_whole(item: &ByteBuf) {
    assert_eq!(item.len(), BIG, "a torn item");
    let first = item[0];
    assert!(item.iter().all(|&b| b == first), "a merged or torn item");
}

#[mproc::test]
fn a_producer_killed_in_a_large_put_leaves_no_torn_item() -> mproc::Result<()> {
    for maxsize in [0, 1] {
        let q = Queue::<ByteBuf>::new(maxsize)?;
        let mut p = Process::new(put_big_forever, (q.clone(),));
        p.start()?;
        let first = q.get_timeout(Duration::from_secs(60))?;
        assert_whole(&first);
        let mut last = first[0];
        drop(first);
        // The producer is most likely writing the next item now.
        p.kill()?;
        p.join()?;
        while let Ok(item) = q.get_nowait() {
            assert_whole(&item);
            assert_eq!(
                item[0],
                last.wrapping_add(1),
                "items in order, none missing"
            );
            last = item[0];
        }
        // The queue works on. A new consumer takes what is there (items
        // the producer wrote completely before it died may still be on
        // their way to the owner) up to a marker the owner puts: every
        // item whole, in order, none missing in between. Bounded waits,
        // so that a regression is a failure, not a hang.
        let consumer = mproc::spawn(get_until_marker, (q.clone(),))?;
        if let Err(e) = q.put_timeout(ByteBuf::from(MARKER.to_vec()), Duration::from_secs(60)) {
            consumer.kill()?;
            panic!("maxsize {maxsize}: no room for a put after the producer was killed: {e:?}");
        }
        consumer.join_timeout(Duration::from_secs(60))?;
        if consumer.is_alive()? {
            consumer.kill()?;
            panic!("maxsize {maxsize}: a new consumer did not reach the marker within 60 s");
        }
        for item in consumer.join()? {
            let whole = Whole {
                first: item.first,
                len: BIG,
                uniform: true,
            };
            assert_eq!(item, whole, "a torn or merged item");
            assert_eq!(
                item.first,
                last.wrapping_add(1),
                "items in order, none missing"
            );
            last = item.first;
        }
    }
    Ok(())
}

const MARKER: [u8; 3] = [1, 2, 3];

/// What a consumer saw of an item: its first byte, its length, and
/// whether every byte is the first.
#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Whole {
    first: u8,
    len: usize,
    uniform: bool,
}

/// Gets items until the marker; describes those before it (a small
/// result: a large one would wait for a reader while the parent waits in
/// `join_timeout` for the process to end).
#[mproc::target]
fn get_until_marker(q: Queue<ByteBuf>) -> Vec<Whole> {
    let mut before = Vec::new();
    loop {
        let item = q.get().unwrap();
        if item.as_slice() == MARKER {
            return before;
        }
        let first = item.first().copied().unwrap_or(0);
        before.push(Whole {
            first,
            len: item.len(),
            uniform: item.iter().all(|&b| b == first),
        });
    }
}

#[mproc::target]
fn get_bytes(q: Queue<ByteBuf>) -> Vec<u8> {
    q.get().unwrap().into_vec()
}

// ---------------------------------------------------------------------
// A gone owner: Disconnected, never a hang.

/// Creates a queue, puts 7 in it, hands it out, then serves it until
/// killed.
#[mproc::target]
fn own_a_queue(back: Queue<Queue<u32>>, maxsize: usize) {
    let q = Queue::<u32>::new(maxsize).unwrap();
    q.put(7).unwrap();
    back.put(q.clone()).unwrap();
    std::thread::sleep(Duration::from_secs(3600));
}

#[mproc::target]
fn make_queue() -> Queue<u32> {
    let q = Queue::new(0).unwrap();
    q.put(1).unwrap();
    q
}

fn assert_disconnected(q: &Queue<u32>) {
    match q.put(9) {
        Err(e @ PutError::Disconnected(_)) => {
            assert!(e.to_string().contains("disconnected"), "{e}");
            assert_eq!(e.into_inner(), 9);
        }
        other => panic!("put to a queue whose owner is gone: {other:?}"),
    }
    assert!(matches!(q.put_nowait(9), Err(PutError::Disconnected(9))));
    assert!(matches!(q.get(), Err(Error::Disconnected)));
    assert!(matches!(
        q.get_timeout(Duration::from_secs(5)),
        Err(Error::Disconnected)
    ));
    assert!(matches!(q.get_nowait(), Err(Error::Disconnected)));
    assert_eq!(q.qsize(), 0);
}

#[mproc::test]
fn a_gone_owner_is_disconnected_not_a_hang() -> mproc::Result<()> {
    for maxsize in [0, 4] {
        let back = Queue::<Queue<u32>>::new(0)?;
        let mut owner = Process::new(own_a_queue, (back.clone(), maxsize));
        owner.start()?;
        let q = back.get_timeout(Duration::from_secs(30))?;
        // The queue works while its owner lives, from here and from a child.
        assert_eq!(q.get()?, 7);
        q.put(8).unwrap();
        assert_eq!(mproc::spawn(get_n, (q.clone(), 1))?.join()?, [8]);
        q.put(8).unwrap();
        assert_eq!(q.qsize(), 1);
        owner.kill()?;
        owner.join()?;
        assert_disconnected(&q);
    }
    // An owner that already exited.
    let q = mproc::spawn(make_queue, ())?.join()?;
    assert_disconnected(&q);
    Ok(())
}

// ---------------------------------------------------------------------
// Typed items.

#[mproc::target]
fn get_as_string(q: Queue<String>) -> String {
    match q.get() {
        Err(Error::TypeMismatch { expected, found }) => format!("{expected} <- {found}"),
        other => format!("unexpected: {other:?}"),
    }
}

#[mproc::test]
fn a_wrong_type_on_get_is_a_type_mismatch() -> mproc::Result<()> {
    let q = Queue::<u32>::new(0)?;
    let handle = postcard::to_stdvec(&q).map_err(Error::encode)?;
    let as_strings: Queue<String> = postcard::from_bytes(&handle).map_err(Error::decode)?;
    q.put(5).unwrap();
    match as_strings.get() {
        Err(Error::TypeMismatch { expected, found }) => {
            assert_eq!(expected, "alloc::string::String");
            assert_eq!(found, "u32");
        }
        other => panic!("{other:?}"),
    }
    // The item was consumed; the queue works on, in a child too.
    q.put(6).unwrap();
    let h = mproc::spawn(get_as_string, (as_strings.clone(),))?;
    assert_eq!(h.join()?, "alloc::string::String <- u32");
    as_strings.put("ok".to_string()).unwrap();
    assert!(matches!(q.get(), Err(Error::TypeMismatch { .. })));
    assert!(q.empty());
    Ok(())
}

// ---------------------------------------------------------------------
// Handed on to a grandchild.

#[mproc::target]
fn grandchild(q: Queue<String>) {
    let got = q.get().unwrap();
    q.put(format!("grandchild got {got}")).unwrap();
}

#[mproc::target]
fn child_starts_grandchild(q: Queue<String>) -> mproc::Result<()> {
    let mut p = Process::new(grandchild, (q.clone(),));
    p.start()?;
    p.join()?;
    q.put("child done".to_string())?;
    Ok(())
}

#[mproc::test]
fn a_queue_handed_on_to_a_grandchild_works() -> mproc::Result<()> {
    let q = Queue::<String>::new(0)?;
    let mut c = Process::new(child_starts_grandchild, (q.clone(),));
    c.start()?;
    q.put("hello".to_string()).unwrap();
    c.join()?;
    assert_eq!(c.exitcode(), Some(0));
    assert_eq!(q.get()?, "grandchild got hello");
    assert_eq!(q.get()?, "child done");
    Ok(())
}

// ---------------------------------------------------------------------
// Threads of one process share the queue.

#[mproc::target]
fn threads_get(q: Queue<u32>, threads: u32, each: u32) -> Vec<u32> {
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let q = q.clone();
            std::thread::spawn(move || (0..each).map(|_| q.get().unwrap()).collect::<Vec<_>>())
        })
        .collect();
    let mut all: Vec<u32> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    all.sort_unstable();
    all
}

#[mproc::test]
fn threads_blocked_in_get_in_one_child_all_get_items() -> mproc::Result<()> {
    let q = Queue::<u32>::new(0)?;
    let h = mproc::spawn(threads_get, (q.clone(), 4, 250))?;
    for i in 0..1000 {
        q.put(i).unwrap();
    }
    assert_eq!(h.join()?, (0..1000).collect::<Vec<_>>());
    Ok(())
}

// ---------------------------------------------------------------------
// The seed's program.

#[test]
fn the_producer_consumer_example_prints_the_seed_lines() {
    // Built by `cargo test` with the other targets; `cargo xtask` checks
    // it too.
    let Some(exe) = std::env::current_exe()
        .ok()
        .and_then(|t| Some(t.parent()?.parent()?.join("examples/producer_consumer")))
        .filter(|p| p.exists())
    else {
        eprintln!("producer_consumer example not built: skipped");
        return;
    };
    let out = sys::command_output(std::process::Command::new(exe).arg("--fast")).unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    let mut put = HashSet::new();
    let mut received = Vec::new();
    let mut stopped = HashSet::new();
    for line in &lines[..lines.len() - 1] {
        if let Some(rest) = line.strip_prefix("[producer ") {
            let (name, item) = rest.split_once("] Put: ").unwrap();
            assert!(item.starts_with(&format!("{name}-")), "{line}");
            assert!(put.insert(item.to_string()), "{line}");
        } else if let Some(rest) = line.strip_prefix("[consumer ") {
            let (name, what) = rest.split_once("] ").unwrap();
            assert!(name == "C1" || name == "C2", "{line}");
            if what == "received termination signal" {
                assert!(stopped.insert(name.to_string()), "{line}");
            } else {
                let item = what.strip_prefix("received item: ").unwrap();
                received.push(item.to_string());
            }
        } else {
            panic!("unexpected line {line:?}");
        }
    }
    assert_eq!(lines.last(), Some(&"All processes completed"));
    let want: HashSet<String> = ["P1", "P2"]
        .iter()
        .flat_map(|p| (0..5).map(move |i| format!("{p}-{i}")))
        .collect();
    assert_eq!(put, want);
    assert_eq!(received.len(), 10);
    assert_eq!(received.iter().cloned().collect::<HashSet<_>>(), want);
    assert_eq!(stopped.len(), 2);
}

// ---------------------------------------------------------------------
// Throughput, for measuring (not a check): run with
// `cargo test --release --test queue -- --ignored --nocapture throughput`.

#[mproc::target]
fn bench_produce(q: Queue<ByteBuf>, n: u64, size: usize) {
    let item = vec![0u8; size];
    for _ in 0..n {
        q.put(ByteBuf::from(item.clone())).unwrap();
    }
}

#[mproc::target]
fn bench_consume(q: Queue<ByteBuf>, n: u64) {
    for _ in 0..n {
        q.get().unwrap();
    }
}

fn throughput(maxsize: usize, ways: u64, items: u64, size: usize) -> mproc::Result<f64> {
    let q = Queue::<ByteBuf>::new(maxsize)?;
    let t = Instant::now();
    let cons: Vec<_> = (0..ways)
        .map(|_| mproc::spawn(bench_consume, (q.clone(), items / ways)))
        .collect::<mproc::Result<_>>()?;
    let prods: Vec<_> = (0..ways)
        .map(|_| mproc::spawn(bench_produce, (q.clone(), items / ways, size)))
        .collect::<mproc::Result<_>>()?;
    for h in prods {
        h.join()?;
    }
    for h in cons {
        h.join()?;
    }
    Ok(items as f64 / t.elapsed().as_secs_f64())
}

#[mproc::test]
#[ignore = "a measurement, not a check"]
fn throughput_report() -> mproc::Result<()> {
    for (maxsize, ways) in [(0, 1), (0, 4), (1000, 1), (1000, 4)] {
        let rate = throughput(
            maxsize,
            ways,
            2_000_000 / (1 + 9 * (maxsize > 0) as u64),
            64,
        )?;
        eprintln!("queue maxsize {maxsize}, {ways}P/{ways}C, 64-byte items: {rate:.0} items/s");
    }
    Ok(())
}

// ---------------------------------------------------------------------
// A producer killed holding permits (room the broker reserved for its
// puts to a bounded queue) leaves no capacity lost.

/// Puts 0, 1, 2, … (`stop` of them, or until killed), says so on `ready`
/// after the `signal`-th, then waits to be killed.
#[mproc::target]
fn put_then_hang(q: Queue<u32>, ready: Queue<u32>, signal: u32, stop: Option<u32>) {
    for i in 0.. {
        if stop == Some(i) {
            break;
        }
        q.put(i).unwrap();
        if i + 1 == signal {
            ready.put(i).unwrap();
        }
    }
    std::thread::sleep(Duration::from_secs(3600));
}

#[mproc::test]
fn a_producer_killed_holding_permits_leaves_no_capacity_lost() -> mproc::Result<()> {
    const MAXSIZE: usize = 40;
    // (signal after, stop after, wait before the kill): killed holding
    // unused permits right after a few quick puts; killed in the middle of
    // putting; killed blocked on the full queue.
    for (signal, stop, pause) in [(6, Some(6), 0), (3, None, 0), (3, None, 300)] {
        let q = Queue::<u32>::new(MAXSIZE)?;
        let ready = Queue::<u32>::new(0)?;
        let mut p = Process::new(put_then_hang, (q.clone(), ready.clone(), signal, stop));
        p.start()?;
        ready.get_timeout(Duration::from_secs(30))?;
        std::thread::sleep(Duration::from_millis(pause));
        p.kill()?;
        p.join()?;
        // What the child put and its feeder wrote is in the queue; the
        // room reserved for the rest is freed once the broker has seen
        // the child's feeder stream end (a moment after the join).
        // Its last items may still be on their way to the broker (its
        // feeder wrote them before the kill): they fill places reserved
        // for them, so the queue can become full with fewer of ours.
        let mut mine = 0u32;
        while q.qsize() < MAXSIZE {
            match q.put_timeout(1_000_000 + mine, Duration::from_secs(10)) {
                Ok(()) => mine += 1,
                Err(PutError::Full(_)) if q.qsize() == MAXSIZE => break,
                Err(e) => panic!("capacity lost: {e} at qsize {}", q.qsize()),
            }
        }
        assert_eq!(q.qsize(), MAXSIZE);
        assert!(q.full());
        assert!(matches!(q.put_nowait(7), Err(PutError::Full(7))));
        let mut items = Vec::new();
        while let Ok(i) = q.get_nowait() {
            items.push(i);
        }
        assert_eq!(items.len(), MAXSIZE);
        let (theirs, ours): (Vec<u32>, Vec<u32>) = items.iter().partition(|&&i| i < 1_000_000);
        assert_eq!(
            theirs,
            (0..theirs.len() as u32).collect::<Vec<_>>(),
            "the child's items, in order, none missing in between"
        );
        assert_eq!(ours, (0..mine).map(|i| 1_000_000 + i).collect::<Vec<_>>());
        // The queue works on: empty, all its room free.
        for i in 0..MAXSIZE as u32 {
            q.put_nowait(i).unwrap();
        }
        assert!(q.full());
    }
    Ok(())
}

/// Producers that take permits many at a time (up to `maxsize`), with
/// consumers prefetching as much: still every item once.
#[mproc::test]
fn bounded_many_to_many_with_batched_permits_every_item_exactly_once() -> mproc::Result<()> {
    many_to_many(1000, 4, 4, 25_000)
}

/// Takes `n` items, says so, then waits (alive, its connections open)
/// until told to go.
#[mproc::target]
fn take_then_wait(q: Queue<u32>, done: Queue<u32>, go: Queue<u32>, n: u32) {
    for _ in 0..n {
        q.get().unwrap();
    }
    done.put(n).unwrap();
    go.get().unwrap();
}

/// `qsize()` counts out an item as soon as a `get` in any process has
/// returned it (CPython: the semaphore is released by the `get`), also
/// when the taker's acks went on its shared ack page and it sends the
/// broker nothing more: here the consumer stays alive and silent, and the
/// owner and a third process both see an empty queue.
#[mproc::test]
fn qsize_counts_out_items_another_process_took_while_it_stays_silent() -> mproc::Result<()> {
    for maxsize in [0, 64] {
        let q = Queue::<u32>::new(maxsize)?;
        let (done, go) = (Queue::<u32>::new(0)?, Queue::<u32>::new(0)?);
        for i in 0..40 {
            q.put(i).unwrap();
        }
        let mut c = Process::new(take_then_wait, (q.clone(), done.clone(), go.clone(), 40));
        c.start()?;
        assert_eq!(done.get_timeout(Duration::from_secs(60))?, 40);
        assert_eq!(q.qsize(), 0, "maxsize {maxsize}: the owner's qsize");
        assert!(q.empty(), "maxsize {maxsize}: the owner's empty()");
        let other = mproc::spawn(qsize_of, (q.clone(),))?;
        assert_eq!(
            other.join()?,
            0,
            "maxsize {maxsize}: another holder's qsize"
        );
        go.put(0).unwrap();
        c.join()?;
        assert_eq!(c.exitcode(), Some(0));
    }
    Ok(())
}

#[mproc::target]
fn qsize_of(q: Queue<u32>) -> usize {
    q.qsize()
}
