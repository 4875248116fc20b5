//! Ack pages: how a holder says "taken" for each item before `get`
//! returns it, with no system call and no wake-up per item.
//!
//! A holder whose ops connection delivered several items at once asks the
//! broker for that connection's *ack page* (a `PAGE` request on that
//! connection): a small shared-memory object the broker creates and
//! keeps mapped, and the holder opens from the broker's process
//! ([`sys::import_handle`]). Its first word counts the items taken from
//! that connection's deliveries: the holder adds one (a plain store to
//! shared memory) before `get` returns an item. The broker reads the
//! count before it handles each message of the ops connection (and for
//! every page of the queue before a size is answered, to the owner or a
//! `QSIZE`), and once more when the ops
//! connection ends. A store made before the holder died is in the page
//! then, whatever killed it, so its taken items are counted out before
//! its untaken ones go back. That is what makes "an item `get` returned
//! is never delivered again" hold whenever a holder dies.
//!
//! The count is the holder's word, not to be trusted: the broker takes
//! only its growth since the last read, and the queue's core never counts
//! more acks than the connection has items in flight.

use crate::util::lock::lock;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::sys;

/// Bytes of an ack page (the kernel maps a whole page anyway).
const PAGE_LEN: usize = 64;

/// A mapped ack page, on either side.
pub(crate) struct AckPage {
    map: sys::Mapping,
}

impl AckPage {
    /// A new page, count 0 (broker side).
    fn create() -> std::io::Result<AckPage> {
        Ok(AckPage {
            map: sys::Mapping::anonymous(PAGE_LEN)?,
        })
    }

    /// Opens the page process `pid` holds as handle `value` (holder side).
    pub(crate) fn open(pid: u32, value: u64) -> std::io::Result<AckPage> {
        let map =
            sys::Mapping::from_handle(sys::import_handle(pid, value, sys::Access::ReadWrite)?)?;
        if map.len() < 8 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "an ack page too small",
            ));
        }
        Ok(AckPage { map })
    }

    fn count(&self) -> &AtomicU64 {
        // SAFETY: the mapping is at least 8 bytes long (checked on open,
        // made so on create) and page-aligned, so 8-aligned; it lives as
        // long as `self`; every access to it is atomic.
        unsafe { &*self.map.ptr().cast::<AtomicU64>() }
    }

    /// Counts one more item taken (holder side; one thread at a time
    /// acknowledges for a connection).
    pub(crate) fn add(&self) {
        let c = self.count();
        c.store(c.load(Ordering::Relaxed).wrapping_add(1), Ordering::Release);
    }
}

struct Page {
    page: AckPage,
    /// The count at the last read.
    seen: u64,
}

impl Page {
    /// The acks since the last read.
    fn read(&mut self) -> u32 {
        let now = self.page.count().load(Ordering::Acquire);
        let new = now.wrapping_sub(self.seen);
        self.seen = now;
        u32::try_from(new).unwrap_or(u32::MAX)
    }
}

/// A live ops connection and its page, once asked for.
struct Link {
    session: u64,
    /// The queue the connection holds.
    queue: u64,
    page: Option<Page>,
}

impl Link {
    fn read(&mut self) -> u32 {
        self.page.as_mut().map_or(0, Page::read)
    }
}

/// The broker's live ops connections and their ack pages. A page is made
/// only for a live ops connection of the asker's session, and goes with
/// the connection: a holder cannot make the broker keep pages (each a
/// descriptor) for connections that ended or never were.
#[derive(Default)]
pub(crate) struct AckPages {
    links: Mutex<HashMap<u64, Link>>,
}

impl AckPages {
    /// Ops connection `link` of `session`, holding `queue`, is open
    /// (before its `HELLO_OK`).
    pub(crate) fn open(&self, link: u64, session: u64, queue: u64) {
        lock(&self.links).insert(
            link,
            Link {
                session,
                queue,
                page: None,
            },
        );
    }

    /// Makes the ack page of ops connection `link` (or finds the one it
    /// has) and returns where a holder opens it: this process's id and
    /// the page's handle value. Registered before the answer, so that the
    /// ops connection's next message reads it.
    pub(crate) fn add(&self, link: u64, session: u64) -> std::io::Result<(u32, u64)> {
        let mut links = lock(&self.links);
        let Some(l) = links.get_mut(&link).filter(|l| l.session == session) else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "no such open connection of this session",
            ));
        };
        if l.page.is_none() {
            l.page = Some(Page {
                page: AckPage::create()?,
                seen: 0,
            });
        }
        let p = l
            .page
            .as_ref()
            .ok_or_else(|| std::io::Error::other("no page"))?;
        Ok((std::process::id(), sys::handle_value(p.page.map.handle())))
    }

    /// The acks that arrived for `link` since the last read.
    pub(crate) fn drain(&self, link: u64) -> u32 {
        lock(&self.links).get_mut(&link).map_or(0, Link::read)
    }

    /// The acks that arrived so far on every ack page of `queue`'s
    /// connections, whoever holds them, given to `apply` (which counts
    /// them out of the queue) before the pages' lock is released: read
    /// before a size is answered, so that an item any holder's `get`
    /// returned is counted out even while that holder says nothing more
    /// (CPython's `get` releases the semaphore `qsize` reads).
    ///
    /// Applied under the lock: a connection that ends meanwhile
    /// ([`finish`](Self::finish), then its unacknowledged items go back)
    /// finds them applied. Read here and applied after the lock, they
    /// were lost to it: its end put back the items they count out, which
    /// a `get` had returned (delivered twice).
    pub(crate) fn apply_queue(&self, queue: u64, apply: impl FnOnce(&[(u64, u32)])) {
        let mut links = lock(&self.links);
        let acks: Vec<(u64, u32)> = links
            .iter_mut()
            .filter(|(_, l)| l.queue == queue)
            .map(|(id, l)| (*id, l.read()))
            .filter(|(_, n)| *n > 0)
            .collect();
        apply(&acks);
    }

    /// `link` ended: its last acks; it and its page go.
    pub(crate) fn finish(&self, link: u64) -> u32 {
        lock(&self.links).remove(&link).map_or(0, |mut l| l.read())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What [`AckPages::apply_queue`] gives to apply for `queue`; checks
    /// it is applied while the pages stay locked (a connection's end
    /// cannot come between the read and the apply).
    fn read_queue(pages: &AckPages, queue: u64) -> Vec<(u64, u32)> {
        let mut got = Vec::new();
        pages.apply_queue(queue, |acks| {
            assert!(
                pages.links.try_lock().is_err(),
                "acks applied after the pages' lock was released"
            );
            got = acks.to_vec();
        });
        got
    }

    // The exactly-once hand-over (issue 12 item 6) through a real shared
    // page: what a holder counts is what the broker reads, once.
    #[test]
    fn the_broker_reads_each_ack_once_through_the_page() {
        let pages = AckPages::default();
        assert!(pages.add(3, 10).is_err(), "a page for no open connection");
        pages.open(3, 10, 7);
        let (pid, value) = pages.add(3, 10).unwrap();
        let holder = AckPage::open(pid, value).unwrap();
        assert_eq!(pages.drain(3), 0);
        holder.add();
        holder.add();
        assert_eq!(pages.drain(3), 2);
        assert_eq!(pages.drain(3), 0);
        holder.add();
        assert_eq!(read_queue(&pages, 8), vec![]);
        assert_eq!(read_queue(&pages, 7), vec![(3, 1)]);
        holder.add();
        // The holder's last ack before its connection ended still counts.
        assert_eq!(pages.finish(3), 1);
        assert_eq!(pages.finish(3), 0);
        assert_eq!(pages.drain(3), 0);
        assert!(pages.add(3, 10).is_err(), "a page for an ended connection");
    }

    // A hostile or confused holder: a request for another session's
    // connection is refused; a count that jumps or
    // goes backwards gives a bounded number (the core never acks more
    // than the connection has in flight), never a panic.
    #[test]
    fn a_hostile_count_is_bounded_and_another_session_is_refused() {
        let pages = AckPages::default();
        pages.open(4, 1, 1);
        let (pid, value) = pages.add(4, 1).unwrap();
        assert!(pages.add(4, 2).is_err());
        assert_eq!(pages.add(4, 1).unwrap().0, pid);
        let holder = AckPage::open(pid, value).unwrap();
        holder.count().store(u64::MAX - 1, Ordering::Release);
        assert_eq!(pages.drain(4), u32::MAX);
        holder.count().store(5, Ordering::Release);
        assert_eq!(pages.drain(4), 7);
        assert!(AckPage::open(pid, u64::from(u32::MAX)).is_err());
    }
}
