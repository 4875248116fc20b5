//! Small bounded queues (issue 12 item 11): puts and gets that wait are
//! parked at the owner's broker and answered by the thread that makes them
//! answerable (docs/architecture.md, "Parked requests"); a put that used
//! its last permit writes its item itself. What must not change: every
//! item once, `maxsize` never exceeded, a producer killed waiting for room
//! leaks no place, a consumer killed waiting for an item loses none.

use std::collections::HashSet;
use std::time::Duration;

use mproc::{Process, PutError, Queue};

/// Puts `(id, 0..n)`.
#[mproc::target]
fn produce(q: Queue<(u32, u32)>, id: u32, n: u32) {
    for seq in 0..n {
        q.put((id, seq)).unwrap();
    }
}

/// Takes `n` items.
#[mproc::target]
fn consume(q: Queue<(u32, u32)>, n: u32) -> Vec<(u32, u32)> {
    (0..n).map(|_| q.get().unwrap()).collect()
}

// Two producers and two consumers, all in children, through queues of 1
// and 3 places (the bench rows' shape): each item arrives once, and the
// owner, asking all along, never sees more than `maxsize` items.
#[mproc::test]
fn two_by_two_through_one_and_three_places_every_item_once_never_over() -> mproc::Result<()> {
    const EACH: u32 = 400;
    for maxsize in [1usize, 3] {
        let q = Queue::<(u32, u32)>::new(maxsize)?;
        let consumers = [
            mproc::spawn(consume, (q.clone(), EACH))?,
            mproc::spawn(consume, (q.clone(), EACH))?,
        ];
        let mut producers = [
            Process::new(produce, (q.clone(), 0, EACH)),
            Process::new(produce, (q.clone(), 1, EACH)),
        ];
        for p in &mut producers {
            p.start()?;
        }
        let mut most = 0;
        while producers.iter_mut().any(|p| p.is_alive().unwrap_or(false)) {
            let n = q.qsize();
            most = most.max(n);
            assert!(n <= maxsize, "{n} items in a queue of {maxsize}");
            assert!(!q.full() || q.qsize() <= maxsize);
        }
        let mut seen = HashSet::new();
        for c in consumers {
            for item in c.join()? {
                assert!(seen.insert(item), "{item:?} delivered twice");
            }
        }
        for p in &mut producers {
            p.join()?;
            assert_eq!(p.exitcode(), Some(0));
        }
        assert_eq!(seen.len(), 2 * EACH as usize, "items lost");
        assert!(q.empty());
        eprintln!("maxsize {maxsize}: at most {most} items seen by the owner");
    }
    Ok(())
}

/// Says it is about to put, then puts (blocking: the queue is full).
#[mproc::target]
fn put_into_full(q: Queue<u32>, ready: Queue<u32>) {
    ready.put(1).unwrap();
    let _ = q.put(99);
    std::thread::sleep(Duration::from_secs(3600));
}

// A producer killed while its put waits for room in a full queue of one
// (its request for a place parked at the broker) — or a moment before or
// after, whichever the kill hits: the place is not lost. The queue takes
// exactly one item again once the old one is out, whatever happened to
// the killed producer's.
#[mproc::test]
fn a_producer_killed_waiting_for_the_one_place_leaks_it_not() -> mproc::Result<()> {
    // The pause makes each case likely (killed before its request reached
    // the broker, while parked); the property holds whatever the timing.
    for pause in [0, 30, 150] {
        let q = Queue::<u32>::new(1)?;
        let ready = Queue::<u32>::new(0)?;
        q.put(1)?;
        let mut p = Process::new(put_into_full, (q.clone(), ready.clone()));
        p.start()?;
        ready.get_timeout(Duration::from_secs(30))?;
        std::thread::sleep(Duration::from_millis(pause));
        p.kill()?;
        p.join()?;
        assert_eq!(q.get_timeout(Duration::from_secs(10))?, 1);
        // The killed put never got its place, or got it and its item came
        // (a put that was answered before the kill): either way one place.
        match q.get_nowait() {
            Ok(99) | Err(_) => {}
            Ok(other) => panic!("{other} came from nowhere"),
        }
        q.put_timeout(2, Duration::from_secs(10))
            .map_err(|e| mproc::Error::Io(std::io::Error::other(format!("place lost: {e}"))))?;
        assert!(q.full());
        assert!(matches!(q.put_nowait(3), Err(PutError::Full(3))));
        assert_eq!(q.get()?, 2);
        assert!(q.empty());
    }
    Ok(())
}

/// Says it is about to get, then gets (blocking: the queue is empty).
#[mproc::target]
fn get_from_empty(q: Queue<u32>, ready: Queue<u32>) {
    ready.put(1).unwrap();
    let _ = q.get();
    std::thread::sleep(Duration::from_secs(3600));
}

/// Takes one item, with a deadline.
#[mproc::target]
fn get_one(q: Queue<u32>) -> Option<u32> {
    q.get_timeout(Duration::from_secs(20)).ok()
}

// A consumer killed while its get waits (parked at the broker), or a
// moment around it: an item put afterwards goes to the next consumer, and
// the queue's one place is free again.
#[mproc::test]
fn a_consumer_killed_waiting_for_an_item_loses_none() -> mproc::Result<()> {
    // As above: the pause only makes each case likely.
    for pause in [0, 30, 150] {
        let q = Queue::<u32>::new(1)?;
        let ready = Queue::<u32>::new(0)?;
        let mut c = Process::new(get_from_empty, (q.clone(), ready.clone()));
        c.start()?;
        ready.get_timeout(Duration::from_secs(30))?;
        std::thread::sleep(Duration::from_millis(pause));
        c.kill()?;
        c.join()?;
        q.put(7)?;
        let next = mproc::spawn(get_one, (q.clone(),))?;
        assert_eq!(next.join()?, Some(7));
        q.put_timeout(8, Duration::from_secs(10))
            .map_err(|e| mproc::Error::Io(std::io::Error::other(format!("place lost: {e}"))))?;
        assert_eq!(q.get()?, 8);
    }
    Ok(())
}

/// Puts `0..n` as fast as it can (its later `PUT_WAIT`s ask for several
/// places: the rest are held), says so, then hangs holding them.
#[mproc::target]
fn put_quickly_then_hang(q: Queue<u32>, ready: Queue<u32>, n: u32) {
    for i in 0..n {
        q.put(i).unwrap();
    }
    ready.put(1).unwrap();
    std::thread::sleep(Duration::from_secs(3600));
}

// A producer killed holding places of a `Queue(3)` that its puts' grants
// gave it beyond their own items: once the broker has seen it die, the
// queue takes exactly 3 items again — the child's (in order, none
// missing between) and the owner's — never fewer (a place lost) nor more.
#[mproc::test]
fn a_producer_killed_holding_places_of_a_small_queue_leaks_none() -> mproc::Result<()> {
    const MAXSIZE: usize = 3;
    for n in [1u32, 2] {
        let q = Queue::<u32>::new(MAXSIZE)?;
        let ready = Queue::<u32>::new(0)?;
        let mut p = Process::new(put_quickly_then_hang, (q.clone(), ready.clone(), n));
        p.start()?;
        ready.get_timeout(Duration::from_secs(30))?;
        p.kill()?;
        p.join()?;
        let mut mine = 0u32;
        while q.qsize() < MAXSIZE {
            match q.put_timeout(1_000 + mine, Duration::from_secs(10)) {
                Ok(()) => mine += 1,
                Err(PutError::Full(_)) if q.qsize() == MAXSIZE => break,
                Err(e) => panic!("a place lost: {e} at qsize {}", q.qsize()),
            }
        }
        assert!(q.full());
        assert!(matches!(q.put_nowait(7), Err(PutError::Full(7))));
        let mut items = Vec::new();
        while let Ok(i) = q.get_nowait() {
            items.push(i);
        }
        let (theirs, ours): (Vec<u32>, Vec<u32>) = items.iter().partition(|&&i| i < 1_000);
        assert_eq!(theirs, (0..n).collect::<Vec<_>>(), "the child's items");
        assert_eq!(ours, (0..mine).map(|i| 1_000 + i).collect::<Vec<_>>());
        assert_eq!(items.len(), MAXSIZE);
    }
    Ok(())
}
