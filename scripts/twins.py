"""PyTorch twins of a spec's networks, for scripts/bench.py: each layer kind mapped to its torch
module, run over the engine's layer graph at the engine's compiled shapes.

torch is imported only when a twin is built, so `missing` (what has no twin) works without it.
Images are NCHW tensors in channels_last memory, so they lie in memory as the engine's NHWC ones.
"""
from __future__ import annotations

import numpy as np

KINDS = {}  # kind name -> builder(torch, block) -> a torch module, or a function of the layer's inputs
LAYOUTS = {}  # kind name -> layout(module) -> {engine param: (torch parameter, its view in the engine's layout)}


def twin(*names, layout=None):
    """Register a builder as the twin of the layer kinds `names`; `layout` says where each of the engine's
    parameters lies in the module (a view of a torch parameter: transposed, permuted, sliced, reshaped)."""
    def register(builder):
        for name in names:
            KINDS[name] = builder
            if layout is not None:
                LAYOUTS[name] = layout
        return builder
    return register


def _inner(module):
    """The layer itself, under a ZeroPad2d that _padded may have put in front of it."""
    return module[-1] if type(module).__name__ == "Sequential" else module


def _linear(m):
    return {"w": (m.weight, lambda t: t.T), "b": (m.bias, lambda t: t)}


def _conv(m):
    m = _inner(m)
    # (15) convolves: w[P-p, Q-q, r, k] is torch's cross-correlation weight[k, r, p, q], flipped
    return {"w": (m.weight, lambda t: t.permute(2, 3, 1, 0).flip(0, 1)), "b": (m.bias, lambda t: t)}


def _norm(m):
    return {"g": (m.weight, lambda t: t), "beta": (m.bias, lambda t: t)}


ACTIVATIONS = {"identity": None, "relu": "relu", "tanh": "tanh", "sigmoid": "sigmoid", "softmax": "softmax",
               "gelu": "gelu"}
LOSSES = {"softmax_cross_entropy": "softmax",  # loss -> the activation it fuses with (logits into the torch loss)
          "smoothed_softmax_cross_entropy": "softmax"}  # its q = (1 - eps) y + eps/K is torch's label_smoothing


def _padded(torch, conv, block):
    """`conv` after the layer's zero padding: in the conv itself where it is the same on both sides,
    else a ZeroPad2d before it (`same` with stride 2 pads only below and right, as TensorFlow)."""
    s = block.sizes
    pt, pb, pl, pr = (s.get(k, 0) for k in ("pt", "pb", "pl", "pr"))
    if pt == pb and pl == pr:
        conv.padding = (pt, pl)
        return conv
    return torch.nn.Sequential(torch.nn.ZeroPad2d((pl, pr, pt, pb)), conv)


@twin("conv2d", layout=_conv)
def _conv2d(torch, block):
    s = block.sizes
    return _padded(torch, torch.nn.Conv2d(s["channels"], s["filters"], s["kernel"], stride=s["stride"]), block)


@twin("depthwise_conv2d")
def _depthwise(torch, block):
    s = block.sizes
    c = s["channels"]
    return _padded(torch, torch.nn.Conv2d(c, c, s["kernel"], stride=s["stride"], groups=c), block)


@twin("dilated_conv2d")
def _dilated(torch, block):
    s = block.sizes
    return torch.nn.Conv2d(s["channels"], s["filters"], s["kernel"], dilation=s["dilation"])


@twin("conv2d_transpose")
def _transpose(torch, block):
    s = block.sizes
    return torch.nn.ConvTranspose2d(s["channels"], s["filters"], s["kernel"], stride=s["stride"])


@twin("batchnorm", layout=_norm)
def _batchnorm(torch, block):
    h = block.hyper
    return torch.nn.BatchNorm2d(block.sizes["channels"], eps=float(h["eps"]), momentum=float(h["momentum"]))


@twin("layernorm", layout=_norm)
def _layernorm(torch, block):
    return torch.nn.LayerNorm(block.sizes["features"], eps=float(block.hyper["eps"]))


@twin("maxpool")
def _maxpool(torch, block):
    return torch.nn.MaxPool2d(block.sizes["size"], block.sizes["stride"])


@twin("avgpool")
def _avgpool(torch, block):
    return torch.nn.AvgPool2d(block.sizes["size"], block.sizes["stride"])


@twin("global_avgpool")
def _global_avgpool(torch, block):
    return lambda x: x.mean((2, 3))


@twin("flatten")
def _flatten(torch, block):
    # the engine's (10) order, i*J*K + j*K + k: NHWC, a view of a channels_last tensor
    return lambda x: x.permute(0, 2, 3, 1).flatten(1)


@twin("dense", layout=_linear)
def _dense(torch, block):
    return torch.nn.Linear(block.sizes["features"], block.sizes["units"])


@twin("dropout")
def _dropout(torch, block):
    return torch.nn.Dropout(float(block.hyper["rate"]))


@twin("add")
def _add(torch, block):
    return lambda x1, x2: x1 + x2


@twin("concat")
def _concat(torch, block):
    return lambda x1, x2: torch.cat((x1, x2), 1)


# -- tokens [b, n, d]: dense, layernorm and add above serve them as they are (torch's act on the last axis)
def _patches(m):
    return {"w": (m.conv.weight, lambda t: t.permute(2, 3, 1, 0)), "b": (m.conv.bias, lambda t: t)}


@twin("patch_embedding", layout=_patches)
def _patch_embedding(torch, block):
    s = block.sizes

    class PatchEmbedding(torch.nn.Module):
        """A convolution with kernel = stride = P, its [b, d, i, j] read as tokens [b, i*J + j, d]."""

        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(s["channels"], s["dim"], s["patch"], stride=s["patch"])

        def forward(self, x):
            return self.conv(x).flatten(2).transpose(1, 2)
    return PatchEmbedding()


@twin("positional_embedding", layout=lambda m: {"pos": (m.pos, lambda t: t)})
def _positional_embedding(torch, block):
    s = block.sizes

    class PositionalEmbedding(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.pos = torch.nn.Parameter(torch.zeros(s["tokens"], s["features"]).normal_(0, 0.02))

        def forward(self, x):
            return x + self.pos
    return PositionalEmbedding()


def _attention_layout(m):
    return {"wq": (m.q.weight, lambda t: t.T), "bq": (m.q.bias, lambda t: t), "wk": (m.k.weight, lambda t: t.T),
            "wv": (m.v.weight, lambda t: t.T), "bv": (m.v.bias, lambda t: t),
            "wo": (m.o.weight, lambda t: t.T), "bo": (m.o.bias, lambda t: t)}


@twin("attention", layout=_attention_layout)
def _attention(torch, block):
    d, heads = block.sizes["features"], block.sizes["heads"]

    class Attention(torch.nn.Module):
        """Multi-head self-attention written out as a PyTorch user would: q, k (no bias, as the engine's),
        v and the output projection as Linear layers, torch's fused scaled_dot_product_attention between."""

        def __init__(self):
            super().__init__()
            self.q, self.k = torch.nn.Linear(d, d), torch.nn.Linear(d, d, bias=False)
            self.v, self.o = torch.nn.Linear(d, d), torch.nn.Linear(d, d)

        def forward(self, x):
            b, n, _ = x.shape
            q, k, v = (f(x).view(b, n, heads, d // heads).transpose(1, 2) for f in (self.q, self.k, self.v))
            o = torch.nn.functional.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(E)) v
            return self.o(o.transpose(1, 2).reshape(b, n, d))
    return Attention()


@twin("token_mixing", layout=lambda m: _linear(m.mix))
def _token_mixing(torch, block):
    s = block.sizes

    class TokenMixing(torch.nn.Module):
        """A Linear over the tokens: each feature's column [b, n] mixed apart."""

        def __init__(self):
            super().__init__()
            self.mix = torch.nn.Linear(s["tokens"], s["units"])

        def forward(self, x):
            return self.mix(x.transpose(1, 2)).transpose(1, 2)
    return TokenMixing()


@twin("mean_pool")
def _mean_pool(torch, block):
    return lambda x: x.mean(1)


def missing(net) -> list:
    """What of `net` has no PyTorch twin, as 'kind NAME', 'activation NAME', 'loss NAME'; [] if all has."""
    gaps = [f"kind {layer.kind!r}" for layer in net.net.layers if layer.kind not in KINDS]
    gaps += [f"activation {layer.activation!r}" for layer in net.net.layers if layer.activation not in ACTIVATIONS]
    if net.net.loss not in LOSSES:
        gaps.append(f"loss {net.net.loss!r}")
    return list(dict.fromkeys(gaps))


def _activate(torch, a, activation):
    """The layer's activation on its output `a` (None: none)."""
    if activation == "softmax":  # over each example's entries, as the engine's [b, i]
        return torch.softmax(a.reshape(a.shape[0], -1), 1).reshape(a.shape)
    if activation == "gelu":  # the engine's form: tanh's approximation, not erf
        return torch.nn.functional.gelu(a, approximate="tanh")
    return a if activation is None else getattr(torch, activation)(a)


class ShapeMismatch(ValueError):
    """A twin whose layer gives another shape than the engine's: the kind's name is shared, its meaning not."""

    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind


def build(net, batch: int):
    """The twin of `net` (torch.nn.Module; `model(x)` gives logits, `model.loss` the loss), its layers
    sized from the engine's stages compiled at `batch`, in channels_last and the network's dtype;
    checked layer by layer against the engine's shapes (ShapeMismatch)."""
    import torch

    gaps = missing(net)
    if gaps:
        raise ValueError(f"network {net.name!r} has no PyTorch twin: no twin for {', '.join(gaps)}")
    blocks = {s.name: s.layer for s in net.compiled(batch)[:-1]}
    layers = list(net.net.layers)
    fused = LOSSES[net.net.loss]
    steps = []
    for n, layer in enumerate(layers):
        activation = ACTIVATIONS[layer.activation]
        if n == len(layers) - 1 and activation == fused:
            activation = None  # logits: the torch loss applies the softmax itself
        steps.append((layer.name, layer.kind, tuple(layer.inputs), activation))

    class Graph(torch.nn.Module):
        """The layers run in the engine's order, each on the outputs its `inputs:` name."""

        def __init__(self):
            super().__init__()
            self.layers = torch.nn.ModuleDict()
            self.functions = {}
            for name, kind, _, _ in steps:
                made = KINDS[kind](torch, blocks[name])
                if isinstance(made, torch.nn.Module):
                    self.layers[name] = made
                else:
                    self.functions[name] = made
            smoothing = float(net.net.loss_hyper.get("smoothing", 0.0))  # the same target q as the engine's
            self.loss = torch.nn.CrossEntropyLoss(label_smoothing=smoothing)  # the mean over the batch, as (24)'s 1/B

        def forward(self, x, expect=None):
            """Logits; given `expect` ({layer: the engine's shape, as NCHW}), each layer is checked against it."""
            outs = {"input": x}
            for name, kind, sources, activation in steps:
                run = self.layers[name] if name in self.layers else self.functions[name]
                try:
                    a = run(*(outs[src] for src in sources))
                except RuntimeError as exc:  # its inputs are not what the twin of the kind takes
                    if expect is None:
                        raise
                    raise ShapeMismatch(kind, f"layer {name!r} ({kind}): its twin cannot take the engine's shapes "
                                              f"({str(exc).splitlines()[0]})") from None
                if expect is not None and tuple(a.shape) != expect[name]:
                    raise ShapeMismatch(kind, f"layer {name!r} ({kind}): its twin gives {tuple(a.shape)}, the engine "
                                              f"{expect[name]}")
                outs[name] = a = _activate(torch, a, activation)
            return a

    dtype = torch_dtype(torch, net)
    model = Graph().to(dtype=dtype, memory_format=torch.channels_last)
    _check_shapes(torch, model, net, blocks, batch, dtype)
    return model


def _check_shapes(torch, model, net, blocks, batch, dtype):
    """Each layer of the twin gives the engine's shape (NHWC read as NCHW), on one forward pass."""
    expect = {}
    for name, block in blocks.items():
        shape = tuple(block.out_shape)
        expect[name] = (shape[0], shape[3], shape[1], shape[2]) if len(shape) == 4 else shape
    model.eval()
    with torch.no_grad():
        model(to_torch(torch, np.zeros((batch, *net.input_shape)), dtype), expect)
    model.train()


def torch_dtype(torch, net):
    return torch.float64 if net.dtype == np.float64 else torch.float32


def to_torch(torch, x, dtype):
    """An engine batch as the twin takes it: images (b, h, w, c) as NCHW in channels_last memory."""
    t = torch.from_numpy(np.ascontiguousarray(x)).to(dtype)
    if t.ndim == 4:
        t = t.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
    return t


def _views(model, net):
    """(layer, param, torch parameter, its view in the engine's layout) for every engine parameter."""
    import torch
    for layer in net.net.layers:
        names = net.params.get(layer.name, {})
        if not names:
            continue
        if layer.kind not in LAYOUTS:
            raise ValueError(f"layer {layer.name!r} ({layer.kind}): its twin does not say where its parameters lie")
        module = model.layers[layer.name] if layer.name in model.layers else model.functions[layer.name]
        where = LAYOUTS[layer.kind](module)
        for p in names:
            param, view = where[p]
            yield layer.name, p, param, view, torch


def load_params(model, net) -> None:
    """Give the twin the engine's parameters, each put where the kind's layout says."""
    for layer, p, param, view, torch in _views(model, net):
        # the flat positions of the view's entries within the parameter: a view's inverse, whatever it is
        where = view(torch.arange(param.numel()).reshape(param.shape)).reshape(-1)
        flat = param.detach().reshape(-1).clone()  # logical order, whatever the memory format
        flat[where] = torch.from_numpy(np.ascontiguousarray(net.params[layer][p])).reshape(-1).to(param.dtype)
        with torch.no_grad():
            param.copy_(flat.reshape(param.shape))


def grads(model, net) -> dict:
    """The twin's gradients in the engine's layout: {layer: {param: array}}, as net.loss_and_grads gives."""
    out = {}
    for layer, p, param, view, _ in _views(model, net):
        out.setdefault(layer, {})[p] = view(param.grad).detach().numpy()
    return out


def parameter_count(model) -> int:
    return sum(p.numel() for p in model.parameters())


class Torch:
    """The PyTorch side of bench.py: the twin of a network, Adam at lr 1e-3, on the engine's batch."""

    name = "pytorch"

    def __init__(self, net, batch, x, y, threads=2):
        import torch
        torch.set_num_threads(threads)
        self.torch = torch
        self.model = build(net, batch)
        self.opt = torch.optim.Adam(self.model.parameters(), 1e-3)
        self.x = to_torch(torch, x, torch_dtype(torch, net))
        self.y = torch.from_numpy(np.asarray(y, dtype=np.int64))
        self.train_step()

    def train_step(self):
        self.opt.zero_grad()
        self.model.loss(self.model(self.x), self.y).backward()
        self.opt.step()

    def infer(self):
        """A forward in eval mode (running statistics, no dropout), as the engine's inference."""
        self.model.eval()
        with self.torch.no_grad():
            self.model(self.x)
        self.model.train()
