//! Large items out of band: a put of [`THRESHOLD`] bytes or more crosses
//! the broker as a descriptor, not as bytes.
//!
//! The producer's `put` writes the encoded item into a memory object
//! whose size can no longer change: one of its reusable objects
//! ([`Pool`]) that the broker reported free, else a fresh object sealed
//! for good ([`sys::seal_bytes`](crate::sys::seal_bytes): a memfd nobody
//! can write, grow or shrink any more). The batch carries only its
//! length; the feeder thread sends the descriptor (SCM_RIGHTS) on the
//! session's *handles* connection just before the batch. The broker's
//! feeder thread, reading the batch, takes one descriptor per sealed entry
//! from that connection and checks it ([`sys::check_item`]: a memory
//! object sealed for good of exactly the announced length, or one whose
//! size is sealed, at least that long) before storing the item; a
//! descriptor that is not, or one that is missing, is a broken batch
//! (nothing of it is stored, the stream is closed). A consumer whose ops
//! connection said it takes sealed items gets a run of them in a
//! `SEALED_ITEMS` answer ([`run_len`]), opens each object from the
//! broker's process while the item is in flight there (when a `get` takes
//! it), checks it again and copies the bytes out
//! with `pread` before it acknowledges the item (never a mapping: no
//! `SIGBUS` and no data race whatever the object is or whoever writes
//! it). When the broker drops an item held in a reusable object it tells
//! the producer, which may then write it again.
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
use std::sync::Arc;

use crate::queue::core::Item;
use crate::queue::wire;
use crate::sys::{self, OwnedHandle};
use crate::tag::bulk::Shape;
use crate::{tag, Address, Connection, Error};

/// Items of at least this many encoded bytes travel out of band.
pub(crate) const THRESHOLD: usize = 128 << 10;

/// At most this many sealed items hold a descriptor in the broker.
pub(crate) const BROKER_HELD: usize = 256;

/// A producer keeps at most this many reusable objects...
const POOL_SLOTS: usize = 16;
/// ... of at most this many bytes in all.
const POOL_BYTES: usize = 32 << 20;
/// Reusable objects are sized in steps of this (an item a little longer
/// than the last one still fits).
const POOL_STEP: usize = 64 << 10;

/// At most this many sealed items go in one answer to a `GET`...
pub(crate) const RUN_ITEMS: usize = 8;
/// ... and past the first, at most this many bytes of them in all: a
/// consumer holds a run until it takes each item (or gives the rest back),
/// and other consumers cannot have them meanwhile.
pub(crate) const RUN_BYTES: usize = 8 << 20;

/// Sealed items the broker holds now.
static HELD: AtomicUsize = AtomicUsize::new(0);

/// Whether holders of a queue served at `address` send and take sealed
/// items: on a system that makes them, through a local socket (a peer on
/// this host, which can open the broker's descriptors).
pub(crate) fn usable(address: &Address) -> bool {
    sys::SEALED_ITEMS && matches!(address, Address::Local(_))
}

/// A sealed object holding `bytes`.
#[cfg(test)]
pub(crate) fn seal(bytes: &[u8]) -> io::Result<OwnedHandle> {
    sys::seal_bytes(&[bytes])
}

/// One reusable object of a producer's [`Pool`].
struct Slot {
    /// The object, mapped here (read-write, shared) for good: writing an
    /// item is one copy into pages it already has.
    map: sys::Mapping,
    /// Its identity: what the broker's "free" notice names.
    id: u64,
    size: usize,
    /// Handed on, and not reported free yet.
    busy: bool,
}

/// A producer's reusable item objects (per feeder: one session, one
/// handles connection).
///
/// A fresh object per item costs the kernel a new page per 4 KiB, a copy,
/// and the freeing of every page once the item is consumed; the socket
/// floor reuses warm buffers. So a producer writes large items into
/// objects it keeps ([`sys::pooled_object`]: their size is sealed, not
/// their contents; mapped once, so an item is one copy) and sends a descriptor of one per item. The broker
/// tells it (on the handles connection, [`sys::send_freed`]) when it
/// dropped its descriptor of an item, which is after the consumer that
/// took it acknowledged it, having copied the bytes out first
/// ([`fetch`]); only then is the object written again. The consumer
/// never maps a reusable object: it `pread`s it into memory of its own
/// before it acknowledges, so even a producer that writes an object it
/// handed on can only make its own item garbage.
///
/// An object whose notice never comes (a consumer that never
/// acknowledges, a notice the socket had no room for) stays busy; when
/// no free object fits, the item goes into a fresh sealed object as
/// before. The objects go with the producer's descriptors and the
/// broker's, whoever dies first.
#[derive(Default)]
pub(crate) struct Pool {
    slots: Vec<Slot>,
    /// Bytes of a notice cut short (the rest comes later).
    carry: Vec<u8>,
}

impl Pool {
    /// A descriptor holding the item made of `parts` (one after the
    /// other) to send (then dropped): a free reusable object written with
    /// them, else a fresh sealed one.
    pub(crate) fn object_for(&mut self, parts: &[&[u8]]) -> io::Result<OwnedHandle> {
        match self.reuse(parts) {
            Some(fd) => Ok(fd),
            None => sys::seal_bytes(parts),
        }
    }

    /// The index of a free object of at least `len` bytes, making one if
    /// there is room.
    fn slot_for(&mut self, len: usize) -> Option<usize> {
        let fit = (0..self.slots.len())
            .filter(|&i| !self.slots[i].busy && self.slots[i].size >= len)
            .min_by_key(|&i| self.slots[i].size);
        if fit.is_some() {
            return fit;
        }
        let size = len.checked_next_multiple_of(POOL_STEP)?;
        // A free object too small for it makes room first.
        if let Some(i) = self.slots.iter().position(|s| !s.busy) {
            if self.slots.len() >= POOL_SLOTS || self.bytes() + size > POOL_BYTES {
                self.slots.swap_remove(i);
            }
        }
        if self.slots.len() >= POOL_SLOTS || self.bytes() + size > POOL_BYTES {
            return None;
        }
        match sys::pooled_object(size).and_then(|(fd, id)| Ok((sys::Mapping::from_handle(fd)?, id)))
        {
            Ok((map, id)) => {
                self.slots.push(Slot {
                    map,
                    id,
                    size,
                    busy: false,
                });
                Some(self.slots.len() - 1)
            }
            Err(e) => {
                tracing::debug!("no reusable object for a large item: {e}");
                None
            }
        }
    }

    fn bytes(&self) -> usize {
        self.slots.iter().map(|s| s.size).sum()
    }

    fn reuse(&mut self, parts: &[&[u8]]) -> Option<OwnedHandle> {
        let len = parts.iter().map(|p| p.len()).sum();
        let i = self.slot_for(len)?;
        let slot = &mut self.slots[i];
        if slot.map.len() < len {
            return None;
        }
        let mut at = 0;
        for part in parts {
            // SAFETY: `at + part.len() <= len <= map.len()`: in bounds of
            // the mapping, which stays whole while `slot` lives (the
            // object's size is sealed: nobody can shrink it under us).
            // Only this producer writes it, and only while it is free:
            // no reader reads it now (the broker said its last item was
            // consumed); whatever another process does to it can only
            // garble the item this producer is about to send, and this
            // process never reads these pages.
            unsafe {
                std::ptr::copy_nonoverlapping(part.as_ptr(), slot.map.ptr().add(at), part.len())
            };
            at += part.len();
        }
        match sys::duplicate(slot.map.handle()) {
            Ok(fd) => {
                slot.busy = true;
                Some(fd)
            }
            Err(e) => {
                tracing::debug!("a reusable object failed: {e}");
                self.slots.swap_remove(i);
                None
            }
        }
    }

    /// Takes the notices the broker sent on `handles` (a handles
    /// connection): the objects they name are free again.
    pub(crate) fn take_notices(&mut self, handles: &Connection) {
        if self.slots.iter().all(|s| !s.busy) {
            return;
        }
        if let Err(e) = sys::recv_freed(handles.stream().handle(), &mut self.carry) {
            tracing::debug!("cannot read freed objects: {e}");
        }
        let whole = self.carry.len() / 8 * 8;
        for notice in self.carry[..whole].chunks_exact(8) {
            let mut id = [0u8; 8];
            id.copy_from_slice(notice);
            let id = u64::from_le_bytes(id);
            if let Some(s) = self.slots.iter_mut().find(|s| s.id == id) {
                s.busy = false;
            }
        }
        self.carry.drain(..whole);
    }
}

/// A sealed item the broker holds: a checked descriptor and its length.
#[derive(Debug)]
pub(crate) struct Blob {
    fd: OwnedHandle,
    len: usize,
    /// For a reusable object: where to say it is free again once dropped
    /// (its producer's handles connection), and its identity.
    notify: Option<(Arc<Connection>, u64)>,
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
        sys::read_at(sys::borrow(&self.fd), 0, self.len)
    }
}

impl Drop for Blob {
    fn drop(&mut self) {
        HELD.fetch_sub(1, Ordering::Relaxed);
        if let Some((conn, id)) = &self.notify {
            freed(conn, *id);
        }
    }
}

/// Tells a producer its object `id` is free again (never waits: a
/// producer that does not read its notices loses them).
fn freed(handles: &Connection, id: u64) {
    if !sys::send_freed(handles.stream().handle(), id) {
        tracing::debug!("a freed-object notice could not be sent");
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
/// bytes on `handles` (its producer's handles connection). `Err`
/// (`InvalidData`) when it is not an item object of that length (sealed
/// for good, or reusable: [`sys::check_item`]): the batch is broken.
pub(crate) fn keep(
    fd: OwnedHandle,
    len: u64,
    handles: Option<&Arc<Connection>>,
) -> io::Result<Kept> {
    let len = usize::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "sealed item too long"))?;
    let object = sys::check_item(sys::borrow(&fd), len)?;
    let notify = match handles {
        Some(h) if object.reused => Some((h.clone(), object.id)),
        _ => None,
    };
    if HELD.fetch_add(1, Ordering::Relaxed) >= BROKER_HELD {
        HELD.fetch_sub(1, Ordering::Relaxed);
        let bytes = sys::read_at(sys::borrow(&fd), 0, len);
        if let Some((h, id)) = notify {
            drop(fd);
            freed(&h, id);
        }
        return bytes.map(Kept::Bytes);
    }
    Ok(Kept::Sealed(Blob { fd, len, notify }))
}

/// How many of `items` (taken to answer a `GET`, oldest first) go in one
/// `SEALED_ITEMS` answer: the sealed items they start with, at most
/// [`RUN_ITEMS`] and, past the first, [`RUN_BYTES`] in all. So a consumer
/// that fell behind asks once for several and reads them one after the
/// other (each when its `get` comes, before acknowledging it) while the
/// producer writes the next ones, instead of a round trip per item. 0
/// when the first item is not sealed.
pub(crate) fn run_len(items: &[Item]) -> usize {
    let mut bytes = 0usize;
    let mut n = 0;
    for item in items.iter().take(RUN_ITEMS) {
        let Some(blob) = item.blob() else { break };
        bytes = bytes.saturating_add(blob.len());
        if n > 0 && bytes > RUN_BYTES {
            break;
        }
        n += 1;
    }
    n
}

/// The `SEALED_ITEMS` answer naming the sealed `items` (where this
/// process holds their descriptors); an item that is not sealed is left
/// out (the caller sends only a [`run_len`]).
pub(crate) fn answer(items: &[Item]) -> Vec<u8> {
    let named: Vec<(u64, u64)> = items
        .iter()
        .filter_map(Item::blob)
        .map(|b| (b.len() as u64, b.value()))
        .collect();
    wire::sealed_items(std::process::id(), &named)
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

/// A large item's bytes, copied out of its object by the consumer.
#[derive(Debug)]
pub(crate) enum Fetched {
    /// The whole typed payload (tag and body).
    Payload(Vec<u8>),
    /// Only the body of a byte sequence of this shape, whose tag was
    /// checked ([`tag::bulk_body_offset_of`]): read straight into the
    /// value's buffer.
    Body(Shape, Vec<u8>),
}

/// Consumer side: opens the item object `value` of the broker's process
/// `pid`, checks it holds `len` bytes and can neither shrink nor grow,
/// and copies them out with `pread` (never a mapping: a reusable object
/// may be written again once this item is acknowledged, and a hostile
/// producer may write it at any time; a copy by the kernel is at worst
/// garbage, never a data race here). With `shape` (the caller's type is
/// a byte sequence) the body goes straight into the value's buffer.
pub(crate) fn fetch(
    pid: u32,
    value: u64,
    len: u64,
    shape: Option<Shape>,
) -> Result<Fetched, FetchError> {
    let len = usize::try_from(len)
        .map_err(|_| FetchError::Refused(Error::decode_msg("a sealed item longer than memory")))?;
    let fd = sys::open_item(pid, value).map_err(FetchError::Unreachable)?;
    checked_read(&fd, len, shape)
}

/// What could not be had of a sealed object: refused, or out of reach.
fn refused(e: io::Error) -> FetchError {
    if e.kind() == io::ErrorKind::InvalidData || e.kind() == io::ErrorKind::UnexpectedEof {
        FetchError::Refused(Error::decode(e))
    } else {
        FetchError::Unreachable(e)
    }
}

/// Checks an item object of `len` bytes and copies them out.
pub(crate) fn checked_read(
    fd: &OwnedHandle,
    len: usize,
    shape: Option<Shape>,
) -> Result<Fetched, FetchError> {
    let h = sys::borrow(fd);
    sys::check_item(h, len).map_err(refused)?;
    if let Some(shape) = shape {
        let head = sys::read_at(h, 0, len.min(tag::MAX_BULK_PREFIX)).map_err(refused)?;
        if let Some(at) = tag::bulk_body_offset_of(shape, &head, len) {
            let body = sys::read_at(h, at, len - at).map_err(refused)?;
            return Ok(Fetched::Body(shape, body));
        }
    }
    sys::read_at(h, 0, len)
        .map(Fetched::Payload)
        .map_err(refused)
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

    fn payload(f: Fetched) -> Vec<u8> {
        match f {
            Fetched::Payload(p) => p,
            Fetched::Body(..) => panic!("a body"),
        }
    }

    #[test]
    fn a_sealed_item_round_trips_and_refuses_what_is_not_one() {
        if !sys::SEALED_ITEMS {
            return;
        }
        let bytes: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let fd = seal(&bytes).unwrap();
        assert_eq!(
            payload(checked_read(&fd, bytes.len(), None).unwrap()),
            bytes
        );
        // A wrong length is refused, never read short or long.
        for len in [bytes.len() - 1, bytes.len() + 1] {
            assert!(matches!(
                checked_read(&fd, len, None),
                Err(FetchError::Refused(Error::Decode(_)))
            ));
        }
        assert!(matches!(keep(fd, 5, None), Err(e) if e.kind() == io::ErrorKind::InvalidData));
        // An unsealed memory object, a socket: refused.
        let plain = sys::Mapping::anonymous(4096).unwrap();
        let dup = sys::duplicate(plain.handle()).unwrap();
        assert!(matches!(
            checked_read(&dup, 4096, None),
            Err(FetchError::Refused(_))
        ));
        let (a, _b) = sys::stream_pair().unwrap();
        let sock = sys::duplicate(a.handle()).unwrap();
        assert!(matches!(keep(sock, 0, None), Err(e) if e.kind() == io::ErrorKind::InvalidData));
    }

    #[test]
    fn a_byte_sequence_is_read_straight_into_its_value() {
        if !sys::SEALED_ITEMS {
            return;
        }
        let value = serde_bytes::ByteBuf::from(vec![7u8; 300_000]);
        let mut bytes = Vec::new();
        tag::encode(&value, &mut bytes).unwrap();
        let fd = seal(&bytes).unwrap();
        let shape = tag::bulk::shape_of::<serde_bytes::ByteBuf>();
        match checked_read(&fd, bytes.len(), shape).unwrap() {
            Fetched::Body(s, body) => {
                assert_eq!(Some(s), shape);
                let got: serde_bytes::ByteBuf = tag::bulk_value(s, body).unwrap();
                assert_eq!(got, value);
                // Never as another type.
                assert!(tag::bulk_value::<String>(s, vec![1]).is_err());
            }
            Fetched::Payload(_) => panic!("read whole"),
        }
        // Another type's payload (a `Vec<u8>` asked as a `String`) is read
        // whole, for the general decoder to judge.
        let shape = tag::bulk::shape_of::<String>();
        assert_eq!(
            payload(checked_read(&fd, bytes.len(), shape).unwrap()),
            bytes
        );
    }

    #[test]
    fn reusable_objects_are_reused_only_once_freed() {
        if !sys::SEALED_ITEMS {
            return;
        }
        let (broker_end, producer_end) = crate::connection::pipe(true).unwrap();
        let broker_end = Arc::new(broker_end);
        let mut pool = Pool::default();
        let a = vec![1u8; 200_000];
        let fd = pool.object_for(&[&a[..1000], &a[1000..]]).unwrap();
        let first = sys::check_item(sys::borrow(&fd), a.len()).unwrap();
        assert!(first.reused);
        // Longer than the item, size sealed: the broker keeps it.
        let Kept::Sealed(blob) = keep(fd, a.len() as u64, Some(&broker_end)).unwrap() else {
            panic!("not kept")
        };
        assert_eq!(blob.read().unwrap(), a);
        // Busy: the next item gets another object.
        let b = vec![2u8; 200_000];
        let fd2 = pool.object_for(&[&b]).unwrap();
        let second = sys::check_item(sys::borrow(&fd2), b.len()).unwrap();
        assert_ne!(second.id, first.id);
        // Dropped by the broker: free again, written again.
        drop(blob);
        pool.take_notices(&producer_end);
        let c = vec![3u8; 150_000];
        let fd3 = pool.object_for(&[&c]).unwrap();
        assert_eq!(
            sys::check_item(sys::borrow(&fd3), c.len()).unwrap().id,
            first.id
        );
        assert_eq!(payload(checked_read(&fd3, c.len(), None).unwrap()), c);
        // An object shorter than the item is refused.
        assert!(matches!(
            checked_read(&fd3, 1 << 20, None),
            Err(FetchError::Refused(Error::Decode(_)))
        ));
        drop(fd2);
    }

    #[test]
    fn the_broker_holds_a_bounded_number_of_descriptors() {
        if !sys::SEALED_ITEMS {
            return;
        }
        let kept: Vec<Kept> = (0..BROKER_HELD + 3)
            .map(|_| keep(seal(b"abc").unwrap(), 3, None).unwrap())
            .collect();
        let sealed = kept.iter().filter(|k| matches!(k, Kept::Sealed(_))).count();
        assert!(sealed <= BROKER_HELD);
        assert!(kept
            .iter()
            .any(|k| matches!(k, Kept::Bytes(b) if b == b"abc")));
        drop(kept);
    }
}
