//! FIFO order when a holder's buffered items go back to the queue (its
//! janitor's give-back) while one of its gets asks the broker: the race
//! made deterministic with a hook in the janitor, between taking the
//! items out of the buffer and giving them back.

use super::*;
use std::sync::mpsc;

const LONG: Duration = Duration::from_secs(20);

/// A queue owned here and a second hold on it that goes through the
/// broker as another process's would.
fn owned_and_remote() -> (Queue<u32>, Queue<u32>) {
    let q: Queue<u32> = Queue::new(0).unwrap();
    let remote = remote_hold(&q);
    (q, remote)
}

fn remote(q: &Queue<u32>) -> &Remote {
    match &q.inner.link {
        Link::Remote(r) => r,
        _ => panic!("not a remote hold"),
    }
}

// The janitor has taken the buffered items out and not yet given them
// back when the next get comes: that get must not be answered with a
// later item (it waits until they are back at the front).
#[test]
fn a_get_does_not_overtake_the_janitors_give_back() {
    let (q, r) = owned_and_remote();
    let n = 2000u32;
    for i in 0..n {
        q.put(i).unwrap();
    }
    let mut next = 0u32;
    let (at_give_back, got) = loop {
        // Quick gets until some items wait in the buffer.
        while !remote(&r).buffered() {
            assert!(next < n, "no get ever buffered items");
            assert_eq!(r.get_timeout(LONG).unwrap(), next);
            next += 1;
        }
        let (reclaimed, at_give_back) = mpsc::channel();
        let (got, after_get) = mpsc::channel::<()>();
        remote(&r).on_give_back(move || {
            reclaimed.send(()).unwrap();
            // Hold the give-back back while the get runs (it returns at
            // once if it does not wait for the give-back; if it does, it
            // waits for this, so the hold is bounded).
            let _ = after_get.recv_timeout(Duration::from_millis(300));
        });
        // Still buffered with the hook set: the janitor takes them out
        // later and runs it. If not, a starved test let the janitor give
        // them back already (their order kept, unhooked): it runs the
        // hook if it took it, else this holder buffers items again.
        if remote(&r).buffered() || !remote(&r).take_back_give_back_hook() {
            break (at_give_back, got);
        }
    };
    // No take: the janitor gives the buffered items back.
    at_give_back.recv_timeout(LONG).unwrap();
    let item = r.get_timeout(LONG).unwrap();
    let _ = got.send(());
    assert_eq!(item, next, "a get overtook the give-back");
    for want in next + 1..n {
        assert_eq!(r.get_timeout(LONG).unwrap(), want);
    }
}

// A get whose answer comes after its deadline (the broker holds it, as an
// owner stopped or starved past the get's timeout and grace would): the
// get is `Empty`, and the items the late answer brings are back at the
// front before this process asks again, so the next gets take them in
// order, before the ones behind them; nothing is lost.
#[test]
fn a_late_get_answer_is_not_overtaken_by_the_next_get() {
    let (q, r) = owned_and_remote();
    for i in 0..5 {
        q.put(i).unwrap();
    }
    let (release, held) = mpsc::channel::<()>();
    lock(&super::broker::HOLD_NEXT_GET).push((q.inner.id, held));
    // Its grace passes while the broker holds the GET: late for certain.
    assert!(matches!(r.get_timeout(Duration::ZERO), Err(Error::Empty)));
    // The broker answers it now, with items, to a get that has returned.
    drop(release);
    for i in 0..5 {
        assert_eq!(r.get_timeout(LONG).unwrap(), i);
    }
    // Asked through the broker, after this holder's acks (the owner's
    // own count could come before the broker read the last one).
    assert_eq!(r.qsize(), 0);
    q.put(5).unwrap();
    assert_eq!(r.get_timeout(LONG).unwrap(), 5);
}
