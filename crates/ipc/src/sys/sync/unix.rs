//! Robust locks and wake-ups in shared memory, on Linux.
//!
//! A [`SyncBlock`] is one memfd mapping laid out as
//! `[header 64 B][n robust pthread mutexes, 64 B each][data]`.
//! The mutexes are `PTHREAD_PROCESS_SHARED` + `PTHREAD_MUTEX_ROBUST`: glibc
//! keeps each held one on the thread's robust list, the kernel marks it
//! `FUTEX_OWNER_DIED` when the holder dies however it died, and the next
//! `lock` returns `EOWNERDEAD` (then `pthread_mutex_consistent`).
//! The bell is a futex word in the header: `ring` bumps it and wakes every
//! waiter; `wait` sleeps while it still holds the value seen.

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use crate::sys::handles::{BorrowedHandle, OwnedHandle};
use crate::sys::shm::Mapping;

use super::{bad, check_received, write_header, Acquired, HEADER};

const MUTEX_SLOT: usize = 64;
const BELL_OFFSET: usize = 16;

/// A shared mapping with `mutexes` robust mutexes, a bell and `data_len`
/// bytes of data for the caller.
pub struct SyncBlock {
    map: Mapping,
    mutexes: usize,
}

fn layout(mutexes: usize, data_len: usize) -> io::Result<(usize, usize)> {
    let data = mutexes
        .checked_mul(MUTEX_SLOT)
        .and_then(|m| m.checked_add(HEADER))
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "too many mutexes"))?;
    let total = data
        .checked_add(data_len)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "size too large"))?;
    Ok((data, total))
}

fn err(code: libc::c_int) -> io::Error {
    io::Error::from_raw_os_error(code)
}

impl SyncBlock {
    /// A new block: fresh mutexes, the bell at 0, data zeroed.
    pub fn create(mutexes: usize, data_len: usize) -> io::Result<SyncBlock> {
        let (_, total) = layout(mutexes, data_len)?;
        let map = Mapping::anonymous(total)?;
        let b = SyncBlock { map, mutexes };
        // SAFETY: attribute objects live on this stack frame, are
        // initialised before use and destroyed after; each mutex slot is
        // 64 B, large enough and aligned for a pthread_mutex_t, in a
        // mapping nobody else has yet.
        unsafe {
            let mut attr: libc::pthread_mutexattr_t = std::mem::zeroed();
            let r = libc::pthread_mutexattr_init(&mut attr);
            if r != 0 {
                return Err(err(r));
            }
            let mut r = libc::pthread_mutexattr_setpshared(&mut attr, libc::PTHREAD_PROCESS_SHARED);
            if r == 0 {
                r = libc::pthread_mutexattr_setrobust(&mut attr, libc::PTHREAD_MUTEX_ROBUST);
            }
            for i in 0..mutexes {
                if r == 0 {
                    r = libc::pthread_mutex_init(b.mutex(i), &attr);
                }
            }
            libc::pthread_mutexattr_destroy(&mut attr);
            if r != 0 {
                return Err(err(r));
            }
        }
        write_header(&b.map, mutexes, data_len);
        Ok(b)
    }

    /// The block behind received handles; `mutexes` and `data_len` are what
    /// the sender announced and must match the mapping, which is checked
    /// (a short or foreign mapping is an error, never an out-of-bounds access).
    pub fn from_handles(
        handles: Vec<OwnedHandle>,
        mutexes: usize,
        data_len: usize,
    ) -> io::Result<SyncBlock> {
        let [h]: [OwnedHandle; 1] = handles
            .try_into()
            .map_err(|_| bad("wrong number of handles for a shared object"))?;
        let (_, total) = layout(mutexes, data_len)?;
        let map = Mapping::from_handle(h)?;
        check_received(&map, total, mutexes, data_len)?;
        Ok(SyncBlock { map, mutexes })
    }

    /// The handles that carry the block to another process.
    pub fn handles(&self) -> Vec<BorrowedHandle<'_>> {
        vec![self.map.handle()]
    }

    fn bell_word(&self) -> &AtomicU32 {
        // SAFETY: inside the header, 4-aligned.
        unsafe { &*self.map.ptr().add(BELL_OFFSET).cast::<AtomicU32>() }
    }

    fn mutex(&self, i: usize) -> *mut libc::pthread_mutex_t {
        assert!(i < self.mutexes, "mutex index out of range");
        // SAFETY: slot `i` lies inside the mapping (checked at creation or
        // arrival); slots are 64-aligned.
        unsafe { self.map.ptr().add(HEADER + i * MUTEX_SLOT).cast() }
    }

    /// The caller's data: `data_len()` bytes, 64-aligned.
    pub fn data(&self) -> *mut u8 {
        // SAFETY: the data area follows the mutexes inside the mapping.
        unsafe { self.map.ptr().add(HEADER + self.mutexes * MUTEX_SLOT) }
    }

    /// Takes mutex `i`, waiting until `deadline` (`None`: for ever).
    pub fn lock(&self, i: usize, deadline: Option<Instant>) -> io::Result<Acquired> {
        let m = self.mutex(i);
        let r = match deadline {
            // SAFETY: an initialised process-shared mutex in our mapping.
            None => unsafe { libc::pthread_mutex_lock(m) },
            Some(d) => {
                let ts = realtime_deadline(d);
                // SAFETY: as above, with a valid timespec.
                unsafe { libc::pthread_mutex_timedlock(m, &ts) }
            }
        };
        self.outcome(i, r)
    }

    /// Takes mutex `i` if it is free (or its holder died).
    pub fn try_lock(&self, i: usize) -> io::Result<Acquired> {
        // SAFETY: an initialised process-shared mutex in our mapping.
        let r = unsafe { libc::pthread_mutex_trylock(self.mutex(i)) };
        self.outcome(i, r)
    }

    fn outcome(&self, i: usize, r: libc::c_int) -> io::Result<Acquired> {
        match r {
            0 => Ok(Acquired::Clean),
            libc::EOWNERDEAD => {
                // SAFETY: we hold the mutex (EOWNERDEAD means taken).
                let r = unsafe { libc::pthread_mutex_consistent(self.mutex(i)) };
                if r != 0 {
                    return Err(err(r));
                }
                Ok(Acquired::OwnerDied)
            }
            libc::EBUSY | libc::ETIMEDOUT => Ok(Acquired::No),
            e => Err(err(e)),
        }
    }

    /// Releases mutex `i`, which this thread holds.
    pub fn unlock(&self, i: usize) -> io::Result<()> {
        // SAFETY: an initialised process-shared mutex in our mapping.
        match unsafe { libc::pthread_mutex_unlock(self.mutex(i)) } {
            0 => Ok(()),
            e => Err(err(e)),
        }
    }

    /// The bell's current value (read before releasing the lock that
    /// guards the awaited state, then passed to [`wait`](Self::wait)).
    pub fn bell(&self) -> u32 {
        self.bell_word().load(Ordering::Acquire)
    }

    /// Sleeps until the bell moves past `seen` or `deadline` passes (may
    /// return early; callers re-check their state).
    pub fn wait(&self, seen: u32, deadline: Option<Instant>) -> io::Result<()> {
        let ts;
        let tsp = match deadline {
            None => std::ptr::null(),
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(());
                }
                ts = libc::timespec {
                    tv_sec: left.as_secs().min(i32::MAX as u64) as libc::time_t,
                    tv_nsec: left.subsec_nanos() as libc::c_long,
                };
                &ts as *const libc::timespec
            }
        };
        // SAFETY: FUTEX_WAIT on a 4-aligned word of a shared mapping that
        // stays mapped for the call, with a valid (or null) timeout.
        let r = unsafe {
            libc::syscall(
                libc::SYS_futex,
                self.bell_word().as_ptr(),
                libc::FUTEX_WAIT,
                seen,
                tsp,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINTR) | Some(libc::ETIMEDOUT) => {}
                _ => return Err(e),
            }
        }
        Ok(())
    }

    /// Moves the bell on and wakes every waiter.
    pub fn ring(&self) {
        self.bell_word().fetch_add(1, Ordering::AcqRel);
        // SAFETY: FUTEX_WAKE on a word of our mapping.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                self.bell_word().as_ptr(),
                libc::FUTEX_WAKE,
                i32::MAX,
            )
        };
    }
}

fn realtime_deadline(d: Instant) -> libc::timespec {
    let left = d.saturating_duration_since(Instant::now());
    // SAFETY: clock_gettime fills the struct.
    let mut now: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut now) };
    let mut sec = now
        .tv_sec
        .saturating_add(left.as_secs().min(i32::MAX as u64) as libc::time_t);
    let mut nsec = now.tv_nsec + left.subsec_nanos() as libc::c_long;
    if nsec >= 1_000_000_000 {
        nsec -= 1_000_000_000;
        sec = sec.saturating_add(1);
    }
    libc::timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    }
}

/// Bumped in the child of every `fork`, so identities cached before it
/// are not believed after it.
static FORK_GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

extern "C" fn forked() {
    FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// This thread's identity among every thread of every process (pid and
/// kernel thread id); never 0. Cached per thread (two syscalls otherwise,
/// on every lock operation), and recomputed after a `fork`.
pub fn thread_identity() -> u64 {
    static AT_FORK: std::sync::Once = std::sync::Once::new();
    thread_local! {
        static CACHED: std::cell::Cell<(u64, u64)> = const { std::cell::Cell::new((u64::MAX, 0)) };
    }
    AT_FORK.call_once(|| {
        // SAFETY: registers a handler that only bumps an atomic.
        unsafe { libc::pthread_atfork(None, None, Some(forked)) };
    });
    let generation = FORK_GENERATION.load(Ordering::Relaxed);
    CACHED.with(|c| {
        let (g, id) = c.get();
        if g == generation {
            return id;
        }
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() } as u32 as u64;
        let id = ((std::process::id() as u64) << 32) | tid;
        c.set((generation, id));
        id
    })
}

/// The value that names `h` inside this process, for [`import_handle`].
pub fn handle_value(h: BorrowedHandle<'_>) -> u64 {
    use std::os::fd::AsRawFd;
    h.as_raw_fd() as u64
}

/// Opens, with `access`, the object that process `pid` holds as
/// descriptor `value` (`/proc/<pid>/fd/<value>`: a new open of the same
/// memfd; the same user's processes only, and only while `pid` still
/// holds it). The caller checks that what it got is what it expected.
pub fn import_handle(pid: u32, value: u64, access: super::Access) -> io::Result<OwnedHandle> {
    use std::os::fd::FromRawFd;
    let path = std::ffi::CString::new(format!("/proc/{pid}/fd/{value}"))
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "bad descriptor path"))?;
    let mode = match access {
        super::Access::Read => libc::O_RDONLY,
        super::Access::ReadWrite => libc::O_RDWR,
    };
    // SAFETY: a NUL-terminated path; the result is checked.
    let fd = unsafe { libc::open(path.as_ptr(), mode | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    Ok(unsafe { OwnedHandle::from_raw_fd(fd) })
}
