# dlcore - build, test, benchmark, demo.  `make help` lists the targets.
CC      ?= cc
CFLAGS  ?= -O2 -g
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

.PHONY: all help test test-build demo deps-test examples clean check-header
all: examples

help:
	@echo "make demo      install deps, fetch data, train, evaluate, save, reload the MNIST MLP"
	@echo "make test      the whole test suite (native, ASan+UBSan, AArch64 under qemu, Windows under wine)"
	@echo "make examples  build the example programs into $(B)/"
	@echo "make bench     Google Benchmark microbenchmarks with OpenBLAS as peer"
	@echo "make data      fetch Fashion-MNIST and the MNIST digits into data/"

$(B)/%: tests/%.c $(HDR) tests/dltest.h tests/dltest_alloc.h
	@mkdir -p $(@D)
	$(CC) $(WARN) $(CFLAGS) $(CPPFLAGS) $< -o $@ $(LDLIBS)

$(B)/san/%: tests/%.c $(HDR) tests/dltest.h tests/dltest_alloc.h
	@mkdir -p $(@D)
	$(CC) $(WARN) -O1 -g $(SAN) $(CPPFLAGS) $< -o $@ $(LDLIBS)

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
$(EXTRA_TEST_PLAN)
endef
export TEST_PLAN

deps-test:
	@sh tools/deps.sh test

test-build: $(TESTS) $(TESTS_SAN) $(TESTS_A64) $(TESTS_WIN) $(EXAMPLES) $(B)/dlc_inspect $(B)/mnist_json2idx

test: deps-test
	@$(MAKE) --no-print-directory data
	@$(MAKE) --no-print-directory -j2 test-build
	@echo "$$TEST_PLAN" | sh tools/run_tests.sh

# ---- demo: the main job on real data, from a fresh machine ----------------------------
DEMO_DATA ?= data/fashion-mnist
demo:
	@sh tools/deps.sh demo
	@$(MAKE) --no-print-directory data
	@$(MAKE) --no-print-directory -j2 examples $(B)/dlc_inspect
	@echo "== 1. train the Keras MNIST MLP on $(DEMO_DATA) (5 epochs, batch 32), save it"
	$(B)/mnist_mlp --data $(DEMO_DATA) --epochs 5 --batch 32 --save $(B)/mnist.dlc --log $(B)/mnist_log.csv
	@echo "== 2. training curves"
	gnuplot -e "in='$(B)/mnist_log.csv'; out='$(B)/mnist_curves.png'" tools/plot_training.gp && echo "wrote $(B)/mnist_curves.png"
	@echo "== 3. load the saved model back and evaluate it"
	$(B)/dlc_inspect $(B)/mnist.dlc --eval $(DEMO_DATA)

check-header:
	sh tools/check_header.sh

clean:
	rm -rf $(B)

-include mk/*.mk
