//! Shared memory on Linux: an anonymous `memfd` mapped `MAP_SHARED`
//! (travels to a child as its descriptor, over SCM_RIGHTS; the kernel frees
//! it when the last descriptor and mapping are gone, however the holders
//! ended), or a POSIX `shm_open` name for `SharedMemory::create_named`.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;

use crate::sys::handles::{BorrowedHandle, OwnedHandle};

/// A shared, read-write mapping of a whole memory object.
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    fd: OwnedFd,
}

// SAFETY: the mapping is plain shared memory; every access through it
// goes through raw pointers whose synchronisation is the caller's.
unsafe impl Send for Mapping {}
// SAFETY: as above: `&Mapping` only hands out raw pointers.
unsafe impl Sync for Mapping {}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

impl Mapping {
    /// A new zero-filled anonymous mapping of `len` (> 0) bytes.
    pub fn anonymous(len: usize) -> io::Result<Mapping> {
        if len == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "size must be > 0",
            ));
        }
        // SAFETY: a NUL-terminated literal name; flags are valid.
        let fd = cvt(unsafe { libc::memfd_create(c"mproc-shm".as_ptr(), libc::MFD_CLOEXEC) })?;
        // SAFETY: a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let size = libc::off_t::try_from(len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "size too large"))?;
        // SAFETY: an open memfd.
        cvt(unsafe { libc::ftruncate(fd.as_raw_fd(), size) })?;
        Self::map(fd, len)
    }

    /// Maps the memory object behind a received handle, all of it.
    pub fn from_handle(h: OwnedHandle) -> io::Result<Mapping> {
        let len = object_len(&h)?;
        if len == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "empty shared memory object",
            ));
        }
        Self::map(h, len)
    }

    /// Creates the named object `name` (an error if it exists) of `len` bytes.
    pub fn create_named(name: &str, len: usize) -> io::Result<Mapping> {
        if len == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "size must be > 0",
            ));
        }
        let c = shm_name(name)?;
        // SAFETY: a NUL-terminated name; O_EXCL never opens someone else's.
        let fd = cvt(unsafe {
            libc::shm_open(
                c.as_ptr(),
                libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
                0o600,
            )
        })?;
        // SAFETY: a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let size = libc::off_t::try_from(len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "size too large"))?;
        // SAFETY: an open shm descriptor.
        if let Err(e) = cvt(unsafe { libc::ftruncate(fd.as_raw_fd(), size) }) {
            let _ = unlink_named(name);
            return Err(e);
        }
        Self::map(fd, len)
    }

    /// Opens the existing named object `name`, all of it.
    pub fn open_named(name: &str) -> io::Result<Mapping> {
        let c = shm_name(name)?;
        // SAFETY: a NUL-terminated name.
        let fd = cvt(unsafe { libc::shm_open(c.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC, 0) })?;
        // SAFETY: a fresh descriptor we own.
        Self::from_handle(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    fn map(fd: OwnedFd, len: usize) -> io::Result<Mapping> {
        // SAFETY: maps `len` bytes of an object at least that long; the
        // result is checked before use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or_else(io::Error::last_os_error)?;
        Ok(Mapping { ptr, len, fd })
    }

    /// The first byte (page-aligned).
    pub fn ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The handle that carries the mapping to another process.
    pub fn handle(&self) -> BorrowedHandle<'_> {
        self.fd.as_fd()
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: our own mapping of `len` bytes; nothing borrows it once
        // its owner drops it.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

fn object_len(fd: &OwnedFd) -> io::Result<usize> {
    // SAFETY: fstat fills the zeroed struct for an open descriptor.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    cvt(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "handle is not a shared memory object",
        ));
    }
    usize::try_from(st.st_size)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad shared memory size"))
}

fn shm_name(name: &str) -> io::Result<CString> {
    let bare = name.strip_prefix('/').unwrap_or(name);
    if bare.is_empty() || bare.len() > 250 || bare.contains('/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a shared memory name is 1 to 250 characters without '/'",
        ));
    }
    CString::new(format!("/{bare}"))
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in shared memory name"))
}

/// Removes the name `name` (the memory stays while mapped).
pub fn unlink_named(name: &str) -> io::Result<()> {
    let c = shm_name(name)?;
    // SAFETY: a NUL-terminated name.
    cvt(unsafe { libc::shm_unlink(c.as_ptr()) }).map(drop)
}

/// Whether [`seal_bytes`] makes sealed items here (Linux memfd seals).
pub const SEALED_ITEMS: bool = true;

/// The seals a sealed item must carry: nobody may write, grow, shrink or
/// change the seals once it was handed on.
const ITEM_SEALS: libc::c_int =
    libc::F_SEAL_WRITE | libc::F_SEAL_GROW | libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL;

/// A fresh memory object holding `bytes`, sealed against any change
/// (`memfd_create(MFD_CLOEXEC | MFD_ALLOW_SEALING)`, written, then
/// `F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL`). The kernel
/// frees it with its last descriptor, however its holders ended: it has
/// no name, so nothing is left behind in `/dev/shm`.
pub fn seal_bytes(bytes: &[u8]) -> io::Result<OwnedHandle> {
    use std::io::Write;
    // SAFETY: a NUL-terminated literal name; flags are valid.
    let fd = cvt(unsafe {
        libc::memfd_create(
            c"mproc-item".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    })?;
    // SAFETY: a fresh descriptor we own.
    let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    file.write_all(bytes)?;
    // SAFETY: an open memfd created with sealing allowed.
    cvt(unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, ITEM_SEALS) })?;
    Ok(OwnedFd::from(file))
}

/// Checks that `h` is a sealed item of exactly `len` bytes, as
/// [`seal_bytes`] makes: a regular memory object of that size carrying
/// every seal (so its contents and size can never change: reading or
/// mapping it can neither tear nor raise `SIGBUS`). Anything else is
/// `ErrorKind::InvalidData`.
pub fn check_sealed(h: BorrowedHandle<'_>, len: usize) -> io::Result<()> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    // SAFETY: fstat fills the zeroed struct for an open descriptor.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    cvt(unsafe { libc::fstat(h.as_raw_fd(), &mut st) })?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(bad("a sealed item's descriptor is not a memory object"));
    }
    // F_GET_SEALS fails (EINVAL) on files that cannot be sealed: those
    // are refused before their size is even looked at.
    // SAFETY: an open descriptor; F_GET_SEALS only reads its seals.
    let seals = unsafe { libc::fcntl(h.as_raw_fd(), libc::F_GET_SEALS) };
    if seals < 0 || seals & ITEM_SEALS != ITEM_SEALS {
        return Err(bad("a sealed item's descriptor is not sealed"));
    }
    if usize::try_from(st.st_size).ok() != Some(len) {
        return Err(bad("a sealed item's size does not match its message"));
    }
    Ok(())
}

/// Reads the `len` bytes of a sealed item (checked by [`check_sealed`]
/// first) with `pread`: never a mapping, so even an object that shrank
/// would give a short read, not `SIGBUS`.
pub fn read_sealed(h: BorrowedHandle<'_>, len: usize) -> io::Result<Vec<u8>> {
    let mut buf: Vec<u8> = Vec::with_capacity(len);
    while buf.len() < len {
        let at = buf.len();
        let spare = buf.spare_capacity_mut();
        let offset = libc::off_t::try_from(at)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "sealed item too large"))?;
        // SAFETY: reads at most `spare.len()` bytes into the vector's
        // spare capacity, which it owns; the result is checked.
        let n = unsafe {
            libc::pread(
                h.as_raw_fd(),
                spare.as_mut_ptr().cast(),
                spare.len(),
                offset,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "a sealed item is shorter than its message says",
            ));
        }
        // SAFETY: `pread` initialised `n` more bytes, within capacity.
        unsafe { buf.set_len(at + n as usize) };
    }
    Ok(buf)
}

/// A read-only view of a sealed item's bytes, unmapped on drop.
pub struct SealedView {
    /// `None` for an empty item (nothing to map).
    ptr: Option<NonNull<u8>>,
    len: usize,
}

// SAFETY: a read-only mapping of an object nobody can change any more.
unsafe impl Send for SealedView {}
// SAFETY: as above: shared reads only.
unsafe impl Sync for SealedView {}

impl SealedView {
    /// The item's bytes.
    pub fn bytes(&self) -> &[u8] {
        match self.ptr {
            // SAFETY: `len` mapped, readable bytes that stay mapped and
            // unchanged while `self` lives (the object is sealed).
            Some(p) => unsafe { std::slice::from_raw_parts(p.as_ptr(), self.len) },
            None => &[],
        }
    }
}

impl Drop for SealedView {
    fn drop(&mut self) {
        if let Some(p) = self.ptr {
            // SAFETY: our own mapping of `len` bytes; its borrows ended.
            unsafe { libc::munmap(p.as_ptr().cast(), self.len) };
        }
    }
}

/// Maps a sealed item of `len` bytes read-only, its pages populated at
/// once (no fault per page). Checks it first ([`check_sealed`]): an
/// object sealed against shrinking can never make the mapping raise
/// `SIGBUS`, and one sealed against writing never changes under it.
pub fn map_sealed(h: BorrowedHandle<'_>, len: usize) -> io::Result<SealedView> {
    check_sealed(h, len)?;
    if len == 0 {
        return Ok(SealedView { ptr: None, len });
    }
    // SAFETY: maps `len` bytes of an object exactly that long that can
    // no longer shrink or change; the result is checked before use.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED | libc::MAP_POPULATE,
            h.as_raw_fd(),
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let ptr = NonNull::new(p.cast::<u8>()).ok_or_else(io::Error::last_os_error)?;
    Ok(SealedView {
        ptr: Some(ptr),
        len,
    })
}
