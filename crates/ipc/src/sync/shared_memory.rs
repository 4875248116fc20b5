//! `SharedMemory`: a block of bytes shared by processes, anonymous (its
//! handle travels in a child's args and it vanishes with its last holder)
//! or named (any process may `open` it by name until `unlink`).

use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::sys::{self, Mapping};
use crate::{handles, Error, Result};

/// `multiprocessing.shared_memory.SharedMemory`: bytes shared by processes.
///
/// [`create`](Self::create) makes an anonymous block: it reaches other
/// processes only as an argument of a child (or grandchild), and the OS
/// frees it when the last process holding it ends, however it ended.
/// [`create_named`](Self::create_named) makes a block any process of the
/// same user can [`open`](Self::open) by name; the name stays until
/// [`unlink`](Self::unlink) (CPython's rule; on Windows the name goes with
/// the last handle, and `unlink` does nothing).
///
/// # Access and soundness
/// Other processes may write the bytes at any time, so safe access is by
/// copy, byte by byte with atomic loads and stores:
/// [`read`](Self::read) and [`write`](Self::write). For speed,
/// [`as_ptr`](Self::as_ptr) gives the raw pointer; dereferencing it is
/// sound only while the program ensures no other process or thread writes
/// the bytes read (or touches the bytes written), e.g. under a [`Lock`](crate::Lock).
/// Its length is [`len`](Self::len) (a `SharedMemory` opened by name may
/// be longer than asked for: the OS rounds it to pages).
///
/// ```
/// let shm = mproc_ipc::SharedMemory::create(16)?;
/// shm.write(0, b"hello")?;
/// let mut buf = [0u8; 5];
/// shm.read(0, &mut buf)?;
/// assert_eq!(&buf, b"hello");
/// # Ok::<(), mproc_ipc::Error>(())
/// ```
#[derive(Clone)]
pub struct SharedMemory {
    map: Arc<Mapping>,
    name: Option<Arc<str>>,
    len: usize,
}

fn bad_size() -> Error {
    Error::Io(std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        "'size' must be a positive number different from zero",
    ))
}

impl SharedMemory {
    /// An anonymous block of `size` (> 0) zero bytes.
    pub fn create(size: usize) -> Result<SharedMemory> {
        if size == 0 {
            return Err(bad_size());
        }
        Ok(SharedMemory {
            map: Arc::new(Mapping::anonymous(size)?),
            name: None,
            len: size,
        })
    }

    /// A new block of `size` (> 0) zero bytes named `name` (an error if
    /// the name exists). It stays until [`unlink`](Self::unlink).
    pub fn create_named(name: &str, size: usize) -> Result<SharedMemory> {
        if size == 0 {
            return Err(bad_size());
        }
        Ok(SharedMemory {
            map: Arc::new(Mapping::create_named(name, size)?),
            name: Some(name.into()),
            len: size,
        })
    }

    /// Opens the named block `name`.
    pub fn open(name: &str) -> Result<SharedMemory> {
        let map = Mapping::open_named(name)?;
        let len = map.len();
        Ok(SharedMemory {
            map: Arc::new(map),
            name: Some(name.into()),
            len,
        })
    }

    /// Its name (CPython's `name`). An anonymous block (from
    /// [`create`](Self::create)) has none: the empty string, which no
    /// [`open`](Self::open) accepts.
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }

    /// Its size in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never true: a block has at least one byte.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Removes the name (processes that opened it keep their mapping).
    /// Nothing to do for an anonymous block.
    pub fn unlink(&self) -> Result<()> {
        match &self.name {
            Some(n) => Ok(sys::unlink_named(n)?),
            None => Ok(()),
        }
    }

    /// The first byte. See the type's docs for when dereferencing is sound.
    pub fn as_ptr(&self) -> *mut u8 {
        self.map.ptr()
    }

    fn bytes(&self, offset: usize, n: usize) -> Result<&[AtomicU8]> {
        let end = offset
            .checked_add(n)
            .filter(|&e| e <= self.len)
            .ok_or_else(|| {
                Error::Io(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "range out of the shared memory's bounds",
                ))
            })?;
        // SAFETY: in bounds (checked); AtomicU8 has u8's layout, and
        // atomic access makes concurrent writers a race-free outcome.
        Ok(unsafe { std::slice::from_raw_parts(self.map.ptr().add(offset).cast(), end - offset) })
    }

    /// Copies `buf.len()` bytes from `offset` into `buf`.
    pub fn read(&self, offset: usize, buf: &mut [u8]) -> Result<()> {
        let src = self.bytes(offset, buf.len())?;
        for (b, a) in buf.iter_mut().zip(src) {
            *b = a.load(Ordering::Relaxed);
        }
        std::sync::atomic::fence(Ordering::Acquire);
        Ok(())
    }

    /// Copies `buf` into the block at `offset`.
    pub fn write(&self, offset: usize, buf: &[u8]) -> Result<()> {
        std::sync::atomic::fence(Ordering::Release);
        for (b, a) in buf.iter().zip(self.bytes(offset, buf.len())?) {
            a.store(*b, Ordering::Relaxed);
        }
        Ok(())
    }
}

impl fmt::Debug for SharedMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedMemory")
            .field("name", &self.name)
            .field("len", &self.len)
            .finish()
    }
}

#[derive(Serialize, Deserialize)]
enum Transfer {
    /// In a launch's handle table.
    Anonymous { handle: u32, len: u64 },
    /// By name.
    Named { name: String },
    /// Held by process `pid` as `value` (a Queue item, a message).
    Held { pid: u32, value: u64, len: u64 },
}

/// Named blocks travel by name; anonymous ones as a handle in a launch,
/// or else as the sender's handle value, opened from the sender (which
/// must still hold the block when the receiver decodes it).
impl Serialize for SharedMemory {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let len = self.len as u64;
        match &self.name {
            Some(n) => Transfer::Named {
                name: n.to_string(),
            },
            None => match handles::register_outgoing(sys::raw_of(self.map.handle())) {
                Some(handle) => Transfer::Anonymous { handle, len },
                None => Transfer::Held {
                    pid: std::process::id(),
                    value: sys::handle_value(self.map.handle()),
                    len,
                },
            },
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for SharedMemory {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        match Transfer::deserialize(d)? {
            Transfer::Named { name } => SharedMemory::open(&name).map_err(D::Error::custom),
            Transfer::Anonymous { handle, len } => {
                let h = handles::take_incoming(handle).ok_or_else(|| {
                    D::Error::custom(format!("shared memory handle {handle} was not received"))
                })?;
                attach(h, len).map_err(D::Error::custom)
            }
            Transfer::Held { pid, value, len } => {
                let h = sys::import_handle(pid, value, sys::Access::ReadWrite).map_err(|e| {
                    super::block::refused::<D::Error>(Error::InvalidShared(format!(
                        "cannot open the shared memory held by process {pid} (does it still hold it?): {e}"
                    )))
                })?;
                attach(h, len).map_err(D::Error::custom)
            }
        }
    }
}

/// Maps a received block, checking it is at least `len` bytes.
fn attach(h: sys::OwnedHandle, len: u64) -> Result<SharedMemory> {
    let map = Mapping::from_handle(h).map_err(|e| Error::InvalidShared(e.to_string()))?;
    let len = usize::try_from(len).map_err(|e| Error::InvalidShared(e.to_string()))?;
    if len == 0 || len > map.len() {
        return Err(Error::InvalidShared(
            "shared memory smaller than announced".into(),
        ));
    }
    Ok(SharedMemory {
        map: Arc::new(map),
        name: None,
        len,
    })
}
