# dlcore - build, test, benchmark, demo.  `make help` lists the targets.
CC      ?= cc
CFLAGS  ?= -O2 -g
# The test programs keep line tables only (-g1): enough for a backtrace, and each
# file compiles the whole implementation, so full -g doubled the suite's build time.
TEST_CFLAGS ?= -O2 -g1
WARN     = -std=c99 -Wall -Wextra -Wpedantic
CPPFLAGS+= -I.
LDLIBS   = -lm -lpthread
B        = build
HDR      = dlcore.h

SAN      = -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
A64CC    = aarch64-linux-gnu-gcc
QEMU     = qemu-aarch64
# Windows: the _WIN32 code (Win32 thread pool, MoveFileEx save) built with mingw-w64
# and run under wine; Debian installs wine64 outside PATH.
WINCC    = x86_64-w64-mingw32-gcc
WINE     = WINEPREFIX=$(abspath $(B))/wineprefix WINEDEBUG=-all /usr/lib/wine/wine64

TEST_SRC = $(wildcard tests/test_*.c)
TESTS    = $(TEST_SRC:tests/%.c=$(B)/%)
TESTS_SAN= $(TEST_SRC:tests/%.c=$(B)/san/%)
TESTS_A64= $(TEST_SRC:tests/%.c=$(B)/a64/%)
TESTS_WIN= $(TEST_SRC:tests/%.c=$(B)/win/%.exe)

EXAMPLES = $(patsubst examples/%.c,$(B)/%,$(wildcard examples/*.c))

# Each mk/*.mk adds its own parts to these before the rules below read them:
#   TEST_DEPS   deps.sh groups that `make test` installs
#   TEST_BUILD  extra files `make test` builds
#   TEST_PLANS  names of variables holding extra "label command" plan lines
.DEFAULT_GOAL := all
TEST_DEPS  =
TEST_BUILD =
TEST_PLANS =
-include mk/*.mk

.PHONY: all help test test-build demo deps-test examples clean check-header
all: examples

help:
	@echo "make demo      install deps, fetch data, train the MNIST MLP, compress it, serve and query it, train the CNN briefly"
	@echo "make test      the whole test suite (native, ASan+UBSan, AArch64 under qemu, Windows under wine)"
	@echo "make examples  build the example programs into $(B)/"
	@echo "make bench     Google Benchmark microbenchmarks with OpenBLAS as peer"
	@echo "make data      fetch Fashion-MNIST and the MNIST digits into data/"

$(B)/%: tests/%.c $(HDR) tests/dltest.h tests/dltest_alloc.h
	@mkdir -p $(@D)
	$(CC) $(WARN) $(TEST_CFLAGS) $(CPPFLAGS) $< -o $@ $(LDLIBS)

$(B)/san/%: tests/%.c $(HDR) tests/dltest.h tests/dltest_alloc.h
	@mkdir -p $(@D)
	$(CC) $(WARN) -O1 -g1 $(SAN) $(CPPFLAGS) $< -o $@ $(LDLIBS)

$(B)/a64/%: tests/%.c $(HDR) tests/dltest.h tests/dltest_alloc.h
	@mkdir -p $(@D)
	$(A64CC) $(WARN) -O2 -static $(CPPFLAGS) $< -o $@ $(LDLIBS)

$(B)/win/%.exe: tests/%.c $(HDR) tests/dltest.h tests/dltest_alloc.h
	@mkdir -p $(@D)
	$(WINCC) $(WARN) -O2 $(CPPFLAGS) $< -o $@ -lm

$(B)/%: tools/%.c $(HDR)
	@mkdir -p $(@D)
	$(CC) $(WARN) $(CFLAGS) $(CPPFLAGS) $< -o $@ $(LDLIBS)

$(B)/%: examples/%.c $(HDR)
	@mkdir -p $(@D)
	$(CC) $(WARN) $(CFLAGS) $(CPPFLAGS) $< -o $@ $(LDLIBS)

examples: $(EXAMPLES)

# ---- test: everything, from a fresh machine -----------------------------------------
# Each plan line is "label command"; tools/run_tests.sh runs them and prints the
# one closing "N passed, N failed" line.
TEST_NAMES = $(TEST_SRC:tests/%.c=%)
define TEST_PLAN
$(foreach t,$(TEST_NAMES),native-$(t) $(B)/$(t)
)$(foreach t,$(TEST_NAMES),san-$(t) $(B)/san/$(t)
)$(foreach t,$(TEST_NAMES),a64-$(t) $(QEMU) $(B)/a64/$(t)
)win-prefix $(WINE) wineboot -i
$(foreach t,$(TEST_NAMES),win-$(t) $(WINE) $(B)/win/$(t).exe
)header-warnings sh tools/check_header.sh
cli B=$(B) sh tests/test_cli.sh
example-linear_regression $(B)/linear_regression
example-binary_classifier $(B)/binary_classifier
$(foreach v,$(TEST_PLANS),$($(v))
)
endef
export TEST_PLAN

deps-test:
	@sh tools/deps.sh test $(TEST_DEPS)

test-build: $(TESTS) $(TESTS_SAN) $(TESTS_A64) $(TESTS_WIN) $(EXAMPLES) $(B)/dlc $(B)/mnist_json2idx $(TEST_BUILD)

test: deps-test
	@$(MAKE) --no-print-directory data
	@$(MAKE) --no-print-directory -j2 test-build
	@echo "$$TEST_PLAN" | sh tools/run_tests.sh

# ---- demo: the main job on real data, from a fresh machine ----------------------------
DEMO_DATA ?= data/fashion-mnist
DEMO_CNN_SAMPLES ?= 20000
demo:
	@sh tools/deps.sh demo serve
	@$(MAKE) --no-print-directory data
	@$(MAKE) --no-print-directory -j2 examples $(B)/dlc $(B)/serve_helper
	@echo "== 1. train the Keras MNIST MLP on $(DEMO_DATA) (5 epochs, batch 32), save it"
	$(B)/mnist_mlp --data $(DEMO_DATA) --epochs 5 --batch 32 --save $(B)/mnist.dlc --log $(B)/mnist_log.csv
	@echo "== 2. training curves"
	gnuplot -e "in='$(B)/mnist_log.csv'; out='$(B)/mnist_curves.png'" tools/plot_training.gp && echo "wrote $(B)/mnist_curves.png"
	@echo "== 3. load the saved model back and evaluate it"
	$(B)/dlc inspect $(B)/mnist.dlc --eval $(DEMO_DATA)
	@echo "== 4. compress: int8, and prune 80% (2 epochs of fine-tuning) + int8"
	$(B)/dlc compress $(B)/mnist.dlc $(B)/mnist-int8.dlc --int8
	$(B)/dlc compress $(B)/mnist.dlc $(B)/mnist-p80-int8.dlc --prune 0.8 --data $(DEMO_DATA) --epochs 2 --int8
	$(B)/dlc eval $(B)/mnist-p80-int8.dlc --data $(DEMO_DATA)
	@echo "== 5. size and test accuracy"
	@printf '%-26s %10s %7s %9s\n' file bytes ratio accuracy; \
	 full=$$(wc -c <$(B)/mnist.dlc); for f in mnist mnist-int8 mnist-p80-int8; do \
	     n=$$(wc -c <$(B)/$$f.dlc); acc=$$($(B)/dlc eval $(B)/$$f.dlc --data $(DEMO_DATA) | tail -1 | cut -d' ' -f2); \
	     awk -v f=$$f.dlc -v n=$$n -v full=$$full -v a=$$acc 'BEGIN { printf "%-26s %10d %6.1fx %9s\n", f, n, full / n, a }'; done
	@echo "== 6. serve the pruned int8 model: dlcore-serve in the background, asked with curl (JSON, then a PNG), stopped with SIGTERM"
	sh tools/serve_demo.sh $(B)/mnist-p80-int8.dlc $(DEMO_DATA) $(B)
	@echo "== 7. train the seeds' CNN briefly: 1 epoch on the first $(DEMO_CNN_SAMPLES) images, batch 64 (full run: make bench-cnn)"
	$(B)/mnist_cnn --data $(DEMO_DATA) --epochs 1 --train-samples $(DEMO_CNN_SAMPLES) --save $(B)/mnist_cnn.dlc

check-header:
	sh tools/check_header.sh

clean:
	rm -rf $(B)

