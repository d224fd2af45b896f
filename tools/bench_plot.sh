#!/bin/sh
# bench_plot.sh - chart of a Google Benchmark JSON written by `make bench`:
# GFLOP/s per shape, one bar per implementation (dlcore per ISA, the peer),
# and the measured fp32 FMA peak of one core as a line.
#   tools/bench_plot.sh [build/bench/gemm.json [build/bench/gemm.png]]
# Needs gnuplot and /usr/bin/python3 (standard library only).
set -eu
json=${1:-build/bench/gemm.json}
png=${2:-${json%.json}.png}
here=$(dirname "$0")
py=${PYTHON:-/usr/bin/python3}
[ -r "$json" ] || { echo "bench_plot: $json: no such file (run make bench first)" >&2; exit 1; }
data=$(mktemp "${TMPDIR:-/tmp}/bench_plot.XXXXXX")
trap 'rm -f "$data"' EXIT

# JSON -> a table, one row per shape and one column per implementation, '?' where
# a case did not run; the peak and the top of the y axis go to stdout. A case's figure is its median
# aggregate when repetitions ran, else the median of its runs; the peak is the
# best run of the peak cases, the figure the harness's peak_pct is relative to.
figs=$("$py" - "$json" "$data" <<'PY'
import json, statistics, sys
doc = json.load(open(sys.argv[1]))
runs, medians, order = {}, {}, {}
for b in doc.get("benchmarks", []):
    if b.get("error_occurred") or "GFLOP/s" not in b:
        continue
    name = b.get("run_name", b["name"])
    if name.endswith("/real_time"):
        name = name[:-len("/real_time")]
    # Registration order; the multi-thread invocation's cases after the others.
    order.setdefault(name, (not name.split("/")[-2].endswith("t1"), b.get("family_index", 0)))
    if b.get("run_type") == "aggregate":
        if b.get("aggregate_name") == "median":
            medians[name] = b["GFLOP/s"]
    else:
        runs.setdefault(name, []).append(b["GFLOP/s"])
peak, top, groups, impls, cell = 0.0, 0.0, [], [], {}
for name in sorted(order, key=order.get):
    g = medians[name] if name in medians else statistics.median(runs[name])
    parts = name.split("/")
    suite, group, impl = parts[0], "/".join(parts[1:-1]), parts[-1]
    if suite == "peak":  # the best run, as the harness quotes it
        peak = max([peak, g] + runs.get(name, []))
        continue
    if group not in groups:
        groups.append(group)
    if impl not in impls:
        impls.append(impl)
    cell[group, impl] = g
    top = max(top, g)
with open(sys.argv[2], "w") as out:
    out.write("shape " + " ".join(impls) + "\n")
    for g in groups:
        vals = ["%.2f" % cell[g, i] if (g, i) in cell else "?" for i in impls]
        out.write(g + " " + " ".join(vals) + "\n")
print("%.2f %.2f" % (peak, 1.1 * max(peak, top)))
PY
)
peak=${figs% *} ymax=${figs#* }
ncols=$(head -1 "$data" | wc -w)
if [ "$ncols" -lt 2 ]; then echo "bench_plot: $json: no GFLOP/s figures" >&2; exit 1; fi
gnuplot -e "datafile='$data'; outfile='$png'; peak=$peak; ymax=$ymax; ncols=$ncols; title='$(basename "$json")'" \
    "$here/bench_plot.gp"
echo "$png"
