//! Wine process bookkeeping: the one wineserver of a run (killed with
//! everything it serves at the end), the processes of our prefix found in
//! `/proc`, the programs a test or example left running, and killing them.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::prefix::{wine_cmd, Paths};
use super::say;
use crate::exec::run_quiet;

/// One persistent wineserver for the whole run, killed (with every Windows
/// process it serves) on `stop` or drop, so a failure leaves nothing behind.
pub(super) struct WineServer {
    paths: Paths,
    stopped: bool,
}

impl WineServer {
    pub(super) fn start(paths: &Paths) -> Result<Self, String> {
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

    pub(super) fn stop(&mut self) {
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
pub(super) struct WineProcess {
    pub(super) pid: u32,
    pub(super) cmdline: String,
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
pub(super) fn wine_processes(prefix: &Path) -> Vec<WineProcess> {
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
pub(super) fn kill_all(processes: Vec<WineProcess>) -> Vec<WineProcess> {
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
pub(super) fn new_programs(prefix: &Path, before: &[u32]) -> Vec<WineProcess> {
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

pub(super) fn pids(processes: &[WineProcess]) -> Vec<u32> {
    processes.iter().map(|p| p.pid).collect()
}
