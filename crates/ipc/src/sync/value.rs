//! `Value<T>` and `Array<T>`: plain-old-data in a shared block, behind the
//! block's lock (mutex 0), which a guard holds while it lends the data.
//!
//! Soundness: the data is only ever borrowed through a guard, and a guard
//! exists only while this thread holds the lock, which is not recursive
//! (a second `lock()` by the same thread is [`Error::WouldDeadlock`]), so
//! a `&mut` never aliases. `T: Pod` makes every bit pattern a valid `T`,
//! so whatever another process (even a hostile one) wrote is a valid value.

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use bytemuck::Pod;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::block::{Block, Kind, Layout};
use super::lock::{Core, Wait};
use crate::{Error, Result};

const WORDS: u32 = 2; // the lock's owner and count

/// The largest alignment the shared area guarantees.
const MAX_ALIGN: usize = 64;

fn layout(bytes: usize) -> Layout {
    Layout {
        mutexes: 1,
        words: WORDS,
        bytes: bytes.max(1) as u64,
    }
}

fn check_align<T>() -> Result<()> {
    if std::mem::align_of::<T>() > MAX_ALIGN {
        return Err(Error::InvalidShared(format!(
            "types aligned to more than {MAX_ALIGN} bytes cannot be shared"
        )));
    }
    Ok(())
}

fn take(core: &Core) -> Result<()> {
    core.take(Wait::Forever)?
        .map(drop)
        .ok_or_else(|| Error::Io(std::io::Error::other("lock wait failed")))
}

/// `multiprocessing.Value`: one `T` in shared memory, with its lock.
///
/// ```
/// let v = mproc_ipc::Value::new(41u64)?;
/// *v.lock()? += 1;
/// assert_eq!(v.get(), 42);
/// # Ok::<(), mproc_ipc::Error>(())
/// ```
pub struct Value<T> {
    core: Core,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for Value<T> {
    fn clone(&self) -> Self {
        Value {
            core: self.core.clone(),
            _t: PhantomData,
        }
    }
}

/// A locked [`Value`]: derefs to the `T`; the lock is released on drop.
pub struct ValueGuard<'a, T> {
    value: &'a Value<T>,
    _thread_bound: PhantomData<*const ()>,
}

impl<T: Pod> Value<T> {
    /// A shared `T` holding `v`.
    pub fn new(v: T) -> Result<Value<T>> {
        check_align::<T>()?;
        let core = Core::new(Kind::Value, layout(std::mem::size_of::<T>()), false)?;
        let value = Value {
            core,
            _t: PhantomData,
        };
        *value.lock()? = v;
        Ok(value)
    }

    fn ptr(&self) -> *mut T {
        self.core.block.bytes().cast()
    }

    /// Locks the value: `*v.lock()? += 1` is atomic across processes
    /// (CPython's `with v.get_lock(): v.value += 1`). A holder's death is
    /// survived: the next `lock` gets it (the value as the dead holder
    /// left it).
    pub fn lock(&self) -> Result<ValueGuard<'_, T>> {
        take(&self.core)?;
        Ok(ValueGuard {
            value: self,
            _thread_bound: PhantomData,
        })
    }

    /// The value (taken under the lock).
    ///
    /// # Panics
    /// Never for an OS reason; use [`lock`](Self::lock) to see errors.
    pub fn get(&self) -> T {
        match self.lock() {
            Ok(g) => *g,
            Err(e) => {
                tracing::error!("mproc: Value lock failed ({e}); reading without it");
                // SAFETY: a valid, aligned T (Pod) inside the mapping;
                // a racing write can only tear it into another valid T.
                unsafe { std::ptr::read_volatile(self.ptr()) }
            }
        }
    }

    /// Stores `v` (under the lock).
    pub fn set(&self, v: T) {
        match self.lock() {
            Ok(mut g) => *g = v,
            Err(e) => tracing::error!("mproc: Value lock failed ({e}); value not set"),
        }
    }
}

impl<T: Pod> Deref for ValueGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the lock is held by this thread (no other guard can
        // exist), the pointer is in-bounds and aligned, any bits are a T.
        unsafe { &*self.value.ptr() }
    }
}

impl<T: Pod> DerefMut for ValueGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; `&mut self` makes the borrow unique.
        unsafe { &mut *self.value.ptr() }
    }
}

impl<T> Drop for ValueGuard<'_, T> {
    fn drop(&mut self) {
        self.value.core.give();
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for Value<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Value").field(&self.get()).finish()
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for ValueGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T> Serialize for Value<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.core.block.serialize(s)
    }
}

impl<'de, T: Pod> Deserialize<'de> for Value<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        check_align::<T>().map_err(D::Error::custom)?;
        let want = layout(std::mem::size_of::<T>());
        let block = Block::deserialize(d, Kind::Value, |l| *l == want)?;
        Ok(Value {
            core: Core {
                block,
                recursive: false,
            },
            _t: PhantomData,
        })
    }
}

/// `multiprocessing.Array`: `len` values of `T` in shared memory, with
/// their lock.
///
/// ```
/// let a = mproc_ipc::Array::from_slice(&[1i32, 2, 3])?;
/// a.lock()?[0] = 10;
/// assert_eq!(a.to_vec(), [10, 2, 3]);
/// assert_eq!(a.len(), 3);
/// # Ok::<(), mproc_ipc::Error>(())
/// ```
pub struct Array<T> {
    core: Core,
    len: usize,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for Array<T> {
    fn clone(&self) -> Self {
        Array {
            core: self.core.clone(),
            len: self.len,
            _t: PhantomData,
        }
    }
}

/// A locked [`Array`]: derefs to `[T]`; the lock is released on drop.
pub struct ArrayGuard<'a, T> {
    array: &'a Array<T>,
    _thread_bound: PhantomData<*const ()>,
}

impl<T: Pod> Array<T> {
    /// `len` zeroed values.
    pub fn new(len: usize) -> Result<Array<T>> {
        check_align::<T>()?;
        let bytes = len
            .checked_mul(std::mem::size_of::<T>())
            .ok_or_else(|| Error::InvalidShared("array too large".into()))?;
        Ok(Array {
            core: Core::new(Kind::Array, layout(bytes), false)?,
            len,
            _t: PhantomData,
        })
    }

    /// An array holding a copy of `values`.
    pub fn from_slice(values: &[T]) -> Result<Array<T>> {
        let a = Array::new(values.len())?;
        a.lock()?.copy_from_slice(values);
        Ok(a)
    }

    /// The number of values.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no value.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A copy of the values (taken under the lock).
    pub fn to_vec(&self) -> Vec<T> {
        match self.lock() {
            Ok(g) => g.to_vec(),
            Err(e) => {
                tracing::error!("mproc: Array lock failed ({e})");
                Vec::new()
            }
        }
    }

    /// Locks the array and lends its values.
    pub fn lock(&self) -> Result<ArrayGuard<'_, T>> {
        take(&self.core)?;
        Ok(ArrayGuard {
            array: self,
            _thread_bound: PhantomData,
        })
    }
}

impl<T: Pod> Deref for ArrayGuard<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: the lock is held by this thread; `len` values fit the
        // area (checked at creation or arrival), aligned, any bits valid.
        unsafe { std::slice::from_raw_parts(self.array.core.block.bytes().cast(), self.array.len) }
    }
}

impl<T: Pod> DerefMut for ArrayGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`; `&mut self` makes the borrow unique.
        unsafe {
            std::slice::from_raw_parts_mut(self.array.core.block.bytes().cast(), self.array.len)
        }
    }
}

impl<T> Drop for ArrayGuard<'_, T> {
    fn drop(&mut self) {
        self.array.core.give();
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for Array<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Array").field(&self.to_vec()).finish()
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for ArrayGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

#[derive(Serialize, Deserialize)]
struct ArrayTransfer<B> {
    len: u64,
    block: B,
}

struct BlockRef<'a>(&'a Block);

impl Serialize for BlockRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<T> Serialize for Array<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        ArrayTransfer {
            len: self.len as u64,
            block: BlockRef(&self.core.block),
        }
        .serialize(s)
    }
}

struct ArrayBlock(Arc<Block>, usize);

impl<'de, T: Pod> Deserialize<'de> for Array<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::{Error as _, SeqAccess, Visitor};
        check_align::<T>().map_err(D::Error::custom)?;
        struct V<T>(PhantomData<T>);
        impl<'de, T: Pod> Visitor<'de> for V<T> {
            type Value = ArrayBlock;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an mproc Array")
            }
            fn visit_seq<A: SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<ArrayBlock, A::Error> {
                let len: u64 = seq
                    .next_element()?
                    .ok_or_else(|| A::Error::custom("missing Array length"))?;
                let len = usize::try_from(len).map_err(A::Error::custom)?;
                let bytes = len
                    .checked_mul(std::mem::size_of::<T>())
                    .ok_or_else(|| A::Error::custom("Array too large"))?;
                let want = layout(bytes);
                let block = seq
                    .next_element_seed(BlockSeed(want))?
                    .ok_or_else(|| A::Error::custom("missing Array block"))?;
                Ok(ArrayBlock(block, len))
            }
        }
        let ArrayBlock(block, len) =
            d.deserialize_struct("ArrayTransfer", &["len", "block"], V::<T>(PhantomData))?;
        Ok(Array {
            core: Core {
                block,
                recursive: false,
            },
            len,
            _t: PhantomData,
        })
    }
}

struct BlockSeed(Layout);

impl<'de> serde::de::DeserializeSeed<'de> for BlockSeed {
    type Value = Arc<Block>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Arc<Block>, D::Error> {
        Block::deserialize(d, Kind::Array, |l| *l == self.0)
    }
}
