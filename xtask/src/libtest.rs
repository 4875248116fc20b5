//! Reading libtest's output as it goes through: the counts of a
//! `test result:` line, lines with cargo's colours taken out, and the
//! failing tests with the tail of their output ([`Failures`]), so that a
//! long run ends with the names of what failed instead of losing them in
//! the scroll-back.

use std::collections::VecDeque;

/// `5 passed; 0 failed; 2 ignored; ...` -> the number before `word`.
pub fn count(result: &str, word: &str) -> u64 {
    result
        .split([';', '.', ','])
        .filter_map(|part| {
            let mut it = part.split_whitespace();
            let n = it.next()?.parse::<u64>().ok()?;
            (it.next()? == word).then_some(n)
        })
        .sum()
}

pub fn strip_ansi(s: &str) -> String {
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

/// How many lines of a failing test's output the closing report repeats.
const TAIL: usize = 20;

/// One failing test: where it ran and what it printed.
struct Failed {
    binary: String,
    name: String,
    output: Vec<String>,
}

/// Collects, line by line, the failing tests of a `cargo test` run (the
/// `test NAME ... FAILED` lines and libtest's `---- NAME stdout ----`
/// sections) and the test binaries that ended without a `test result:` line
/// (a crash, an abort, a timeout), with the last lines each printed.
///
/// cargo names each binary on stderr and the binary prints on stdout; read
/// through two pipes, the next binary's `Running` line can arrive before
/// the previous one's last lines. So a binary is not judged when the next
/// one starts: stdout lines belong to the oldest binary still without a
/// result, a `test result:` line ends it, and it has crashed only when
/// cargo says its process did not exit as libtest does (status 101 is a
/// test failure, which has its result line), or when the run ends first.
#[derive(Default)]
pub struct Failures {
    /// Every binary started, in order.
    binaries: Vec<Binary>,
    /// The oldest binary still without a result (stdout lines are its).
    current: usize,
    recent: VecDeque<String>,
    section: Option<usize>,
    failed: Vec<Failed>,
    crashed: Vec<(String, Vec<String>)>,
}

struct Binary {
    name: String,
    done: bool,
}

impl Failures {
    /// Feeds one line of output (colours already stripped); `is_err`: it
    /// came on stderr, where cargo names the test binary it starts.
    pub fn line(&mut self, is_err: bool, plain: &str) {
        let trimmed = plain.trim();
        if is_err {
            if let Some(binary) = trimmed
                .strip_prefix("Running ")
                .or_else(|| trimmed.strip_prefix("Doc-tests "))
            {
                self.binaries.push(Binary {
                    name: binary.to_string(),
                    done: false,
                });
                return;
            }
            if trimmed.starts_with("process didn't exit successfully")
                && !trimmed.contains("(exit status: 101)")
            {
                self.crash_current();
                return;
            }
        }
        self.recent.push_back(plain.to_string());
        if self.recent.len() > TAIL {
            self.recent.pop_front();
        }
        if is_err {
            return;
        }
        if trimmed.starts_with("test result: ") || is_list_summary(trimmed) {
            self.end_current();
            return;
        }
        if let Some(name) = trimmed
            .strip_prefix("---- ")
            .and_then(|r| r.strip_suffix(" stdout ----"))
        {
            self.section = Some(self.entry(name));
            return;
        }
        if trimmed == "failures:" || trimmed == "successes:" {
            self.section = None;
            return;
        }
        if let Some(name) = trimmed
            .strip_prefix("test ")
            .and_then(|r| r.strip_suffix(" ... FAILED"))
        {
            self.entry(name);
            return;
        }
        if let Some(i) = self.section {
            self.failed[i].output.push(plain.to_string());
        }
    }

    fn entry(&mut self, name: &str) -> usize {
        let binary = self
            .binaries
            .get(self.current)
            .map(|b| b.name.clone())
            .unwrap_or_default();
        if let Some(i) = self
            .failed
            .iter()
            .position(|f| f.name == name && f.binary == binary)
        {
            return i;
        }
        self.failed.push(Failed {
            binary,
            name: name.to_string(),
            output: Vec::new(),
        });
        self.failed.len() - 1
    }

    /// The oldest binary without a result gave its result.
    fn end_current(&mut self) {
        if let Some(b) = self.binaries.get_mut(self.current) {
            b.done = true;
            self.current += 1;
        }
        self.recent.clear();
        self.section = None;
    }

    /// The oldest binary without a result ended without one.
    fn crash_current(&mut self) {
        if let Some(b) = self.binaries.get_mut(self.current) {
            b.done = true;
            self.crashed
                .push((b.name.clone(), self.recent.iter().cloned().collect()));
            self.current += 1;
        }
        self.recent.clear();
        self.section = None;
    }

    /// Ends the run: the report of every failing test and of every binary
    /// that gave no result, or `None` when there is nothing to report.
    /// A binary still without a result (a timed-out run's last one) is
    /// reported as one that gave none.
    pub fn finish(mut self) -> Option<String> {
        // Whatever is left without a result never gave one: the run
        // ended (or was stopped) first.
        while self.binaries.get(self.current).is_some() {
            self.crash_current();
        }
        if self.failed.is_empty() && self.crashed.is_empty() {
            return None;
        }
        let mut out = String::new();
        for f in &self.failed {
            out.push_str(&format!("FAILED: {}  [{}]\n", f.name, f.binary));
            let shown = without_backtraces(&f.output);
            let from = shown.len().saturating_sub(TAIL);
            for l in &shown[from..] {
                out.push_str(&format!("    | {l}\n"));
            }
        }
        for (binary, tail) in &self.crashed {
            out.push_str(&format!(
                "NO RESULT (crashed, aborted or timed out): {binary}\n"
            ));
            for l in tail {
                out.push_str(&format!("    | {l}\n"));
            }
        }
        Some(out)
    }
}

/// The last line a test binary prints with `--list` (`3 tests, 0
/// benchmarks`), its result in that mode: without it, every binary of a
/// listing run looked like one that gave no result.
pub fn is_list_summary(line: &str) -> bool {
    let mut words = line.split(' ');
    let counted = |n: Option<&str>, what: Option<&str>, one: &str, many: &str| {
        n.is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            && what.is_some_and(|w| w == one || w == many)
    };
    counted(words.next(), words.next(), "test,", "tests,")
        && counted(words.next(), words.next(), "benchmark", "benchmarks")
        && words.next().is_none()
}

/// A failing test's output with each panic backtrace (`RUST_BACKTRACE`
/// set: `stack backtrace:` to its closing `note:` or blank line) cut to
/// one line, so that the tail shows the panic message and what the test
/// printed instead of the backtrace's last frames.
fn without_backtraces(output: &[String]) -> Vec<String> {
    let mut shown = Vec::with_capacity(output.len());
    let mut cut: Option<usize> = None;
    for l in output {
        let t = l.trim();
        match cut {
            None if t == "stack backtrace:" => cut = Some(1),
            None => shown.push(l.clone()),
            Some(n) if t.is_empty() || t.starts_with("note: Some details are omitted") => {
                shown.push(format!("(a backtrace of {} lines left out)", n + 1));
                cut = None;
            }
            Some(n) => cut = Some(n + 1),
        }
    }
    if let Some(n) = cut {
        shown.push(format!("(a backtrace of {n} lines left out)"));
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_failing_tests_with_their_output_and_silent_binaries() {
        let mut f = Failures::default();
        for l in [
            "     Running tests/a.rs (target/debug/deps/a-1)",
            "test ok_one ... ok",
            "test bad_one ... FAILED",
            "failures:",
            "",
            "---- bad_one stdout ----",
            "thread 'bad_one' panicked at tests/a.rs:3:5:",
            "boom",
            "",
            "failures:",
            "    bad_one",
            "test result: FAILED. 1 passed; 1 failed; 0 ignored",
            "     Running tests/b.rs (target/debug/deps/b-2)",
            "test hangs ... ",
            "last words",
            "  process didn't exit successfully: `target/debug/deps/b-2` (signal: 6, SIGABRT: process abort signal)",
            "     Running tests/c.rs (target/debug/deps/c-3)",
            "test result: ok. 3 passed; 0 failed",
        ] {
            let t = l.trim_start();
            f.line(t.starts_with("Running ") || t.starts_with("process didn't"), l);
        }
        let report = f.finish().expect("a report");
        assert!(report.contains("FAILED: bad_one  [tests/a.rs (target/debug/deps/a-1)]"));
        assert!(report.contains("    | boom"));
        assert!(!report.contains("ok_one"));
        assert!(report.contains("NO RESULT (crashed, aborted or timed out): tests/b.rs"));
        assert!(report.contains("    | last words"));
        assert!(!report.contains("tests/c.rs"));
    }

    /// Two pipes: the next binary's `Running` line arrives before the
    /// previous binary's result (seen under Wine on a busy machine: a
    /// false "NO RESULT").
    #[test]
    fn a_result_that_arrives_after_the_next_binary_starts_is_still_its() {
        let mut f = Failures::default();
        f.line(true, "     Running tests/m.rs (m)");
        f.line(false, "running 1 test");
        f.line(true, "     Running tests/p.rs (p)");
        f.line(false, "test one ... ok");
        f.line(false, "test result: ok. 1 passed; 0 failed");
        f.line(false, "test two ... FAILED");
        f.line(
            true,
            "  process didn't exit successfully: `p` (exit status: 101)",
        );
        f.line(false, "test result: FAILED. 0 passed; 1 failed");
        let report = f.finish().expect("a report");
        assert!(report.contains("FAILED: two  [tests/p.rs (p)]"), "{report}");
        assert!(!report.contains("NO RESULT"), "{report}");
    }

    /// `cargo xtask windows -- --list`: each binary ends with its count
    /// line, which is its result in that mode.
    #[test]
    fn a_listing_run_is_not_a_run_without_results() {
        let mut f = Failures::default();
        f.line(true, "     Running tests/a.rs (a)");
        f.line(false, "one: test");
        f.line(false, "");
        f.line(false, "1 test, 0 benchmarks");
        f.line(true, "     Running tests/b.rs (b)");
        f.line(false, "0 tests, 0 benchmarks");
        assert_eq!(f.finish(), None);
        assert!(is_list_summary("12 tests, 0 benchmarks"));
        assert!(is_list_summary("1 test, 1 benchmark"));
        for not in [
            "tests, 0 benchmarks",
            "x tests, 0 benchmarks",
            "1 tests, 0 benchmarks extra",
            "test result: ok. 1 passed",
            "running 3 tests",
        ] {
            assert!(!is_list_summary(not), "{not}");
        }
    }

    /// With `RUST_BACKTRACE` set, the tail still shows the panic message
    /// and what the test printed, not only the backtrace's last frames.
    #[test]
    fn a_backtrace_does_not_push_the_panic_message_out_of_the_tail() {
        let mut f = Failures::default();
        f.line(true, "     Running tests/q.rs (q)");
        f.line(false, "test bad ... FAILED");
        f.line(false, "---- bad stdout ----");
        f.line(false, "what the test printed");
        f.line(false, "thread 'bad' panicked at tests/q.rs:9:5:");
        f.line(false, "assertion `left == right` failed");
        f.line(false, "stack backtrace:");
        for i in 0..40 {
            f.line(false, &format!("  {i}: frame::{i}"));
        }
        f.line(
            false,
            "note: Some details are omitted, run with `RUST_BACKTRACE=full` for a verbose backtrace.",
        );
        f.line(false, "");
        f.line(false, "failures:");
        f.line(false, "test result: FAILED. 0 passed; 1 failed");
        let report = f.finish().expect("a report");
        assert!(report.contains("    | what the test printed"), "{report}");
        assert!(
            report.contains("    | assertion `left == right` failed"),
            "{report}"
        );
        assert!(
            report.contains("(a backtrace of 42 lines left out)"),
            "{report}"
        );
        assert!(!report.contains("frame::"), "{report}");
    }

    #[test]
    fn a_green_run_reports_nothing_and_a_timed_out_one_names_its_last_binary() {
        let mut f = Failures::default();
        f.line(true, "     Running tests/c.rs (x)");
        f.line(false, "Running a test's own line");
        f.line(false, "test result: ok. 3 passed; 0 failed");
        assert!(f.finish().is_none());
        let mut f = Failures::default();
        f.line(true, "     Running tests/d.rs (y)");
        f.line(false, "test slow ... ");
        let report = f.finish().expect("a report");
        assert!(report.contains("tests/d.rs"));
    }
}
