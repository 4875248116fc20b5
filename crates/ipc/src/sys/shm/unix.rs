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

/// A fresh memory object holding `parts` one after the other, sealed
/// against any change
/// (`memfd_create(MFD_CLOEXEC | MFD_ALLOW_SEALING)`, and
/// `MFD_NOEXEC_SEAL` where the kernel has it; written, then
/// `F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL`). The kernel
/// frees it with its last descriptor, however its holders ended: it has
/// no name, so nothing is left behind in `/dev/shm`.
pub fn seal_bytes(parts: &[&[u8]]) -> io::Result<OwnedHandle> {
    use std::io::Write;
    let mut file = std::fs::File::from(item_memfd()?);
    for bytes in parts {
        file.write_all(bytes)?;
    }
    // SAFETY: an open memfd created with sealing allowed.
    cvt(unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, ITEM_SEALS) })?;
    Ok(OwnedFd::from(file))
}

/// Reads `len` bytes at `offset` of a memory object with `pread` into
/// memory of its own: a copy taken by the kernel, so bytes another
/// process changes meanwhile are at worst a mixture, never a data race
/// in this process, and an object shorter than that is
/// `ErrorKind::UnexpectedEof`, never `SIGBUS`.
pub fn read_at(h: BorrowedHandle<'_>, offset: usize, len: usize) -> io::Result<Vec<u8>> {
    let mut buf: Vec<u8> = Vec::with_capacity(len);
    while buf.len() < len {
        let at = buf.len();
        let spare = &mut buf.spare_capacity_mut()[..len - at];
        let offset = offset
            .checked_add(at)
            .and_then(|o| libc::off_t::try_from(o).ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "sealed item too large"))?;
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

/// `memfd_create`'s flag for an object that can never be made executable
/// (Linux 6.3); older kernels refuse it (`EINVAL`) and go without.
const MFD_NOEXEC_SEAL: libc::c_uint = 0x0008;

/// A fresh, empty memfd that allows sealing (close-on-exec, and not
/// executable where the kernel says so).
fn item_memfd() -> io::Result<OwnedFd> {
    let base = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    for flags in [base | MFD_NOEXEC_SEAL, base] {
        // SAFETY: a NUL-terminated literal name; the result is checked.
        let fd = unsafe { libc::memfd_create(c"mproc-item".as_ptr(), flags) };
        if fd >= 0 {
            // SAFETY: a fresh descriptor we own.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINVAL) {
            return Err(e);
        }
    }
    Err(io::Error::from_raw_os_error(libc::EINVAL))
}

/// The seals of a reusable item object: its size is fixed for good (so
/// reading it can never raise `SIGBUS` or come up short), its contents
/// are not.
const POOLED_SEALS: libc::c_int = libc::F_SEAL_GROW | libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL;

/// A fresh reusable item object of `size` bytes, its size sealed (it can
/// never grow or shrink) but not its contents: its maker writes item
/// after item into it (mapped). Returns it and its identity (its
/// inode number, what [`check_item`] reports to the receiver).
pub fn pooled_object(size: usize) -> io::Result<(OwnedHandle, u64)> {
    let fd = item_memfd()?;
    let len = libc::off_t::try_from(size)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "size too large"))?;
    // SAFETY: an open memfd.
    cvt(unsafe { libc::ftruncate(fd.as_raw_fd(), len) })?;
    // SAFETY: an open memfd created with sealing allowed.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, POOLED_SEALS) })?;
    let id = stat(fd.as_fd())?.st_ino;
    Ok((fd, id))
}

fn stat(h: BorrowedHandle<'_>) -> io::Result<libc::stat> {
    // SAFETY: fstat fills the zeroed struct for an open descriptor.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    cvt(unsafe { libc::fstat(h.as_raw_fd(), &mut st) })?;
    Ok(st)
}

/// Checks that `h`, a peer's descriptor for an item of `len` bytes, is
/// one of the two kinds of item object: sealed for good ([`seal_bytes`]:
/// every seal, exactly `len` bytes) or reusable ([`pooled_object`]: its
/// size sealed, at least `len` bytes). Either way it is a memory object
/// whose size can no longer change, so `pread`ing `len` bytes of it
/// never comes up short. Anything else is `ErrorKind::InvalidData`.
pub fn check_item(h: BorrowedHandle<'_>, len: usize) -> io::Result<super::ItemObject> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let st = stat(h)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(bad("a sealed item's descriptor is not a memory object"));
    }
    // F_GET_SEALS fails (EINVAL) on files that cannot be sealed.
    // SAFETY: an open descriptor; F_GET_SEALS only reads its seals.
    let seals = unsafe { libc::fcntl(h.as_raw_fd(), libc::F_GET_SEALS) };
    let size = usize::try_from(st.st_size).ok();
    let fixed = libc::F_SEAL_GROW | libc::F_SEAL_SHRINK;
    if seals >= 0 && seals & ITEM_SEALS == ITEM_SEALS {
        if size != Some(len) {
            return Err(bad("a sealed item's size does not match its message"));
        }
        Ok(super::ItemObject {
            reused: false,
            id: st.st_ino,
        })
    } else if seals >= 0 && seals & fixed == fixed {
        if size.is_none_or(|s| s < len) {
            return Err(bad("a reusable item object is shorter than its message"));
        }
        Ok(super::ItemObject {
            reused: true,
            id: st.st_ino,
        })
    } else {
        Err(bad("a sealed item's descriptor is not sealed"))
    }
}

/// Opens, read-only, the item object another process of this user holds
/// as descriptor `value` (`/proc/<pid>/fd/<value>`).
pub fn open_item(pid: u32, value: u64) -> io::Result<OwnedHandle> {
    crate::sys::import_handle(pid, value, crate::sys::Access::Read)
}

/// Tells the peer on the stream socket `sock` that the reusable object
/// `id` is free again: 8 bytes, sent without waiting (`false` when they
/// could not go at once: a peer that does not read loses the notice, and
/// the object stays busy for it).
pub fn send_freed(sock: BorrowedHandle<'_>, id: u64) -> bool {
    let b = id.to_le_bytes();
    // SAFETY: sends from a live 8-byte array; the result is checked.
    let n = unsafe {
        libc::send(
            sock.as_raw_fd(),
            b.as_ptr().cast(),
            b.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    n == b.len() as isize
}

/// Appends to `out` what the stream socket `sock` holds now (the notices
/// [`send_freed`] sent), without waiting. `Ok(false)` once the peer
/// closed its end.
pub fn recv_freed(sock: BorrowedHandle<'_>, out: &mut Vec<u8>) -> io::Result<bool> {
    let mut chunk = [0u8; 512];
    loop {
        // SAFETY: receives into a live buffer of `chunk.len()` bytes.
        let n = unsafe {
            libc::recv(
                sock.as_raw_fd(),
                chunk.as_mut_ptr().cast(),
                chunk.len(),
                libc::MSG_DONTWAIT,
            )
        };
        match n {
            0 => return Ok(false),
            n if n > 0 => out.extend_from_slice(&chunk[..n as usize]),
            _ => {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock => return Ok(true),
                    _ => return Err(e),
                }
            }
        }
    }
}
