//! `tag::decode::<T>` of arbitrary payloads for a spread of types: an
//! untagged or wrongly tagged payload is a `TypeMismatch`, a bad body a
//! `Decode` error, never a panic; a body that decodes re-encodes to a
//! payload that decodes to the same value. The tag helpers (`body`,
//! `is_typed`, `sender_type_name`) and the type-name normaliser take the
//! same bytes.
//!
//! Input: `[type selector, mode, bytes...]`. Mode 0 puts the right tag for
//! the type before the bytes (so the body decoder is reached), mode 1 the
//! tag of another type, mode 2 decodes the bytes as they are.

#![no_main]

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use mproc_ipc::{tag, Error};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug, PartialEq)]
enum Kind {
    Unit,
    Newtype(u32),
    Tuple(i8, String),
    Struct { a: Vec<u16>, b: Option<bool> },
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Message {
    id: u64,
    name: String,
    tags: Vec<String>,
    kind: Kind,
    reply_to: Option<Box<Message2>>,
    scores: BTreeMap<u32, i64>,
}

/// A second level (bounded nesting: postcard itself has no depth limit,
/// so a user type that nests without bound is the user's to bound).
#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Message2 {
    id: u64,
    kind: Kind,
}

fn check<T>(mode: u8, bytes: &[u8])
where
    T: Serialize + DeserializeOwned + Debug + PartialEq,
{
    let mut payload = Vec::new();
    match mode % 3 {
        0 => tag::encode_tag::<T>(&mut payload),
        1 => tag::encode_tag::<Message>(&mut payload),
        _ => {}
    }
    payload.extend_from_slice(bytes);

    let _ = tag::body(&payload);
    let _ = tag::is_typed(&payload);
    let _ = tag::sender_type_name(&payload);

    match tag::decode::<T>(&payload) {
        Ok(value) => {
            let mut again = Vec::new();
            tag::encode(&value, &mut again).expect("a decoded value re-encodes");
            let back = tag::decode::<T>(&again).expect("a re-encoded value decodes");
            assert_eq!(back, value);
        }
        Err(Error::TypeMismatch { .. } | Error::Decode(_)) => {}
        Err(other) => panic!("unexpected decode error: {other:?}"),
    }
}

/// Floats: NaN != NaN, so no equality check after the round trip.
fn check_no_eq<T: Serialize + DeserializeOwned>(mode: u8, bytes: &[u8]) {
    let mut payload = Vec::new();
    if mode.is_multiple_of(2) {
        tag::encode_tag::<T>(&mut payload);
    }
    payload.extend_from_slice(bytes);
    match tag::decode::<T>(&payload) {
        Ok(value) => {
            let mut again = Vec::new();
            tag::encode(&value, &mut again).expect("a decoded value re-encodes");
            tag::decode::<T>(&again).expect("a re-encoded value decodes");
        }
        Err(Error::TypeMismatch { .. } | Error::Decode(_)) => {}
        Err(other) => panic!("unexpected decode error: {other:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let (config, bytes) = data.split_at(data.len().min(2));
    let selector = config.first().copied().unwrap_or(0);
    let mode = config.get(1).copied().unwrap_or(0);
    match selector % 20 {
        0 => check::<String>(mode, bytes),
        1 => check::<Vec<u64>>(mode, bytes),
        2 => check::<(u8, Option<String>)>(mode, bytes),
        3 => check::<HashMap<String, Vec<u8>>>(mode, bytes),
        4 => check::<Message>(mode, bytes),
        5 => check::<Kind>(mode, bytes),
        6 => check::<Vec<Vec<String>>>(mode, bytes),
        7 => check::<[u8; 4]>(mode, bytes),
        8 => check::<char>(mode, bytes),
        9 => check::<bool>(mode, bytes),
        10 => check::<u128>(mode, bytes),
        11 => check::<i64>(mode, bytes),
        12 => check::<()>(mode, bytes),
        13 => check::<Duration>(mode, bytes),
        14 => check::<Result<u16, String>>(mode, bytes),
        15 => check::<Option<Vec<char>>>(mode, bytes),
        16 => check::<std::net::SocketAddr>(mode, bytes),
        17 => check::<std::path::PathBuf>(mode, bytes),
        18 => check_no_eq::<(f32, Vec<f64>)>(mode, bytes),
        _ => {
            // The normaliser is total: any text comes back as some string.
            let name = String::from_utf8_lossy(bytes);
            let once = tag::normalise_type_name(&name);
            let _ = tag::normalise_type_name(&once);
        }
    }
});
