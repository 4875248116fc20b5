//! The last ack of a delivery to a holder of a queue without `maxsize`
//! goes on the connection's ack page alone, with no `SETTLE` after it
//! (`client::ack_as`), against the owner's real broker: the item is
//! counted out by any size read at once, never comes back, and the
//! connection's end (whatever ended it) reads the page before it gives
//! back what was not taken.

use super::*;
use crate::queue::acks::AckPage;
use crate::queue::core::Taken;
use crate::queue::wire::{self, Reply};
use crate::Client;

const LONG: Duration = Duration::from_secs(30);

fn remote(q: &Queue<u32>) -> &Remote {
    match &q.inner.link {
        Link::Remote(r) => r,
        Link::Owner(_) => panic!("not a remote hold"),
    }
}

fn shared_of(q: &Queue<u32>) -> Arc<Shared> {
    match &q.inner.link {
        Link::Owner(s) => s.clone(),
        Link::Remote(_) => panic!("not the owner"),
    }
}

// A holder that takes a whole delivery of an unbounded queue sends no
// `SETTLE` for its last item (its ack stays on the page, unread by the
// broker), yet the owner's size read counts every item out, nothing
// comes back, and when the holder closes (its hand-over makes the broker
// read the page) the queue is exactly empty. The same with a bounded
// queue sends the `SETTLE` (its room must be free at once).
#[test]
fn a_delivery_all_taken_leaves_its_last_ack_on_the_page_only_when_unbounded() {
    for maxsize in [0, 64] {
        let q: Queue<u32> = Queue::new(maxsize).unwrap();
        for i in 0..5 {
            q.put(i).unwrap();
        }
        let c = remote_hold(&q);
        remote(&c).ask_at_least(5);
        for i in 0..5 {
            assert_eq!(
                c.get_timeout(LONG).unwrap(),
                i,
                "maxsize {maxsize}: item {i}"
            );
        }
        assert!(
            !remote(&c).buffered(),
            "maxsize {maxsize}: one delivery of 5"
        );
        let unread = remote(&c).unread_page_acks();
        if maxsize == 0 {
            assert!(unread > 0, "unbounded: the last ack went by SETTLE");
        } else {
            assert_eq!(
                unread, 0,
                "bounded: the last ack must make the broker read the page"
            );
        }
        assert_eq!(
            q.qsize(),
            0,
            "maxsize {maxsize}: a size read counts them out"
        );
        assert!(
            q.get_nowait().is_err(),
            "maxsize {maxsize}: an item came back"
        );
        drop(c);
        assert_eq!(q.qsize(), 0, "maxsize {maxsize}: after the hand-over");
        assert!(
            q.get_nowait().is_err(),
            "maxsize {maxsize}: an item came back"
        );
    }
}

// A holder that counted its whole delivery on the page and sent nothing
// after it, then vanished (its connection ends with no message): the
// broker reads the page at the end, and none of the items comes back;
// one that counted 3 of 5 gets exactly the other 2 back, in order.
#[test]
fn a_connection_that_ends_after_acks_on_its_page_alone_gives_back_only_the_rest() {
    for counted in [5u8, 3] {
        let q: Queue<u32> = Queue::new(0).unwrap();
        let shared = shared_of(&q);
        for i in 0..5 {
            q.put(i).unwrap();
        }
        let h: Handle = postcard::from_bytes(&postcard::to_stdvec(&q).unwrap()).unwrap();
        let conn = Client::connect(&h.address, Some(&h.key)).unwrap();
        conn.send_bytes(&wire::hello_ops(h.id, 91, false)).unwrap();
        assert!(matches!(
            wire::parse_reply(&conn.recv_bytes().unwrap()),
            Ok(Reply::HelloOk { .. })
        ));
        conn.send_bytes(&wire::get(5, None, 0, &[])).unwrap();
        let answer = conn.recv_bytes().unwrap();
        assert!(
            matches!(wire::parse_reply(&answer), Ok(Reply::Items(r)) if r.len() == 5),
            "one delivery of 5"
        );
        conn.send_bytes(&[wire::PAGE]).unwrap();
        let Ok(Reply::AckPage { pid, value, .. }) = wire::parse_reply(&conn.recv_bytes().unwrap())
        else {
            panic!("no ACK_PAGE");
        };
        let page = AckPage::open(pid, value).unwrap();
        for _ in 0..counted {
            page.add();
        }
        drop(conn);
        // The broker takes the connection's end: what was counted is out
        // for good (before the end, all 5 are counted in the size), the
        // rest back at the front, all at once, under the queue's lock.
        let deadline = Instant::now() + LONG;
        if counted == 5 {
            while shared.qsize() != 0 {
                assert!(Instant::now() < deadline, "the end was never taken");
                std::thread::yield_now();
            }
        } else {
            let Taken::Items(back) = shared.take(None, 5, Some(deadline), &|| true) else {
                panic!("counted {counted}: the rest never came back");
            };
            let back: Vec<u32> = back
                .iter()
                .map(|i| crate::tag::decode(i.bytes()).unwrap())
                .collect();
            let expected: Vec<u32> = (u32::from(counted)..5).collect();
            assert_eq!(
                back, expected,
                "counted {counted}: only the untaken, in order"
            );
        }
        assert_eq!(shared.qsize(), 0, "counted {counted}");
        assert!(
            q.get_nowait().is_err(),
            "counted {counted}: a taken item came back"
        );
    }
}
