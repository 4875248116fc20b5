//! The workspace's packages and their examples, from `cargo metadata`.

use std::path::Path;
use std::process::Stdio;

use serde::Deserialize;

use super::prefix::{wine_cmd, Paths};
use super::CARGO;

pub(super) struct Package {
    pub(super) name: String,
    pub(super) examples: Vec<Target>,
}

#[derive(Debug, PartialEq)]
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
    parse(&out.stdout)
}

/// The part of `cargo metadata --format-version 1` read here; serde skips
/// every other field.
#[derive(Deserialize)]
struct Metadata {
    packages: Vec<MetaPackage>,
    workspace_members: Vec<String>,
}

#[derive(Deserialize)]
struct MetaPackage {
    id: String,
    name: String,
    targets: Vec<MetaTarget>,
}

#[derive(Deserialize)]
struct MetaTarget {
    name: String,
    kind: Vec<String>,
    #[serde(rename = "required-features", default)]
    required_features: Vec<String>,
}

/// The workspace members (in `cargo metadata`'s order) and their examples,
/// from `cargo metadata --format-version 1` output.
fn parse(json: &[u8]) -> Result<Vec<Package>, String> {
    let meta: Metadata =
        serde_json::from_slice(json).map_err(|e| format!("cannot read cargo metadata: {e}"))?;
    Ok(meta
        .packages
        .into_iter()
        .filter(|p| meta.workspace_members.contains(&p.id))
        .map(|p| Package {
            name: p.name,
            examples: p
                .targets
                .into_iter()
                .filter(|t| t.kind.iter().any(|k| k == "example"))
                .map(|t| Target {
                    name: t.name,
                    required_features: t.required_features,
                })
                .collect(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A trimmed `cargo metadata` answer: one member with an example that
    /// needs a feature, a test and a lib; one package that is not a member
    /// (a path dependency outside the workspace); fields this reader skips.
    const SAMPLE: &str = r#"{
      "packages": [
        {"name": "app", "version": "0.1.0", "id": "path+file:///w#app@0.1.0",
         "dependencies": [], "features": {"fast": []},
         "targets": [
           {"kind": ["lib"], "crate_types": ["lib"], "name": "app", "src_path": "/w/src/lib.rs",
            "edition": "2021", "doc": true, "doctest": true, "test": true},
           {"kind": ["example"], "crate_types": ["bin"], "name": "demo",
            "src_path": "/w/examples/demo.rs", "required-features": ["fast"]},
           {"kind": ["example"], "crate_types": ["bin"], "name": "plain \"quoted\" \u00e9",
            "src_path": "/w/examples/plain.rs"},
           {"kind": ["test"], "crate_types": ["bin"], "name": "it", "src_path": "/w/tests/it.rs"}
         ],
         "rust_version": null, "metadata": null, "publish": []},
        {"name": "outside", "version": "1.0.0", "id": "path+file:///o#outside@1.0.0",
         "targets": [{"kind": ["example"], "name": "theirs", "src_path": "/o/examples/theirs.rs"}]}
      ],
      "workspace_members": ["path+file:///w#app@0.1.0"],
      "workspace_default_members": ["path+file:///w#app@0.1.0"],
      "resolve": null, "target_directory": "/w/target", "version": 1,
      "workspace_root": "/w", "metadata": null
    }"#;

    #[test]
    fn members_and_their_examples_only() {
        let packages = parse(SAMPLE.as_bytes()).expect("sample parses");
        assert_eq!(packages.len(), 1, "`outside` is not a member");
        assert_eq!(packages[0].name, "app");
        assert_eq!(
            packages[0].examples,
            vec![
                Target {
                    name: "demo".into(),
                    required_features: vec!["fast".into()],
                },
                Target {
                    name: "plain \"quoted\" é".into(),
                    required_features: vec![],
                },
            ]
        );
    }

    #[test]
    fn broken_or_misshapen_output_is_an_error() {
        for bad in [
            "",
            "{",
            "[]",
            r#"{"packages": []}"#,
            r#"{"packages": [{"id": "x"}], "workspace_members": []}"#,
            "error: could not find `Cargo.toml`",
        ] {
            let err = parse(bad.as_bytes()).err();
            assert!(
                err.as_deref()
                    .is_some_and(|e| e.starts_with("cannot read cargo metadata")),
                "{bad:?} gave {err:?}"
            );
        }
    }

    /// This workspace's own `cargo metadata` (the native cargo running the
    /// test): the packages `cargo xtask windows` builds, and the examples
    /// `cargo xtask examples` checks (crate::examples::EXAMPLES).
    #[test]
    fn this_workspace() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = std::process::Command::new(cargo)
            .args(["metadata", "--no-deps", "--format-version", "1"])
            .current_dir(crate::util::root())
            .output()
            .expect("cargo metadata runs");
        assert!(out.status.success(), "{out:?}");
        let packages = parse(&out.stdout).expect("cargo metadata parses");
        let names: Vec<&str> = packages.iter().map(|p| p.name.as_str()).collect();
        for want in [
            "mproc",
            "mproc-ipc",
            "mproc-macros",
            "mproc-examples",
            "xtask",
        ] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
        assert!(
            !names.contains(&"serde") && !names.contains(&"mproc-fuzz"),
            "not members: {names:?}"
        );
        let examples = &packages
            .iter()
            .find(|p| p.name == "mproc-examples")
            .expect("the root package")
            .examples;
        for name in crate::examples::EXAMPLES {
            assert!(
                examples.iter().any(|t| t.name == *name),
                "example {name} missing from {examples:?}"
            );
        }
        assert!(
            packages
                .iter()
                .filter(|p| p.name != "mproc-examples")
                .all(|p| p.examples.is_empty()),
            "only the root package has examples"
        );
    }
}
