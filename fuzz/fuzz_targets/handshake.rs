//! The authkey handshake with the fuzzer as the peer: `deliver_challenge`,
//! `answer_challenge` and the two sides that chain them, over an in-memory
//! stream that reads the peer's bytes in fuzzer-chosen pieces (with
//! `Interrupted` reads and failing reads or writes). Every outcome is `Ok`
//! or an error, never a panic; a handshake read never allocates more than
//! its 256-byte cap; a challenge is only passed by a reply MACed with the
//! key; and an honest peer always passes.
//!
//! The peer's script mixes raw bytes, well-formed frames and honest
//! replies (our own `answer_challenge`, with the fuzzer's key, run on the
//! challenge we just sent, then optionally corrupted).

#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use mproc_fuzz::{largest_allocation, untracked, IoShape, Mem};
use mproc_ipc::__private::{auth, frame};
use mproc_ipc::Error;
use std::io::{self, Read, Write};

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq)]
enum Side {
    Deliver,
    Answer,
    Server,
    Client,
}

#[derive(Arbitrary, Debug)]
enum Step {
    /// Bytes as they are.
    Raw(Vec<u8>),
    /// One well-formed frame.
    Frame(Vec<u8>),
    /// The reply an honest answerer with `key` (ours when `None`) gives to
    /// the last challenge we sent, with one byte xor-ed (`flip`).
    Honest {
        key: Option<Vec<u8>>,
        flip: Option<(u8, u8)>,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    side: Side,
    key: Vec<u8>,
    shape: IoShape,
    script: Vec<Step>,
}

/// The peer: plays `script` step by step as our side reads.
struct Peer {
    mem: Mem,
    key: Vec<u8>,
    script: std::vec::IntoIter<Step>,
    /// How far into `mem.output` (what we sent) the peer has looked.
    seen: usize,
    /// Whether an honest reply that was not corrupted went out (with any
    /// key: HMAC treats some distinct keys alike, e.g. `k` and `k\0`).
    honest_sent: bool,
}

impl Peer {
    /// Appends the next step of the script to what we will read; false at
    /// its end.
    fn next_step(&mut self) -> bool {
        let Some(step) = self.script.next() else {
            return false;
        };
        match step {
            Step::Raw(b) => self.mem.input.extend_from_slice(&b),
            Step::Frame(b) => frame::write_frame(&mut self.mem.input, &b).unwrap(),
            Step::Honest { key, flip } => {
                // The last whole frame we sent.
                let mut sent: &[u8] = &self.mem.output[self.seen..];
                let mut last = None;
                while let Ok(f) = frame::read_frame(&mut sent, 4096) {
                    last = Some(f);
                }
                self.seen = self.mem.output.len() - sent.len();
                let Some(challenge) = last else {
                    return true;
                };
                let key = key.unwrap_or_else(|| self.key.clone());
                let mut answerer = Mem::new(Vec::new(), IoShape::PLAIN);
                frame::write_frame(&mut answerer.input, &challenge).unwrap();
                frame::write_frame(&mut answerer.input, b"#WELCOME#").unwrap();
                if auth::answer_challenge(&mut answerer, &key).is_err() {
                    return true; // Not a challenge: send nothing.
                }
                let mut out: &[u8] = &answerer.output;
                let mut reply = frame::read_frame(&mut out, 4096).unwrap();
                let mut forged = false;
                if let Some((at, xor)) = flip {
                    if let Some(b) = reply.get_mut(usize::from(at)) {
                        *b ^= xor;
                        forged = xor != 0;
                    }
                }
                self.honest_sent |= !forged;
                frame::write_frame(&mut self.mem.input, &reply).unwrap();
            }
        }
        true
    }
}

impl Read for Peer {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // The peer's own work is not the handshake's allocation.
        untracked(|| {
            while self.mem.remaining().is_empty() && !buf.is_empty() {
                if !self.next_step() {
                    break;
                }
            }
        });
        self.mem.read(buf)
    }
}

impl Write for Peer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        untracked(|| self.mem.write(buf))
    }
    fn flush(&mut self) -> io::Result<()> {
        self.mem.flush()
    }
}

fuzz_target!(|input: Input| {
    let Input {
        side,
        key,
        shape,
        script,
    } = input;
    let honest_first = matches!(
        script.first(),
        Some(Step::Honest {
            key: None,
            flip: None
        })
    );
    let mut peer = Peer {
        mem: Mem::new(Vec::new(), shape),
        key: key.clone(),
        script: script.into_iter(),
        seen: 0,
        honest_sent: false,
    };
    let (result, largest) = largest_allocation(|| match side {
        Side::Deliver => auth::deliver_challenge(&mut peer, &key),
        Side::Answer => auth::answer_challenge(&mut peer, &key),
        Side::Server => auth::server_handshake(&mut peer, &key),
        Side::Client => auth::client_handshake(&mut peer, &key),
    });
    // Handshake reads are capped at 256 bytes, whatever a header says.
    assert!(largest <= 1024, "a handshake allocated {largest} bytes");
    match &result {
        Ok(()) => {}
        Err(
            Error::Authentication(_)
            | Error::Eof
            | Error::EofDuringMessage
            | Error::BrokenPipe
            | Error::Io(_),
        ) => {}
        Err(other) => panic!("unexpected handshake error: {other:?}"),
    }
    // Our challenge is 40 random bytes: passing it takes the key.
    if result.is_ok() && matches!(side, Side::Deliver | Side::Server | Side::Client) {
        assert!(
            peer.honest_sent,
            "a challenge passed without an honest reply"
        );
    }
    // An honest peer on a working stream is always accepted.
    if side == Side::Deliver
        && honest_first
        && shape.fail_writes_after.is_none()
        && shape.fail_reads_after.is_none()
    {
        assert!(result.is_ok(), "an honest reply was refused: {result:?}");
    }
});
