//! Small helpers for running commands and reporting steps.

use std::path::PathBuf;
use std::process::Command;

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// Runs `cargo <args>` in the workspace root, inheriting stdio.
pub fn cargo(args: &[&str]) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .args(args)
        .current_dir(root())
        .status()
        .map_err(|e| format!("cannot run {cargo}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`cargo {}` failed: {status}", args.join(" ")))
    }
}

/// Prints a banner for a step and passes its result through.
pub fn step(name: &str, result: Result<(), String>) -> Result<(), String> {
    match &result {
        Ok(()) => eprintln!("xtask: {name}: ok"),
        Err(e) => eprintln!("xtask: {name}: FAILED: {e}"),
    }
    result
}
