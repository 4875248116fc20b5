//! A `Connection` receiving what a hostile peer wrote on the other end of
//! a real socket, then closed: a `pipe()` end (a stream socket, read
//! with a read-ahead) or a `Listener` connection (a byte stream). The
//! fuzzer picks the peer's writes or bytes (raw, well-formed frames,
//! lying headers, typed messages with a body of its choice) and the
//! sequence of receives (`recv_bytes`, `recv_bytes_max`, `recv_bytes_into`,
//! typed `recv`, `poll`). Every receive returns a message or an error,
//! never a panic or a hang, and no allocation comes near an announced
//! length that never arrived.

#![no_main]

use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use mproc_fuzz::{expected_recv_error, largest_allocation};
use mproc_ipc::__private::{frame, tag};
use mproc_ipc::{pipe, Address, Connection, Error, Listener};

#[derive(Arbitrary, Debug)]
enum Item {
    /// Bytes as they are (one record on a record-keeping socket).
    Raw(Vec<u8>),
    /// A well-formed frame.
    Frame(Vec<u8>),
    /// A header announcing `announced` bytes (long form or short), then
    /// `body`, however long it really is.
    Lying {
        announced: u64,
        long: bool,
        body: Vec<u8>,
    },
    /// A frame holding a typed message's tag and the fuzzer's body.
    Typed { ty: u8, body: Vec<u8> },
}

#[derive(Arbitrary, Debug)]
enum Op {
    Bytes,
    BytesMax(u16),
    Into(u16),
    String,
    VecU32,
    Pair,
    Poll,
}

#[derive(Arbitrary, Debug)]
struct Input {
    byte_stream: bool,
    small_max: bool,
    items: Vec<Item>,
    ops: Vec<Op>,
}

/// The encoding of `item`, as whole frames where it is one.
fn encode(item: &Item) -> Vec<u8> {
    let mut out = Vec::new();
    match item {
        Item::Raw(b) => out.extend_from_slice(b),
        Item::Frame(b) => frame::write_frame(&mut out, b).unwrap(),
        Item::Lying {
            announced,
            long,
            body,
        } => {
            if *long {
                out.extend_from_slice(&[0xff; 4]);
                out.extend_from_slice(&announced.to_be_bytes());
            } else {
                out.extend_from_slice(&(*announced as u32).to_be_bytes());
            }
            out.extend_from_slice(body);
        }
        Item::Typed { ty, body } => {
            let mut payload = Vec::new();
            match ty % 3 {
                0 => tag::encode_tag(&String::new(), &mut payload),
                1 => tag::encode_tag(&vec![0u32], &mut payload),
                _ => tag::encode_tag(&(0u8, Some(String::new())), &mut payload),
            }
            .unwrap();
            payload.extend_from_slice(body);
            frame::write_frame(&mut out, &payload).unwrap();
        }
    }
    out
}

/// A listener for byte-stream connections, made once per fuzzing process;
/// its socket file is removed at exit.
fn listener() -> &'static Listener {
    static LISTENER: OnceLock<Listener> = OnceLock::new();
    static PATH: OnceLock<std::ffi::CString> = OnceLock::new();
    extern "C" fn remove_socket() {
        if let Some(p) = PATH.get() {
            // SAFETY: a valid NUL-terminated path.
            unsafe { libc::unlink(p.as_ptr()) };
        }
    }
    LISTENER.get_or_init(|| {
        let l = Listener::bind(Address::unique_local(), None).unwrap();
        if let Address::Local(path) = l.address() {
            use std::os::unix::ffi::OsStrExt;
            let _ = PATH.set(std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap());
            // SAFETY: registers a plain extern "C" fn.
            unsafe { libc::atexit(remove_socket) };
        }
        l
    })
}

/// Writes `items` from a raw peer and closes it; returns the receiving end
/// and how many bytes were written.
fn connect(input: &Input) -> (Connection, usize) {
    // A full socket buffer must not hang the fuzzer: writes time out and
    // whatever was written is what the receiver gets.
    let timeout = Some(Duration::from_millis(200));
    let mut written = 0;
    if input.byte_stream {
        let l = listener();
        let Address::Local(path) = l.address() else {
            unreachable!()
        };
        let mut raw = UnixStream::connect(path).unwrap();
        let conn = l.accept().unwrap();
        raw.set_write_timeout(timeout).unwrap();
        for item in &input.items {
            let bytes = encode(item);
            if raw.write_all(&bytes).is_err() {
                break;
            }
            written += bytes.len();
        }
        (conn, written)
    } else {
        let (ours, theirs) = pipe(true).unwrap();
        let raw = UnixDatagram::from(theirs.as_fd().try_clone_to_owned().unwrap());
        drop(theirs);
        raw.set_write_timeout(timeout).unwrap();
        for item in input.items.iter().take(256) {
            let bytes = encode(item);
            // A well-formed frame goes out as a sender writes it: the
            // header and up to 4096 bytes in all, then the rest.
            let records: Vec<&[u8]> = match item {
                Item::Frame(_) | Item::Typed { .. } if bytes.len() > 4096 => {
                    let (first, rest) = bytes.split_at(4096);
                    vec![first, rest]
                }
                _ => vec![&bytes],
            };
            for r in records {
                match raw.send(r) {
                    Ok(n) => written += n,
                    Err(_) => break,
                }
            }
        }
        (ours, written)
    }
}

fuzz_target!(|input: Input| {
    let (conn, written) = connect(&input);
    if input.small_max {
        conn.set_max_message(1024);
    }
    for op in input.ops.iter().take(64) {
        let (result, largest) = largest_allocation(|| match op {
            Op::Bytes => conn.recv_bytes().map(drop),
            Op::BytesMax(m) => conn.recv_bytes_max(usize::from(*m)).map(drop),
            Op::Into(n) => {
                let mut buf = vec![0u8; usize::from(*n)];
                conn.recv_bytes_into(&mut buf).map(drop)
            }
            Op::String => conn.recv::<String>().map(drop),
            Op::VecU32 => conn.recv::<Vec<u32>>().map(drop),
            Op::Pair => conn.recv::<(u8, Option<String>)>().map(drop),
            Op::Poll => conn.poll(Some(Duration::ZERO)).map(drop),
        });
        // Buffers grow with what arrives (plus one 1 MiB step, and a
        // 128 KiB record's room), never to an announced length.
        let bound = 2 * written + (2 << 20);
        assert!(
            largest <= bound,
            "allocated {largest} bytes after {written} written"
        );
        if let Err(e) = &result {
            assert!(
                expected_recv_error(e) || matches!(e, Error::HandleClosed),
                "unexpected receive error: {e:?}"
            );
        }
    }
});
