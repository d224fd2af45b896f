# dlcore - build, test, benchmark, demo.  `make help` lists the targets.
CC      ?= cc
CFLAGS  ?= -O2 -g
WARN     = -std=c99 -Wall -Wextra -Wpedantic
CPPFLAGS+= -I.
LDLIBS   = -lm -lpthread
B        = build
HDR      = dlcore.h $(wildcard dev/*.h)

SAN      = -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
A64CC    = aarch64-linux-gnu-gcc
QEMU     = qemu-aarch64

TEST_SRC = $(wildcard tests/test_*.c)
TESTS    = $(TEST_SRC:tests/%.c=$(B)/%)
TESTS_SAN= $(TEST_SRC:tests/%.c=$(B)/san/%)
TESTS_A64= $(TEST_SRC:tests/%.c=$(B)/a64/%)

.PHONY: all help test test-native test-san test-a64 deps-test examples clean
all: examples

help:
	@echo "make demo      install deps, fetch data, train + evaluate the MNIST MLP"
	@echo "make test      the whole test suite (native, ASan+UBSan, AArch64 under qemu)"
	@echo "make examples  build the example programs into $(B)/"
	@echo "make bench     Google Benchmark microbenchmarks with OpenBLAS as peer"
	@echo "make data      fetch Fashion-MNIST and the MNIST digits into data/"

$(B)/%: tests/%.c $(HDR) tests/dltest.h
	@mkdir -p $(@D)
	$(CC) $(WARN) $(CFLAGS) $(CPPFLAGS) $< -o $@ $(LDLIBS)

$(B)/san/%: tests/%.c $(HDR) tests/dltest.h
	@mkdir -p $(@D)
	$(CC) $(WARN) -O1 -g $(SAN) $(CPPFLAGS) $< -o $@ $(LDLIBS)

$(B)/a64/%: tests/%.c $(HDR) tests/dltest.h
	@mkdir -p $(@D)
	$(A64CC) $(WARN) -O2 -static $(CPPFLAGS) $< -o $@ $(LDLIBS)

-include mk/*.mk
