//! Unix: early constructors in `.init_array` priority sections.

/// Runs `$f` (an `extern "C" fn()`) as an *early* constructor: on ELF in
/// an `.init_array` priority section, which runs before every
/// constructor without a priority (mproc's bootstrap among them, `ctor`'s
/// plain `.init_array`), so the target registry is complete when the
/// bootstrap reads it. (On Apple platforms constructors have no order:
/// not a supported platform, see docs/platforms.md.) Used by
/// `#[mproc::target]`.
#[doc(hidden)]
#[macro_export]
macro_rules! __mproc_early_ctor {
    ($f:path) => {
        #[used]
        #[cfg_attr(target_vendor = "apple", link_section = "__DATA,__mod_init_func")]
        #[cfg_attr(not(target_vendor = "apple"), link_section = ".init_array.00200")]
        static __MPROC_EARLY_CTOR: extern "C" fn() = $f;
    };
}
