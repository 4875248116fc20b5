//! The authkey handshake: CPython 3.12's mutual HMAC challenge.
//!
//! This is `deliver_challenge` / `answer_challenge` from CPython 3.12's
//! `Lib/multiprocessing/connection.py`, message for message, over
//! [frames](crate::frame):
//!
//! 1. The challenger sends `#CHALLENGE#{sha256}` + 40 random bytes.
//! 2. The answerer replies `{sha256}` + HMAC-SHA256(authkey, message), where
//!    *message* is everything after `#CHALLENGE#`, the `{sha256}` prefix
//!    included (so a peer cannot downgrade the digest).
//! 3. The challenger answers `#WELCOME#`, or `#FAILURE#` and fails with
//!    "digest received was wrong"; an answerer that does not get
//!    `#WELCOME#` fails with "digest sent was rejected".
//!
//! Python ≤ 3.11 peers keep working, as with CPython 3.12:
//! a bare 16-byte reply is checked as HMAC-MD5 of the message (a 3.11
//! answerer MACs the whole message, prefix included), and a challenge with
//! no `{digest}` prefix (a 3.11 challenger's 20 random bytes) is answered
//! with a bare HMAC-MD5. Replies and challenges naming `{md5}`, `{sha256}`
//! or `{sha384}` are handled; `{sha3_256}` and `{sha3_384}` (which CPython
//! also allows but never sends by default) are refused as unsupported.
//!
//! MACs are compared in constant time. Every handshake read is capped at
//! 256 bytes: a longer frame is an authentication error and is never
//! allocated.
//!
//! A [`Listener`](https://docs.python.org/3/library/multiprocessing.html#multiprocessing.connection.Listener)
//! runs [`server_handshake`] (challenge first) and a `Client`
//! [`client_handshake`] (answer first), so each side proves the key.

use std::io::{Read, Write};

use hmac::{Hmac, Mac};

use crate::frame;
use crate::{Error, Result};

const CHALLENGE: &[u8] = b"#CHALLENGE#";
const WELCOME: &[u8] = b"#WELCOME#";
const FAILURE: &[u8] = b"#FAILURE#";

/// Random bytes in a challenge (CPython 3.12's `MESSAGE_LENGTH`).
const MESSAGE_LENGTH: usize = 40;
/// A Python ≤ 3.11 challenge carries this many random bytes, unprefixed.
const MD5ONLY_MESSAGE_LENGTH: usize = 20;
/// A Python ≤ 3.11 reply is a bare HMAC-MD5 of this length.
const MD5_DIGEST_LEN: usize = 16;
/// The longest digest name CPython allows (`sha3_256`, `sha3_384`).
const MAX_DIGEST_NAME_LEN: usize = 8;
/// Handshake reads are capped (CPython's `recv_bytes(256)`).
const MAX_AUTH_MESSAGE: u64 = 256;

/// The digest the challenger asks for.
const DIGEST_PREFIX: &[u8] = b"{sha256}";

/// A MAC algorithm a handshake message can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Digest {
    Md5,
    Sha256,
    Sha384,
}

impl Digest {
    fn name(self) -> &'static [u8] {
        match self {
            Digest::Md5 => b"md5",
            Digest::Sha256 => b"sha256",
            Digest::Sha384 => b"sha384",
        }
    }

    fn mac_len(self) -> usize {
        match self {
            Digest::Md5 => 16,
            Digest::Sha256 => 32,
            Digest::Sha384 => 48,
        }
    }

    fn mac(self, key: &[u8], message: &[u8]) -> Result<Vec<u8>> {
        fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], message: &[u8]) -> Result<Vec<u8>> {
            let mut mac = <M as Mac>::new_from_slice(key)
                .map_err(|_| Error::Authentication("invalid authkey"))?;
            mac.update(message);
            Ok(mac.finalize().into_bytes().to_vec())
        }
        match self {
            Digest::Md5 => run::<Hmac<md5::Md5>>(key, message),
            Digest::Sha256 => run::<Hmac<sha2::Sha256>>(key, message),
            Digest::Sha384 => run::<Hmac<sha2::Sha384>>(key, message),
        }
    }

    /// Constant-time check of `mac` against HMAC(key, message).
    fn verify(self, key: &[u8], message: &[u8], mac: &[u8]) -> Result<()> {
        fn run<M: Mac + hmac::digest::KeyInit>(
            key: &[u8],
            message: &[u8],
            tag: &[u8],
        ) -> Result<()> {
            let mut mac = <M as Mac>::new_from_slice(key)
                .map_err(|_| Error::Authentication("invalid authkey"))?;
            mac.update(message);
            mac.verify_slice(tag)
                .map_err(|_| Error::Authentication("digest received was wrong"))
        }
        match self {
            Digest::Md5 => run::<Hmac<md5::Md5>>(key, message, mac),
            Digest::Sha256 => run::<Hmac<sha2::Sha256>>(key, message, mac),
            Digest::Sha384 => run::<Hmac<sha2::Sha384>>(key, message, mac),
        }
    }
}

/// CPython's `_get_digest_name_and_payload`: `None` means the legacy
/// protocol (bare HMAC-MD5, no prefix).
fn digest_and_payload(message: &[u8]) -> Result<(Option<Digest>, &[u8])> {
    if message.len() == MD5ONLY_MESSAGE_LENGTH || message.len() == MD5_DIGEST_LEN {
        return Ok((None, message));
    }
    if let Some(rest) = message.strip_prefix(b"{") {
        // CPython looks for `}` within the first MAX_DIGEST_NAME_LEN + 1
        // bytes after `{`.
        let window = &rest[..rest.len().min(MAX_DIGEST_NAME_LEN + 1)];
        if let Some(curly) = window.iter().position(|&b| b == b'}') {
            let payload = &rest[curly + 1..];
            return match &rest[..curly] {
                b"md5" => Ok((Some(Digest::Md5), payload)),
                b"sha256" => Ok((Some(Digest::Sha256), payload)),
                b"sha384" => Ok((Some(Digest::Sha384), payload)),
                b"sha3_256" | b"sha3_384" => Err(Error::Authentication(
                    "digest unsupported (sha3 is not built in)",
                )),
                _ => Err(unsupported()),
            };
        }
    }
    Err(unsupported())
}

fn unsupported() -> Error {
    Error::Authentication(
        "unsupported message length, missing digest prefix, or unsupported digest",
    )
}

/// CPython's `_create_response`.
fn create_response(authkey: &[u8], message: &[u8]) -> Result<Vec<u8>> {
    match digest_and_payload(message)?.0 {
        // A legacy challenger: bare HMAC-MD5 over the whole message.
        None => Digest::Md5.mac(authkey, message),
        Some(digest) => {
            let mac = digest.mac(authkey, message)?;
            let mut out = Vec::with_capacity(2 + MAX_DIGEST_NAME_LEN + mac.len());
            out.push(b'{');
            out.extend_from_slice(digest.name());
            out.push(b'}');
            out.extend_from_slice(&mac);
            Ok(out)
        }
    }
}

/// CPython's `_verify_challenge`.
fn verify_challenge(authkey: &[u8], message: &[u8], response: &[u8]) -> Result<()> {
    let (digest, mac) = digest_and_payload(response)?;
    let digest = digest.unwrap_or(Digest::Md5);
    if mac.len() != digest.mac_len() {
        return Err(Error::Authentication(
            "digest received has the wrong length",
        ));
    }
    digest.verify(authkey, message, mac)
}

/// Reads one handshake message, refusing (without reading it) one longer
/// than 256 bytes.
fn recv_auth<S: Read + ?Sized>(s: &mut S) -> Result<Vec<u8>> {
    let len = frame::read_header(s)?.ok_or(Error::Eof)?;
    match frame::read_payload(s, len, MAX_AUTH_MESSAGE) {
        Err(Error::MessageTooLarge { .. }) => Err(Error::Authentication(
            "handshake message longer than 256 bytes",
        )),
        other => other,
    }
}

fn send_auth<S: Write + ?Sized>(s: &mut S, message: &[u8]) -> Result<()> {
    frame::write_frame(s, message)?;
    s.flush()?;
    Ok(())
}

/// Challenges the peer to prove `authkey` (CPython's `deliver_challenge`).
///
/// Sends `#CHALLENGE#{sha256}` + 40 random bytes and checks the reply: a
/// `{sha256}` (or `{md5}`, `{sha384}`) MAC, or a bare 16-byte HMAC-MD5 from
/// a Python ≤ 3.11 peer. On success sends `#WELCOME#`; on a wrong MAC sends
/// `#FAILURE#` and returns
/// `Error::Authentication("digest received was wrong")`.
/// A reply longer than 256 bytes is an authentication error; a peer that
/// closes is [`Error::Eof`].
pub fn deliver_challenge<S: Read + Write + ?Sized>(s: &mut S, authkey: &[u8]) -> Result<()> {
    let mut challenge = Vec::with_capacity(CHALLENGE.len() + DIGEST_PREFIX.len() + MESSAGE_LENGTH);
    challenge.extend_from_slice(CHALLENGE);
    challenge.extend_from_slice(DIGEST_PREFIX);
    let random_start = challenge.len();
    challenge.resize(random_start + MESSAGE_LENGTH, 0);
    getrandom::getrandom(&mut challenge[random_start..])
        .map_err(|e| Error::Io(std::io::Error::other(e.to_string())))?;
    send_auth(s, &challenge)?;
    let message = &challenge[CHALLENGE.len()..];
    let response = recv_auth(s)?;
    match verify_challenge(authkey, message, &response) {
        Ok(()) => send_auth(s, WELCOME),
        Err(e) => {
            // The failure is the error to report, whether or not the peer
            // is still there to read `#FAILURE#`.
            if let Err(send_err) = send_auth(s, FAILURE) {
                tracing::debug!("could not send #FAILURE#: {send_err}");
            }
            Err(e)
        }
    }
}

/// Proves `authkey` to a peer that challenges us (CPython's
/// `answer_challenge`).
///
/// Reads `#CHALLENGE#` + message and replies with the MAC the message asks
/// for: `{sha256}` + HMAC-SHA256 for a 3.12+ challenger, a bare HMAC-MD5
/// for a Python ≤ 3.11 one (20 unprefixed random bytes). Anything but
/// `#WELCOME#` in return is
/// `Error::Authentication("digest sent was rejected")`; a message that is
/// not a challenge is `Error::Authentication("protocol error, expected
/// challenge")`.
pub fn answer_challenge<S: Read + Write + ?Sized>(s: &mut S, authkey: &[u8]) -> Result<()> {
    let challenge = recv_auth(s)?;
    let message = challenge
        .strip_prefix(CHALLENGE)
        .ok_or(Error::Authentication("protocol error, expected challenge"))?;
    if message.len() < MD5ONLY_MESSAGE_LENGTH {
        return Err(Error::Authentication("challenge too short"));
    }
    let digest = create_response(authkey, message)?;
    send_auth(s, &digest)?;
    let response = recv_auth(s)?;
    if response != WELCOME {
        return Err(Error::Authentication("digest sent was rejected"));
    }
    Ok(())
}

/// The server side of an authenticated `Listener::accept`: challenge the
/// client, then answer its challenge (CPython's order).
pub fn server_handshake<S: Read + Write + ?Sized>(s: &mut S, authkey: &[u8]) -> Result<()> {
    deliver_challenge(s, authkey)?;
    answer_challenge(s, authkey)
}

/// The client side of an authenticated `Client::connect`: answer the
/// server's challenge, then challenge it.
pub fn client_handshake<S: Read + Write + ?Sized>(s: &mut S, authkey: &[u8]) -> Result<()> {
    answer_challenge(s, authkey)?;
    deliver_challenge(s, authkey)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{TcpListener, TcpStream};
    use std::thread;

    /// A connected pair of sockets on loopback (platform neutral).
    fn duplex() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (server, client)
    }

    fn md5_mac(key: &[u8], msg: &[u8]) -> Vec<u8> {
        Digest::Md5.mac(key, msg).unwrap()
    }

    fn auth_message(e: Error) -> &'static str {
        match e {
            Error::Authentication(m) => m,
            other => panic!("expected an authentication error, got {other:?}"),
        }
    }

    #[test]
    fn same_key_both_ways_then_data_flows() {
        let (mut server, mut client) = duplex();
        let t = thread::spawn(move || {
            client_handshake(&mut client, b"secret").unwrap();
            frame::write_frame(&mut client, b"after").unwrap();
        });
        server_handshake(&mut server, b"secret").unwrap();
        assert_eq!(frame::read_frame(&mut server, 1024).unwrap(), b"after");
        t.join().unwrap();
    }

    #[test]
    fn wrong_key_fails_on_both_sides() {
        let (mut server, mut client) = duplex();
        let t = thread::spawn(move || client_handshake(&mut client, b"wrong"));
        let server_err = server_handshake(&mut server, b"secret").unwrap_err();
        assert_eq!(auth_message(server_err), "digest received was wrong");
        let client_err = t.join().unwrap().unwrap_err();
        assert_eq!(auth_message(client_err), "digest sent was rejected");
        assert_eq!(
            Error::Authentication("digest received was wrong").to_string(),
            "AuthenticationError: digest received was wrong"
        );
    }

    #[test]
    fn modern_wire_bytes() {
        let (mut server, mut peer) = duplex();
        let t = thread::spawn(move || deliver_challenge(&mut server, b"key"));
        let challenge = frame::read_frame(&mut peer, 256).unwrap();
        assert_eq!(challenge.len(), 11 + 8 + 40);
        assert!(challenge.starts_with(b"#CHALLENGE#{sha256}"));
        let message = &challenge[11..];
        let mut reply = b"{sha256}".to_vec();
        reply.extend(Digest::Sha256.mac(b"key", message).unwrap());
        assert_eq!(reply.len(), 8 + 32);
        frame::write_frame(&mut peer, &reply).unwrap();
        assert_eq!(frame::read_frame(&mut peer, 256).unwrap(), b"#WELCOME#");
        t.join().unwrap().unwrap();
    }

    #[test]
    fn legacy_md5_reply_is_accepted() {
        // A Python 3.11 answerer MACs the whole message with MD5.
        let (mut server, mut peer) = duplex();
        let t = thread::spawn(move || deliver_challenge(&mut server, b"key"));
        let challenge = frame::read_frame(&mut peer, 256).unwrap();
        frame::write_frame(&mut peer, &md5_mac(b"key", &challenge[11..])).unwrap();
        assert_eq!(frame::read_frame(&mut peer, 256).unwrap(), b"#WELCOME#");
        t.join().unwrap().unwrap();
    }

    #[test]
    fn legacy_md5_reply_with_wrong_key_is_refused() {
        let (mut server, mut peer) = duplex();
        let t = thread::spawn(move || deliver_challenge(&mut server, b"key"));
        let challenge = frame::read_frame(&mut peer, 256).unwrap();
        frame::write_frame(&mut peer, &md5_mac(b"other", &challenge[11..])).unwrap();
        assert_eq!(frame::read_frame(&mut peer, 256).unwrap(), b"#FAILURE#");
        assert_eq!(
            auth_message(t.join().unwrap().unwrap_err()),
            "digest received was wrong"
        );
    }

    #[test]
    fn legacy_challenge_is_answered_with_bare_md5() {
        let (mut client, mut peer) = duplex();
        let t = thread::spawn(move || answer_challenge(&mut client, b"key"));
        let random = [0x5au8; 20];
        let mut challenge = b"#CHALLENGE#".to_vec();
        challenge.extend_from_slice(&random);
        frame::write_frame(&mut peer, &challenge).unwrap();
        let reply = frame::read_frame(&mut peer, 256).unwrap();
        assert_eq!(reply, md5_mac(b"key", &random));
        frame::write_frame(&mut peer, b"#WELCOME#").unwrap();
        t.join().unwrap().unwrap();
    }

    #[test]
    fn failure_reply_is_rejection() {
        let (mut client, mut peer) = duplex();
        let t = thread::spawn(move || answer_challenge(&mut client, b"key"));
        let mut challenge = b"#CHALLENGE#{sha256}".to_vec();
        challenge.extend_from_slice(&[1; 40]);
        frame::write_frame(&mut peer, &challenge).unwrap();
        let reply = frame::read_frame(&mut peer, 256).unwrap();
        assert!(reply.starts_with(b"{sha256}"));
        assert_eq!(
            &reply[8..],
            Digest::Sha256.mac(b"key", &challenge[11..]).unwrap()
        );
        frame::write_frame(&mut peer, b"#FAILURE#").unwrap();
        assert_eq!(
            auth_message(t.join().unwrap().unwrap_err()),
            "digest sent was rejected"
        );
    }

    /// A scripted peer: reads come from `input`, writes are kept.
    struct Scripted {
        input: std::io::Cursor<Vec<u8>>,
        output: Vec<u8>,
    }

    impl Scripted {
        fn new(frames: &[&[u8]]) -> Self {
            let mut input = Vec::new();
            for f in frames {
                frame::write_frame(&mut input, f).unwrap();
            }
            Self::raw(input)
        }
        fn raw(input: Vec<u8>) -> Self {
            Scripted {
                input: std::io::Cursor::new(input),
                output: Vec::new(),
            }
        }
    }

    impl Read for Scripted {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.input.read(buf)
        }
    }

    impl Write for Scripted {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.output.write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn malformed_challenges() {
        let mut s = Scripted::new(&[b"#HELLO#01234567890123456789"]);
        assert_eq!(
            auth_message(answer_challenge(&mut s, b"k").unwrap_err()),
            "protocol error, expected challenge"
        );
        let mut s = Scripted::new(&[b"#CHALLENGE#short"]);
        assert_eq!(
            auth_message(answer_challenge(&mut s, b"k").unwrap_err()),
            "challenge too short"
        );
        let mut s = Scripted::new(&[b"#CHALLENGE#{whirlpool}0123456789012345678901234"]);
        assert!(matches!(
            answer_challenge(&mut s, b"k"),
            Err(Error::Authentication(_))
        ));
        let mut s = Scripted::new(&[b"#CHALLENGE#{sha3_256}0123456789012345678901234"]);
        assert!(matches!(
            answer_challenge(&mut s, b"k"),
            Err(Error::Authentication(_))
        ));
        assert!(s.output.is_empty(), "nothing is sent for a bad challenge");
        let mut s = Scripted::new(&[]);
        assert!(matches!(answer_challenge(&mut s, b"k"), Err(Error::Eof)));
    }

    #[test]
    fn oversize_handshake_frame_is_refused_unread() {
        // Announces 4 GiB and delivers nothing more: refused, not awaited.
        let mut s = Scripted::raw(b"\xff\xff\xff\xff\x00\x00\x00\x01\x00\x00\x00\x00".to_vec());
        assert_eq!(
            auth_message(answer_challenge(&mut s, b"k").unwrap_err()),
            "handshake message longer than 256 bytes"
        );
        let mut s = Scripted::new(&[&[b'x'; 257]]);
        assert!(matches!(
            answer_challenge(&mut s, b"k"),
            Err(Error::Authentication(_))
        ));
    }

    #[test]
    fn replies_of_the_wrong_shape_are_refused() {
        for reply in [
            &b""[..],
            b"{sha256}short",
            b"{nope}0123456789012345678",
            &[0u8; 17],
        ] {
            let mut s = Scripted::new(&[reply]);
            assert!(
                matches!(
                    deliver_challenge(&mut s, b"k"),
                    Err(Error::Authentication(_))
                ),
                "{reply:?}"
            );
            // The challenge, then #FAILURE#.
            let mut out: &[u8] = &s.output;
            assert!(frame::read_frame(&mut out, 256)
                .unwrap()
                .starts_with(b"#CHALLENGE#{sha256}"));
            assert_eq!(frame::read_frame(&mut out, 256).unwrap(), b"#FAILURE#");
        }
    }

    #[test]
    fn md5_and_sha384_prefixed_replies_are_checked() {
        // A `{md5}` challenge gets a `{md5}` reply, as CPython 3.12 does.
        let mut msg = b"{md5}".to_vec();
        msg.extend_from_slice(&[9; 40]);
        let r = create_response(b"k", &msg).unwrap();
        assert!(r.starts_with(b"{md5}"));
        verify_challenge(b"k", &msg, &r).unwrap();
        let mut msg = b"{sha384}".to_vec();
        msg.extend_from_slice(&[9; 40]);
        let r = create_response(b"k", &msg).unwrap();
        assert_eq!(r.len(), 8 + 48);
        verify_challenge(b"k", &msg, &r).unwrap();
        assert!(verify_challenge(b"j", &msg, &r).is_err());
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = answer_challenge(&mut Scripted::raw(data.clone()), b"k");
            let _ = deliver_challenge(&mut Scripted::raw(data.clone()), b"k");
            let _ = server_handshake(&mut Scripted::raw(data.clone()), b"k");
            let _ = client_handshake(&mut Scripted::raw(data), b"k");
        }

        #[test]
        fn random_challenges_never_panic(
            body in proptest::collection::vec(any::<u8>(), 0..120),
            prefix in "\\{[a-z0-9_]{0,10}\\}?",
        ) {
            let mut challenge = b"#CHALLENGE#".to_vec();
            challenge.extend_from_slice(prefix.as_bytes());
            challenge.extend_from_slice(&body);
            let _ = answer_challenge(&mut Scripted::new(&[&challenge, b"#WELCOME#"]), b"k");
            let _ = deliver_challenge(&mut Scripted::new(&[&challenge[11..]]), b"k");
        }
    }
}
