//! Early constructors: `__mproc_early_ctor!(f)` runs `f` (an
//! `extern "C" fn()`) before every ordinary constructor (`ctor`'s, mproc's
//! bootstrap among them), so the target registry is complete when the
//! bootstrap reads it. Each backend defines the macro (exported at the
//! crate root, re-exported by `mproc` for `#[mproc::target]`).

#[cfg(unix)]
mod unix;

#[cfg(windows)]
mod windows;
