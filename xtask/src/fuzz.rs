//! `cargo xtask fuzz [--seconds N] [--target NAME]...`: runs the cargo-fuzz
//! targets under `fuzz/` (libFuzzer with AddressSanitizer), each for N
//! seconds (default 60), one after the other, and fails if any finds a
//! crash, a hang or an allocation over the limit.
//!
//! Installs cargo-fuzz first when it is missing (`cargo install cargo-fuzz
//! --locked`). It runs on the stable toolchain with `RUSTC_BOOTSTRAP=1`
//! (cargo-fuzz passes nightly-only flags). Each target runs as
//!
//! ```text
//! RUSTC_BOOTSTRAP=1 cargo fuzz run <target> -- -max_total_time=N \
//!     -rss_limit_mb=2048 -malloc_limit_mb=64 -timeout=10 -print_final_stats=1 \
//!     [-dict=fuzz/dicts/<target>.dict] [target's own options]
//! ```
//!
//! The corpus grows in `fuzz/corpus/<target>` and findings land in
//! `fuzz/artifacts/<target>` (both ignored by git); reproduce one with
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run <target> <artifact>`. See
//! docs/reliability.md, "Fuzzing".

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::util;

/// The largest resident set a target may reach (ASan's quarantine alone
/// takes a few hundred MiB).
const RSS_LIMIT_MB: u32 = 2048;
/// The largest single allocation: every decoder under test caps its
/// buffers far below this, whatever length a header announces.
const MALLOC_LIMIT_MB: u32 = 64;
/// One input taking longer than this is a hang, reported as a finding.
const TIMEOUT_S: u32 = 10;

/// Extra libFuzzer options for a target.
fn target_options(target: &str) -> &'static [&'static str] {
    match target {
        // Room for records past the 4096-byte first record of a frame.
        "connection_recv" => &["-max_len=16384"],
        _ => &[],
    }
}

/// What one target's run came to.
struct Outcome {
    target: String,
    ok: bool,
    runs: Option<u64>,
    exec_per_sec: Option<u64>,
    peak_rss_mb: Option<u64>,
    seconds: f64,
    artifact: Option<String>,
}

pub fn run(args: &[String]) -> Result<(), String> {
    let mut seconds: u64 = 60;
    let mut only = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seconds" => {
                seconds = it
                    .next()
                    .and_then(|s| s.parse().ok())
                    .filter(|&s| s > 0)
                    .ok_or("--seconds needs a positive whole number")?;
            }
            "--target" => only.push(it.next().ok_or("--target needs a name")?.clone()),
            other => {
                return Err(format!(
                    "unknown argument {other:?}; usage: cargo xtask fuzz [--seconds N] [--target NAME]..."
                ))
            }
        }
    }

    let root = util::root();
    let all = targets(&root.join("fuzz/fuzz_targets"))?;
    for t in &only {
        if !all.contains(t) {
            return Err(format!(
                "no fuzz target {t:?}; there are: {}",
                all.join(", ")
            ));
        }
    }
    let targets = if only.is_empty() { all } else { only };

    ensure_cargo_fuzz()?;

    let mut outcomes = Vec::new();
    for t in &targets {
        eprintln!("xtask fuzz: {t} for {seconds} s");
        outcomes.push(run_target(&root, t, seconds)?);
    }

    eprintln!();
    eprintln!(
        "{:<18} {:>8} {:>14} {:>10} {:>9}  result",
        "target", "seconds", "runs", "exec/s", "peak MiB"
    );
    let show = |v: Option<u64>| v.map_or("?".to_string(), |v| v.to_string());
    for o in &outcomes {
        eprintln!(
            "{:<18} {:>8.0} {:>14} {:>10} {:>9}  {}",
            o.target,
            o.seconds,
            show(o.runs),
            show(o.exec_per_sec),
            show(o.peak_rss_mb),
            match (&o.ok, &o.artifact) {
                (true, _) => "no finding".to_string(),
                (false, Some(a)) => format!("FINDING: {a}"),
                (false, None) => "FAILED (see the output above)".to_string(),
            }
        );
    }
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|o| !o.ok)
        .map(|o| o.target.as_str())
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} found a problem; reproduce with `RUSTC_BOOTSTRAP=1 cargo fuzz run <target> <artifact>`",
            failed.join(", ")
        ))
    }
}

/// The targets: one per `fuzz/fuzz_targets/*.rs`, sorted.
fn targets(dir: &Path) -> Result<Vec<String>, String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    names.sort();
    if names.is_empty() {
        return Err(format!("no fuzz targets in {}", dir.display()));
    }
    Ok(names)
}

fn cargo_program() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// Installs cargo-fuzz when `cargo fuzz` is not there.
fn ensure_cargo_fuzz() -> Result<(), String> {
    let present = Command::new(cargo_program())
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if present {
        return Ok(());
    }
    eprintln!(
        "xtask fuzz: cargo-fuzz is missing: installing it with `cargo install cargo-fuzz --locked`"
    );
    util::cargo(&["install", "cargo-fuzz", "--locked"])
}

/// Runs one target for `seconds`, echoing libFuzzer's output, and reads
/// its final statistics and any artifact it wrote.
fn run_target(root: &Path, target: &str, seconds: u64) -> Result<Outcome, String> {
    let mut args: Vec<String> = vec![
        "fuzz".into(),
        "run".into(),
        target.into(),
        "--".into(),
        format!("-max_total_time={seconds}"),
        format!("-rss_limit_mb={RSS_LIMIT_MB}"),
        format!("-malloc_limit_mb={MALLOC_LIMIT_MB}"),
        format!("-timeout={TIMEOUT_S}"),
        "-print_final_stats=1".into(),
    ];
    let dict = root.join("fuzz/dicts").join(format!("{target}.dict"));
    if dict.is_file() {
        args.push(format!("-dict={}", dict.display()));
    }
    args.extend(target_options(target).iter().map(|s| s.to_string()));

    let start = Instant::now();
    let mut child = Command::new(cargo_program())
        .args(&args)
        .env("RUSTC_BOOTSTRAP", "1")
        .current_dir(root)
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run cargo fuzz: {e}"))?;
    let mut outcome = Outcome {
        target: target.to_string(),
        ok: false,
        runs: None,
        exec_per_sec: None,
        peak_rss_mb: None,
        seconds: 0.0,
        artifact: None,
    };
    if let Some(stderr) = child.stderr.take() {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            eprintln!("{line}");
            let stat = |name: &str| {
                line.strip_prefix(name)
                    .and_then(|v| v.trim().parse::<u64>().ok())
            };
            if let Some(v) = stat("stat::number_of_executed_units:") {
                outcome.runs = Some(v);
            } else if let Some(v) = stat("stat::average_exec_per_sec:") {
                outcome.exec_per_sec = Some(v);
            } else if let Some(v) = stat("stat::peak_rss_mb:") {
                outcome.peak_rss_mb = Some(v);
            } else if let Some((_, path)) = line.split_once("Test unit written to ") {
                outcome.artifact = Some(path.trim().to_string());
            } else if let Some(rest) = line.strip_prefix("Done ") {
                // "Done 123 runs in 60 second(s)"
                if let Some(secs) = rest
                    .split_once(" runs in ")
                    .and_then(|(_, s)| s.split_whitespace().next())
                    .and_then(|s| s.parse::<f64>().ok())
                {
                    outcome.seconds = secs;
                }
            }
        }
    }
    let status = child
        .wait()
        .map_err(|e| format!("waiting for cargo fuzz: {e}"))?;
    if outcome.seconds == 0.0 {
        outcome.seconds = start.elapsed().as_secs_f64();
    }
    outcome.ok = status.success() && outcome.artifact.is_none();
    if !outcome.ok {
        eprintln!("xtask fuzz: {target}: FAILED ({status})");
    }
    Ok(outcome)
}
