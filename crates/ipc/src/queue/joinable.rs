//! `JoinableQueue<T>` and `SimpleQueue<T>`: CPython's
//! `multiprocessing.JoinableQueue` and `multiprocessing.SimpleQueue`, on
//! the [`Queue`] machinery.
//!
//! The owner's broker keeps the count of unfinished items for every queue
//! it serves: one more per item stored, one less per `task_done`. So the
//! count is one number in one place, whichever process puts, gets or
//! calls `task_done`, and whoever dies.

use std::fmt;
use std::ops::Deref;
use std::time::Duration;

use serde::de::{DeserializeOwned, Deserializer};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};

use super::core::Shared;
use super::Queue;
use crate::{PutError, Result};

/// A [`Queue`] that counts unfinished items: CPython's
/// `multiprocessing.JoinableQueue`.
///
/// Every [`Queue`] method works on it (and it dereferences to one, for
/// code that takes a `&Queue<T>`). Each item
/// put counts as unfinished until some process calls
/// [`task_done`](Self::task_done) for it; [`join`](Self::join) waits until
/// none is. The count lives with the queue's owner, so it is exact across
/// processes.
///
/// When a consumer dies: items it had received in advance but `get` had
/// not returned go back to the queue and stay unfinished (the consumer
/// that gets them next calls `task_done`). Items `get` had returned to
/// it stay unfinished for good — nobody else will get them — so `join`
/// then waits until the count is brought down otherwise (as in CPython;
/// use a consumer protocol with acknowledgements if consumers may die).
///
/// ```
/// use mproc_ipc::{Error, JoinableQueue};
///
/// let q = JoinableQueue::<u32>::new(0)?;
/// q.put(1).unwrap();
/// q.put(2).unwrap();
/// let worker = {
///     let q = q.clone();
///     std::thread::spawn(move || -> mproc_ipc::Result<u32> {
///         let mut sum = 0;
///         for _ in 0..2 {
///             sum += q.get()?;
///             q.task_done()?;
///         }
///         Ok(sum)
///     })
/// };
/// q.join()?; // returns once both items are done
/// assert_eq!(worker.join().unwrap()?, 3);
/// assert!(matches!(q.task_done(), Err(Error::TaskDoneTooManyTimes)));
/// # Ok::<(), mproc_ipc::Error>(())
/// ```
pub struct JoinableQueue<T> {
    queue: Queue<T>,
}

impl<T> JoinableQueue<T> {
    /// A new joinable queue of at most `maxsize` items (`0`: unbounded),
    /// served by this process, as [`Queue::new`].
    pub fn new(maxsize: usize) -> Result<JoinableQueue<T>> {
        Ok(JoinableQueue {
            queue: Queue::serving(Shared::new(maxsize).without_lane())?,
        })
    }

    /// Marks one item done (CPython's `task_done()`): call it once per
    /// item a `get` returned, when its work is finished. More calls than
    /// items were put is [`Error::TaskDoneTooManyTimes`](crate::Error::TaskDoneTooManyTimes)
    /// ("task_done() called too many times", CPython's ValueError), and
    /// the count is unchanged. Items this process put before are counted
    /// first. [`Error::Disconnected`](crate::Error::Disconnected) when the
    /// owner is gone.
    pub fn task_done(&self) -> Result<()> {
        self.queue.inner.task_done()
    }

    /// Waits until every item put so far is done (CPython's `join()`),
    /// counting this process's own earlier puts. With no consumer left
    /// this waits forever, as in CPython.
    /// [`Error::Disconnected`](crate::Error::Disconnected) when the owner
    /// is gone.
    pub fn join(&self) -> Result<()> {
        self.queue.inner.join()
    }

    /// [`Queue::qsize`].
    pub fn qsize(&self) -> usize {
        self.queue.qsize()
    }

    /// [`Queue::empty`].
    pub fn empty(&self) -> bool {
        self.queue.empty()
    }

    /// [`Queue::full`].
    pub fn full(&self) -> bool {
        self.queue.full()
    }

    /// [`Queue::close`].
    pub fn close(&self) {
        self.queue.close()
    }

    /// [`Queue::join_thread`].
    pub fn join_thread(&self) -> Result<()> {
        self.queue.join_thread()
    }

    /// [`Queue::cancel_join_thread`].
    pub fn cancel_join_thread(&self) {
        self.queue.cancel_join_thread()
    }
}

impl<T: Serialize> JoinableQueue<T> {
    /// [`Queue::put`]: the item counts as unfinished once stored.
    pub fn put(&self, item: T) -> Result<(), PutError<T>> {
        self.queue.put(item)
    }

    /// [`Queue::put_timeout`].
    pub fn put_timeout(&self, item: T, timeout: Duration) -> Result<(), PutError<T>> {
        self.queue.put_timeout(item, timeout)
    }

    /// [`Queue::put_nowait`].
    pub fn put_nowait(&self, item: T) -> Result<(), PutError<T>> {
        self.queue.put_nowait(item)
    }
}

impl<T: DeserializeOwned> JoinableQueue<T> {
    /// [`Queue::get`].
    pub fn get(&self) -> Result<T> {
        self.queue.get()
    }

    /// [`Queue::get_timeout`].
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        self.queue.get_timeout(timeout)
    }

    /// [`Queue::get_nowait`].
    pub fn get_nowait(&self) -> Result<T> {
        self.queue.get_nowait()
    }
}

impl<T> Deref for JoinableQueue<T> {
    type Target = Queue<T>;

    fn deref(&self) -> &Queue<T> {
        &self.queue
    }
}

impl<T> Clone for JoinableQueue<T> {
    fn clone(&self) -> Self {
        JoinableQueue {
            queue: self.queue.clone(),
        }
    }
}

impl<T> fmt::Debug for JoinableQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("JoinableQueue").field(&self.queue).finish()
    }
}

/// Serialises as its queue's handle (see [`Queue`]).
impl<T> Serialize for JoinableQueue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.queue.serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for JoinableQueue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(JoinableQueue {
            queue: Queue::deserialize(d)?,
        })
    }
}

/// An unbounded queue with only `put`, `get`, `empty` and `close`:
/// CPython's `multiprocessing.SimpleQueue`.
///
/// It is a [`Queue`] underneath (same owner, same guarantees when holders
/// die), with CPython's smaller surface; `put` never waits.
///
/// ```
/// use mproc_ipc::SimpleQueue;
///
/// let q = SimpleQueue::<String>::new()?;
/// assert!(q.empty());
/// q.put("a".to_string())?;
/// assert!(!q.empty());
/// assert_eq!(q.get()?, "a");
/// q.close();
/// assert!(q.get().is_err());
/// # Ok::<(), mproc_ipc::Error>(())
/// ```
pub struct SimpleQueue<T> {
    queue: Queue<T>,
}

impl<T> SimpleQueue<T> {
    /// A new, unbounded queue served by this process.
    pub fn new() -> Result<SimpleQueue<T>> {
        Ok(SimpleQueue {
            queue: Queue::new(0)?,
        })
    }

    /// Whether the queue is empty ([`Queue::empty`]).
    pub fn empty(&self) -> bool {
        self.queue.empty()
    }

    /// Closes the queue for this process ([`Queue::close`]): later `put`s
    /// and `get`s here are [`Error::QueueClosed`](crate::Error::QueueClosed).
    pub fn close(&self) {
        self.queue.close()
    }
}

impl<T: Serialize> SimpleQueue<T> {
    /// Puts `item` (never waits: the queue is unbounded). Errors as
    /// [`Queue::put`]'s, as an [`Error`](crate::Error) (the item is
    /// dropped).
    pub fn put(&self, item: T) -> Result<()> {
        self.queue.put(item).map_err(Into::into)
    }
}

impl<T: DeserializeOwned> SimpleQueue<T> {
    /// Takes the oldest item, waiting as long as it takes ([`Queue::get`]).
    pub fn get(&self) -> Result<T> {
        self.queue.get()
    }
}

impl<T> Clone for SimpleQueue<T> {
    fn clone(&self) -> Self {
        SimpleQueue {
            queue: self.queue.clone(),
        }
    }
}

impl<T> fmt::Debug for SimpleQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SimpleQueue").field(&self.queue).finish()
    }
}

/// Serialises as its queue's handle (see [`Queue`]).
impl<T> Serialize for SimpleQueue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.queue.serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for SimpleQueue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(SimpleQueue {
            queue: Queue::deserialize(d)?,
        })
    }
}
