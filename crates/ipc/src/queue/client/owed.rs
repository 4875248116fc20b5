//! What one connection owes the broker: acks it has not read yet, and
//! one-way messages it has not confirmed.
//!
//! An item taken from a delivery is acknowledged before `get` returns it,
//! one of two ways ([`ack_by`]): a store on the connection's ack page
//! (shared memory: no system call, no wake-up; the broker reads the page
//! before each message on the connection, and when it ends), or a
//! `SETTLE` on the connection, which the broker reads at once with every
//! ack before it. The last item of a delivery to a bounded queue's
//! holder always goes by `SETTLE`, so the queue's room is free again as
//! soon as a delivery is all taken (on a connection with a page, the count
//! goes on the page first and the `SETTLE` carries none, so that a size
//! read counts the item out at once: `client::ack`); without `maxsize` it
//! goes on the page alone (`client::ack_as`). One-way messages (`SETTLE`, `RELEASE`) get no answer: before a
//! process hands over (close, exit) a `SYNC` makes sure the broker has
//! seen them.
//!
//! Plain bookkeeping; the messages are the caller's.

/// How one taken item is acknowledged.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum AckBy {
    /// One more on the connection's ack page.
    Page,
    /// A `SETTLE` of one taken item on the connection.
    Settle,
}

/// How to acknowledge an item taken from a connection that has an ack
/// page (`has_page`), `last` when no other item of it is buffered.
pub(super) fn ack_by(has_page: bool, last: bool) -> AckBy {
    if has_page && !last {
        AckBy::Page
    } else {
        AckBy::Settle
    }
}

/// The state of one connection as the broker has seen it.
#[derive(Debug, Default)]
pub(super) struct Owed {
    /// A one-way message went out since the last answer.
    unsynced: bool,
    /// Acks counted on the ack page since the last message on the
    /// connection.
    unread_acks: u32,
}

impl Owed {
    /// One more ack on the connection's page.
    pub(super) fn acked_on_page(&mut self) {
        self.unread_acks = self.unread_acks.saturating_add(1);
    }

    /// Acks on the page the broker has not been made to read yet.
    #[cfg(test)]
    pub(super) fn unread(&self) -> u32 {
        self.unread_acks
    }

    /// A `SETTLE` went out: it makes the broker read the page too.
    pub(super) fn settled(&mut self) {
        self.unsynced = true;
        self.unread_acks = 0;
    }

    /// Another one-way message went out.
    pub(super) fn sent_one_way(&mut self) {
        self.unsynced = true;
    }

    /// A request went out: the broker reads the page before it.
    pub(super) fn request_sent(&mut self) {
        self.unread_acks = 0;
    }

    /// The broker answered (after everything sent before).
    pub(super) fn answered(&mut self) {
        self.unsynced = false;
    }

    /// Whether a `SETTLE` must go out to give back `returned` items and
    /// have the broker read the page now.
    pub(super) fn must_settle(&self, returned: u32) -> bool {
        returned > 0 || self.unread_acks > 0
    }

    /// Whether a `SYNC` is needed to know the broker has seen everything
    /// sent (when the caller wants to know: `sync`).
    pub(super) fn must_sync(&self, sync: bool) -> bool {
        sync && self.unsynced
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_item_of_a_delivery_is_settled_at_once() {
        assert_eq!(ack_by(true, false), AckBy::Page);
        assert_eq!(ack_by(true, true), AckBy::Settle);
        // Without a page (it could not be opened): every ack a message.
        assert_eq!(ack_by(false, false), AckBy::Settle);
        assert_eq!(ack_by(false, true), AckBy::Settle);
    }

    #[test]
    fn a_fresh_connection_owes_nothing() {
        let o = Owed::default();
        assert!(!o.must_settle(0));
        assert!(!o.must_sync(true));
    }

    #[test]
    fn page_acks_are_owed_until_a_message_makes_the_broker_read_them() {
        let mut o = Owed::default();
        o.acked_on_page();
        o.acked_on_page();
        assert!(o.must_settle(0), "close must make the broker read them");
        o.settled();
        assert!(!o.must_settle(0));
        assert!(o.must_settle(3), "untaken items to give back");
        o.acked_on_page();
        o.request_sent();
        assert!(!o.must_settle(0), "a request makes it read them");
    }

    #[test]
    fn one_way_messages_are_synced_only_when_asked() {
        let mut o = Owed::default();
        o.sent_one_way();
        assert!(o.must_sync(true));
        assert!(!o.must_sync(false));
        o.answered();
        assert!(!o.must_sync(true), "an answer confirms what came before");
        o.settled();
        assert!(o.must_sync(true));
    }

    #[test]
    fn a_flood_of_page_acks_saturates() {
        let mut o = Owed {
            unsynced: false,
            unread_acks: u32::MAX,
        };
        o.acked_on_page();
        assert!(o.must_settle(0));
    }
}
