//! The pool of idle connections to the broker.
//!
//! Each operation takes an idle connection (or, with none idle, opens a
//! new one) and gives it back when done, so threads blocked in `get`
//! never wait for each other: a process has as many connections as it
//! ever had operations at once. The one given back last is taken first
//! (it is the one most likely still warm in the caches, and the others
//! stay unused rather than spread thin). A connection in an unknown state
//! (a late answer may still come on it) is never given back: it is
//! dropped, and the broker puts back what it had in flight there.
//!
//! Plain bookkeeping, generic over the connection: opening one is the
//! caller's.

/// Idle connections, the last given back on top.
#[derive(Debug)]
pub(super) struct Pool<L> {
    idle: Vec<L>,
}

impl<L> Default for Pool<L> {
    fn default() -> Self {
        Pool { idle: Vec::new() }
    }
}

impl<L> Pool<L> {
    /// An idle connection to use, the last given back; `None`: open one.
    pub(super) fn take(&mut self) -> Option<L> {
        self.idle.pop()
    }

    /// A connection in a known state is idle again.
    pub(super) fn give_back(&mut self, link: L) {
        self.idle.push(link);
    }

    /// Takes every idle connection out (to settle each one).
    pub(super) fn take_all(&mut self) -> Vec<L> {
        std::mem::take(&mut self.idle)
    }

    /// Connections settled are idle again.
    pub(super) fn give_back_all(&mut self, links: impl IntoIterator<Item = L>) {
        self.idle.extend(links);
    }

    /// Closes every idle connection (the queue's last handle is gone).
    pub(super) fn clear(&mut self) {
        self.idle.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_pool_means_opening_a_connection() {
        let mut p = Pool::<u64>::default();
        assert_eq!(p.take(), None);
        p.give_back(1);
        assert_eq!(p.take(), Some(1));
        assert_eq!(p.take(), None, "taken: two operations at once need two");
    }

    #[test]
    fn the_last_given_back_is_taken_first() {
        let mut p = Pool::default();
        p.give_back(1);
        p.give_back(2);
        assert_eq!(p.take(), Some(2));
        p.give_back(3);
        assert_eq!(p.take(), Some(3));
        assert_eq!(p.take(), Some(1));
    }

    #[test]
    fn settling_takes_them_all_and_gives_back_the_survivors() {
        let mut p = Pool::default();
        p.give_back_all([1, 2, 3]);
        let all = p.take_all();
        assert_eq!(all, vec![1, 2, 3]);
        assert_eq!(p.take(), None, "none idle while they are settled");
        // Connection 2 broke while settling: it is not given back.
        p.give_back_all(all.into_iter().filter(|&c| c != 2));
        assert_eq!(p.take(), Some(3));
        assert_eq!(p.take(), Some(1));
    }

    #[test]
    fn clearing_closes_every_idle_connection() {
        let mut p = Pool::default();
        p.give_back(1);
        p.clear();
        assert_eq!(p.take(), None);
        assert!(p.take_all().is_empty());
    }
}
