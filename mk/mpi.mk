# mk/mpi.mk - data-parallel training over Open MPI (included by the Makefile).
#   build/mnist_mlp_mpi   examples/mnist_mlp_mpi.c, built with mpicc (deps group mpi)
#   make test             adds: dl_comm against one process inside an MPI job (2 ranks
#                         on loopback equal one process, for the MLP and the CNN), the
#                         shared-memory window sum on 2 and 3 ranks, a killed rank
#                         stops the job, only rank 0 saves; see tests/test_mpi.sh
#   make bench-mpi        1 process x 2 threads and x 1 thread against 2 ranks x 1
#                         thread on the MLP, batch 128 and 512, and on the CNN,
#                         batch 64 and 256: seconds per run, scaling, all-reduce
#                         share, an estimate for 8-512 ranks; see
#                         bench/mpi/mpi_scaling.sh (BENCH_MPI_ARGS=5: 5 rounds)
MPICC ?= mpicc
# tests/test_mpi.sh and bench/mpi/mpi_scaling.sh run mpirun with Open MPI's settings
# for a container: root allowed, no ssh agent (one host), no cross-memory attach
# (OMPI_MCA_btl_vader_single_copy_mechanism=none), oversubscription allowed.

EXAMPLES := $(filter-out $(B)/mnist_mlp_mpi,$(EXAMPLES))
# `make` and `make demo` build it only where Open MPI is installed; `make test`
# installs it (TEST_DEPS) and builds it (TEST_BUILD) in any case.
ifneq ($(shell command -v $(MPICC) 2>/dev/null),)
examples: $(B)/mnist_mlp_mpi
endif

$(B)/mnist_mlp_mpi: examples/mnist_mlp_mpi.c examples/mpi_node_sum.h $(HDR)
	@mkdir -p $(@D)
	$(MPICC) $(WARN) $(CFLAGS) $(CPPFLAGS) $< -o $@ $(LDLIBS)

$(B)/mpi_compare: tests/mpi_compare.c $(HDR)
	@mkdir -p $(@D)
	$(CC) $(WARN) $(CFLAGS) $(CPPFLAGS) $< -o $@ $(LDLIBS)

$(B)/mpi_node_sum: tests/mpi_node_sum.c examples/mpi_node_sum.h $(HDR)
	@mkdir -p $(@D)
	$(MPICC) $(WARN) $(CFLAGS) $< -o $@ $(LDLIBS)

TEST_DEPS  += mpi
TEST_BUILD += $(B)/mnist_mlp_mpi $(B)/mpi_compare $(B)/mpi_node_sum $(B)/mnist_mlp $(B)/mnist_cnn
define TEST_PLAN_MPI
mpi-2ranks B=$(B) sh tests/test_mpi.sh
endef
TEST_PLANS += TEST_PLAN_MPI

$(B)/mpi_allreduce: bench/mpi/mpi_allreduce.c examples/mpi_node_sum.h
	@mkdir -p $(@D)
	$(MPICC) $(WARN) $(CFLAGS) $< -o $@ -lm

.PHONY: bench-mpi
bench-mpi:
	@sh tools/deps.sh mpi
	@$(MAKE) --no-print-directory data $(B)/mnist_mlp_mpi $(B)/mnist_mlp $(B)/mnist_cnn $(B)/mpi_allreduce
	B=$(B) sh bench/mpi/mpi_scaling.sh $(BENCH_MPI_ARGS)
