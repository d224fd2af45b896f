# mk/hardening.mk - the configurations `make test` runs beside the native, gcc
# sanitizer, AArch64 and Windows suites (included by the Makefile):
#   clang ASan+UBSan   every tests/test_*.c built with clang -fsanitize=address,undefined
#                      -fno-sanitize-recover=undefined (clang checks what gcc does not,
#                      e.g. pointer arithmetic on NULL), run with DLCORE_ISA=$(SAN_CLANG_ISA)
#                      (default avx2) so the model paths run under the sanitizers with
#                      other kernels than the gcc build's best ISA (falls back where absent)
#   no-simd            every test built with -DDLCORE_NO_SIMD (scalar kernels only)
#   no-threads         every test built with -DDLCORE_NO_THREADS (no pool, no pthreads)
#   fuzz smoke         each libFuzzer target of tests/fuzz/ for FUZZ_SMOKE_SECONDS,
#                      with the fixed random seed FUZZ_SMOKE_SEED
#   env                $DLCORE_ISA and $DLCORE_THREADS honoured (tests/test_harden.c)
# and the opt-in long fuzz runs:
#   make fuzz                    each target for FUZZ_SECONDS (default 300)
#   make fuzz FUZZ_RUNS=1000000  each target until that many executions
#   make fuzz FUZZ_TARGETS=fuzz_idx   just those
# A target is one file, tests/fuzz/fuzz_<what>.c (see tests/fuzz/fuzz.h): it is
# picked up here by its name, built with clang -fsanitize=fuzzer,address,undefined,
# and seeded from its own fuzz_seeds() (built with -DFUZZ_SEEDS). Findings (crash,
# leak, sanitizer report, timeout, memory over 512 MB) go to $(B)/fuzz/findings/.

CLANG              ?= clang
SAN_CLANG_ISA      ?= avx2
FUZZ_SECONDS       ?= 300
FUZZ_SMOKE_SECONDS ?= 10
FUZZ_SMOKE_SEED    ?= 1
FUZZ_RUNS          ?= -1
FUZZ_SRC            = $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_TARGETS       ?= $(FUZZ_SRC:tests/fuzz/%.c=%)
FUZZ_BINS           = $(FUZZ_SRC:tests/fuzz/%.c=$(B)/fuzz/%)
FUZZ_CORPORA        = $(FUZZ_SRC:tests/fuzz/%.c=$(B)/fuzz/corpus/%.stamp)
# clang leaves the AVX-512 kernels uninstrumented (see tests/san_ignore.txt) and keeps
# line tables only: enough for the sanitizers' stack traces, a fraction of -g's cost.
CLANG_SAN_CFLAGS    = -O1 -gline-tables-only -fsanitize-ignorelist=tests/san_ignore.txt
FUZZ_FLAGS          = -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer $(CLANG_SAN_CFLAGS)

TESTS_SANCLANG   = $(TEST_SRC:tests/%.c=$(B)/san-clang/%)
TESTS_NOSIMD     = $(TEST_SRC:tests/%.c=$(B)/nosimd/%)
TESTS_NOTHREADS  = $(TEST_SRC:tests/%.c=$(B)/nothreads/%)
TEST_DEPS       += fuzz
TEST_BUILD      += $(TESTS_SANCLANG) $(TESTS_NOSIMD) $(TESTS_NOTHREADS) $(FUZZ_BINS) $(FUZZ_CORPORA)

$(B)/san-clang/%: tests/%.c $(HDR) tests/dltest.h tests/dltest_alloc.h tests/san_ignore.txt
	@mkdir -p $(@D)
	$(CLANG) $(WARN) $(CLANG_SAN_CFLAGS) $(SAN) $(CPPFLAGS) $< -o $@ $(LDLIBS)

$(B)/nosimd/%: tests/%.c $(HDR) tests/dltest.h tests/dltest_alloc.h
	@mkdir -p $(@D)
	$(CC) $(WARN) $(TEST_CFLAGS) -DDLCORE_NO_SIMD $(CPPFLAGS) $< -o $@ $(LDLIBS)

$(B)/nothreads/%: tests/%.c $(HDR) tests/dltest.h tests/dltest_alloc.h
	@mkdir -p $(@D)
	$(CC) $(WARN) $(TEST_CFLAGS) -DDLCORE_NO_THREADS $(CPPFLAGS) $< -o $@ -lm

$(B)/fuzz/%: tests/fuzz/%.c tests/fuzz/fuzz.h $(HDR) tests/san_ignore.txt
	@mkdir -p $(@D)
	$(CLANG) $(WARN) $(FUZZ_FLAGS) $(CPPFLAGS) $< -o $@ -lm -lpthread

$(B)/fuzz/seeds/%: tests/fuzz/%.c tests/fuzz/fuzz.h $(HDR)
	@mkdir -p $(@D)
	$(CLANG) $(WARN) -O1 -DFUZZ_SEEDS $(CPPFLAGS) $< -o $@ -lm -lpthread

# The seed programs write into the corpus, which the fuzzer then grows.
$(B)/fuzz/corpus/%.stamp: $(B)/fuzz/seeds/%
	@mkdir -p $(B)/fuzz/corpus/$*
	$< $(B)/fuzz/corpus/$*
	@touch $@

# test_harden's env case records what the first kernel call chose; run with the
# variables set (a supported value, then ones that must fall back to the defaults).
define TEST_PLAN_HARDENING
env-isa-threads env DLCORE_ISA=scalar DLCORE_THREADS=3 $(B)/test_harden env_
env-isa-threads-bad env DLCORE_ISA=bogus DLCORE_THREADS=x $(B)/test_harden env_
$(foreach t,$(TEST_NAMES),san-clang-$(t) env DLCORE_ISA=$(SAN_CLANG_ISA) $(B)/san-clang/$(t)
)$(foreach t,$(TEST_NAMES),nosimd-$(t) $(B)/nosimd/$(t)
)$(foreach t,$(TEST_NAMES),nothreads-$(t) $(B)/nothreads/$(t)
)$(foreach t,$(FUZZ_SRC:tests/fuzz/%.c=%),fuzz-smoke-$(t) B=$(B) FUZZ_SEED=$(FUZZ_SMOKE_SEED) sh tests/fuzz/run.sh $(t) $(FUZZ_SMOKE_SECONDS)
)
endef
TEST_PLANS += TEST_PLAN_HARDENING

.PHONY: fuzz fuzz-build
fuzz-build: $(FUZZ_BINS) $(FUZZ_CORPORA)

fuzz:
	@sh tools/deps.sh fuzz
	@$(MAKE) --no-print-directory -j2 fuzz-build
	@for t in $(FUZZ_TARGETS); do B=$(B) sh tests/fuzz/run.sh $$t $(FUZZ_SECONDS) $(FUZZ_RUNS) || fail=1; done; exit $${fail:-0}
