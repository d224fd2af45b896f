#!/bin/sh
# deps.sh GROUP... - installs the Debian packages a make target needs, only those
# missing, so a fresh machine works with one command and a prepared one is not
# touched. Groups: build test demo bench serve bench-serve mpi onnx fuzz.
set -eu
pkgs=""
for group in "$@"; do
    case "$group" in
        build) pkgs="$pkgs gcc make gzip" ;;
        test)  pkgs="$pkgs gcc clang g++ make gzip gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user gcc-mingw-w64-x86-64 wine64 dataset-fashion-mnist npm@npm ca-certificates gnuplot-nox" ;;
        demo)  pkgs="$pkgs gcc make gzip dataset-fashion-mnist npm@npm ca-certificates gnuplot-nox" ;;
        bench) pkgs="$pkgs g++ libbenchmark-dev libopenblas-dev libdnnl-dev python3 python3-torch python3-numpy gnuplot-nox util-linux dataset-fashion-mnist" ;;
        serve) pkgs="$pkgs gcc g++ pkg-config libmicrohttpd-dev libsimdjson-dev libcjson-dev libstb-dev curl python3 dataset-fashion-mnist" ;;
        bench-serve) pkgs="$pkgs wrk python3-flask python3-torch util-linux" ;;
        mpi)   pkgs="$pkgs libopenmpi-dev openmpi-bin" ;;
        onnx)  pkgs="$pkgs python3 python3-onnx python3-numpy" ;;
        fuzz)  pkgs="$pkgs clang libclang-rt-14-dev" ;;
        *) echo "deps.sh: unknown group '$group' (build test demo bench serve bench-serve mpi onnx fuzz)" >&2; exit 2 ;;
    esac
done
missing=""
for p in $pkgs; do
    case "$p" in *@*) command -v "${p#*@}" >/dev/null 2>&1 && continue; p=${p%@*} ;; esac
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "deps.sh: installing$missing"
if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo -n"; else
    echo "deps.sh: need root (or sudo) to install:$missing" >&2; exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq || { echo "deps.sh: apt-get update failed" >&2; exit 1; }
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null || {
    echo "deps.sh: apt-get install failed for:$missing" >&2; exit 1; }
