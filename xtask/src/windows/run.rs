//! `cargo xtask windows [-- TEST-BINARY-ARGS]`: the cross build with
//! Debian's cargo, every test binary under Wine, every example with `--fast`
//! (output checked as in the native run), leftover programs counted and
//! killed, and the line of totals.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::metadata::{workspace_packages, Package, Target};
use super::prefix::{wine_cmd, wine_version, Paths, PrefixLock};
use super::procs::{kill_all, new_programs, pids, wine_processes, WineServer};
use super::setup::what_is_missing;
use super::{say, CARGO, MINGW_GCC, TARGET, UNIX_ONLY_PACKAGES};
use crate::exec::{describe, describe_status, stream};
use crate::libtest::{count, is_list_summary, strip_ansi, Failures};

const USAGE: &str = "usage: cargo xtask windows [--setup] [-- TEST-BINARY-ARGS]";

const EXAMPLE_ARGS: &[&str] = &["--fast"];
const EXAMPLE_TIMEOUT: Duration = Duration::from_secs(120);
const DEFAULT_TEST_TIMEOUT_SECS: u64 = 1800;

pub fn run(args: &[String]) -> Result<String, String> {
    let test_args: Vec<String> = match args.iter().position(|a| a == "--") {
        Some(0) => args[1..].to_vec(),
        None if args.is_empty() => Vec::new(),
        _ => return Err(format!("unexpected arguments {args:?}: {USAGE}")),
    };
    let start = Instant::now();
    let root = workspace_root();
    let paths = Paths::new()?;
    let missing = what_is_missing(&paths);
    if !missing.is_empty() {
        return Err(format!(
            "not set up ({}): run `cargo xtask windows --setup` first",
            missing.join("; ")
        ));
    }
    let _lock = PrefixLock::acquire(&paths)?;
    let target_dir = root.join("target").join("windows");
    let packages = workspace_packages(&root, &paths, &target_dir)?;
    let mut excludes: Vec<&str> = Vec::new();
    for name in std::iter::once("xtask").chain(UNIX_ONLY_PACKAGES.iter().copied()) {
        if packages.iter().any(|p| p.name == name) {
            excludes.extend(["--exclude", name]);
        }
    }
    say(format!(
        "building {} for {TARGET} into {}; running under {} (WINEPREFIX={})",
        root.display(),
        target_dir.display(),
        wine_version(),
        paths.prefix.display()
    ));
    say("doc tests are not run for the cross target (`cargo test --tests`); test-all runs them natively");

    let mut server = WineServer::start(&paths)?;
    let tests = run_tests(&root, &paths, &target_dir, &excludes, &test_args)?;
    let examples = if tests.fatal.is_some() {
        ExampleTotals::default()
    } else {
        run_examples(&root, &paths, &target_dir, &excludes, &packages)?
    };
    server.stop();

    let summary = summary_line(&tests, &examples);
    say(format!(
        "finished in {:.0} s",
        start.elapsed().as_secs_f64()
    ));
    println!("{summary}");
    let mut problems = Vec::new();
    problems.extend(tests.fatal.clone());
    if tests.fatal.is_none() && (tests.failed > 0 || tests.crashed > 0 || !tests.success) {
        problems.push("test failures under Wine".to_string());
    }
    if tests.orphans > 0 {
        problems.push(format!(
            "the tests left {} Windows program(s) running",
            tests.orphans
        ));
    }
    if !examples.failed.is_empty() {
        problems.push(format!(
            "examples failed under Wine: {}",
            examples.failed.join(", ")
        ));
    }
    if problems.is_empty() {
        Ok(summary)
    } else {
        let report = match &tests.report {
            Some(r) => format!("\n\nwhat failed under Wine:\n{r}"),
            None => String::new(),
        };
        Err(format!("{} ({summary}){report}", problems.join("; ")))
    }
}

#[derive(Default)]
struct TestTotals {
    passed: u64,
    failed: u64,
    ignored: u64,
    /// `Running …` lines: test binaries cargo started.
    binaries: u64,
    /// Binaries that started but printed no `test result:` line.
    crashed: u64,
    success: bool,
    /// Windows programs still running after the tests (killed since).
    orphans: usize,
    /// A reason no (further) result can be trusted: build error, timeout.
    fatal: Option<String>,
    /// Each failing test's name and the tail of its output.
    report: Option<String>,
}

#[derive(Default)]
struct ExampleTotals {
    ran: u64,
    failed: Vec<String>,
    skipped: Vec<String>,
}

fn summary_line(t: &TestTotals, e: &ExampleTotals) -> String {
    let plural = |n: u64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    let mut detail = plural(t.binaries, "test binary", "test binaries");
    if t.crashed > 0 {
        detail.push_str(&format!(" ({} without a result)", t.crashed));
    }
    detail.push_str(&format!(", {}", plural(e.ran, "example", "examples")));
    if !e.failed.is_empty() {
        detail.push_str(&format!(" ({} failed)", e.failed.len()));
    }
    if !e.skipped.is_empty() {
        detail.push_str(&format!(", {} skipped", e.skipped.len()));
    }
    format!(
        "windows: {} passed, {} failed, {} ignored ({detail})",
        t.passed, t.failed, t.ignored
    )
}

fn run_tests(
    root: &Path,
    paths: &Paths,
    target_dir: &Path,
    excludes: &[&str],
    test_args: &[String],
) -> Result<TestTotals, String> {
    let timeout = std::env::var("MPROC_WINDOWS_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_TEST_TIMEOUT_SECS);
    let mut cmd = cross_cargo(root, paths, target_dir, "test");
    cmd.args(["--workspace", "--tests", "--no-fail-fast"])
        .args(excludes);
    if !test_args.is_empty() {
        cmd.arg("--").args(test_args);
    }
    say(format!("$ {}", describe(&cmd)));
    let started = Instant::now();
    let before = pids(&wine_processes(&paths.prefix));
    let mut totals = TestTotals::default();
    let mut results = 0u64;
    let mut failures = Failures::default();
    let outcome = stream(&mut cmd, Duration::from_secs(timeout), |is_err, line| {
        if is_err {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
        let plain = strip_ansi(line);
        failures.line(is_err, &plain);
        let plain = plain.trim();
        if is_err && plain.starts_with("Running ") {
            totals.binaries += 1;
        } else if let Some(rest) = plain.strip_prefix("test result: ") {
            results += 1;
            totals.passed += count(rest, "passed");
            totals.failed += count(rest, "failed");
            totals.ignored += count(rest, "ignored");
        } else if !is_err && is_list_summary(plain) {
            // `-- --list`: the count line is the binary's result.
            results += 1;
        }
    })?;
    totals.crashed = totals.binaries.saturating_sub(results);
    let orphans = new_programs(&paths.prefix, &before);
    if !orphans.is_empty() {
        say(format!(
            "the tests left {} Windows program(s) running",
            orphans.len()
        ));
        totals.orphans = orphans.len();
        kill_all(orphans);
    }
    totals.success = outcome.success();
    totals.report = failures.finish();
    say(format!(
        "cargo test step: {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    if outcome.timed_out {
        totals.fatal = Some(format!(
            "`cargo test` under Wine timed out after {timeout} s (MPROC_WINDOWS_TIMEOUT)"
        ));
    } else if !totals.success && totals.binaries == 0 {
        totals.fatal = Some("the workspace did not build for Windows".into());
    }
    Ok(totals)
}

fn run_examples(
    root: &Path,
    paths: &Paths,
    target_dir: &Path,
    excludes: &[&str],
    packages: &[Package],
) -> Result<ExampleTotals, String> {
    let mut totals = ExampleTotals::default();
    let examples: Vec<&Target> = packages
        .iter()
        .filter(|p| !excludes.contains(&p.name.as_str()))
        .flat_map(|p| p.examples.iter())
        .collect();
    if examples.is_empty() {
        say("no examples");
        return Ok(totals);
    }
    let mut cmd = cross_cargo(root, paths, target_dir, "build");
    cmd.args(["--workspace", "--examples"]).args(excludes);
    say(format!("$ {}", describe(&cmd)));
    let outcome = stream(
        &mut cmd,
        Duration::from_secs(DEFAULT_TEST_TIMEOUT_SECS),
        |_, line| eprintln!("{line}"),
    )?;
    if !outcome.success() {
        totals.failed.push("(the examples did not build)".into());
        return Ok(totals);
    }
    let dir = target_dir.join(TARGET).join("debug").join("examples");
    for example in examples {
        if !example.required_features.is_empty() {
            say(format!(
                "example {}: skipped (needs features {:?})",
                example.name, example.required_features
            ));
            totals.skipped.push(example.name.clone());
            continue;
        }
        totals.ran += 1;
        let exe = dir.join(format!("{}.exe", example.name));
        let mut cmd = wine_cmd(paths, "wine");
        cmd.arg(&exe).args(EXAMPLE_ARGS).current_dir(root);
        say(format!(
            "example {}: $ wine {} {}",
            example.name,
            exe.display(),
            EXAMPLE_ARGS.join(" ")
        ));
        let started = Instant::now();
        let before = pids(&wine_processes(&paths.prefix));
        let mut stdout = String::new();
        let outcome = stream(&mut cmd, EXAMPLE_TIMEOUT, |is_err, line| {
            if is_err {
                eprintln!("  | {line}");
            } else {
                println!("  | {line}");
                stdout.push_str(line);
                stdout.push('\n');
            }
        })?;
        let secs = started.elapsed().as_secs_f64();
        let verdict = if outcome.timed_out {
            Err(format!("timed out after {} s", EXAMPLE_TIMEOUT.as_secs()))
        } else if !outcome.success() {
            let hint = match outcome.status.and_then(|s| s.code()) {
                Some(53) => " (53: a DLL is missing; bcryptprimitives.dll? run `cargo xtask windows --setup`)",
                _ => "",
            };
            Err(format!(
                "exited with {}{hint}",
                describe_status(outcome.status)
            ))
        } else {
            check_example_output(&example.name, &stdout)
        };
        let orphans = new_programs(&paths.prefix, &before);
        let verdict = match verdict {
            Ok(()) if !orphans.is_empty() => Err(format!(
                "left {} program(s) running: {}",
                orphans.len(),
                orphans
                    .iter()
                    .map(|p| p.cmdline.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            )),
            v => v,
        };
        kill_all(orphans);
        match verdict {
            Ok(()) => say(format!("example {}: ok in {secs:.1} s", example.name)),
            Err(e) => {
                say(format!(
                    "example {}: FAILED in {secs:.1} s: {e}",
                    example.name
                ));
                totals.failed.push(example.name.clone());
            }
        }
    }
    Ok(totals)
}

/// Checks an example's standard output under Wine with the same checker as
/// the native run; an example that has none is judged by its exit status.
fn check_example_output(name: &str, stdout: &str) -> Result<(), String> {
    if crate::examples::EXAMPLES.contains(&name) {
        crate::examples::check(name, stdout)
    } else {
        say(format!(
            "example {name}: no output checker in examples.rs: exit status only"
        ));
        Ok(())
    }
}

/// `/usr/bin/cargo <subcommand> -Zbuild-std=std,panic_abort --target …` with
/// Debian's toolchain, the MinGW linker and Wine as the runner.
fn cross_cargo(root: &Path, paths: &Paths, target_dir: &Path, subcommand: &str) -> Command {
    let mut cmd = wine_cmd(paths, CARGO);
    cmd.arg(subcommand)
        .args(["-Zbuild-std=std,panic_abort", "--target", TARGET])
        .current_dir(root)
        // rustup's proxies come first on PATH: name Debian's tools exactly.
        .env("RUSTC", "/usr/bin/rustc")
        .env("RUSTDOC", "/usr/bin/rustdoc")
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_TARGET_DIR", target_dir)
        .env("CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER", MINGW_GCC)
        .env("CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER", "wine")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO_BUILD_TARGET");
    if std::io::stderr().is_terminal() {
        cmd.env("CARGO_TERM_COLOR", "always");
    }
    cmd
}

fn workspace_root() -> PathBuf {
    match std::env::var_os("MPROC_XTASK_ROOT") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => crate::util::root(),
    }
}
