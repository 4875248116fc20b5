"""Python peer for crates/ipc/tests/wire_python.rs.

Usage: python3 wire_peer.py MODE KEY [PORT]

Modes
  client          multiprocessing.connection.Client to 127.0.0.1:PORT
                  (the interpreter's own handshake: legacy MD5 on <= 3.11)
  listener        multiprocessing.connection.Listener on 127.0.0.1:0; prints
                  "PORT <n>" then accepts one connection
  modern-client   CPython 3.12's handshake written out by hand (HMAC-SHA256
                  over the whole message, "{sha256}" prefix included), as a
                  client: answer the challenge, then deliver one
  modern-listener the same by hand, as a server: deliver, then answer

After the handshake every mode runs the same exchange (see exchange()).
Exit status: 0 and "OK" on success, 3 and "AUTH_ERROR: ..." on an
AuthenticationError, 1 otherwise.
"""

import hmac
import os
import socket
import sys
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client, Connection, Listener

CHALLENGE = b"#CHALLENGE#"
WELCOME = b"#WELCOME#"
FAILURE = b"#FAILURE#"

# What Python sends, in order; Rust echoes each one back, then sends RUST_HELLO.
PYTHON_MESSAGES = [b"hello from python", b"", bytes(range(256)) * 400]
RUST_HELLO = b"hello from rust"


def exchange(conn):
    for msg in PYTHON_MESSAGES:
        conn.send_bytes(msg)
    for msg in PYTHON_MESSAGES:
        got = conn.recv_bytes()
        if got != msg:
            raise SystemExit(f"echo mismatch: sent {len(msg)} bytes, got {len(got)}")
    got = conn.recv_bytes()
    if got != RUST_HELLO:
        raise SystemExit(f"unexpected message {got!r}")
    conn.close()


def modern_answer(conn, key):
    message = conn.recv_bytes(256)
    if not message.startswith(CHALLENGE):
        raise AuthenticationError(f"expected challenge, got {message!r}")
    message = message[len(CHALLENGE):]
    if not message.startswith(b"{sha256}") or len(message) != 8 + 40:
        raise AuthenticationError(f"not a 3.12 sha256 challenge: {message!r}")
    conn.send_bytes(b"{sha256}" + hmac.new(key, message, "sha256").digest())
    if conn.recv_bytes(256) != WELCOME:
        raise AuthenticationError("digest sent was rejected")


def modern_deliver(conn, key):
    message = b"{sha256}" + os.urandom(40)
    conn.send_bytes(CHALLENGE + message)
    response = conn.recv_bytes(256)
    expected = b"{sha256}" + hmac.new(key, message, "sha256").digest()
    if hmac.compare_digest(response, expected):
        conn.send_bytes(WELCOME)
    else:
        conn.send_bytes(FAILURE)
        raise AuthenticationError("digest received was wrong")


def main():
    mode, key = sys.argv[1], sys.argv[2].encode()
    try:
        if mode == "client":
            conn = Client(("127.0.0.1", int(sys.argv[3])), authkey=key)
        elif mode == "listener":
            with Listener(("127.0.0.1", 0), authkey=key) as listener:
                print("PORT", listener.address[1], flush=True)
                conn = listener.accept()
        elif mode == "modern-client":
            sock = socket.create_connection(("127.0.0.1", int(sys.argv[3])))
            conn = Connection(sock.detach())
            modern_answer(conn, key)
            modern_deliver(conn, key)
        elif mode == "modern-listener":
            with socket.create_server(("127.0.0.1", 0)) as server:
                print("PORT", server.getsockname()[1], flush=True)
                sock, _ = server.accept()
            conn = Connection(sock.detach())
            modern_deliver(conn, key)
            modern_answer(conn, key)
        else:
            raise SystemExit(f"unknown mode {mode}")
    except AuthenticationError as e:
        print("AUTH_ERROR:", e, flush=True)
        sys.exit(3)
    exchange(conn)
    print("OK", flush=True)


if __name__ == "__main__":
    main()
