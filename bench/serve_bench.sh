#!/bin/sh
# serve_bench.sh - make bench-serve: wrk posting one real 784-float instance (Fashion-MNIST
# test image 0, bench/peers/post.lua) to dlcore-serve and to the seed-style Flask stub
# (bench/peers/flask_serve.py), in the same run, interleaved over ROUNDS rounds:
#   A. each server pinned to core 0 (one HTTP thread; dlcore-serve as it starts by
#      default, batching on, and again with batching off), wrk pinned to core 1,
#      1 thread, 8 connections: requests/s, p50, p99, and the ratio;
#      the same load against bench/peers/mhd_floor.c: libmicrohttpd answering a fixed
#      prediction, alone (the HTTP floor) and after cJSON's parse of each body;
#   B. dlcore-serve with batching on, both cores, 64 connections: predictions/s.
# Environment: B (build dir), SECONDS_PER_RUN (10), ROUNDS (2), MODEL (build/mnist.dlc if
# it exists, else an untrained model of the same shape: the cost is the same).
set -u
B=${B:-build}; T=${SECONDS_PER_RUN:-10}; ROUNDS=${ROUNDS:-2}; PY=/usr/bin/python3
tmp=$(mktemp -d); srv=""
cleanup() { [ -n "$srv" ] && kill "$srv" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
for p in wrk taskset curl; do command -v $p >/dev/null || { echo "serve_bench: $p is missing"; exit 1; }; done
MODEL=${MODEL:-$B/mnist.dlc}
[ -f "$MODEL" ] || { MODEL=$tmp/m.dlc; $B/serve_helper model "$MODEL" 1 || exit 1; }
$B/serve_helper body data/fashion-mnist 0 1 rows "$tmp/serve.json" || exit 1
$PY -c 'import json, sys; d = json.load(open(sys.argv[1])); json.dump({"x": d["instances"][0]}, open(sys.argv[2], "w"))' \
    "$tmp/serve.json" "$tmp/flask.json" || exit 1
port_free() { ! curl -s -o /dev/null "http://127.0.0.1:$1/" 2>/dev/null; }
wait_up() {   # URL: until it answers, at most 60 s (Flask imports torch first)
    for _ in $(seq 600); do curl -s -o /dev/null "$1" && return 0; kill -0 "$srv" 2>/dev/null || return 1; sleep 0.1; done; return 1
}
# run_wrk NAME CPUSPEC THREADS CONNS URL BODY -> appends "name rps p50_ms p99_ms errors" to $tmp/results
run_wrk() {
    name=$1; cpus=$2; th=$3; conns=$4; url=$5; body=$6
    if [ -n "$cpus" ]; then pin="taskset -c $cpus"; else pin=""; fi
    BODY=$body $pin wrk -t"$th" -c"$conns" -d"${T}s" --latency -s bench/peers/post.lua "$url" >"$tmp/wrk.txt" 2>&1
    $PY - "$name" "$tmp/wrk.txt" >>"$tmp/results" <<'EOF'
import re, sys
t = open(sys.argv[2]).read()
def ms(s):
    v, u = re.match(r"([\d.]+)(us|ms|s)", s).groups()
    return float(v) * {"us": 1e-3, "ms": 1, "s": 1e3}[u]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
# anchored: "+/- Stdev" columns such as 90.50% would match an unanchored "50%"
p50 = ms(re.search(r"^\s*50%\s+(\S+)", t, re.M).group(1)); p99 = ms(re.search(r"^\s*99%\s+(\S+)", t, re.M).group(1))
bad = sum(int(x) for x in re.findall(r"Non-2xx or 3xx responses: (\d+)", t))
err = re.search(r"Socket errors: (.*)", t)
print(sys.argv[1], rps, p50, p99, bad, (err.group(1).replace(" ", "") if err else "-"))
EOF
    tail -n 1 "$tmp/results"
}
: >"$tmp/results"
echo "CPU: $(lscpu | sed -n 's/^Model name: *//p'); $(nproc) cores; load: $(cut -d' ' -f1-3 /proc/loadavg); $T s per run, $ROUNDS rounds"
echo "columns: name req/s p50_ms p99_ms non-2xx socket-errors"
PF=18560; PD=18561
for r in $(seq "$ROUNDS"); do
    taskset -c 0 $PY bench/peers/flask_serve.py $PF >"$tmp/flask.log" 2>&1 &
    srv=$!
    wait_up "http://127.0.0.1:$PF/" || { echo "Flask did not start:"; cat "$tmp/flask.log"; exit 1; }
    run_wrk flask-1core-8conn 1 1 8 "http://127.0.0.1:$PF/predict" "$tmp/flask.json"
    kill "$srv"; wait "$srv" 2>/dev/null; srv=""
    for mode in plain cjson; do
        if [ $mode = plain ]; then arg=""; else arg=cjson; fi
        # shellcheck disable=SC2086
        taskset -c 0 $B/bench/mhd_floor $PD $arg 2>"$tmp/serve.log" &
        srv=$!
        wait_up "http://127.0.0.1:$PD/" || { echo "mhd_floor did not start:"; cat "$tmp/serve.log"; exit 1; }
        run_wrk floor-$mode-1core-8conn 1 1 8 "http://127.0.0.1:$PD/v1/models/m:predict" "$tmp/serve.json"
        kill "$srv"; wait "$srv" 2>/dev/null; srv=""
    done
    for mode in on off; do
        if [ $mode = on ]; then extra=""; else extra="--max-batch 1"; fi
        # shellcheck disable=SC2086
        taskset -c 0 $B/dlcore-serve --model m="$MODEL" --listen 127.0.0.1:$PD --threads 1 $extra 2>"$tmp/serve.log" &
        srv=$!
        wait_up "http://127.0.0.1:$PD/healthz" || { echo "dlcore-serve did not start:"; cat "$tmp/serve.log"; exit 1; }
        run_wrk dlcore-1core-8conn-batching-$mode 1 1 8 "http://127.0.0.1:$PD/v1/models/m:predict" "$tmp/serve.json"
        kill "$srv"; wait "$srv" 2>/dev/null; srv=""
    done
done
$B/dlcore-serve --model m="$MODEL" --listen 127.0.0.1:$PD --threads 2 2>"$tmp/serve.log" &
srv=$!
wait_up "http://127.0.0.1:$PD/healthz" || { echo "dlcore-serve did not start:"; cat "$tmp/serve.log"; exit 1; }
run_wrk dlcore-batching-2cores-64conn "" 2 64 "http://127.0.0.1:$PD/v1/models/m:predict" "$tmp/serve.json"
curl -s "http://127.0.0.1:$PD/metrics" | grep -E '^dlserve_batch_size_(sum|count)|^dlserve_requests_total' >"$tmp/metrics"
kill "$srv"; wait "$srv" 2>/dev/null; srv=""
$PY - "$tmp/results" "$tmp/metrics" <<'EOF'
import re, sys, statistics as st
rows = [l.split() for l in open(sys.argv[1])]
def agg(name):
    rs = [r for r in rows if r[0] == name]
    return (st.mean(float(r[1]) for r in rs), st.mean(float(r[2]) for r in rs), max(float(r[3]) for r in rs),
            sum(int(r[4]) for r in rs))
f, d, o, b = agg("flask-1core-8conn"), agg("dlcore-1core-8conn-batching-on"), agg("dlcore-1core-8conn-batching-off"), agg("dlcore-batching-2cores-64conn")
h, hj = agg("floor-plain-1core-8conn"), agg("floor-cjson-1core-8conn")
m = open(sys.argv[2]).read()
calls = int(re.search(r"dlserve_batch_size_count\S* (\d+)", m).group(1)); n = int(re.search(r"dlserve_batch_size_sum\S* (\d+)", m).group(1))
print()
rows = [("server, load", None), ("Flask stub, 1 core, wrk 1 thread, 8 connections", f),
        ("dlcore-serve, same, default (batching on)", d), ("dlcore-serve, same, batching off (--max-batch 1)", o),
        ("dlcore-serve, batching on, 2 cores, 64 connections", b), ("HTTP floor: libmicrohttpd, fixed answer, 1 core", h),
        ("the floor plus cJSON's parse of each body", hj)]
for name, v in rows:
    if v is None:
        print("| %-52s | req/s   | p50 ms | p99 ms | non-2xx |" % name)
        print("|%s|---------|--------|--------|---------|" % ("-" * 54))
    else:
        print("| %-52s | %7.0f | %6.2f | %6.2f | %7d |" % ((name,) + v))
print()
print("dlcore-serve / Flask requests/s: %.1fx (batching off: %.1fx; target >= 30x); dlcore p99 %.2f ms (target <= 1 ms)" % (d[0] / f[0], o[0] / f[0], d[2]))
print("per request (1 core, from requests/s): HTTP floor %.1f us, cJSON's parse %.1f us, dlcore-serve %.1f us (batching off %.1f us)"
      % (1e6 / h[0], 1e6 / hj[0] - 1e6 / h[0], 1e6 / d[0], 1e6 / o[0]))
print("batching on: %.0f predictions/s (target >= 50000), mean batch %.1f rows over %d dl_predict calls" % (b[0], n / max(calls, 1), calls))
EOF
