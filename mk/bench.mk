# mk/bench.mk - benchmarks (included by the Makefile).
#   make bench                    all cases: single-thread ones pinned to core 0, then
#                                 the 2-thread ones on both cores; JSON to $(B)/bench/gemm.json
#   make bench BENCH_FILTER=REGEX only the matching cases, e.g. 'sgemm/mlp/', 'square/.*1024',
#                                 'avx2|openblas'; names: <suite>/<set>/<op>/<MxNxK>/t<threads>/<impl>
#   make bench BENCH_MT=          without the 2-thread invocation
#   make bench-quick              a short subset (MLP shapes, no scalar, 1 repetition)
#   make bench-conv               the conv suite alone (bench/bench_conv.c): dl_conv2d_* against
#                                 oneDNN, one thread; JSON to $(B)/bench/gemm.json as well
#   make bench-plot               $(B)/bench/gemm.json -> $(B)/bench/gemm.png
#   make bench-mlp                MNIST MLP training: build/mnist_mlp against PyTorch, batch 32
#                                 and 128; BENCH_MLP_ARGS='-r 3' for 3 interleaved rounds
#   make bench-ab                 one GEMM shape, two versions of dlcore.h and OpenBLAS
#                                 interleaved in one process: BENCH_AB_OLD (default: the
#                                 committed dlcore.h), BENCH_AB_NEW (default: dlcore.h),
#                                 BENCH_AB_SHAPE='NN 2048 2048 2048', BENCH_AB_ROUNDS=7
# The benchmark code is compiled with plain -O2, as a user would: dlcore picks its
# kernels at run time. The peer runs the kernels OpenBLAS picks for the CPU: an
# inherited OPENBLAS_CORETYPE is dropped (named in the report) unless
# BENCH_OPENBLAS_CORETYPE=keep; see bench/bench_gemm.c and bench/mlp_vs_torch.sh.

BENCH_CFLAGS   ?= -O2 -g
BENCH_CXXFLAGS ?= -O2 -g -std=c++11 -Wall -Wextra
BENCH_CPPFLAGS ?=
BENCH_BLAS_INC ?= -I/usr/include/x86_64-linux-gnu/openblas-pthread
BENCH_LIBS     ?= -lbenchmark -lopenblas
# oneDNN, the conv suite's peer (bench/bench_conv.c); Debian's build threads through libgomp
BENCH_LIBS     += -ldnnl -lgomp
BENCH_PIN      ?= taskset -c 0
BENCH_FILTER   ?= .
BENCH_ARGS     ?= --benchmark_repetitions=5 --benchmark_min_time=0.2 \
                  --benchmark_enable_random_interleaving=true \
                  --benchmark_display_aggregates_only=true
BENCH_MT       ?= yes
BENCH_PY       ?= /usr/bin/python3
BENCH_MLP_ARGS ?=
BENCH_AB_OLD   ?=
BENCH_AB_NEW   ?= dlcore.h
BENCH_AB_SHAPE ?= NN 2048 2048 2048
BENCH_AB_ROUNDS ?= 7
BENCH_DIR       = $(B)/bench
BENCH_BIN       = $(BENCH_DIR)/bench
BENCH_OBJS      = $(BENCH_DIR)/harness.o \
                  $(patsubst bench/%.c,$(BENCH_DIR)/%.o,$(wildcard bench/*.c))

.PHONY: deps-bench bench bench-quick bench-conv bench-build bench-plot bench-mlp bench-ab

bench-build: $(BENCH_BIN)

$(BENCH_BIN): $(BENCH_OBJS)
	$(CXX) $(BENCH_OBJS) -o $@ $(BENCH_LIBS) $(LDLIBS)

$(BENCH_DIR)/harness.o: bench/harness.cc bench/bench.h
	@mkdir -p $(@D)
	$(CXX) $(BENCH_CXXFLAGS) $(CPPFLAGS) -c $< -o $@

$(BENCH_DIR)/%.o: bench/%.c bench/bench.h dlcore.h
	@mkdir -p $(@D)
	$(CC) $(WARN) $(BENCH_CFLAGS) $(CPPFLAGS) $(BENCH_CPPFLAGS) $(BENCH_BLAS_INC) -c $< -o $@

# Two invocations: taskset pins the single-thread cases before any library starts
# its threads; the 2-thread cases need both cores. Their JSON files are merged.
define BENCH_MERGE_PY
import json, os, sys
docs = []
for f in sys.argv[2:]:
    try:
        docs.append(json.load(open(f)))
    except (OSError, ValueError):
        pass
if docs:
    docs[0]["benchmarks"] = [b for d in docs for b in d.get("benchmarks", [])]
    json.dump(docs[0], open(sys.argv[1], "w"), indent=1)
endef
export BENCH_MERGE_PY

deps-bench:
	@sh tools/deps.sh bench

bench: deps-bench
	@$(MAKE) --no-print-directory $(BENCH_BIN)
	@rm -f $(BENCH_DIR)/gemm.json $(BENCH_DIR)/gemm-t1.json $(BENCH_DIR)/gemm-mt.json
	$(BENCH_PIN) $(BENCH_BIN) --cases=t1 --benchmark_filter='$(BENCH_FILTER)' $(BENCH_ARGS) \
	    --benchmark_out=$(BENCH_DIR)/gemm-t1.json
	$(if $(BENCH_MT),$(BENCH_BIN) --cases=mt --benchmark_filter='$(BENCH_FILTER)' $(BENCH_ARGS) \
	    --benchmark_out=$(BENCH_DIR)/gemm-mt.json)
	@$(BENCH_PY) -c "$$BENCH_MERGE_PY" $(BENCH_DIR)/gemm.json \
	    $(BENCH_DIR)/gemm-t1.json $(BENCH_DIR)/gemm-mt.json
	@echo "JSON: $(BENCH_DIR)/gemm.json   plot: make bench-plot"

bench-quick:
	@$(MAKE) --no-print-directory bench BENCH_FILTER='fma|mlp/.*(openblas|avx)' \
	    BENCH_ARGS='--benchmark_min_time=0.1' BENCH_MT=

bench-conv:
	@$(MAKE) --no-print-directory bench BENCH_FILTER='conv/' BENCH_MT=

bench-plot:
	tools/bench_plot.sh $(BENCH_DIR)/gemm.json $(BENCH_DIR)/gemm.png

bench-mlp: deps-bench $(B)/mnist_mlp
	bench/mlp_vs_torch.sh $(BENCH_MLP_ARGS)

# Each side is a whole private copy of dlcore (bench/ab/ab_side.c); the old one is
# taken from git unless BENCH_AB_OLD names a file.
bench-ab: deps-bench
	@mkdir -p $(BENCH_DIR)
	@if [ -n "$(BENCH_AB_OLD)" ]; then cp "$(BENCH_AB_OLD)" $(BENCH_DIR)/ab_old.h; \
	 else git show HEAD:dlcore.h > $(BENCH_DIR)/ab_old.h; fi
	@cp "$(BENCH_AB_NEW)" $(BENCH_DIR)/ab_new.h
	$(CC) $(WARN) $(BENCH_CFLAGS) -I$(BENCH_DIR) -DAB_HEADER='"ab_old.h"' -DAB_FN=ab_gemm_old \
	    -c bench/ab/ab_side.c -o $(BENCH_DIR)/ab_old.o
	$(CC) $(WARN) $(BENCH_CFLAGS) -I$(BENCH_DIR) -DAB_HEADER='"ab_new.h"' -DAB_FN=ab_gemm_new \
	    -c bench/ab/ab_side.c -o $(BENCH_DIR)/ab_new.o
	$(CC) $(WARN) $(BENCH_CFLAGS) $(BENCH_BLAS_INC) bench/ab/ab_gemm.c $(BENCH_DIR)/ab_old.o \
	    $(BENCH_DIR)/ab_new.o -o $(BENCH_DIR)/ab_gemm -lopenblas $(LDLIBS)
	$(if $(filter keep,$(BENCH_OPENBLAS_CORETYPE)),,env -u OPENBLAS_CORETYPE) \
	    $(BENCH_PIN) $(BENCH_DIR)/ab_gemm $(BENCH_AB_SHAPE) $(BENCH_AB_ROUNDS)
