//! `read_frame` over arbitrary bytes: every outcome is a frame or an error,
//! never a panic, and no allocation exceeds what the bytes that arrived
//! justify (the decoder's documented bound), however large the announced
//! length.
//!
//! Input: `[max selector, read step, interrupt period, wire bytes...]`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mproc_fuzz::{largest_allocation, IoShape, Mem};
use mproc_ipc::__private::frame::{self, DEFAULT_MAX_MESSAGE};
use mproc_ipc::Error;

/// The maxima a receiver may pass: tiny, the handshake's, a typical
/// configured one, the default, and none at all.
const MAXES: [u64; 8] = [0, 1, 16, 256, 4096, 1 << 16, DEFAULT_MAX_MESSAGE, u64::MAX];

/// `frame.rs`'s receive-buffer growth step.
const READ_CHUNK: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let (config, wire) = data.split_at(data.len().min(3));
    let mut config = config.iter().copied();
    let max = MAXES[usize::from(config.next().unwrap_or(0)) % MAXES.len()];
    let shape = IoShape {
        read_step: config.next().unwrap_or(0),
        interrupt_every: config.next().unwrap_or(0) % 4,
        ..IoShape::PLAIN
    };
    let mut r = Mem::new(wire.to_vec(), shape);

    let mut payloads = Vec::new();
    let mut received = 0usize;
    for _ in 0..64 {
        let (result, largest) = largest_allocation(|| frame::read_frame(&mut r, max));
        // The buffer grows with what arrives: at most
        // max(2 × received, received + 1 MiB), whatever the header says.
        let bound = (2 * wire.len()).max(wire.len() + READ_CHUNK);
        assert!(
            largest <= bound,
            "allocated {largest} bytes reading {} wire bytes",
            wire.len()
        );
        match result {
            Ok(p) => {
                assert!(
                    p.len() as u64 <= max,
                    "a {}-byte frame passed max {max}",
                    p.len()
                );
                received += p.len();
                assert!(received <= wire.len());
                payloads.push(p);
            }
            Err(Error::Eof) => {
                assert!(r.remaining().is_empty(), "Eof with bytes left");
                break;
            }
            Err(Error::EofDuringMessage) => {
                assert!(r.remaining().is_empty(), "EofDuringMessage with bytes left");
                break;
            }
            Err(Error::MessageTooLarge { len, max: m }) => {
                assert_eq!(m, max);
                assert!(len > max);
                break;
            }
            Err(other) => panic!("unexpected error from an in-memory reader: {other:?}"),
        }
    }

    // Whatever was accepted goes back out and in again unchanged, in one
    // piece or in parts.
    for p in &payloads {
        let mut out = Vec::new();
        frame::write_frame(&mut out, p).unwrap();
        let cut = usize::from(p.first().copied().unwrap_or(0)).min(p.len());
        let mut parts = Vec::new();
        frame::write_frame_parts(&mut parts, &[&p[..cut], &[], &p[cut..]]).unwrap();
        assert_eq!(out, parts);
        let mut back: &[u8] = &out;
        assert_eq!(
            &frame::read_frame(&mut back, DEFAULT_MAX_MESSAGE).unwrap(),
            p
        );
        assert!(back.is_empty());
    }
});
