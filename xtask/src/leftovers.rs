//! After the suite, nothing mproc created may be left in the temp
//! directory: runtime directories of processes that have ended
//! (`mproc-<pid>-<random>`), or the tests' own scratch files (`mproc-hb-*`,
//! `mproc-test-*`).

use std::collections::BTreeSet;

/// The `mproc-*` names in the temp directory now.
pub fn snapshot() -> BTreeSet<String> {
    std::fs::read_dir(std::env::temp_dir())
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("mproc-"))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a process with this pid runs (Linux: /proc).
fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Fails when entries appeared since `before` whose owner has ended.
pub fn check(before: &BTreeSet<String>) -> Result<(), String> {
    let leaked: Vec<String> = snapshot()
        .difference(before)
        .filter(|name| {
            let rest = &name["mproc-".len()..];
            match rest
                .split_once('-')
                .and_then(|(pid, _)| pid.parse::<u32>().ok())
            {
                Some(pid) => !alive(pid),
                None => true,
            }
        })
        .cloned()
        .collect();
    if leaked.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "left in {}: {}",
            std::env::temp_dir().display(),
            leaked.join(", ")
        ))
    }
}
