//! The ring on its own, and with the broker's state ([`Shared`]): what
//! goes in comes out once, in order; deadlines; a corrupt ring is dead,
//! never a panic; a holder that died holding the lock leaves it usable;
//! switching off hands the items to the broker in order.

use super::*;
use crate::queue::core::{Item, Shared, Stored, Taken};
use std::time::Duration;

fn soon(ms: u64) -> Option<Instant> {
    Some(Instant::now() + Duration::from_millis(ms))
}

fn lane(places: usize) -> Lane {
    Lane::create(places).unwrap()
}

/// What another process maps: the same ring through its transfer.
fn other_hold(l: &Lane) -> Lane {
    Lane::receive(&l.transfer().unwrap(), l.places).unwrap()
}

#[test]
fn items_come_out_once_in_order_across_the_wrap() {
    let a = lane(3);
    let b = other_hold(&a);
    let mut out = Vec::new();
    for round in 0u8..10 {
        for k in 0..3 {
            assert_eq!(a.put(&[round, k], None), Put::Done);
        }
        assert_eq!(b.qsize(), Some(3));
        assert_eq!(a.put(&[9], soon(0)), Put::Full, "a full ring");
        for k in 0..3 {
            assert_eq!(b.get(&mut out, None), Got::Item);
            assert_eq!(out, [round, k]);
        }
        assert_eq!(b.get(&mut out, soon(0)), Got::Empty);
        assert!(out.is_empty(), "nothing left in the buffer after Empty");
    }
}

#[test]
fn the_largest_item_fits_and_a_larger_one_is_refused() {
    let a = lane(1);
    let big = vec![7u8; SLOT_ITEM];
    assert_eq!(a.put(&big, None), Put::Done);
    let mut out = Vec::new();
    assert_eq!(a.get(&mut out, None), Got::Item);
    assert_eq!(out, big);
    assert_eq!(a.put(&vec![7u8; SLOT_ITEM + 1], None), Put::Off);
    assert_eq!(a.qsize(), Some(0), "nothing stored");
}

#[test]
fn waits_end_at_their_deadlines() {
    let a = lane(1);
    let mut out = Vec::new();
    let t = Instant::now();
    assert_eq!(a.get(&mut out, soon(250)), Got::Empty);
    let waited = t.elapsed();
    assert!(waited >= Duration::from_millis(250), "{waited:?}");
    assert_eq!(a.put(b"x", None), Put::Done);
    let t = Instant::now();
    assert_eq!(a.put(b"y", soon(250)), Put::Full);
    assert!(t.elapsed() >= Duration::from_millis(250));
}

#[test]
fn a_waiting_get_is_woken_by_a_put_and_a_waiting_put_by_a_get() {
    let a = Arc::new(lane(1));
    let b = Arc::new(other_hold(&a));
    let getter = {
        let b = b.clone();
        std::thread::spawn(move || {
            let mut out = Vec::new();
            let got = b.get(&mut out, soon(20_000));
            (got, out)
        })
    };
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(a.put(b"one", None), Put::Done);
    assert_eq!(getter.join().unwrap(), (Got::Item, b"one".to_vec()));

    assert_eq!(a.put(b"two", None), Put::Done);
    let putter = {
        let a = a.clone();
        std::thread::spawn(move || a.put(b"three", soon(20_000)))
    };
    std::thread::sleep(Duration::from_millis(50));
    let mut out = Vec::new();
    assert_eq!(b.get(&mut out, None), Got::Item);
    assert_eq!(out, b"two");
    assert_eq!(putter.join().unwrap(), Put::Done);
    assert_eq!(b.get(&mut out, None), Got::Item);
    assert_eq!(out, b"three");
}

#[test]
fn many_threads_through_a_small_ring_every_item_once() {
    let a = Arc::new(lane(3));
    let per = 2000u32;
    let producers: Vec<_> = (0..3u32)
        .map(|p| {
            let a = Arc::new(other_hold(&a));
            std::thread::spawn(move || {
                for i in 0..per {
                    assert_eq!(a.put(&(p * per + i).to_le_bytes(), None), Put::Done);
                }
            })
        })
        .collect();
    let consumers: Vec<_> = (0..3)
        .map(|_| {
            let a = Arc::new(other_hold(&a));
            std::thread::spawn(move || {
                let mut got = Vec::new();
                let mut out = Vec::new();
                for _ in 0..per {
                    assert_eq!(a.get(&mut out, None), Got::Item);
                    got.push(u32::from_le_bytes(out[..4].try_into().unwrap()));
                }
                got
            })
        })
        .collect();
    for p in producers {
        p.join().unwrap();
    }
    let mut all: Vec<u32> = Vec::new();
    for c in consumers {
        let got = c.join().unwrap();
        // Each producer's items in its order, in every consumer's view.
        for p in 0..3 {
            let mine: Vec<u32> = got.iter().copied().filter(|v| v / per == p).collect();
            assert!(
                mine.windows(2).all(|w| w[0] < w[1]),
                "producer {p} out of order"
            );
        }
        all.extend(got);
    }
    all.sort_unstable();
    assert_eq!(all, (0..3 * per).collect::<Vec<_>>());
}

#[test]
fn a_holder_that_died_holding_the_lock_leaves_the_ring_usable() {
    let a = Arc::new(lane(2));
    assert_eq!(a.put(b"kept", None), Put::Done);
    {
        let a = a.clone();
        // A thread that ends holding the lock: its robust mutex is taken
        // over by the next locker (the kernel marks it, as for a process
        // killed holding it).
        std::thread::spawn(move || {
            let held = a.lock().unwrap();
            std::mem::forget(held);
        })
        .join()
        .unwrap();
    }
    let mut out = Vec::new();
    assert_eq!(a.get(&mut out, soon(5_000)), Got::Item);
    assert_eq!(out, b"kept");
    assert_eq!(a.put(b"next", soon(5_000)), Put::Done);
    assert_eq!(a.qsize(), Some(1));
}

#[test]
fn a_corrupt_ring_is_dead_for_everyone_and_nothing_panics() {
    // A head out of range.
    let a = lane(2);
    a.word(STATE).store((7u64 << 32) | 1, Ordering::Release);
    let mut out = Vec::new();
    assert_eq!(a.get(&mut out, soon(0)), Got::Dead);
    assert_eq!(a.put(b"x", soon(0)), Put::Dead);
    assert_eq!(a.qsize(), None);
    // A count over the places.
    let a = lane(2);
    a.word(STATE).store(3, Ordering::Release);
    assert_eq!(a.put(b"x", soon(0)), Put::Dead);
    // A slot whose length is over the slot.
    let a = lane(2);
    assert_eq!(a.put(b"x", None), Put::Done);
    // SAFETY: slot 0's length, inside the mapping.
    unsafe { std::ptr::write_unaligned(a.slot(0).cast::<u32>(), u32::MAX) };
    assert_eq!(a.get(&mut out, soon(0)), Got::Dead);
    assert!(out.is_empty());
    // A mode nobody wrote.
    let a = lane(2);
    a.word(MODE).store(99, Ordering::Release);
    assert_eq!(a.put(b"x", soon(0)), Put::Dead);
    assert!(a.switch_off().is_empty());
}

#[test]
fn a_transfer_for_another_size_or_garbage_is_refused() {
    let a = lane(3);
    let t = a.transfer().unwrap();
    assert!(Lane::receive(&t, 4).is_err(), "another size");
    assert!(Lane::receive(&t, 0).is_err());
    assert!(Lane::receive(&t[..t.len() / 2], 3).is_err(), "cut short");
    assert!(Lane::receive(b"not a transfer", 3).is_err());
    assert!(Lane::receive(&t, 3).is_ok());
}

#[test]
fn switching_off_hands_the_items_over_in_order_and_sends_everyone_to_the_broker() {
    let a = Arc::new(lane(5));
    for k in 0u8..3 {
        assert_eq!(a.put(&[k], None), Put::Done);
    }
    let mut out = Vec::new();
    assert_eq!(a.get(&mut out, None), Got::Item);
    let b = Arc::new(other_hold(&a));
    for k in 3u8..6 {
        assert_eq!(b.put(&[k], soon(5_000)), Put::Done);
    }
    // A put waiting on the full ring when the lane ends goes on elsewhere.
    let waiting = {
        let b = b.clone();
        std::thread::spawn(move || b.put(&[6], soon(20_000)))
    };
    std::thread::sleep(Duration::from_millis(50));
    let items = a.switch_off();
    assert_eq!(items, vec![vec![1], vec![2], vec![3], vec![4], vec![5]]);
    assert_eq!(waiting.join().unwrap(), Put::Off);
    assert_eq!(a.put(b"x", None), Put::Off);
    assert_eq!(b.get(&mut out, None), Got::Off);
    assert_eq!(b.qsize(), None);
    assert!(!b.on());
    assert!(a.switch_off().is_empty(), "once");
}

#[test]
fn the_owners_items_move_into_the_lane_when_it_is_made() {
    let shared = Shared::new(3);
    for k in 0u8..2 {
        assert!(matches!(
            shared.put(Item::whole(vec![k]), None, &|| true),
            Stored::Done
        ));
    }
    let t = shared.open_lane().expect("a lane for a Queue(3)");
    let remote = Lane::receive(&t, 3).unwrap();
    assert_eq!(shared.qsize(), 2);
    assert_eq!(remote.qsize(), Some(2));
    let mut out = Vec::new();
    assert_eq!(remote.get(&mut out, None), Got::Item);
    assert_eq!(out, [0]);
    // The owner's own calls now find the lane, not the store.
    assert!(matches!(
        shared.put(Item::whole(vec![9]), None, &|| true),
        Stored::Lane
    ));
    assert!(matches!(shared.take(None, 1, None, &|| true), Taken::Lane));
    // The same lane for the next holder.
    let again = shared.open_lane().unwrap();
    assert_eq!(Lane::receive(&again, 3).unwrap().qsize(), Some(1));
}

#[test]
fn a_request_through_the_broker_switches_the_lane_off_with_its_items_first() {
    let shared = Shared::new(4);
    let remote = Lane::receive(&shared.open_lane().unwrap(), 4).unwrap();
    for k in 0u8..3 {
        assert_eq!(remote.put(&[k], None), Put::Done);
    }
    // Another process's GET through the broker (a holder that cannot map
    // the ring): it gets the ring's items, in order.
    match shared.take_to_send(10, soon(1_000), &|| true) {
        Taken::Items(items) => {
            let got: Vec<&[u8]> = items.iter().map(|i| i.bytes()).collect();
            assert_eq!(got, [&[0u8][..], &[1], &[2]]);
        }
        _ => panic!("no items"),
    }
    assert!(shared.lane().is_none());
    assert_eq!(remote.put(b"late", None), Put::Off);
    assert!(shared.open_lane().is_none(), "never again");
}

#[test]
fn a_queue_already_used_through_the_broker_gets_no_lane() {
    let shared = Shared::new(2);
    let _ = shared.take_to_send(1, soon(0), &|| true);
    assert!(shared.open_lane().is_none());
    // Too large, unbounded, joinable: none either.
    assert!(Shared::new(MOST_PLACES + 1).open_lane().is_none());
    assert!(Shared::new(0).open_lane().is_none());
    assert!(Shared::new(2).without_lane().open_lane().is_none());
    // An owner's item too big for a slot: no lane (it stays in the store).
    let shared = Shared::new(2);
    assert!(matches!(
        shared.put(Item::whole(vec![0; SLOT_ITEM + 1]), None, &|| true),
        Stored::Done
    ));
    assert!(shared.open_lane().is_none());
    assert_eq!(shared.qsize(), 1);
}

#[test]
fn an_owners_get_waiting_when_the_lane_is_made_goes_through_it() {
    let shared = Arc::new(Shared::new(2));
    let waiting = {
        let shared = shared.clone();
        std::thread::spawn(move || {
            matches!(shared.take(None, 1, soon(20_000), &|| true), Taken::Lane)
        })
    };
    std::thread::sleep(Duration::from_millis(50));
    let remote = Lane::receive(&shared.open_lane().unwrap(), 2).unwrap();
    assert!(waiting.join().unwrap(), "woken, sent to the lane");
    assert_eq!(remote.put(b"x", None), Put::Done);
    let mut out = Vec::new();
    assert_eq!(shared.lane().unwrap().get(&mut out, None), Got::Item);
}
