//! CPython's frame: the byte format of every message on a `Connection`.
//!
//! A frame is a 4-byte big-endian length, then the payload
//! (`send_bytes(b"hello")` writes `00 00 00 05 68 65 6c 6c 6f`). A payload
//! longer than `0x7fffffff` bytes is announced by `FF FF FF FF` and an 8-byte
//! big-endian unsigned length; receivers accept that long form for any size,
//! as CPython does. This is exactly what `Connection._send_bytes` and
//! `Connection._recv_bytes` in CPython's `Lib/multiprocessing/connection.py`
//! write and read, so frames interoperate with a Python process.
//!
//! Receiving never trusts the announced length with memory: a length above
//! the caller's maximum is [`Error::MessageTooLarge`] before any payload byte
//! is read, and the payload buffer grows only as bytes arrive (see
//! [`read_payload`]).

use std::io::{ErrorKind, Read, Write};

use crate::{Error, Result};

/// The default maximum message size a receiver accepts: 4 GiB.
///
/// Callers may pass any other maximum to [`read_payload`] / [`read_frame`];
/// a header announcing more is [`Error::MessageTooLarge`].
pub const DEFAULT_MAX_MESSAGE: u64 = 1 << 32;

/// Payloads up to this size are written with their header in one
/// `write_all` of one buffer (CPython's threshold); bigger ones as two writes
/// so a big payload is never copied.
const SMALL_PAYLOAD: usize = 16 * 1024;

/// The largest payload announced by the short (4-byte) header.
const SHORT_HEADER_MAX: usize = 0x7fff_ffff;

/// The receive buffer grows by at most this much beyond what has arrived
/// (or by what has arrived, whichever is larger: see [`read_payload`]).
const READ_CHUNK: usize = 1 << 20;

/// Appends the header for a payload of `len` bytes to `out`.
///
/// Four big-endian bytes up to `0x7fffffff`; beyond that `FF FF FF FF` and
/// the length as an 8-byte big-endian unsigned integer.
///
/// ```
/// let mut out = Vec::new();
/// mproc_ipc::__private::frame::encode_header(5, &mut out);
/// assert_eq!(out, [0, 0, 0, 5]);
/// ```
pub fn encode_header(len: usize, out: &mut Vec<u8>) {
    if len > SHORT_HEADER_MAX {
        out.extend_from_slice(&[0xff; 4]);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    } else {
        out.extend_from_slice(&(len as u32).to_be_bytes());
    }
}

/// Writes one frame: header then `payload`.
///
/// Payloads of at most 16 KiB go out with their header in a single
/// `write_all` of one buffer (as CPython does); bigger ones as a header write
/// then a payload write, without copying the payload.
///
/// ```
/// let mut wire = Vec::new();
/// mproc_ipc::__private::frame::write_frame(&mut wire, b"hello").unwrap();
/// assert_eq!(wire, b"\x00\x00\x00\x05hello");
/// ```
pub fn write_frame<W: Write + ?Sized>(w: &mut W, payload: &[u8]) -> std::io::Result<()> {
    write_frame_parts(w, &[payload])
}

/// Writes one frame whose payload is the concatenation of `parts`.
///
/// Used for typed messages (tag + body). A frame of at most 16 KiB goes out
/// in a single `write_all`; otherwise small parts are gathered with the
/// header and each big part is written from its own slice, never copied.
/// The caller serialises concurrent writers: this function issues several
/// writes for a big frame.
pub fn write_frame_parts<W: Write + ?Sized>(w: &mut W, parts: &[&[u8]]) -> std::io::Result<()> {
    let total = parts
        .iter()
        .try_fold(0usize, |acc, p| acc.checked_add(p.len()))
        .ok_or_else(|| {
            std::io::Error::new(ErrorKind::InvalidInput, "message length overflows usize")
        })?;
    let mut pending = Vec::with_capacity(12 + total.min(SMALL_PAYLOAD));
    encode_header(total, &mut pending);
    if total <= SMALL_PAYLOAD {
        for part in parts {
            pending.extend_from_slice(part);
        }
        return w.write_all(&pending);
    }
    for part in parts {
        if part.len() <= SMALL_PAYLOAD && pending.len() + part.len() <= 2 * SMALL_PAYLOAD {
            pending.extend_from_slice(part);
            continue;
        }
        if !pending.is_empty() {
            w.write_all(&pending)?;
            pending.clear();
        }
        if part.len() <= SMALL_PAYLOAD {
            pending.extend_from_slice(part);
        } else {
            w.write_all(part)?;
        }
    }
    if !pending.is_empty() {
        w.write_all(&pending)?;
    }
    Ok(())
}

/// Reads into `buf` until it is full. Returns how many bytes were read:
/// fewer than `buf.len()` only at end of file. Interrupted reads are retried.
fn read_full<R: Read + ?Sized>(r: &mut R, buf: &mut [u8]) -> Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::from(e)),
        }
    }
    Ok(filled)
}

/// Reads a frame header and returns the announced payload length.
///
/// `Ok(None)` on a clean end of file before any header byte (the peer closed
/// between messages); [`Error::EofDuringMessage`] on end of file inside the
/// header. A short header announcing `0x80000000..=0xfffffffe` (which CPython
/// never sends) is read as that unsigned length.
pub fn read_header<R: Read + ?Sized>(r: &mut R) -> Result<Option<u64>> {
    let mut short = [0u8; 4];
    match read_full(r, &mut short)? {
        0 => return Ok(None),
        4 => {}
        _ => return Err(Error::EofDuringMessage),
    }
    if short != [0xff; 4] {
        return Ok(Some(u64::from(u32::from_be_bytes(short))));
    }
    let mut long = [0u8; 8];
    if read_full(r, &mut long)? != 8 {
        return Err(Error::EofDuringMessage);
    }
    Ok(Some(u64::from_be_bytes(long)))
}

/// Reads exactly `len` payload bytes.
///
/// `len > max` is [`Error::MessageTooLarge`] before anything is read (the
/// payload stays unread). End of file before `len` bytes is
/// [`Error::EofDuringMessage`]. The buffer grows only as data arrives: it
/// never holds more than `max(2 × received, received + 1 MiB)` bytes, nor
/// more than `len`, so a header announcing gigabytes costs nothing until
/// the gigabytes come (doubling keeps the copying linear for big payloads).
pub fn read_payload<R: Read + ?Sized>(r: &mut R, len: u64, max: u64) -> Result<Vec<u8>> {
    if len > max {
        return Err(Error::MessageTooLarge { len, max });
    }
    let len = usize::try_from(len).map_err(|_| Error::MessageTooLarge {
        len,
        max: u64::try_from(usize::MAX).unwrap_or(u64::MAX),
    })?;
    let mut buf = Vec::new();
    read_payload_into(r, len, &mut buf)?;
    Ok(buf)
}

/// The body of [`read_payload`], with the buffer exposed to tests.
fn read_payload_into<R: Read + ?Sized>(r: &mut R, len: usize, buf: &mut Vec<u8>) -> Result<()> {
    buf.clear();
    // `buf.len()` is the initialised (zeroed) room; `filled` what arrived.
    let mut filled = 0;
    while filled < len {
        if filled == buf.len() {
            let grow = READ_CHUNK.max(filled).min(len - filled);
            buf.reserve_exact(grow);
            buf.resize(filled + grow, 0);
        }
        match r.read(&mut buf[filled..]) {
            Ok(0) => {
                buf.truncate(filled);
                return Err(Error::EofDuringMessage);
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                buf.truncate(filled);
                return Err(Error::from(e));
            }
        }
    }
    Ok(())
}

/// Reads one whole frame: [`read_header`] then [`read_payload`].
///
/// A clean end of file before the header is [`Error::Eof`] (CPython's
/// `EOFError`).
///
/// ```
/// use mproc_ipc::__private::frame::{read_frame, DEFAULT_MAX_MESSAGE};
/// let mut wire: &[u8] = b"\x00\x00\x00\x05hello";
/// assert_eq!(read_frame(&mut wire, DEFAULT_MAX_MESSAGE).unwrap(), b"hello");
/// assert!(matches!(read_frame(&mut wire, DEFAULT_MAX_MESSAGE), Err(mproc_ipc::Error::Eof)));
/// ```
pub fn read_frame<R: Read + ?Sized>(r: &mut R, max: u64) -> Result<Vec<u8>> {
    match read_header(r)? {
        None => Err(Error::Eof),
        Some(len) => read_payload(r, len, max),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Cursor;

    /// Records each `write` call separately.
    #[derive(Default)]
    struct Recorder {
        writes: Vec<Vec<u8>>,
    }

    impl Write for Recorder {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.writes.push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Yields `data`, then end of file; each read returns at most `step`
    /// bytes and every other call is `Interrupted`.
    struct Trickle {
        data: Vec<u8>,
        pos: usize,
        step: usize,
        interrupt: bool,
    }

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.interrupt = !self.interrupt;
            if self.interrupt {
                return Err(std::io::Error::new(ErrorKind::Interrupted, "signal"));
            }
            let n = buf.len().min(self.step).min(self.data.len() - self.pos);
            buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_frame(&mut out, payload).unwrap();
        out
    }

    #[test]
    fn hello_matches_cpython_bytes() {
        assert_eq!(
            frame(b"hello"),
            [0x00, 0x00, 0x00, 0x05, 0x68, 0x65, 0x6c, 0x6c, 0x6f]
        );
    }

    #[test]
    fn boundaries_round_trip_and_write_counts() {
        for len in [
            0usize,
            1,
            SMALL_PAYLOAD,
            SMALL_PAYLOAD + 1,
            3 * SMALL_PAYLOAD,
        ] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut rec = Recorder::default();
            write_frame(&mut rec, &payload).unwrap();
            let expected_writes = if len <= SMALL_PAYLOAD { 1 } else { 2 };
            assert_eq!(rec.writes.len(), expected_writes, "len {len}");
            assert_eq!(&rec.writes[0][..4], &(len as u32).to_be_bytes());
            let wire = rec.writes.concat();
            assert_eq!(wire.len(), 4 + len);
            let mut r = Cursor::new(wire);
            assert_eq!(read_frame(&mut r, DEFAULT_MAX_MESSAGE).unwrap(), payload);
            assert!(matches!(
                read_frame(&mut r, DEFAULT_MAX_MESSAGE),
                Err(Error::Eof)
            ));
        }
    }

    #[test]
    fn parts_make_one_frame() {
        let big = vec![7u8; 3 * SMALL_PAYLOAD];
        let cases: Vec<Vec<&[u8]>> = vec![
            vec![],
            vec![b"ab", b"", b"cd"],
            vec![b"tag", &big],
            vec![&big, b"x", &big, b"yz"],
        ];
        for parts in cases {
            let mut rec = Recorder::default();
            write_frame_parts(&mut rec, &parts).unwrap();
            let joined = parts.concat();
            if joined.len() <= SMALL_PAYLOAD {
                assert_eq!(rec.writes.len(), 1);
            }
            // Big parts are written from their own slice, never copied.
            assert!(rec
                .writes
                .iter()
                .all(|w| w.len() <= 2 * SMALL_PAYLOAD + 12 || w.len() == big.len()));
            let wire = rec.writes.concat();
            assert_eq!(wire, frame(&joined));
        }
    }

    #[test]
    fn long_header_form() {
        let mut out = Vec::new();
        encode_header(0x7fff_ffff, &mut out);
        assert_eq!(out, [0x7f, 0xff, 0xff, 0xff]);
        out.clear();
        encode_header(0x8000_0000, &mut out);
        assert_eq!(out, [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0x80, 0, 0, 0]);
        if let Ok(big) = usize::try_from(5u64 << 32) {
            out.clear();
            encode_header(big, &mut out);
            assert_eq!(out, [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 5, 0, 0, 0, 0]);
            let mut r: &[u8] = &out;
            assert_eq!(read_header(&mut r).unwrap(), Some(5u64 << 32));
        }
        // Receivers accept the long form for any size.
        let mut r: &[u8] = b"\xff\xff\xff\xff\x00\x00\x00\x00\x00\x00\x00\x02hi";
        assert_eq!(read_frame(&mut r, DEFAULT_MAX_MESSAGE).unwrap(), b"hi");
    }

    #[test]
    fn truncated_header_and_payload() {
        for wire in [&b"\x00"[..], b"\x00\x00\x00", b"\xff\xff\xff\xff\x00\x00"] {
            let mut r = wire;
            assert!(
                matches!(read_header(&mut r), Err(Error::EofDuringMessage)),
                "{wire:?}"
            );
        }
        let mut r: &[u8] = b"";
        assert!(matches!(read_header(&mut r), Ok(None)));
        let mut r: &[u8] = b"\x00\x00\x00\x05hel";
        assert!(matches!(
            read_frame(&mut r, DEFAULT_MAX_MESSAGE),
            Err(Error::EofDuringMessage)
        ));
    }

    #[test]
    fn interrupted_and_partial_reads_are_retried() {
        let mut r = Trickle {
            data: frame(b"hello world"),
            pos: 0,
            step: 3,
            interrupt: false,
        };
        assert_eq!(
            read_frame(&mut r, DEFAULT_MAX_MESSAGE).unwrap(),
            b"hello world"
        );
    }

    #[test]
    fn oversize_header_is_rejected_before_reading() {
        // The reader holds only the header: reading any payload would be
        // EofDuringMessage, so MessageTooLarge proves nothing was read.
        let mut r: &[u8] = b"\xff\xff\xff\xff\x00\x00\x00\x01\x00\x00\x00\x00";
        match read_frame(&mut r, 1024) {
            Err(Error::MessageTooLarge { len, max }) => {
                assert_eq!((len, max), (1 << 32, 1024));
            }
            other => panic!("{other:?}"),
        }
        let mut r: &[u8] = b"\x00\x00\x04\x01";
        assert!(matches!(
            read_frame(&mut r, 1024),
            Err(Error::MessageTooLarge {
                len: 1025,
                max: 1024
            })
        ));
    }

    #[test]
    fn lying_header_allocates_little() {
        let mut wire = b"\xff\xff\xff\xff\x00\x00\x00\x01\x00\x00\x00\x00".to_vec();
        wire.extend_from_slice(b"0123456789");
        let mut r: &[u8] = &wire;
        let len = read_header(&mut r).unwrap().unwrap();
        assert_eq!(len, 1 << 32);
        assert!(matches!(
            read_payload(&mut r, len, u64::MAX),
            Err(Error::EofDuringMessage)
        ));
        let mut r: &[u8] = b"0123456789";
        let mut buf = Vec::new();
        assert!(matches!(
            read_payload_into(&mut r, usize::MAX / 2, &mut buf),
            Err(Error::EofDuringMessage)
        ));
        assert_eq!(buf, b"0123456789");
        assert!(buf.capacity() <= READ_CHUNK, "{}", buf.capacity());
    }

    #[test]
    fn growth_stays_within_bound() {
        let data = vec![1u8; 3 * READ_CHUNK + 5];
        let mut r = Trickle {
            data: data.clone(),
            pos: 0,
            step: 64 * 1024,
            interrupt: false,
        };
        let mut buf = Vec::new();
        let announced = 100 * READ_CHUNK;
        assert!(matches!(
            read_payload_into(&mut r, announced, &mut buf),
            Err(Error::EofDuringMessage)
        ));
        assert_eq!(buf, data);
        assert!(buf.capacity() <= (2 * buf.len()).max(buf.len() + READ_CHUNK));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut r: &[u8] = &data;
            for _ in 0..4 {
                if read_frame(&mut r, 1 << 20).is_err() {
                    break;
                }
            }
        }

        #[test]
        fn round_trip(payload in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let mut r: &[u8] = &frame(&payload);
            prop_assert_eq!(read_frame(&mut r, DEFAULT_MAX_MESSAGE).unwrap(), payload);
        }
    }
}
