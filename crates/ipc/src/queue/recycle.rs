//! Message buffers used again once their items are gone.
//!
//! A received batch (a feeder's `PUT_BATCH` in the broker, an `ITEMS`
//! answer in a holder) is one buffer shared by its items, each a range of
//! it (`Arc<Vec<u8>>`). Fresh memory for every message costs a page fault
//! per 4 KiB, about as much as copying the bytes in, so the receiver
//! keeps a reference to the last few buffers it lent and reads its next
//! message into the first one nobody else holds any more (all its items
//! taken or dropped).
//!
//! Plain bookkeeping, no I/O: unit-tested below.

use std::collections::VecDeque;
use std::sync::Arc;

/// Buffers watched for reuse, at most.
const WATCHED: usize = 4;

/// A buffer with more capacity than this is not kept (a batch with a
/// large item would otherwise stay allocated for good).
const KEEP: usize = 1 << 20;

/// The buffers lent out as shared frames, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Recycler {
    lent: VecDeque<Arc<Vec<u8>>>,
}

impl Recycler {
    /// An empty buffer to receive into: a lent one nobody else holds any
    /// more (its capacity kept), else a new one.
    pub(crate) fn take(&mut self) -> Vec<u8> {
        for _ in 0..self.lent.len() {
            let Some(mut buf) = self.lent.pop_front() else {
                break;
            };
            if Arc::get_mut(&mut buf).is_some() {
                if let Ok(mut v) = Arc::try_unwrap(buf) {
                    v.clear();
                    return v;
                }
                continue;
            }
            self.lent.push_back(buf);
        }
        Vec::new()
    }

    /// Shares `buf` as a frame and watches it for reuse (unless it is
    /// large); the oldest watched buffer past [`WATCHED`] is left to its
    /// holders.
    pub(crate) fn lend(&mut self, buf: Vec<u8>) -> Arc<Vec<u8>> {
        let frame = Arc::new(buf);
        if frame.capacity() <= KEEP {
            if self.lent.len() >= WATCHED {
                self.lent.pop_front();
            }
            self.lent.push_back(frame.clone());
        }
        frame
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_comes_back_once_nobody_holds_it() {
        let mut r = Recycler::default();
        let mut v = r.take();
        v.extend_from_slice(&[1; 100]);
        let cap = v.capacity();
        let ptr = v.as_ptr();
        let frame = r.lend(v);
        let item = frame.clone();
        drop(frame);
        assert_eq!(r.take().capacity(), 0, "an item still holds it: a new one");
        drop(item);
        let again = r.take();
        assert!(again.is_empty(), "cleared");
        assert_eq!(
            (again.capacity(), again.as_ptr()),
            (cap, ptr),
            "the same memory"
        );
        assert_eq!(r.take().capacity(), 0, "handed out once");
    }

    #[test]
    fn the_oldest_free_buffer_is_reused_first_and_held_ones_stay_watched() {
        let mut r = Recycler::default();
        let held = r.lend(vec![1; 10]);
        let free = r.lend(vec![2; 20]).as_ptr();
        let got = r.take();
        assert_eq!(got.as_ptr(), free);
        drop(held);
        assert_eq!(r.take().capacity(), 10, "still watched, free now");
    }

    #[test]
    fn at_most_a_few_small_buffers_are_watched() {
        let mut r = Recycler::default();
        drop(r.lend(Vec::with_capacity(KEEP + 1)));
        assert_eq!(r.take().capacity(), 0, "a large buffer is not kept");
        for i in 1..=WATCHED + 2 {
            drop(r.lend(Vec::with_capacity(i)));
        }
        // The two oldest were let go: the watched ones are the newest.
        let caps: Vec<usize> = (0..WATCHED).map(|_| r.take().capacity()).collect();
        assert_eq!(caps, (3..=WATCHED + 2).collect::<Vec<_>>());
        assert_eq!(r.take().capacity(), 0);
    }
}
