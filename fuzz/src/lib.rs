//! Helpers shared by the fuzz targets: an allocator that records the
//! largest single allocation made while a check runs, and an in-memory
//! stream whose reads and writes come in fuzzer-chosen sizes, with
//! `Interrupted` errors and failures injected.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{self, ErrorKind, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use libfuzzer_sys::arbitrary::{self, Arbitrary};

/// The system allocator, recording the largest request made while
/// [`largest_allocation`] runs its closure.
pub struct Tracking;

static TRACKING: AtomicBool = AtomicBool::new(false);
static LARGEST: AtomicUsize = AtomicUsize::new(0);

fn note(size: usize) {
    if TRACKING.load(Ordering::Relaxed) {
        LARGEST.fetch_max(size, Ordering::Relaxed);
    }
}

// SAFETY: every call is passed to `System` unchanged.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: Tracking = Tracking;

/// Runs `f` and returns its result with the size of the largest single
/// allocation (or reallocation) it made. The targets are single-threaded.
pub fn largest_allocation<R>(f: impl FnOnce() -> R) -> (R, usize) {
    LARGEST.store(0, Ordering::Relaxed);
    TRACKING.store(true, Ordering::Relaxed);
    let r = f();
    TRACKING.store(false, Ordering::Relaxed);
    (r, LARGEST.load(Ordering::Relaxed))
}

/// Runs `f` with [`largest_allocation`]'s recording paused (for a
/// simulated peer's own work).
pub fn untracked<R>(f: impl FnOnce() -> R) -> R {
    let was = TRACKING.swap(false, Ordering::Relaxed);
    let r = f();
    TRACKING.store(was, Ordering::Relaxed);
    r
}

/// How an in-memory stream misbehaves, as the fuzzer chooses.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct IoShape {
    /// Each read returns at most this many bytes (0: as many as asked).
    pub read_step: u8,
    /// Every (n + 1)-th read call is `Interrupted` (0: never).
    pub interrupt_every: u8,
    /// Each write accepts at most this many bytes (0: all).
    pub write_step: u8,
    /// After this many write calls, writes fail with `BrokenPipe`.
    pub fail_writes_after: Option<u8>,
    /// After this many successful read calls, reads fail with
    /// `ConnectionReset`.
    pub fail_reads_after: Option<u8>,
}

impl IoShape {
    /// A well-behaved stream: whole reads and writes, no errors.
    pub const PLAIN: IoShape = IoShape {
        read_step: 0,
        interrupt_every: 0,
        write_step: 0,
        fail_writes_after: None,
        fail_reads_after: None,
    };
}

/// An in-memory peer: reads come from `input`, writes go to `output`.
pub struct Mem {
    pub input: Vec<u8>,
    pub pos: usize,
    pub output: Vec<u8>,
    pub shape: IoShape,
    reads: usize,
    read_calls: usize,
    writes: usize,
}

impl Mem {
    pub fn new(input: Vec<u8>, shape: IoShape) -> Mem {
        Mem {
            input,
            pos: 0,
            output: Vec::new(),
            shape,
            reads: 0,
            read_calls: 0,
            writes: 0,
        }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> &[u8] {
        &self.input[self.pos..]
    }
}

impl Read for Mem {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_calls += 1;
        // Period n + 1, so two calls in a row are never both interrupted.
        let every = usize::from(self.shape.interrupt_every);
        if every != 0 && self.read_calls.is_multiple_of(every + 1) {
            return Err(io::Error::new(ErrorKind::Interrupted, "fuzz: interrupted"));
        }
        if let Some(limit) = self.shape.fail_reads_after {
            if self.reads >= usize::from(limit) {
                return Err(io::Error::new(ErrorKind::ConnectionReset, "fuzz: reset"));
            }
        }
        self.reads += 1;
        let step = match self.shape.read_step {
            0 => usize::MAX,
            s => usize::from(s),
        };
        let n = buf.len().min(step).min(self.input.len() - self.pos);
        buf[..n].copy_from_slice(&self.input[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Write for Mem {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(limit) = self.shape.fail_writes_after {
            if self.writes >= usize::from(limit) {
                return Err(io::Error::new(ErrorKind::BrokenPipe, "fuzz: broken pipe"));
            }
        }
        self.writes += 1;
        let step = match self.shape.write_step {
            0 => usize::MAX,
            s => usize::from(s),
        };
        let n = buf.len().min(step);
        self.output.extend_from_slice(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
