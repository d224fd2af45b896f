#!/bin/sh
# test_cli.sh - the programs a user runs, fed bad input for real: each must say
# what is wrong and where, exit non-zero, and leave no partial output. Also the
# happy paths of the data tools. Run from the repository root after
# `make examples build/dlc build/mnist_json2idx`.
B=${B:-build}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
pass=0; fail=0
ok()   { echo "ok   $1"; pass=$((pass + 1)); }
bad()  { echo "FAIL $1"; sed 's/^/    /' "$tmp/out" | head -10; fail=$((fail + 1)); }
# expect_fail NAME PATTERN CMD...: CMD exits non-zero and its output matches PATTERN.
expect_fail() {
    name=$1; pat=$2; shift 2
    if "$@" >"$tmp/out" 2>&1; then bad "$name (exited 0)"; return; fi
    if grep -q -- "$pat" "$tmp/out"; then ok "$name"; else bad "$name (no '$pat' in output)"; fi
}
# expect_rc NAME STATUS PATTERN CMD...: CMD exits with STATUS, its output matches PATTERN
# and holds exactly one line (a one-line error, or the usage after it for status 2).
expect_rc() {
    name=$1; rc=$2; pat=$3; shift 3
    "$@" >"$tmp/out" 2>&1; got=$?
    if [ "$got" -ne "$rc" ]; then bad "$name (exit $got, expected $rc)"; return; fi
    if ! grep -q -- "$pat" "$tmp/out"; then bad "$name (no '$pat' in output)"; return; fi
    if [ "$rc" = 1 ] && [ "$(wc -l <"$tmp/out")" -ne 1 ]; then bad "$name (not one line)"; return; fi
    ok "$name"
}
expect_ok() {
    name=$1; pat=$2; shift 2
    if ! "$@" >"$tmp/out" 2>&1; then bad "$name (exit non-zero)"; return; fi
    if grep -q -- "$pat" "$tmp/out"; then ok "$name"; else bad "$name (no '$pat' in output)"; fi
}

expect_fail "mnist_mlp: missing data dir"   "/nonexistent/train-images-idx3-ubyte" $B/mnist_mlp --data /nonexistent
expect_fail "mnist_mlp: unknown option"     "unknown option" $B/mnist_mlp --bogus 1
expect_fail "mnist_mlp: non-numeric value"  "must be numbers" $B/mnist_mlp --epochs five
expect_fail "mnist_mlp: zero batch"         "must be positive" $B/mnist_mlp --batch 0

# A truncated images file next to good labels: the IDX reader names the file.
mkdir -p "$tmp/trunc"
gzip -dc tests/data/tiny-images-idx3-ubyte.gz | head -c 20 >"$tmp/trunc/train-images-idx3-ubyte"
gzip -dc tests/data/tiny-labels-idx1-ubyte.gz >"$tmp/trunc/train-labels-idx1-ubyte"
expect_fail "mnist_mlp: truncated IDX"      "train-images-idx3-ubyte" $B/mnist_mlp --data "$tmp/trunc"

# A tiny MNIST-shaped data set (20 random 28x28 images per split), made with perl.
mkdir -p "$tmp/tiny"
for split in train t10k; do
    perl -e 'srand(1); print pack("N4", 0x803, 20, 28, 28); print chr(int(rand(256))) for 1 .. 20 * 784' >"$tmp/tiny/$split-images-idx3-ubyte"
    perl -e 'print pack("N2", 0x801, 20); print chr($_ % 10) for 0 .. 19' >"$tmp/tiny/$split-labels-idx1-ubyte"
done

# Model files: a real one, then damaged copies.
expect_ok   "mnist_mlp: tiny run saves a model" "test_accuracy" $B/mnist_mlp --data "$tmp/tiny" --epochs 1 --batch 2 --quiet --save "$tmp/m.dlc"
expect_ok   "mnist_mlp: --profile prints the step profile" "profile: 10 training steps" $B/mnist_mlp --data "$tmp/tiny" --epochs 1 --batch 2 --quiet --profile
expect_ok   "dlc inspect: reads it back"   "dense_2.b" $B/dlc inspect "$tmp/m.dlc"
expect_ok   "dlc inspect: encodings and bytes" "dense_1.w .* f32 *401408" $B/dlc inspect "$tmp/m.dlc"
expect_fail "mnist_cnn: unknown option"     "unknown option" $B/mnist_cnn --bogus 1
expect_fail "mnist_cnn: negative shift"     "augment takes" $B/mnist_cnn --augment -1
expect_ok   "mnist_cnn: tiny augmented run saves a model" "test_accuracy" $B/mnist_cnn --data "$tmp/tiny" --epochs 1 --batch 4 --quiet --augment 2 --flip --save "$tmp/c.dlc"
expect_ok   "dlc inspect: reads the CNN back" "conv2d_3.w" $B/dlc inspect "$tmp/c.dlc"
expect_ok   "mnist_cnn: --batch-norm saves a model" "test_accuracy" $B/mnist_cnn --data "$tmp/tiny" --epochs 1 --batch 4 --quiet --batch-norm --save "$tmp/cbn.dlc"
expect_ok   "dlc inspect: batch norm's moving statistics" "batch_norm_3.moving_var *\[128\] .* f32 state *512" $B/dlc inspect "$tmp/cbn.dlc"
head -c 100 "$tmp/m.dlc" >"$tmp/cut.dlc"
expect_rc   "dlc inspect: truncated model"  1 "cut.dlc: the header says" $B/dlc inspect "$tmp/cut.dlc"
printf 'hello' >"$tmp/txt.dlc"
expect_rc   "dlc inspect: not a model"      1 "too short" $B/dlc inspect "$tmp/txt.dlc"
expect_rc   "dlc inspect: missing model"    1 "nope.dlc" $B/dlc inspect "$tmp/nope.dlc"

# dlc: eval, compress, export, bench; bad arguments exit 2, bad files and data exit 1.
$B/dlc eval "$tmp/m.dlc" --data "$tmp/tiny" >"$tmp/out" 2>&1
tail -1 "$tmp/out" | grep -Eq '^test_accuracy [0-9.]+ test_loss [0-9.]+$' && ok "dlc eval: last line" || bad "dlc eval: last line"
expect_ok   "dlc compress --int8: report"   "size_before [0-9]* size_after [0-9]* ratio 3\." $B/dlc compress "$tmp/m.dlc" "$tmp/m8.dlc" --int8 --data "$tmp/tiny"
expect_ok   "dlc compress --int8: accuracy" "accuracy_before .* accuracy_after" $B/dlc compress "$tmp/m.dlc" "$tmp/m8.dlc" --int8 --data "$tmp/tiny"
expect_ok   "dlc inspect: int8 tensors"     "dense_1.w .* int8 " $B/dlc inspect "$tmp/m8.dlc"
expect_ok   "dlc eval: int8 file"           "(int8)" $B/dlc eval "$tmp/m8.dlc" --data "$tmp/tiny"
expect_ok   "dlc compress --prune --int8"   "ratio 1[0-9]\." $B/dlc compress "$tmp/m.dlc" "$tmp/p8.dlc" --prune 0.8 --data "$tmp/tiny" --epochs 1 --batch 4 --int8
expect_ok   "dlc inspect: sparse int8"      "dense_1.w .* sparse-int8" $B/dlc inspect "$tmp/p8.dlc"
expect_ok   "dlc compress --fp16"           "ratio 2\.00" $B/dlc compress "$tmp/m.dlc" "$tmp/h.dlc" --fp16
expect_ok   "dlc inspect: f16"              "dense_2.w .* f16 *2560" $B/dlc inspect "$tmp/h.dlc"
expect_ok   "dlc compress --int8 --calib"   "size_after" $B/dlc compress "$tmp/m.dlc" "$tmp/m8s.dlc" --int8 --calib "$tmp/tiny"
expect_ok   "dlc export"                    "opset 13" $B/dlc export "$tmp/m8.dlc" "$tmp/m8.onnx"
expect_ok   "dlc bench"                     "int8_us_per_sample" $B/dlc bench "$tmp/m.dlc" --batch 3
expect_rc   "dlc: no command"               2 "usage" $B/dlc
expect_rc   "dlc: unknown command"          2 "unknown command 'frob'" $B/dlc frob
expect_rc   "dlc eval: no --data"           2 "eval takes" $B/dlc eval "$tmp/m.dlc"
expect_rc   "dlc compress: nothing to do"   2 "needs --int8" $B/dlc compress "$tmp/m.dlc" "$tmp/x.dlc"
expect_rc   "dlc compress: prune without data" 2 "needs --data" $B/dlc compress "$tmp/m.dlc" "$tmp/x.dlc" --prune 0.5
expect_rc   "dlc compress: bad sparsity"    2 "sparsity in" $B/dlc compress "$tmp/m.dlc" "$tmp/x.dlc" --prune 1.5 --data "$tmp/tiny" --epochs 1
expect_rc   "dlc compress: bad epochs"      2 "--epochs needs" $B/dlc compress "$tmp/m.dlc" "$tmp/x.dlc" --prune 0.5 --data "$tmp/tiny" --epochs x
expect_rc   "dlc compress: calib alone"     2 "goes with --int8" $B/dlc compress "$tmp/m.dlc" "$tmp/x.dlc" --calib "$tmp/tiny"
expect_rc   "dlc compress: unknown option"  2 "unknown or incomplete option '--bogus'" $B/dlc compress "$tmp/m.dlc" "$tmp/x.dlc" --bogus
expect_rc   "dlc bench: bad batch"          2 "--batch needs" $B/dlc bench "$tmp/m.dlc" --batch 0
expect_rc   "dlc compress: bad model"       1 "too short" $B/dlc compress "$tmp/txt.dlc" "$tmp/x.dlc" --int8
expect_rc   "dlc compress: prune an int8 model" 1 "needs a float model" $B/dlc compress "$tmp/m8.dlc" "$tmp/x.dlc" --prune 0.5 --data "$tmp/tiny" --epochs 1
expect_rc   "dlc eval: missing data"        1 "nodata" $B/dlc eval "$tmp/m.dlc" --data "$tmp/nodata"
expect_rc   "dlc export: bad model"         1 "cut.dlc" $B/dlc export "$tmp/cut.dlc" "$tmp/x.onnx"
expect_rc   "dlc export: unwritable"        1 "cannot create" $B/dlc export "$tmp/m.dlc" "$tmp/no/dir/x.onnx"
expect_rc   "dlc compress: unwritable"      1 "cannot create" $B/dlc compress "$tmp/m.dlc" "$tmp/no/dir/x.dlc" --int8
[ -e "$tmp/x.dlc" ] || [ -e "$tmp/x.onnx" ] && bad "dlc: no output after errors" || ok "dlc: no output after errors"
expect_fail "mnist_mlp: save into a missing dir" "cannot create" $B/mnist_mlp --data "$tmp/tiny" --epochs 1 --batch 2 --quiet --save "$tmp/no/dir/m.dlc"
[ -e "$tmp/no/dir/m.dlc.tmp" ] && bad "no partial file left" || ok "no partial file left"

# mnist_json2idx: a good little digits tree, then malformed JSON.
mkdir -p "$tmp/digits" "$tmp/idx"
for d in 0 1 2 3 4 5 6 7 8 9; do
    awk -v d=$d 'BEGIN { printf "{\"data\":["; for (i = 0; i < 784 * 2; i++) printf "%s%.3f", (i ? "," : ""), (i % 784 == d) ? 1 : 0; print "]}" }' >"$tmp/digits/$d.json"
done
expect_ok   "mnist_json2idx: converts"      "" $B/mnist_json2idx "$tmp/digits" "$tmp/idx"
[ -f "$tmp/idx/train-images-idx3-ubyte" ] && [ -f "$tmp/idx/t10k-labels-idx1-ubyte" ] && ok "mnist_json2idx: wrote IDX files" || bad "mnist_json2idx: wrote IDX files"
printf '{"data":[0.1,0.2,' >"$tmp/digits/3.json"
mkdir -p "$tmp/idx2"
expect_fail "mnist_json2idx: malformed JSON" "3.json" $B/mnist_json2idx "$tmp/digits" "$tmp/idx2"
[ -z "$(ls -A "$tmp/idx2")" ] && ok "mnist_json2idx: no partial output" || { ls "$tmp/idx2" >"$tmp/out"; bad "mnist_json2idx: no partial output"; }

# Training curves: the gnuplot script turns a CSV log into a PNG (gnuplot comes with
# `make test`'s dependencies: missing is a failure).
if command -v gnuplot >/dev/null 2>&1; then
    printf 'epoch,loss,accuracy,val_loss,val_accuracy,seconds\n1,0.5,0.8,0.45,0.82,1.0\n2,0.4,0.85,0.41,0.84,1.0\n' >"$tmp/log.csv"
    expect_ok "plot_training.gp: PNG" "" gnuplot -e "in='$tmp/log.csv'; out='$tmp/c.png'" tools/plot_training.gp
    head -c 8 "$tmp/c.png" | od -An -c | grep -q 'P   N   G' && ok "plot_training.gp: file is a PNG" || bad "plot_training.gp: file is a PNG"
else
    echo "gnuplot is not installed" >"$tmp/out"; bad "plot_training.gp: gnuplot present"
fi
# The README's usage example compiles warning-free and runs as printed.
awk '/^```c$/ { on = 1; next } /^```$/ { if (on) exit } on' README.md >"$tmp/readme.c"
if ${CC:-cc} -std=c99 -Wall -Wextra -Wpedantic -Werror -O2 -I. "$tmp/readme.c" -o "$tmp/readme" -lm -lpthread >"$tmp/out" 2>&1; then
    ok "README example compiles"
    if [ -d data/fashion-mnist ]; then
        (cd "$tmp" && ln -s "$OLDPWD/data" data && ./readme) >"$tmp/out" 2>&1 && grep -q "test accuracy 0.8" "$tmp/out" \
            && [ -s "$tmp/mnist.dlc" ] && ok "README example trains, reports and saves" || bad "README example trains, reports and saves"
    else
        echo "data/fashion-mnist is missing (make data)" >"$tmp/out"; bad "README example trains, reports and saves"
    fi
else
    bad "README example compiles"
fi
echo "test_cli.sh: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
