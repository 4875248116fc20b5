//! The byte-sequence fast path of typed messages (issue 14 item 3):
//! `send`/`recv` of `Vec<u8>`, `[u8]`, `String`, `str`, `ByteBuf` and
//! `Bytes` skip postcard's per-byte calls, over real socket pairs.
//!
//! What must not change, and is checked here: the wire bytes (exactly the
//! tag then postcard's body, docs/protocol.md), the type check
//! (the guide's "Typed messages are checked": `send("x")` is received as
//! `String`, `send(&[1u8, 2][..])` as `Vec<u8>`, a wrong type is
//! `Error::TypeMismatch` and the message is consumed — CPython checklist
//! "send/recv round trip", `_test_multiprocessing` `test_connection`), and
//! a hostile payload behind a byte-sequence tag gives exactly the error
//! the general decoder gives, never garbage and never an allocation sized
//! by a header.

use std::thread;

use mproc_ipc::__private::{sys, tag};
use mproc_ipc::{pipe, Connection, Error};
use proptest::prelude::*;
use serde_bytes::{ByteBuf, Bytes};

mod support;
use support::{expected_recv_error, largest_allocation};

/// A frame's header, as `send_bytes` would write it, prepended to `payload`.
fn framed(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    mproc_ipc::__private::frame::write_frame(&mut out, payload).unwrap();
    out
}

/// The typed payload the general encoder would write: tag, then
/// `postcard::to_stdvec`.
fn reference_payload<T: serde::Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    tag::encode_tag(value, &mut out).unwrap();
    out.extend_from_slice(&postcard::to_stdvec(value).unwrap());
    out
}

/// A pair whose second end is a raw stream: hostile records go in as they
/// are, with no framing added.
fn with_raw_peer() -> (Connection, sys::Stream) {
    let (ours, theirs) = pipe(true).unwrap();
    let raw = sys::Stream::from_owned(sys::duplicate(sys::borrow(&theirs)).unwrap()).unwrap();
    drop(theirs);
    (ours, raw)
}

/// Sends with `send`, receives the raw payload: the wire bytes.
fn wire_of<T: serde::Serialize + ?Sized + Sync>(value: &T) -> Vec<u8> {
    let (a, b) = pipe(true).unwrap();
    thread::scope(|s| {
        s.spawn(|| a.send(value).unwrap());
        b.recv_bytes().unwrap()
    })
}

#[test]
fn wire_bytes_are_the_general_encoders() {
    // docs/protocol.md: a typed message is the tag then the postcard body.
    let big: Vec<u8> = (0..(1 << 20) + 7).map(|i| (i * 31) as u8).collect();
    for len in [0, 1, 127, 128, 300, 16_384, big.len()] {
        let v = big[..len].to_vec();
        assert_eq!(wire_of(&v), reference_payload(&v), "Vec<u8> of {len}");
        assert_eq!(wire_of(&v[..]), reference_payload(&v[..]), "[u8] of {len}");
        let b = ByteBuf::from(v.clone());
        assert_eq!(wire_of(&b), reference_payload(&b), "ByteBuf of {len}");
        assert_eq!(wire_of(Bytes::new(&v)), reference_payload(Bytes::new(&v)));
    }
    assert_eq!(wire_of("héllo"), reference_payload("héllo"));
    assert_eq!(
        wire_of(&String::from("x")),
        reference_payload(&String::from("x"))
    );
    // And the in-memory encoder (the Queue's) agrees.
    let mut payload = Vec::new();
    tag::encode(&big, &mut payload).unwrap();
    assert_eq!(payload, reference_payload(&big));
}

#[test]
fn borrowed_forms_arrive_as_owned() {
    // The guide's "Typed messages are checked": send("x") → String,
    // send(&[1u8, 2][..]) → Vec<u8>.
    let (a, b) = pipe(true).unwrap();
    a.send("x").unwrap();
    a.send(&[1u8, 2][..]).unwrap();
    a.send(&&[3u8][..]).unwrap();
    a.send(&ByteBuf::from(vec![4u8, 5])).unwrap();
    a.send(&Vec::<u8>::new()).unwrap();
    assert_eq!(b.recv::<String>().unwrap(), "x");
    assert_eq!(b.recv::<Vec<u8>>().unwrap(), [1, 2]);
    assert_eq!(b.recv::<Vec<u8>>().unwrap(), [3]);
    assert_eq!(b.recv::<ByteBuf>().unwrap().into_vec(), [4, 5]);
    assert_eq!(b.recv::<Vec<u8>>().unwrap(), Vec::<u8>::new());
}

#[test]
fn big_values_round_trip_between_threads() {
    let big: Vec<u8> = (0..3 << 20).map(|i| (i % 251) as u8).collect();
    let text = "mproc ✓ ".repeat(200_000);
    let (a, b) = pipe(true).unwrap();
    thread::scope(|s| {
        s.spawn(|| {
            a.send(&big).unwrap();
            a.send(&ByteBuf::from(big.clone())).unwrap();
            a.send(text.as_str()).unwrap();
            a.send(&7u32).unwrap();
        });
        assert_eq!(b.recv::<Vec<u8>>().unwrap(), big);
        assert_eq!(b.recv::<ByteBuf>().unwrap().into_vec(), big);
        assert_eq!(b.recv::<String>().unwrap(), text);
        assert_eq!(b.recv::<u32>().unwrap(), 7);
    });
}

#[test]
fn a_wrong_type_is_a_mismatch_and_the_message_is_consumed() {
    let (a, b) = pipe(true).unwrap();
    a.send(&vec![1u8, 2, 3]).unwrap();
    a.send("text").unwrap();
    a.send(&ByteBuf::from(vec![1u8])).unwrap();
    a.send_bytes(b"raw").unwrap();
    a.send(&vec![1u16]).unwrap();
    a.send(&vec![9u8]).unwrap();
    let mismatch = |r: Result<_, Error>, found: &str| match r {
        Err(Error::TypeMismatch { found: f, .. }) => assert!(f.contains(found), "{f}"),
        other => panic!("expected a mismatch naming {found}, got {other:?}"),
    };
    mismatch(b.recv::<String>().map(drop), "Vec<u8>");
    mismatch(b.recv::<Vec<u8>>().map(drop), "str");
    mismatch(b.recv::<Vec<u8>>().map(drop), "ByteBuf");
    mismatch(b.recv::<Vec<u8>>().map(drop), "bytes (send_bytes)");
    mismatch(b.recv::<Vec<u8>>().map(drop), "Vec<u16>");
    assert_eq!(
        b.recv::<Vec<u8>>().unwrap(),
        [9],
        "the stream stayed in step"
    );
}

#[test]
fn invalid_utf8_behind_a_string_tag_is_a_decode_error() {
    let (ours, raw) = with_raw_peer();
    let mut payload = Vec::new();
    tag::encode_tag(&String::new(), &mut payload).unwrap();
    payload.extend_from_slice(&[2, 0xff, 0xfe]);
    raw.write_frame(&[], &framed(&payload)).unwrap();
    raw.write_frame(&[], &framed(&reference_payload("ok")))
        .unwrap();
    assert!(matches!(ours.recv::<String>(), Err(Error::Decode(_))));
    assert_eq!(ours.recv::<String>().unwrap(), "ok");
}

#[test]
fn a_lying_varint_allocates_by_what_arrived() {
    // The tag announces a 1 GiB Vec<u8> in a frame announcing as much, then
    // the peer closes after a few bytes: EOF, and no gigabyte buffer.
    let (ours, raw) = with_raw_peer();
    let body_len: usize = 1 << 30;
    let mut payload = Vec::new();
    tag::encode_tag(&vec![0u8], &mut payload).unwrap();
    payload.extend_from_slice(&postcard::to_stdvec(&body_len).unwrap());
    let len = payload.len() + body_len;
    let mut wire = (len as u32).to_be_bytes().to_vec();
    wire.extend_from_slice(&payload);
    wire.extend_from_slice(&[0u8; 100]);
    raw.write_frame(&[], &wire).unwrap();
    drop(raw);
    let (result, largest) = largest_allocation(|| ours.recv::<Vec<u8>>());
    assert!(matches!(result, Err(Error::EofDuringMessage)), "{result:?}");
    assert!(expected_recv_error(&result.unwrap_err()));
    assert!(largest <= 2 << 20, "allocated {largest}");
}

/// The general decoder's verdict on `payload`, as text.
fn general<T: serde::de::DeserializeOwned + std::fmt::Debug>(payload: &[u8]) -> String {
    let Some(body) = tag::is_typed(payload).then(|| tag::body(payload)) else {
        return "untagged".into();
    };
    match postcard::from_bytes::<T>(body) {
        Ok(v) if postcard::take_from_bytes::<T>(body).unwrap().1.is_empty() => format!("{v:?}"),
        _ => "error".into(),
    }
}

fn verdict<T: std::fmt::Debug>(r: Result<T, Error>) -> String {
    match r {
        Ok(v) => format!("{v:?}"),
        // A body that does not decode is a decode error on the fast path
        // (invalid UTF-8) and a mismatch on the general one.
        Err(Error::Decode(_) | Error::TypeMismatch { .. }) => "error".into(),
        Err(e) => format!("unexpected {e:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any body behind a `Vec<u8>` or `String` tag — short, long, with an
    /// overlong or overflowing varint, with trailing bytes — is received
    /// exactly as postcard decodes it, and the next message is intact.
    #[test]
    fn hostile_bodies_get_the_general_decoders_verdict(
        varint in prop_oneof![
            (0usize..400).prop_map(|n| postcard::to_stdvec(&n).unwrap()),
            proptest::collection::vec(any::<u8>(), 0..12),
        ],
        rest in proptest::collection::vec(any::<u8>(), 0..300),
        as_string in any::<bool>(),
    ) {
        let (ours, raw) = with_raw_peer();
        let mut payload = Vec::new();
        if as_string {
            tag::encode_tag(&String::new(), &mut payload).unwrap();
        } else {
            // The tag of a Vec<u8> as long as the varint says (the shape
            // fingerprint tells an empty sequence from a non-empty one).
            let empty = postcard::take_from_bytes::<usize>(&varint).is_ok_and(|(n, _)| n == 0);
            tag::encode_tag(&vec![0u8; usize::from(!empty)], &mut payload).unwrap();
        }
        payload.extend_from_slice(&varint);
        payload.extend_from_slice(&rest);
        raw.write_frame(&[], &framed(&payload)).unwrap();
        raw.write_frame(&[], &framed(&reference_payload(&vec![42u8]))).unwrap();
        if as_string {
            prop_assert_eq!(verdict(ours.recv::<String>()), general::<String>(&payload));
            prop_assert_eq!(verdict(tag::decode::<String>(&payload)), general::<String>(&payload));
        } else {
            prop_assert_eq!(verdict(ours.recv::<Vec<u8>>()), general::<Vec<u8>>(&payload));
            prop_assert_eq!(verdict(tag::decode::<Vec<u8>>(&payload)), general::<Vec<u8>>(&payload));
        }
        prop_assert_eq!(ours.recv::<Vec<u8>>().unwrap(), vec![42u8]);
    }

    /// Every truncation of a byte-sequence message ends in an EOF error.
    #[test]
    fn truncated_byte_messages_are_eof_errors(
        bytes in proptest::collection::vec(any::<u8>(), 0..300),
        cut in any::<prop::sample::Index>(),
    ) {
        let wire = framed(&reference_payload(&bytes));
        let cut = cut.index(wire.len());
        let (ours, raw) = with_raw_peer();
        raw.write_frame(&[], &wire[..cut]).unwrap();
        drop(raw);
        match ours.recv::<Vec<u8>>() {
            Err(Error::Eof) => prop_assert_eq!(cut, 0),
            Err(Error::EofDuringMessage) => prop_assert!(cut > 0),
            other => prop_assert!(false, "cut {} of {}: {:?}", cut, wire.len(), other),
        }
    }
}
