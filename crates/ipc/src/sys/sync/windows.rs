//! Robust locks and wake-ups on Windows: kernel objects next to a section.
//!
//! A [`SyncBlock`] is a section laid out as `[header 64 B][data]` plus
//! `n` kernel mutexes and one semaphore, all handles that travel together
//! (`DuplicateHandle`). A mutex whose owning thread ended without
//! releasing it is *abandoned*: the next wait gets `WAIT_ABANDONED` and
//! owns it — the holder's death is reported, never a deadlock. The bell is
//! a sequence number and a waiter count in the header: `ring` bumps the
//! number and releases the semaphore once per counted waiter.

use std::io;
use std::os::windows::io::{AsHandle, AsRawHandle, FromRawHandle};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use windows_sys::Win32::Foundation::{FALSE, WAIT_ABANDONED, WAIT_OBJECT_0, WAIT_TIMEOUT};
use windows_sys::Win32::System::Threading::{
    CreateMutexW, CreateSemaphoreW, GetCurrentThreadId, ReleaseMutex, ReleaseSemaphore,
    WaitForSingleObject,
};

use crate::sys::handles::{BorrowedHandle, OwnedHandle};
use crate::sys::poll::wait_millis;
use crate::sys::shm::Mapping;

use super::{bad, check_received, write_header, Acquired, HEADER};

const SEQ: usize = 16;
const WAITERS: usize = 20;

/// A shared section, `mutexes` kernel mutexes, a bell and `data_len`
/// bytes of data for the caller.
pub struct SyncBlock {
    map: Mapping,
    mutexes: Vec<OwnedHandle>,
    sem: OwnedHandle,
}

fn owned(h: windows_sys::Win32::Foundation::HANDLE) -> io::Result<OwnedHandle> {
    if h.is_null() {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh handle we own.
    Ok(unsafe { OwnedHandle::from_raw_handle(h) })
}

/// Milliseconds for a wait until `deadline` (`None`: forever), rounded up.
fn millis(deadline: Option<Instant>) -> u32 {
    wait_millis(deadline.map(|d| d.saturating_duration_since(Instant::now())))
}

impl SyncBlock {
    /// A new block: fresh mutexes, the bell at 0, data zeroed.
    pub fn create(mutexes: usize, data_len: usize) -> io::Result<SyncBlock> {
        let total = HEADER
            .checked_add(data_len)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "size too large"))?;
        let map = Mapping::anonymous(total)?;
        let mut ms = Vec::with_capacity(mutexes);
        for _ in 0..mutexes {
            // SAFETY: an unnamed mutex, not initially owned.
            ms.push(owned(unsafe {
                CreateMutexW(std::ptr::null(), FALSE, std::ptr::null())
            })?);
        }
        // SAFETY: an unnamed semaphore at 0.
        let sem =
            owned(unsafe { CreateSemaphoreW(std::ptr::null(), 0, i32::MAX, std::ptr::null()) })?;
        let b = SyncBlock {
            map,
            mutexes: ms,
            sem,
        };
        write_header(&b.map, mutexes, data_len);
        Ok(b)
    }

    /// The block behind received handles (section, mutexes, semaphore);
    /// `mutexes` and `data_len` are what the sender announced and must
    /// match the handles and the section, which is checked.
    pub fn from_handles(
        handles: Vec<OwnedHandle>,
        mutexes: usize,
        data_len: usize,
    ) -> io::Result<SyncBlock> {
        if handles.len() != mutexes.saturating_add(2) {
            return Err(bad("wrong number of handles for a shared object"));
        }
        let total = HEADER
            .checked_add(data_len)
            .ok_or_else(|| bad("size too large"))?;
        let mut it = handles.into_iter();
        let (Some(section), Some(sem)) = (it.next(), it.next_back()) else {
            return Err(bad("wrong number of handles for a shared object"));
        };
        let map = Mapping::from_handle(section)?;
        check_received(&map, total, mutexes, data_len)?;
        Ok(SyncBlock {
            map,
            mutexes: it.collect(),
            sem,
        })
    }

    /// The handles that carry the block to another process.
    pub fn handles(&self) -> Vec<BorrowedHandle<'_>> {
        let mut v = vec![self.map.handle()];
        v.extend(self.mutexes.iter().map(|m| m.as_handle()));
        v.push(self.sem.as_handle());
        v
    }

    fn header_u32(&self, off: usize) -> &AtomicU32 {
        // SAFETY: inside the header, 4-aligned.
        unsafe { &*self.map.ptr().add(off).cast::<AtomicU32>() }
    }

    /// The caller's data: `data_len()` bytes, 64-aligned.
    pub fn data(&self) -> *mut u8 {
        // SAFETY: the data area follows the header inside the view.
        unsafe { self.map.ptr().add(HEADER) }
    }

    fn wait_mutex(&self, i: usize, ms: u32) -> io::Result<Acquired> {
        // SAFETY: a mutex handle we hold.
        match unsafe { WaitForSingleObject(self.mutexes[i].as_raw_handle(), ms) } {
            WAIT_OBJECT_0 => Ok(Acquired::Clean),
            WAIT_ABANDONED => Ok(Acquired::OwnerDied),
            WAIT_TIMEOUT => Ok(Acquired::No),
            _ => Err(io::Error::last_os_error()),
        }
    }

    /// Takes mutex `i`, waiting until `deadline` (`None`: for ever).
    pub fn lock(&self, i: usize, deadline: Option<Instant>) -> io::Result<Acquired> {
        self.wait_mutex(i, millis(deadline))
    }

    /// Takes mutex `i` if it is free (or its holder died).
    pub fn try_lock(&self, i: usize) -> io::Result<Acquired> {
        self.wait_mutex(i, 0)
    }

    /// Releases mutex `i`, which this thread holds.
    pub fn unlock(&self, i: usize) -> io::Result<()> {
        // SAFETY: a mutex handle we hold.
        if unsafe { ReleaseMutex(self.mutexes[i].as_raw_handle()) } == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The bell's current value.
    pub fn bell(&self) -> u32 {
        self.header_u32(SEQ).load(Ordering::SeqCst)
    }

    /// Sleeps until the bell moves past `seen` or `deadline` passes (may
    /// return early; callers re-check their state).
    pub fn wait(&self, seen: u32, deadline: Option<Instant>) -> io::Result<()> {
        let waiters = self.header_u32(WAITERS);
        waiters.fetch_add(1, Ordering::SeqCst);
        if self.bell() != seen {
            return Ok(());
        }
        // SAFETY: a semaphore handle we hold.
        match unsafe { WaitForSingleObject(self.sem.as_raw_handle(), millis(deadline)) } {
            WAIT_OBJECT_0 => Ok(()),
            WAIT_TIMEOUT => {
                // Uncount ourselves if no ring did (else a token is ours:
                // it only makes one later wait return early).
                let _ =
                    waiters.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
                Ok(())
            }
            _ => Err(io::Error::last_os_error()),
        }
    }

    /// Moves the bell on and wakes every waiter.
    pub fn ring(&self) {
        self.header_u32(SEQ).fetch_add(1, Ordering::SeqCst);
        let n = self.header_u32(WAITERS).swap(0, Ordering::SeqCst);
        if n > 0 {
            // SAFETY: a semaphore handle we hold.
            unsafe {
                ReleaseSemaphore(
                    self.sem.as_raw_handle(),
                    n.min(i32::MAX as u32) as i32,
                    std::ptr::null_mut(),
                )
            };
        }
    }
}

/// This thread's identity among every thread of every process (pid and
/// thread id); never 0.
pub fn thread_identity() -> u64 {
    // SAFETY: no preconditions.
    let tid = unsafe { GetCurrentThreadId() } as u64;
    ((std::process::id() as u64) << 32) | tid
}

/// The value that names `h` inside this process, for [`import_handle`].
pub fn handle_value(h: BorrowedHandle<'_>) -> u64 {
    h.as_raw_handle() as usize as u64
}

/// Duplicates handle `value` of process `pid` into this process with
/// `access` (`OpenProcess(PROCESS_DUP_HANDLE)` + `DuplicateHandle`: the
/// same user's processes only, and only while `pid` still holds it;
/// [`Access::Read`](super::Access::Read) asks for a section's
/// `FILE_MAP_READ` only, `ReadWrite` keeps the holder's access). The
/// caller checks that what it got is what it expected.
pub fn import_handle(pid: u32, value: u64, access: super::Access) -> io::Result<OwnedHandle> {
    use windows_sys::Win32::Foundation::{DuplicateHandle, DUPLICATE_SAME_ACCESS, HANDLE};
    use windows_sys::Win32::System::Memory::FILE_MAP_READ;
    use windows_sys::Win32::System::Threading::{
        GetCurrentProcess, OpenProcess, PROCESS_DUP_HANDLE,
    };
    // SAFETY: opens a process handle; checked below.
    let proc = owned(unsafe { OpenProcess(PROCESS_DUP_HANDLE, FALSE, pid) })?;
    let (desired, options) = match access {
        super::Access::Read => (FILE_MAP_READ, 0),
        super::Access::ReadWrite => (0, DUPLICATE_SAME_ACCESS),
    };
    let mut out: HANDLE = std::ptr::null_mut();
    // SAFETY: duplicates a handle value of `proc` into ours; `out` is
    // written on success only. A stale value fails or names another
    // object, which the caller's checks refuse.
    let ok = unsafe {
        DuplicateHandle(
            proc.as_raw_handle(),
            value as usize as HANDLE,
            GetCurrentProcess(),
            &mut out,
            desired,
            FALSE,
            options,
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    owned(out)
}
