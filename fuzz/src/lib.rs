//! Helpers shared by the fuzz targets: an allocator that records the
//! largest single allocation made while a check runs (shared with the
//! normal suite), and an in-memory
//! stream whose reads and writes come in fuzzer-chosen sizes, with
//! `Interrupted` errors and failures injected.

use std::io::{self, ErrorKind, Read, Write};

use libfuzzer_sys::arbitrary::{self, Arbitrary};

// The recording allocator and the expected receive errors, shared with
// the normal suite's hostile-bytes tests.
#[path = "../../crates/ipc/tests/support/mod.rs"]
mod support;
pub use support::{expected_recv_error, largest_allocation, untracked};

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
