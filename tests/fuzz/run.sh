#!/bin/sh
# run.sh NAME SECONDS [RUNS] - runs the libFuzzer target build/fuzz/NAME on its corpus
# (build/fuzz/corpus/NAME, seeded by `make` from the target's fuzz_seeds) for
# SECONDS, or until RUNS executions when RUNS is given, with -rss_limit_mb=512 so a
# memory blow-up is a finding. Crash inputs go to build/fuzz/findings/NAME/. Prints
# the executions made and "NAME: N passed, N failed" (one case: the run).
# FUZZ_SEED fixes libFuzzer's random seed (0, the default, draws one): the smoke
# runs in `make test` use a fixed one, so a red suite can be rerun to the same input.
B=${B:-build}
name=$1; secs=$2; runs=${3:--1}
bin=$B/fuzz/$name; corpus=$B/fuzz/corpus/$name; findings=$B/fuzz/findings/$name
[ -x "$bin" ] || { echo "$bin is missing (make fuzz-build)"; echo "$name: 0 passed, 1 failed"; exit 1; }
[ -n "$(ls -A "$corpus" 2>/dev/null)" ] || { echo "$corpus is empty"; echo "$name: 0 passed, 1 failed"; exit 1; }
mkdir -p "$findings"
log=$B/fuzz/$name.log
# The AVX2 kernels: the fuzz builds leave the AVX-512 ones uninstrumented (tests/san_ignore.txt).
DLCORE_ISA=${DLCORE_ISA:-avx2} UBSAN_OPTIONS="suppressions=$(pwd)/tests/fuzz/ubsan.supp:halt_on_error=1:print_stacktrace=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}" \
"$bin" -seed="${FUZZ_SEED:-0}" -rss_limit_mb=512 -malloc_limit_mb=512 -timeout=20 -max_len=8192 -print_final_stats=1 \
    -max_total_time="$secs" -runs="$runs" -artifact_prefix="$findings/" "$corpus" >"$log" 2>&1
rc=$?
execs=$(grep -E '^stat::number_of_executed_units:' "$log" | tail -n 1 | awk '{ print $2 }')
echo "$name: ${execs:-?} executions in ${secs}s at most, exit $rc, corpus $(ls "$corpus" | wc -l) files"
if [ "$rc" -ne 0 ]; then
    grep -E 'ERROR|runtime error|SUMMARY|Test unit written' "$log" | head -n 20
    echo "$name: 0 passed, 1 failed"
    exit 1
fi
echo "$name: 1 passed, 0 failed"
