# mk/compress.mk - compressed models (included by the Makefile).
#   build/dlc           tools/dlc.c: inspect, eval, compress, export (ONNX), bench
#   make bench-infer    MNIST MLP inference through dl_predict, fp32 and int8, batch 1 and
#                       256, against PyTorch fp32 and quantize_dynamic (bench/peers/
#                       torch_infer.py), interleaved, one thread pinned to core 0;
#                       BENCH_INFER_ROUNDS=3
# The int8 GEMM cases against oneDNN's int8 matmul are in bench/bench_int8.c (make bench
# BENCH_FILTER=int8).

TEST_DEPS  += onnx
TEST_BUILD += $(B)/onnx_ref

define TEST_PLAN_COMPRESS
onnx-export B=$(B) sh tests/test_onnx.sh
endef
TEST_PLANS += TEST_PLAN_COMPRESS

BENCH_LIBS += -ldnnl
BENCH_INFER_ROUNDS ?= 3

.PHONY: bench-infer
bench-infer: deps-bench $(B)/dlc $(B)/mnist_mlp
	@$(MAKE) --no-print-directory data
	BENCH_INFER_ROUNDS=$(BENCH_INFER_ROUNDS) B=$(B) PYTHON=$(BENCH_PY) sh bench/infer_vs_torch.sh
