//! What a test reads out of a queue handle's serialised form (its broker's
//! address, key and id) and a flood of silent connections to a broker
//! (`tests/queue_hardening.rs`, `tests/security.rs`, `tests/sys/unix.rs`).
//! A test binary includes it with
//! `#[path = "common/queue_handle.rs"] mod queue_handle;`. Each binary
//! uses only some of these helpers, hence the `dead_code` allowance.

#![allow(dead_code)]

use mproc::{Address, Client, Connection, Queue};

/// A queue handle's address, key and id, read from its serialised form.
pub fn address_and_key<T>(q: &Queue<T>) -> (Address, Vec<u8>, u64) {
    let bytes = postcard::to_stdvec(q).expect("a queue handle serialises");
    let (address, key, _maxsize, id): (Address, Vec<u8>, u64, u64) =
        postcard::from_bytes(&bytes).expect("a queue handle is address, key, maxsize, id");
    (address, key, id)
}

/// A queue handle's broker address, read from its serialised form.
pub fn broker_address<T>(q: &Queue<T>) -> Address {
    address_and_key(q).0
}

/// Connections that never say a word (no key, no answer to the
/// challenge), all held open.
pub fn flood(address: &Address, n: usize) -> mproc::Result<Vec<Connection>> {
    (0..n).map(|_| Client::connect(address, None)).collect()
}
