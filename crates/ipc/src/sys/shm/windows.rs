//! Shared memory on Windows: a pagefile-backed section
//! (`CreateFileMappingW(INVALID_HANDLE_VALUE, …)`) mapped with
//! `MapViewOfFile`. An anonymous section travels to a child as a handle
//! (`DuplicateHandle`); the kernel frees it with its last handle and view,
//! however the holders ended. A named one is `Local\<name>`.

use std::io;
use std::os::windows::io::{AsHandle, AsRawHandle, FromRawHandle};
use std::ptr::NonNull;

use windows_sys::Win32::Foundation::{
    GetLastError, ERROR_ALREADY_EXISTS, FALSE, INVALID_HANDLE_VALUE,
};
use windows_sys::Win32::System::Memory::{
    CreateFileMappingW, MapViewOfFile, OpenFileMappingW, UnmapViewOfFile, VirtualQuery,
    FILE_MAP_READ, FILE_MAP_WRITE, MEMORY_BASIC_INFORMATION, MEMORY_MAPPED_VIEW_ADDRESS,
    PAGE_READWRITE,
};

use crate::sys::handles::{BorrowedHandle, OwnedHandle};
use crate::sys::stream::wide;

/// A shared, read-write view of a whole section.
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    section: OwnedHandle,
}

// SAFETY: the view is plain shared memory; every access through it goes
// through raw pointers whose synchronisation is the caller's.
unsafe impl Send for Mapping {}
// SAFETY: as above: `&Mapping` only hands out raw pointers.
unsafe impl Sync for Mapping {}

fn section(len: usize, name: Option<&str>) -> io::Result<OwnedHandle> {
    if len == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "size must be > 0",
        ));
    }
    let len64 = len as u64;
    let name = name.map(|n| wide(&format!("Local\\{n}")));
    // SAFETY: a pagefile-backed section; the name, if any, is
    // NUL-terminated and outlives the call.
    let h = unsafe {
        CreateFileMappingW(
            INVALID_HANDLE_VALUE,
            std::ptr::null(),
            PAGE_READWRITE,
            (len64 >> 32) as u32,
            len64 as u32,
            name.as_ref().map_or(std::ptr::null(), |n| n.as_ptr()),
        )
    };
    if h.is_null() {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: read right after the call that set it.
    let existed = unsafe { GetLastError() } == ERROR_ALREADY_EXISTS;
    // SAFETY: a fresh handle we own.
    let h = unsafe { OwnedHandle::from_raw_handle(h) };
    if existed {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "a shared memory object of that name exists",
        ));
    }
    Ok(h)
}

fn check_name(name: &str) -> io::Result<&str> {
    let bare = name.strip_prefix('/').unwrap_or(name);
    if bare.is_empty() || bare.len() > 250 || bare.contains(['/', '\\', '\0']) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a shared memory name is 1 to 250 characters without '/' or '\\'",
        ));
    }
    Ok(bare)
}

impl Mapping {
    /// A new zero-filled anonymous section of `len` (> 0) bytes.
    pub fn anonymous(len: usize) -> io::Result<Mapping> {
        let s = section(len, None)?;
        Self::map(s, Some(len))
    }

    /// Maps the section behind a received handle, all of it.
    pub fn from_handle(h: OwnedHandle) -> io::Result<Mapping> {
        Self::map(h, None)
    }

    /// Creates the named section `name` (an error if it exists).
    pub fn create_named(name: &str, len: usize) -> io::Result<Mapping> {
        let s = section(len, Some(check_name(name)?))?;
        Self::map(s, Some(len))
    }

    /// Opens the existing named section `name`, all of it.
    pub fn open_named(name: &str) -> io::Result<Mapping> {
        let n = wide(&format!("Local\\{}", check_name(name)?));
        // SAFETY: a NUL-terminated name that outlives the call.
        let h = unsafe { OpenFileMappingW(FILE_MAP_READ | FILE_MAP_WRITE, FALSE, n.as_ptr()) };
        if h.is_null() {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh handle we own.
        Self::map(unsafe { OwnedHandle::from_raw_handle(h) }, None)
    }

    fn map(section: OwnedHandle, len: Option<usize>) -> io::Result<Mapping> {
        // SAFETY: maps the section (all of it when `len` is None); the
        // result is checked before use. A handle of another kind fails.
        let view = unsafe {
            MapViewOfFile(
                section.as_raw_handle(),
                FILE_MAP_READ | FILE_MAP_WRITE,
                0,
                0,
                len.unwrap_or(0),
            )
        };
        let ptr = NonNull::new(view.Value.cast::<u8>()).ok_or_else(io::Error::last_os_error)?;
        let len = match len {
            Some(l) => l,
            None => {
                // SAFETY: queries our own view; the struct is plain data.
                let mut info: MEMORY_BASIC_INFORMATION = unsafe { std::mem::zeroed() };
                // SAFETY: as above.
                let n = unsafe {
                    VirtualQuery(
                        ptr.as_ptr().cast(),
                        &mut info,
                        std::mem::size_of::<MEMORY_BASIC_INFORMATION>(),
                    )
                };
                if n == 0 {
                    let e = io::Error::last_os_error();
                    // SAFETY: our view, unmapped once.
                    unsafe { UnmapViewOfFile(MEMORY_MAPPED_VIEW_ADDRESS { Value: view.Value }) };
                    return Err(e);
                }
                info.RegionSize
            }
        };
        Ok(Mapping { ptr, len, section })
    }

    /// The first byte (page-aligned).
    pub fn ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Its length in bytes (a received section's: rounded up to pages).
    pub fn len(&self) -> usize {
        self.len
    }

    /// The handle that carries the mapping to another process.
    pub fn handle(&self) -> BorrowedHandle<'_> {
        self.section.as_handle()
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: our own view; nothing borrows it once its owner drops it.
        unsafe {
            UnmapViewOfFile(MEMORY_MAPPED_VIEW_ADDRESS {
                Value: self.ptr.as_ptr().cast(),
            })
        };
    }
}

/// Nothing to do: a named section goes with its last handle on Windows
/// (CPython's `unlink` does nothing there either).
pub fn unlink_named(name: &str) -> io::Result<()> {
    check_name(name).map(drop)
}

/// Whether [`seal_bytes`] makes sealed items here: not on Windows yet
/// (large queue items travel inline, docs/platforms.md).
pub const SEALED_ITEMS: bool = false;

fn unsupported() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "sealed queue items are not implemented on Windows",
    )
}

/// Not on Windows yet: always `ErrorKind::Unsupported`.
pub fn seal_bytes(_parts: &[&[u8]]) -> io::Result<OwnedHandle> {
    Err(unsupported())
}

/// Not on Windows yet: always `ErrorKind::Unsupported`.
pub fn read_at(_h: BorrowedHandle<'_>, _offset: usize, _len: usize) -> io::Result<Vec<u8>> {
    Err(unsupported())
}

/// Not on Windows yet: always `ErrorKind::Unsupported`.
pub fn pooled_object(_size: usize) -> io::Result<(OwnedHandle, u64)> {
    Err(unsupported())
}

/// Not on Windows yet: always `ErrorKind::Unsupported`.
pub fn check_item(_h: BorrowedHandle<'_>, _len: usize) -> io::Result<super::ItemObject> {
    Err(unsupported())
}

/// Not on Windows yet: always `ErrorKind::Unsupported`.
pub fn open_item(_pid: u32, _value: u64) -> io::Result<OwnedHandle> {
    Err(unsupported())
}

/// Not on Windows yet: nothing is sent.
pub fn send_freed(_sock: BorrowedHandle<'_>, _id: u64) -> bool {
    false
}

/// Not on Windows yet: always `ErrorKind::Unsupported`.
pub fn recv_freed(_sock: BorrowedHandle<'_>, _out: &mut Vec<u8>) -> io::Result<bool> {
    Err(unsupported())
}
