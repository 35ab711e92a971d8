"""Roads for sums that are no matrix product: one operand summed over some axes (a bias's gradient),
and a product whose operands all carry every index, summed (batch norm's dg, dr).  Both run at
memory speed on BLAS GEMVs with a vector of ones, in chunks of a fixed size, so that their bits are
the same whichever thread computes which chunk."""
from __future__ import annotations

import math

import numpy as np

from ..runtime import fused, parallel
from . import cost
from .strategies import Strategy


class SumGemv(Strategy):
    """One operand summed over its leading (or trailing) axes, as a bias's gradient (6), (8)
    `db[k] = dz[b,i,j,k]`: a GEMV of the operand's matrix with a vector of ones, on BLAS (3-4x
    faster here than np.einsum's loop, which opt_einsum would run)."""

    name = "sum as GEMV"

    def __init__(self, product, writes, leading):
        super().__init__(product)
        self.writes, self.leading = writes, leading
        self.summed = math.prod(product.extents[i] for i in product.summed)
        self.ones = {}  # one vector of ones per dtype, made once
        side = "ones @ matrix" if leading else "matrix @ ones"
        self.runs = f"np.matmul, {side}, " + ("written into the result" if writes else "folded")

    @staticmethod
    def fits(product) -> str | None:
        """'leading' or 'trailing' where the summed indices are the operand's first or last axes and
        the rest stand in the result's order, else None."""
        p = product
        op = p.operands[0] if len(p.operands) == 1 else None
        if op is None or op.kind != "view" or not op.view.identity or not p.summed or not p.out_indices:
            return None
        n = len(p.summed)
        if set(op.indices[:n]) == set(p.summed) and op.indices[n:] == p.out_indices:
            return "leading"
        if set(op.indices[-n:]) == set(p.summed) and op.indices[:-n] == p.out_indices:
            return "trailing"
        return None

    def run(self, arrays, out, positions):
        p = self.product
        x = p.operands[0].evaluate(arrays, out.dtype, positions)
        direct = self.writes and out.dtype == x.dtype and out.flags.c_contiguous and x.dtype.kind in "fc"
        if x.dtype.kind not in "fc":  # integers and booleans: numpy's own sum, as einsum would
            result = np.einsum(p.einsum, x)
        else:
            ones = self.ones.get(x.dtype)
            if ones is None:
                ones = self.ones[x.dtype] = np.ones(self.summed, dtype=x.dtype)
            matrix = x.reshape((self.summed, -1) if self.leading else (-1, self.summed))
            pair = (ones, matrix) if self.leading else (matrix, ones)
            with parallel.one_blas_thread():  # a memory-bound GEMV: one thread, the same bits on every run
                result = np.matmul(*pair, out=out.reshape(-1) if direct else None)
            result = result.reshape(tuple(p.extents[i] for i in p.out_indices))
        self._write(out, result, direct)

    def _write(self, out, result, direct):
        if not self.writes:
            self._finish(out, result)
            return
        if not direct:
            out[...] = result
        if self.product.scale != 1.0:
            out *= np.asarray(self.product.scale, dtype=out.dtype)


class ChunkedSum(SumGemv):
    """A sum of a product whose operands all carry every index, in one memory order (batch norm's
    `dg[k] = dz[b,i,j,k] * xh[b,i,j,k]`, layer norm's per-example sums), but for factors on the result's
    indices alone (`* r[k]`: they multiply the sum once, after it), a chunk of CHUNK entries at a
    time: summed over the leading (row) axes, each chunk's rows are added one after another in one C
    pass (fused.c's COLSUM; batch norm's square(xc) read as xc * xc) or, without the library,
    numpy's multiply and np.add.reduce, to the same bits; summed over the trailing axes, each chunk's
    product is made in cache and its rows times ones (a GEMV).  The chunks' sums are added in their
    order: the same bits on one thread or two.  opt_einsum's road for it is a batched GEMM of 1xN by
    Nx1 blocks, one per k, that first copies both operands transposed (0.6 GB/s)."""

    name = "chunked sum of a product"
    CHUNK = 1 << 15  # entries a chunk holds (128 KiB in float32): fixed, so the bits never depend on the machine
    # COLSUM's chunks are shared between the workers from this many entries: below it the hand-off costs
    # more than half the pass (batch 64 after resnet's first pool, 401,408 entries: 0.04 ms on one thread)
    SPLIT = 1 << 20

    def __init__(self, product, writes, leading):
        Strategy.__init__(self, product)
        p = product
        self.writes, self.leading = writes, leading  # leading: summed axes first in memory, (S, O)
        self.n_sum = math.prod(p.extents[i] for i in p.summed)
        self.n_out = math.prod(p.extents[i] for i in p.out_indices)
        row = self.n_out if leading else self.n_sum  # entries of one row of the (rows, row) matrix
        rows = self.n_sum if leading else self.n_out
        self.rows_per = max(1, self.CHUNK // max(row, 1))
        self.chunks = [slice(s, min(s + self.rows_per, rows)) for s in range(0, rows, self.rows_per)]
        self.shape = (rows, row)
        self.buffers = {}  # (dtype, worker) -> scratch; dtype -> (ones, partial sums)
        self.last = None  # (the arrays read, COLSUM's call for them, the dtype, the library)
        self.cores, self.scaling = self.parts(p)
        self.reads = self._reads() if leading else None
        how = "each chunk's rows added in order (fused.c's COLSUM, in one pass), the chunks' sums in order" \
            if leading else "np.multiply into a buffer in cache, each chunk's rows times ones"
        times = f", times {', '.join(op.view.name for op in self.scaling)}" if self.scaling else ""
        self.runs = f"{len(self.chunks)} chunks of {self.rows_per} x {row}: {how}{times}, " + \
            ("written into the result" if writes else "folded")

    @staticmethod
    def parts(product) -> tuple:
        """(the operands summed, the factors): the factors are on the result's indices alone, in its order
        (`r[k]` in `dz[b,i,j,k] * xc[b,i,j,k] * r[k]`), the same in every term of the sum, so they multiply
        the sum once, after it."""
        p = product
        factor = [op.kind == "view" and op.view.identity and op.distinct and op.indices == p.out_indices
                  for op in p.operands]
        return [op for op, f in zip(p.operands, factor) if not f], [op for op, f in zip(p.operands, factor) if f]

    @staticmethod
    def fits(product) -> str | None:
        """'leading' where every operand but the factors is a C-ordered array on the summed indices then
        the result's (of 2 entries or more: numpy sums a single column pairwise), 'trailing' where on the
        result's then the summed ones; else None."""
        p = product
        if not p.summed or not p.out_indices or not p.operands:
            return None
        cores = ChunkedSum.parts(p)[0]
        if not cores:
            return None
        idx = cores[0].indices
        if not all(op.indices == idx and op.distinct and (op.kind == "call" or (
                op.kind == "view" and op.view.identity)) for op in cores):
            return None
        n = len(p.summed)
        if set(idx[:n]) == set(p.summed) and idx[n:] == p.out_indices and \
                math.prod(p.extents[i] for i in p.out_indices) >= 2:
            return "leading"
        if set(idx[-n:]) == set(p.summed) and idx[:-n] == p.out_indices:
            return "trailing"
        return None

    def modelled(self, itemsize, r) -> float:
        entries = sum(math.prod(op.shape) for op in self.product.operands)
        # shared by PARTS workers, whatever WORKERS is: the road, and so the bits, never depend on the thread count
        calls = (2 if self.leading else len(self.product.operands) * len(self.chunks)) / parallel.PARTS
        return cost.pass_seconds(entries, itemsize, r, calls=calls + 2)

    def _ones(self, dtype):
        got = self.buffers.get(dtype)
        if got is None:
            width = self.shape[1] if not self.leading else max(self.rows_per, len(self.chunks))
            partial = np.empty((len(self.chunks), self.shape[1]), dtype) if self.leading else None
            got = self.buffers[dtype] = (np.ones(width, dtype), partial)
        return got

    def _scratch(self, dtype, worker):
        buf = self.buffers.get((dtype, worker))
        if buf is None:
            buf = self.buffers[(dtype, worker)] = np.empty((self.rows_per, self.shape[1]), dtype)
        return buf

    def _part(self, values, dest, ones, items):
        """The chunks `items` (one worker's share): each chunk's product, summed, into its row of dest."""
        scratch = self._scratch(dest.dtype, items[0] % max(parallel.WORKERS, 1))
        for c in items:
            s = self.chunks[c]
            tmp = scratch[:s.stop - s.start]
            if len(values) == 1:
                tmp = values[0][s]
            else:
                np.multiply(values[0][s], values[1][s], out=tmp)
                for v in values[2:]:
                    np.multiply(tmp, v[s], out=tmp)
            if self.leading:  # row after row, as fused.c's COLSUM adds them
                np.add.reduce(tmp, axis=0, out=dest[c])
            else:
                np.matmul(tmp, ones, out=dest[s])

    def _reads(self):
        """[(the array's name, whether read as square(x))] for COLSUM, or None where an operand is another
        function of an array (numpy makes it first): operands are views or, the first, square(x)."""
        reads = []
        for n, op in enumerate(self.cores):
            if op.kind == "call" and op.func.name == "square" and n == 0 and op.argument.is_view:
                reads.append((op.argument.products[0].operands[0].view.name, True))
            elif op.kind == "view":
                reads.append((op.view.name, False))
            else:
                return None
        return reads

    def _colsum(self, arrays, dtype, partial):
        """fused.c's COLSUM call for these arrays (the leading layout, the library at hand, every operand a
        C-ordered block of dtype, a leading square(x) read as x * x, the same bits), made once while the
        same arrays come back (a step's buffers); else None."""
        lib = fused.library()
        if self.reads is None or lib is None:
            return None
        sources = [arrays[name] for name, _ in self.reads]
        last = self.last
        if last is not None and last[2] == dtype and last[3] is lib and all(a is b for a, b in zip(last[0], sources)):
            return last[1]
        blocks = []
        for op, (name, square) in zip(self.cores, self.reads):
            block = op.argument.as_view(arrays) if square else op.view(arrays[name])
            if block.dtype != dtype or not block.flags.c_contiguous or block.size != partial.shape[1] * self.shape[0]:
                blocks = None
                break
            blocks += [block, block] if square else [block]
        call = blocks and fused.colsum_arguments(self.rows_per, self.shape[0], self.shape[1], blocks, partial)
        self.last = (sources, call or None, dtype, lib)
        return call or None

    def run(self, arrays, out, positions):
        p = self.product
        dtype = out.dtype
        ones, partial = self._ones(dtype) if dtype.kind == "f" else (None, None)
        call = self._colsum(arrays, dtype, partial) if self.leading and partial is not None else None
        if call is None:
            values = [op.evaluate(arrays, out.dtype, positions) for op in self.cores]
            dtype = np.result_type(*values)
            if dtype.kind not in "fc":
                every = [op.evaluate(arrays, out.dtype, positions) for op in p.operands]
                self._write(out, np.einsum(p.einsum, *every).astype(out.dtype), False)
                return
            values = [v.reshape(self.shape) for v in values]
            ones, partial = self._ones(dtype)
        direct = self.writes and out.dtype == dtype and out.flags.c_contiguous
        result = out.reshape(-1) if direct else np.empty(self.n_out, dtype)
        dest = partial if self.leading else result
        with parallel.one_blas_thread():  # its GEMVs, on one thread whoever runs the products
            if call is not None:
                parallel.rows(call, len(self.chunks), self.n_sum * self.n_out, self.SPLIT)
            elif self.n_sum * self.n_out >= parallel.MIN_ENTRIES and len(self.chunks) > 1:
                parallel.each(lambda part: self._part(values, dest, ones, part), list(range(len(self.chunks))))
            else:
                self._part(values, dest, ones, list(range(len(self.chunks))))
            if self.leading:  # the chunks' sums, added in their order
                np.add.reduce(partial, axis=0, out=result)
        for op in self.scaling:  # the factors on the result's indices, once, in their order
            np.multiply(result, op.view(arrays[op.view.name]).reshape(-1), out=result)
        self._write(out, result.reshape(tuple(p.extents[i] for i in p.out_indices)), direct)
