"""One kind, activation or loss of layers.yaml checked and read: its inputs, parameters, equations,
algorithms, modes (eval:, state:, update:, random:) and the bounds of its hyperparameters."""
from __future__ import annotations

from notation import Equation, NotationError

from .init import INITIALISERS
from .records import Algorithm, Kind
from .spec_yaml import _mapping, _name, _what

ALGORITHM_CHOICES = ("auto", "definition")  # besides the names of a kind's algorithms


def _kind(spec, section, name, body, io) -> Kind:
    where = f"{section[:-1] if section != 'activations' else 'activation'} {name!r}"
    if not isinstance(body, dict):
        raise spec.error(where, "must be a mapping with forward: and backward:")
    allowed = {"cites", "input", "hyper", "symbols", "shapes", "params", "forward", "backward", "positions",
               "activation", "algorithms", "eval", "state", "update", "random", "bounds", "divides",
               "no_gradient"}
    extra = set(body) - allowed
    if extra:
        raise spec.error(where, f"unknown field(s) {sorted(extra)}; valid are {sorted(allowed)}")
    if not body.get("cites"):
        raise spec.error(where, "field 'cites' is missing; cite the report's equation numbers, e.g. \"(12)-(14)\"")
    inputs, input_axes = _kind_input(spec, where, body, section)
    params = _kind_params(spec, where, body)
    forward, backward = _kind_equations(spec, where, body)
    hyper, symbols, shapes, positions, activation = _kind_tables(spec, where, body)
    for pname, (_, init) in params.items():
        if init not in INITIALISERS and init not in hyper:
            raise spec.error(f"{where}, param {pname!r}", f"init {init!r} not found, valid options are "
                                                          f"{sorted(INITIALISERS)} or a hyperparameter name")
    algorithms = _algorithms(spec, where, body.get("algorithms"), section)
    if algorithms:
        hyper.setdefault("algorithm", "auto")
    modes = _modes(spec, where, body, params, hyper)
    for result in modes["no_gradient"]:
        if result not in {eq.result for eq in forward}:
            raise spec.error(f"{where}, no_gradient {result!r}", "is not written by a forward equation")
    kind = Kind(name, section, str(body["cites"]), inputs, hyper, symbols, shapes, params, forward, backward,
                positions, activation, io[0], io[1], algorithms, **modes)
    if input_axes:
        kind.in_name = next(iter(input_axes))
        kind.input_axes = input_axes
    return kind


def _kind_input(spec, where, body, section) -> tuple:
    """(the input's axes, {input name: axes} for a kind of several named inputs, else {})."""
    raw_input = body.get("input")
    input_axes = {}
    if isinstance(raw_input, dict):  # several named inputs: {x1: [b, height, width, c1], x2: [...]}
        if section != "kinds" or not raw_input or not all(
                isinstance(v, list) and all(isinstance(a, str) and a for a in v) for v in raw_input.values()):
            raise spec.error(f"{where}, field 'input'", "names each input's axes, e.g. {x1: [b, features], "
                                                        "x2: [b, features]} (kinds only)")
        input_axes = {str(k): tuple(v) for k, v in raw_input.items()}
        raw_input = next(iter(input_axes.values()))
    inputs = raw_input or (("b", "features") if section != "losses" else ())
    if not isinstance(inputs, (list, tuple)) or not all(isinstance(a, str) and a for a in inputs):
        raise spec.error(f"{where}, field 'input'", f"must list the names of the input's axes, e.g. "
                                                    f"[b, height, width, channels], not {_what(inputs)}")
    for axes in [inputs, *input_axes.values()]:
        if "..." in axes[1:]:
            raise spec.error(f"{where}, field 'input'", "'...' stands for the leading axes; write it first, "
                                                        "as in [..., features]")
    return tuple(inputs), input_axes


def _kind_params(spec, where, body) -> dict:
    """{param: (shape expressions, initialiser or hyperparameter name)}."""
    params = {}
    for pname, pbody in _mapping(spec, f"{where}, field 'params'", body.get("params"),
                                 "{w: {shape: [features, units], init: he}}").items():
        if not isinstance(pbody, dict) or "shape" not in pbody or not isinstance(pbody["shape"], list):
            raise spec.error(f"{where}, param {pname!r}", "needs {shape: [...], init: ...}")
        init = _name(spec, f"{where}, param {pname!r}, field 'init'", pbody.get("init", "zeros"),
                     f"an initialiser ({', '.join(sorted(INITIALISERS))}) or a hyperparameter")
        params[pname] = (tuple(pbody["shape"]), init)
    return params


def _kind_equations(spec, where, body) -> tuple:
    """(forward equations, {target: Jacobian equations} or 'derive')."""
    forward = []
    raw = body.get("forward")
    if raw is None or not isinstance(raw, list):
        raise spec.error(where, "field 'forward' must be a list of equations ([] for none)")
    for n, src in enumerate(raw):
        forward.append(_equation(spec, f"{where}, forward[{n}]", src))
    backward = body.get("backward", {} if not forward else None)
    if backward is None:
        raise spec.error(where, "field 'backward' is missing; give one Jacobian per input and parameter, "
                                "or 'backward: derive'")
    if backward != "derive":
        if not isinstance(backward, dict):
            raise spec.error(where, "field 'backward' must map each input and parameter to its Jacobian, "
                                    "or be 'derive'")
        for t in backward:
            _name(spec, f"{where}, field 'backward'", t, "the tensor a Jacobian differentiates (x, w, ...)")
        backward = {t: _jacobian(spec, f"{where}, backward {t!r}", src) for t, src in backward.items()}
    return forward, backward


def _kind_tables(spec, where, body) -> tuple:
    """(hyper, symbols, shapes, positions, activation), each checked for its type."""
    hyper = dict(_mapping(spec, f"{where}, field 'hyper'", body.get("hyper"), "{units: required, init: he}"))
    symbols = dict(_mapping(spec, f"{where}, field 'symbols'", body.get("symbols"), "{s1: stride, P: size - 1}"))
    for sname, expr in symbols.items():
        if not isinstance(sname, str) or isinstance(expr, bool) or not isinstance(expr, (str, int)):
            raise spec.error(f"{where}, symbol {sname!r}", f"must be a size expression such as 'size - 1' or a "
                                                            f"whole number, not {_what(expr)}")
    shapes = dict(_mapping(spec, f"{where}, field 'shapes'", body.get("shapes"), "{xp: [b, height + pt + pb]}"))
    for tname, shape in shapes.items():
        if not isinstance(shape, list):
            raise spec.error(f"{where}, shapes {tname!r}", f"must list sizes such as [b, height + pt + pb], "
                                                           f"not {_what(shape)}")
    positions = dict(_mapping(spec, f"{where}, field 'positions'", body.get("positions"), "{z: m}"))
    for result, mask in positions.items():
        _name(spec, f"{where}, positions {result!r}", mask, "the tensor that keeps the positions of the max")
    activation = body.get("activation")
    if activation is not None:
        _name(spec, f"{where}, field 'activation'", activation, "an activation")
    return hyper, symbols, shapes, positions, activation


def _chain(spec, where, part, raw) -> list:
    if not isinstance(raw, list) or not raw:
        raise spec.error(where, f"field {part!r} must be a non-empty list of equations")
    return [_equation(spec, f"{where}, {part}[{n}]", src) for n, src in enumerate(raw)]


def _constant(spec, where, name, c, earlier) -> tuple:
    """(closed form, [argument size expressions]) from {rdft: [width, nw]}, or ("=", Equation) from
    an equation over the constants before it (a product folded once per compile)."""
    from notation.mathematics.constants import CONSTANTS
    if isinstance(c, str):
        eq = _equation(spec, where, c)
        if eq.result != name:
            raise spec.error(where, f"its equation writes {eq.result!r}; write {name}[...] = ...")
        unknown = sorted(set(eq.operands) - set(earlier))
        if unknown:
            raise spec.error(where, f"reads {unknown[0]!r}, which is not a constant above it; a constant's "
                                    "equation reads only the constants listed before it")
        return "=", eq
    if not isinstance(c, dict) or len(c) != 1:
        raise spec.error(where, "must be {closed form: [arguments]}, e.g. {rdft: [width, nw]}, or an equation "
                                "over the constants above it")
    (form, args), = c.items()
    if form not in CONSTANTS:
        raise spec.error(where, f"no constant {form!r}; valid options are {sorted(CONSTANTS)}")
    if not isinstance(args, list) or any(isinstance(v, bool) or not isinstance(v, (str, int)) for v in args):
        raise spec.error(where, f"its arguments must be a list of sizes such as [width, nw], not {_what(args)}")
    if len(args) != len(CONSTANTS[form].args):
        raise spec.error(where, f"{form} takes {len(CONSTANTS[form].args)} argument(s) "
                                f"({', '.join(CONSTANTS[form].args) or 'none'}), not {len(args)}")
    return form, args


def _algorithms(spec, where, body, section) -> dict:
    """{name: Algorithm} from a kind's `algorithms:` mapping."""
    if body is None:
        return {}
    if section != "kinds" or not isinstance(body, dict):
        raise spec.error(f"{where}, field 'algorithms'", "must map algorithm names to {forward: [...], "
                                                         "backward: [...]} (layer kinds only)")
    out = {}
    allowed = {"cites", "requires", "symbols", "shapes", "constants", "forward", "backward"}
    for aname, a in body.items():
        _name(spec, f"{where}, field 'algorithms'", aname, "an algorithm's name")
        awhere = f"{where}, algorithm {aname!r}"
        if aname in ALGORITHM_CHOICES:
            raise spec.error(awhere, f"{aname!r} is reserved; give the algorithm another name")
        if not isinstance(a, dict):
            raise spec.error(awhere, "must be a mapping with forward: and backward:")
        extra = set(a) - allowed
        if extra:
            raise spec.error(awhere, f"unknown field(s) {sorted(extra)}; valid are {sorted(allowed)}")
        if not a.get("cites"):
            raise spec.error(awhere, "field 'cites' is missing; say which equations it evaluates, e.g. \"(15)\"")
        given = _mapping(spec, f"{awhere}, field 'constants'", a.get("constants"), "{fw: {rdft: [width, nw]}}")
        constants = {}
        for cname, c in given.items():
            constants[cname] = _constant(spec, f"{awhere}, constant {cname!r}", cname, c, constants)
        chains = {part: _chain(spec, awhere, part, a.get(part)) for part in ("forward", "backward")}
        requires = _mapping(spec, f"{awhere}, field 'requires'", a.get("requires"), "{stride: 1}")
        symbols = _mapping(spec, f"{awhere}, field 'symbols'", a.get("symbols"), "{nh: height + pb}")
        shapes = _mapping(spec, f"{awhere}, field 'shapes'", a.get("shapes"), "{dzd: [b, height + P, zw, filters]}")
        out[aname] = Algorithm(aname, str(a["cites"]), dict(requires), dict(symbols), dict(shapes), constants,
                               chains["forward"], chains["backward"])
    return out


def _modes(spec, where, body, params, hyper) -> dict:
    """What differs between training and evaluation: eval:, state: with update:, random:, bounds:."""
    out = {}
    if "eval" in body:
        raw = body["eval"]
        if not isinstance(raw, list) or not raw:
            raise spec.error(f"{where}, field 'eval'", "must list the forward equations of eval mode")
        out["eval"] = [_equation(spec, f"{where}, eval[{n}]", src) for n, src in enumerate(raw)]
    out["state"] = _state(spec, where, body, params)
    raw = body.get("update") or []
    if not isinstance(raw, list):
        raise spec.error(f"{where}, field 'update'", "must list equations giving each state's new value")
    out["update"] = [_equation(spec, f"{where}, update[{n}]", src) for n, src in enumerate(raw)]
    for n, eq in enumerate(out["update"]):
        if eq.result not in out["state"]:
            raise spec.error(f"{where}, update[{n}]", f"writes {eq.result!r}, which is not declared under state:")
    random = {}
    for rname, rbody in _mapping(spec, f"{where}, field 'random'", body.get("random"),
                                 "{m: {shape: [b, features], bernoulli: keep}}").items():
        if not isinstance(rbody, dict) or not isinstance(rbody.get("shape"), list) or "bernoulli" not in rbody:
            raise spec.error(f"{where}, random {rname!r}", "needs {shape: [...], bernoulli: p}: entries 1 with "
                                                           "probability p, else 0")
        random[rname] = (tuple(rbody["shape"]), rbody["bernoulli"])
    out["random"] = random
    out["bounds"] = _bounds(spec, where, body, hyper)
    out["divides"] = _divides(spec, where, body, hyper)
    out["no_gradient"] = _no_gradient(spec, where, body)
    return out


def _divides(spec, where, body, hyper) -> dict:
    """{hyperparameter: [size expressions]}: the sizes it must divide (a head count the features)."""
    out = {}
    for hname, sizes in _mapping(spec, f"{where}, field 'divides'", body.get("divides"),
                                 "{heads: [features]}").items():
        if hname not in hyper:
            raise spec.error(f"{where}, divides {hname!r}", "is not a hyperparameter of this kind")
        if not isinstance(sizes, list) or not sizes or any(isinstance(v, bool) or not isinstance(v, (str, int))
                                                           for v in sizes):
            raise spec.error(f"{where}, divides {hname!r}", f"must list sizes such as [height, width], "
                                                             f"not {_what(sizes)}")
        out[hname] = tuple(sizes)
    return out


def _no_gradient(spec, where, body) -> tuple:
    """The results `backward: derive` treats as constants: a max subtracted before a softmax, which the
    softmax's shift invariance makes irrelevant to the output (its gradient is zero by construction)."""
    raw = body.get("no_gradient") or []
    if not isinstance(raw, list):
        raise spec.error(f"{where}, field 'no_gradient'", f"must list results, such as [sm], not {_what(raw)}")
    for name in raw:
        _name(spec, f"{where}, field 'no_gradient'", name, "a result of the forward equations")
    return tuple(raw)


def _state(spec, where, body, params) -> dict:
    """{name: (shape, init)}: tensors kept between steps that are not trained (running statistics)."""
    state = {}
    for sname, sbody in _mapping(spec, f"{where}, field 'state'", body.get("state"),
                                 "{rm: {shape: [channels], init: zeros}}").items():
        if not isinstance(sbody, dict) or not isinstance(sbody.get("shape"), list):
            raise spec.error(f"{where}, state {sname!r}", "needs {shape: [...], init: zeros|ones}")
        init = sbody.get("init", "zeros")
        if not isinstance(init, str) or init not in INITIALISERS:
            raise spec.error(f"{where}, state {sname!r}", f"init {init!r} not found, valid options are "
                                                          f"{sorted(INITIALISERS)}")
        if sname in params:
            raise spec.error(f"{where}, state {sname!r}", "is also a parameter; give it a name of its own")
        state[sname] = (tuple(sbody["shape"]), init)
    return state


def _bounds(spec, where, body, hyper) -> dict:
    """{hyperparameter: interval text}: the real-valued hyperparameters and the range each must lie in."""
    bounds = {}
    for hname, text in _mapping(spec, f"{where}, field 'bounds'", body.get("bounds"), '{rate: "[0, 1)"}').items():
        if hname not in hyper:
            raise spec.error(f"{where}, bounds {hname!r}", "is not a hyperparameter of this kind")
        try:
            interval(text)
        except ValueError as e:
            raise spec.error(f"{where}, bounds {hname!r}", str(e)) from None
        bounds[hname] = str(text)
    return bounds


def interval(text):
    """(low, low closed, high, high closed) from "[0, 1)"; ValueError if it is not an interval."""
    t = str(text).strip()
    try:
        if t[0] not in "[(" or t[-1] not in "])":
            raise ValueError
        lo, hi = (float(v) for v in t[1:-1].split(","))
    except (ValueError, IndexError):
        raise ValueError(f"{text!r} is not an interval such as \"[0, 1)\" or \"(0, inf)\"") from None
    return lo, t[0] == "[", hi, t[-1] == "]"


def within(value, text) -> bool:
    lo, lo_closed, hi, hi_closed = interval(text)
    return ((value >= lo if lo_closed else value > lo) and (value <= hi if hi_closed else value < hi))


def _jacobian(spec, where, src) -> list:
    """A Jacobian: one equation, or a list whose last equation writes the gradient and whose
    earlier ones compute intermediates it reads (a padded or gathered dz, say)."""
    if isinstance(src, list):
        if not src:
            raise spec.error(where, "is an empty list; give the Jacobian's equation(s)")
        return [_equation(spec, f"{where}[{n}]", s) for n, s in enumerate(src)]
    return [_equation(spec, where, src)]


def _equation(spec, where, src) -> Equation:
    """An equation in our notation, or {einsum: "bi,ij->bj", operands: [x, w], result: z, cites: "(12)"}."""
    if isinstance(src, dict):
        extra = set(src) - {"einsum", "operands", "result", "cites"}
        if extra or "einsum" not in src or not isinstance(src.get("operands"), list):
            raise spec.error(where, "an einsum entry is {einsum: 'bi,ij->bj', operands: [x, w], result: z, "
                                    "cites: '(12)'}")
        try:
            eq = Equation(str(src["einsum"]), operands=[str(n) for n in src["operands"]],
                          result=str(src.get("result", "z")))
        except NotationError as e:
            raise spec.error(where, e.one_line()) from None
        if src.get("cites"):
            spec.comments[eq.source] = str(src["cites"])
        return eq
    if not isinstance(src, str):
        raise spec.error(where, f"expected an equation string, found {src!r}")
    try:
        eq = Equation(src)
    except NotationError as e:
        raise spec.error(where, e.one_line()) from None
    for index, _ in eq.lonely:
        spec.warn(where, f"'{eq.source}' sums index {index!r}, which only one factor of its product names; if "
                         f"that is meant, write the sum as an equation of its own first, else correct the index")
    return eq
