//! Synchronisation and shared state across processes: locks, semaphores,
//! events, conditions, barriers, shared values and shared memory.
//!
//! Each object is a shared block ([`block`]) that the OS frees with its
//! last holder; locks are robust OS mutexes (a holder's death is reported
//! to the next owner, never a deadlock), waits sleep on the OS (futex on
//! Linux, kernel objects on Windows): no broker round trip.

mod barrier;
pub(crate) mod block;
mod condition;
mod event;
mod lock;
mod semaphore;
mod shared_memory;
mod value;

pub use barrier::Barrier;
pub use condition::{CondGuard, Condition};
pub use event::Event;
pub use lock::{Lock, LockGuard, RLock};
pub use semaphore::{BoundedSemaphore, Semaphore};
pub use shared_memory::SharedMemory;
pub use value::{Array, ArrayGuard, Value, ValueGuard};
