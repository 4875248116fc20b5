//! The few OS calls every contender shares: pipes and socket pairs whose
//! child ends are inherited across exec, framed reads and writes on raw
//! descriptors, CPU pinning and a child's peak RSS.
//!
//! Every contender signals "I am here" the same way, with one byte on an
//! inherited pipe, so that the spawn figures measure the spawn and nothing
//! else.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// A descriptor pair; `inherit_*` clears close-on-exec on that end so a
/// child started after this call (by any contender) receives it under the
/// same number.
pub fn pipe(inherit_read: bool, inherit_write: bool) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded: both descriptors are open and ours.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    if inherit_read {
        set_inheritable(&r)?;
    }
    if inherit_write {
        set_inheritable(&w)?;
    }
    Ok((r, w))
}

/// A connected Unix stream socket pair; the second end is inherited by
/// children started afterwards.
pub fn socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for the two descriptors socketpair writes.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: socketpair succeeded: both descriptors are open and ours.
    let (a, b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    set_inheritable(&b)?;
    Ok((a, b))
}

/// Lets children started afterwards inherit `fd`.
pub fn set_inheritable(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: F_SETFD on a descriptor we own.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Adopts a descriptor this process inherited under number `fd`.
pub fn adopt(fd: RawFd) -> File {
    // SAFETY: the parent passed this number for a descriptor it left open
    // across exec for this process alone to use; nothing else here owns it.
    unsafe { File::from_raw_fd(fd) }
}

/// Writes one line ("1\n") to the inherited descriptor `fd` and closes it.
pub fn signal(fd: RawFd) {
    let mut f = adopt(fd);
    let _ = f.write_all(b"1\n");
}

/// Reads until `n` signals (lines from [`signal`]) arrived on `r`.
pub fn wait_signals(r: &OwnedFd, n: usize) -> io::Result<()> {
    let mut got = 0;
    let mut buf = [0u8; 64];
    while got < n * 2 {
        // SAFETY: reading into a buffer we own, of the length we pass.
        let k = unsafe { libc::read(r.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        match k {
            0 => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "a child ended before it signalled",
                ))
            }
            k if k < 0 => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            k => got += k as usize,
        }
    }
    Ok(())
}

/// Blocks until every writer of the inherited gate pipe `fd` closed it:
/// the parent opens the gate for all children at once by closing its end.
pub fn wait_gate(fd: RawFd) {
    let mut f = adopt(fd);
    let mut buf = [0u8; 1];
    let _ = f.read(&mut buf);
}

/// A frame as CPython's `Connection` writes it: 4-byte big-endian length,
/// then the payload.
pub fn frame(size: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + size);
    v.extend_from_slice(&(size as u32).to_be_bytes());
    v.resize(4 + size, 0x5a);
    v
}

/// Reads one length-prefixed frame into `buf` (resized to fit); `false` at
/// a clean end of stream.
pub fn read_frame(f: &mut impl Read, buf: &mut Vec<u8>) -> io::Result<bool> {
    let mut len = [0u8; 4];
    match f.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(e) => return Err(e),
    }
    buf.resize(u32::from_be_bytes(len) as usize, 0);
    f.read_exact(buf)?;
    Ok(true)
}

/// Pins this process (and so every child started afterwards) to the first
/// CPU it may run on; returns that CPU.
pub fn pin_to_one_cpu() -> io::Result<usize> {
    // SAFETY: cpu_set_t is plain data; zeroed is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: `set` is a valid cpu_set_t of `size` bytes.
    if unsafe { libc::sched_getaffinity(0, size, &mut set) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let cpu = (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu` is below CPU_SETSIZE.
        .find(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .ok_or_else(|| io::Error::other("empty CPU affinity"))?;
    // SAFETY: as above.
    unsafe {
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
    }
    // SAFETY: `set` is a valid cpu_set_t of `size` bytes.
    if unsafe { libc::sched_setaffinity(0, size, &set) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cpu)
}

/// Peak resident set size of process `pid` (`VmHWM`), in MiB.
pub fn peak_rss_mib(pid: u32) -> io::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .ok_or_else(|| io::Error::other(format!("no VmHWM for pid {pid}")))?;
    Ok(kb / 1024.0)
}

/// How long an idle child waits before it gives up on being killed.
pub const IDLE: Duration = Duration::from_secs(600);

/// The median of `v` (sorted in place); NaN for an empty slice.
pub fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}
