/* mpi_compare A.dlc B.dlc TOL - the two model files hold the same architecture and
   every parameter tensor agrees within TOL relative (largest |a - b| over the
   largest |a| of that tensor). Prints each tensor's figure; exits 0 when all agree,
   1 when not, 2 on bad input. Used by tests/test_mpi.sh to hold an MPI-trained
   model against the one process trains. */
#define DLCORE_IMPLEMENTATION
#include "../dlcore.h"

int main(int argc, char **argv)
{
    dl_model *a, *b;
    dl_graph *ga, *gb;
    double tol;
    int i, bad = 0;
    char *end;
    if (argc != 4) { fprintf(stderr, "usage: mpi_compare A.dlc B.dlc TOL\n"); return 2; }
    tol = strtod(argv[3], &end);
    if (*end || !(tol >= 0.0)) { fprintf(stderr, "mpi_compare: TOL '%s' is not a number >= 0\n", argv[3]); return 2; }
    a = dl_load(argv[1]);
    b = a ? dl_load(argv[2]) : NULL;
    if (!a || !b) { fprintf(stderr, "mpi_compare: %s\n", dl_last_error()); return 2; }
    ga = dl_model_graph(a);
    gb = dl_model_graph(b);
    if (dl_graph_param_count(ga) != dl_graph_param_count(gb)) {
        fprintf(stderr, "mpi_compare: %d against %d parameter tensors\n", dl_graph_param_count(ga), dl_graph_param_count(gb));
        return 1;
    }
    for (i = 0; i < dl_graph_param_count(ga); i++) {
        dl_tensor ta = dl_node_value(ga, dl_graph_param(ga, i)), tb = dl_node_value(gb, dl_graph_param(gb, i));
        size_t k, n = dl_shape_numel(ta.shape);
        double d = 0.0, s = 0.0, rel;
        if (n != dl_shape_numel(tb.shape) || strcmp(dl_node_name(ga, dl_graph_param(ga, i)), dl_node_name(gb, dl_graph_param(gb, i)))) {
            fprintf(stderr, "mpi_compare: tensor %d differs in name or size\n", i);
            return 1;
        }
        for (k = 0; k < n; k++) {
            double e = fabs((double)ta.data[k] - (double)tb.data[k]);
            if (!(e <= d)) d = e;   /* NaN wins */
            if (fabs((double)ta.data[k]) > s) s = fabs((double)ta.data[k]);
        }
        rel = s > 0.0 ? d / s : d;
        printf("%-12s %8zu values: largest difference %.3g, %.3g relative%s\n", dl_node_name(ga, dl_graph_param(ga, i)),
               n, d, rel, rel <= tol ? "" : "  (over the tolerance)");
        bad |= !(rel <= tol);
    }
    dl_model_free(a);
    dl_model_free(b);
    return bad;
}
