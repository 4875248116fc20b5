//! Hostile bytes, as properties over the public API (the fuzz targets under
//! `fuzz/` push the same checks much further; see docs/reliability.md):
//! truncated frames, oversize and lying length headers, wrong type tags,
//! and a `Connection` fed arbitrary records give errors, never a panic, a
//! hang, or an allocation sized by a header rather than by what arrived.

use mproc_ipc::__private::frame::{self, DEFAULT_MAX_MESSAGE};
use mproc_ipc::__private::tag;
use mproc_ipc::Error;
use proptest::prelude::*;

mod support;
use support::{expected_recv_error, largest_allocation};

/// `frame.rs`'s growth step: a buffer never outgrows what arrived by more.
const READ_CHUNK: usize = 1 << 20;

fn framed(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    frame::write_frame(&mut out, payload).unwrap();
    out
}

/// A header announcing `len`, in the long form when asked or needed.
fn header(len: u64, long: bool) -> Vec<u8> {
    if long || len > 0x7fff_ffff {
        let mut h = vec![0xff; 4];
        h.extend_from_slice(&len.to_be_bytes());
        h
    } else {
        (len as u32).to_be_bytes().to_vec()
    }
}

proptest! {
    #[test]
    fn every_truncation_of_a_frame_is_an_eof_error(
        payload in proptest::collection::vec(any::<u8>(), 0..600),
        cut in any::<prop::sample::Index>(),
    ) {
        let wire = framed(&payload);
        let cut = cut.index(wire.len()); // 0..wire.len(): never whole.
        let mut r = &wire[..cut];
        match frame::read_frame(&mut r, DEFAULT_MAX_MESSAGE) {
            Err(Error::Eof) => prop_assert_eq!(cut, 0),
            Err(Error::EofDuringMessage) => prop_assert!(cut > 0),
            other => prop_assert!(false, "cut {} of {}: {:?}", cut, wire.len(), other),
        }
    }

    #[test]
    fn oversize_headers_are_refused_before_reading(
        max in any::<u64>(),
        excess in 1..=u64::MAX,
        long in any::<bool>(),
        tail in proptest::collection::vec(any::<u8>(), 0..32),
    ) {
        prop_assume!(max.checked_add(excess).is_some());
        let len = max + excess;
        let mut wire = header(len, long);
        let header_len = wire.len();
        wire.extend_from_slice(&tail);
        let mut r: &[u8] = &wire;
        let (result, largest) = largest_allocation(|| frame::read_frame(&mut r, max));
        match result {
            Err(Error::MessageTooLarge { len: l, max: m }) => {
                prop_assert_eq!((l, m), (len, max));
            }
            other => prop_assert!(false, "{:?}", other),
        }
        // Nothing past the header was read, nothing was allocated for it.
        prop_assert_eq!(r.len(), wire.len() - header_len);
        prop_assert!(largest < 1024, "allocated {}", largest);
    }

    #[test]
    fn lying_headers_cost_what_arrives(
        body in proptest::collection::vec(any::<u8>(), 0..2048),
        extra in 1..=u64::MAX / 2,
        long in any::<bool>(),
    ) {
        // Announces more than arrives, up to 2^63 bytes, with no maximum.
        let len = body.len() as u64 + extra;
        let mut wire = header(len, long);
        wire.extend_from_slice(&body);
        let mut r: &[u8] = &wire;
        let (result, largest) = largest_allocation(|| frame::read_frame(&mut r, u64::MAX));
        prop_assert!(matches!(result, Err(Error::EofDuringMessage)), "{:?}", result);
        prop_assert!(largest <= body.len() + READ_CHUNK, "allocated {}", largest);
    }

    #[test]
    fn handshake_reads_are_capped_at_256_bytes(
        announced in 257..=u64::MAX,
        long in any::<bool>(),
        body in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        struct Peer<'a>(&'a [u8], Vec<u8>);
        impl std::io::Read for Peer<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                self.0.read(buf)
            }
        }
        impl std::io::Write for Peer<'_> {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.1.write(buf)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut wire = header(announced, long);
        wire.extend_from_slice(&body);
        let mut peer = Peer(&wire, Vec::new());
        let (result, largest) =
            largest_allocation(|| mproc_ipc::__private::auth::answer_challenge(&mut peer, b"key"));
        prop_assert!(matches!(result, Err(Error::Authentication(_))), "{:?}", result);
        prop_assert!(peer.1.is_empty(), "nothing is answered");
        prop_assert!(largest < 1024, "allocated {}", largest);
    }

    #[test]
    fn a_message_of_one_type_is_refused_as_another(
        n in any::<u32>(),
        s in ".{0,20}",
        v in proptest::collection::vec(any::<u8>(), 0..20),
        pick in 0..4usize,
        want in 0..4usize,
    ) {
        prop_assume!(pick != want);
        let mut payload = Vec::new();
        match pick {
            0 => tag::encode(&n, &mut payload),
            1 => tag::encode(&s, &mut payload),
            2 => tag::encode(&v, &mut payload),
            _ => tag::encode(&(n as u8, Some(s.clone())), &mut payload),
        }
        .unwrap();
        let result = match want {
            0 => tag::decode::<u32>(&payload).map(drop),
            1 => tag::decode::<String>(&payload).map(drop),
            2 => tag::decode::<Vec<u8>>(&payload).map(drop),
            _ => tag::decode::<(u8, Option<String>)>(&payload).map(drop),
        };
        match result {
            Err(Error::TypeMismatch { found, .. }) => {
                prop_assert_eq!(Some(found), tag::sender_type_name(&payload));
            }
            other => prop_assert!(false, "{:?}", other),
        }
    }

    #[test]
    fn a_forged_tag_is_a_mismatch_or_a_decode_error(
        fingerprint in any::<u64>(),
        name in proptest::collection::vec(any::<u8>(), 0..=255),
        body in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut payload = tag::MAGIC.to_vec();
        payload.extend_from_slice(&fingerprint.to_be_bytes());
        payload.push(name.len() as u8);
        payload.extend_from_slice(&name);
        payload.extend_from_slice(&body);
        match tag::decode::<Vec<String>>(&payload) {
            // Trailing bytes, or nesting too deep (not for this type).
            Err(Error::TypeMismatch { .. }) | Err(Error::Decode(_)) => {}
            // Accepted only when the fingerprint is the decoded value's shape.
            Ok(v) => prop_assert_eq!(fingerprint, tag::fingerprint_of(&v).unwrap()),
            Err(other) => prop_assert!(false, "{:?}", other),
        }
    }
}

/// A `pipe()` end fed arbitrary writes by a raw peer that then closes
/// (a raw `sys::Stream` on the peer end's handle: a byte stream, read by
/// the `Connection` with its read-ahead).
mod connection {
    use super::*;
    use mproc_ipc::__private::sys;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn arbitrary_records_are_messages_or_errors(
            records in proptest::collection::vec(
                prop_oneof![
                    proptest::collection::vec(any::<u8>(), 0..64),
                    proptest::collection::vec(any::<u8>(), 0..600).prop_map(|p| framed(&p)),
                    (any::<u64>(), any::<bool>(), proptest::collection::vec(any::<u8>(), 0..64))
                        .prop_map(|(n, long, b)| {
                            let mut h = header(n, long);
                            h.extend_from_slice(&b);
                            h
                        }),
                ],
                0..12,
            ),
            ops in proptest::collection::vec(0..4u8, 1..16),
            small_max in any::<bool>(),
        ) {
            let (ours, theirs) = mproc_ipc::pipe(true).unwrap();
            let raw = sys::Stream::from_owned(sys::duplicate(sys::borrow(&theirs)).unwrap()).unwrap();
            drop(theirs);
            let mut written = 0;
            for r in &records {
                raw.write_frame(&[], r).unwrap();
                written += r.len();
            }
            drop(raw);
            if small_max {
                ours.set_max_message(100);
            }
            for op in ops {
                let (result, largest) = largest_allocation(|| match op {
                    0 => ours.recv_bytes().map(drop),
                    1 => ours.recv_bytes_max(50).map(drop),
                    2 => ours.recv::<String>().map(drop),
                    _ => ours.recv_bytes_into(&mut [0u8; 32]).map(drop),
                });
                prop_assert!(largest <= 2 * written + 2 * READ_CHUNK, "allocated {}", largest);
                if let Err(e) = &result {
                    prop_assert!(expected_recv_error(e), "{:?}", e);
                }
            }
        }
    }
}
