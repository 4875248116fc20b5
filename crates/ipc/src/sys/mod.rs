//! The platform seam: every OS difference of `mproc-ipc` lives here.

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub use unix::*;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub use windows::*;

/// A gathered write's progress over `parts`: `index` is the first part
/// not completely written and `offset` how much of it was; moves both on
/// by `written` more bytes (shared by the Unix and Windows stream writers).
pub(crate) fn advance_parts(
    parts: &[&[u8]],
    index: &mut usize,
    offset: &mut usize,
    mut written: usize,
) {
    while *index < parts.len() {
        let rest = parts[*index].len() - *offset;
        if written < rest {
            *offset += written;
            return;
        }
        written -= rest;
        *index += 1;
        *offset = 0;
    }
}
