#!/bin/sh
# mlp_vs_torch.sh - the Keras MNIST MLP trained by dlcore (build/mnist_mlp) and by
# PyTorch (bench/peers/torch_mlp.py) in the same run, interleaved; with -m cnn the
# seeds' CNN instead (build/mnist_cnn against bench/peers/torch_cnn.py, by default
# 1 epoch at batch 64)
# (dlcore, torch, dlcore, torch, ...), each pinned to core 0 with one thread,
# for each batch size. Prints the median training time of each, the speed-up
# (ratio of the medians), both test accuracies (mean over rounds) and the speed-up
# of each round (torch / the dlcore run just before it): median and range.
#
#   bench/mlp_vs_torch.sh [-m mlp|cnn] [-r ROUNDS] [-d DATA_DIR] [-e EPOCHS] [-b "32 128"] [-s SEED] [--torch-only]
#
# Environment: MLP_BIN (default build/mnist_mlp; build/mnist_cnn with -m cnn), PYTHON (default /usr/bin/python3,
# Debian's, which has torch), PIN (default "taskset -c 0"), OUT (logs, default build/bench/mlp).
# Debian's PyTorch does its matrix products with OpenBLAS, so an OPENBLAS_CORETYPE
# inherited from the environment is dropped, as in bench/bench_gemm.c: PyTorch runs
# the kernels OpenBLAS picks for this CPU (a preset "Haswell" made it 1.14x slower at
# batch 32 and 1.3x at batch 128 on Zen 5). BENCH_OPENBLAS_CORETYPE=keep keeps it.
set -eu

rounds=1 data=/usr/share/datasets/fashion-mnist epochs= batches= seed=0 torch_only=0 model=mlp
while [ $# -gt 0 ]; do
    case $1 in
        -m) model=$2; shift 2 ;;
        -r) rounds=$2; shift 2 ;;
        -d) data=$2; shift 2 ;;
        -e) epochs=$2; shift 2 ;;
        -b) batches=$2; shift 2 ;;
        -s) seed=$2; shift 2 ;;
        --torch-only) torch_only=1; shift ;;
        -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "mlp_vs_torch: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
done

case $model in
    mlp) : "${epochs:=5}" "${batches:=32 128}"; def_bin=build/mnist_mlp; title="MLP 784-128-10" ;;
    cnn) : "${epochs:=1}" "${batches:=64}"; def_bin=build/mnist_cnn; title="CNN conv32-conv64-conv128-dense128-10" ;;
    *) echo "mlp_vs_torch: -m takes mlp or cnn, not '$model'" >&2; exit 2 ;;
esac
here=$(cd "$(dirname "$0")" && pwd)
bin=${MLP_BIN:-$def_bin}
py=${PYTHON:-/usr/bin/python3}
pin=${PIN:-taskset -c 0}
out=${OUT:-build/bench/$model}
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
if [ -n "${OPENBLAS_CORETYPE:-}" ] && [ "${BENCH_OPENBLAS_CORETYPE:-}" != keep ]; then
    echo "mlp_vs_torch: dropping the inherited OPENBLAS_CORETYPE=$OPENBLAS_CORETYPE, so that PyTorch's OpenBLAS picks its kernels for this CPU (BENCH_OPENBLAS_CORETYPE=keep keeps it)" >&2
    unset OPENBLAS_CORETYPE
fi

if [ "$torch_only" = 0 ] && [ ! -x "$bin" ]; then
    echo "mlp_vs_torch: $bin not found: build it first (make $bin), or pass --torch-only" >&2
    exit 1
fi
if ! "$py" -c 'import torch' 2>/dev/null; then
    echo "mlp_vs_torch: $py cannot import torch (apt-get install python3-torch)" >&2
    exit 1
fi
mkdir -p "$out"

# Runs one training; its log is kept; prints "seconds accuracy" from the last line.
train() { # who batch round
    log="$out/$1-b$2-r$3.log"
    if [ "$1" = dlcore ]; then
        $pin "$bin" --data "$data" --epochs "$epochs" --batch "$2" --seed "$seed" --threads 1 \
            >"$log" 2>&1 || { echo "mlp_vs_torch: $bin failed, see $log" >&2; tail -5 "$log" >&2; exit 1; }
    elif [ "$model" = cnn ]; then   # torch_cnn.py: DATA_DIR batch epochs threads seed
        $pin "$py" "$here/peers/torch_cnn.py" "$data" "$2" "$epochs" 1 "$seed" \
            >"$log" 2>&1 || { echo "mlp_vs_torch: torch failed, see $log" >&2; tail -5 "$log" >&2; exit 1; }
    else
        $pin "$py" "$here/peers/torch_mlp.py" --data "$data" --epochs "$epochs" --batch "$2" \
            --seed "$seed" >"$log" 2>&1 || { echo "mlp_vs_torch: torch failed, see $log" >&2; tail -5 "$log" >&2; exit 1; }
    fi
    last=$(grep test_accuracy "$log" | tail -1)
    [ -n "$last" ] || { echo "mlp_vs_torch: no result line in $log" >&2; exit 1; }
    echo "$last" | awk '{ for (i = 1; i < NF; i++) { if ($i == "train_seconds") s = $(i+1);
                                                    if ($i == "test_accuracy") a = $(i+1) }
                         print s, a }'
}

results=$out/results.txt
: >"$results"
for b in $batches; do
    r=1
    while [ "$r" -le "$rounds" ]; do
        if [ "$torch_only" = 0 ]; then
            res=$(train dlcore "$b" "$r") || exit 1
            echo "dlcore $b $res" >>"$results"
            echo "round $r batch $b dlcore: ${res% *} s, accuracy ${res#* }" >&2
        fi
        res=$(train torch "$b" "$r") || exit 1
        echo "torch $b $res" >>"$results"
        echo "round $r batch $b torch:  ${res% *} s, accuracy ${res#* }" >&2
        r=$((r + 1))
    done
done

echo "$title, $epochs epochs, $(basename "$data"), 1 thread pinned, $rounds round(s), median seconds"
awk -v batches="$batches" '
    function median(list,   n, v, i, j, t) {
        n = split(list, v, " ")
        if (n == 0) return -1
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
        return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
    }
    { secs[$1, $2] = secs[$1, $2] " " $3; acc[$1, $2] += $4; cnt[$1, $2]++
      if ($1 == "dlcore") last_d[$2] = $3
      else if (last_d[$2] > 0) { r = $3 / last_d[$2]; ratios[$2] = ratios[$2] " " r
          if (!($2 in lo) || r < lo[$2]) lo[$2] = r; if (!($2 in hi) || r > hi[$2]) hi[$2] = r } }
    END {
        printf "%6s %12s %12s %9s %12s %12s   %s\n", "batch", "dlcore_s", "torch_s", "speedup", "dlcore_acc", "torch_acc",
            "per round: median, range"
        nb = split(batches, bs, " ")
        for (k = 1; k <= nb; k++) {
            b = bs[k]; d = median(secs["dlcore", b]); t = median(secs["torch", b])
            printf "%6s %12s %12s %9s %12s %12s   %s\n", b,
                d < 0 ? "-" : sprintf("%.2f", d), t < 0 ? "-" : sprintf("%.2f", t),
                (d > 0 && t > 0) ? sprintf("%.2fx", t / d) : "-",
                cnt["dlcore", b] ? sprintf("%.4f", acc["dlcore", b] / cnt["dlcore", b]) : "-",
                cnt["torch", b] ? sprintf("%.4f", acc["torch", b] / cnt["torch", b]) : "-",
                (b in lo) ? sprintf("%.2fx, %.2f-%.2fx", median(ratios[b]), lo[b], hi[b]) : "-"
        }
    }' "$results"
