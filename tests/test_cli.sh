#!/bin/sh
# test_cli.sh - the programs a user runs, fed bad input for real: each must say
# what is wrong and where, exit non-zero, and leave no partial output. Also the
# happy paths of the data tools. Run from the repository root after
# `make examples build/dlc_inspect build/mnist_json2idx`.
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
expect_ok   "dlc_inspect: reads it back"   "dense_2.b" $B/dlc_inspect "$tmp/m.dlc"
head -c 100 "$tmp/m.dlc" >"$tmp/cut.dlc"
expect_fail "dlc_inspect: truncated model"  "cut.dlc: the header says" $B/dlc_inspect "$tmp/cut.dlc"
printf 'hello' >"$tmp/txt.dlc"
expect_fail "dlc_inspect: not a model"      "too short" $B/dlc_inspect "$tmp/txt.dlc"
expect_fail "dlc_inspect: missing model"    "nope.dlc" $B/dlc_inspect "$tmp/nope.dlc"
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

# Training curves: the gnuplot script turns a CSV log into a PNG.
if command -v gnuplot >/dev/null 2>&1; then
    printf 'epoch,loss,accuracy,val_loss,val_accuracy,seconds\n1,0.5,0.8,0.45,0.82,1.0\n2,0.4,0.85,0.41,0.84,1.0\n' >"$tmp/log.csv"
    expect_ok "plot_training.gp: PNG" "" gnuplot -e "in='$tmp/log.csv'; out='$tmp/c.png'" tools/plot_training.gp
    head -c 8 "$tmp/c.png" | od -An -c | grep -q 'P   N   G' && ok "plot_training.gp: file is a PNG" || bad "plot_training.gp: file is a PNG"
fi
# The README's usage example compiles warning-free and runs as printed.
awk '/^```c$/ { on = 1; next } /^```$/ { if (on) exit } on' README.md >"$tmp/readme.c"
if ${CC:-cc} -std=c99 -Wall -Wextra -Wpedantic -Werror -O2 -I. "$tmp/readme.c" -o "$tmp/readme" -lm -lpthread >"$tmp/out" 2>&1; then
    ok "README example compiles"
    if [ -d data/fashion-mnist ]; then
        (cd "$tmp" && ln -s "$OLDPWD/data" data && ./readme) >"$tmp/out" 2>&1 && grep -q "test accuracy 0.8" "$tmp/out" \
            && [ -s "$tmp/mnist.dlc" ] && ok "README example trains, reports and saves" || bad "README example trains, reports and saves"
    fi
else
    bad "README example compiles"
fi
echo "test_cli.sh: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
