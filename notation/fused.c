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
