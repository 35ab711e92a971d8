"""Sums over a window's taps in one C loop (fused.c's TAPS), numpy's passes where it is not built.

out[e] = sum over taps s of a[e, s] * b[e, s], for each group g of out's positions in turn (a scatter's
slices: each group is added where the one before it may have written).  Arrays are given with a label
per axis; a label absent from an array is broadcast over it.  The C loop and the numpy passes do the
same float operations in the same order (each tap's product, added left to right; then the scale;
then written, or added to out), so the bits never depend on which runs, nor on the thread count.
"""
from __future__ import annotations

import itertools
import math

import numpy as np

from . import fused, parallel

AXES = 6  # fused.c's TAPS: 5 outer axes and a row
MIN_SPLIT = 1 << 20  # multiply-adds worth sharing on the pool (2^17 made a zoo step no faster: 0.996-1.011)
_plans = {}


def _strides(x, labels, sizes) -> dict:
    """Each label's stride in x, in entries (0 where x lacks the label or is broadcast along it)."""
    out = dict.fromkeys(sizes, 0)
    for label, n, s in zip(labels, x.shape, x.strides):
        if n != 1:
            out[label] = s // x.itemsize
    return out


SMALL = 1 << 16  # entries of an operand copied with the row's axis last, where that lets the loop use vectors


def _sizes(a, la, b, lb, out, lo) -> dict:
    sizes = dict(zip(lo, out.shape))
    for x, labels in ((a, la), (b, lb)):
        for label, n in zip(labels or (), x.shape if x is not None else ()):
            sizes.setdefault(label, n)
    return sizes


def _row(out, lo, groups) -> str | None:
    """The label the loop runs along in its innermost row: out's axis of least stride (not a group's)."""
    rest = [(abs(s), i) for i, n, s in zip(lo, out.shape, out.strides) if i not in groups and n > 1]
    return min(rest)[1] if rest else None


def _relaid(x, labels, row):
    """The axes order that puts `row` last, where x is small and has it with a stride neither 0 nor 1
    (a kernel w[p,q,r,k] read along r): a copy so laid out lets the loop use vectors; else None."""
    if x is None or row not in labels or x.size > SMALL:
        return None
    k = labels.index(row)
    if x.shape[k] == 1 or x.strides[k] in (0, x.itemsize):
        return None
    return tuple(n for n in range(x.ndim) if n != k) + (k,), None


def _laid(x, labels, spec):
    """x laid out as `spec` says ((axes order, (label, size) of an axis to repeat it along before its
    last) or None): a small contiguous copy, and its labels."""
    if not spec:
        return x, labels
    perm, tile = spec
    x, labels = x.transpose(perm), tuple(labels[k] for k in perm)
    if tile:
        x = np.broadcast_to(x[..., None, :], x.shape[:-1] + (tile[1], x.shape[-1]))
        labels = labels[:-1] + (tile[0], labels[-1])
    return np.ascontiguousarray(x), labels


def _tile(a, la, b, lb, out, lo, groups, row):
    """(operand, label, size) where a small operand that runs along the row lacks the next axis out (a
    depthwise kernel w[p,q,k] over x[b,i,j,k]'s j): repeated along it, the row takes both axes (rows of
    j*k entries, not k); else None."""
    if b is None or row is None:
        return None
    st = {i: s // out.itemsize for i, n, s in zip(lo, out.shape, out.strides) if n > 1}
    sizes = dict(zip(lo, out.shape))
    rest = sorted((abs(s), i) for i, s in st.items() if i not in groups and i != row)
    if st.get(row) != 1 or not rest:
        return None
    nxt = rest[0][1]
    if st[nxt] != sizes[row]:
        return None
    for k, (x, lx) in enumerate(((a, la), (b, lb))):
        other, lother = (b, lb) if k == 0 else (a, la)
        if nxt in lx or row not in lx or x.strides[-1] != x.itemsize or lx[-1] != row or \
                x.size * sizes[nxt] > SMALL:
            continue
        s = dict(zip(lother, other.strides))
        if nxt in s and row in s and s[nxt] == sizes[row] * s[row]:
            return k, nxt, sizes[nxt]
    return None


def _plan(a, la, b, lb, out, lo, groups, taps):
    """What the loop needs for this layout: (the index array fused.c's TAPS reads, groups, taps, the first
    axis's length, whether it may be cut between workers (out's parts along it never meet), rows, whether
    the row runs on vectors, the operands' relayouts); None where the loop does not apply (more than 6
    axes left after merging, strides not whole entries)."""
    row = _row(out, lo, groups)
    swap = b is not None and row in la and row not in lb  # a * b is b * a to the bit: the one along the row second
    if swap:
        a, la, b, lb = b, lb, a, la
    perms = [_relaid(a, la, row), _relaid(b, lb, row)]
    a, la = _laid(a, la, perms[0])
    b, lb = _laid(b, lb, perms[1])
    tile = _tile(a, la, b, lb, out, lo, groups, row)
    if tile:
        k = tile[0]
        x, lx = (a, la) if k == 0 else (b, lb)
        spec = (perms[k][0] if perms[k] else tuple(range(x.ndim)), tile[1:])
        x, lx = _laid(x, lx, (tuple(range(x.ndim)), tile[1:]))
        a, la, b, lb = (x, lx, b, lb) if k == 0 else (a, la, x, lx)
        perms[k] = spec
    arrays = [x for x in (a, b, out) if x is not None]
    if any(s % x.itemsize for x in arrays for s in x.strides):
        return None
    sizes = _sizes(a, la, b, lb, out, lo)
    st = [_strides(a, la, sizes), _strides(b, lb, sizes) if b is not None else dict.fromkeys(sizes, 0),
          _strides(out, lo, sizes)]
    outer = sorted((i for i in lo if i not in groups), key=lambda i: -abs(st[2][i]))
    axes = []  # (size, strides of a, b, out), outermost first; axes of one memory run merged
    for i in outer:
        if sizes[i] == 1:
            continue
        s = tuple(t[i] for t in st)
        if axes and all(p == q * sizes[i] for p, q in zip(axes[-1][1], s)):
            axes[-1] = (axes[-1][0] * sizes[i], s)
        else:
            axes.append((sizes[i], s))
    if len(axes) > AXES:
        return None
    axes = axes[:1] + [(1, (0, 0, 0))] * (AXES - len(axes)) + axes[1:]  # the first stays first: the workers cut it
    ints = [n for n, _ in axes] + [s[k] for k in range(3) for _, s in axes]
    for values in itertools.product(*(range(sizes[i]) for i in groups)):
        ints += [sum(v * t[i] for v, i in zip(values, groups)) for t in st]
    for values in itertools.product(*(range(sizes[i]) for i in taps)):
        ints += [sum(v * t[i] for v, i in zip(values, taps)) for t in st[:2]]
    n0, s0 = axes[0][0], abs(axes[0][1][2])
    reach = sum((n - 1) * abs(s[2]) for n, s in axes[1:]) + sum((sizes[i] - 1) * abs(st[2][i]) for i in groups)
    work = math.prod(n for n, _ in axes) * max(1, math.prod(sizes[i] for i in groups + taps))
    split = work if n0 >= 2 and reach < s0 else 0  # the rows apart in out: the work the workers could share
    sa, sb, so = axes[-1][1]
    vector = so == 1 and ((b is None and sa == 1) or (b is not None and (sa, sb) in ((1, 1), (0, 1), (1, 0))))
    rows = math.prod(n for n, _ in axes[:-1])
    return (np.array(ints, np.intp), math.prod(sizes[i] for i in groups), math.prod(sizes[i] for i in taps), n0,
            split, rows, vector, perms, swap)


def shape(a, la, b, lb, out, lo, groups=(), taps=()):
    """(rows of one group, whether they run on vectors, whether the loop is cut between the workers) for
    this layout, or None where the loop does not apply: what a cost model needs."""
    plan = _plan(a, la, b, lb, out, lo, tuple(groups), tuple(taps))
    return None if plan is None else (plan[5], plan[6], plan[4] >= MIN_SPLIT)


def run(a, la, b, lb, out, lo, groups=(), taps=(), add=False, scale=1.0) -> None:
    """out (or out +)= scale * sum over `taps` of a * b, one group of `groups` after another: a, b and out
    labelled per axis (la, lb, lo); b may be None (the taps of a alone).  groups are labels of out,
    taps labels of a or b only; the sizes of a label agree wherever it appears."""
    groups, taps = tuple(groups), tuple(taps)
    if not loop(a, la, b, lb, out, lo, groups, taps, add, scale):
        _numpy(a, la, b, lb, out, lo, groups, taps, add, scale)


def loop(a, la, b, lb, out, lo, groups=(), taps=(), add=False, scale=1.0) -> bool:
    """run() in fused.c's loop; False (nothing done) where it is not built, does not apply, or out
    overlaps an operand (numpy's passes buffer an overlap; the loop would not)."""
    dtype = out.dtype
    if a.dtype != dtype or (b is not None and b.dtype != dtype) or not out.flags.writeable:
        return False
    lib = fused.library()
    if lib is None or dtype not in fused.FLOATS:
        return False
    key = (dtype, la, a.shape, a.strides, lb, None if b is None else (b.shape, b.strides),
           lo, out.shape, out.strides, groups, taps)
    plan = _plans.get(key)
    if plan is None:
        if len(_plans) >= 512:  # a few per network; more only where shapes keep changing
            _plans.clear()
        made = _plan(a, la, b, lb, out, lo, tuple(groups), tuple(taps))
        plan = _plans[key] = made and (made, fused.address(made[0]),
                                       [fused.extent(x) for x in (a, b, out) if x is not None], [None])
    if not plan:
        return False
    (_, n_groups, n_taps, n0, split, _, _, perms, swap), at, extents, last = plan
    o = fused.address(out)
    o0, o1 = o + extents[-1][0], o + extents[-1][1]
    pa = fused.address(a)
    pb = None if b is None else fused.address(b)
    for p, (lo_, hi_) in zip((pa, pb), extents):
        if p is not None and p + lo_ < o1 and o0 < p + hi_:
            return False
    if swap:
        a, b, la, lb, pa, pb = b, a, lb, la, pb, pa
    if perms[0]:
        a = _laid(a, la, perms[0])[0]
        pa = fused.address(a)
    if perms[1]:
        b = _laid(b, lb, perms[1])[0]
        pb = fused.address(b)
    args = (pa, pb, o, at, n_groups, n_taps, int(add), int(scale != 1.0))
    rows = last[0]
    if rows is None or rows[0] != args or rows[1] != scale:  # a step's buffers come back: packed once
        rows = last[0] = (args, scale, fused.Rows(lib, "taps", dtype, args, scale))
    parallel.rows(rows[2], n0, split, MIN_SPLIT)
    return True


def _lined(x, labels, fixed, lo_rest, sizes):
    """x with `fixed` labels set to their values, on the axes lo_rest (size 1 where x lacks one)."""
    key = tuple(fixed.get(label, slice(None)) for label in labels)
    x = x[key]
    rest = [label for label in labels if label not in fixed]
    x = x.transpose([rest.index(i) for i in lo_rest if i in rest])
    return x.reshape([sizes[i] if i in rest else 1 for i in lo_rest])


def _numpy(a, la, b, lb, out, lo, groups, taps, add, scale) -> None:
    """What fused.c's TAPS does, in numpy's passes: the same operations, in the same order."""
    sizes = _sizes(a, la, b, lb, out, lo)
    rest = [i for i in lo if i not in groups]
    shape = [sizes[i] for i in rest]
    acc, tmp = np.empty(shape, out.dtype), np.empty(shape, out.dtype)
    for g in itertools.product(*(range(sizes[i]) for i in groups)):
        for n, s in enumerate(itertools.product(*(range(sizes[i]) for i in taps))):
            fixed = dict(zip(groups + taps, g + s))
            x = _lined(a, la, fixed, rest, sizes)
            dest = acc if n == 0 else tmp
            if b is None:
                np.copyto(dest, x)
            else:
                np.multiply(x, _lined(b, lb, fixed, rest, sizes), out=dest)
            if n:
                np.add(acc, tmp, out=acc)
        if scale != 1.0:
            np.multiply(acc, np.asarray(scale, out.dtype), out=acc)
        target = _lined(out, lo, dict(zip(groups, g)), rest, sizes)
        if add:
            np.add(target, acc, out=target)
        else:
            np.copyto(target, acc)
