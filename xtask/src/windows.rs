//! `cargo xtask windows [--setup]`: the Windows half of the suite, built for
//! `x86_64-pc-windows-gnu` on this Linux machine and run under Wine.
//!
//! - `--setup` installs Debian's Rust (which can build a Windows std with
//!   `-Zbuild-std`), the MinGW linker and Wine; makes a private, headless Wine
//!   prefix at `$HOME/.cache/mproc/wine`; and, for Wine < 8.13, puts in it a
//!   tiny `bcryptprimitives.dll` (source: `win_prng.c`) without which every
//!   Rust >= 1.78 executable fails to load under Wine.
//! - without `--setup`: builds every workspace package but `xtask` (and the
//!   Unix-only ones) for Windows into `target/windows`, runs every test binary
//!   under Wine (libtest's `test result:` lines go through), then every
//!   example with `--fast`, and ends with one line of totals. Arguments after
//!   `--` go to the test binaries (e.g. a test name filter).
//!
//! Environment:
//! - `MPROC_SKIP_WINDOWS=1`: `test-all` skips the Windows suite.
//! - `MPROC_WINDOWS_TIMEOUT=SECONDS`: limit for the whole `cargo test` step
//!   (build included; default 1800).
//! - `MPROC_XTASK_ROOT=DIR`: use DIR as the workspace root instead of this
//!   one. Only for testing this file against a throwaway project.
//!
//! One run holds a lock on the prefix (`$HOME/.cache/mproc/wine.lock`), so two
//! runs on one machine take turns instead of killing each other's wineserver.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, IsTerminal, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Workspace packages that do not build for Windows; excluded when present.
pub const UNIX_ONLY_PACKAGES: &[&str] = &["mproc-bench"];

const USAGE: &str = "usage: cargo xtask windows [--setup] [-- TEST-BINARY-ARGS]";
const TARGET: &str = "x86_64-pc-windows-gnu";
const APT_PACKAGES: &[&str] = &[
    "rustc-web",
    "cargo-web",
    "rust-web-src",
    "gcc-mingw-w64-x86-64",
];
/// Installed with `--no-install-recommends` (else: X11, fonts, mono, gecko...).
const APT_WINE_PACKAGES: &[&str] = &["wine", "wine64"];
const MINGW_GCC: &str = "x86_64-w64-mingw32-gcc";
const CARGO: &str = "/usr/bin/cargo";
const EXAMPLE_ARGS: &[&str] = &["--fast"];
const EXAMPLE_TIMEOUT: Duration = Duration::from_secs(120);
const DEFAULT_TEST_TIMEOUT_SECS: u64 = 1800;
/// How long output may keep coming after a process exited (a leftover
/// grandchild can hold the pipe open; the final `wineserver -k` ends it).
const LINGER: Duration = Duration::from_secs(5);
const PRNG_SOURCE: &str = include_str!("win_prng.c");
/// First Wine release with its own `ProcessPrng` (bcryptprimitives.dll).
const WINE_HAS_PROCESS_PRNG: (u32, u32) = (8, 13);

fn say(msg: impl AsRef<str>) {
    eprintln!("xtask windows: {}", msg.as_ref());
}

// ---------------------------------------------------------------- setup --

pub fn setup() -> Result<(), String> {
    let start = Instant::now();
    let missing = missing_packages();
    if missing.is_empty() {
        say(format!("packages present: {}", all_packages().join(" ")));
    } else {
        install_packages(&missing)?;
    }
    check_tools()?;
    let paths = Paths::new()?;
    let _lock = PrefixLock::acquire(&paths)?;
    ensure_prefix(&paths)?;
    ensure_prng_dll(&paths)?;
    say(format!(
        "setup done in {:.1} s",
        start.elapsed().as_secs_f64()
    ));
    Ok(())
}

pub fn ensure_setup() -> Result<bool, String> {
    if std::env::var("MPROC_SKIP_WINDOWS").as_deref() == Ok("1") {
        say("MPROC_SKIP_WINDOWS=1: not running the Windows suite");
        return Ok(false);
    }
    let paths = Paths::new()?;
    let missing = what_is_missing(&paths);
    if missing.is_empty() {
        return Ok(true);
    }
    if !missing_packages().is_empty() {
        if !is_root() {
            return Err(format!(
                "the Windows toolchain is not installed ({}) and installing it needs root: \
                 run `cargo xtask windows --setup` as root (or set MPROC_SKIP_WINDOWS=1)",
                missing.join("; ")
            ));
        }
        if find_in_path("apt-get").is_none() {
            return Err(format!(
                "the Windows toolchain is not installed ({}) and there is no apt-get here \
                 (the setup uses Debian's packages)",
                missing.join("; ")
            ));
        }
    }
    say(format!(
        "not set up yet ({}): running the setup",
        missing.join("; ")
    ));
    setup()?;
    Ok(true)
}

fn all_packages() -> Vec<&'static str> {
    APT_PACKAGES
        .iter()
        .chain(APT_WINE_PACKAGES)
        .copied()
        .collect()
}

/// A file each package installs; a package whose file is absent counts as
/// missing even when dpkg says it is installed.
fn key_file(package: &str) -> Option<&'static str> {
    Some(match package {
        "rustc-web" => "/usr/bin/rustc",
        "cargo-web" => CARGO,
        "rust-web-src" => "/usr/lib/rustlib/src/rust/library",
        "gcc-mingw-w64-x86-64" => "/usr/bin/x86_64-w64-mingw32-gcc",
        "wine" => "/usr/bin/wine",
        _ => return None,
    })
}

fn missing_packages() -> Vec<&'static str> {
    let packages = all_packages();
    // `dpkg-query` prints one line per known package; unknown ones only on stderr.
    let installed: Option<Vec<String>> = Command::new("dpkg-query")
        .arg("-W")
        .arg("-f=${Package} ${db:Status-Abbrev}\n")
        .args(&packages)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .map(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| {
                    let (name, status) = l.split_once(' ')?;
                    status.starts_with("ii").then(|| name.to_string())
                })
                .collect()
        });
    packages
        .into_iter()
        .filter(|p| {
            let by_dpkg = installed
                .as_ref()
                .is_some_and(|i| !i.iter().any(|n| n == p));
            let by_file = key_file(p).is_some_and(|f| !Path::new(f).exists());
            by_dpkg || by_file
        })
        .collect()
}

fn install_packages(missing: &[&str]) -> Result<(), String> {
    say(format!("missing packages: {}", missing.join(" ")));
    if !is_root() {
        return Err("installing packages needs root".into());
    }
    if find_in_path("apt-get").is_none() {
        return Err("no apt-get on this machine (the setup uses Debian's packages)".into());
    }
    apt_get(&["update", "-q"])?;
    let plain: Vec<&str> = missing
        .iter()
        .copied()
        .filter(|p| APT_PACKAGES.contains(p))
        .collect();
    if !plain.is_empty() {
        apt_get(&[&["install", "-y", "-q"][..], &plain].concat())?;
    }
    let wine: Vec<&str> = missing
        .iter()
        .copied()
        .filter(|p| APT_WINE_PACKAGES.contains(p))
        .collect();
    if !wine.is_empty() {
        apt_get(
            &[
                &["install", "-y", "-q", "--no-install-recommends"][..],
                &wine,
            ]
            .concat(),
        )?;
    }
    let still = missing_packages();
    if !still.is_empty() {
        return Err(format!("still missing after apt-get: {}", still.join(" ")));
    }
    Ok(())
}

fn apt_get(args: &[&str]) -> Result<(), String> {
    say(format!("$ apt-get {}", args.join(" ")));
    let status = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run apt-get: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`apt-get {}` failed: {status}", args.join(" ")))
    }
}

fn check_tools() -> Result<(), String> {
    for tool in ["wine", "wineserver", "wineboot", MINGW_GCC] {
        if find_in_path(tool).is_none() {
            return Err(format!("`{tool}` is not on PATH"));
        }
    }
    Ok(())
}

/// Everything `run` needs, as short phrases; empty when ready.
fn what_is_missing(paths: &Paths) -> Vec<String> {
    let mut missing: Vec<String> = missing_packages()
        .iter()
        .map(|p| format!("package {p}"))
        .collect();
    if !missing.is_empty() {
        return missing;
    }
    if !paths.stamp().exists() {
        missing.push(format!("Wine prefix {}", paths.prefix.display()));
    } else if needs_prng_dll() && !prng_dll_installed(paths) {
        missing.push("bcryptprimitives.dll in the Wine prefix".into());
    }
    missing
}

fn ensure_prefix(paths: &Paths) -> Result<(), String> {
    if paths.stamp().exists() {
        say(format!("Wine prefix ready: {}", paths.prefix.display()));
        return Ok(());
    }
    if paths.prefix.exists() {
        say(format!(
            "removing incomplete Wine prefix {}",
            paths.prefix.display()
        ));
        std::fs::remove_dir_all(&paths.prefix)
            .map_err(|e| format!("cannot remove {}: {e}", paths.prefix.display()))?;
    }
    std::fs::create_dir_all(&paths.cache)
        .map_err(|e| format!("cannot create {}: {e}", paths.cache.display()))?;
    say(format!(
        "$ wineboot --init   (WINEPREFIX={})",
        paths.prefix.display()
    ));
    let start = Instant::now();
    // Detached stdio: wineboot starts wineserver and services that would
    // otherwise inherit (and hold open) our pipes.
    run_quiet(
        wine_cmd(paths, "wineboot").arg("--init"),
        Duration::from_secs(300),
    )?;
    // The server writes the registry when it exits.
    run_quiet(
        wine_cmd(paths, "wineserver").arg("-w"),
        Duration::from_secs(120),
    )?;
    if !paths.prefix.join("system.reg").exists() {
        return Err(format!(
            "wineboot --init did not create {}",
            paths.prefix.display()
        ));
    }
    write_file(&paths.stamp(), wine_version().as_bytes())?;
    say(format!(
        "Wine prefix made in {:.1} s",
        start.elapsed().as_secs_f64()
    ));
    Ok(())
}

fn ensure_prng_dll(paths: &Paths) -> Result<(), String> {
    if !needs_prng_dll() {
        say(format!(
            "{} ships ProcessPrng itself: no DLL needed",
            wine_version()
        ));
        return Ok(());
    }
    if prng_dll_installed(paths) {
        say(format!(
            "bcryptprimitives.dll (ProcessPrng) installed: {}",
            paths.dll_dest().display()
        ));
        return Ok(());
    }
    let dir = paths.cache.join("prng");
    let source = dir.join("win_prng.c");
    let built = dir.join("bcryptprimitives.dll");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    write_file(&source, PRNG_SOURCE.as_bytes())?;
    let mut gcc = Command::new(MINGW_GCC);
    gcc.args(["-shared", "-O2", "-s", "-o"])
        .arg(&built)
        .arg(&source)
        .arg("-ladvapi32");
    say(format!(
        "$ {MINGW_GCC} -shared -O2 -s -o {} {} -ladvapi32",
        built.display(),
        source.display()
    ));
    let status = gcc
        .stdin(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run {MINGW_GCC}: {e}"))?;
    if !status.success() {
        return Err(format!("{MINGW_GCC} failed: {status}"));
    }
    std::fs::copy(&built, paths.dll_dest())
        .map_err(|e| format!("cannot copy the DLL to {}: {e}", paths.dll_dest().display()))?;
    say(format!("installed {}", paths.dll_dest().display()));
    Ok(())
}

fn prng_dll_installed(paths: &Paths) -> bool {
    let dir = paths.cache.join("prng");
    let same_source =
        std::fs::read(dir.join("win_prng.c")).ok().as_deref() == Some(PRNG_SOURCE.as_bytes());
    let built = std::fs::read(dir.join("bcryptprimitives.dll")).ok();
    same_source && built.is_some() && built == std::fs::read(paths.dll_dest()).ok()
}

fn wine_version() -> String {
    Command::new("wine")
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "wine (unknown version)".into())
}

/// `wine-8.0 (Debian 8.0~repack-4)` -> (8, 0); unknown versions get the DLL.
fn needs_prng_dll() -> bool {
    let version = wine_version();
    let mut numbers = version
        .trim_start_matches("wine-")
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().ok());
    match (numbers.next().flatten(), numbers.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) < WINE_HAS_PROCESS_PRNG,
        _ => true,
    }
}

// ------------------------------------------------------------------ run --

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
        Err(format!("{} ({summary})", problems.join("; ")))
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
    let outcome = stream(&mut cmd, Duration::from_secs(timeout), |is_err, line| {
        if is_err {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
        let plain = strip_ansi(line);
        let plain = plain.trim();
        if is_err && plain.starts_with("Running ") {
            totals.binaries += 1;
        } else if let Some(rest) = plain.strip_prefix("test result: ") {
            results += 1;
            totals.passed += count(rest, "passed");
            totals.failed += count(rest, "failed");
            totals.ignored += count(rest, "ignored");
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

/// `5 passed; 0 failed; 2 ignored; ...` -> the number before `word`.
fn count(result: &str, word: &str) -> u64 {
    result
        .split([';', '.', ','])
        .filter_map(|part| {
            let mut it = part.split_whitespace();
            let n = it.next()?.parse::<u64>().ok()?;
            (it.next()? == word).then_some(n)
        })
        .sum()
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

/// A command with the headless Wine environment of our private prefix.
fn wine_cmd(paths: &Paths, program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new(program);
    cmd.env("WINEPREFIX", &paths.prefix)
        .env("WINEDEBUG", "-all")
        // Never offer to download Mono or Gecko.
        .env("WINEDLLOVERRIDES", "mscoree,mshtml=")
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .stdin(Stdio::null());
    cmd
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

fn describe_status(status: Option<ExitStatus>) -> String {
    match status {
        Some(s) => s.to_string(),
        None => "no status".into(),
    }
}

fn workspace_root() -> PathBuf {
    match std::env::var_os("MPROC_XTASK_ROOT") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => crate::util::root(),
    }
}

// ------------------------------------------------------------ wineserver --

/// One persistent wineserver for the whole run, killed (with every Windows
/// process it serves) on `stop` or drop, so a failure leaves nothing behind.
struct WineServer {
    paths: Paths,
    stopped: bool,
}

impl WineServer {
    fn start(paths: &Paths) -> Result<Self, String> {
        // We hold the prefix lock: a server still up comes from an interrupted run.
        let _ = run_quiet(
            wine_cmd(paths, "wineserver").arg("-k"),
            Duration::from_secs(30),
        );
        let started = Instant::now();
        run_quiet(
            wine_cmd(paths, "wineserver").arg("-p"),
            Duration::from_secs(30),
        )?;
        let server = WineServer {
            paths: paths.clone(),
            stopped: false,
        };
        // Start Wine's own services now, detached from any pipe of ours.
        run_quiet(&mut wine_cmd(paths, "wineboot"), Duration::from_secs(120))?;
        say(format!(
            "wineserver up in {:.1} s",
            started.elapsed().as_secs_f64()
        ));
        Ok(server)
    }

    fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let _ = run_quiet(
            wine_cmd(&self.paths, "wineserver").arg("-k"),
            Duration::from_secs(30),
        );
        let _ = run_quiet(
            wine_cmd(&self.paths, "wineserver").arg("-w"),
            Duration::from_secs(30),
        );
        let still = kill_all(wine_processes(&self.paths.prefix));
        if still.is_empty() {
            say("wineserver stopped; no Wine process left");
        } else {
            say(format!("WARNING: Wine processes still running: {still:?}"));
        }
    }
}

impl Drop for WineServer {
    fn drop(&mut self) {
        self.stop();
    }
}

#[derive(Debug)]
struct WineProcess {
    pid: u32,
    cmdline: String,
}

impl WineProcess {
    /// Wine's own: the server and the services it starts from C:\windows.
    fn is_wine_itself(&self) -> bool {
        let cmd = self.cmdline.to_ascii_lowercase();
        cmd.starts_with("c:\\windows\\") || cmd.contains("wineserver")
    }
}

/// Live processes of our prefix: Wine programs and servers whose environment
/// names it, and the wineserver whose working directory is its server dir
/// (`…/server-<dev>-<inode of the prefix>`).
fn wine_processes(prefix: &Path) -> Vec<WineProcess> {
    let me = std::process::id();
    let wanted = [
        b"WINEPREFIX=".as_slice(),
        prefix.as_os_str().as_encoded_bytes(),
    ]
    .concat();
    let server_dir = std::fs::metadata(prefix)
        .ok()
        .map(|m| format!("server-{:x}-{:x}", m.dev(), m.ino()));
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let dir = entry.path();
        // Zombies have no exe link: they are not running.
        let Ok(exe) = std::fs::read_link(dir.join("exe")) else {
            continue;
        };
        // Windows programs run as /usr/lib/wine/wine64 (their comm is a
        // thread name, e.g. `main` for Rust programs).
        if !exe.to_string_lossy().contains("wine") {
            continue;
        }
        let environ = std::fs::read(dir.join("environ")).unwrap_or_default();
        let by_env = environ.split(|&b| b == 0).any(|v| v == wanted.as_slice());
        let cwd = std::fs::read_link(dir.join("cwd")).ok();
        let by_cwd = cwd
            .as_ref()
            .and_then(|c| c.file_name())
            .is_some_and(|n| Some(n.to_string_lossy().as_ref()) == server_dir.as_deref());
        if by_env || by_cwd {
            let raw = std::fs::read(dir.join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&raw)
                .replace('\0', " ")
                .trim()
                .to_string();
            found.push(WineProcess { pid, cmdline });
        }
    }
    found
}

/// SIGKILLs each process and waits (up to 2 s) for them to go; returns
/// those still there.
fn kill_all(processes: Vec<WineProcess>) -> Vec<WineProcess> {
    if processes.is_empty() {
        return processes;
    }
    for p in &processes {
        say(format!(
            "killing leftover Wine process {} ({})",
            p.pid, p.cmdline
        ));
        let _ = Command::new("kill")
            .args(["-KILL", &p.pid.to_string()])
            .stderr(Stdio::null())
            .status();
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let alive: Vec<WineProcess> = processes
            .iter()
            .filter(|p| std::fs::read_link(format!("/proc/{}/exe", p.pid)).is_ok())
            .map(|p| WineProcess {
                pid: p.pid,
                cmdline: p.cmdline.clone(),
            })
            .collect();
        if alive.is_empty() || Instant::now() > deadline {
            return alive;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Programs (not Wine's own services) that appeared since `before` and are
/// still running after a grace period: orphans a test or example left.
fn new_programs(prefix: &Path, before: &[u32]) -> Vec<WineProcess> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let new: Vec<WineProcess> = wine_processes(prefix)
            .into_iter()
            .filter(|p| !p.is_wine_itself() && !before.contains(&p.pid))
            .collect();
        if new.is_empty() || Instant::now() > deadline {
            return new;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn pids(processes: &[WineProcess]) -> Vec<u32> {
    processes.iter().map(|p| p.pid).collect()
}

// ------------------------------------------------------------- processes --

struct Outcome {
    status: Option<ExitStatus>,
    timed_out: bool,
}

impl Outcome {
    fn success(&self) -> bool {
        !self.timed_out && self.status.is_some_and(|s| s.success())
    }
}

/// Runs `cmd`, handing each line of its stdout (`false`) and stderr (`true`)
/// to `on_line` as it comes; kills it after `timeout`.
fn stream(
    cmd: &mut Command,
    timeout: Duration,
    mut on_line: impl FnMut(bool, &str),
) -> Result<Outcome, String> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", describe(cmd)))?;
    let (tx, rx) = mpsc::channel::<Option<(bool, String)>>();
    let out: Box<dyn Read + Send> = Box::new(child.stdout.take().expect("piped stdout"));
    let err: Box<dyn Read + Send> = Box::new(child.stderr.take().expect("piped stderr"));
    for (is_err, pipe) in [(false, out), (true, err)] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(pipe);
            let mut buf = Vec::new();
            while matches!(reader.read_until(b'\n', &mut buf), Ok(n) if n > 0) {
                let line = String::from_utf8_lossy(&buf);
                let line = line.trim_end_matches(['\n', '\r']).to_string();
                if tx.send(Some((is_err, line))).is_err() {
                    return;
                }
                buf.clear();
            }
            let _ = tx.send(None);
        });
    }
    drop(tx);
    let started = Instant::now();
    let mut open = 2;
    let mut status = None;
    let mut exited_at: Option<Instant> = None;
    let mut timed_out = false;
    loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(Some((is_err, line))) => on_line(is_err, &line),
            Ok(None) => open -= 1,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => open = 0,
        }
        if status.is_none() {
            if let Some(s) = child.try_wait().map_err(|e| format!("wait: {e}"))? {
                status = Some(s);
            } else if started.elapsed() > timeout {
                let _ = child.kill();
                status = Some(child.wait().map_err(|e| format!("wait: {e}"))?);
                timed_out = true;
            }
            if status.is_some() {
                exited_at = Some(Instant::now());
            }
        }
        if open == 0 && status.is_some() {
            break;
        }
        if exited_at.is_some_and(|t| t.elapsed() > LINGER) {
            say("(output still held open by a leftover process; moving on)");
            break;
        }
    }
    let _ = std::io::stdout().flush();
    Ok(Outcome { status, timed_out })
}

/// Runs a Wine helper with no pipe attached (a wineserver or a Wine service
/// that inherits a pipe keeps it open long after the helper exits).
fn run_quiet(cmd: &mut Command, timeout: Duration) -> Result<(), String> {
    let mut child: Child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", describe(cmd)))?;
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().map_err(|e| format!("wait: {e}"))? {
            return if status.success() {
                Ok(())
            } else {
                Err(format!("`{}` failed: {status}", describe(cmd)))
            };
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "`{}` timed out after {} s",
                describe(cmd),
                timeout.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ params final-byte(@..~)
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0))
}

fn is_root() -> bool {
    // Effective uid: second field of `Uid:` in /proc/self/status.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("Uid:"))?;
            Some(line.split_whitespace().nth(2)? == "0")
        })
        .unwrap_or(false)
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

// ------------------------------------------------------------ the prefix --

#[derive(Clone)]
struct Paths {
    /// `$HOME/.cache/mproc`
    cache: PathBuf,
    /// `$HOME/.cache/mproc/wine`: fixed, so it does not move with the target dir.
    prefix: PathBuf,
}

impl Paths {
    fn new() -> Result<Self, String> {
        let home = match std::env::var_os("HOME") {
            Some(h) if !h.is_empty() => PathBuf::from(h),
            _ if is_root() => PathBuf::from("/root"),
            _ => return Err("HOME is not set: cannot place the Wine prefix".into()),
        };
        let cache = home.join(".cache").join("mproc");
        Ok(Paths {
            prefix: cache.join("wine"),
            cache,
        })
    }

    /// Written once `wineboot --init` has finished.
    fn stamp(&self) -> PathBuf {
        self.prefix.join(".mproc-ready")
    }

    fn dll_dest(&self) -> PathBuf {
        self.prefix
            .join("drive_c/windows/system32/bcryptprimitives.dll")
    }
}

/// `$HOME/.cache/mproc/wine.lock/pid`, made by an atomic rename; a lock whose
/// process is gone is taken over.
struct PrefixLock {
    dir: PathBuf,
}

impl PrefixLock {
    fn acquire(paths: &Paths) -> Result<Self, String> {
        std::fs::create_dir_all(&paths.cache)
            .map_err(|e| format!("cannot create {}: {e}", paths.cache.display()))?;
        let dir = paths.cache.join("wine.lock");
        let me = std::process::id();
        let tmp = paths.cache.join(format!("wine.lock.{me}"));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir(&tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
        write_file(&tmp.join("pid"), me.to_string().as_bytes())?;
        let started = Instant::now();
        let mut told = false;
        loop {
            if std::fs::rename(&tmp, &dir).is_ok() {
                return Ok(PrefixLock { dir });
            }
            let holder = std::fs::read_to_string(dir.join("pid"))
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok());
            match holder {
                Some(pid) if pid != me && Path::new(&format!("/proc/{pid}")).exists() => {
                    if !told {
                        say(format!(
                            "waiting for process {pid}, which is using the Wine prefix"
                        ));
                        told = true;
                    }
                    if started.elapsed() > Duration::from_secs(3600) {
                        let _ = std::fs::remove_dir_all(&tmp);
                        return Err(format!(
                            "the Wine prefix stayed locked by process {pid} for an hour"
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
                // Gone (or being written this instant): a stale lock is removed.
                Some(_) => {
                    let _ = std::fs::remove_dir_all(&dir);
                }
                None => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}

impl Drop for PrefixLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ------------------------------------------------------ cargo metadata --

struct Package {
    name: String,
    examples: Vec<Target>,
}

struct Target {
    name: String,
    required_features: Vec<String>,
}

/// The workspace's packages and their examples, from `cargo metadata --no-deps`.
fn workspace_packages(
    root: &Path,
    paths: &Paths,
    target_dir: &Path,
) -> Result<Vec<Package>, String> {
    let mut cmd = wine_cmd(paths, CARGO);
    cmd.args(["metadata", "--no-deps", "--format-version", "1"])
        .current_dir(root)
        .env("RUSTC", "/usr/bin/rustc")
        .env("CARGO_TARGET_DIR", target_dir)
        .stderr(Stdio::inherit());
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run cargo metadata: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`cargo metadata` failed in {}: {}",
            root.display(),
            out.status
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let meta = json::parse(&text).map_err(|e| format!("cannot read cargo metadata: {e}"))?;
    let strings = |v: Option<&json::Value>| -> Vec<String> {
        v.map(|v| {
            v.items()
                .iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
    };
    let members = strings(meta.get("workspace_members"));
    let mut packages = Vec::new();
    for p in meta.get("packages").map(|v| v.items()).unwrap_or_default() {
        let id = p.get("id").and_then(|v| v.as_str()).unwrap_or_default();
        if !members.iter().any(|m| m == id) {
            continue;
        }
        let examples = p
            .get("targets")
            .map(|v| v.items())
            .unwrap_or_default()
            .iter()
            .filter(|t| strings(t.get("kind")).iter().any(|k| k == "example"))
            .map(|t| Target {
                name: t
                    .get("name")
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_string(),
                required_features: strings(t.get("required-features")),
            })
            .collect();
        let name = p
            .get("name")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string();
        packages.push(Package { name, examples });
    }
    Ok(packages)
}

/// Just enough JSON to read `cargo metadata`.
mod json {
    pub enum Value {
        /// A number, `true`, `false` or `null`: not needed here.
        Scalar,
        Str(String),
        Arr(Vec<Value>),
        Obj(Vec<(String, Value)>),
    }

    impl Value {
        pub fn get(&self, key: &str) -> Option<&Value> {
            match self {
                Value::Obj(fields) => fields.iter().find(|(k, _)| k == key).map(|(_, v)| v),
                _ => None,
            }
        }

        pub fn items(&self) -> &[Value] {
            match self {
                Value::Arr(items) => items,
                _ => &[],
            }
        }

        pub fn as_str(&self) -> Option<&str> {
            match self {
                Value::Str(s) => Some(s),
                _ => None,
            }
        }
    }

    pub fn parse(text: &str) -> Result<Value, String> {
        let mut p = Parser {
            s: text.as_bytes(),
            i: 0,
        };
        let v = p.value()?;
        p.ws();
        if p.i != p.s.len() {
            return Err(format!("trailing data at byte {}", p.i));
        }
        Ok(v)
    }

    struct Parser<'a> {
        s: &'a [u8],
        i: usize,
    }

    impl Parser<'_> {
        fn ws(&mut self) {
            while self.s.get(self.i).is_some_and(|b| b.is_ascii_whitespace()) {
                self.i += 1;
            }
        }

        fn eat(&mut self, b: u8) -> Result<(), String> {
            self.ws();
            if self.s.get(self.i) == Some(&b) {
                self.i += 1;
                Ok(())
            } else {
                Err(format!("expected `{}` at byte {}", b as char, self.i))
            }
        }

        fn value(&mut self) -> Result<Value, String> {
            self.ws();
            match self.s.get(self.i) {
                Some(b'{') => {
                    self.i += 1;
                    let mut fields = Vec::new();
                    self.ws();
                    if self.s.get(self.i) == Some(&b'}') {
                        self.i += 1;
                        return Ok(Value::Obj(fields));
                    }
                    loop {
                        self.ws();
                        let key = self.string()?;
                        self.eat(b':')?;
                        fields.push((key, self.value()?));
                        self.ws();
                        match self.s.get(self.i) {
                            Some(b',') => self.i += 1,
                            Some(b'}') => {
                                self.i += 1;
                                return Ok(Value::Obj(fields));
                            }
                            _ => return Err(format!("expected `,` or `}}` at byte {}", self.i)),
                        }
                    }
                }
                Some(b'[') => {
                    self.i += 1;
                    let mut items = Vec::new();
                    self.ws();
                    if self.s.get(self.i) == Some(&b']') {
                        self.i += 1;
                        return Ok(Value::Arr(items));
                    }
                    loop {
                        items.push(self.value()?);
                        self.ws();
                        match self.s.get(self.i) {
                            Some(b',') => self.i += 1,
                            Some(b']') => {
                                self.i += 1;
                                return Ok(Value::Arr(items));
                            }
                            _ => return Err(format!("expected `,` or `]` at byte {}", self.i)),
                        }
                    }
                }
                Some(b'"') => Ok(Value::Str(self.string()?)),
                Some(b't') => self.word("true"),
                Some(b'f') => self.word("false"),
                Some(b'n') => self.word("null"),
                Some(_) => {
                    let start = self.i;
                    while self
                        .s
                        .get(self.i)
                        .is_some_and(|b| b"+-.eE0123456789".contains(b))
                    {
                        self.i += 1;
                    }
                    let text = std::str::from_utf8(&self.s[start..self.i]).unwrap_or("");
                    text.parse::<f64>()
                        .map(|_| Value::Scalar)
                        .map_err(|_| format!("bad value at byte {start}"))
                }
                None => Err("unexpected end".into()),
            }
        }

        fn word(&mut self, word: &str) -> Result<Value, String> {
            if self.s[self.i..].starts_with(word.as_bytes()) {
                self.i += word.len();
                Ok(Value::Scalar)
            } else {
                Err(format!("bad literal at byte {}", self.i))
            }
        }

        fn string(&mut self) -> Result<String, String> {
            self.eat(b'"')?;
            let mut out: Vec<u8> = Vec::new();
            loop {
                let b = *self.s.get(self.i).ok_or("unterminated string")?;
                self.i += 1;
                match b {
                    b'"' => return String::from_utf8(out).map_err(|e| e.to_string()),
                    b'\\' => {
                        let e = *self.s.get(self.i).ok_or("unterminated escape")?;
                        self.i += 1;
                        let c = match e {
                            b'n' => '\n',
                            b't' => '\t',
                            b'r' => '\r',
                            b'b' => '\u{8}',
                            b'f' => '\u{c}',
                            b'u' => {
                                let mut code = self.hex4()?;
                                if (0xD800..0xDC00).contains(&code)
                                    && self.s[self.i..].starts_with(b"\\u")
                                {
                                    self.i += 2;
                                    let low = self.hex4()?;
                                    code = 0x10000
                                        + ((code - 0xD800) << 10)
                                        + (low.wrapping_sub(0xDC00) & 0x3FF);
                                }
                                char::from_u32(code).unwrap_or('\u{FFFD}')
                            }
                            other => other as char,
                        };
                        out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                    }
                    _ => out.push(b),
                }
            }
        }

        fn hex4(&mut self) -> Result<u32, String> {
            let digits = self.s.get(self.i..self.i + 4).ok_or("short \\u escape")?;
            self.i += 4;
            let text = std::str::from_utf8(digits).map_err(|e| e.to_string())?;
            u32::from_str_radix(text, 16).map_err(|e| e.to_string())
        }
    }
}
