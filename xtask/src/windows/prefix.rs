//! The private Wine prefix: where it lives (`$HOME/.cache/mproc/wine`), the
//! lock that makes two runs take turns on it, and the headless Wine
//! environment every command in it gets.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{is_root, say, write_file};

#[derive(Clone)]
pub(super) struct Paths {
    /// `$HOME/.cache/mproc`
    pub(super) cache: PathBuf,
    /// `$HOME/.cache/mproc/wine`: fixed, so it does not move with the target dir.
    pub(super) prefix: PathBuf,
}

impl Paths {
    pub(super) fn new() -> Result<Self, String> {
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
    pub(super) fn stamp(&self) -> PathBuf {
        self.prefix.join(".mproc-ready")
    }

    pub(super) fn dll_dest(&self) -> PathBuf {
        self.prefix
            .join("drive_c/windows/system32/bcryptprimitives.dll")
    }
}

/// `$HOME/.cache/mproc/wine.lock/pid`, made by an atomic rename; a lock whose
/// process is gone is taken over.
pub(super) struct PrefixLock {
    dir: PathBuf,
}

impl PrefixLock {
    pub(super) fn acquire(paths: &Paths) -> Result<Self, String> {
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

/// A command with the headless Wine environment of our private prefix.
pub(super) fn wine_cmd(paths: &Paths, program: impl AsRef<OsStr>) -> Command {
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

pub(super) fn wine_version() -> String {
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
