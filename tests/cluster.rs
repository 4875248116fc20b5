//! `Launcher::srun()`: processes and Pools placed by Slurm, against a real
//! (throwaway) cluster: `cargo xtask slurm start` (3 nodes) and
//! `SLURM_CONF` in the environment; `cargo xtask test-all` does both.
//! Without `SLURM_CONF` every test here says so and passes: the cluster
//! tests are Linux-only (docs/platforms.md).
//!
//! No CPython case maps here (CPython has no cluster launcher); the Pool
//! rules checked are `_test_multiprocessing`'s `TestPool.test_map` and
//! the Pool's worker-death rule (docs/reliability.md), placed by Slurm.

#![cfg(target_os = "linux")]

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use mproc::{Error, Launcher, Pool, Process};

/// The cluster, or `None` (with a message) when none is configured.
fn cluster() -> Option<()> {
    if std::env::var_os("SLURM_CONF").is_none() {
        eprintln!(
            "skipped: no Slurm cluster (SLURM_CONF is not set; see `cargo xtask slurm start`)"
        );
        return None;
    }
    Some(())
}

/// `p` placed by srun, started.
fn started_on_srun(p: Process) -> Process {
    let mut p = p.with_launcher(Launcher::srun());
    p.start().unwrap();
    p
}

/// `p` placed by srun, run to its end: its exit code.
fn exit_code_on_srun(p: Process) -> Option<i32> {
    let mut p = started_on_srun(p);
    p.join().unwrap();
    p.exitcode()
}

#[mproc::target]
fn sqr(x: u64) -> u64 {
    x * x
}

/// Where a worker runs: (its job id, its node, its pid), after `ms`
/// milliseconds of work.
#[mproc::target]
fn placement(ms: u32) -> (String, String, u32) {
    std::thread::sleep(Duration::from_millis(u64::from(ms)));
    (
        std::env::var("SLURM_JOB_ID").unwrap_or_default(),
        std::env::var("SLURMD_NODENAME").unwrap_or_default(),
        std::process::id(),
    )
}

/// (`SLURM_PROCID`, the number in this worker's name), after `ms`
/// milliseconds of work.
#[mproc::target]
fn rank_and_name(ms: u32) -> (i64, i64) {
    std::thread::sleep(Duration::from_millis(u64::from(ms)));
    let rank = std::env::var("SLURM_PROCID").unwrap().parse().unwrap();
    let name = mproc::current_process().name().to_string();
    let n = name.rsplit(['-', ':']).next().unwrap().parse().unwrap();
    (rank, n)
}

#[mproc::target]
fn exit_with(code: i32) {
    std::process::exit(code);
}

#[mproc::target]
fn sigkill_self_on(x: u32) -> u32 {
    if x == 3 {
        // SAFETY: raising a signal at this process.
        unsafe {
            libc::kill(std::process::id() as i32, libc::SIGKILL);
        }
    }
    x
}

#[mproc::target]
fn sleep_then(x: u32) -> u32 {
    std::thread::sleep(Duration::from_millis(300));
    x
}

#[mproc::target]
fn takes_connection(c: mproc::Connection) {
    let _ = c.send(&1u8);
}

#[mproc::target]
fn tell_pid_then_block(q: mproc::Queue<u32>) {
    let _ = q.put(std::process::id());
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

#[mproc::target]
fn block_forever(_x: u32) -> u32 {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Whether a process with this pid runs (every node of the test cluster
/// is this host).
fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.contains(") Z "))
            .unwrap_or(true)
}

/// A Pool of 6 over the 3 nodes maps 0..40 in order; its workers are the
/// tasks of one job step, on more than one node (`TestPool.test_map`,
/// placed by Slurm).
#[mproc::test]
fn pool_of_six_maps_in_order_across_nodes() {
    let Some(()) = cluster() else { return };
    let pool = Pool::builder()
        .processes(6)
        .launcher(Launcher::srun().nodes(3))
        .build()
        .unwrap();
    // Six tasks of 200 ms on a fresh pool: one for each worker (a worker
    // holds one task at a time until it knows they are short).
    let places = pool.map_chunked(placement, [200u32; 6], 1).unwrap();
    for (job, node, _) in &places {
        assert!(!job.is_empty(), "a worker outside a Slurm job");
        assert!(node.starts_with('n'), "a worker on no Slurm node: {node:?}");
    }
    let nodes: BTreeSet<_> = places.iter().map(|(_, n, _)| n.clone()).collect();
    assert!(nodes.len() > 1, "all workers on one node: {nodes:?}");
    let jobs: BTreeSet<_> = places.iter().map(|(j, _, _)| j.clone()).collect();
    assert_eq!(jobs.len(), 1, "the workers are not one job's: {jobs:?}");
    let pids: BTreeSet<_> = places.iter().map(|(_, _, p)| *p).collect();
    assert_eq!(pids.len(), 6, "not 6 distinct workers: {pids:?}");
    // Task k of the step got launch record k (it told its SLURM_PROCID):
    // worker names, numbered in record order, follow the ranks.
    let ranks = pool.map_chunked(rank_and_name, [200u32; 6], 1).unwrap();
    let offsets: BTreeSet<i64> = ranks.iter().map(|(rank, n)| n - rank).collect();
    assert_eq!(offsets.len(), 1, "names not by rank: {ranks:?}");
    assert_eq!(ranks.len(), 6);
    let got = pool.map(sqr, 0..40u64).unwrap();
    assert_eq!(got, (0..40u64).map(|x| x * x).collect::<Vec<_>>());
}

/// One process placed by srun: its exit code is its own (CPython's
/// `test_exitcode` shape: `sys.exit(n)` gives exitcode n).
#[mproc::test]
fn srun_process_exit_code_is_the_tasks() {
    let Some(()) = cluster() else { return };
    assert_eq!(exit_code_on_srun(Process::new(exit_with, (7,))), Some(7));
    assert_eq!(exit_code_on_srun(Process::new(exit_with, (0,))), Some(0));
}

/// A worker that SIGKILLs itself fails its own task alone, and is
/// replaced by a new Slurm task: the other tasks all succeed.
#[mproc::test]
fn a_worker_killed_on_its_node_fails_its_task_alone() {
    let Some(()) = cluster() else { return };
    let pool = Pool::builder()
        .processes(2)
        .launcher(Launcher::srun())
        .build()
        .unwrap();
    let results: Vec<_> = (0..6u32)
        .map(|x| pool.apply_async(sigkill_self_on, (x,)).unwrap())
        .collect();
    for (x, r) in results.into_iter().enumerate() {
        match r.get() {
            Ok(v) => assert_eq!(v, x as u32),
            Err(Error::WorkerDied { .. }) => assert_eq!(x, 3, "task {x} failed"),
            Err(e) => panic!("task {x}: {e}"),
        }
    }
    // The pool still works after the loss.
    assert_eq!(pool.map(sqr, 0..4u64).unwrap(), vec![0, 1, 4, 9]);
}

/// `scancel` of the workers' jobs mid-map fails the tasks in flight
/// (WorkerDied) and the pool recovers with new Slurm tasks.
#[mproc::test]
fn scancel_mid_map_fails_the_tasks_in_flight_and_the_pool_recovers() {
    let Some(()) = cluster() else { return };
    let pool = Pool::builder()
        .processes(2)
        .launcher(Launcher::srun())
        .build()
        .unwrap();
    let jobs: BTreeSet<String> = pool
        .map_chunked(placement, [0u32; 8], 1)
        .unwrap()
        .into_iter()
        .map(|(j, _, _)| j)
        .collect();
    let pending = pool.map_async_chunked(sleep_then, 0..8u32, 1).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    for job in &jobs {
        let st = Command::new("scancel").arg(job).status().unwrap();
        assert!(st.success());
    }
    match pending.get() {
        Err(Error::WorkerDied { .. }) => {}
        other => panic!("expected WorkerDied after scancel, got {other:?}"),
    }
    assert_eq!(pool.map(sqr, 0..6u64).unwrap(), vec![0, 1, 4, 9, 16, 25]);
}

/// `terminate()` leaves no task running on any node.
#[mproc::test]
fn terminate_leaves_no_task() {
    let Some(()) = cluster() else { return };
    let mut pool = Pool::builder()
        .processes(3)
        .launcher(Launcher::srun())
        .build()
        .unwrap();
    let pids: Vec<u32> = pool
        .map_chunked(placement, [200u32; 3], 1)
        .unwrap()
        .into_iter()
        .map(|(_, _, p)| p)
        .collect();
    assert_eq!(pids.len(), 3, "not one task per worker: {pids:?}");
    let _blocked = pool.map_async_chunked(block_forever, 0..3u32, 1).unwrap();
    pool.terminate().unwrap();
    // terminate() waited for the cancelled step's srun, which ends after
    // its tasks.
    let left: Vec<_> = pids.iter().filter(|p| alive(**p)).collect();
    assert!(left.is_empty(), "tasks outlived terminate(): {left:?}");
}

/// `terminate()` of a remote Process cancels its step: the task ends,
/// and the exit code is -15 as for a local child, not srun's 137
/// (CPython's `test_terminate`; the guide's `exitcode`).
#[mproc::test]
fn terminate_of_a_remote_process_ends_its_task() {
    let Some(()) = cluster() else { return };
    let q: mproc::Queue<u32> = mproc::Queue::new(0).unwrap();
    let mut p = started_on_srun(Process::new(tell_pid_then_block, (q.clone(),)));
    let pid = q.get_timeout(Duration::from_secs(60)).unwrap();
    assert!(alive(pid));
    p.terminate().unwrap();
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(-15));
    assert!(!alive(pid), "the task outlived its terminated srun");
    // Asked again, and after close(): still -15.
    assert_eq!(p.exitcode(), Some(-15));
    p.close().unwrap();
    assert_eq!(p.exitcode(), Some(-15));
}

/// `kill()` of a remote Process: -9 as for a local child (CPython's
/// `test_kill`).
#[mproc::test]
fn kill_of_a_remote_process_reports_minus_9() {
    let Some(()) = cluster() else { return };
    let q: mproc::Queue<u32> = mproc::Queue::new(0).unwrap();
    let mut p = started_on_srun(Process::new(tell_pid_then_block, (q.clone(),)));
    q.get_timeout(Duration::from_secs(60)).unwrap();
    p.kill().unwrap();
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(-9));
    // A terminate() after the end changes nothing.
    p.terminate().unwrap();
    assert_eq!(p.exitcode(), Some(-9));
}

/// A remote task that exits with a code of its own before any
/// terminate() keeps it: the -15 / -9 mapping is only for a step this
/// process ended (`test_exitcode`).
#[mproc::test]
fn a_remote_exit_code_is_kept_when_terminate_comes_after_the_end() {
    let Some(()) = cluster() else { return };
    let mut p = started_on_srun(Process::new(exit_with, (3,)));
    p.join().unwrap();
    p.terminate().unwrap();
    assert_eq!(p.exitcode(), Some(3));
}

/// A local `Connection` end cannot cross hosts: `start()` says so.
#[mproc::test]
fn a_local_connection_for_a_remote_child_is_refused() {
    let Some(()) = cluster() else { return };
    let (_mine, theirs) = mproc::pipe(true).unwrap();
    let mut p = Process::new(takes_connection, (theirs,)).with_launcher(Launcher::srun());
    let err = p.start().unwrap_err();
    assert!(
        err.to_string().contains("cannot cross hosts"),
        "unclear error: {err}"
    );
}

#[mproc::target]
fn parent_is_alive() -> Result<(), String> {
    let mut parent = mproc::parent_process().ok_or("no parent process")?;
    if parent.is_alive().unwrap_or(false) {
        Ok(())
    } else {
        Err("the parent looks dead".into())
    }
}

/// A remote child is an ordinary child: it has a parent process, alive
/// while the parent runs (CPython's `test_parent_process`).
#[mproc::test]
fn a_remote_child_sees_its_parent_alive() {
    let Some(()) = cluster() else { return };
    assert_eq!(
        exit_code_on_srun(Process::new(parent_is_alive, ())),
        Some(0)
    );
}

/// The body of `a_pool_inside_sbatch_uses_that_allocation`, run by the
/// batch script: a Pool whose workers' job is the script's own job.
#[mproc::test]
fn inner_pool_in_sbatch() {
    let Some(out) = std::env::var_os("MPROC_CLUSTER_INNER_OUT") else {
        return; // only inside the batch script below
    };
    let own = std::env::var("SLURM_JOB_ID").unwrap_or_default();
    let pool = Pool::builder()
        .processes(2)
        .launcher(Launcher::srun().args(["--overlap"]))
        .build()
        .unwrap();
    let jobs: BTreeSet<String> = pool
        .map_chunked(placement, [0u32; 6], 1)
        .unwrap()
        .into_iter()
        .map(|(j, _, _)| j)
        .collect();
    std::fs::write(out, format!("own={own} workers={jobs:?}")).unwrap();
}

/// A Pool inside an `sbatch` script runs its workers as steps of that
/// allocation, not as new jobs.
#[mproc::test]
fn a_pool_inside_sbatch_uses_that_allocation() {
    let Some(()) = cluster() else { return };
    let dir = std::env::temp_dir().join(format!("mproc-sbatch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("out.txt");
    let script = dir.join("job.sh");
    let exe = std::env::current_exe().unwrap();
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nMPROC_CLUSTER_INNER_OUT={} exec {} --exact inner_pool_in_sbatch --test-threads=1\n",
            out.display(),
            exe.display()
        ),
    )
    .unwrap();
    let status = Command::new("sbatch")
        .args(["--wait", "--quiet", "--ntasks=2"])
        .arg(format!("--output={}", dir.join("job.log").display()))
        .arg(&script)
        .status()
        .unwrap();
    let log = std::fs::read_to_string(dir.join("job.log")).unwrap_or_default();
    let got = std::fs::read_to_string(&out).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(status.success(), "the batch job failed: {log}");
    let own = got
        .strip_prefix("own=")
        .and_then(|r| r.split(' ').next())
        .unwrap_or_default()
        .to_string();
    assert!(
        !own.is_empty(),
        "no result from the batch job: {got:?} {log}"
    );
    assert!(
        got.ends_with(&format!("workers={{\"{own}\"}}")),
        "workers outside the batch job's allocation: {got}"
    );
}

#[mproc::target]
fn put_square(q: mproc::Queue<(u32, u32, String)>, x: u32) -> Result<(), String> {
    let node = std::env::var("SLURMD_NODENAME").unwrap_or_default();
    q.put((x, x * x, node)).map_err(|e| e.to_string())
}

/// A `Queue` in the arguments of children placed by srun carries their
/// results back: the queue's broker serves them over TCP, with the same
/// key and handshake (`_test_multiprocessing`'s `test_put`/`test_get`
/// across processes, here across Slurm tasks).
#[mproc::test]
fn a_queue_carries_results_from_remote_children() {
    let Some(()) = cluster() else { return };
    let q: mproc::Queue<(u32, u32, String)> = mproc::Queue::new(0).unwrap();
    let mut ps: Vec<Process> = (0..3u32)
        .map(|x| Process::new(put_square, (q.clone(), x)).with_launcher(Launcher::srun()))
        .collect();
    for p in &mut ps {
        p.start().unwrap();
    }
    let mut got: Vec<(u32, u32)> = (0..3)
        .map(|_| {
            let (x, sq, node) = q.get_timeout(Duration::from_secs(60)).unwrap();
            assert!(node.starts_with('n'), "not from a Slurm node: {node:?}");
            (x, sq)
        })
        .collect();
    got.sort();
    assert_eq!(got, vec![(0, 0), (1, 1), (2, 4)]);
    for p in &mut ps {
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
    }
}

/// The TCP listening sockets this process holds, as addresses to connect
/// to (`0.0.0.0` as loopback), read from `/proc/net/tcp` and the socket
/// inodes of `/proc/self/fd`. (srun's environment holds the launch's
/// token, but srun may rewrite that memory at any time: not a source.)
fn own_tcp_listeners() -> Vec<std::net::SocketAddr> {
    let inodes: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.get(3) != Some(&"0A") || !inodes.iter().any(|i| Some(&i.as_str()) == f.get(9)) {
                return None;
            }
            let (ip, port) = f.get(1)?.split_once(':')?;
            let ip = u32::from_str_radix(ip, 16).ok()?.swap_bytes();
            let port = u16::from_str_radix(port, 16).ok()?;
            let ip = match std::net::Ipv4Addr::from(ip) {
                a if a.is_unspecified() => std::net::Ipv4Addr::LOCALHOST,
                a => a,
            };
            Some(std::net::SocketAddr::from((ip, port)))
        })
        .collect()
}

/// A stranger on the network who connects to a remote launch's TCP
/// listener first, without the secret, gets the challenge and nothing
/// more (no launch record), and the launch still succeeds with the real
/// task (the hostile-peer case of CPython's `test_answer_challenge_auth_failure`).
#[mproc::test]
fn a_stranger_on_the_launch_port_learns_nothing_and_fails_nothing() {
    use std::io::{Read, Write};
    let Some(()) = cluster() else { return };
    let before = own_tcp_listeners();
    let mut p = started_on_srun(Process::new(exit_with, (0,)));
    // The launch's listener is new (another test's launch, running at the
    // same time, may be picked instead: it must hold the same way).
    let new: Vec<_> = own_tcp_listeners()
        .into_iter()
        .filter(|a| !before.contains(a))
        .collect();
    let hostport = *new.first().expect("no launch listener appeared");
    let mut s = std::net::TcpStream::connect(hostport).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    // A wrong answer to the challenge, framed as mproc frames are.
    let junk = b"{sha256}not the right digest at all, not at all.";
    s.write_all(&(junk.len() as u32).to_be_bytes()).unwrap();
    s.write_all(junk).unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    let text = String::from_utf8_lossy(&got);
    assert!(text.contains("#CHALLENGE#"), "no challenge: {text:?}");
    assert!(
        !text.contains("mproc::"),
        "the stranger got launch data: {text:?}"
    );
    // The real task still got its launch and ran its target.
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(0));
}
