#!/bin/sh
# mpi_scaling.sh [ROUNDS] - data-parallel scaling of the MNIST MLP (one epoch of
# Fashion-MNIST per run) on this host, the configurations interleaved round by round:
#   1x1   build/mnist_mlp --threads 1                 one process, one thread
#   1x2   build/mnist_mlp --threads 2                 one process, two threads
#   2x1   mpirun -np 2 build/mnist_mlp_mpi --threads 1  (the shared-memory window and
#         the sharded update: each rank runs Adam on its shard of the first layer)
#   2x1n  the same with --no-shard (the window sum of whole gradients, every rank
#         updating every weight)
#   2x1m  the same as 2x1 with --mpi-allreduce (MPI_Reduce_scatter + MPI_Allgatherv)
#   2x1o  the same with --overlap (MPI_Iallreduce overlapping backward)
#   2x1b  the same as 2x1 with --comm-barrier: the time in the gradient sums themselves
#         during training, a barrier before each keeping the wait for a late rank out
#   2ind  two independent 1x1 runs at once, pinned to cores 0 and 1 (no MPI): what
#         the two cores deliver together; 2 x 1x1 / 2ind is the speedup ceiling
# at global batch 128 and 512, and the first three (c1x1, c1x2, c2x1) for the seeds'
# CNN (mnist_cnn, mnist_mlp_mpi --cnn) on the first CNN_SAMPLES (20000) training
# images at global batch 64 and 256. The MLP runs train two epochs and are timed by
# their second (each program's CSV log): the first also pays the one-time setup, the
# arena's fresh pages above all (about 10 ms a process on these VMs, 1 to 2 steps'
# worth at batch 512 in either configuration), which a longer training does not
# repeat; the whole call's seconds are printed beside it. The CNN trains one epoch.
# Prints seconds per epoch (best and median of the
# rounds), the 2-rank speedup over 1x1 and 1x2 and its efficiency (speedup / 2),
# the share of training time spent inside MPI calls (which includes waiting for the
# slower rank), the gradient sums' share of training time (2x1b), the all-reduce
# cost alone (bench/mpi/mpi_allreduce.c, after a barrier) against the step time, the
# floor under it (copying the gradient bytes another rank has just written),
# and a paper estimate for 8, 64 and 512 ranks
# from the compute per step measured with one rank (mpirun -np 1, the unfused
# update path a rank runs) and a ring all-reduce over stated links.
# Environment: B (build dir), DATA (default data/fashion-mnist), CNN_SAMPLES.
B=${B:-build}
CNN_SAMPLES=${CNN_SAMPLES:-20000}
DATA=${DATA:-data/fashion-mnist}
ROUNDS=${1:-3}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
       OMPI_MCA_btl_vader_single_copy_mechanism=none OMPI_MCA_plm_rsh_agent=false \
       OMPI_MCA_rmaps_base_oversubscribe=1
for f in mnist_mlp mnist_cnn mnist_mlp_mpi mpi_allreduce; do
    [ -x "$B/$f" ] || { echo "mpi_scaling.sh: build $B/$f first (make bench-mpi)" >&2; exit 1; }
done
[ -d "$DATA" ] || { echo "mpi_scaling.sh: no data in $DATA (make data)" >&2; exit 1; }
out=$(mktemp -d); trap 'rm -rf "$out"' EXIT
res="$out/results"   # lines: config batch train_seconds comm_seconds epoch_seconds
: >"$res"
EP=2   # epochs a run trains; the last one is timed

secs() { sed -n 's/.*train_seconds \([0-9.]*\)$/\1/p' "$1" | tail -n 1; }
last_epoch() { tail -n 1 "$1" | cut -d, -f6; }   # the CSV log's last row: its seconds
comm() { sed -n 's/^comm_seconds \([0-9.]*\) of.*/\1/p; s/^gradient_sum_seconds \([0-9.]*\) .*/\1/p' "$1" | head -n 1; }
run() { # config batch command...
    cfg=$1; b=$2; shift 2
    if ! "$@" --data "$DATA" --epochs "$EP" --batch "$b" --quiet --log "$out/csv" >"$out/log" 2>&1; then
        echo "mpi_scaling.sh: $cfg batch $b failed:" >&2; tail -5 "$out/log" >&2; exit 1
    fi
    c=$(comm "$out/log")
    echo "$cfg $b $(secs "$out/log") ${c:-0} $(last_epoch "$out/csv")" >>"$res"
}

pair() { # batch: two independent single-thread runs at once; records the slower
    b=$1
    taskset -c 0 "$B/mnist_mlp" --threads 1 --data "$DATA" --epochs "$EP" --batch "$b" --quiet --log "$out/c0" >"$out/p0" 2>&1 &
    taskset -c 1 "$B/mnist_mlp" --threads 1 --data "$DATA" --epochs "$EP" --batch "$b" --quiet --log "$out/c1" >"$out/p1" 2>&1
    wait
    a=$(secs "$out/p0"); c=$(secs "$out/p1")
    [ -n "$a" ] && [ -n "$c" ] || { echo "mpi_scaling.sh: 2ind batch $b failed" >&2; exit 1; }
    echo "2ind $b $(echo "$a $c" | awk '{ print ($1 > $2 ? $1 : $2) }') 0 $(echo "$(last_epoch "$out/c0") $(last_epoch "$out/c1")" | awk '{ print ($1 > $2 ? $1 : $2) }')" >>"$res"
}

echo "== $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; load average now:$(cut -d' ' -f1-3 /proc/loadavg | sed 's/^/ /')"
echo "== $ROUNDS interleaved rounds; the MLP trains $EP epochs of 60000 samples a run, timed by the last"
r=1
while [ "$r" -le "$ROUNDS" ]; do
    EP=2
    for b in 128 512; do
        run 1x1  "$b" "$B/mnist_mlp" --threads 1
        run 2x1  "$b" mpirun -np 2 "$B/mnist_mlp_mpi" --threads 1
        run 2x1n "$b" mpirun -np 2 "$B/mnist_mlp_mpi" --threads 1 --no-shard
        run 1x2  "$b" "$B/mnist_mlp" --threads 2
        run 2x1m "$b" mpirun -np 2 "$B/mnist_mlp_mpi" --threads 1 --mpi-allreduce
        run 2x1o "$b" mpirun -np 2 "$B/mnist_mlp_mpi" --threads 1 --overlap
        run 2x1b "$b" mpirun -np 2 "$B/mnist_mlp_mpi" --threads 1 --comm-barrier
        pair "$b"
    done
    EP=1
    for b in 64 256; do
        run c1x1 "$b" "$B/mnist_cnn" --threads 1 --train-samples "$CNN_SAMPLES"
        run c2x1 "$b" mpirun -np 2 "$B/mnist_mlp_mpi" --cnn --threads 1 --train-samples "$CNN_SAMPLES"
        run c1x2 "$b" "$B/mnist_cnn" --threads 2 --train-samples "$CNN_SAMPLES"
    done
    r=$((r + 1))
done

# one rank: what each rank computes per step (the unfused update, no partner to wait
# for), from its second epoch
EP=2
for b in 512 256 128 64 8; do
    run np1 "$b" mpirun -np 1 "$B/mnist_mlp_mpi" --threads 1
done
# three runs of the reduction benchmark; the median of their medians
: >"$out/ar"
for r in 1 2 3; do
    mpirun -np 2 "$B/mpi_allreduce" 101770 300 >>"$out/ar" 2>&1 || { cat "$out/ar" >&2; exit 1; }
done
mid3() { sed -n "s/^$1:.*median \([0-9.]*\) us.*/\1/p" "$out/ar" | sort -n | sed -n 2p; }
ar_us=$(mid3 'window sum gradients')
sg_us=$(mid3 'window scatter+gather gradients')
armpi_us=$(mid3 'allreduce gradients')
small_us=$(mid3 'allreduce bucket')
xr_us=$(mid3 'cross-core read gradients')

awk -v ar="$ar_us" -v sg="$sg_us" -v armpi="$armpi_us" -v small="$small_us" -v xr="$xr_us" -v cnn_n="$CNN_SAMPLES" '
function sort(a, n,   i, j, t) { for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t } }
function med(a, n) { return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
# row(cfg, b): the best and median seconds of an epoch of cfg at batch b into best[]
# and mid[], printed with the median seconds of the whole call and the median share
# of the whole call inside MPI calls for the MPI configurations
function row(cfg, b,   k, m, i, v, u, w, share) {
    k = cfg " " b; m = n[k]
    for (i = 1; i <= m; i++) { v[i] = t[k, i]; u[i] = wh[k, i]; w[i] = wh[k, i] > 0 ? c[k, i] / wh[k, i] : 0 }
    sort(v, m); sort(u, m); sort(w, m)
    best[k] = v[1]; mid[k] = med(v, m)
    share = cfg ~ /2x1/ ? sprintf("%13.1f%%", 100 * med(w, m)) : sprintf("%14s", "-")
    printf "%-6s %-5d %10.3f %10.3f %12.3f %s\n", cfg, b, v[1], mid[k], med(u, m), share
}
{ k = $1 " " $2; n[k]++; t[k, n[k]] = $5; wh[k, n[k]] = $3; c[k, n[k]] = $4; if ($1 == "np1") np1[$2] = $5 }
END {
    printf "\nseconds of the last epoch (best and median of the rounds), and the median of the whole call (all its epochs and the setup)\n"
    printf "%-6s %-5s %10s %10s %12s %14s\n", "config", "batch", "best s", "median s", "whole call s", "in MPI calls"
    split("1x1 1x2 2x1 2x1n 2x1m 2x1o 2x1b 2ind", cfgs, " ")
    for (bi = 1; bi <= 2; bi++) for (ci = 1; ci <= 8; ci++) row(cfgs[ci], bi == 1 ? 128 : 512)
    printf "(2x1b: the share of its training time in the gradient sums, a barrier before each)\n"
    printf "\nspeedup of 2 ranks x 1 thread (best / median of rounds); efficiency = speedup / 2\n"
    for (bi = 1; bi <= 2; bi++) {
        b = bi == 1 ? 128 : 512
        printf "  batch %3d: over 1x1 %.2fx / %.2fx (efficiency %.0f%% / %.0f%%); over 1x2 %.2fx / %.2fx;\n             without sharding over 1x1 %.2fx / %.2fx;\n             with MPI collectives over 1x1 %.2fx / %.2fx, overlapping (MPI_Iallreduce) over 1x1 %.2fx / %.2fx\n", b,
            best["1x1 " b] / best["2x1 " b], mid["1x1 " b] / mid["2x1 " b],
            50 * best["1x1 " b] / best["2x1 " b], 50 * mid["1x1 " b] / mid["2x1 " b],
            best["1x2 " b] / best["2x1 " b], mid["1x2 " b] / mid["2x1 " b],
            best["1x1 " b] / best["2x1n " b], mid["1x1 " b] / mid["2x1n " b],
            best["1x1 " b] / best["2x1m " b], mid["1x1 " b] / mid["2x1m " b],
            best["1x1 " b] / best["2x1o " b], mid["1x1 " b] / mid["2x1o " b]
        printf "    ceiling (2 x 1x1 / 2ind: two independent runs at once): %.2fx / %.2fx; 2x1 reaches %.0f%% / %.0f%% of it\n",
            2 * best["1x1 " b] / best["2ind " b], 2 * mid["1x1 " b] / mid["2ind " b],
            100 * (best["1x1 " b] / best["2x1 " b]) / (2 * best["1x1 " b] / best["2ind " b]),
            100 * (mid["1x1 " b] / mid["2x1 " b]) / (2 * mid["1x1 " b] / mid["2ind " b])
    }
    printf "\nthe CNN, %d training images per run (seconds for them):\n", cnn_n
    printf "%-6s %-5s %10s %10s %12s %14s\n", "config", "batch", "best s", "median s", "whole call s", "in MPI calls"
    split("c1x1 c1x2 c2x1", ccfg, " ")
    for (bi = 1; bi <= 2; bi++) {
        b = bi == 1 ? 64 : 256
        for (ci = 1; ci <= 3; ci++) row(ccfg[ci], b)
        printf "  batch %3d: 2 ranks x 1 thread over 1x1 %.2fx / %.2fx (best / median), over 1x2 %.2fx / %.2fx\n", b,
            best["c1x1 " b] / best["c2x1 " b], mid["c1x1 " b] / mid["c2x1 " b],
            best["c1x2 " b] / best["c2x1 " b], mid["c1x2 " b] / mid["c2x1 " b]
    }
    for (b = 8; b <= 512; b *= 2) if (b in np1) { st = int((60000 + b - 1) / b); cs[b] = 1e6 * np1[b] / st }
    printf "\nsum of the 101770 gradient floats (407 KB) over 2 ranks on this host, alone (median of 3 runs of 300, after a barrier):\n"
    printf "the shared-memory window %.1f us (its reduce-scatter + allgather, the sharded update without the update: %.1f us), MPI_Allreduce %.1f us;\n", ar, sg, armpi
    printf "the floor under both: copying the 407 KB the other rank has just written, %.1f us (in a sum each rank reads that many bytes\n", xr
    printf "  the other core wrote: half of the other rank gradients, then the sums of the other half);\n"
    printf "the one other sum of a step (the bucket: 1418 small-gradient floats, the loss and hits; MPI_Allreduce): %.1f us.\n", small
    printf "Against a 2-rank step (the sharded update: reduce-scatter + allgather + the bucket):\n"
    for (bi = 1; bi <= 2; bi++) {
        b = bi == 1 ? 128 : 512; st = int((60000 + b - 1) / b)
        step2 = 1e6 * best["2x1 " b] / st
        model = cs[b / 2] + sg + small
        printf "  batch %d: measured step %.0f us (best epoch / %d): share %.1f%%; no-wait model (one rank computing %d rows: %.0f us, + the sums): share %.1f%%, speedup over 1x1 %.2fx\n",
            b, step2, st, 100 * (sg + small) / step2, b / 2, cs[b / 2], 100 * (sg + small) / model, 1e6 * best["1x1 " b] / st / model
    }
    # paper estimate: ring all-reduce of the 407 KB (as a reduce-scatter + allgather)
    # and of the bucket: the latency terms of two all-reduces per step
    G = 101770 * 4; calls = 2
    printf "\ncompute per step on one rank, one thread (mpirun -np 1, its second epoch):"
    for (b = 8; b <= 512; b *= 2) if (b in np1) printf "  batch %d %.0f us", b, cs[b]
    printf "\n\npaper estimate: step = compute + 2 x 2(p-1) x latency + 2(p-1)/p x 407 KB / bandwidth (ring, no overlap)\n"
    printf "links: 25 GbE 3.0 GB/s, 20 us; InfiniBand 100 Gb (EDR) 12 GB/s, 1.5 us; tree: latency term 2 x 2 log2(p) instead\n"
    printf "%5s %12s %11s %18s %18s %18s\n", "ranks", "local batch", "compute us", "25GbE ring us/eff", "IB ring us/eff", "IB tree us/eff"
    for (s = 1; s <= 2; s++) for (pi = 1; pi <= 3; pi++) {
        p = pi == 1 ? 8 : (pi == 2 ? 64 : 512)
        lb = s == 1 ? 128 : 4096 / p
        comp = cs[lb]
        bw = 2 * (p - 1) / p * G
        e1 = comp + calls * 2 * (p - 1) * 20 + bw / 3.0e3
        e2 = comp + calls * 2 * (p - 1) * 1.5 + bw / 12.0e3
        e3 = comp + calls * 2 * log(p) / log(2) * 1.5 + bw / 12.0e3
        printf "%5d %5d (%s) %11.0f %11.0f %5.0f%% %11.0f %5.0f%% %11.0f %5.0f%%\n", p, lb, s == 1 ? "weak" : "4096", comp,
            e1, 100 * comp / e1, e2, 100 * comp / e2, e3, 100 * comp / e3
    }
}' "$res"
