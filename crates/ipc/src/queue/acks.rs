//! Ack streams: how a holder says "taken" for each item before `get`
//! returns it, without waking the broker for each.
//!
//! A holder whose ops connection delivered several items at once opens an
//! *ack stream* for that connection and writes one raw byte on it per item
//! it hands out, before `get` returns the item. No broker thread waits on
//! an ack stream (no wake-up per item): the broker reads whatever has
//! arrived before it handles each message of the ops connection (and for
//! every ack stream of a session before a `QSIZE`), and reads it to its
//! end when the ops connection ends — the bytes a holder wrote before it
//! died are in the socket buffer then, so its taken items are counted out
//! before its untaken ones go back. That is what makes "an item `get`
//! returned is never delivered again" hold whenever a holder dies.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::Connection;

/// How long the broker waits for the end of an ack stream once its ops
/// connection ended (both end together when a holder dies or drops them).
const FINISH_WAIT: Duration = Duration::from_secs(2);

struct Stream {
    session: u64,
    conn: Arc<Connection>,
}

/// The broker's ack streams, by the ops connection they belong to.
#[derive(Default)]
pub(crate) struct AckStreams {
    streams: Mutex<HashMap<u64, Stream>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Reads what `conn` has now (without waiting, unless `until` is given:
/// then to its end or until then). Returns the bytes read (each an ack)
/// and whether the stream ended.
fn read_acks(conn: &Connection, until: Option<Instant>) -> (u32, bool) {
    let mut buf = [0u8; 4096];
    let mut count = 0u32;
    let stream = conn.stream();
    loop {
        let wait = match until {
            None => Duration::ZERO,
            Some(t) => t.saturating_duration_since(Instant::now()),
        };
        match stream.poll_readable(Some(wait)) {
            Ok(true) => {}
            Ok(false) => return (count, false),
            Err(_) => return (count, true),
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return (count, true),
            Ok(n) => count = count.saturating_add(n as u32),
        }
    }
}

impl AckStreams {
    /// Registers `conn` as the ack stream of ops connection `link`, and
    /// returns it (to answer its `HELLO`: registered first, so that the
    /// ops connection's messages after the holder's `HELLO_OK` find it —
    /// else the acks could fill the stream's buffer unread).
    pub(crate) fn add(&self, link: u64, session: u64, conn: Connection) -> Arc<Connection> {
        let conn = Arc::new(conn);
        let old = lock(&self.streams).insert(
            link,
            Stream {
                session,
                conn: conn.clone(),
            },
        );
        if old.is_some() {
            tracing::debug!(
                link,
                "a second ack stream for one connection replaces the first"
            );
        }
        conn
    }

    /// Forgets the ack stream of `link` (its `HELLO_OK` could not be sent).
    pub(crate) fn remove(&self, link: u64) {
        lock(&self.streams).remove(&link);
    }

    /// The acks that arrived for `link` so far.
    pub(crate) fn drain(&self, link: u64) -> u32 {
        let Some(conn) = lock(&self.streams).get(&link).map(|s| s.conn.clone()) else {
            return 0;
        };
        read_acks(&conn, None).0
    }

    /// The acks that arrived so far on every ack stream of `session`.
    pub(crate) fn drain_session(&self, session: u64) -> Vec<(u64, u32)> {
        let conns: Vec<(u64, Arc<Connection>)> = lock(&self.streams)
            .iter()
            .filter(|(_, s)| s.session == session)
            .map(|(l, s)| (*l, s.conn.clone()))
            .collect();
        conns
            .into_iter()
            .map(|(l, c)| (l, read_acks(&c, None).0))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// `link` ended: the acks of its stream to the stream's end.
    pub(crate) fn finish(&self, link: u64) -> u32 {
        let Some(s) = lock(&self.streams).remove(&link) else {
            return 0;
        };
        let (n, ended) = read_acks(&s.conn, Instant::now().checked_add(FINISH_WAIT));
        if !ended {
            tracing::warn!(link, "an ack stream outlived its connection");
        }
        n
    }
}
