#!/bin/sh
# test_onnx.sh - dlc export on a trained fp32 MLP, an int8 one with dynamic activations,
# an int8 one with calibrated activations, the example CNN with batch norm, a CNN with
# every layer kind and option the exporter maps (onnx_ref --zoo), and the int8 forms of
# both CNNs (dynamic and calibrated; the zoo's depthwise conv stays float): each file through
# tests/test_onnx.py (onnx.checker with full_check, a NumPy run against dl_predict).
# Needs build/mnist_mlp build/mnist_cnn build/dlc build/onnx_ref and /usr/bin/python3
# with onnx.
B=${B:-build}
PY=${PY:-/usr/bin/python3}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
pass=0; fail=0
if ! $PY -c 'import onnx, numpy' 2>/dev/null; then
    echo "FAIL python3-onnx / python3-numpy missing for $PY"; echo "test_onnx.sh: 0 passed, 1 failed"; exit 1
fi
mkdir -p "$tmp/tiny"
for split in train t10k; do
    perl -e 'srand(3); print pack("N4", 0x803, 64, 28, 28); print chr(int(rand(256))) for 1 .. 64 * 784' >"$tmp/tiny/$split-images-idx3-ubyte"
    perl -e 'print pack("N2", 0x801, 64); print chr($_ % 10) for 0 .. 63' >"$tmp/tiny/$split-labels-idx1-ubyte"
done
step() { if "$@" >"$tmp/out" 2>&1; then pass=$((pass + 1)); else echo "FAIL $*"; sed 's/^/    /' "$tmp/out" | tail -5; fail=$((fail + 1)); fi; }
step $B/mnist_mlp --data "$tmp/tiny" --epochs 2 --batch 8 --quiet --save "$tmp/m.dlc"
step $B/dlc compress "$tmp/m.dlc" "$tmp/m8.dlc" --int8
step $B/dlc compress "$tmp/m.dlc" "$tmp/m8s.dlc" --int8 --calib "$tmp/tiny"
step $B/mnist_cnn --data "$tmp/tiny" --epochs 1 --batch 16 --batch-norm --quiet --threads 1 --save "$tmp/c.dlc"
step $B/onnx_ref --zoo "$tmp/z.dlc" "$tmp/tiny"
zoo_ops=Conv,BatchNormalization,Tanh,MaxPool,AveragePool,LeakyRelu,GlobalAveragePool,Reshape,MatMul,Add,Sigmoid,Transpose,Flatten,Gemm,Softmax
step $B/dlc compress "$tmp/c.dlc" "$tmp/c8.dlc" --int8
step $B/dlc compress "$tmp/c.dlc" "$tmp/c8s.dlc" --int8 --calib "$tmp/tiny"
step $B/dlc compress "$tmp/z.dlc" "$tmp/z8s.dlc" --int8 --calib "$tmp/tiny"
for v in m:fp32 m8:int8 m8s:int8 c:fp32:Conv,MaxPool,BatchNormalization,Transpose z:fp32:$zoo_ops \
         c8:int8:Conv,DequantizeLinear c8s:int8:Conv,QuantizeLinear,DequantizeLinear z8s:int8:$zoo_ops,QuantizeLinear; do
    f=${v%%:*}; kind=${v#*:}; ops=${kind#*:}; kind=${kind%%:*}; [ "$ops" = "$kind" ] && ops=
    step $B/dlc export "$tmp/$f.dlc" "$tmp/$f.onnx"
    step $B/onnx_ref "$tmp/$f.dlc" "$tmp/tiny" 64 "$tmp/$f.x" "$tmp/$f.y"
    if $PY tests/test_onnx.py "$tmp/$f.onnx" "$tmp/$f.x" "$tmp/$f.y" "$kind" $ops >"$tmp/py" 2>&1; then r=0; else r=1; fi
    grep -E '^(ok|FAIL)' "$tmp/py"
    p=$(sed -n 's/.*: \([0-9]*\) passed, \([0-9]*\) failed/\1/p' "$tmp/py"); f2=$(sed -n 's/.*: \([0-9]*\) passed, \([0-9]*\) failed/\2/p' "$tmp/py")
    if [ -z "$p" ]; then tail -5 "$tmp/py"; fail=$((fail + 1)); else pass=$((pass + p)); fail=$((fail + f2)); fi
    [ $r -ne 0 ] && [ "${f2:-1}" = 0 ] && fail=$((fail + 1))
done
echo "test_onnx.sh: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
