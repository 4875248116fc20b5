//! `cargo xtask <command>`: the project's own build and test driver.
//!
//! - `test-all`: fmt check, clippy (-D warnings), every test, every example
//!   with its output checked, then the Windows suite under Wine when the
//!   cross toolchain is there (installing it first when it can).
//! - `windows [--setup]`: build for x86_64-pc-windows-gnu and run the suite
//!   under Wine (`--setup` installs the toolchain and the Wine prefix).
//! - `bench [--quick] [--check-only]`: side-by-side figures, see docs/benchmarks.md.
//! - `fuzz [--seconds N] [--target NAME]`: run the cargo-fuzz targets, see docs/reliability.md.

mod bench;
mod examples;
mod fuzz;
mod leftovers;
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
        _ => {
            eprintln!("usage: cargo xtask <test-all | windows [--setup] | examples | bench [--quick] [--check-only] | fuzz [--seconds N] [--target NAME]>");
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
    util::step("cargo test", util::cargo(&["test", "--workspace"]))?;
    util::step("examples", examples::run_all())?;
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
        "xtask test-all: all green in {:.0} s{}",
        start.elapsed().as_secs_f64(),
        match windows {
            Some(s) => format!(" (Windows under Wine: {s})"),
            None => " (Windows suite skipped)".to_string(),
        }
    );
    Ok(())
}
