#!/bin/sh
# infer_vs_torch.sh - MNIST MLP (784-128-10) inference through dl_predict (build/dlc
# bench: fp32 and int8, batch 1 and 256) against PyTorch fp32 and quantize_dynamic
# (bench/peers/torch_infer.py), interleaved round by round, one thread, pinned to
# core 0. Prints each round's figures and the ratios of the medians.
# Environment: B (build), PYTHON (/usr/bin/python3), PIN ("taskset -c 0"),
# BENCH_INFER_ROUNDS (3), MODEL (a trained model; default: one trained for 1 epoch).
set -eu
B=${B:-build}
py=${PYTHON:-/usr/bin/python3}
pin=${PIN:-taskset -c 0}
rounds=${BENCH_INFER_ROUNDS:-3}
out=$B/bench/infer
mkdir -p "$out"
export DLCORE_THREADS=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
model=${MODEL:-$out/mnist.dlc}
if [ ! -f "$model" ]; then
    $B/mnist_mlp --data data/fashion-mnist --epochs 1 --quiet --save "$model" >/dev/null
fi
"$py" -c 'import torch' 2>/dev/null || { echo "infer_vs_torch: $py cannot import torch" >&2; exit 1; }
lscpu | grep 'Model name' || true
: >"$out/rounds.txt"
r=1
while [ "$r" -le "$rounds" ]; do
    $pin $B/dlc bench "$model" --batch 1 >"$out/d1.txt"
    $pin $B/dlc bench "$model" --batch 256 >"$out/d256.txt"
    $pin "$py" bench/peers/torch_infer.py >"$out/torch.txt"
    d1f=$(awk '/fp32_us/ {print $2}' "$out/d1.txt"); d1i=$(awk '/fp32_us/ {print $4}' "$out/d1.txt")
    d2f=$(awk '/fp32_us/ {print $2}' "$out/d256.txt"); d2i=$(awk '/fp32_us/ {print $4}' "$out/d256.txt")
    t1f=$(awk '/^fp32 .*batch +1:/ {print $(NF-1)}' "$out/torch.txt"); t2f=$(awk '/^fp32 .*batch 256:/ {print $(NF-1)}' "$out/torch.txt")
    t1i=$(awk '/^int8.*batch +1:/ {print $(NF-1)}' "$out/torch.txt"); t2i=$(awk '/^int8.*batch 256:/ {print $(NF-1)}' "$out/torch.txt")
    echo "$d1f $d1i $d2f $d2i $t1f $t1i $t2f $t2i" >>"$out/rounds.txt"
    echo "round $r (us/sample): dlcore fp32 b1 $d1f int8 b1 $d1i fp32 b256 $d2f int8 b256 $d2i | torch fp32 b1 $t1f int8 b1 $t1i fp32 b256 $t2f int8 b256 $t2i"
    r=$((r + 1))
done
sort -n "$out/rounds.txt" >/dev/null
awk -v n="$rounds" '
function med(col,   i, a, t, j) { for (i = 1; i <= NR; i++) a[i] = v[i, col];
    for (i = 1; i <= NR; i++) for (j = i + 1; j <= NR; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
    return NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }
{ for (c = 1; c <= 8; c++) v[NR, c] = $c }
END {
    printf "medians over %d rounds, us/sample (1 thread):\n", NR
    printf "  %-28s %10s %10s\n", "", "batch 1", "batch 256"
    printf "  %-28s %10.3f %10.3f\n", "dlcore fp32 (dl_predict)", med(1), med(3)
    printf "  %-28s %10.3f %10.3f\n", "dlcore int8 (dl_predict)", med(2), med(4)
    printf "  %-28s %10.3f %10.3f\n", "torch fp32", med(5), med(7)
    printf "  %-28s %10.3f %10.3f\n", "torch quantize_dynamic", med(6), med(8)
    printf "ratios: int8 b256 vs torch quantize_dynamic %.2fx (target >= 2), int8 b1 vs torch fp32 b1 %.2fx (target >= 5)\n", med(8) / med(4), med(5) / med(2)
    printf "        fp32 b256 vs torch fp32 %.2fx, fp32 b1 vs torch fp32 %.2fx, int8 vs our fp32 at b256 %.2fx\n", med(7) / med(3), med(5) / med(1), med(3) / med(4)
}' "$out/rounds.txt"
