//! `cargo xtask slurm start|stop`, and the cluster half of `test-all`: a
//! throwaway 3-node Slurm cluster on this host (Debian's `slurm-wlm` +
//! `munge`, no systemd, no cgroups) from the project's own scripts in
//! `xtask/slurm/`, the cluster tests (`tests/cluster.rs`) run against it,
//! and the cluster stopped with no daemon left behind.
//!
//! - `MPROC_SKIP_SLURM=1`: `test-all` skips the cluster tests on purpose.
//! - `SLURM_TEST_DIR`: where the cluster lives [/tmp/mproc-slurm-cluster].
//!
//! Starting needs root (the daemons run as root) and, the first time,
//! apt-get; without them `test-all` skips the cluster tests loudly.

use std::path::PathBuf;
use std::process::Command;

use crate::util;

/// Nodes of the test cluster: enough to see placement across nodes.
const NODES: &str = "3";
/// CPUs each node declares: 2 real cores would make back-to-back jobs
/// queue (the scripts' README, pitfall 7).
const CPUS: &str = "8";

fn say(msg: impl AsRef<str>) {
    eprintln!("xtask slurm: {}", msg.as_ref());
}

/// Where the cluster lives.
pub fn dir() -> PathBuf {
    std::env::var_os("SLURM_TEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/mproc-slurm-cluster"))
}

fn script(name: &str) -> PathBuf {
    util::root().join("xtask").join("slurm").join(name)
}

fn run_script(name: &str) -> Result<(), String> {
    let status = Command::new("bash")
        .arg(script(name))
        .env("SLURM_TEST_DIR", dir())
        .env("SLURM_TEST_NODES", NODES)
        .env("SLURM_TEST_CPUS", CPUS)
        .status()
        .map_err(|e| format!("cannot run bash {name}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{name} failed: {status}"))
    }
}

/// Starts the cluster (idempotent); returns its `SLURM_CONF`.
pub fn start() -> Result<PathBuf, String> {
    run_script("start-cluster.sh")?;
    let conf = dir().join("slurm.conf");
    say(format!("cluster up: export SLURM_CONF={}", conf.display()));
    Ok(conf)
}

/// Stops the cluster; an error if a daemon is left running.
pub fn stop() -> Result<(), String> {
    run_script("stop-cluster.sh")
}

/// `cargo xtask slurm start|stop|test` (`test`: the cluster half of
/// `test-all` alone).
pub fn command(args: &[String]) -> Result<(), String> {
    match args.first().map(String::as_str) {
        Some("start") => start().map(|_| ()),
        Some("stop") => stop(),
        Some("test") => test_all().map(|_| ()),
        _ => Err("usage: cargo xtask slurm <start | stop | test>".into()),
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("Uid:"))?;
            line.split_whitespace().nth(2).map(|uid| uid == "0")
        })
        .unwrap_or(false)
}

/// Why the cluster tests cannot run here, if they cannot.
fn cannot_run() -> Option<String> {
    if std::env::var("MPROC_SKIP_SLURM").is_ok_and(|v| v == "1") {
        return Some("MPROC_SKIP_SLURM=1".into());
    }
    if !cfg!(target_os = "linux") {
        return Some("the cluster tests are Linux-only".into());
    }
    if !is_root() {
        return Some("not root (the test cluster's daemons run as root)".into());
    }
    let has = |b: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {b}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !has("srun") && !has("apt-get") {
        return Some("no Slurm installed and no apt-get to install it".into());
    }
    None
}

/// The cluster half of `test-all`: start, run `tests/cluster.rs`
/// against the cluster, stop (also after a failure). `Ok(false)` when
/// skipped.
pub fn test_all() -> Result<bool, String> {
    if let Some(why) = cannot_run() {
        eprintln!();
        eprintln!("!!! ===================================================== !!!");
        eprintln!("!!! SLURM CLUSTER TESTS SKIPPED: {why}");
        eprintln!("!!! ===================================================== !!!");
        return Ok(false);
    }
    let conf = match start() {
        Ok(c) => c,
        Err(e) => {
            // A half-started cluster leaves nothing behind either.
            let _ = stop();
            return Err(e);
        }
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let tests = Command::new(&cargo)
        .args(["test", "--test", "cluster"])
        .env("SLURM_CONF", &conf)
        .current_dir(util::root())
        .status()
        .map_err(|e| format!("cannot run {cargo}: {e}"))
        .and_then(|s| {
            if s.success() {
                Ok(())
            } else {
                Err(format!("`cargo test --test cluster` failed: {s}"))
            }
        });
    let stopped = stop();
    tests?;
    stopped?;
    Ok(true)
}
