//! Windows: early constructors in `.CRT$XCT`.

/// Runs `$f` (an `extern "C" fn()`) as an *early* constructor: in
/// `.CRT$XCT`, which the C runtime runs before `.CRT$XCU` (sections are
/// sorted by the name after `$`), where `ctor` puts every ordinary
/// constructor, mproc's bootstrap among them; so the target registry is
/// complete when the bootstrap reads it. Used by `#[mproc::target]`.
#[doc(hidden)]
#[macro_export]
macro_rules! __mproc_early_ctor {
    ($f:path) => {
        #[used]
        #[link_section = ".CRT$XCT"]
        static __MPROC_EARLY_CTOR: extern "C" fn() = $f;
    };
}
