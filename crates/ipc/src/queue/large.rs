//! Large items out of band: a put of [`THRESHOLD`] bytes or more crosses
//! the broker as a descriptor, not as bytes.
//!
//! The producer's `put` writes the encoded item into a fresh sealed
//! memory object ([`sys::seal_bytes`](crate::sys::seal_bytes): a memfd
//! nobody can write, grow or shrink any more) and the batch carries only
//! its length; the feeder thread sends the descriptor (SCM_RIGHTS) on the
//! session's *handles* connection just before the batch. The broker's
//! feeder thread, reading the batch, takes one descriptor per sealed entry
//! from that connection and checks it ([`sys::check_sealed`]: a sealed
//! memory object of exactly the announced length) before storing the
//! item; a descriptor that is not, or one that is missing, is a broken
//! batch (nothing of it is stored, the stream is closed). A consumer
//! whose ops connection said it takes sealed items gets one such item in
//! a `SEALED_ITEM` answer, opens the object from the broker's process
//! while the item is in flight there, checks it again and reads it with
//! `pread` (never a mapping: no `SIGBUS` whatever the object is).
//!
//! So the bytes are copied into the object once and out of it once,
//! whatever their size, instead of through two sockets and the broker's
//! buffers. The guarantees of the inline path stay: the item exists only
//! once its batch reached the broker (a producer killed before leaves a
//! descriptor in flight on a connection the broker closes, which frees
//! it); the broker keeps the descriptor while the item is queued or in
//! flight, so a dead consumer's item goes back with it; the kernel frees
//! the object with its last descriptor, however the holders ended, and it
//! has no name to leave behind.
//!
//! The broker holds at most [`BROKER_HELD`] descriptors of sealed items:
//! past that it reads a new item's bytes and keeps them inline (a queue of
//! thousands of large items must not take all of the owner's descriptors).
//! Holders on other hosts (TCP) and the owner's own `get`s get the bytes.

use std::borrow::Cow;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::sys::{self, OwnedHandle, SealedView};
use crate::{Address, Error};

/// Items of at least this many encoded bytes travel out of band.
pub(crate) const THRESHOLD: usize = 128 << 10;

/// At most this many sealed items hold a descriptor in the broker.
pub(crate) const BROKER_HELD: usize = 256;

/// Sealed items the broker holds now.
static HELD: AtomicUsize = AtomicUsize::new(0);

/// Whether holders of a queue served at `address` send and take sealed
/// items: on a system that makes them, through a local socket (a peer on
/// this host, which can open the broker's descriptors).
pub(crate) fn usable(address: &Address) -> bool {
    sys::SEALED_ITEMS && matches!(address, Address::Local(_))
}

/// Producer side: a sealed object holding `bytes`.
pub(crate) fn seal(bytes: &[u8]) -> io::Result<OwnedHandle> {
    sys::seal_bytes(bytes)
}

/// A sealed item the broker holds: a checked descriptor and its length.
#[derive(Debug)]
pub(crate) struct Blob {
    fd: OwnedHandle,
    len: usize,
}

impl Blob {
    /// Its length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The descriptor's number in this process (what a consumer opens).
    pub(crate) fn value(&self) -> u64 {
        sys::handle_value(sys::borrow(&self.fd))
    }

    /// Its bytes, read.
    pub(crate) fn read(&self) -> io::Result<Vec<u8>> {
        sys::read_sealed(sys::borrow(&self.fd), self.len)
    }
}

impl Drop for Blob {
    fn drop(&mut self) {
        HELD.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the broker keeps of a sealed entry.
pub(crate) enum Kept {
    /// The descriptor, checked.
    Sealed(Blob),
    /// Its bytes: the broker already holds [`BROKER_HELD`] descriptors.
    Bytes(Vec<u8>),
}

/// Broker side: checks a descriptor received for a sealed entry of `len`
/// bytes. `Err` (`InvalidData`) when it is not a sealed object of exactly
/// that length: the batch is broken.
pub(crate) fn keep(fd: OwnedHandle, len: u64) -> io::Result<Kept> {
    let len = usize::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "sealed item too long"))?;
    sys::check_sealed(sys::borrow(&fd), len)?;
    if HELD.fetch_add(1, Ordering::Relaxed) >= BROKER_HELD {
        HELD.fetch_sub(1, Ordering::Relaxed);
        return sys::read_sealed(sys::borrow(&fd), len).map(Kept::Bytes);
    }
    Ok(Kept::Sealed(Blob { fd, len }))
}

/// Why a consumer could not have a sealed item.
#[derive(Debug)]
pub(crate) enum FetchError {
    /// What it opened is not a sealed object of the announced length:
    /// the item is garbage (taken, and `get` says [`Error::Decode`]).
    Refused(Error),
    /// It could not be opened or read (the broker's descriptors are out
    /// of reach): the item goes back, untaken.
    Unreachable(io::Error),
}

/// Consumer side: opens the sealed item `value` of the broker's process
/// `pid`, checks it is `len` bytes, sealed, and maps it read-only (the
/// decoder reads it there: no copy, no fault per page).
pub(crate) fn fetch(pid: u32, value: u64, len: u64) -> Result<SealedView, FetchError> {
    let len = usize::try_from(len)
        .map_err(|_| FetchError::Refused(Error::decode_msg("a sealed item longer than memory")))?;
    let fd = sys::import_handle(pid, value).map_err(FetchError::Unreachable)?;
    checked_map(&fd, len)
}

/// What could not be had of a sealed object: refused, or out of reach.
fn refused(e: io::Error) -> FetchError {
    if e.kind() == io::ErrorKind::InvalidData || e.kind() == io::ErrorKind::UnexpectedEof {
        FetchError::Refused(Error::decode(e))
    } else {
        FetchError::Unreachable(e)
    }
}

/// Checks and maps a sealed object of `len` bytes.
pub(crate) fn checked_map(fd: &OwnedHandle, len: usize) -> Result<SealedView, FetchError> {
    sys::map_sealed(sys::borrow(fd), len).map_err(refused)
}

/// Checks and reads a sealed object of `len` bytes.
#[cfg(test)]
fn checked_read(fd: &OwnedHandle, len: usize) -> Result<Vec<u8>, FetchError> {
    sys::check_sealed(sys::borrow(fd), len).map_err(refused)?;
    sys::read_sealed(sys::borrow(fd), len).map_err(refused)
}

/// The bytes of an item the broker keeps, sealed or not (`Cow` so that an
/// inline item is not copied). A sealed item that cannot be read gives no
/// bytes, which decode as an error.
pub(crate) fn bytes_of<'a>(inline: &'a [u8], blob: Option<&Blob>) -> Cow<'a, [u8]> {
    match blob {
        None => Cow::Borrowed(inline),
        Some(b) => match b.read() {
            Ok(v) => Cow::Owned(v),
            Err(e) => {
                tracing::warn!("cannot read a sealed queue item: {e}");
                Cow::Borrowed(&[])
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_item_round_trips_and_refuses_what_is_not_one() {
        if !sys::SEALED_ITEMS {
            return;
        }
        let bytes: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let fd = seal(&bytes).unwrap();
        assert_eq!(checked_read(&fd, bytes.len()).unwrap(), bytes);
        assert_eq!(checked_map(&fd, bytes.len()).unwrap().bytes(), &bytes[..]);
        assert!(matches!(
            checked_map(&fd, bytes.len() - 1),
            Err(FetchError::Refused(Error::Decode(_)))
        ));
        // A wrong length is refused, never read short or long.
        assert!(matches!(
            checked_read(&fd, bytes.len() + 1),
            Err(FetchError::Refused(Error::Decode(_)))
        ));
        assert!(matches!(keep(fd, 5), Err(e) if e.kind() == io::ErrorKind::InvalidData));
        // An unsealed memory object, a plain file, a socket: refused.
        let plain = sys::Mapping::anonymous(4096).unwrap();
        let dup = sys::duplicate(plain.handle()).unwrap();
        assert!(matches!(
            checked_read(&dup, 4096),
            Err(FetchError::Refused(_))
        ));
        assert!(matches!(
            checked_map(&dup, 4096),
            Err(FetchError::Refused(_))
        ));
        let (a, _b) = sys::stream_pair().unwrap();
        let sock = sys::duplicate(a.handle()).unwrap();
        assert!(matches!(keep(sock, 0), Err(e) if e.kind() == io::ErrorKind::InvalidData));
    }

    #[test]
    fn the_broker_holds_a_bounded_number_of_descriptors() {
        if !sys::SEALED_ITEMS {
            return;
        }
        let kept: Vec<Kept> = (0..BROKER_HELD + 3)
            .map(|_| keep(seal(b"abc").unwrap(), 3).unwrap())
            .collect();
        let sealed = kept.iter().filter(|k| matches!(k, Kept::Sealed(_))).count();
        assert!(sealed <= BROKER_HELD);
        assert!(kept
            .iter()
            .any(|k| matches!(k, Kept::Bytes(b) if b == b"abc")));
        drop(kept);
    }
}
