/* bcryptprimitives.dll for Wine < 8.13, built by `cargo xtask windows --setup`.
 *
 * Rust's std (>= 1.78) imports ProcessPrng from bcryptprimitives.dll, which
 * Wine only ships from 8.13 on: without this DLL every Rust .exe dies at load
 * time with exit 53 (c0000135, DLL not found). Documented contract: fill the
 * buffer with random bytes and always return TRUE. RtlGenRandom
 * (advapi32 SystemFunction036) does the work; it takes a ULONG length, so
 * larger requests go in chunks. */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len > 0) {
        ULONG chunk = len > 0x40000000 ? 0x40000000 : (ULONG)len;
        if (!SystemFunction036(data, chunk))
            return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
