#!/bin/sh
# check_header.sh - dlcore.h must compile without a single warning under
# -Wall -Wextra -Wpedantic as C99 (gcc, clang), as C++11, with DLCORE_STATIC,
# with DLCORE_NO_SIMD / DLCORE_NO_THREADS, and for AArch64 and
# Windows (mingw-w64). `make test` installs every compiler, so a missing one is a
# failure; CHECK_HEADER_SKIP="aarch64 mingw-w64" (labels' first words) skips those
# on purpose, counted as skipped. Prints "<name>: N passed, N failed, N skipped".
cd "$(dirname "$0")/.." || exit 1
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
printf '#define DLCORE_IMPLEMENTATION\n#include "dlcore.h"\nint main(void){return dl_last_error()[0];}\n' >"$tmp/t.c"
pass=0; fail=0; skip=0
try() {
    label=$1; shift
    case " ${CHECK_HEADER_SKIP:-} " in *" ${label%% *} "*) echo "skip $label (CHECK_HEADER_SKIP)"; skip=$((skip + 1)); return ;; esac
    if ! command -v "$1" >/dev/null 2>&1; then echo "FAIL $label ($1 not installed)"; fail=$((fail + 1)); return; fi
    if "$@" -Wall -Wextra -Wpedantic -Werror -O2 -I. -c "$tmp/t.c" -o "$tmp/t.o" >"$tmp/log" 2>&1; then
        echo "ok   $label"; pass=$((pass + 1))
    else
        echo "FAIL $label"; sed 's/^/    /' "$tmp/log" | head -20; fail=$((fail + 1))
    fi
}
try "gcc -std=c99"                gcc -std=c99
try "clang -std=c99"              clang -std=c99
try "g++ -std=c++11"              g++ -x c++ -std=c++11
try "clang++ -std=c++11"          clang -x c++ -std=c++11
try "gcc -std=c99 static"         gcc -std=c99 -DDLCORE_STATIC
try "gcc -std=c99 no-simd"        gcc -std=c99 -DDLCORE_NO_SIMD
try "gcc -std=c99 no-threads"     gcc -std=c99 -DDLCORE_NO_THREADS
try "aarch64 gcc -std=c99"        aarch64-linux-gnu-gcc -std=c99
try "mingw-w64 gcc -std=c99"      x86_64-w64-mingw32-gcc -std=c99
echo "check_header.sh: $pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
