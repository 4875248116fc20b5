//! Reading libtest's output as it goes through: the counts of a
//! `test result:` line, and lines with cargo's colours taken out.

/// `5 passed; 0 failed; 2 ignored; ...` -> the number before `word`.
pub(super) fn count(result: &str, word: &str) -> u64 {
    result
        .split([';', '.', ','])
        .filter_map(|part| {
            let mut it = part.split_whitespace();
            let n = it.next()?.parse::<u64>().ok()?;
            (it.next()? == word).then_some(n)
        })
        .sum()
}

pub(super) fn strip_ansi(s: &str) -> String {
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
