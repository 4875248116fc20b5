//! Dials to a broker that drops connections before answering their
//! `HELLO` (as a loaded broker does to a peer whose handshake took too
//! long while others waited, or whose last handshake read came too late):
//! the holder dials again until its deadline, and says the queue is gone
//! only when nobody listens any more (issue 12 item 13).
//!
//! The "broker" is a plain [`Listener`] with the queue's key run by the
//! test, so each drop happens at a known step.

use std::thread::JoinHandle;
use std::time::Duration;

use super::*;
use crate::Listener;

const KEY: &[u8] = b"redial tests key";

/// What the stand-in broker does with each connection, in turn.
#[derive(Clone, Copy)]
enum Step {
    /// Closes it unauthenticated (a pending handshake dropped).
    DropInHandshake,
    /// Authenticates it, reads its `HELLO` and closes it unanswered.
    DropAfterHello,
    /// Answers its `HELLO` with connection id 42.
    Answer,
}

/// A stand-in broker doing `steps` with its first connections, then
/// closing its listener (nobody listens any more: a dead owner).
fn broker(steps: Vec<Step>) -> (Address, JoinHandle<()>) {
    let l = Listener::bind(Address::unique_local(), Some(KEY)).unwrap();
    let address = l.address().clone();
    let t = std::thread::spawn(move || {
        let mut kept = Vec::new();
        let last = steps.len().saturating_sub(1);
        for (i, step) in steps.into_iter().enumerate() {
            match step {
                Step::DropInHandshake => drop(l.accept_pending().unwrap()),
                Step::DropAfterHello => {
                    // A holder past its deadline may leave first.
                    let Ok(c) = l.accept() else { continue };
                    if c.recv_bytes().is_err() {
                        continue;
                    }
                    if i == last {
                        // Closed after the listener: the holder's next
                        // dial finds nobody.
                        kept.push(c);
                    }
                }
                Step::Answer => {
                    let c = l.accept().unwrap();
                    c.recv_bytes().unwrap();
                    c.send_bytes(&wire::hello_ok(42)).unwrap();
                    kept.push(c);
                }
            }
        }
        drop(l);
        drop(kept);
    });
    (address, t)
}

fn holder(address: Address) -> Remote {
    Remote::new(7, 0, address, KEY.to_vec())
}

// Every connection dropped before its answer, in its handshake or after
// its `HELLO`, is dialled again, however many: the fourth is answered.
// (Before, a drop after the handshake was `Disconnected` at once.)
#[test]
fn connections_dropped_before_their_answer_are_dialled_again() {
    use Step::*;
    let steps = vec![
        DropAfterHello,
        DropInHandshake,
        DropAfterHello,
        DropAfterHello,
        DropInHandshake,
        Answer,
    ];
    let (address, t) = broker(steps);
    let link = holder(address)
        .holdings
        .connect(Role::Ops, None)
        .unwrap_or_else(|_| panic!("no connection"));
    assert_eq!(link.id, 42);
    t.join().unwrap();
}

// A connection dropped, then nobody listens (the owner died): the queue
// is gone, without waiting for any deadline (there is none).
#[test]
fn a_dropped_connection_whose_owner_is_gone_is_disconnected() {
    let (address, t) = broker(vec![Step::DropAfterHello]);
    let r = holder(address).holdings.connect(Role::Ops, None);
    assert!(matches!(r, Err(Late::Gone(Error::Disconnected))));
    t.join().unwrap();
}

// A broker that keeps dropping a holder's connections makes its timed
// call late (a put's `Full`, a get's `Empty`), never `Disconnected`,
// while it lives.
#[test]
fn a_broker_that_keeps_dropping_makes_a_timed_call_late() {
    // A 50 ms deadline leaves time for 6 dials at most (pauses of 1, 2,
    // 4, 8 and 16 ms between them).
    let (address, t) = broker(vec![Step::DropAfterHello; 8]);
    let r = holder(address.clone())
        .holdings
        .connect(Role::Ops, client_deadline(Some(Duration::from_millis(50))));
    assert!(matches!(r, Err(Late::Late)));
    // The stand-in takes its remaining dials from this test until it
    // closes: from a holder without a deadline, which then sees nobody.
    let r = holder(address).holdings.connect(Role::Ops, None);
    assert!(matches!(r, Err(Late::Gone(Error::Disconnected))));
    t.join().unwrap();
}
