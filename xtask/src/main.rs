//! `cargo xtask <command>`: the project's own build and test driver.
//!
//! - `test-all`: fmt check, clippy (-D warnings), every test, every example
//!   with its output checked, then the Windows suite under Wine when the
//!   cross toolchain is there (installing it first when it can).
//! - `windows [--setup]`: build for x86_64-pc-windows-gnu and run the suite
//!   under Wine (`--setup` installs the toolchain and the Wine prefix).
//! - `bench [--quick] [--check-only]`: side-by-side figures, see docs/benchmarks.md.
//! - `fuzz [--seconds N] [--target NAME]`: run the cargo-fuzz targets, see docs/reliability.md.
//! - `slurm start|stop|test`: a throwaway 3-node Slurm cluster for the cluster
//!   tests (`test-all` starts one, runs them, and stops it), see docs/cluster.md.

mod bench;
mod examples;
mod exec;
mod fuzz;
mod leftovers;
mod libtest;
mod slurm;
mod util;
mod windows;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (cmd, rest) = match args.split_first() {
        Some((c, r)) => (c.as_str(), r.to_vec()),
        None => ("help", Vec::new()),
    };
    let result = match cmd {
        "test-all" => test_all(&rest),
        "windows" => {
            if rest.iter().any(|a| a == "--setup") {
                windows::setup()
            } else {
                windows::run(&rest).map(|_| ())
            }
        }
        "examples" => examples::run_all(),
        "bench" => bench::run(&rest),
        "fuzz" => fuzz::run(&rest),
        "slurm" => slurm::command(&rest),
        _ => {
            eprintln!("usage: cargo xtask <test-all | windows [--setup] | examples | bench [--quick] [--check-only] | fuzz [--seconds N] [--target NAME] | slurm <start | stop | test>>");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask {cmd}: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `cargo test --workspace --no-fail-fast`, its output streamed through;
/// on failure the error names every failing test with the tail of its
/// output (and every test binary that ended without a result), so the
/// names are the last thing a long run prints.
fn native_tests() -> Result<(), String> {
    run_tests(&["test", "--workspace", "--no-fail-fast"], &[])
}

/// The process, pipe, queue, pool and logging tests once more, with every
/// child started by the forkserver (`MPROC_START_METHOD=forkserver`).
fn forkserver_tests() -> Result<(), String> {
    run_tests(
        &[
            "test",
            "--no-fail-fast",
            "--test",
            "process",
            "--test",
            "pipe",
            "--test",
            "queue",
            "--test",
            "pool",
            "--test",
            "logging",
        ],
        &[("MPROC_START_METHOD", "forkserver")],
    )
}

fn run_tests(args: &[&str], env: &[(&str, &str)]) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = std::process::Command::new(&cargo);
    cmd.args(args)
        .envs(env.iter().copied())
        .current_dir(util::root());
    let mut failures = libtest::Failures::default();
    let outcome = exec::stream(&mut cmd, NATIVE_TEST_TIMEOUT, |is_err, line| {
        if is_err {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
        failures.line(is_err, &libtest::strip_ansi(line));
    })?;
    let report = failures.finish();
    if outcome.success() {
        return Ok(());
    }
    let why = if outcome.timed_out {
        format!("timed out after {} s", NATIVE_TEST_TIMEOUT.as_secs())
    } else {
        exec::describe_status(outcome.status)
    };
    Err(format!(
        "`{}cargo {}` failed ({why}){}",
        env.iter()
            .map(|(k, v)| format!("{k}={v} "))
            .collect::<String>(),
        args.join(" "),
        report
            .map(|r| format!("\n\nwhat failed:\n{r}"))
            .unwrap_or_default()
    ))
}

/// The native `cargo test` step's limit (build included): a hung test ends
/// the run with its binary named instead of holding CI until its own limit.
const NATIVE_TEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1800);

fn test_all(_args: &[String]) -> Result<(), String> {
    let start = std::time::Instant::now();
    let temp_before = leftovers::snapshot();
    util::step(
        "cargo fmt --check",
        util::cargo(&["fmt", "--all", "--", "--check"]),
    )?;
    util::step(
        "cargo clippy",
        util::cargo(&[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    util::step("cargo test", native_tests())?;
    util::step(
        "cargo test, forkserver start method (Unix)",
        if cfg!(unix) {
            forkserver_tests()
        } else {
            Ok(())
        },
    )?;
    util::step("examples", examples::run_all())?;
    let mut cluster = false;
    util::step(
        "Slurm cluster tests",
        slurm::test_all().map(|ran| cluster = ran),
    )?;
    util::step(
        "no leftovers in the temp directory",
        leftovers::check(&temp_before),
    )?;
    let windows = match windows::ensure_setup() {
        Ok(true) => Some(windows::run(&[])?),
        Ok(false) => None,
        Err(e) => {
            eprintln!();
            eprintln!("!!! ===================================================== !!!");
            eprintln!("!!! WINDOWS SUITE SKIPPED: {e}");
            eprintln!("!!! ===================================================== !!!");
            None
        }
    };
    eprintln!();
    eprintln!(
        "xtask test-all: all green in {:.0} s{}{}",
        start.elapsed().as_secs_f64(),
        if cluster {
            ""
        } else {
            " (Slurm cluster tests skipped)"
        },
        match windows {
            Some(s) => format!(" (Windows under Wine: {s})"),
            None => " (Windows suite skipped)".to_string(),
        }
    );
    Ok(())
}
