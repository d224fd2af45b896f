#!/bin/sh
# conv_vs_torch.sh [ROUNDS] - make bench-conv-torch: the conv layers with few input channels
# (1->32 @ 28^2 and 3->32 @ 32^2 with pad 1, the seeds' 1->32 @ 28^2 valid; N = 64, 3x3),
# forward + input gradient + weight gradient, dlcore (bench/bench_conv.c's "sum" cases,
# the best ISA this CPU has) against PyTorch (bench/peers/torch_conv.py), interleaved round
# by round, one thread, pinned to core 0. Prints each side's median over the rounds and the
# ratio. Environment: B (build), PYTHON (/usr/bin/python3), PIN ("taskset -c 0").
set -eu
B=${B:-build}
py=${PYTHON:-/usr/bin/python3}
pin=${PIN:-taskset -c 0}
rounds=${1:-3}
out=$B/bench/conv_torch
mkdir -p "$out"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
[ -x "$B/bench/bench" ] || { echo "conv_vs_torch: build $B/bench/bench first (make bench-build)" >&2; exit 1; }
"$py" -c 'import torch' 2>/dev/null || { echo "conv_vs_torch: $py cannot import torch" >&2; exit 1; }
lscpu | grep 'Model name' || true
: >"$out/rounds.txt"
r=1
while [ "$r" -le "$rounds" ]; do
    $pin "$B/bench/bench" --cases=t1 --benchmark_filter='conv/(n64-sum/(1-32@28|3-32@32)|cnn-sum/1-32@28)/t1/dlcore' \
        --benchmark_repetitions=3 --benchmark_report_aggregates_only=true >"$out/d.txt" 2>&1 ||
        { cat "$out/d.txt" >&2; exit 1; }
    $pin "$py" bench/peers/torch_conv.py >"$out/t.txt"
    # dlcore: the AVX-512 line where there is one, else AVX2, else scalar; in microseconds
    awk -v r="$r" '/real_time_median/ {
            split($1, p, "/"); name = p[2] "/" p[3]; isa = p[5]; v = $2; u = $3
            v = u == "ms" ? v * 1000 : u == "ns" ? v / 1000 : v
            rank = isa == "dlcore-avx512" ? 3 : isa == "dlcore-avx2" ? 2 : isa == "dlcore-neon" ? 2 : 1
            if (rank > best[name]) { best[name] = rank; us[name] = v }
        }
        END { for (n in us) print r, "dlcore", n, us[n] }' "$out/d.txt" >>"$out/rounds.txt"
    awk -v r="$r" '{ print r, "torch", $1, $2 }' "$out/t.txt" >>"$out/rounds.txt"
    r=$((r + 1))
done
awk '
function med(a, n,   i, j, t) { for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
                                return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
{ k = $2 " " $3; n[k]++; v[k, n[k]] = $4; names[$3] = 1; by[$1, $2, $3] = $4; nr = $1 > nr ? $1 : nr }
END {
    printf "conv fwd + input grad + weight grad, N = 64, 1 thread: median microseconds over the rounds;\n"
    printf "speedup: of the medians, and of each round (torch / the dlcore run just before it): median, range\n"
    printf "%-18s %10s %10s %8s   %s\n", "layer", "dlcore", "torch", "speedup", "per round"
    for (s in names) {
        kd = "dlcore " s; kt = "torch " s
        if (!(kd in n) || !(kt in n)) { printf "%-18s missing on one side\n", s; continue }
        for (i = 1; i <= n[kd]; i++) a[i] = v[kd, i]; d = med(a, n[kd])
        for (i = 1; i <= n[kt]; i++) b[i] = v[kt, i]; t = med(b, n[kt])
        m = 0
        for (r = 1; r <= nr; r++) if ((r, "dlcore", s) in by && (r, "torch", s) in by) c[++m] = by[r, "torch", s] / by[r, "dlcore", s]
        printf "%-18s %10.0f %10.0f %7.2fx   %.2fx, %.2f-%.2fx\n", s, d, t, t / d, med(c, m), c[1], c[m]
    }
}' "$out/rounds.txt"
