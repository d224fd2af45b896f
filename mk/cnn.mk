# mk/cnn.mk - the seeds' CNN (included by the Makefile).
#   make bench-cnn       build/mnist_cnn against PyTorch (bench/peers/torch_cnn.py), interleaved,
#                        1 thread pinned, batch 64, 1 epoch of Fashion-MNIST; prints the ratio.
#                        BENCH_CNN_ARGS='-r 3 -e 5' for 3 rounds of 5 epochs.
#   make bench-cnn-threads  build/mnist_cnn, 1 epoch at batch 64, on 1 and then 2 threads.
#   make bench-conv-torch   the conv layers with 1 or 3 input channels (fwd + both gradients,
#                        N = 64) against PyTorch's nn.Conv2d, interleaved, 1 thread pinned
#                        (bench/conv_vs_torch.sh; BENCH_CONV_TORCH_ROUNDS=3).
# The full run the issue names: build/mnist_cnn --data data/fashion-mnist --epochs 5 --seed 0
BENCH_CNN_ARGS ?=
CNN_DATA       ?= /usr/share/datasets/fashion-mnist

BENCH_CONV_TORCH_ROUNDS ?= 3

.PHONY: bench-cnn bench-cnn-threads bench-conv-torch

bench-cnn: deps-bench $(B)/mnist_cnn
	bench/mlp_vs_torch.sh -m cnn $(BENCH_CNN_ARGS)

bench-cnn-threads: $(B)/mnist_cnn
	@for t in 1 2; do \
	    printf 'threads %s: ' $$t; \
	    $(B)/mnist_cnn --data $(CNN_DATA) --epochs 1 --batch 64 --threads $$t --quiet | tail -1; \
	done

bench-conv-torch: deps-bench bench-build
	B=$(B) PYTHON=$(BENCH_PY) sh bench/conv_vs_torch.sh $(BENCH_CONV_TORCH_ROUNDS)
