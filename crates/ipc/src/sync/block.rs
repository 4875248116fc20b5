//! The shared block under every synchronisation type: a
//! [`sys::SyncBlock`] (robust mutexes, a bell, data) whose data starts with
//! a kind tag, then `words` 64-bit state words, then an optional
//! 64-aligned byte area (a `Value`'s or an `Array`'s contents).
//!
//! A block travels to a child in its launch's arguments: its handles go
//! out of band through the handle collector ([`crate::handles`]), the
//! serialised record carries their indexes and the layout. Anywhere else
//! (a Queue item, a Connection message) the record names the sending
//! process and its handle values, and the receiver opens them from that
//! process (`/proc/<pid>/fd/<n>`; `DuplicateHandle` on Windows), which
//! works while the sender still holds the object. The receiver checks the
//! layout against what the type expects and against the mapping (size,
//! magic, kind, the block's random nonce) before touching anything.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::handles;
use crate::sys::{self, Acquired, SyncBlock};
use crate::{Error, Result};

/// What kind of object a block is (its tag, first data word).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub(crate) enum Kind {
    Lock = 0x6d70_4c6f_636b_0001,
    RLock = 0x6d70_4c6f_636b_0002,
    Semaphore = 0x6d70_4c6f_636b_0003,
    Event = 0x6d70_4c6f_636b_0004,
    Condition = 0x6d70_4c6f_636b_0005,
    Barrier = 0x6d70_4c6f_636b_0006,
    Value = 0x6d70_4c6f_636b_0007,
    Array = 0x6d70_4c6f_636b_0008,
    /// A small bounded queue's shared-memory lane ([`crate::queue`]).
    QueueLane = 0x6d70_4c6f_636b_0009,
}

/// The layout a block is created with and checked against on arrival.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Layout {
    pub mutexes: u32,
    pub words: u32,
    pub bytes: u64,
}

impl Layout {
    fn bytes_offset(&self) -> usize {
        (16 + self.words as usize * 8).div_ceil(64) * 64
    }

    fn data_len(&self) -> Option<usize> {
        self.bytes_offset()
            .checked_add(usize::try_from(self.bytes).ok()?)
    }
}

/// A block in serialised form.
#[derive(Serialize, Deserialize)]
struct Transfer {
    kind: u64,
    layout: Layout,
    nonce: u64,
    handles: Handles,
}

/// Where the receiver finds the block's handles.
#[derive(Serialize, Deserialize)]
enum Handles {
    /// In the launch's handle table, at these indexes.
    Launch(Vec<u32>),
    /// In process `pid`, under these values.
    Held { pid: u32, values: Vec<u64> },
}

pub(crate) struct Block {
    sb: SyncBlock,
    kind: Kind,
    layout: Layout,
}

impl Block {
    pub fn create(kind: Kind, layout: Layout) -> Result<Arc<Block>> {
        let data_len = layout
            .data_len()
            .ok_or_else(|| Error::InvalidShared("size too large".into()))?;
        let sb = SyncBlock::create(layout.mutexes as usize, data_len)?;
        let b = Block { sb, kind, layout };
        let mut nonce = [0u8; 8];
        getrandom::getrandom(&mut nonce)
            .map_err(|e| Error::Io(std::io::Error::other(e.to_string())))?;
        b.nonce()
            .store(u64::from_le_bytes(nonce), Ordering::Release);
        b.tag().store(kind as u64, Ordering::Release);
        Ok(Arc::new(b))
    }

    fn tag(&self) -> &AtomicU64 {
        // SAFETY: the data area is 64-aligned and at least 8 B long.
        unsafe { &*self.sb.data().cast::<AtomicU64>() }
    }

    fn nonce(&self) -> &AtomicU64 {
        // SAFETY: the data area's second 8 B, 8-aligned.
        unsafe { &*self.sb.data().add(8).cast::<AtomicU64>() }
    }

    /// State word `i`.
    pub fn word(&self, i: usize) -> &AtomicU64 {
        assert!(i < self.layout.words as usize, "state word out of range");
        // SAFETY: inside the data area (checked above against the layout,
        // which matches the mapping); 8-aligned.
        unsafe { &*self.sb.data().add(16 + i * 8).cast::<AtomicU64>() }
    }

    /// The byte area (`layout.bytes` long, 64-aligned).
    pub fn bytes(&self) -> *mut u8 {
        // SAFETY: the area lies inside the data (data_len covers it).
        unsafe { self.sb.data().add(self.layout.bytes_offset()) }
    }

    pub fn sys(&self) -> &SyncBlock {
        &self.sb
    }

    /// Takes mutex 0 (the state lock), for ever; whether its holder died.
    pub fn lock_state(&self) -> Result<bool> {
        match self.sb.lock(0, None)? {
            Acquired::Clean => Ok(false),
            Acquired::OwnerDied => Ok(true),
            Acquired::No => Err(Error::Io(std::io::Error::other("lock wait failed"))),
        }
    }

    pub fn unlock_state(&self) {
        if let Err(e) = self.sb.unlock(0) {
            tracing::error!("mproc: releasing a shared state lock failed: {e}");
        }
    }

    /// With mutex 0 held: releases it, sleeps until the bell rings or
    /// `deadline` passes (or spuriously), takes it again.
    pub fn wait_locked(&self, deadline: Option<Instant>) -> Result<()> {
        let seen = self.sb.bell();
        self.unlock_state();
        let r = self.sb.wait(seen, deadline);
        self.lock_state()?;
        r.map_err(Error::from)
    }

    pub fn ring(&self) {
        self.sb.ring();
    }

    pub fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let hs = self.sb.handles();
        let mut idx = Vec::new();
        for h in &hs {
            match handles::register_outgoing(sys::raw_of(*h)) {
                Some(i) => idx.push(i),
                None => break,
            }
        }
        let handles = if idx.len() == hs.len() {
            Handles::Launch(idx)
        } else {
            Handles::Held {
                pid: std::process::id(),
                values: hs.iter().map(|h| sys::handle_value(*h)).collect(),
            }
        };
        Transfer {
            kind: self.kind as u64,
            layout: self.layout,
            nonce: self.nonce().load(Ordering::Acquire),
            handles,
        }
        .serialize(s)
    }

    /// Receives a block of kind `kind` whose layout `accept` approves.
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
        kind: Kind,
        accept: impl FnOnce(&Layout) -> bool,
    ) -> std::result::Result<Arc<Block>, D::Error> {
        use serde::de::Error as _;
        let t = Transfer::deserialize(d)?;
        if t.kind != kind as u64 || !accept(&t.layout) {
            return Err(refused::<D::Error>(Error::InvalidShared(format!(
                "expected a {kind:?} of another layout"
            ))));
        }
        let mut owned = Vec::new();
        match &t.handles {
            Handles::Launch(idx) => {
                for i in idx {
                    owned.push(handles::take_incoming(*i).ok_or_else(|| {
                        D::Error::custom(format!("shared object handle {i} was not received"))
                    })?);
                }
            }
            Handles::Held { pid, values } => {
                if values.len() > t.layout.mutexes as usize + 2 {
                    return Err(refused::<D::Error>(Error::InvalidShared(
                        "too many handles".into(),
                    )));
                }
                for v in values {
                    owned.push(sys::import_handle(*pid, *v, sys::Access::ReadWrite).map_err(|e| {
                        refused::<D::Error>(Error::InvalidShared(format!(
                            "cannot open the shared object held by process {pid} (does it still hold it?): {e}"
                        )))
                    })?);
                }
            }
        }
        let data_len = t
            .layout
            .data_len()
            .ok_or_else(|| refused::<D::Error>(Error::InvalidShared("size too large".into())))?;
        let sb = SyncBlock::from_handles(owned, t.layout.mutexes as usize, data_len)
            .map_err(|e| refused::<D::Error>(Error::InvalidShared(e.to_string())))?;
        let b = Block {
            sb,
            kind,
            layout: t.layout,
        };
        if b.tag().load(Ordering::Acquire) != kind as u64
            || b.nonce().load(Ordering::Acquire) != t.nonce
        {
            return Err(refused::<D::Error>(Error::InvalidShared(format!(
                "the mapping does not hold a {kind:?}"
            ))));
        }
        Ok(Arc::new(b))
    }
}

/// A deserialisation error for a refused shared object, also logged
/// (binary formats such as postcard keep no custom error text).
pub(crate) fn refused<E: serde::de::Error>(e: Error) -> E {
    tracing::warn!("mproc: refused a shared object: {e}");
    E::custom(e)
}

/// This thread's identity (never 0), to record a lock's owner.
pub(crate) fn me() -> u64 {
    sys::thread_identity()
}

/// A `Deadline` from an optional timeout.
pub(crate) fn deadline_after(t: Option<std::time::Duration>) -> Option<Instant> {
    t.map(|t| Instant::now().checked_add(t).unwrap_or_else(far_future))
}

fn far_future() -> Instant {
    Instant::now() + std::time::Duration::from_secs(86_400 * 365)
}
