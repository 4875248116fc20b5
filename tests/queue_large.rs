//! Large Queue items out of band (issue 14, item 4): an item of 128 KiB
//! or more crosses the owner's broker as a sealed memory object's
//! descriptor, not as bytes (docs/architecture.md, "Large items out of
//! band"). These tests hold it to the inline path's promises: every item
//! whole and in order, mixed with small ones, to a consumer child and to
//! the owner; an item `get` returned is never delivered again and a
//! killed consumer's items come back; nothing the broker holds leaks when
//! holders die; a producer's reused objects hold each item exactly.
//! (Where the OS has no sealed objects the same tests run on the inline
//! path.) The hostile peer (descriptors that are not sealed objects, wrong
//! sizes, a producer rewriting an object during a get) is in
//! `tests/sys/unix.rs`.

use std::collections::HashSet;
use std::time::Duration;

use mproc::{Process, Queue};
use serde_bytes::ByteBuf;

#[path = "common/sys/mod.rs"]
mod sys;

/// Sizes around the threshold and well above it, and small ones between.
const SIZES: [usize; 9] = [
    10,
    (128 << 10) - 1,
    128 << 10,
    1 << 20,
    0,
    (128 << 10) + 1,
    3 << 20,
    64,
    200_000,
];

/// Item `i` of the sequence: `SIZES[i % 9]` bytes, each `i as u8`.
fn item(i: usize) -> ByteBuf {
    ByteBuf::from(vec![i as u8; SIZES[i % SIZES.len()]])
}

/// What a consumer saw of an item: its length and whether it is exactly
/// item `i`.
fn check(i: usize, got: &ByteBuf) -> Result<(), String> {
    if got.len() != SIZES[i % SIZES.len()] || got.iter().any(|&b| b != i as u8) {
        return Err(format!(
            "item {i}: {} bytes, first {:?}",
            got.len(),
            got.first()
        ));
    }
    Ok(())
}

#[mproc::target]
fn put_sequence(q: Queue<ByteBuf>, n: usize) {
    for i in 0..n {
        q.put(item(i)).unwrap();
    }
}

#[mproc::target]
fn get_sequence(q: Queue<ByteBuf>, n: usize) -> Result<(), String> {
    for i in 0..n {
        let got = q
            .get_timeout(Duration::from_secs(60))
            .map_err(|e| format!("item {i}: {e}"))?;
        check(i, &got)?;
    }
    Ok(())
}

#[mproc::test]
fn large_and_small_items_arrive_whole_and_in_order() -> mproc::Result<()> {
    let n = 3 * SIZES.len();
    let q = Queue::<ByteBuf>::new(0)?;
    // A producer child to a consumer child (both through the broker),
    let consumer = mproc::spawn(get_sequence, (q.clone(), n))?;
    mproc::spawn(put_sequence, (q.clone(), n))?.join()?;
    consumer.join()?.map_err(mproc::Error::decode_msg)?;
    // a producer child to the owner,
    mproc::spawn(put_sequence, (q.clone(), n))?.join()?;
    for i in 0..n {
        check(i, &q.get_timeout(Duration::from_secs(60))?).map_err(mproc::Error::decode_msg)?;
    }
    // and the owner to a consumer child.
    let consumer = mproc::spawn(get_sequence, (q.clone(), n))?;
    for i in 0..n {
        q.put(item(i))?;
    }
    consumer.join()?.map_err(mproc::Error::decode_msg)?;
    assert!(q.empty());
    Ok(())
}

/// Takes `n` items, reports each one's first byte, then waits to be killed
/// (with whatever it received and did not take).
#[mproc::target]
fn take_then_hang(q: Queue<ByteBuf>, report: Queue<u8>, n: usize) {
    for k in 0..n {
        // A failure here says which step of the consumer's never came
        // (its stderr reaches the test's output).
        let it = q
            .get_timeout(LONG)
            .unwrap_or_else(|e| panic!("take_then_hang: get {k}: {e}"));
        report
            .put(it[0])
            .unwrap_or_else(|e| panic!("take_then_hang: report {k}: {e}"));
    }
    report.close();
    report
        .join_thread()
        .unwrap_or_else(|e| panic!("take_then_hang: join_thread: {e}"));
    std::thread::sleep(Duration::from_secs(3600));
}

/// Puts 1 MiB items numbered from 0 until killed; says so once the
/// broker has stored items 0 to 2 (its `qsize` waits until the broker
/// stored every batch this process wrote before it: a fact, where a put
/// only hands the item to this process's feeder thread).
#[mproc::target]
fn put_forever(q: Queue<ByteBuf>, ready: Queue<u8>) {
    for i in 0u8.. {
        q.put(ByteBuf::from(vec![i; 1 << 20])).unwrap();
        if i == 2 {
            q.qsize();
            ready.put(0).unwrap();
        }
    }
}

#[mproc::test]
fn killed_holders_lose_nothing_redeliver_nothing_and_leak_nothing() -> mproc::Result<()> {
    // In a process of its own, which owns the queue: the descriptor count
    // is the owner's alone, not disturbed by the other tests of this
    // binary.
    if let Err(e) = mproc::spawn(killed_holders, ())?.join()? {
        panic!("in the owner's process: {e}");
    }
    Ok(())
}

/// Owns a queue whose holders it kills, then counts what it holds.
#[mproc::target]
fn killed_holders() -> Result<(), String> {
    killed_holders_here()
}

/// A long wait for what is certain to come: a failure names the wait.
const LONG: Duration = Duration::from_secs(60);

/// `what`'s error, naming the wait (or step) it came from.
fn at<T, E: std::fmt::Display>(what: &str, r: Result<T, E>) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {e}"))
}

fn killed_holders_here() -> Result<(), String> {
    // `MPROC_QL_TRACE=1`: this owner's debug log (and its children's) on
    // stderr, to follow the broker's connections when the open failure
    // (a) of docs/reliability.md "Loaded runs" comes again.
    if std::env::var_os("MPROC_QL_TRACE").is_some() {
        mproc::log_to_stderr(tracing::Level::DEBUG);
    }
    let q = at("new queue", Queue::<ByteBuf>::new(0))?;
    let report = at("new queue", Queue::<u8>::new(0))?;
    // Warm up the broker's threads and connections before counting.
    at(
        "warm-up producer",
        mproc::spawn(put_sequence, (q.clone(), 1)).and_then(|h| h.join()),
    )?;
    at("warm-up get", q.get())?;
    let before = sys::open_descriptors();
    let shm_before = std::fs::read_dir("/dev/shm").map(|d| d.count()).ok();

    // A consumer killed holding large items: the ones it took never come
    // back, the others all do.
    for i in 0..40u8 {
        at("owner's put", q.put(ByteBuf::from(vec![i; 300 << 10])))?;
    }
    // Through a producer child too, so that the broker holds descriptors.
    let mut c = Process::new(take_then_hang, (q.clone(), report.clone(), 10usize));
    at("start the consumer", c.start())?;
    let mut taken = HashSet::new();
    for k in 0..10 {
        let what = format!("the consumer's report of its item {k} of 10");
        taken.insert(at(&what, report.get_timeout(LONG))?);
    }
    at("kill the consumer", c.kill())?;
    at("join the consumer", c.join())?;
    // Every item it did not take comes back: a count, not the queue's
    // size, which also counts an item it took until the broker reads its
    // ack (seen under Wine: still counted 60 s after its death).
    let mut rest = HashSet::new();
    for k in 0..40 - taken.len() {
        let it = q.get_timeout(LONG).map_err(|e| {
            format!(
                "get {k} of the {} items back from the killed consumer (qsize {}): {e}",
                40 - taken.len(),
                q.qsize()
            )
        })?;
        assert_eq!(it.len(), 300 << 10);
        assert!(!taken.contains(&it[0]), "item {} delivered twice", it[0]);
        assert!(rest.insert(it[0]), "item {} twice in the queue", it[0]);
    }
    assert_eq!(taken.len() + rest.len(), 40, "items lost");

    // A producer killed while putting: every item whole, in order.
    let ready = at("new queue", Queue::<u8>::new(0))?;
    let mut p = Process::new(put_forever, (q.clone(), ready.clone()));
    at("start the producer", p.start())?;
    at("the producer's ready", ready.get_timeout(LONG))?;
    at("kill the producer", p.kill())?;
    at("join the producer", p.join())?;
    // Every holder gone: the owner's own descriptors count again.
    drop(p);
    drop(c);
    let mut next = 0u8;
    let mut take = |it: ByteBuf| {
        assert_eq!(it.len(), 1 << 20, "a torn item");
        assert!(
            it.iter().all(|&b| b == next),
            "item {next}: torn or out of order"
        );
        next += 1;
    };
    // Items 0 to 2 were stored before it said so: each is certain.
    for i in 0..3 {
        let what = format!("get of item {i}, stored before the producer said so");
        take(at(&what, q.get_timeout(LONG))?);
    }
    // What else of it arrived whole comes next, in order, until the
    // broker has let go of the dead producer: the queue empty and (where
    // they can be counted) no more descriptors open than before. Never
    // a silence: a broker starved of CPU may store a batch the dead
    // producer wrote long after the producer died.
    // (Twice the usual wait: the size may count an item the killed
    // consumer took until the broker reads its ack, see above.)
    let deadline = std::time::Instant::now() + 2 * LONG;
    loop {
        match q.get_timeout(Duration::from_millis(100)) {
            Ok(it) => take(it),
            Err(mproc::Error::Empty) => {
                let (now, left) = (sys::open_descriptors(), q.qsize());
                if left == 0 && before.zip(now).is_none_or(|(b, a)| a <= b) {
                    break;
                }
                if std::time::Instant::now() > deadline {
                    return Err(format!(
                        "the broker still holds the dead producer's items or connections \
                         after 120 s: qsize {left}, descriptors before {before:?}, now {now:?}"
                    ));
                }
            }
            Err(e) => return Err(format!("draining the dead producer's items: {e}")),
        }
    }

    // Everything taken, every holder gone: the owner holds no more
    // descriptors than before (the broker closed the dead holders'
    // connections and every sealed object: the loop above waited for
    // it), and nothing was left in /dev/shm.
    if let Some(b) = shm_before {
        let a = std::fs::read_dir("/dev/shm")
            .map(|d| d.count())
            .unwrap_or(0);
        assert!(a <= b, "/dev/shm entries before {b}, after {a}");
    }
    Ok(())
}

/// Large sizes that go up and down: a reused object often holds an item
/// shorter than the one before.
const STEPS: [usize; 6] = [
    3 << 20,
    200_000,
    1 << 20,
    128 << 10,
    (128 << 10) + 1,
    (2 << 20) + 5,
];

fn step_item(i: usize) -> ByteBuf {
    ByteBuf::from(vec![i as u8; STEPS[i % STEPS.len()]])
}

/// Puts `n` large items, each once the consumer said it took the one
/// before (so that its object is free again); returns how many reusable
/// objects it holds at the end.
#[mproc::target]
fn put_in_step(q: Queue<ByteBuf>, back: Queue<u8>, n: usize) -> Result<Option<usize>, String> {
    for i in 0..n {
        q.put(step_item(i)).map_err(|e| format!("put {i}: {e}"))?;
        back.get_timeout(Duration::from_secs(60))
            .map_err(|e| format!("step {i}: {e}"))?;
    }
    Ok(sys::item_objects())
}

#[mproc::target]
fn get_in_step(q: Queue<ByteBuf>, back: Queue<u8>, n: usize) -> Result<(), String> {
    for i in 0..n {
        let got = q
            .get_timeout(Duration::from_secs(60))
            .map_err(|e| format!("item {i}: {e}"))?;
        let want = STEPS[i % STEPS.len()];
        if got.len() != want || got.iter().any(|&b| b != i as u8) {
            return Err(format!(
                "item {i}: {} bytes (want {want}), first {:?}, last {:?}",
                got.len(),
                got.first(),
                got.last()
            ));
        }
        back.put(0).map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[mproc::test]
fn reused_objects_hold_each_item_exactly_and_stay_few() -> mproc::Result<()> {
    // A producer's memory objects are written again once the broker says
    // their item was consumed: every item must be exactly itself (no byte
    // of the longer item the object held before), and the producer keeps
    // a bounded number of them (16), not one per item.
    let n = 4 * STEPS.len();
    let q = Queue::<ByteBuf>::new(0)?;
    let back = Queue::<u8>::new(0)?;
    let consumer = mproc::spawn(get_in_step, (q.clone(), back.clone(), n))?;
    let held = mproc::spawn(put_in_step, (q.clone(), back.clone(), n))?
        .join()?
        .map_err(mproc::Error::decode_msg)?;
    consumer.join()?.map_err(mproc::Error::decode_msg)?;
    if let Some(held) = held {
        assert!(
            (1..=16).contains(&held),
            "the producer holds {held} reusable objects"
        );
    }
    assert!(q.empty());
    Ok(())
}
