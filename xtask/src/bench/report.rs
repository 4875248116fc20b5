//! The table and the JSON of a run.

use std::fmt::Write as _;

use super::figures::{Cell, RowResult, Who, COLUMNS};
use super::{cpu_model, git_commit, kernel, Config};

// ----------------------------------------------------------------- table --

fn fmt_num(x: f64) -> String {
    let a = x.abs();
    if a >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if a >= 1e5 {
        format!("{:.0}k", x / 1e3)
    } else if a >= 1e4 {
        format!("{:.1}k", x / 1e3)
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

pub(super) fn cell_text(r: &RowResult<'_>, who: Who) -> String {
    match r.cells.get(&who) {
        None => "—".into(),
        Some(Cell::Values(v)) if v.is_empty() => "—".into(),
        Some(c @ Cell::Values(_)) => c.median().map(fmt_num).unwrap_or_default(),
        Some(Cell::Na(why)) if why == "does not apply" => "—".into(),
        Some(Cell::Na(why)) => format!("n/a ({why})"),
        Some(Cell::Missing) => "missing (no python3)".into(),
        Some(Cell::Failed(_)) => "FAILED".into(),
    }
}

fn ratio_text(r: Option<f64>) -> String {
    r.map(|r| format!("{}×", fmt_num(r)))
        .unwrap_or_else(|| "—".into())
}

pub(super) fn table(
    cfg: &Config,
    results: &[RowResult<'_>],
    reps: usize,
    elapsed: f64,
    load: &[String; 2],
) -> String {
    let mut header: Vec<String> = vec!["figure".into(), "unit".into()];
    header.extend(COLUMNS.iter().map(|w| w.header().to_string()));
    header.extend(
        ["mproc/floor", "mproc/CPy", "mproc/procspawn", "goal"]
            .iter()
            .map(|s| s.to_string()),
    );
    let mut body: Vec<Vec<String>> = Vec::new();
    for r in results {
        let mut line = vec![r.row.title(cfg.mode), r.row.unit.to_string()];
        line.extend(COLUMNS.iter().map(|&w| cell_text(r, w)));
        line.push(ratio_text(r.ratio(Who::Floor)));
        line.push(ratio_text(r.ratio(r.row.cpython())));
        line.push(if r.row.who.contains(&Who::Procspawn) {
            ratio_text(r.ratio(Who::Procspawn))
        } else {
            "—".into()
        });
        line.push(match (r.goal_text(), r.goal()) {
            (None, _) => "—".into(),
            (Some(t), Some((_, true))) => format!("{t} ✓"),
            (Some(t), Some((_, false))) => format!("{t} ✗"),
            (Some(t), None) => format!("{t} ?"),
        });
        body.push(line);
    }
    let width = |s: &str| s.chars().count();
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            body.iter()
                .map(|l| width(&l[c]))
                .chain([width(&header[c])])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    let line = |out: &mut String, cells: &[String]| {
        out.push('|');
        for (c, cell) in cells.iter().enumerate() {
            let pad = widths[c] - width(cell);
            // Text left, numbers right.
            if c < 2 {
                let _ = write!(out, " {cell}{} |", " ".repeat(pad));
            } else {
                let _ = write!(out, " {}{cell} |", " ".repeat(pad));
            }
        }
        out.push('\n');
    };
    line(&mut out, &header);
    out.push('|');
    for (c, w) in widths.iter().enumerate() {
        let dashes = "-".repeat((*w).max(3));
        if c < 2 {
            let _ = write!(out, " {dashes} |");
        } else {
            let _ = write!(out, " {}: |", &dashes[1..]);
        }
    }
    out.push('\n');
    for l in &body {
        line(&mut out, l);
    }
    let _ = write!(
        out,
        "\nMedians of {reps} repetition(s), contenders interleaved; {} mode, {elapsed:.0} s. \
         Ratios are mproc's value over the other's (times: lower is better; rates: higher). \
         mproc/CPy compares with CPython's spawn start method for the process figures \
         (a fresh process, as mproc's) and with fork (Linux's default) for Pipe and Queue. \
         Load average before/after: {} / {}.",
        cfg.mode.name(),
        load[0],
        load[1]
    );
    if cfg.python.is_none() {
        out.push_str(" CPython: missing (no python3 on PATH).");
    }
    out
}

// ------------------------------------------------------------------ json --

fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn json_num(x: Option<f64>) -> String {
    match x {
        Some(x) if x.is_finite() => format!("{x}"),
        _ => "null".into(),
    }
}

pub(super) fn json(
    cfg: &Config,
    stamp: &str,
    results: &[RowResult<'_>],
    reps: usize,
    elapsed: f64,
    load: &[String; 2],
) -> String {
    let (commit, dirty) = git_commit();
    let mut o = String::new();
    o.push_str("{\n");
    let _ = writeln!(o, "  \"schema\": 1,");
    let _ = writeln!(o, "  \"timestamp\": {},", json_str(stamp));
    let _ = writeln!(o, "  \"mode\": {},", json_str(cfg.mode.name()));
    let _ = writeln!(o, "  \"command\": {},", json_str(&cfg.command));
    let _ = writeln!(
        o,
        "  \"commit\": {},",
        commit.as_deref().map(json_str).unwrap_or("null".into())
    );
    let _ = writeln!(
        o,
        "  \"dirty\": {},",
        dirty.map(|d| d.to_string()).unwrap_or("null".into())
    );
    let _ = writeln!(o, "  \"machine\": {{");
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let _ = writeln!(o, "    \"nproc\": {nproc},");
    let _ = writeln!(o, "    \"cpu\": {},", json_str(&cpu_model()));
    let _ = writeln!(o, "    \"kernel\": {},", json_str(&kernel()));
    let _ = writeln!(
        o,
        "    \"loadavg_before\": {},\n    \"loadavg_after\": {},",
        json_str(&load[0]),
        json_str(&load[1])
    );
    let _ = writeln!(
        o,
        "    \"python\": {}",
        cfg.python
            .as_ref()
            .map(|(_, v)| json_str(v))
            .unwrap_or("null".into())
    );
    let _ = writeln!(o, "  }},");
    let _ = writeln!(o, "  \"repetitions\": {reps},");
    let _ = writeln!(o, "  \"elapsed_s\": {},", json_num(Some(elapsed)));
    let _ = writeln!(o, "  \"figures\": [");
    for (i, r) in results.iter().enumerate() {
        let row = r.row;
        o.push_str("    {\n");
        let _ = writeln!(o, "      \"id\": {},", json_str(row.id));
        let _ = writeln!(o, "      \"title\": {},", json_str(&row.title(cfg.mode)));
        let _ = writeln!(o, "      \"unit\": {},", json_str(row.unit));
        let _ = writeln!(
            o,
            "      \"better\": {},",
            json_str(if row.higher_is_better {
                "higher"
            } else {
                "lower"
            })
        );
        let params: Vec<String> = (row.params)(cfg.mode)
            .iter()
            .map(|(k, v)| format!("{}: {v}", json_str(k)))
            .collect();
        let _ = writeln!(o, "      \"params\": {{{}}},", params.join(", "));
        let _ = writeln!(o, "      \"contenders\": {{");
        let cells: Vec<String> = row
            .who
            .iter()
            .map(|&w| {
                let body = match r.cells.get(&w) {
                    Some(c @ Cell::Values(v)) => format!(
                        "{{\"median\": {}, \"samples\": [{}]}}",
                        json_num(c.median()),
                        v.iter()
                            .map(|x| json_num(Some(*x)))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    Some(Cell::Na(why)) => format!("{{\"na\": {}}}", json_str(why)),
                    Some(Cell::Missing) => "{\"missing\": \"no python3\"}".to_string(),
                    Some(Cell::Failed(why)) => format!("{{\"failed\": {}}}", json_str(why)),
                    None => "null".to_string(),
                };
                format!("        {}: {body}", json_str(w.key()))
            })
            .collect();
        let _ = writeln!(o, "{}", cells.join(",\n"));
        let _ = writeln!(o, "      }},");
        let _ = writeln!(
            o,
            "      \"ratios\": {{\"mproc/floor\": {}, \"mproc/cpython\": {}, \"cpython\": {}, \"mproc/procspawn\": {}}},",
            json_num(r.ratio(Who::Floor)),
            json_num(r.ratio(row.cpython())),
            json_str(row.cpython().key()),
            json_num(if row.who.contains(&Who::Procspawn) {
                r.ratio(Who::Procspawn)
            } else {
                None
            })
        );
        let goal = match (r.goal_text(), r.goal()) {
            (Some(t), Some((ratio, met))) => format!(
                "{{\"text\": {}, \"ratio\": {}, \"met\": {met}}}",
                json_str(&t),
                json_num(Some(ratio))
            ),
            (Some(t), None) => format!(
                "{{\"text\": {}, \"ratio\": null, \"met\": null}}",
                json_str(&t)
            ),
            (None, _) => "null".to_string(),
        };
        let _ = writeln!(o, "      \"goal\": {goal}");
        o.push_str(if i + 1 < results.len() {
            "    },\n"
        } else {
            "    }\n"
        });
    }
    o.push_str("  ]\n}\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_str("a\"b\\c\n\u{1}"), "\"a\\\"b\\\\c\\n\\u0001\"");
    }

    #[test]
    fn numbers_keep_three_figures() {
        assert_eq!(fmt_num(0.6912), "0.691");
        assert_eq!(fmt_num(47.04), "47.0");
        assert_eq!(fmt_num(3430.0), "3430");
        assert_eq!(fmt_num(25_639.0), "25.6k");
        assert_eq!(fmt_num(159_000.0), "159k");
        assert_eq!(fmt_num(1_234_567.0), "1.23M");
    }
}
