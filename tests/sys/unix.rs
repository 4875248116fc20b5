//! The integration tests that can only run on Unix: they send signals
//! (SIGSTOP/SIGCONT, an ignored SIGTERM), lower `RLIMIT_NOFILE`, read file
//! modes or a raw descriptor. Each says why in docs/platforms.md; the
//! cross-platform rest of each topic stays in its own test binary
//! (`tests/pipe.rs`, `tests/queue_hardening.rs`, `tests/reliability.rs`,
//! `tests/security.rs`). On Windows this binary is empty.

#![cfg(unix)]

use std::time::{Duration, Instant};

use mproc::{Address, Error, Pool, Process, Queue};
use serde_bytes::ByteBuf;

#[path = "../common/queue_handle.rs"]
mod queue_handle;

use queue_handle::{address_and_key, broker_address, flood};

#[mproc::target]
fn nothing() {}

// ---------------------------------------------------------------------
// From tests/pipe.rs (checklist items 27–36).

/// Item 35 through a pipe: the other end's raw descriptor, read with std.
#[mproc::test]
fn checklist_35_send_bytes_hello_wire_bytes_pipe() -> mproc::Result<()> {
    use std::io::Read;
    use std::os::fd::AsFd;
    let (reader, writer) = mproc::pipe(false)?;
    let mut raw = std::fs::File::from(reader.as_fd().try_clone_to_owned()?);
    drop(reader);
    writer.send_bytes(b"hello")?;
    drop(writer);
    let mut wire = Vec::new();
    raw.read_to_end(&mut wire)?;
    assert_eq!(wire, [0x00, 0x00, 0x00, 0x05, 0x68, 0x65, 0x6c, 0x6c, 0x6f]);
    Ok(())
}

// ---------------------------------------------------------------------
// From tests/queue_hardening.rs (issue 12, items 4–5).

/// Creates a queue, puts 7 in it, hands it out, then serves it until
/// killed.
#[mproc::target]
fn own_a_queue(back: Queue<Queue<u32>>, maxsize: usize) {
    let q = Queue::<u32>::new(maxsize).expect("queue");
    q.put(7).expect("put");
    back.put(q.clone()).expect("hand out");
    std::thread::sleep(Duration::from_secs(3600));
}

/// A timed get from a process that never talked to the owner before: its
/// connection and handshake meet the deadline too. Returns the error's
/// text and how long it took.
#[mproc::target]
fn timed_get(q: Queue<u32>) -> (String, u128) {
    let t = Instant::now();
    let r = q.get_timeout(Duration::from_millis(300));
    // The error's `Display` (its `Debug` is derived).
    let text = match r {
        Ok(v) => format!("Ok({v})"),
        Err(e) => format!("Err({e})"),
    };
    (text, t.elapsed().as_millis())
}

/// Far below the time the owner stays stopped (it stays stopped until
/// every check below is done), generous for a loaded 2-core machine.
const BOUND: Duration = Duration::from_secs(3);

/// Runs `f` on a thread and returns its result, or `None` if it has not
/// returned within twice [`BOUND`] (so that a regression fails the test
/// instead of hanging it while the owner is stopped).
fn within<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> Option<R> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(BOUND * 2).ok()
}

fn signal(p: &Process, sig: i32) {
    signal_pid(p.pid().expect("started"), sig);
}

/// Sends `sig` to `pid`, a child of this process that has not been reaped.
fn signal_pid(pid: u32, sig: i32) {
    let pid = pid as i32;
    // SAFETY: kill(2) with a pid this test started and has not reaped.
    let r = unsafe { libc::kill(pid, sig) };
    assert_eq!(r, 0, "kill({pid}, {sig})");
}

/// Waits until the child `p` is stopped (a SIGSTOP takes effect some time
/// after `kill` returns), leaving its state for mproc to collect later.
fn wait_stopped(p: &Process) {
    wait_stopped_pid(p.pid().expect("started"));
}

/// [`wait_stopped`] for a child known by its pid (a pool worker: a child
/// of this process with the default start method).
fn wait_stopped_pid(pid: u32) {
    let pid = pid as libc::id_t;
    // SAFETY: a zeroed siginfo_t is a valid out-parameter for waitid.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid on our own child; WNOWAIT leaves it waitable.
    let r = unsafe { libc::waitid(libc::P_PID, pid, &mut info, libc::WSTOPPED | libc::WNOWAIT) };
    assert_eq!(r, 0, "waitid: {}", std::io::Error::last_os_error());
}

/// The owner is SIGSTOPped: a `get_timeout(300 ms)` returns `Empty`, a
/// `put_timeout` on a full queue returns `Full`, and a new child's first
/// `get_timeout` (connect + handshake) returns `Empty` — each within
/// [`BOUND`], while the owner is still stopped. Once it continues, the
/// queue works and nothing was lost. A small bounded queue (`Queue(1)`)
/// whose shared-memory lane this process uses needs no owner for its
/// items: the get takes the item, a put fills the place it freed, and
/// only a put on the full queue times out (`Full`); a `Queue(129)` (too
/// large for a lane) goes through the stopped owner as an unbounded one
/// does. (Unix: Windows has no SIGSTOP; docs/platforms.md.)
#[mproc::test]
fn deadlines_hold_while_the_owner_is_stopped() -> mproc::Result<()> {
    use mproc::PutError;
    for maxsize in [0usize, 1, 129] {
        let lane = maxsize == 1;
        let back = Queue::<Queue<u32>>::new(0)?;
        // Daemonic: a failing check cannot leave it behind at exit.
        let mut owner = Process::new(own_a_queue, (back.clone(), maxsize)).with_daemon(true);
        owner.start()?;
        let q = back.get_timeout(Duration::from_secs(30))?;
        assert_eq!(q.get()?, 7);
        q.put(8).map_err(Error::from)?;
        // The put is stored (and a bounded queue is now full).
        assert_eq!(q.qsize(), 1);
        signal(&owner, libc::SIGSTOP);
        wait_stopped(&owner);

        let q2 = q.clone();
        let got = within(move || {
            let t = Instant::now();
            (q2.get_timeout(Duration::from_millis(300)), t.elapsed())
        });
        let put = lane.then(|| {
            let q2 = q.clone();
            within(move || {
                let t = Instant::now();
                (q2.put_timeout(9, Duration::from_millis(300)), t.elapsed())
            })
        });
        // The lane's one place is taken again: this put waits, and times
        // out, with the owner still stopped.
        let full = lane.then(|| {
            let q2 = q.clone();
            within(move || {
                let t = Instant::now();
                (q2.put_timeout(11, Duration::from_millis(300)), t.elapsed())
            })
        });
        let child = mproc::spawn(timed_get, (q.clone(),))?;
        child.join_timeout(BOUND * 2)?;
        let fresh = if child.is_alive()? {
            child.kill()?;
            None
        } else {
            Some(child.join()?)
        };
        // Every check ran while the owner was stopped; let it go on
        // before asserting, so that a failure does not leave it stopped.
        signal(&owner, libc::SIGCONT);

        let (r, took) = got.expect("get_timeout(300 ms) still blocked with the owner stopped");
        if lane {
            assert!(matches!(r, Ok(8)), "{r:?}");
        } else {
            assert!(matches!(r, Err(Error::Empty)), "{r:?}");
        }
        assert!(took < BOUND, "get_timeout(300 ms) took {took:?}");
        if let (Some(put), Some(full)) = (put, full) {
            let (r, took) = put.expect("put_timeout(300 ms) still blocked with the owner stopped");
            assert!(r.is_ok(), "{r:?}");
            assert!(took < BOUND, "put_timeout(300 ms) took {took:?}");
            let (r, took) = full.expect("put_timeout(300 ms) still blocked with the owner stopped");
            assert!(matches!(r, Err(PutError::Full(11))), "{r:?}");
            assert!(
                took >= Duration::from_millis(300) && took < BOUND,
                "put_timeout(300 ms) took {took:?}"
            );
        }
        let (r, ms) =
            fresh.expect("a new holder's get_timeout still blocked with the owner stopped");
        assert_eq!(r, "Err(queue.Empty: the queue is empty)");
        assert!(
            ms < BOUND.as_millis(),
            "a new holder's get_timeout took {ms} ms"
        );

        // The item 8 the timed-out get may have been sent is back (in the
        // lane, 8 was taken and 9 took its place).
        assert_eq!(
            q.get_timeout(Duration::from_secs(30))?,
            if lane { 9 } else { 8 }
        );
        q.put(10).map_err(Error::from)?;
        assert_eq!(q.get_timeout(Duration::from_secs(30))?, 10);
        assert_eq!(q.qsize(), 0);
        owner.kill()?;
        owner.join()?;
    }
    Ok(())
}

/// Owns a queue under a limit of 128 descriptors: hands it out, waits for
/// the flood, then starts a process and takes the item the parent put.
#[mproc::target]
fn limited_owner(back: Queue<Queue<u32>>, go: Queue<u32>) -> String {
    let limit = libc::rlimit {
        rlim_cur: 128,
        rlim_max: 128,
    };
    // SAFETY: setrlimit with a valid struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return format!("setrlimit: {}", std::io::Error::last_os_error());
    }
    let q = Queue::<u32>::new(0).expect("queue");
    back.put(q.clone()).expect("hand out");
    go.get().expect("go");
    let mut p = Process::new(nothing, ());
    let started = p.start().and_then(|()| p.join());
    let got = q.get_timeout(Duration::from_secs(30));
    format!("{started:?} {:?} {got:?}", p.exitcode())
}

/// Under `ulimit -n 128`, 300 silent connections to the owner's broker
/// leave the owner able to start a process and serve a holder.
#[mproc::test]
fn a_flood_under_a_low_descriptor_limit_leaves_the_owner_working() -> mproc::Result<()> {
    let back = Queue::<Queue<u32>>::new(0)?;
    let go = Queue::<u32>::new(0)?;
    let owner = mproc::spawn(limited_owner, (back.clone(), go.clone()))?;
    let q = back.get_timeout(Duration::from_secs(30))?;
    let silent = flood(&broker_address(&q), 300)?;
    q.put(42).map_err(Error::from)?;
    go.put(1).map_err(Error::from)?;
    assert_eq!(owner.join()?, "Ok(()) Some(0) Ok(42)");
    drop(silent);
    Ok(())
}

// ---------------------------------------------------------------------
// From tests/pool_dispatch.rs (issue 12, item 13).

#[mproc::target]
fn sqr(x: u64) -> u64 {
    x * x
}

#[mproc::target]
fn pid_of(_x: u32) -> u32 {
    std::process::id()
}

/// A task written to a worker that ends before reading it never started:
/// it runs on another worker and does not fail as `WorkerDied`. The
/// worker is SIGSTOPped, so the task `apply_async` writes to it (straight
/// to an idle, ready worker) stays unread, then SIGKILLed. This is the
/// state of a worker killed while idle whose descriptors the kernel has
/// not all released yet when a task is written to it (the flake of
/// `pool_dispatch_worker_killed_while_idle_fails_no_task`, about 1 run
/// in 40 of that binary). (Unix: Windows has no SIGSTOP, and a named pipe
/// does not tell an unread end from a read one: docs/platforms.md.)
#[mproc::test]
fn pool_worker_killed_before_reading_its_task_fails_no_task() -> mproc::Result<()> {
    let pool = Pool::new(1)?;
    // Two round trips: the worker is idle and ready, its slot parked.
    assert_eq!(pool.apply(sqr, (3,))?, 9);
    let pid = pool.apply(pid_of, (0,))?;
    signal_pid(pid, libc::SIGSTOP);
    wait_stopped_pid(pid);
    let task = pool.apply_async(sqr, (7,))?;
    signal_pid(pid, libc::SIGKILL);
    assert_eq!(task.get()?, 49);
    assert_ne!(pool.apply(pid_of, (0,))?, pid);
    Ok(())
}

// ---------------------------------------------------------------------
// From tests/reliability.rs (docs/reliability.md).

#[mproc::target]
fn ignore_sigterm_then_sleep() {
    // SAFETY: setting a disposition to SIG_IGN.
    unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
    std::thread::sleep(Duration::from_secs(30));
}

#[mproc::test]
fn kill_stops_a_child_that_ignores_sigterm() -> mproc::Result<()> {
    let mut p = Process::new(ignore_sigterm_then_sleep, ());
    p.start()?;
    // start() returns once the child runs its target; give it a moment to
    // install the disposition (its first statement), then terminate.
    std::thread::sleep(Duration::from_millis(200));
    p.terminate()?;
    p.join_timeout(Duration::from_millis(500))?;
    assert!(p.is_alive()?, "SIGTERM should have been ignored");
    p.kill()?;
    p.join()?;
    assert_eq!(p.exitcode(), Some(-9));
    Ok(())
}

#[mproc::test]
fn runtime_dir_is_private() -> mproc::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut p = Process::new(nothing, ());
    p.start()?;
    p.join()?;
    let prefix = format!("mproc-{}-", std::process::id());
    // The runtime directory is in $XDG_RUNTIME_DIR when that is usable
    // (issue 12 item 3), else in the temp directory.
    let mut bases = vec![std::env::temp_dir()];
    bases.extend(std::env::var_os("XDG_RUNTIME_DIR").map(std::path::PathBuf::from));
    let dirs: Vec<_> = bases
        .iter()
        .filter_map(|b| std::fs::read_dir(b).ok())
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .filter(|e| !e.path().join("queues.sock").exists())
        .collect();
    assert_eq!(dirs.len(), 1, "one runtime directory per process");
    let mode = dirs[0].metadata()?.permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    Ok(())
}

// ---------------------------------------------------------------------
// From tests/security.rs (authentication and privacy everywhere).

/// The broker's socket is private: a 0700 directory, a 0600 socket
/// (Windows pipes carry a current-user-only security descriptor instead,
/// which Wine does not enforce: docs/platforms.md).
#[mproc::test]
fn queue_broker_socket_is_private() -> mproc::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let q: Queue<u32> = Queue::new(0)?;
    let (address, _, _) = address_and_key(&q);
    let Address::Local(socket) = address else {
        panic!("a local broker address, not {address:?}");
    };
    let dir = socket.parent().expect("the socket's directory");
    let mode = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.permissions().mode() & 0o777);
    assert_eq!(mode(dir)?, 0o700, "{}", dir.display());
    assert_eq!(mode(&socket)?, 0o600, "{}", socket.display());
    Ok(())
}

// ---------------------------------------------------------------------
// From tests/queue_large.rs (issue 14, item 4): a hostile producer of
// sealed items. It speaks the queue protocol itself (docs/protocol.md,
// "Queue"), with the key from a handle, and sends descriptors with
// SCM_RIGHTS: Unix only.

/// The broker address, key and id of a queue, read from its handle.
fn queue_parts<T>(q: &Queue<T>) -> (Address, Vec<u8>, u64) {
    let bytes = postcard::to_stdvec(q).expect("a queue handle serialises");
    let (address, key, _maxsize, id): (Address, Vec<u8>, u64, u64) =
        postcard::from_bytes(&bytes).expect("a queue handle is address, key, maxsize, id");
    (address, key, id)
}

/// A holder's `HELLO` for `role` (1 feeder, 3 handles).
fn raw_hello(id: u64, session: u64, role: u8) -> Vec<u8> {
    let mut m = vec![1u8];
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&session.to_be_bytes());
    m.push(role);
    m
}

/// A `PUT_BATCH` (number 1) of one sealed item said to be `len` bytes.
fn raw_sealed_batch(len: u64) -> Vec<u8> {
    let mut m = vec![2u8];
    m.extend_from_slice(&1u64.to_be_bytes());
    m.extend_from_slice(&[0xff; 4]);
    m.extend_from_slice(&((1u64 << 63) | len).to_be_bytes());
    m
}

/// Sends `fd` on the socket `sock` with one marker byte (SCM_RIGHTS).
fn send_fd(sock: std::os::fd::BorrowedFd<'_>, fd: std::os::fd::BorrowedFd<'_>) {
    use std::os::fd::AsRawFd;
    let mut byte = [b'H'];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<libc::c_int>() as u32) } as usize;
    let mut control = vec![0u8; space];
    // SAFETY: a zeroed msghdr is valid; every pointer set below outlives
    // the sendmsg.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: the control buffer holds one header and one descriptor.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::c_int>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>(), fd.as_raw_fd());
    }
    // SAFETY: a valid message on an open socket.
    let sent = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    assert_eq!(sent, 1, "sendmsg: {}", std::io::Error::last_os_error());
}

/// A memfd holding `bytes`, sealed with `seals` (none: not sealed).
fn memfd(bytes: &[u8], seals: libc::c_int) -> std::os::fd::OwnedFd {
    use std::io::Write;
    use std::os::fd::{AsRawFd, FromRawFd};
    // SAFETY: a NUL-terminated name; the result is checked.
    let fd = unsafe { libc::memfd_create(c"hostile".as_ptr(), libc::MFD_ALLOW_SEALING) };
    assert!(fd >= 0);
    // SAFETY: a fresh descriptor we own.
    let mut f = std::fs::File::from(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) });
    f.write_all(bytes).unwrap();
    if seals != 0 {
        // SAFETY: an open memfd that allows sealing.
        let r = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_ADD_SEALS, seals) };
        assert_eq!(r, 0);
    }
    f.into()
}

/// A producer that is not mproc: sends `fd` (if any) for a sealed item of
/// `len` bytes, then the batch. Returns whether the broker closed its
/// feeder stream (it refused the batch).
fn hostile_sealed_put(q: &Queue<ByteBuf>, fd: Option<std::os::fd::OwnedFd>, len: u64) -> bool {
    use std::os::fd::AsFd;
    let (address, key, id) = queue_parts(q);
    let session = 0x5eed_0000 + len;
    let feeder = mproc::Client::connect(&address, Some(&key)).unwrap();
    feeder.send_bytes(&raw_hello(id, session, 1)).unwrap();
    assert_eq!(feeder.recv_bytes().unwrap()[0], 101, "HELLO_OK");
    let handles = mproc::Client::connect(&address, Some(&key)).unwrap();
    handles.send_bytes(&raw_hello(id, session, 3)).unwrap();
    assert_eq!(handles.recv_bytes().unwrap()[0], 101, "HELLO_OK");
    if let Some(fd) = fd {
        send_fd(handles.as_fd(), fd.as_fd());
    }
    feeder.send_bytes(&raw_sealed_batch(len)).unwrap();
    // The broker answers nothing on a feeder stream but `SYNC`: its end
    // is the only thing to read.
    let closed = feeder.recv_bytes().is_err();
    drop(handles);
    closed
}

#[mproc::test]
fn a_hostile_producer_of_sealed_items_is_refused_and_leaks_nothing() -> mproc::Result<()> {
    // In a process of its own: the descriptor count is the owner's alone,
    // not disturbed by the other tests of this binary.
    if let Err(e) = mproc::spawn(hostile_sealed_puts, ())?.join()? {
        panic!("in the owner's process: {e}");
    }
    Ok(())
}

/// The owner of a queue, attacked by a producer of bad sealed items.
#[mproc::target]
fn hostile_sealed_puts() -> Result<(), String> {
    hostile_sealed_puts_here().map_err(|e| e.to_string())
}

fn hostile_sealed_puts_here() -> mproc::Result<()> {
    let q = Queue::<ByteBuf>::new(0)?;
    // Warm up the broker before counting its descriptors.
    q.put(ByteBuf::from(vec![1u8; 10]))?;
    let fds = |p: &str| std::fs::read_dir(p).map(|d| d.count()).unwrap_or(0);
    let before = fds("/proc/self/fd");
    let all = libc::F_SEAL_WRITE | libc::F_SEAL_GROW | libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL;
    let (sock, peer) = std::os::unix::net::UnixStream::pair()?;
    let cases: Vec<(&str, Option<std::os::fd::OwnedFd>, u64)> = vec![
        ("an unsealed memfd", Some(memfd(&[0; 4096], 0)), 4096),
        (
            "a memfd that can still shrink",
            Some(memfd(&[0; 4096], libc::F_SEAL_WRITE | libc::F_SEAL_GROW)),
            4096,
        ),
        (
            "a sealed memfd, size too big",
            Some(memfd(&[0; 16], all)),
            1 << 20,
        ),
        (
            "a sealed memfd, size too small",
            Some(memfd(&[0; 4096], all)),
            16,
        ),
        (
            "a reusable memfd shorter than its item",
            Some(memfd(
                &[0; 4096],
                libc::F_SEAL_GROW | libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL,
            )),
            8192,
        ),
        (
            "a memfd sealed against writes that can still grow",
            Some(memfd(&[0; 4096], libc::F_SEAL_WRITE | libc::F_SEAL_SHRINK)),
            4096,
        ),
        ("a socket", Some(sock.into()), 0),
        ("no descriptor at all", None, 4096),
    ];
    for (what, fd, len) in cases {
        assert!(hostile_sealed_put(&q, fd, len), "{what}: batch not refused");
        // Nothing of the refused batch was stored; the queue works on.
        assert_eq!(q.qsize(), 1, "{what}");
    }
    assert_eq!(q.get()?.len(), 10);
    drop(peer);
    let after = fds("/proc/self/fd");
    assert!(
        after <= before,
        "descriptors before {before}, after {after}"
    );
    Ok(())
}

/// A `PUT_BATCH` (number 1) of `n` sealed items of `len` bytes each.
fn raw_sealed_batch_of(n: usize, len: u64) -> Vec<u8> {
    let mut m = vec![2u8];
    m.extend_from_slice(&1u64.to_be_bytes());
    for _ in 0..n {
        m.extend_from_slice(&[0xff; 4]);
        m.extend_from_slice(&((1u64 << 63) | len).to_be_bytes());
    }
    m
}

/// Takes `n` items, whatever they are: each is a value or a decode
/// error, never a crash. Returns how many were values.
#[mproc::target]
fn take_whatever(q: Queue<ByteBuf>, n: usize) -> Result<usize, String> {
    let mut values = 0;
    for i in 0..n {
        match q.get_timeout(Duration::from_secs(60)) {
            Ok(_) => values += 1,
            Err(Error::Decode(_) | Error::TypeMismatch { .. }) => {}
            Err(e) => return Err(format!("item {i}: {e}")),
        }
    }
    Ok(values)
}

#[mproc::test]
fn a_producer_rewriting_its_reusable_object_garbles_only_its_own_items() -> mproc::Result<()> {
    use std::io::Read;
    use std::os::fd::{AsFd, AsRawFd};
    use std::sync::atomic::{AtomicBool, Ordering};
    // A reusable object (size sealed, contents not) holding a valid item,
    // sent for 12 items, and rewritten all the while by its producer (a
    // thread of this test, not mproc): the consumer copies each item out
    // before decoding it, so it gets values or decode errors, never a
    // crash, SIGBUS, or a read past the object.
    let n = 12;
    let q = Queue::<ByteBuf>::new(0)?;
    // The item's typed payload, as a `send` writes it (a thread sends:
    // 1 MiB does not fit the socket's buffer).
    let (a, b) = mproc::pipe(true)?;
    let sender = std::thread::spawn(move || a.send(&ByteBuf::from(vec![7u8; 1 << 20])));
    let payload = b.recv_bytes()?;
    sender.join().expect("the sender thread")?;
    let mut object = payload.clone();
    object.resize(2 << 20, 0);
    let fd = memfd(
        &object,
        libc::F_SEAL_GROW | libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL,
    );
    let (address, key, id) = queue_parts(&q);
    let session = 0x5eed_7e57;
    let feeder = mproc::Client::connect(&address, Some(&key))?;
    feeder.send_bytes(&raw_hello(id, session, 1))?;
    assert_eq!(feeder.recv_bytes()?[0], 101, "HELLO_OK");
    let handles = mproc::Client::connect(&address, Some(&key))?;
    handles.send_bytes(&raw_hello(id, session, 3))?;
    assert_eq!(handles.recv_bytes()?[0], 101, "HELLO_OK");
    for _ in 0..n {
        send_fd(handles.as_fd(), fd.as_fd());
    }
    feeder.send_bytes(&raw_sealed_batch_of(n, payload.len() as u64))?;

    let stop = AtomicBool::new(false);
    let values = std::thread::scope(|s| {
        s.spawn(|| {
            // Garbage, the item again, a torn mixture: over and over.
            let garbage = vec![0xa5u8; payload.len()];
            let mut k = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let src = if k.is_multiple_of(2) {
                    &garbage
                } else {
                    &payload
                };
                let part = &src[..(k * 4099) % src.len()];
                // SAFETY: writes from a live buffer into our own memfd.
                unsafe { libc::pwrite(fd.as_raw_fd(), part.as_ptr().cast(), part.len(), 0) };
                k += 1;
            }
        });
        let taken = mproc::spawn(take_whatever, (q.clone(), n)).and_then(|h| h.join());
        stop.store(true, Ordering::Relaxed);
        taken
    })?
    .map_err(mproc::Error::decode_msg)?;
    assert!(values <= n);
    assert!(q.empty());

    // Each item the broker dropped (consumed) is reported to the producer
    // as free again: `n` notices naming the object (its inode).
    // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat of our own open memfd into a zeroed struct.
    assert_eq!(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) }, 0);
    let mut raw = std::os::unix::net::UnixStream::from(handles.as_fd().try_clone_to_owned()?);
    raw.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut notices = vec![0u8; 8 * n];
    raw.read_exact(&mut notices)?;
    for notice in notices.chunks_exact(8) {
        assert_eq!(
            u64::from_le_bytes(notice.try_into().unwrap()),
            st.st_ino as u64
        );
    }
    drop((feeder, handles));
    Ok(())
}

// ---------------------------------------------------------------------
// Runs of sealed items (several in one `GET` answer, `SEALED_ITEMS`): a
// consumer that is not mproc takes a run and dies (its connection ends)
// having acknowledged only part of it. The broker keeps every item's
// descriptor until it is acknowledged, so the rest goes back, whole and
// in order; none taken comes again; nothing leaks in the owner.

/// Puts `n` items of `size` bytes, item `i` all `i`; its exit waits
/// until the broker stored them all.
#[mproc::target]
fn put_numbered(q: Queue<ByteBuf>, n: usize, size: usize) {
    for i in 0..n {
        q.put(ByteBuf::from(vec![i as u8; size])).unwrap();
    }
}

/// A raw `GET` for up to `most` items, waiting forever, no acks.
fn raw_get(most: u32) -> Vec<u8> {
    let mut m = vec![4u8];
    m.extend_from_slice(&most.to_be_bytes());
    m.extend_from_slice(&u64::MAX.to_be_bytes());
    m.extend_from_slice(&0u64.to_be_bytes());
    m.extend_from_slice(&0u32.to_be_bytes());
    m
}

/// Reads the `SEALED_ITEMS` answer `a`: the broker's pid and each item's
/// (length, descriptor number).
fn sealed_run(a: &[u8]) -> (u32, Vec<(u64, u64)>) {
    assert_eq!(a[0], 114, "SEALED_ITEMS");
    let u32_at = |i: usize| u32::from_be_bytes(a[i..i + 4].try_into().unwrap());
    let u64_at = |i: usize| u64::from_be_bytes(a[i..i + 8].try_into().unwrap());
    let count = u32_at(5) as usize;
    assert_eq!(a.len(), 9 + 16 * count);
    let items = (0..count)
        .map(|k| (u64_at(9 + 16 * k), u64_at(17 + 16 * k)))
        .collect();
    (u32_at(1), items)
}

#[mproc::test]
fn a_consumer_dying_with_a_run_of_sealed_items_gives_back_the_rest() -> mproc::Result<()> {
    // In a process of its own: the descriptor count is the owner's alone.
    if let Err(e) = mproc::spawn(run_then_die, ())?.join()? {
        panic!("in the owner's process: {e}");
    }
    Ok(())
}

/// The owner of a queue whose raw consumers take runs and die.
#[mproc::target]
fn run_then_die() -> Result<(), String> {
    run_then_die_here().map_err(|e| e.to_string())
}

fn run_then_die_here() -> mproc::Result<()> {
    use std::os::unix::fs::FileExt;
    let size = 300 << 10;
    let q = Queue::<ByteBuf>::new(0)?;
    // Warm up the broker's threads and the producer's path before
    // counting descriptors.
    mproc::spawn(put_numbered, (q.clone(), 1usize, size))?.join()?;
    q.get()?;
    let fds = || {
        std::fs::read_dir("/proc/self/fd")
            .map(|d| d.count())
            .unwrap_or(0)
    };
    let before = fds();
    let (address, key, id) = queue_parts(&q);
    // Acknowledging none of the run, then the first two of it.
    for (round, acked) in [(0u64, 0usize), (1, 2)] {
        let n = 5;
        mproc::spawn(put_numbered, (q.clone(), n, size))?.join()?;
        let ops = mproc::Client::connect(&address, Some(&key))?;
        ops.send_bytes(&raw_hello(id, 0x0bad_c0de + round, 0x80))?;
        assert_eq!(ops.recv_bytes()?[0], 101, "HELLO_OK");
        ops.send_bytes(&raw_get(8))?;
        let (pid, run) = sealed_run(&ops.recv_bytes()?);
        assert_eq!(run.len(), n, "the whole run in one answer");
        for (k, &(len, value)) in run.iter().enumerate() {
            // The objects are there to read while the run is in flight.
            let f = std::fs::File::open(format!("/proc/{pid}/fd/{value}"))?;
            let mut got = vec![0u8; len as usize];
            f.read_exact_at(&mut got, 0)?;
            let want = ByteBuf::from(vec![k as u8; size]);
            assert_eq!(got, postcard_bytes(&want), "item {k} of round {round}");
        }
        if acked > 0 {
            let mut settle = vec![5u8];
            settle.extend_from_slice(&(acked as u32).to_be_bytes());
            settle.extend_from_slice(&0u32.to_be_bytes());
            ops.send_bytes(&settle)?;
        }
        // Dies: the rest goes back, in order, and only the rest.
        drop(ops);
        for k in acked..n {
            let it = q.get_timeout(Duration::from_secs(60))?;
            assert_eq!(it.len(), size);
            assert!(
                it.iter().all(|&b| b == k as u8),
                "round {round}: item {k} expected, got {}",
                it[0]
            );
        }
        assert!(q.empty(), "round {round}: an item taken came back");
    }
    let after = fds();
    assert!(
        after <= before,
        "descriptors before {before}, after {after}"
    );
    Ok(())
}

/// The typed payload of `v` as a queue item holds it (mproc's tag, then
/// the bytes), as an `mproc::pipe` carries it.
fn postcard_bytes(v: &ByteBuf) -> Vec<u8> {
    let (a, b) = mproc::pipe(true).unwrap();
    let v = v.clone();
    let sender = std::thread::spawn(move || a.send(&v));
    let bytes = b.recv_bytes().unwrap();
    sender.join().unwrap().unwrap();
    bytes
}
