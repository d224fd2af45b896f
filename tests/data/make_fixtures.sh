#!/bin/sh
# Regenerates the gzip/IDX fixtures of tests/test_io.c with the system gzip.
# The uncompressed contents are rebuilt by the test itself (see the comments
# there), except rand4k.bin, which is committed next to its .gz.
# Run from anywhere: sh tests/data/make_fixtures.sh
set -eu
cd "$(dirname "$0")"
t=$(mktemp -d)
trap 'rm -rf "$t"' EXIT

# Incompressible: gzip falls back to stored blocks.
[ -f rand4k.bin ] || head -c 4096 /dev/urandom > rand4k.bin
gzip -9 -n -c rand4k.bin > stored.gz
# A short text: gzip uses a fixed-Huffman block.
printf 'hello, hello, hello dlcore\n' > "$t/hello"
gzip -9 -n -c "$t/hello" > fixed.gz
# Longer text: dynamic-Huffman blocks, fastest and best levels.
seq 1 5000 > "$t/seq"
gzip -1 -n -c "$t/seq" > seq5000-1.gz
gzip -9 -n -c "$t/seq" > seq5000-9.gz
# Long runs and overlapping copies (distance < length), beyond the 32 KiB window.
yes abcdefghij | head -c 100000 > "$t/yes"
gzip -9 -n -c "$t/yes" > yes100k.gz
# Empty input.
: > "$t/empty"
gzip -n -c "$t/empty" > empty.gz
# FNAME header: gzip records the original name (and mtime) without -n.
cp "$t/hello" "$t/hello.txt"
touch -d '2020-01-01 00:00:00 UTC' "$t/hello.txt"
gzip -9 -c "$t/hello.txt" > named.gz

# A tiny MNIST-format pair: 3 images of 2x3 pixels, labels 7 0 3.
printf '\000\000\010\003\000\000\000\003\000\000\000\002\000\000\000\003' > "$t/img"
printf '\000\001\002\003\004\005\377\376\375\374\373\372\200\100\040\020\010\004' >> "$t/img"
printf '\000\000\010\001\000\000\000\003\007\000\003' > "$t/lab"
gzip -9 -n -c "$t/img" > tiny-images-idx3-ubyte.gz
gzip -9 -n -c "$t/lab" > tiny-labels-idx1-ubyte.gz
echo "fixtures written to $(pwd)"
