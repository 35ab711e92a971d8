"""A network as an ONNX graph in eval mode (batch norm on its running statistics, no dropout): each layer
kind mapped to ONNX operators by one function in KINDS, each activation by one in ACTIVATIONS.

The engine's images are NHWC; the graph transposes its input to NCHW once and keeps every image tensor
NCHW inside (what ONNX's Conv and pools take), back to NHWC only where the engine's order matters:
before a flatten ((10) runs i, j, k in NHWC order) and at an image output.  Token tensors are the engine's
[b, n, features] throughout.  The `onnx` package is imported only when a graph is built, so what has no
ONNX form is known without it.
"""
from __future__ import annotations

import json
import math
import re

import numpy as np

from ..errors import ExportError

OPSET = 17  # LayerNormalization's first opset
IR_VERSION = 8  # the oldest IR of opset 17: the file loads in older runtimes too
INPUT, OUTPUT = "images", "probabilities"
NCHW, NHWC = [0, 3, 1, 2], [0, 2, 3, 1]

KINDS = {}  # kind name -> fn(graph, layer) -> the name of its output tensor
ACTIVATIONS = {}  # activation name -> fn(graph, name, tensor, rank) -> the name of its output tensor


def _registry(table: dict):
    """A decorator `@registered("name", ...)` that enters a function in `table` under each name."""
    def registered(*names):
        def register(fn):
            for name in names:
                table[name] = fn
            return fn
        return register
    return registered


kind = _registry(KINDS)  # @kind("conv2d"): the ONNX form of the layer kind conv2d
activation = _registry(ACTIVATIONS)  # @activation("relu"): the ONNX form of an activation


class Layer:
    """What a kind's function reads of one layer: its name, sizes (hyperparameters, padding, input axes),
    parameters and state (running statistics), and the graph's names of its inputs."""

    def __init__(self, name, block, params, state, inputs):
        self.name, self.block, self.inputs = name, block, inputs
        self.sizes, self.hyper = block.sizes, block.hyper
        self.params, self.state = params, state
        self.rank = len(block.shapes[block.kind.in_names[0]])  # of its (first) input, the batch included

    @property
    def x(self) -> str:
        return self.inputs[0]


class Graph:
    """An ONNX graph as it is built: its nodes and initialisers (float32), each named after its layer."""

    def __init__(self, onnx):
        self.onnx, self.nodes, self.initializers = onnx, [], []

    def constant(self, name: str, array, dtype=np.float32) -> str:
        from onnx import numpy_helper

        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array, dtype=dtype), name))
        return name

    def node(self, op: str, inputs: list, name: str, **attributes) -> str:
        """One operator; its output tensor takes the node's name."""
        self.nodes.append(self.onnx.helper.make_node(op, list(inputs), [name], name=name, **attributes))
        return name


def missing(net) -> list:
    """What of `net` has no ONNX form, as 'kind NAME' and 'activation NAME'; [] if everything has."""
    gaps = [f"kind {layer.kind!r}" for layer in net.net.layers if layer.kind not in KINDS]
    gaps += [f"activation {layer.activation!r}" for layer in net.net.layers if layer.activation not in ACTIVATIONS]
    return list(dict.fromkeys(gaps))


def build(net, classes: list | None = None, about: dict | None = None):
    """The onnx.ModelProto of `net` as it stands (its parameters and running statistics), in eval mode and
    checked against the engine (`verify`); `classes` (each class's name) and `about` go into its metadata."""
    gaps = missing(net)
    if gaps:
        raise ExportError(f"network {net.name!r} cannot be exported to ONNX: {', '.join(gaps)} has no ONNX form "
                          f"(kinds that have one: {', '.join(sorted(KINDS))})")
    onnx = _onnx()
    g = Graph(onnx)
    out_shape = _layers(g, net)
    helper = onnx.helper
    graph = helper.make_graph(
        g.nodes, _graph_name(net.name),
        [helper.make_tensor_value_info(INPUT, onnx.TensorProto.FLOAT, ["batch", *net.input_shape])],
        [helper.make_tensor_value_info(OUTPUT, onnx.TensorProto.FLOAT, ["batch", *out_shape])], g.initializers)
    shape = ", ".join(map(str, net.input_shape))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION,
                              producer_name="einsum-notation-engine",
                              doc_string=f"network {net.name!r}: {INPUT} [batch, {shape}] (NHWC, pixels in [0, 1]) "
                                         f"-> {OUTPUT} [batch, {', '.join(map(str, out_shape))}]")
    meta = dict(about or {})
    if classes is not None:
        meta["classes"] = json.dumps(list(classes))
    helper.set_model_props(model, {k: str(v) for k, v in meta.items()})
    _check(onnx, net, model)
    verify(net, model)
    return model


def _check(onnx, net, model):
    """onnx's checker and shape inference pass the graph; else ExportError naming the first layer they fault
    (a kind of a known name whose shapes differ from layers.yaml's), in one line."""
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        first = str(e).strip().splitlines()[0]
        node = re.search(r"node name: ([^)]+)\)", first)
        layer = node.group(1).split("/")[0] if node else None
        kind = next((spec_layer.kind for spec_layer in net.net.layers if spec_layer.name == layer), None)
        where, what = (f"layer {layer!r} ({kind})", f"kind {kind!r}") if kind else ("a layer", "a kind")
        raise ExportError(f"network {net.name!r}, {where}: its ONNX form does not check ({first.split(': ')[-1]}): "
                          f"{what} of {net.spec.file} means something else than layers.yaml's, which the export "
                          "maps; nothing was written") from None


def _layers(g, net) -> tuple:
    """Every layer and its activation into `g`, in the engine's order, from INPUT to OUTPUT; the output's
    shape without the batch."""
    stages = {s.name: s.layer for s in net.compiled(1, "eval")[:-1]}
    rank = {"input": len(net.input_shape) + 1}
    outs = {"input": g.node("Transpose", [INPUT], "input/nchw", perm=NCHW) if rank["input"] == 4 else INPUT}
    for spec_layer in net.net.layers:
        name, act, block = spec_layer.name, spec_layer.activation, stages[spec_layer.name]
        layer = Layer(name, block, net.params.get(name, {}), net.state.get(name, {}),
                      [outs[src] for src in spec_layer.inputs])
        rank[name] = len(block.out_shape)
        outs[name] = ACTIVATIONS[act](g, f"{name}/{act}", KINDS[spec_layer.kind](g, layer), rank[name])
    last = net.net.layers[-1].name
    shape = tuple(stages[last].out_shape[1:])
    if rank[last] == 4:  # an image out: NHWC, as the engine gives it
        g.node("Transpose", [outs[last]], OUTPUT, perm=NHWC)
        return shape
    g.node("Identity", [outs[last]], OUTPUT)
    return shape


def verify(net, model, batch: int = 2, tolerance: float = 1e-4) -> float:
    """The graph run by onnx's reference evaluator on random images agrees with the engine's eval forward,
    layer by layer; else ExportError naming the first layer that differs (a kind of a known name that
    means something else).  The largest difference of the probabilities."""
    from onnx.reference import ReferenceEvaluator

    x = np.random.default_rng(0).random((batch, *net.input_shape))
    with np.errstate(all="ignore"):
        stages, _ = net._forward(net._input(x))
        got = ReferenceEvaluator(model).run(None, {INPUT: x.astype(np.float32)}, intermediate=True)
    for s in stages[:-1]:
        # the engine's layer output before its activation, or after it where a pool runs the ReLU before it
        want = s.act_env["a"].reshape(s.layer.out_shape) if s.relu_of else s.env[s.layer.kind.out_name]
        have = got.get(s.name)
        if have is None:  # a layer with no node of its own (dropout)
            continue
        if have.ndim == 4:
            have = have.transpose(NHWC)
        if have.shape != want.shape or not _close(have, want, tolerance):
            diff = f"{np.abs(have - want).max():.3g}" if have.shape == want.shape else \
                f"its shape ({have.shape}, not {want.shape})"
            kind = next(l.kind for l in net.net.layers if l.name == s.name)
            raise ExportError(f"network {net.name!r}, layer {s.name!r} ({kind}): its ONNX form differs from the "
                              f"engine's by {diff} on random images: kind {kind!r} of {net.spec.file} means something "
                              f"else than layers.yaml's, which the export maps; nothing was written")
    probs = net.forward(x)
    if not _close(got[OUTPUT], probs, tolerance):
        raise ExportError(f"network {net.name!r}: its ONNX graph's output differs from the engine's by "
                          f"{np.abs(got[OUTPUT] - probs).max():.3g} on random images; nothing was written")
    return float(np.abs(got[OUTPUT] - probs).max())


def _close(a, b, tolerance) -> bool:
    return bool(np.all(np.abs(a - b) <= tolerance * max(1.0, float(np.abs(b).max(initial=0)))))


def _onnx():
    try:
        import onnx
    except ImportError:
        raise ExportError("the onnx package is not installed; install it with: .venv/bin/pip install -e '.[export]'"
                          ) from None
    return onnx


def _graph_name(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)


# -- the kinds ---------------------------------------------------------------------------------------
def _pads(s) -> list:
    """The layer's zero padding as ONNX's pads: [top, left, bottom, right]."""
    return [s.get("pt", 0), s.get("pl", 0), s.get("pb", 0), s.get("pr", 0)]


def _flipped(w):
    """ONNX's weights [filters, channels, p, q] of a kernel w[p, q, r, k] read as (15) reads it,
    w[P-p, Q-q, r, k]: Conv is a cross-correlation, (15) a true convolution."""
    return w[::-1, ::-1].transpose(3, 2, 0, 1)


@kind("conv2d")
def _conv2d(g, layer):
    s, n = layer.sizes, layer.name  # (15): z[b,i,j,k] = xp[b, s1*i+p, s2*j+q, r] * w[P-p, Q-q, r, k] + b[k]
    return g.node("Conv", [layer.x, g.constant(f"{n}/w", _flipped(layer.params["w"])),
                           g.constant(f"{n}/b", layer.params["b"])], n,
                  kernel_shape=[s["kernel"]] * 2, strides=[s["stride"]] * 2, pads=_pads(s))


@kind("dilated_conv2d")
def _dilated(g, layer):
    s, n = layer.sizes, layer.name  # (15), taps dl apart: x[b, i+dl*p, j+dl*q, r] * w[P-p, Q-q, r, k]
    return g.node("Conv", [layer.x, g.constant(f"{n}/w", _flipped(layer.params["w"])),
                           g.constant(f"{n}/b", layer.params["b"])], n,
                  kernel_shape=[s["kernel"]] * 2, dilations=[s["dilation"]] * 2)


@kind("depthwise_conv2d")
def _depthwise(g, layer):
    s, n = layer.sizes, layer.name  # (15) without the sum over r: xp[b, s1*i+p, s2*j+q, k] * w[P-p, Q-q, k]
    w = layer.params["w"][::-1, ::-1].transpose(2, 0, 1)[:, None]  # [channels, 1, p, q]
    return g.node("Conv", [layer.x, g.constant(f"{n}/w", w), g.constant(f"{n}/b", layer.params["b"])], n,
                  kernel_shape=[s["kernel"]] * 2, strides=[s["stride"]] * 2, pads=_pads(s), group=s["channels"])


@kind("conv2d_transpose")
def _transpose(g, layer):
    s, n = layer.sizes, layer.name  # u[b, s1*i+p, s2*j+q, k] = x[b,i,j,r] * w[p,q,r,k]: no flip here
    w = layer.params["w"].transpose(2, 3, 0, 1)  # [channels, filters, p, q], ConvTranspose's order
    return g.node("ConvTranspose", [layer.x, g.constant(f"{n}/w", w), g.constant(f"{n}/b", layer.params["b"])], n,
                  kernel_shape=[s["kernel"]] * 2, strides=[s["stride"]] * 2)


@kind("maxpool")
def _maxpool(g, layer):  # (18)
    s = layer.sizes
    return g.node("MaxPool", [layer.x], layer.name, kernel_shape=[s["size"]] * 2, strides=[s["stride"]] * 2)


@kind("avgpool")
def _avgpool(g, layer):  # (18) with the window's mean
    s = layer.sizes
    return g.node("AveragePool", [layer.x], layer.name, kernel_shape=[s["size"]] * 2, strides=[s["stride"]] * 2)


@kind("global_avgpool")
def _global_avgpool(g, layer):  # [b, c, 1, 1] -> [b, c]
    pooled = g.node("GlobalAveragePool", [layer.x], f"{layer.name}/pool")
    return g.node("Flatten", [pooled], layer.name, axis=1)


@kind("flatten")
def _flatten(g, layer):  # (10): i*J*K + j*K + k, the NHWC order
    nhwc = g.node("Transpose", [layer.x], f"{layer.name}/nhwc", perm=NHWC)
    return g.node("Flatten", [nhwc], layer.name, axis=1)


def _on_features(g, layer, run) -> str:
    """run(x, name) over the engine's last axis, the features: an image, NCHW here, made NHWC for it and back."""
    if layer.rank != 4:
        return run(layer.x, layer.name)
    nhwc = g.node("Transpose", [layer.x], f"{layer.name}/nhwc", perm=NHWC)
    return g.node("Transpose", [run(nhwc, f"{layer.name}/features")], layer.name, perm=NCHW)


@kind("dense")
def _dense(g, layer):  # (12), plus the bias of (2); over more leading axes ([b, n] of tokens) each row apart
    n = layer.name
    w, b = g.constant(f"{n}/w", layer.params["w"]), g.constant(f"{n}/b", layer.params["b"])

    def run(x, out):
        return g.node("Gemm", [x, w, b], out) if layer.rank == 2 else \
            g.node("Add", [g.node("MatMul", [x, w], f"{n}/xw"), b], out)
    return _on_features(g, layer, run)


@kind("batchnorm")
def _batchnorm(g, layer):  # eval: (2) with the running statistics
    n, p, st = layer.name, layer.params, layer.state
    return g.node("BatchNormalization", [layer.x, g.constant(f"{n}/g", p["g"]), g.constant(f"{n}/beta", p["beta"]),
                                         g.constant(f"{n}/rm", st["rm"]), g.constant(f"{n}/rv", st["rv"])], n,
                  epsilon=float(layer.hyper["eps"]))


@kind("layernorm")
def _layernorm(g, layer):
    n, p = layer.name, layer.params  # over the last axis: each example's features, or each token's (or pixel's)
    g_, beta = g.constant(f"{n}/g", p["g"]), g.constant(f"{n}/beta", p["beta"])
    return _on_features(g, layer, lambda x, out: g.node("LayerNormalization", [x, g_, beta], out, axis=-1,
                                                        epsilon=float(layer.hyper["eps"])))


@kind("dropout")
def _dropout(g, layer):  # eval: z = x
    return layer.x


@kind("add")
def _add(g, layer):
    return g.node("Add", layer.inputs, layer.name)


@kind("concat")
def _concat(g, layer):  # channels side by side: axis 1 of NCHW
    return g.node("Concat", layer.inputs, layer.name, axis=1)


# -- the token kinds: x[b, n, k], token n, features k ------------------------------------------------
@kind("patch_embedding")
def _patch_embedding(g, layer):
    """z[b, i*J + j, k] = x[b, s1*i+p, s1*j+q, r] * w[p,q,r,k] + b[k]: a Conv of stride P (not flipped, a learned
    kernel read as is), then [b, k, I, J] to tokens [b, I*J, k], row i*J + j."""
    s, n = layer.sizes, layer.name
    conv = g.node("Conv", [layer.x, g.constant(f"{n}/w", layer.params["w"].transpose(3, 2, 0, 1)),
                           g.constant(f"{n}/b", layer.params["b"])], f"{n}/conv",
                  kernel_shape=[s["patch"]] * 2, strides=[s["patch"]] * 2)
    rows = g.node("Reshape", [conv, g.constant(f"{n}/shape", [0, s["dim"], -1], np.int64)], f"{n}/rows")
    return g.node("Transpose", [rows], n, perm=[0, 2, 1])


@kind("positional_embedding")
def _positional_embedding(g, layer):  # z[b,n,k] = x[b,n,k] + pos[n,k]
    return g.node("Add", [layer.x, g.constant(f"{layer.name}/pos", layer.params["pos"])], layer.name)


@kind("attention")
def _attention(g, layer):
    """Multi-head self-attention as layers.yaml writes it: the heads apart as [b, h, n, E], scores scaled by
    E**-0.5, ONNX's Softmax over the keys (the engine's shift by the max changes nothing), heads joined."""
    n, p, s = layer.name, layer.params, layer.sizes
    heads, d = s["heads"], s["features"]
    split = g.constant(f"{n}/heads", [0, 0, heads, d // heads], np.int64)  # [b, n, d] -> [b, n, h, E]

    def projected(w, b, name, perm):  # (12) per token, then the heads apart
        xw = g.node("MatMul", [layer.x, g.constant(f"{n}/{w}", p[w])], f"{n}/x{w}")
        if b is not None:
            xw = g.node("Add", [xw, g.constant(f"{n}/{b}", p[b])], f"{n}/{name}_biased")
        return g.node("Transpose", [g.node("Reshape", [xw, split], f"{n}/{name}_heads")], f"{n}/{name}", perm=perm)

    q = projected("wq", "bq", "q", [0, 2, 1, 3])  # [b, h, n, E]
    k = projected("wk", None, "k", [0, 2, 3, 1])  # [b, h, E, m]
    v = projected("wv", "bv", "v", [0, 2, 1, 3])  # [b, h, m, E]
    scores = g.node("Mul", [g.node("MatMul", [q, k], f"{n}/qk"),
                            g.constant(f"{n}/scale", layer.block.symbols["scale"])], f"{n}/s")
    weights = g.node("Softmax", [scores], f"{n}/p", axis=-1)
    o = g.node("Transpose", [g.node("MatMul", [weights, v], f"{n}/pv")], f"{n}/o", perm=[0, 2, 1, 3])
    joined = g.node("Reshape", [o, g.constant(f"{n}/join", [0, 0, d], np.int64)], f"{n}/joined")
    return g.node("Add", [g.node("MatMul", [joined, g.constant(f"{n}/wo", p["wo"])], f"{n}/ow"),
                          g.constant(f"{n}/bo", p["bo"])], n)


@kind("token_mixing")
def _token_mixing(g, layer):  # z[b,n,k] = x[b,m,k] * w[m,n] + b[n]: w transposed times each example's x
    n, p = layer.name, layer.params
    mixed = g.node("MatMul", [g.constant(f"{n}/wt", p["w"].T), layer.x], f"{n}/wx")  # [n, m] @ [b, m, k]
    return g.node("Add", [mixed, g.constant(f"{n}/b", p["b"][:, None])], n)


@kind("mean_pool")
def _mean_pool(g, layer):  # z[b,k] = x[b,n,k] / count
    return g.node("ReduceMean", [layer.x], layer.name, axes=[1], keepdims=0)


# -- the activations, on the engine's z[b, i] (each example's entries in a row) ----------------------
@activation("identity")
def _identity(g, name, z, rank):
    return z


def _entrywise(op):
    def run(g, name, z, rank):  # (20) and its like, entry by entry
        return g.node(op, [z], name)
    return run


for _name, _op in {"relu": "Relu", "tanh": "Tanh", "sigmoid": "Sigmoid"}.items():
    activation(_name)(_entrywise(_op))


@activation("softmax")
def _softmax(g, name, z, rank):  # (22) over all of an example's entries, in any order
    if rank == 2:
        return g.node("Softmax", [z], name, axis=1)
    shape = g.node("Shape", [z], f"{name}/shape")
    rows = g.node("Flatten", [z], f"{name}/rows", axis=1)
    return g.node("Reshape", [g.node("Softmax", [rows], f"{name}/rows_softmax", axis=1), shape], name)


@activation("gelu")
def _gelu(g, name, z, rank):
    """The engine's tanh form, z/2 (1 + tanh(c (z + a z^3))), c = sqrt(2/pi), a = 0.044715: opset 17 has no Gelu."""
    c, a = g.constant(f"{name}/c", math.sqrt(2 / math.pi)), g.constant(f"{name}/a", 0.044715)
    cube = g.node("Mul", [g.node("Mul", [z, z], f"{name}/z2"), z], f"{name}/z3")
    inner = g.node("Add", [z, g.node("Mul", [a, cube], f"{name}/az3")], f"{name}/inner")
    t = g.node("Tanh", [g.node("Mul", [c, inner], f"{name}/cinner")], f"{name}/tanh")
    half = g.node("Mul", [z, g.constant(f"{name}/half", 0.5)], f"{name}/half_z")
    return g.node("Mul", [half, g.node("Add", [t, g.constant(f"{name}/one", 1.0)], f"{name}/one_t")], name)
