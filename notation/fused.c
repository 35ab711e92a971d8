/* Loops numpy cannot fuse, for notation/fused.py (built by scripts/setup.sh into notation/_fused.so).
 *
 * Each does the float operations of the numpy passes it replaces, in their order and rounded alike:
 * built with -ffp-contract=off (no fused multiply-add) and without -ffast-math, so the results are
 * the same bits; only the passes over memory are fewer.  -fno-math-errno lets sqrt vectorise (it
 * changes no result).
 */
#include <math.h>
#include <stddef.h>

/* The first 16 hex digits of this file's SHA-256, given by scripts/setup.sh: fused.py runs a library
 * only if it was built from the fused.c beside it. */
#ifndef FUSED_SOURCE
#define FUSED_SOURCE 0
#endif

unsigned long long fused_source(void) { return FUSED_SOURCE; }

/* Adam's update of n entries, as engine/training/optim.py's Adam._update writes it in numpy:
 *   m = (m - g) * b1 + g;  v = (v - g*g) * b2 + g*g;  w -= m / (sqrt(v) + eps) * step */
#define ADAM(NAME, T, SQRT)                                                                   \
    void NAME(const T *restrict g, T *restrict w, T *restrict m, T *restrict v, ptrdiff_t n, \
              T b1, T b2, T eps, T step) {                                                   \
        for (ptrdiff_t i = 0; i < n; i++) {                                                  \
            T gi = g[i];                                                                     \
            T mi = (m[i] - gi) * b1 + gi;                                                    \
            T sq = gi * gi;                                                                  \
            T vi = (v[i] - sq) * b2 + sq;                                                    \
            m[i] = mi;                                                                       \
            v[i] = vi;                                                                       \
            w[i] -= mi / (SQRT(vi) + eps) * step;                                            \
        }                                                                                    \
    }

ADAM(adam_float32, float, sqrtf)
ADAM(adam_float64, double, sqrt)

/* out = a * b, numpy's multiply, over up to 6 axes of n[0..5] entries; each operand has its strides in
 * entries (0 where it is broadcast), and the last axis is contiguous in all three.  numpy pays a call
 * per row of that axis: for a pool's (19), rows of 32 channels, that cost is most of the pass.  A bool
 * b counts as 0 or 1, as numpy casts it. */
#define MULTIPLY(NAME, T, U)                                                                     \
    void NAME(const T *a, const ptrdiff_t *as, const U *b, const ptrdiff_t *bs, T *out,         \
              const ptrdiff_t *os, const ptrdiff_t *n) {                                        \
        for (ptrdiff_t i0 = 0; i0 < n[0]; i0++)                                                 \
        for (ptrdiff_t i1 = 0; i1 < n[1]; i1++)                                                 \
        for (ptrdiff_t i2 = 0; i2 < n[2]; i2++)                                                 \
        for (ptrdiff_t i3 = 0; i3 < n[3]; i3++)                                                 \
        for (ptrdiff_t i4 = 0; i4 < n[4]; i4++) {                                               \
            const T *pa = a + i0 * as[0] + i1 * as[1] + i2 * as[2] + i3 * as[3] + i4 * as[4];   \
            const U *pb = b + i0 * bs[0] + i1 * bs[1] + i2 * bs[2] + i3 * bs[3] + i4 * bs[4];   \
            T *po = out + i0 * os[0] + i1 * os[1] + i2 * os[2] + i3 * os[3] + i4 * os[4];       \
            for (ptrdiff_t k = 0; k < n[5]; k++)                                                \
                po[k] = pa[k] * (T)pb[k];                                                       \
        }                                                                                       \
    }

MULTIPLY(multiply_float32_float32, float, float)
MULTIPLY(multiply_float32_bool, float, unsigned char)
MULTIPLY(multiply_float64_float64, double, double)
MULTIPLY(multiply_float64_bool, double, unsigned char)
