"""A block's sizes: its input axes, hyperparameters, padding and symbols bound to numbers, and the
shapes its declared tensors take; a size that is not a positive whole number is one SpecError."""
from __future__ import annotations

from . import arith
from .padding import pads
from .records import axis_sizes, fits


def _whole(value):
    """A hyperparameter as given, with whole numbers written as floats (YAML's 1.0e+8) or as text
    YAML does not read as a number (1e8, 4e6) made ints, so they can be sizes."""
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value
        return int(number) if number.is_integer() and abs(number) < 2 ** 62 else value
    if isinstance(value, float) and value.is_integer() and abs(value) < 2 ** 62:
        return int(value)
    return value


class Sizes:
    """Block's sizes (a mixin): reads self.kind, self.hyper, self.sizes, self.symbols; error() is Block's."""

    def _input_sizes(self, in_shapes):
        """Each input axis's size, from every input that names it; inputs that disagree are refused.
        The axes a leading `...` stands for are kept as self.lead, for shapes written with it."""
        sizes, first = {}, {}
        self.lead = ()
        for name in self.kind.in_names:
            axes = self.kind.input_axes.get(name, self.kind.inputs)
            shape = in_shapes.get(name)
            if shape is None:
                continue
            field = "input" if len(self.kind.in_names) == 1 else f"input {name!r}"
            if not fits(axes, shape):
                raise self.error(field, f"expects an input [{', '.join(axes)}] but gets shape {tuple(shape)}")
            if axes[:1] == ("...",):
                self.lead = tuple(shape[:len(shape) - len(axes) + 1])
            for axis, n in axis_sizes(axes, shape).items():
                if axis in sizes and sizes[axis] != n:
                    raise self.error(field, f"has {axis} = {n} (shape {tuple(shape)}) but input {first[axis]!r} "
                                            f"has {axis} = {sizes[axis]}; the inputs' shapes must agree")
                sizes[axis] = n
                first.setdefault(axis, name)
        return sizes

    def _sizes(self, in_shapes):
        sizes = self._input_sizes(in_shapes)
        for k, v in list(self.hyper.items()):
            v = self.hyper[k] = _whole(v)
            if v is None:
                raise self.error(f"field {k!r}", f"is empty (null); give {k} a value")
            if isinstance(v, (list, dict)):
                raise self.error(f"field {k!r}", f"{k} must be a number or a name, not a "
                                                 f"{'list' if isinstance(v, list) else 'mapping'} ({v!r})")
            if k in self.kind.bounds:  # a real number such as a rate or a momentum, not a size
                continue
            if isinstance(v, float) and not isinstance(v, bool):
                raise self.error(f"field {k!r}", f"{k} = {v!r} must be a positive whole number")
            if isinstance(v, int) and not isinstance(v, bool):
                if v <= 0:
                    raise self.error(f"field {k!r}", f"{k} = {v} must be a positive whole number")
                sizes[k] = v
        self._check_divides(sizes)
        if "padding" in self.hyper:
            try:
                k, s = self.hyper["kernel"], self.hyper["stride"]
                sizes["pt"], sizes["pb"] = pads(self.hyper["padding"], sizes["height"], k, s)
                sizes["pl"], sizes["pr"] = pads(self.hyper["padding"], sizes["width"], k, s)
            except ValueError as e:
                raise self.error("field 'padding'", str(e)) from None
            except KeyError as e:
                raise self.error("field 'padding'", f"padding needs {e.args[0]!r} (kernel, stride, height, "
                                                    "width)") from None
        return sizes

    def _check_divides(self, sizes):
        """Each hyperparameter under `divides:` a divisor of its sizes (heads of the features, a patch of
        the image), else one line naming the field."""
        for h, exprs in self.kind.divides.items():
            for expr in exprs:
                try:
                    n = arith.size(expr, {**self._hyper_names(), **sizes})
                except ValueError as e:
                    raise self.error(f"divides {h!r}", str(e)) from None
                d = sizes.get(h)
                if d is not None and n % d:
                    raise self.error(f"field {h!r}", f"{h} = {d} does not divide {expr} = {n}; choose {h} among "
                                                     f"{[k for k in range(1, n + 1) if n % k == 0]}")

    def _hyper_names(self):
        return {k: v for k, v in self.hyper.items() if isinstance(v, int) and not isinstance(v, bool)}

    def _names(self, *more):
        """What a size expression may name: hyperparameters (non-sizes too, so a message can say
        'filters = 'abc' is not a whole number'), input sizes, padding, then `more`."""
        names = {k: v for k, v in self.hyper.items() if k not in self.sizes}
        names.update(self.sizes)
        for m in more:
            names.update(m)
        return names

    def _symbols(self):
        out = {k: v for k, v in self.sizes.items() if k in ("pt", "pb", "pl", "pr")}
        reals = {k: float(v) for k, v in self.hyper.items()  # eps, momentum, rate: scalars of the equations
                 if isinstance(v, float) or (k in self.kind.bounds and isinstance(v, int) and not isinstance(v, bool))}
        out.update(reals)
        for name, expr in self.kind.symbols.items():
            try:
                out[name] = arith.size(expr, self._names())
            except ValueError as e:
                try:
                    out[name] = arith.number(expr, {**self.sizes, **out})
                except ValueError:
                    raise self.error(f"symbol {name!r}", str(e)) from None
        return out

    def _random(self):
        """[(name, shape, p)]: the Bernoulli masks drawn before each training forward."""
        out = []
        for name, (shape, p) in self.kind.random.items():
            try:
                value = float(arith.number(p, {**self.sizes, **self.symbols}))
            except ValueError as e:
                raise self.error(f"random {name!r}", str(e)) from None
            if not 0 <= value <= 1:
                raise self.error(f"random {name!r}", f"bernoulli: {p} = {value} is not a probability in [0, 1]")
            out.append((name, self._shape(shape, f"random {name!r}"), value))
        return out

    def _shape(self, exprs, field):
        """A declared shape's sizes: expressions in the input's axes, hyperparameters and symbols; a
        leading `...` is the input's leading axes (a dropout mask over tokens: [..., features])."""
        lead = ()
        if tuple(exprs[:1]) == ("...",):
            lead, exprs = self.lead, exprs[1:]
        try:
            shape = lead + tuple(arith.size(e, self._names(self.symbols)) for e in exprs)
        except ValueError as e:
            raise self.error(field, str(e)) from None
        if any(n < 1 for n in shape):
            raise self.error(field, f"has shape {shape}; every size must be at least 1")
        return shape
