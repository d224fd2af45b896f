"""Checks exported ONNX files: onnx.checker (full_check, with shape inference), then a
small NumPy evaluator of the ops dlc export writes runs the graph on real inputs and is
compared with what dl_predict returned (tests/onnx_ref.c).
usage: test_onnx.py MODEL.onnx X.bin Y.bin fp32|int8 [OP,OP,...: ops the graph must hold]"""
import sys
import numpy as np
import onnx
from onnx import numpy_helper


def windows(x, a, pad_value):
    """x [N, C, H, W] padded as the node says; yields (ky, kx, view [N, C, OH, OW]) per
    kernel offset, and the output size."""
    kh, kw = a["kernel_shape"]
    sh, sw = a.get("strides", [1, 1])
    dh, dw = a.get("dilations", [1, 1])
    pt, pl, pb, pr = a.get("pads", [0, 0, 0, 0])
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)), constant_values=pad_value)
    oh = (xp.shape[2] - (kh - 1) * dh - 1) // sh + 1
    ow = (xp.shape[3] - (kw - 1) * dw - 1) // sw + 1
    views = [(ky, kx, xp[:, :, ky * dh:ky * dh + (oh - 1) * sh + 1:sh, kx * dw:kx * dw + (ow - 1) * sw + 1:sw])
             for ky in range(kh) for kx in range(kw)]
    return views, oh, ow


def conv(x, w, b, a):
    views, oh, ow = windows(x, dict(a, kernel_shape=list(w.shape[2:])), 0.0)
    g = a.get("group", 1)
    cg, ocg = x.shape[1] // g, w.shape[0] // g
    y = np.zeros((x.shape[0], w.shape[0], oh, ow))
    for ky, kx, v in views:
        for gi in range(g):
            y[:, gi * ocg:(gi + 1) * ocg] += np.einsum("nchw,oc->nohw", v[:, gi * cg:(gi + 1) * cg],
                                                       w[gi * ocg:(gi + 1) * ocg, :, ky, kx])
    return y + (b.reshape(1, -1, 1, 1) if b is not None else 0)


def pool(x, a, is_max):
    views, _, _ = windows(x, a, -np.inf if is_max else 0.0)
    if is_max:
        return np.max([v for _, _, v in views], axis=0)
    assert a.get("count_include_pad", 0) == 0
    counts, _, _ = windows(np.ones((1, 1) + x.shape[2:]), a, 0.0)
    return np.sum([v for _, _, v in views], axis=0) / np.sum([v for _, _, v in counts], axis=0)


def run(model, x):
    g = model.graph
    env = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    env[g.input[0].name] = x.astype(np.float64)
    seen = set()
    for node in g.node:
        a = {at.name: onnx.helper.get_attribute_value(at) for at in node.attribute}
        i = [env[n] for n in node.input]
        op = node.op_type
        seen.add(op)
        if op == "Flatten":
            ax = a.get("axis", 1)
            y = i[0].reshape(int(np.prod(i[0].shape[:ax])), -1)
        elif op == "Gemm":
            y = i[0].astype(np.float64) @ i[1].astype(np.float64) + (i[2].astype(np.float64) if len(i) > 2 else 0)
        elif op == "Relu":
            y = np.maximum(i[0], 0)
        elif op == "Sigmoid":
            y = 1 / (1 + np.exp(-i[0]))
        elif op == "Tanh":
            y = np.tanh(i[0])
        elif op == "LeakyRelu":
            y = np.where(i[0] < 0, i[0] * a.get("alpha", 0.01), i[0])
        elif op == "Softmax":
            z = i[0] - i[0].max(axis=a.get("axis", -1), keepdims=True)
            e = np.exp(z)
            y = e / e.sum(axis=a.get("axis", -1), keepdims=True)
        elif op == "DequantizeLinear":
            ax = a.get("axis", 1)
            s, z = i[1].astype(np.float64), i[2].astype(np.float64)
            if s.ndim == 1 and i[0].ndim > 1:
                shape = [1] * i[0].ndim
                shape[ax] = -1
                s, z = s.reshape(shape), z.reshape(shape)
            y = (i[0].astype(np.float64) - z) * s
        elif op == "QuantizeLinear":
            lo, hi = (0, 255) if i[2].dtype == np.uint8 else (-128, 127)
            y = np.clip(np.rint(i[0] / i[1].astype(np.float64)) + i[2].astype(np.float64), lo, hi).astype(i[2].dtype)
        elif op == "Identity":
            y = i[0]
        elif op == "MatMul":
            y = i[0].astype(np.float64) @ i[1].astype(np.float64)
        elif op == "Add":
            y = i[0] + i[1].astype(np.float64)
        elif op == "Transpose":
            y = np.transpose(i[0], a["perm"])
        elif op == "Reshape":
            shape = [i[0].shape[k] if d == 0 else d for k, d in enumerate(i[1].tolist())]
            y = i[0].reshape(shape)
        elif op == "Conv":
            y = conv(i[0], i[1].astype(np.float64), i[2].astype(np.float64) if len(i) > 2 else None, a)
        elif op in ("MaxPool", "AveragePool"):
            y = pool(i[0], a, op == "MaxPool")
        elif op == "GlobalAveragePool":
            y = i[0].mean(axis=(2, 3), keepdims=True)
        elif op == "BatchNormalization":
            shape = [1, -1] + [1] * (i[0].ndim - 2)
            s_, b_, m_, v_ = (t.astype(np.float64).reshape(shape) for t in i[1:5])
            y = (i[0] - m_) / np.sqrt(v_ + a.get("epsilon", 1e-5)) * s_ + b_
        else:
            raise RuntimeError("the evaluator does not know op " + op)
        env[node.output[0]] = y
    return env[g.output[0].name], seen


def main():
    path, xpath, ypath, kind = sys.argv[1:5]
    need = set(sys.argv[5].split(",")) if len(sys.argv) > 5 else set()
    passed = failed = 0
    model = onnx.load(path)
    try:
        onnx.checker.check_model(model, full_check=True)
        print("ok   %s: check_model(full_check=True), opset %d" % (path, model.opset_import[0].version))
        passed += 1
    except Exception as e:  # the checker's own exception types vary by version
        print("FAIL %s: check_model: %s" % (path, e))
        failed += 1
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    out_dims = [d.dim_value for d in inferred.graph.output[0].type.tensor_type.shape.dim]
    y_ref = np.fromfile(ypath, dtype="<f4")
    n_out = out_dims[-1]
    y_ref = y_ref.reshape(-1, n_out)
    x = np.fromfile(xpath, dtype="<f4")
    in_dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim][1:]
    x = x.reshape([y_ref.shape[0]] + in_dims)
    y, ops = run(model, x)
    if kind == "fp32":
        rel = np.abs(y - y_ref) / np.maximum(np.abs(y), 1e-30)
        ok = np.all(rel <= 1e-5)
        what = "max relative difference %.3g (limit 1e-5)" % rel.max()
    else:
        diff = np.abs(y - y_ref).max()
        ok = diff <= 0.05 and "DequantizeLinear" in ops
        what = "max absolute difference %.3g of probabilities (limit 0.05: int8 activations), ops %s" % (diff, sorted(ops))
    print("%s %s: %d samples against dl_predict, %s" % ("ok  " if ok else "FAIL", path, y.shape[0], what))
    passed, failed = passed + ok, failed + (not ok)
    if need:
        ok = need <= ops
        print("%s %s: holds %s%s" % ("ok  " if ok else "FAIL", path, ",".join(sorted(need)),
                                     "" if ok else "; missing " + ",".join(sorted(need - ops))))
        passed, failed = passed + ok, failed + (not ok)
    print("test_onnx.py %s: %d passed, %d failed" % (path, passed, failed))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
