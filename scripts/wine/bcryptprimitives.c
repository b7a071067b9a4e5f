/* Test-only stand-in for Windows' bcryptprimitives.dll, which Wine 8 (Debian
 * 12) lacks: Rust's standard library (1.78+) takes its random numbers from
 * ProcessPrng there. Windows 10/11 and WinPE have the real DLL; this one is
 * built into the test Wine prefix only and never shipped. It forwards to
 * RtlGenRandom (advapi32's SystemFunction036), which Wine has. */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG len);

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len > 0) {
        ULONG n = len > 0x10000000 ? 0x10000000 : (ULONG)len;
        if (!SystemFunction036(data, n))
            return FALSE;
        data += n;
        len -= n;
    }
    return TRUE;
}
