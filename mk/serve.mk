# mk/serve.mk - dlcore-serve, the HTTP prediction server (included by the Makefile).
#   make build/dlcore-serve    the server (libmicrohttpd, simdjson, cJSON, stb_image from
#                              Debian: tools/deps.sh serve installs what is missing);
#                              examples/serve_json.cc is its one C++ file (simdjson's API)
#   make bench-serve           wrk against dlcore-serve, the Flask stub and the HTTP floor
#                              (bench/peers/mhd_floor.c), each pinned to the same core, wrk
#                              on the other; then batching on 2 cores
#   make soak-serve            60 s of load plus bad requests: 0 failures, 0 5xx, RSS flat
# Tests (make test): tests/test_serve.py against the native and the ASan+UBSan server.

SERVE_LIBS := $(shell pkg-config --libs libmicrohttpd libcjson 2>/dev/null || echo -lmicrohttpd -lcjson)
SERVE_JSON_LIBS = -lsimdjson -lstdc++
COMMA := ,
SERVE_CXXFLAGS ?= -std=c++17 -O2 -g -Wall -Wextra -Wpedantic
SERVE_PY   ?= /usr/bin/python3
SERVE_SECONDS ?= 10

EXAMPLES := $(filter-out $(B)/serve,$(EXAMPLES))
examples: $(B)/dlcore-serve

.PHONY: deps-serve bench-serve soak-serve
deps-serve:
	@sh tools/deps.sh serve

$(B)/serve_json.o: examples/serve_json.cc | deps-serve
	@mkdir -p $(@D)
	$(CXX) $(SERVE_CXXFLAGS) -c $< -o $@

$(B)/san/serve_json.o: examples/serve_json.cc | deps-serve
	@mkdir -p $(@D)
	$(CXX) $(SERVE_CXXFLAGS) -O1 -g1 $(SAN) -c $< -o $@

$(B)/dlcore-serve: examples/serve.c $(B)/serve_json.o $(HDR) | deps-serve
	@mkdir -p $(@D)
	$(CC) $(WARN) $(CFLAGS) $(CPPFLAGS) $< $(B)/serve_json.o -o $@ $(SERVE_LIBS) $(SERVE_JSON_LIBS) $(LDLIBS)

$(B)/san/dlcore-serve: examples/serve.c $(B)/san/serve_json.o $(HDR) | deps-serve
	@mkdir -p $(@D)
	$(CC) $(WARN) -O1 -g1 $(SAN) $(CPPFLAGS) $< $(B)/san/serve_json.o -o $@ $(SERVE_LIBS) $(SERVE_JSON_LIBS) $(LDLIBS)

$(B)/serve_helper: tests/serve_helper.c $(HDR) | deps-serve
	@mkdir -p $(@D)
	$(CC) $(WARN) $(CFLAGS) $(CPPFLAGS) $< -o $@ $(LDLIBS)

# The float formatter of the answers, with serve.c compiled into the test.
$(B)/serve_float: tests/serve_float.c tests/dltest.h examples/serve.c $(B)/serve_json.o $(HDR) | deps-serve
	@mkdir -p $(@D)
	$(CC) $(WARN) $(CFLAGS) $(CPPFLAGS) $< $(B)/serve_json.o -o $@ $(SERVE_LIBS) $(SERVE_JSON_LIBS) $(LDLIBS)

TEST_DEPS  += serve
TEST_BUILD += $(B)/dlcore-serve $(B)/san/dlcore-serve $(B)/serve_helper $(B)/serve_float

define TEST_PLAN_SERVE
serve-float $(B)/serve_float
serve-api $(SERVE_PY) tests/test_serve.py --server $(B)/dlcore-serve --helper $(B)/serve_helper
serve-api-san $(SERVE_PY) tests/test_serve.py --server $(B)/san/dlcore-serve --helper $(B)/serve_helper --sanitized
endef
TEST_PLANS += TEST_PLAN_SERVE

# The HTTP floor of bench-serve: libmicrohttpd answering a fixed prediction (and with
# cJSON's parse of each body), under the same load as dlcore-serve.
$(B)/bench/mhd_floor: bench/peers/mhd_floor.c | deps-serve
	@mkdir -p $(@D)
	$(CC) $(WARN) $(CFLAGS) $(CPPFLAGS) $< -o $@ $(SERVE_LIBS) -lpthread

bench-serve: $(B)/dlcore-serve $(B)/serve_helper $(B)/bench/mhd_floor
	@sh tools/deps.sh serve bench-serve
	@$(MAKE) --no-print-directory data
	B=$(B) SECONDS_PER_RUN=$(SERVE_SECONDS) sh bench/serve_bench.sh

soak-serve: $(B)/dlcore-serve $(B)/serve_helper
	@$(MAKE) --no-print-directory data
	$(SERVE_PY) tests/test_serve.py --server $(B)/dlcore-serve --helper $(B)/serve_helper --soak 60

# The request fuzz target (tests/fuzz/fuzz_serve_request.c) compiles serve.c, so it
# links the server's libraries; the generic fuzz rules in mk/hardening.mk do not.
# Its pointer-overflow, nonnull-attribute and shift-exponent checks recover, so
# tests/fuzz/ubsan.supp can pass over the harmless reports inside stb_image that it
# names; run.sh still stops on any other.
# serve_json.cc is fuzzed with it: compiled by clang++ with the same sanitizers and the
# fuzzer's coverage (fuzzer-no-link: the fuzzer's main comes in once, with the C file);
# no vptr check, whose C++ runtime a link by the C driver lacks (the file has no classes).
$(B)/fuzz/serve_json.o: examples/serve_json.cc mk/serve.mk tests/san_ignore.txt | deps-serve
	@mkdir -p $(@D)
	$(CLANG)++ $(SERVE_CXXFLAGS) $(subst fuzzer$(COMMA),fuzzer-no-link$(COMMA),$(FUZZ_FLAGS)) -fno-sanitize=vptr -c $< -o $@

$(B)/fuzz/fuzz_serve_request: tests/fuzz/fuzz_serve_request.c tests/fuzz/fuzz.h examples/serve.c $(B)/fuzz/serve_json.o mk/serve.mk tests/san_ignore.txt $(HDR) | deps-serve
	@mkdir -p $(@D)
	$(CLANG) $(WARN) $(FUZZ_FLAGS) -fsanitize-recover=pointer-overflow,nonnull-attribute,shift-exponent $(CPPFLAGS) $< $(B)/fuzz/serve_json.o -o $@ $(SERVE_LIBS) $(SERVE_JSON_LIBS) -lm -lpthread

$(B)/fuzz/seeds/serve_json.o: examples/serve_json.cc | deps-serve
	@mkdir -p $(@D)
	$(CLANG)++ $(SERVE_CXXFLAGS) -O1 -c $< -o $@

$(B)/fuzz/seeds/fuzz_serve_request: tests/fuzz/fuzz_serve_request.c tests/fuzz/fuzz.h examples/serve.c $(B)/fuzz/seeds/serve_json.o $(HDR) | deps-serve
	@mkdir -p $(@D)
	$(CLANG) $(WARN) -O1 -DFUZZ_SEEDS $(CPPFLAGS) $< $(B)/fuzz/seeds/serve_json.o -o $@ $(SERVE_LIBS) $(SERVE_JSON_LIBS) -lm -lpthread
