//! The workspace's packages and their examples, from `cargo metadata`.

use std::path::Path;
use std::process::Stdio;

use super::json;
use super::prefix::{wine_cmd, Paths};
use super::CARGO;

pub(super) struct Package {
    pub(super) name: String,
    pub(super) examples: Vec<Target>,
}

pub(super) struct Target {
    pub(super) name: String,
    pub(super) required_features: Vec<String>,
}

/// The workspace's packages and their examples, from `cargo metadata --no-deps`.
pub(super) fn workspace_packages(
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
