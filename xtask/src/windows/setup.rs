//! `cargo xtask windows --setup`, and the readiness check before a run: the
//! Debian packages (apt-get), the private Wine prefix (`wineboot --init`) and,
//! for Wine < 8.13, the `bcryptprimitives.dll` shim with `ProcessPrng`
//! (built from `win_prng.c` with MinGW).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::prefix::{wine_cmd, wine_version, Paths, PrefixLock};
use super::{is_root, say, write_file, CARGO, MINGW_GCC};
use crate::exec::run_quiet;

const APT_PACKAGES: &[&str] = &[
    "rustc-web",
    "cargo-web",
    "rust-web-src",
    "gcc-mingw-w64-x86-64",
];
/// Installed with `--no-install-recommends` (else: X11, fonts, mono, gecko...).
const APT_WINE_PACKAGES: &[&str] = &["wine", "wine64"];

const PRNG_SOURCE: &str = include_str!("win_prng.c");
/// First Wine release with its own `ProcessPrng` (bcryptprimitives.dll).
const WINE_HAS_PROCESS_PRNG: (u32, u32) = (8, 13);

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
pub(super) fn what_is_missing(paths: &Paths) -> Vec<String> {
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

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0))
}
