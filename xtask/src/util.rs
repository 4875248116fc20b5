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

/// Prints a banner for a step and passes its result through. A failure's
/// banner is the error's first line only: the whole error (with the list
/// of failing tests and the tail of their output) is printed once, by
/// `main`, as the run's last words.
pub fn step(name: &str, result: Result<(), String>) -> Result<(), String> {
    match &result {
        Ok(()) => eprintln!("xtask: {name}: ok"),
        Err(e) => eprintln!("xtask: {name}: FAILED: {}", first_line(e)),
    }
    result
}

/// The first line of `text`, with a note when more follows.
fn first_line(text: &str) -> String {
    match text.split_once('\n') {
        Some((first, _)) => format!("{first} (details at the end)"),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::first_line;

    #[test]
    fn a_failed_steps_banner_holds_only_the_errors_first_line() {
        let report = "`cargo test` failed (exit status: 101)\n\nwhat failed:\nqueue::x";
        let banner = first_line(report);
        assert_eq!(
            banner,
            "`cargo test` failed (exit status: 101) (details at the end)"
        );
        assert!(!banner.contains("queue::x"));
        assert_eq!(first_line("one line"), "one line");
    }
}
