//! Running a command: with its output streamed line by line and a timeout
//! (`stream`), or with no pipe attached at all (`run_quiet`, for Wine
//! helpers); and how a command or its status reads in messages.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long output may keep coming after a process exited (a leftover
/// grandchild can hold the pipe open; the final `wineserver -k` ends it).
const LINGER: Duration = Duration::from_secs(5);

pub struct Outcome {
    pub status: Option<ExitStatus>,
    pub timed_out: bool,
}

impl Outcome {
    pub fn success(&self) -> bool {
        !self.timed_out && self.status.is_some_and(|s| s.success())
    }
}

/// Runs `cmd`, handing each line of its stdout (`false`) and stderr (`true`)
/// to `on_line` as it comes; kills it after `timeout`.
pub fn stream(
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
            eprintln!("xtask: (output still held open by a leftover process; moving on)");
            break;
        }
    }
    let _ = std::io::stdout().flush();
    Ok(Outcome { status, timed_out })
}

/// Runs a Wine helper with no pipe attached (a wineserver or a Wine service
/// that inherits a pipe keeps it open long after the helper exits).
pub fn run_quiet(cmd: &mut Command, timeout: Duration) -> Result<(), String> {
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

pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

pub fn describe_status(status: Option<ExitStatus>) -> String {
    match status {
        Some(s) => s.to_string(),
        None => "no status".into(),
    }
}
