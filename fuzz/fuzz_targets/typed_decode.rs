//! `tag::decode::<T>` of arbitrary payloads for a spread of types: an
//! untagged or wrongly tagged payload is a `TypeMismatch`, a bad body a
//! `Decode` error, never a panic; a body that decodes re-encodes to a
//! payload that decodes to the same value. The tag helpers (`body`,
//! `is_typed`, `sender_type_name`) take the same bytes. A recursive `Tree` type reaches the nesting limit: a body
//! nested deeper than 128 levels is a `Decode` error, never a stack
//! overflow, and any tree that decodes is within the limit.
//!
//! Input: `[type selector, mode, bytes...]`. Mode 0 puts the right tag for
//! the bytes before them (the shape fingerprint of the value plain postcard
//! reads from them, so a body that decodes is accepted; for the recursive
//! `Tree`, which plain postcard would read without a depth limit, a leaf's
//! tag), mode 1 the tag of another type, mode 2 decodes the bytes as they
//! are. Every mode runs the body decoder: the fingerprint is checked after.

#![no_main]

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use mproc_ipc::__private::tag;
use mproc_ipc::Error;
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

/// A second level, nesting boundedly.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Message2 {
    id: u64,
    kind: Kind,
}

/// A type that nests without bound, in every container shape: only
/// `tag::decode`'s nesting limit keeps hostile bytes off the stack's end.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
enum Tree {
    Leaf,
    Node(Box<Tree>),
    Pair(u8, Box<Tree>),
    Branch {
        kids: Vec<Tree>,
        label: Option<Box<Tree>>,
    },
    Map(BTreeMap<u8, Tree>),
}

/// `tag::decode`'s nesting limit.
const MAX_DEPTH: usize = 128;

impl Tree {
    /// Levels of nesting as the limit counts them: each enum, tuple or
    /// struct variant, option, sequence and map is one level.
    fn depth(&self) -> usize {
        1 + match self {
            Tree::Leaf => 0,
            Tree::Node(t) => t.depth(),
            Tree::Pair(_, t) => 1 + t.depth(),
            Tree::Branch { kids, label } => {
                let kids = 1 + kids.iter().map(Tree::depth).max().unwrap_or(0);
                let label = 1 + label.as_deref().map_or(0, Tree::depth);
                1 + kids.max(label)
            }
            Tree::Map(m) => 1 + m.values().map(Tree::depth).max().unwrap_or(0),
        }
    }
}

fn check_tree(mode: u8, bytes: &[u8]) {
    let mut payload = Vec::new();
    if mode.is_multiple_of(2) {
        tag::encode_tag(&Tree::Leaf, &mut payload).unwrap();
    }
    payload.extend_from_slice(bytes);
    match tag::decode::<Tree>(&payload) {
        Ok(value) => {
            assert!(value.depth() <= MAX_DEPTH, "{} levels", value.depth());
            let mut again = Vec::new();
            tag::encode(&value, &mut again).expect("a decoded value re-encodes");
            let back = tag::decode::<Tree>(&again).expect("a re-encoded value decodes");
            assert_eq!(back, value);
        }
        Err(Error::TypeMismatch { .. } | Error::Decode(_)) => {}
        Err(other) => panic!("unexpected decode error: {other:?}"),
    }
}

fn check<T>(mode: u8, bytes: &[u8])
where
    T: Serialize + DeserializeOwned + Debug + PartialEq,
{
    let mut payload = Vec::new();
    match mode % 3 {
        0 => right_tag::<T>(bytes, &mut payload),
        1 => tag::encode_tag(&Kind::Unit, &mut payload).unwrap(),
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

/// The tag of the value plain postcard reads from `bytes` (a unit's when
/// it reads none), so a body that decodes passes the fingerprint check.
fn right_tag<T: Serialize + DeserializeOwned>(bytes: &[u8], payload: &mut Vec<u8>) {
    match postcard::from_bytes::<T>(bytes) {
        Ok(value) => tag::encode_tag(&value, payload),
        Err(_) => tag::encode_tag(&(), payload),
    }
    .unwrap();
}

/// Floats: NaN != NaN, so no equality check after the round trip.
fn check_no_eq<T: Serialize + DeserializeOwned>(mode: u8, bytes: &[u8]) {
    let mut payload = Vec::new();
    if mode.is_multiple_of(2) {
        right_tag::<T>(bytes, &mut payload);
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
    match selector % 22 {
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
        19 => check_tree(mode, bytes),
        // The byte-sequence fast path (tag/bulk.rs), as `String` above.
        20 => check::<Vec<u8>>(mode, bytes),
        _ => check::<Option<(String, BTreeMap<u8, Kind>)>>(mode, bytes),
    }
});
