//! Runs every example and checks the lines it prints against what the
//! seed's Python program of the same name prints (the checkers below;
//! the examples are those programs, ported one to one).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util;

/// The examples, in the order they run, each with `--fast` (no sleeps).
pub const EXAMPLES: &[&str] = &["worker", "say", "pipe", "producer_consumer", "pool"];

/// Builds the examples and runs each one natively, checking its output.
pub fn run_all() -> Result<(), String> {
    util::cargo(&["build", "--examples", "--quiet"])?;
    let dir = native_dir();
    for name in EXAMPLES {
        let exe = dir.join(name);
        if !exe.exists() {
            return Err(format!("example {name} was not built ({})", exe.display()));
        }
        run_one(name, &exe)?;
    }
    Ok(())
}

fn run_one(name: &str, exe: &Path) -> Result<(), String> {
    let out = Command::new(exe)
        .arg("--fast")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "example {name} failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    check(name, &stdout).map_err(|e| format!("example {name}: {e}\n--- output ---\n{stdout}"))?;
    eprintln!(
        "xtask: example {name}: output checked ({} lines)",
        stdout.lines().count()
    );
    Ok(())
}

/// Checks an example's standard output (also used for the Windows run).
pub fn check(name: &str, stdout: &str) -> Result<(), String> {
    let lines: Vec<&str> = stdout.lines().map(|l| l.trim_end_matches('\r')).collect();
    match name {
        "worker" => check_worker(&lines),
        "say" => check_say(&lines),
        "pipe" => check_pipe(&lines),
        "producer_consumer" => check_producer_consumer(&lines),
        "pool" => check_pool(&lines),
        other => Err(format!("no checker for example {other}")),
    }
}

/// CPython prints `[1, 4, 9]`; so does `{:?}` of a `Vec<u64>`.
fn check_pool(lines: &[&str]) -> Result<(), String> {
    if lines != ["[1, 4, 9]"] {
        return Err(format!("expected the single line [1, 4, 9], got {lines:?}"));
    }
    Ok(())
}

fn pid_of(s: &str) -> Result<u32, String> {
    s.parse().map_err(|_| format!("not a pid: {s:?}"))
}

fn check_worker(lines: &[&str]) -> Result<(), String> {
    let mut tasks = BTreeSet::new();
    let mut pids = BTreeSet::new();
    for l in lines {
        let rest = l
            .strip_prefix("Worker PID: ")
            .ok_or_else(|| format!("unexpected line {l:?}"))?;
        let (pid, task) = rest
            .split_once(" with task: ")
            .ok_or_else(|| format!("unexpected line {l:?}"))?;
        pids.insert(pid_of(pid)?);
        let i = task
            .strip_prefix("running ")
            .and_then(|t| t.strip_suffix(" task"))
            .and_then(|i| i.parse::<u32>().ok())
            .ok_or_else(|| format!("unexpected task in {l:?}"))?;
        tasks.insert(i);
    }
    if tasks.len() < 3 || tasks != (0..tasks.len() as u32).collect() {
        return Err(format!("expected tasks 0..n (n >= 3), got {tasks:?}"));
    }
    if pids.len() != tasks.len() || pids.contains(&std::process::id()) {
        return Err(format!(
            "expected one distinct child pid per task, got {pids:?}"
        ));
    }
    Ok(())
}

fn check_say(lines: &[&str]) -> Result<(), String> {
    match lines {
        [l] => {
            let rest = l
                .strip_prefix("say PID: ")
                .and_then(|r| r.strip_suffix(" with name: p1, task: task1"))
                .ok_or_else(|| format!("unexpected line {l:?}"))?;
            pid_of(rest).map(|_| ())
        }
        _ => Err(format!("expected one line, got {}", lines.len())),
    }
}

fn check_pipe(lines: &[&str]) -> Result<(), String> {
    let worker = lines
        .iter()
        .find_map(|l| l.strip_prefix("worker pid: "))
        .ok_or("no `worker pid:` line")?;
    pid_of(worker)?;
    for want in [
        "worker received: message from parent",
        "parent received response: message from worker",
    ] {
        if !lines.contains(&want) {
            return Err(format!("missing line {want:?}"));
        }
    }
    if lines.len() != 3 {
        return Err(format!("expected 3 lines, got {}", lines.len()));
    }
    Ok(())
}

fn check_producer_consumer(lines: &[&str]) -> Result<(), String> {
    let expected: BTreeSet<String> = ["P1", "P2"]
        .iter()
        .flat_map(|p| (0..5).map(move |i| format!("{p}-{i}")))
        .collect();
    let mut put = BTreeSet::new();
    let mut received: BTreeMap<String, u32> = BTreeMap::new();
    let mut stopped = BTreeSet::new();
    for l in lines {
        if let Some(rest) = l.strip_prefix("[producer ") {
            let (who, item) = rest
                .split_once("] Put: ")
                .ok_or(format!("bad line {l:?}"))?;
            if !item.starts_with(who) || !put.insert(item.to_string()) {
                return Err(format!("bad or repeated put {l:?}"));
            }
        } else if let Some(rest) = l.strip_prefix("[consumer ") {
            let (who, what) = rest.split_once("] ").ok_or(format!("bad line {l:?}"))?;
            if !["C1", "C2"].contains(&who) {
                return Err(format!("unknown consumer in {l:?}"));
            }
            if what == "received termination signal" {
                if !stopped.insert(who.to_string()) {
                    return Err(format!("{who} stopped twice"));
                }
            } else if let Some(item) = what.strip_prefix("received item: ") {
                *received.entry(item.to_string()).or_default() += 1;
            } else {
                return Err(format!("bad line {l:?}"));
            }
        } else if *l != "All processes completed" {
            return Err(format!("unexpected line {l:?}"));
        }
    }
    if put != expected {
        return Err(format!("puts {put:?}, expected {expected:?}"));
    }
    let got: BTreeSet<String> = received.keys().cloned().collect();
    if got != expected || received.values().any(|&n| n != 1) {
        return Err(format!(
            "each item must be received exactly once: {received:?}"
        ));
    }
    if stopped.len() != 2 {
        return Err(format!("both consumers must stop, got {stopped:?}"));
    }
    if lines.last() != Some(&"All processes completed") {
        return Err("the last line must be `All processes completed`".into());
    }
    Ok(())
}

/// Where `cargo build --examples` puts the native example binaries
/// (honouring `CARGO_TARGET_DIR`).
pub fn native_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| util::root().join("target"));
    let target = if target.is_relative() {
        util::root().join(target)
    } else {
        target
    };
    target.join("debug/examples")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn say_checker_accepts_the_seed_line_and_rejects_others() {
        assert!(check("say", "say PID: 42 with name: p1, task: task1\n").is_ok());
        assert!(check("say", "say PID: x with name: p1, task: task1\n").is_err());
        assert!(check("say", "").is_err());
    }

    #[test]
    fn producer_consumer_checker_wants_every_item_once() {
        let mut out = String::new();
        for p in ["P1", "P2"] {
            for i in 0..5 {
                out +=
                    &format!("[producer {p}] Put: {p}-{i}\n[consumer C1] received item: {p}-{i}\n");
            }
        }
        out += "[consumer C1] received termination signal\n[consumer C2] received termination signal\nAll processes completed\n";
        assert!(check("producer_consumer", &out).is_ok());
        let dup = out.replacen("received item: P1-1", "received item: P1-0", 1);
        assert!(check("producer_consumer", &dup).is_err());
    }
}
