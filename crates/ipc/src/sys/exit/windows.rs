//! Exit hooks that also run at `std::process::exit`.
//!
//! On Windows, Rust's `std::process::exit` calls kernel32's `ExitProcess`
//! directly: the C runtime's `atexit` hooks do not run, and `ExitProcess`
//! kills every other thread first (a queue's feeder among them). So, at
//! the first registration, this executable's import address table is
//! patched: every slot that holds `ExitProcess` points at
//! [`exit_process_hook`] instead, which runs the registered hooks while
//! every thread is still alive, then calls the real `ExitProcess`. That
//! covers the calls this executable makes (std's `exit`, and anything else
//! linked into it); a DLL that calls `ExitProcess` through its own import
//! table is not covered.
//!
//! A hook is also registered with the C runtime's `atexit`, which runs
//! when `main` returns. Either way, each hook runs at most once: the C
//! runtime gets a per-hook trampoline that marks the hook done, and the
//! `ExitProcess` hook skips the done ones. Both run the hooks in reverse
//! order of registration, as `atexit` does.

use std::ffi::c_int;
use std::panic;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Once, OnceLock};

use windows_sys::Win32::Foundation::HMODULE;
use windows_sys::Win32::System::Diagnostics::Debug::{
    IMAGE_DATA_DIRECTORY, IMAGE_DIRECTORY_ENTRY_IMPORT, IMAGE_FILE_HEADER,
    IMAGE_NT_OPTIONAL_HDR32_MAGIC, IMAGE_NT_OPTIONAL_HDR64_MAGIC, IMAGE_OPTIONAL_HEADER32,
    IMAGE_OPTIONAL_HEADER64,
};
use windows_sys::Win32::System::LibraryLoader::{GetModuleHandleW, GetProcAddress};
use windows_sys::Win32::System::Memory::{VirtualProtect, PAGE_PROTECTION_FLAGS, PAGE_READWRITE};
use windows_sys::Win32::System::SystemServices::{
    IMAGE_DOS_HEADER, IMAGE_DOS_SIGNATURE, IMAGE_IMPORT_DESCRIPTOR, IMAGE_NT_SIGNATURE,
};
use windows_sys::Win32::System::Threading::{GetCurrentProcess, TerminateProcess};

extern "C" {
    // The C runtime's `atexit` (runs when `main` returns).
    fn atexit(hook: extern "C" fn()) -> c_int;
}

/// How many hooks get the run-at-most-once treatment (mproc registers
/// three); more are registered with the C runtime alone.
const SLOTS: usize = 16;

struct Slot {
    hook: OnceLock<extern "C" fn()>,
    done: AtomicBool,
}

#[allow(clippy::declare_interior_mutable_const)] // only an array initialiser
const EMPTY: Slot = Slot {
    hook: OnceLock::new(),
    done: AtomicBool::new(false),
};

static HOOKS: [Slot; SLOTS] = [EMPTY; SLOTS];
/// Slots handed out so far (may exceed `SLOTS`).
static NEXT: AtomicUsize = AtomicUsize::new(0);

/// The real `ExitProcess` (0 until the import table is patched).
static REAL_EXIT: AtomicUsize = AtomicUsize::new(0);
/// Import table slots pointing at [`exit_process_hook`].
static PATCHED: AtomicUsize = AtomicUsize::new(0);
static PATCH: Once = Once::new();
/// Set by the first `ExitProcess` call that went through the hook.
static EXITING: AtomicBool = AtomicBool::new(false);

/// Runs the hook of slot `i` unless it already ran.
fn run_slot(i: usize) {
    let slot = &HOOKS[i];
    if let Some(&hook) = slot.hook.get() {
        if !slot.done.swap(true, Ordering::AcqRel) {
            // Hooks catch their own panics; this is a second net.
            let _ = panic::catch_unwind(|| hook());
        }
    }
}

macro_rules! trampolines {
    ($($name:ident = $i:literal),* $(,)?) => {
        $(extern "C" fn $name() { run_slot($i) })*
        /// What the C runtime's `atexit` gets, one per slot.
        static TRAMPOLINES: [extern "C" fn(); SLOTS] = [$($name),*];
    };
}

trampolines! {
    slot0 = 0, slot1 = 1, slot2 = 2, slot3 = 3, slot4 = 4, slot5 = 5, slot6 = 6, slot7 = 7,
    slot8 = 8, slot9 = 9, slot10 = 10, slot11 = 11, slot12 = 12, slot13 = 13, slot14 = 14,
    slot15 = 15,
}

/// Registers `hook` to run once at normal exit: `main` returning, or any
/// `ExitProcess` call this executable makes (`std::process::exit`), in
/// reverse order of registration. Returns whether it will run at all.
///
/// `hook` must not unwind.
pub fn at_exit(hook: extern "C" fn()) -> bool {
    PATCH.call_once(patch_import_table);
    let i = NEXT.fetch_add(1, Ordering::AcqRel);
    let registered = if i < SLOTS {
        let _ = HOOKS[i].hook.set(hook);
        // SAFETY: `atexit` with a plain `extern "C" fn()` that never
        // unwinds (`run_slot` catches).
        let crt = unsafe { atexit(TRAMPOLINES[i]) == 0 };
        crt || PATCHED.load(Ordering::Acquire) > 0
    } else {
        tracing::debug!("more than {SLOTS} exit hooks: this one runs only when main returns");
        // SAFETY: as above; the caller promises `hook` does not unwind.
        unsafe { atexit(hook) == 0 }
    };
    match PATCHED.load(Ordering::Acquire) {
        0 => tracing::debug!(
            "exit hook registered; the ExitProcess hook is not active (no import table \
             slot found): it will not run at std::process::exit"
        ),
        n => tracing::debug!("exit hook registered; the ExitProcess hook holds {n} import slot(s)"),
    }
    registered
}

/// Runs every registered hook that has not run yet, last registered first.
fn run_all() {
    let n = NEXT.load(Ordering::Acquire).min(SLOTS);
    for i in (0..n).rev() {
        run_slot(i);
    }
}

/// Stands in for `ExitProcess` in this executable's import table.
extern "system" fn exit_process_hook(code: u32) -> ! {
    // A hook that calls exit (or a second caller) goes straight through.
    if !EXITING.swap(true, Ordering::AcqRel) {
        run_all();
    }
    let real = REAL_EXIT.load(Ordering::Acquire);
    if real != 0 {
        // SAFETY: `real` is kernel32's `ExitProcess`, saved before the
        // import table was patched; this is its signature.
        let real: extern "system" fn(u32) -> ! = unsafe { std::mem::transmute(real) };
        real(code)
    }
    // Unreachable (the hook is only installed with `real` saved), but never
    // call `ExitProcess` through the patched table from here.
    // SAFETY: ends this process.
    unsafe { TerminateProcess(GetCurrentProcess(), code) };
    std::process::abort()
}

/// Points every import address table slot of this executable that holds
/// kernel32's `ExitProcess` at [`exit_process_hook`].
fn patch_import_table() {
    let kernel32: Vec<u16> = "kernel32.dll\0".encode_utf16().collect();
    // SAFETY: a null-terminated UTF-16 name; kernel32 is always loaded and
    // the handle is not reference-counted.
    let k32 = unsafe { GetModuleHandleW(kernel32.as_ptr()) };
    if k32.is_null() {
        return;
    }
    // SAFETY: a loaded module and a null-terminated ASCII name.
    let Some(real) = (unsafe { GetProcAddress(k32, c"ExitProcess".as_ptr().cast()) }) else {
        return;
    };
    let real = real as usize;
    REAL_EXIT.store(real, Ordering::Release);
    // SAFETY: the null name gives this executable's module handle.
    let exe = unsafe { GetModuleHandleW(std::ptr::null()) };
    if exe.is_null() {
        return;
    }
    // SAFETY: `exe` is the base of this executable's image, mapped for the
    // life of the process; `import_table_slots` only reads within the
    // headers and import directory the image itself describes.
    let slots = unsafe { import_table_slots(exe) };
    let mut patched = 0;
    for slot in slots {
        // SAFETY: `slot` is an import address table entry of the mapped
        // image (pointer-sized, aligned).
        if unsafe { slot.read_volatile() } != real {
            continue;
        }
        // SAFETY: as above; the page protection is restored after the write.
        if unsafe {
            write_protected(
                slot,
                exit_process_hook as extern "system" fn(u32) -> ! as usize,
            )
        } {
            patched += 1;
        }
    }
    PATCHED.store(patched, Ordering::Release);
}

/// Every import address table entry of the image at `base`.
///
/// # Safety
/// `base` must be the base address of a mapped PE image.
unsafe fn import_table_slots(base: HMODULE) -> Vec<*mut usize> {
    // SAFETY: the caller upholds this fn's contract (its `# Safety`
    // section), which is what each unsafe operation below relies on.
    unsafe {
        let base = base as *const u8;
        let mut out = Vec::new();
        let dos = base as *const IMAGE_DOS_HEADER;
        if (*dos).e_magic != IMAGE_DOS_SIGNATURE {
            return out;
        }
        let nt = base.offset((*dos).e_lfanew as isize);
        if (nt as *const u32).read_unaligned() != IMAGE_NT_SIGNATURE {
            return out;
        }
        let optional = nt.add(4 + std::mem::size_of::<IMAGE_FILE_HEADER>());
        let dir: IMAGE_DATA_DIRECTORY = match (optional as *const u16).read_unaligned() {
            IMAGE_NT_OPTIONAL_HDR64_MAGIC => {
                let h = (optional as *const IMAGE_OPTIONAL_HEADER64).read_unaligned();
                if h.NumberOfRvaAndSizes <= u32::from(IMAGE_DIRECTORY_ENTRY_IMPORT) {
                    return out;
                }
                h.DataDirectory[IMAGE_DIRECTORY_ENTRY_IMPORT as usize]
            }
            IMAGE_NT_OPTIONAL_HDR32_MAGIC => {
                let h = (optional as *const IMAGE_OPTIONAL_HEADER32).read_unaligned();
                if h.NumberOfRvaAndSizes <= u32::from(IMAGE_DIRECTORY_ENTRY_IMPORT) {
                    return out;
                }
                h.DataDirectory[IMAGE_DIRECTORY_ENTRY_IMPORT as usize]
            }
            _ => return out,
        };
        if dir.VirtualAddress == 0 {
            return out;
        }
        let mut desc = base.add(dir.VirtualAddress as usize) as *const IMAGE_IMPORT_DESCRIPTOR;
        // The descriptor array ends with an all-zero entry.
        while (*desc).Name != 0 || (*desc).FirstThunk != 0 {
            if (*desc).FirstThunk != 0 {
                let mut thunk = base.add((*desc).FirstThunk as usize) as *mut usize;
                while thunk.read_volatile() != 0 {
                    out.push(thunk);
                    thunk = thunk.add(1);
                }
            }
            desc = desc.add(1);
        }
        out
    }
}

/// Writes `value` to `slot`, making its page writable for the write.
///
/// # Safety
/// `slot` must be a mapped, aligned, pointer-sized location that no other
/// code relies on being unchanged.
unsafe fn write_protected(slot: *mut usize, value: usize) -> bool {
    // SAFETY: the caller upholds this fn's contract (its `# Safety`
    // section), which is what each unsafe operation below relies on.
    unsafe {
        let size = std::mem::size_of::<usize>();
        let mut old: PAGE_PROTECTION_FLAGS = 0;
        if VirtualProtect(slot.cast(), size, PAGE_READWRITE, &mut old) == 0 {
            return false;
        }
        // An aligned pointer-sized store: a thread calling through the slot
        // meanwhile sees the old or the new function, both valid.
        std::ptr::write_volatile(slot, value);
        let mut ignored: PAGE_PROTECTION_FLAGS = 0;
        VirtualProtect(slot.cast(), size, old, &mut ignored);
        true
    }
}

/// Ends this process at once, without running exit handlers (the daemon
/// watchdog, when the parent is gone).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: ends this process at once.
    unsafe {
        TerminateProcess(GetCurrentProcess(), code as u32);
    }
    std::process::abort()
}
