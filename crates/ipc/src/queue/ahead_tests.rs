//! Dialling ahead ([`client`]'s `ahead`), against a real broker in this
//! process: a hold made from a handle connects while nothing asks it to,
//! and its first operation uses that connection; a wrong key or many
//! holds at once fall back to dialling on first use.

use super::*;
use std::sync::atomic::AtomicUsize;

const LONG: Duration = Duration::from_secs(20);

/// These tests' count of dials ahead under way (not the process's: the
/// tests run at once, and a test that needs its dial ahead must not find
/// the places taken by another's).
static OWN: AtomicUsize = AtomicUsize::new(0);

/// A second hold on the queue `q` owned here, through the broker as
/// another process's would be, with `key` as its proof.
fn remote_with_key(q: &Queue<u32>, key: Vec<u8>) -> Queue<u32> {
    let h: Handle = postcard::from_bytes(&postcard::to_stdvec(q).unwrap()).unwrap();
    Queue::from_inner(Arc::new(Inner {
        id: h.id,
        maxsize: 0,
        address: h.address.clone(),
        key: key.clone(),
        closed: AtomicBool::new(false),
        cancelled: AtomicBool::new(false),
        link: Link::Remote(Remote::new(h.id, 0, h.address.clone(), key)),
    }))
}

fn key_of(q: &Queue<u32>) -> Vec<u8> {
    let h: Handle = postcard::from_bytes(&postcard::to_stdvec(q).unwrap()).unwrap();
    h.key
}

fn remote(q: &Queue<u32>) -> &Remote {
    match &q.inner.link {
        Link::Remote(r) => r,
        _ => panic!("not a remote hold"),
    }
}

#[test]
fn the_first_dial_uses_the_connection_dialled_ahead() {
    let q: Queue<u32> = Queue::new(0).unwrap();
    let r = remote_with_key(&q, key_of(&q));
    remote(&r).dial_ahead_counted(&OWN);
    assert!(
        remote(&r).dialled_ahead(),
        "the handshake ahead succeeded and its connection waits"
    );
    // The first put's feeder stream is that connection.
    r.put(5).unwrap();
    assert!(!remote(&r).dialled_ahead(), "used by the first dial");
    assert_eq!(q.get_timeout(LONG).unwrap(), 5);
    // Later dials connect as before.
    q.put(6).unwrap();
    assert_eq!(r.get_timeout(LONG).unwrap(), 6);
    // Once only.
    remote(&r).dial_ahead_counted(&OWN);
    assert!(!remote(&r).dialled_ahead());
}

#[test]
fn a_dial_ahead_with_a_wrong_key_leaves_an_error_not_a_hang() {
    let q: Queue<u32> = Queue::new(0).unwrap();
    let mut key = key_of(&q);
    key[0] ^= 1;
    let r = remote_with_key(&q, key);
    remote(&r).dial_ahead_counted(&OWN);
    assert!(!remote(&r).dialled_ahead(), "the broker refused the key");
    assert!(r.get_timeout(LONG).is_err());
    // The owner's queue is untouched.
    q.put(1).unwrap();
    assert_eq!(q.get_timeout(LONG).unwrap(), 1);
}

#[test]
fn more_holds_than_dials_ahead_at_once_all_work() {
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    // Queues of their own: one hold per queue in a process.
    let owned: Vec<Queue<u32>> = (0..3 * client::MOST_AHEAD)
        .map(|_| Queue::new(0).unwrap())
        .collect();
    let holds: Vec<Queue<u32>> = owned
        .iter()
        .map(|o| {
            let r = remote_with_key(o, key_of(o));
            remote(&r).dial_ahead_counted(&COUNT);
            r
        })
        .collect();
    for (i, (o, r)) in owned.iter().zip(&holds).enumerate() {
        r.put(i as u32).unwrap();
        assert_eq!(o.get_timeout(LONG).unwrap(), i as u32);
        o.put(i as u32 + 100).unwrap();
        assert_eq!(r.get_timeout(LONG).unwrap(), i as u32 + 100);
    }
}

#[test]
fn a_hold_dropped_while_dialling_ahead_leaves_the_queue_working() {
    let q: Queue<u32> = Queue::new(0).unwrap();
    for i in 0..8 {
        let r = remote_with_key(&q, key_of(&q));
        remote(&r).dial_ahead_counted(&OWN);
        if i % 2 == 0 {
            r.put(i).unwrap();
            r.close();
            r.join_thread().unwrap();
        }
        drop(r);
    }
    for i in (0..8).step_by(2) {
        assert_eq!(q.get_timeout(LONG).unwrap(), i);
    }
    assert_eq!(q.qsize(), 0);
}
