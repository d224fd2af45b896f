/* dlc_inspect - shows what a dlcore model file holds: architecture, loss,
   optimizer settings, per-tensor shapes and value ranges; with --eval DIR it
   also evaluates the loaded model on DIR's t10k split, which proves a saved
   model comes back whole.
   usage: dlc_inspect MODEL.dlc [--eval MNIST_DIR] */
#define DLCORE_IMPLEMENTATION
#include "../dlcore.h"

int main(int argc, char **argv)
{
    dl_model *m;
    dl_graph *g;
    int i;
    if (argc != 2 && !(argc == 4 && !strcmp(argv[2], "--eval"))) {
        fprintf(stderr, "usage: dlc_inspect MODEL.dlc [--eval MNIST_DIR]\n");
        return 2;
    }
    m = dl_load(argv[1]);
    if (!m) { fprintf(stderr, "dlc_inspect: %s\n", dl_last_error()); return 1; }
    printf("%s\n", argv[1]);
    dl_summary(m, stdout);
    g = dl_model_graph(m);
    printf("%-14s %-12s %12s %12s %12s\n", "tensor", "shape", "min", "max", "mean |w|");
    for (i = 0; i < dl_graph_param_count(g); i++) {
        int id = dl_graph_param(g, i);
        dl_tensor t = dl_node_value(g, id);
        size_t k, n = dl_shape_numel(t.shape);
        float lo = t.data[0], hi = t.data[0];
        double abs_sum = 0.0;
        char s[32];
        for (k = 0; k < n; k++) {
            if (t.data[k] < lo) lo = t.data[k];
            if (t.data[k] > hi) hi = t.data[k];
            abs_sum += fabs((double)t.data[k]);
        }
        printf("%-14s %-12s %12.5f %12.5f %12.6f\n", dl_node_name(g, id), dl_shape_str(t.shape, s, sizeof s),
               (double)lo, (double)hi, abs_sum / (double)n);
    }
    if (argc == 4) {
        dl_dataset test;
        dl_metrics mt;
        if (dl_idx_load(&test, argv[3], "t10k") != DL_OK || dl_evaluate(m, &test, &mt) != DL_OK) {
            fprintf(stderr, "dlc_inspect: %s\n", dl_last_error());
            dl_model_free(m);
            return 1;
        }
        printf("loaded model on %s/t10k: ", argv[3]);
        dl_metrics_print(&mt, stdout);
        dl_dataset_free(&test);
    }
    dl_model_free(m);
    return 0;
}
