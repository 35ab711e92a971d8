/* Loops numpy cannot fuse, for notation/fused.py (built by scripts/setup.sh into notation/_fused.so).
 *
 * Each does the float operations of the numpy passes it replaces, in their order and rounded alike:
 * built with -ffp-contract=off (no fused multiply-add) and without -ffast-math, so the results are
 * the same bits; only the passes over memory are fewer.  -fno-math-errno lets sqrt vectorise (it
 * changes no result).
 */
#define _GNU_SOURCE /* RUSAGE_THREAD: a thread's own context switches (flag_wait) */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* The first 16 hex digits of this file's SHA-256, given by scripts/setup.sh: fused.py runs a library
 * only if it was built from the fused.c beside it. */
#ifndef FUSED_SOURCE
#define FUSED_SOURCE 0
#endif

unsigned long long fused_source(void) { return FUSED_SOURCE; }

/* An optimizer's update of many arrays in one call ("multi-tensor apply", as PyTorch's foreach
 * optimizers): engine/training/optim.py's numpy passes per array, each entry's float operations in
 * their order and rounded alike.  The work is `count` segments, (array, first entry, entries) triples
 * in seg, over tables of each array's address: g the gradients (NULL: that array is numpy's this step,
 * skipped), w the weights, m and v the state; shrink holds each array's decoupled weight decay factor
 * (1 where it does not decay: w * 1 is w, to the bit), applied first as optim.py does.
 *
 * Each moment of magnitude under tiny (the dtype's smallest normal number) is stored as +0 before w
 * reads it (optim.flush_subnormal): a dead unit's m, decaying by b1 a step, would stay subnormal for
 * good (0.9 times a few of the smallest subnormals rounds back to them), and subnormals take a slow
 * path on many processors.  A compare and select, vectorised; the thread's floating-point mode
 * (MXCSR) is never touched. */
#define FLUSH(x, tiny) ((x) < (tiny) && (x) > -(tiny) ? 0 : (x))

/* Adam is also built for AVX-512 and AVX2, the widest the processor has chosen when the library loads
 * (x86-64 Linux): the same IEEE operations on wider vectors, so the same bits.  On dense1's weights
 * (3,211,264 floats, Zen 4, a busy machine): 1.6-1.7 ms, against 2.5-2.6 for the baseline's SSE loop
 * with the flush and 2.0-2.1 for that loop without it. */
#if defined(__x86_64__) && defined(__linux__) && defined(__has_attribute)
#if __has_attribute(target_clones)
#define WIDEST __attribute__((target_clones("avx512f", "avx2", "default")))
#endif
#endif
#ifndef WIDEST
#define WIDEST
#endif

#define SEGMENTS(...)                                                                               \
    for (ptrdiff_t s = 0; s < count; s++) {                                                         \
        const ptrdiff_t k = seg[3 * s], at = seg[3 * s + 1], n = seg[3 * s + 2];                    \
        if (!g[k]) continue;                                                                        \
        __VA_ARGS__                                                                                 \
    }

/* SGD: w = w * shrink - g * lr (eq. 6-9). */
#define SGD(NAME, T)                                                                                \
    WIDEST void NAME(ptrdiff_t count, const ptrdiff_t *seg, T *const *g, T *const *w, const T *shrink, \
                     T lr) {                                                                        \
        SEGMENTS(const T *restrict gk = g[k] + at; T *restrict wk = w[k] + at; const T c = shrink[k]; \
                 for (ptrdiff_t i = 0; i < n; i++) wk[i] = wk[i] * c - gk[i] * lr;)                 \
    }

/* Heavy-ball momentum: v = v * mu - g * lr, flushed; w = w * shrink + v. */
#define MOMENTUM(NAME, T)                                                                           \
    WIDEST void NAME(ptrdiff_t count, const ptrdiff_t *seg, T *const *g, T *const *w, T *const *v,   \
                     const T *shrink, T mu, T lr, T tiny) {                                         \
        SEGMENTS(const T *restrict gk = g[k] + at; T *restrict wk = w[k] + at;                      \
                 T *restrict vk = v[k] + at; const T c = shrink[k];                                 \
                 for (ptrdiff_t i = 0; i < n; i++) {                                                \
                     T vi = vk[i] * mu - gk[i] * lr;                                                \
                     vi = FLUSH(vi, tiny);                                                          \
                     vk[i] = vi;                                                                    \
                     wk[i] = wk[i] * c + vi;                                                        \
                 })                                                                                 \
    }

/* Adam: m = (m - g) * b1 + g;  v = (v - g*g) * b2 + g*g;  w = w * shrink - m / (sqrt(v) + eps) * step,
 * the moments flushed. */
#define ADAM(NAME, T, SQRT)                                                                         \
    WIDEST void NAME(ptrdiff_t count, const ptrdiff_t *seg, T *const *g, T *const *w, T *const *m,   \
                     T *const *v, const T *shrink, T b1, T b2, T eps, T step, T tiny) {             \
        SEGMENTS(const T *restrict gk = g[k] + at; T *restrict wk = w[k] + at;                      \
                 T *restrict mk = m[k] + at; T *restrict vk = v[k] + at; const T c = shrink[k];     \
                 for (ptrdiff_t i = 0; i < n; i++) {                                                \
                     T gi = gk[i];                                                                  \
                     T mi = (mk[i] - gi) * b1 + gi;                                                 \
                     T sq = gi * gi;                                                                \
                     T vi = (vk[i] - sq) * b2 + sq;                                                 \
                     mi = FLUSH(mi, tiny);                                                          \
                     vi = FLUSH(vi, tiny);                                                          \
                     mk[i] = mi;                                                                    \
                     vk[i] = vi;                                                                    \
                     T wi = wk[i] * c;                                                              \
                     wk[i] = wi - mi / (SQRT(vi) + eps) * step;                                     \
                 })                                                                                 \
    }

SGD(sgd_float32, float)
SGD(sgd_float64, double)
MOMENTUM(momentum_float32, float)
MOMENTUM(momentum_float64, double)
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

/* numpy's maximum: a NaN wins (the first's, if both are), and of two equal values (0.0 and -0.0) the
 * second, as np.maximum gives them.  Written as a select, so GCC makes it vector compares. */
#define MAXIMUM(a, b) (((a) > (b) || (a) != (a)) ? (a) : (b))
/* (19)'s plane of one window offset: h = (x == v) where no earlier offset hit (seen), over n entries. */
#define FIRST_HITS(h, x, v, seen, n)                                                                    \
    for (ptrdiff_t k_ = 0; k_ < (n); k_++) {                                                            \
        unsigned char hit_ = ((x)[k_] == (v)[k_]) & !(seen)[k_];                                        \
        (h)[k_] = hit_;                                                                                 \
        (seen)[k_] |= hit_;                                                                             \
    }
#define CHUNK 256

/* (18)'s max over a window of w offsets, and, where planes is given, (19)'s one-hot positions of the
 * first maximum in the window's C order, as notation/maxima.py's numpy passes make them: values =
 * max(max(x0, x1), x2)...; plane o = (xo == values) and no earlier plane hit.  Over up to 4 outer
 * axes of n[0..3] entries and rows of n[4] entries, contiguous in x, values and planes alike; xs, vs
 * and ps are the outer strides (in entries) of x, values and the planes, xo and po each offset's
 * start in x and in planes.  numpy pays a call per row of a few channels for each of its passes. */
/* WINDOW_MAX works on vectors of 32 bytes (GCC's vector extensions: 8 floats or 4 doubles; wider ones
 * are not lowered to each clone's registers, and ran 20 times slower) and leaves only a row's last few
 * entries to plain loops: on rows of a few channels GCC's own vectorised loops spent most of their
 * time starting and ending.  A first maximum's hits are made as ints a row at a time, then narrowed
 * to the planes' bytes (written a lane at a time they ran 3 times slower).  The pool after resnet's
 * stem at batch 64, one thread, a busy machine: 0.80-0.93 -> 0.56-0.63 ms with positions, 0.41-0.61
 * -> 0.23 ms without. */
typedef float window_f32 __attribute__((vector_size(32)));
typedef double window_f64 __attribute__((vector_size(32)));
typedef int window_i32 __attribute__((vector_size(32)));
typedef long long window_i64 __attribute__((vector_size(32)));

/* MAXIMUM on vectors: a where a > b or a is NaN, else b (a select of the bits) */
#define WINDOW_VMAX(V, I, a, b) ({ const I m_ = ((a) > (b)) | ((a) != (a)); (V)((m_ & (I)(a)) | (~m_ & (I)(b))); })
#define WINDOW_LOAD(V, p) ({ V v_; memcpy(&v_, (p), sizeof v_); v_; })

#define WINDOW_MAX(NAME, T, V, I, W)                                                                    \
    WIDEST void NAME(const T *x, const ptrdiff_t *xs, const ptrdiff_t *xo, ptrdiff_t w, T *values,      \
                     const ptrdiff_t *vs, unsigned char *planes, const ptrdiff_t *ps, const ptrdiff_t *po, \
                     const ptrdiff_t *n) {                                                              \
        enum { LANES = sizeof(V) / sizeof(T) };                                                         \
        unsigned char seen[CHUNK];                                                                      \
        W hits[CHUNK], opened[CHUNK];  /* per lane: -1 or 0, as the vectors' compares give them */      \
        for (ptrdiff_t i0 = 0; i0 < n[0]; i0++)                                                         \
        for (ptrdiff_t i1 = 0; i1 < n[1]; i1++)                                                         \
        for (ptrdiff_t i2 = 0; i2 < n[2]; i2++)                                                         \
        for (ptrdiff_t i3 = 0; i3 < n[3]; i3++)                                                         \
        for (ptrdiff_t k0 = 0; k0 < n[4]; k0 += CHUNK) {                                                \
            const ptrdiff_t m = n[4] - k0 < CHUNK ? n[4] - k0 : CHUNK, whole = m - m % LANES;           \
            const T *row = x + i0 * xs[0] + i1 * xs[1] + i2 * xs[2] + i3 * xs[3] + k0;                  \
            T *restrict v = values + i0 * vs[0] + i1 * vs[1] + i2 * vs[2] + i3 * vs[3] + k0;            \
            unsigned char *at = planes ? planes + i0 * ps[0] + i1 * ps[1] + i2 * ps[2] + i3 * ps[3] + k0 \
                                       : NULL;                                                          \
            for (ptrdiff_t k = 0; k < whole; k += LANES) {                                              \
                V vk = WINDOW_LOAD(V, row + xo[0] + k);                                                 \
                for (ptrdiff_t o = 1; o < w; o++) {                                                     \
                    const V b = WINDOW_LOAD(V, row + xo[o] + k);                                        \
                    vk = WINDOW_VMAX(V, I, vk, b);                                                      \
                }                                                                                       \
                memcpy(v + k, &vk, sizeof vk);                                                          \
            }                                                                                           \
            if (at)  /* the first maxima: each offset's hits as ints in a row of lanes, then narrowed */ \
                for (ptrdiff_t o = 0; o < w; o++) {                                                     \
                    for (ptrdiff_t k = 0; k < whole; k += LANES) {                                      \
                        const V vk = WINDOW_LOAD(V, v + k);                                             \
                        const I open = o ? WINDOW_LOAD(I, opened + k) : ~(I){0};                        \
                        const I hit = (WINDOW_LOAD(V, row + xo[o] + k) == vk) & open;                   \
                        const I left = open & ~hit;                                                     \
                        memcpy(hits + k, &hit, sizeof hit);                                             \
                        memcpy(opened + k, &left, sizeof left);                                         \
                    }                                                                                   \
                    unsigned char *restrict h = at + po[o];                                             \
                    for (ptrdiff_t k = 0; k < whole; k++) h[k] = (unsigned char)(hits[k] & 1);          \
                }                                                                                       \
            if (whole == m)                                                                             \
                continue;                                                                               \
            const ptrdiff_t rest = m - whole;  /* the row's last entries, one by one */                 \
            const T *restrict a = row + xo[0] + whole;                                                  \
            v += whole;                                                                                 \
            for (ptrdiff_t k = 0; k < rest; k++) v[k] = a[k];                                           \
            for (ptrdiff_t o = 1; o < w; o++) {                                                         \
                const T *restrict b = row + xo[o] + whole;                                              \
                for (ptrdiff_t k = 0; k < rest; k++) v[k] = MAXIMUM(v[k], b[k]);                        \
            }                                                                                           \
            if (!at)                                                                                    \
                continue;                                                                               \
            unsigned char *restrict h = at + po[0] + whole;                                             \
            for (ptrdiff_t k = 0; k < rest; k++) seen[k] = h[k] = a[k] == v[k];                         \
            for (ptrdiff_t o = 1; o < w; o++) {                                                         \
                const T *restrict b = row + xo[o] + whole;                                              \
                h = at + po[o] + whole;                                                                 \
                FIRST_HITS(h, b, v, seen, rest)                                                         \
            }                                                                                           \
        }                                                                                               \
    }

WINDOW_MAX(window_max_float32, float, window_f32, window_i32, int)
WINDOW_MAX(window_max_float64, double, window_f64, window_i64, long long)

/* The same max over a window that is each row's w contiguous entries (a softmax's max over its last
 * axis), where WINDOW_MAX would take the rows one entry at a time: row r starts at x + r * xs; values, and
 * each plane (ps entries apart), are contiguous over the rows.  The compares of WINDOW_MAX in its order,
 * over a block of rows at a time turned so that each offset's entries lie together (vector compares). */
#define ROW_BLOCK 4096
#define ROW_MAX(NAME, T)                                                                                \
    WIDEST void NAME(const T *x, ptrdiff_t rows, ptrdiff_t w, ptrdiff_t xs, T *values,                  \
                     unsigned char *planes, ptrdiff_t ps) {                                             \
        T col[ROW_BLOCK];                                                                               \
        unsigned char seen[ROW_BLOCK];                                                                  \
        const ptrdiff_t R = w >= ROW_BLOCK ? 1 : ROW_BLOCK / w;                                         \
        for (ptrdiff_t r0 = 0; r0 < rows; r0 += R) {                                                    \
            const ptrdiff_t nr = rows - r0 < R ? rows - r0 : R;                                         \
            T *restrict v = values + r0;                                                                \
            for (ptrdiff_t r = 0; r < nr; r++) v[r] = x[(r0 + r) * xs];                                 \
            for (ptrdiff_t o = 1; o < w; o++) {                                                         \
                if (w < ROW_BLOCK) {                                                                    \
                    T *restrict c = col;                                                                \
                    for (ptrdiff_t r = 0; r < nr; r++) c[r] = x[(r0 + r) * xs + o];                     \
                    for (ptrdiff_t r = 0; r < nr; r++) v[r] = MAXIMUM(v[r], c[r]);                      \
                } else {                                                                                \
                    v[0] = MAXIMUM(v[0], x[r0 * xs + o]);                                               \
                }                                                                                       \
            }                                                                                           \
            if (!planes)                                                                                \
                continue;                                                                               \
            for (ptrdiff_t r = 0; r < nr; r++) seen[r] = 0;                                             \
            for (ptrdiff_t o = 0; o < w; o++) {                                                         \
                unsigned char *restrict h = planes + o * ps + r0;                                       \
                T *restrict c = col;                                                                    \
                for (ptrdiff_t r = 0; r < nr; r++) c[r] = x[(r0 + r) * xs + o];                         \
                FIRST_HITS(h, c, v, seen, nr)                                                           \
            }                                                                                           \
        }                                                                                               \
    }

ROW_MAX(row_max_float32, float)
ROW_MAX(row_max_float64, double)

/* An elementwise sum of products (an equation whose terms sum nothing), entry by entry, in one pass:
 * out = t0 + t1 + ..., each term t = f0(a0) * f1(a1) * ... * scale, in the order and rounding of
 * numpy's passes that notation/lowering/chains.py replaces (a product's factors multiplied in order,
 * then its scale; mode bit 0 clear: the first term written; set: added to zero, where numpy zeroes the
 * result first; mode >> 1, where not 0: numpy's loop mode >> 1 - 1 (NUMPY_EXP_LOOP ...) applied to the
 * sum, as `exp(s - m)` is evaluated).  The iteration
 * runs over rows of n entries, the rows over up to 6 outer axes of outer[0..5] entries, row-major; out
 * and each operand have 6 outer strides and one along the row, in entries (7 each).  kind says how an
 * operand is read a block at a time: 0 contiguous rows, 1 the same for every row (a bias k over
 * b,i,j,k: tiled once), 2 gathered; okind 0: out's rows contiguous, 2: each row apart (a strided
 * result: its rows gathered into a block and written back).
 * code: per term its factor count, then per factor its operand and function (CHAIN_ID ...), then its
 * scale's index or -1; -1 ends it.  Rows [r0, r1) only: the workers take a part each. */
#define CHAIN_BLOCK 1024
#define CHAIN_OPS 8
enum { CHAIN_ID, CHAIN_SQUARE, CHAIN_TWICE, CHAIN_DRELU, CHAIN_RELU, CHAIN_TANH, CHAIN_DTANH, CHAIN_SIGMOID,
       CHAIN_DSIGMOID, CHAIN_GELU, CHAIN_DGELU };

/* numpy's own tanh loop for each dtype (float32, float64), handed over by notation/runtime/ufuncs.py: the
 * functions built on tanh (notation/mathematics/functions.py) run their numpy passes here on a block in
 * cache, with numpy's tanh in the middle, so they are numpy's bits (its tanh is no libm call: SVML's
 * algorithm on AVX2/AVX-512).  gelu's constants c, a c and 3 a c, as functions.py computes them. */
typedef void (*ufunc_loop)(char **args, const ptrdiff_t *dims, const ptrdiff_t *steps, void *data);
enum { NUMPY_TANH_LOOP, NUMPY_EXP_LOOP, NUMPY_LOOPS };
static ufunc_loop numpy_loop[NUMPY_LOOPS][2];
static void *numpy_loop_data[NUMPY_LOOPS][2];
static double gelu_k[3];

/* numpy's loop of function f (NUMPY_TANH_LOOP, NUMPY_EXP_LOOP) for dtype `which` (float32, float64). */
void chain_numpy_loop(int f, int which, void *loop, void *data) {
    numpy_loop[f][which] = (ufunc_loop)loop;
    numpy_loop_data[f][which] = data;
}

void chain_gelu_constants(double c, double ac, double ac3) {
    gelu_k[0] = c, gelu_k[1] = ac, gelu_k[2] = ac3;
}

#define NUMPY_LOOP(F, K, T, x, y, L)                                                                    \
    do {                                                                                                \
        char *args_[2] = {(char *)(x), (char *)(y)};                                                    \
        ptrdiff_t n_ = (L), steps_[2] = {sizeof(T), sizeof(T)};                                         \
        numpy_loop[F][K](args_, &n_, steps_, numpy_loop_data[F][K]);                                    \
    } while (0)
#define NUMPY_TANH(K, T, x, y, L) NUMPY_LOOP(NUMPY_TANH_LOOP, K, T, x, y, L)

/* y = F(x) over L entries for the functions on tanh, u a block of scratch: numpy's passes in their
 * order (functions.py's _dtanh_array, _sigmoid_array, ... written out entry by entry). */
#define CHAIN_ON_TANH(K, T, F, x, y, u, L)                                                             \
    do {                                                                                                \
        const T c = (T)gelu_k[0], ac = (T)gelu_k[1], ac3 = (T)gelu_k[2];                                \
        if (F == CHAIN_TANH || F == CHAIN_DTANH) NUMPY_TANH(K, T, x, y, L);                             \
        if (F == CHAIN_SIGMOID || F == CHAIN_DSIGMOID) {                                                \
            for (ptrdiff_t e = 0; e < L; e++) y[e] = x[e] * (T)0.5;                                     \
            NUMPY_TANH(K, T, y, y, L);                                                                  \
        }                                                                                               \
        if (F == CHAIN_GELU || F == CHAIN_DGELU) {                                                      \
            for (ptrdiff_t e = 0; e < L; e++) y[e] = (x[e] * x[e] * ac + c) * x[e];                     \
            NUMPY_TANH(K, T, y, y, L);                                                                  \
        }                                                                                               \
        if (F == CHAIN_DTANH) for (ptrdiff_t e = 0; e < L; e++) y[e] = (T)1 - y[e] * y[e];              \
        if (F == CHAIN_SIGMOID) for (ptrdiff_t e = 0; e < L; e++) y[e] = (y[e] + (T)1) * (T)0.5;       \
        if (F == CHAIN_DSIGMOID) for (ptrdiff_t e = 0; e < L; e++) y[e] = ((T)1 - y[e] * y[e]) * (T)0.25; \
        if (F == CHAIN_GELU) for (ptrdiff_t e = 0; e < L; e++) y[e] = (y[e] + (T)1) * (T)0.5 * x[e];   \
        if (F == CHAIN_DGELU) {                                                                         \
            for (ptrdiff_t e = 0; e < L; e++) u[e] = (x[e] * x[e] * ac3 + c) * x[e];                    \
            for (ptrdiff_t e = 0; e < L; e++) y[e] = (((T)1 - y[e] * y[e]) * u[e] + y[e] + (T)1) * (T)0.5; \
        }                                                                                               \
    } while (0)

#define CHAIN_F(T, F, x)                                                                                \
    ((F) == CHAIN_SQUARE ? (x) * (x) : (F) == CHAIN_TWICE ? (x) * (T)2                                  \
     : (F) == CHAIN_DRELU ? ((x) > 0 ? (T)1 : (x) == 0 ? (T)0.5 : (T)0)                               \
     : MAXIMUM((x), (T)0))

/* dst = (or dst +) the product of the factors a[0..nf), times m where scaled: one loop a term. */
#define CHAIN_TERM(T, EXPR)                                                                             \
    if (add) for (ptrdiff_t e = 0; e < L; e++) dst[e] = dst[e] + (EXPR);                                \
    else for (ptrdiff_t e = 0; e < L; e++) dst[e] = (EXPR);

#define CHAIN_AXES 6
/* Where a row starts in out and in each operand: an index over the outer axes and its offsets, moved
 * on a row at a time with adds (a division per axis and row cost more than a short row's work). */
typedef struct { ptrdiff_t idx[CHAIN_AXES], out, op[CHAIN_OPS]; } chain_at;

static void chain_seek(chain_at *at, ptrdiff_t r, const ptrdiff_t *outer, const ptrdiff_t *ost,
                       const ptrdiff_t *st, int nops) {
    at->out = 0;
    for (int o = 0; o < nops; o++) at->op[o] = 0;
    for (int d = CHAIN_AXES - 1; d >= 0; d--) {
        at->idx[d] = r % outer[d];
        r /= outer[d];
        at->out += at->idx[d] * ost[d];
        for (int o = 0; o < nops; o++) at->op[o] += at->idx[d] * st[(CHAIN_AXES + 1) * o + d];
    }
}

static void chain_next(chain_at *at, const ptrdiff_t *outer, const ptrdiff_t *ost, const ptrdiff_t *st,
                       int nops) {
    for (int d = CHAIN_AXES - 1; d >= 0; d--) {
        const ptrdiff_t back = ++at->idx[d] < outer[d] ? 0 : outer[d];
        at->out += ost[d] * (1 - back);
        for (int o = 0; o < nops; o++) at->op[o] += st[(CHAIN_AXES + 1) * o + d] * (1 - back);
        if (!back) return;
        at->idx[d] = 0;
    }
}

#define CHAIN_ROWS 256  /* rows of a block walked one by one (their starts kept) at most */

#define CHAIN(NAME, T, K)                                                                               \
    WIDEST void NAME(ptrdiff_t r0, ptrdiff_t r1, ptrdiff_t n, const ptrdiff_t *outer, int nops,         \
                     const T *const *base, const ptrdiff_t *st, const int *kind, const int *code,       \
                     const T *scales, int mode, T *out, const ptrdiff_t *ost, int okind) {              \
        T buf[CHAIN_OPS][CHAIN_BLOCK], fbuf[CHAIN_OPS][CHAIN_BLOCK], tmp[CHAIN_BLOCK], obuf[CHAIN_BLOCK];  \
        ptrdiff_t starts[CHAIN_OPS + 1][CHAIN_ROWS];                                                    \
        const ptrdiff_t W = CHAIN_AXES + 1;                                                             \
        ptrdiff_t R = n >= CHAIN_BLOCK ? 1 : CHAIN_BLOCK / n;                                           \
        int walk = okind != 0;                                                                          \
        for (int o = 0; o < nops; o++) walk |= kind[o] == 2 || (kind[o] == 1 && R == 1);                \
        if (walk && R > CHAIN_ROWS) R = CHAIN_ROWS;                                                     \
        chain_at at, row_at;                                                                            \
        chain_seek(&at, r0, outer, ost, st, nops);                                                      \
        for (int o = 0; o < nops; o++)                                                                  \
            if (kind[o] == 1 && R > 1)                                                                  \
                for (ptrdiff_t e = 0; e < R * n; e++) buf[o][e] = base[o][(e % n) * st[W * o + W - 1]]; \
        for (ptrdiff_t r = r0, nr; r < r1; r += nr) {                                                   \
            nr = r1 - r < R ? r1 - r : R;                                                               \
            if (walk) {  /* each row's start in out and the operands */                                 \
                row_at = at;                                                                            \
                for (ptrdiff_t q = 0; q < nr; q++) {                                                    \
                    starts[nops][q] = row_at.out;                                                       \
                    for (int o = 0; o < nops; o++) starts[o][q] = row_at.op[o];                         \
                    chain_next(&row_at, outer, ost, st, nops);                                          \
                }                                                                                       \
                at = row_at;                                                                            \
            }                                                                                           \
            for (ptrdiff_t c = 0; c < n; c += CHAIN_BLOCK) {                                            \
                const ptrdiff_t nc = n - c < CHAIN_BLOCK ? n - c : CHAIN_BLOCK, L = nr * nc;            \
                const T *src[CHAIN_OPS];                                                                \
                for (int o = 0; o < nops; o++) {                                                        \
                    const ptrdiff_t inner = st[W * o + W - 1];                                          \
                    if (kind[o] == 0) { src[o] = base[o] + r * n + c; continue; }                       \
                    if (kind[o] == 1 && R > 1) { src[o] = buf[o]; continue; }                           \
                    if (nr == 1 && inner == 1) { src[o] = base[o] + starts[o][0] + c; continue; }       \
                    if (inner == 0) {  /* one value a row (a per-token mean): each row filled with it */ \
                        for (ptrdiff_t q = 0; q < nr; q++) {                                            \
                            const T v = base[o][starts[o][q]];                                          \
                            for (ptrdiff_t e = 0; e < nc; e++) buf[o][q * nc + e] = v;                  \
                        }                                                                               \
                        src[o] = buf[o];                                                                \
                        continue;                                                                       \
                    }                                                                                   \
                    for (ptrdiff_t q = 0; q < nr; q++) {                                                \
                        const T *a = base[o] + starts[o][q] + c * inner;                                \
                        for (ptrdiff_t e = 0; e < nc; e++) buf[o][q * nc + e] = a[e * inner];           \
                    }                                                                                   \
                    src[o] = buf[o];                                                                    \
                }                                                                                       \
                T *restrict dst = okind ? obuf : out + r * n + c;                                       \
                if (mode & 1) for (ptrdiff_t e = 0; e < L; e++) dst[e] = 0;                             \
                const int *pc = code;                                                                   \
                for (int term = 0; *pc >= 0; term++) {                                                  \
                    const int nf = *pc++, add = term > 0 || (mode & 1);                                 \
                    const T *a[CHAIN_OPS] = {0};                                                        \
                    for (int f = 0; f < nf; f++, pc += 2) {                                             \
                        const int F = pc[1];                                                            \
                        const T *restrict x = src[pc[0]];                                               \
                        T *restrict y = fbuf[f];                                                        \
                        a[f] = F == CHAIN_ID ? x : y;                                                   \
                        if (F == CHAIN_SQUARE) for (ptrdiff_t e = 0; e < L; e++) y[e] = CHAIN_F(T, CHAIN_SQUARE, x[e]); \
                        if (F == CHAIN_TWICE) for (ptrdiff_t e = 0; e < L; e++) y[e] = CHAIN_F(T, CHAIN_TWICE, x[e]); \
                        if (F == CHAIN_DRELU) for (ptrdiff_t e = 0; e < L; e++) y[e] = CHAIN_F(T, CHAIN_DRELU, x[e]); \
                        if (F == CHAIN_RELU) for (ptrdiff_t e = 0; e < L; e++) y[e] = CHAIN_F(T, CHAIN_RELU, x[e]); \
                        if (F >= CHAIN_TANH) CHAIN_ON_TANH(K, T, F, x, y, tmp, L);                      \
                    }                                                                                   \
                    const int k = *pc++;                                                                \
                    const T m = k >= 0 ? scales[k] : (T)1;                                              \
                    const T *restrict a0 = a[0], *restrict a1 = a[1];                                   \
                    if (nf > 2) {  /* the first factors' product, then the last two as for nf == 2 */   \
                        for (ptrdiff_t e = 0; e < L; e++) tmp[e] = a[0][e] * a[1][e];                   \
                        for (int f = 2; f < nf - 1; f++)                                                \
                            for (ptrdiff_t e = 0; e < L; e++) tmp[e] = tmp[e] * a[f][e];                \
                        a0 = tmp, a1 = a[nf - 1];                                                       \
                    }                                                                                   \
                    if (nf == 0 && k >= 0) { CHAIN_TERM(T, m) }                                         \
                    else if (nf == 0) { CHAIN_TERM(T, (T)1) }                                           \
                    else if (nf == 1 && k >= 0) { CHAIN_TERM(T, a0[e] * m) }                           \
                    else if (nf == 1) { CHAIN_TERM(T, a0[e]) }                                          \
                    else if (k >= 0) { CHAIN_TERM(T, a0[e] * a1[e] * m) }                               \
                    else { CHAIN_TERM(T, a0[e] * a1[e]) }                                               \
                }                                                                                       \
                if (mode >> 1)  /* a function of the whole sum, numpy's loop on the block (exp(s - m)) */  \
                    NUMPY_LOOP((mode >> 1) - 1, K, T, dst, dst, L);                                     \
                if (okind)  /* the block back to its rows */                                            \
                    for (ptrdiff_t q = 0; q < nr; q++)                                                  \
                        for (ptrdiff_t e = 0; e < nc; e++) out[starts[nops][q] + c + e] = dst[q * nc + e]; \
            }                                                                                           \
        }                                                                                               \
    }

CHAIN(chain_float32, float, 0)
CHAIN(chain_float64, double, 1)

/* Per-column sums of a product (batch norm's dg[k] = dz[b,i,j,k] * xh[b,i,j,k], its v of square(xc)
 * as xc * xc): the nops (1 to 4) operands are C-ordered (rows, n) blocks; the rows are cut in chunks
 * of `per`, and chunk c's sums go to partial[c * n ...]: partial[c, k] = ((0 + p[r0, k]) + p[r0 + 1, k])
 * + ..., p = a0 * a1 * ... in that order, as numpy's multiply passes and np.add.reduce(axis=0) make
 * them (row after row, from +0; the caller keeps n >= 2, where numpy does not sum pairwise).  Chunks
 * [c0, c1) only: the workers take a part each, and a chunk's sums never depend on which worker made
 * them.  One pass over the operands, each row's product added as it is made into COLSUM_WIDTH sums
 * held in registers (made in a block first and added from there: 0.28-0.40 against 0.17 ms for dg at
 * resnet's stem). */
#define COLSUM_WIDTH 64

#define COLSUM_ROWS(T, P)                                                                               \
    for (ptrdiff_t r = r0; r < r1; r++) {                                                               \
        const T *restrict x0 = ops[0] + r * n + k0, *restrict x1 = ops[nops > 1] + r * n + k0;          \
        const T *restrict x2 = ops[nops > 2 ? 2 : 0] + r * n + k0;                                      \
        const T *restrict x3 = ops[nops > 3 ? 3 : 0] + r * n + k0;                                      \
        for (ptrdiff_t e = 0; e < m; e++) s[e] = s[e] + (P);                                            \
    }

#define COLSUM(NAME, T)                                                                                 \
    WIDEST void NAME(ptrdiff_t c0, ptrdiff_t c1, ptrdiff_t per, ptrdiff_t rows, ptrdiff_t n, int nops,  \
                     const T *const *ops, T *partial) {                                                 \
        for (ptrdiff_t c = c0; c < c1; c++) {                                                           \
            const ptrdiff_t r0 = c * per, r1 = r0 + per < rows ? r0 + per : rows;                       \
            for (ptrdiff_t k0 = 0; k0 < n; k0 += COLSUM_WIDTH) {                                        \
                const ptrdiff_t m = n - k0 < COLSUM_WIDTH ? n - k0 : COLSUM_WIDTH;                      \
                T s[COLSUM_WIDTH];                                                                      \
                for (ptrdiff_t e = 0; e < COLSUM_WIDTH; e++) s[e] = 0;                                  \
                switch (nops) {                                                                         \
                case 1: COLSUM_ROWS(T, x0[e]) break;                                                    \
                case 2: COLSUM_ROWS(T, x0[e] * x1[e]) break;                                            \
                case 3: COLSUM_ROWS(T, x0[e] * x1[e] * x2[e]) break;                                    \
                default: COLSUM_ROWS(T, x0[e] * x1[e] * x2[e] * x3[e]) break;                           \
                }                                                                                       \
                for (ptrdiff_t e = 0; e < m; e++) partial[c * n + k0 + e] = s[e];                       \
            }                                                                                           \
        }                                                                                               \
    }

COLSUM(colsum_float32, float)
COLSUM(colsum_float64, double)

/* Hand-offs between the threads of notation/crew.py: a flag in shared memory, watched by spinning for
 * a bounded time, without the GIL (ctypes releases it), before the watcher falls back to sleeping on a
 * queue.  Waking a sleeping thread costs 25-30 us on a VM; a spinning one sees the flag at once. */
#if defined(__x86_64__) || defined(__i386__)
#define PAUSE() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define PAUSE() __asm__ __volatile__("yield")
#else
#define PAUSE() ((void)0)
#endif

#include <fcntl.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

/* A yield that took this long, and switched this thread out (its context switches counted by the
 * kernel), ran another thread on this core.  Two such yields within CONTENDED_WINDOW_NS mean the
 * machine is busy, and spinning would only take turns from it (a step at batch 32 beside two busy
 * processes: 30 ms sleeping, 96-184 ms spinning); then nobody spins for BUSY_NS: waits sleep at once,
 * as on queues alone.  A long yield that switched to nobody is the virtual machine's host taking the
 * core (seen every few steps, on a loaded host most of them): counted, it kept the helpers asleep
 * through most of each step, and spinning there takes nothing from this machine's threads. */
#define CONTENDED_NS 50000LL
#define CONTENDED_WINDOW_NS 10000000LL
#define BUSY_NS 100000000LL
static long long busy_until, contended_last;

/* This thread's context switches so far, where the kernel counts them per thread; else -1. */
static long thread_switches(void) {
#ifdef RUSAGE_THREAD
    struct rusage u;
    if (getrusage(RUSAGE_THREAD, &u) == 0) return u.ru_nvcsw + u.ru_nivcsw;
#endif
    return -1;
}

/* Whether the machine was found busy lately: then no split is shared (pool_run), no helper woken. */
int machine_busy(void) { return now_ns() < __atomic_load_n(&busy_until, __ATOMIC_RELAXED); }

/* Whether more threads can run on the machine right now than it has processors (/proc/loadavg's
 * runnable count, this one included), or where that cannot be read.  A kernel thread that took the
 * core for a moment (a VM's page-monitoring daemon) has gone by then; a competing process has not.
 * Without this check a mixer step was found busy after 11 of 84 steps on an idle machine (17.9 ms a
 * step against 16.8 with it, one process, alternate rounds); beside two processes that spin, every
 * step still is. */
static int overloaded(void) {
    char buf[128];
    const int fd = open("/proc/loadavg", O_RDONLY);
    if (fd < 0) return 1;
    const ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return 1;
    buf[n] = 0;
    const char *slash = strchr(buf, '/');
    const long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    if (slash == NULL || cpus < 1) return 1;
    const char *p = slash;
    while (p > buf && p[-1] >= '0' && p[-1] <= '9') p--;
    return p == slash || atol(p) > cpus;
}

/* A contended yield seen at `now`: whether the machine is found busy by it (the second within the
 * window, with more runnable threads than processors). */
static int contended(long long now) {
    if (now - __atomic_exchange_n(&contended_last, now, __ATOMIC_RELAXED) >= CONTENDED_WINDOW_NS)
        return 0;
    if (!overloaded())
        return 0;
    __atomic_store_n(&busy_until, now + BUSY_NS, __ATOMIC_RELAXED);
    return 1;
}

/* The flag's value once it differs from seen, or seen if it has not changed within ns nanoseconds (or
 * at once, where the machine was found busy).  Once it has changed, it spins `after` nanoseconds more
 * before returning: the thread that changed it holds the GIL for a few more microseconds, and a thread
 * that asks for a held GIL sleeps until it is handed over (25-30 us). */
static int pool_serve(void);
int flag_wait(const int *flag, int seen, long long ns, long long after) {
    long long start = now_ns(), end = start + ns;
    if (start < __atomic_load_n(&busy_until, __ATOMIC_RELAXED))
        return __atomic_load_n(flag, __ATOMIC_SEQ_CST);
    long switches = thread_switches();
    for (unsigned i = 1;; i++) {
        int v = __atomic_load_n(flag, __ATOMIC_SEQ_CST);
        if (pool_serve()) /* a crew helper takes the pool's spans while it watches (see pool_run) */
            end = now_ns() + ns;
        if (v != seen) {
            for (end = now_ns() + after; after > 0 && now_ns() < end;)
                PAUSE();
            return v;
        }
        if ((i & 15) == 0) {
            long long before = now_ns();
            if (before > end)
                return v;
            sched_yield();  /* a thread of ours waiting for this core runs first */
            long long after_yield = now_ns();
            if (after_yield - before > CONTENDED_NS) {
                const long now_switches = thread_switches();
                const int switched = now_switches != switches || switches < 0;
                switches = now_switches;
                if (switched && contended(after_yield))
                    return __atomic_load_n(flag, __ATOMIC_SEQ_CST);
            }
        }
        PAUSE();
    }
}

/* A helper's part done: DONE set to its number, whether the caller sleeps (AWAITED, reset) into *woke,
 * then the wait for the next part as flag_wait, all without the GIL: the caller, seeing DONE, finds
 * the GIL free instead of waiting for the helper to pass it back. */
int flag_done_wait(int *done, int number, int *awaited, int *woke, const int *posted, int seen, long long ns,
                   long long after) {
    __atomic_store_n(done, number, __ATOMIC_SEQ_CST);
    *woke = __atomic_exchange_n(awaited, 0, __ATOMIC_SEQ_CST);
    return flag_wait(posted, seen, ns, after);
}

int flag_load(const int *flag) { return __atomic_load_n(flag, __ATOMIC_SEQ_CST); }
void flag_store(int *flag, int v) { __atomic_store_n(flag, v, __ATOMIC_SEQ_CST); }
int flag_exchange(int *flag, int v) { return __atomic_exchange_n(flag, v, __ATOMIC_SEQ_CST); }

/* Sums over taps (notation/runtime/taps.py): for each group g in order, over [r0, r1) of the first of
 * 5 outer axes and a row, n[0..5] entries (strides as, bs, os in entries), each entry e gets
 *   v = a[e + ga + ta0] * b[e + gb + tb0] + a[e + ga + ta1] * b[e + gb + tb1] + ...  (left to right)
 * then out[e + go] = v (times scale where scaled), or out[e + go] + that (add).  With b NULL the taps
 * are a's entries alone.  at: n, as, bs, os (6 each), per group (ga, gb, go), per tap (ta, tb).  The
 * float operations of taps.py's numpy passes, in their order: the same bits.  Where the row is
 * contiguous in out (and in a and b, or broadcast) it runs TAPS_W entries at a time in registers. */
#define TAPS_W 8
#define LOADV(V, p) ({ V v_; memcpy(&v_, (p), sizeof v_); v_; })
#define TAPS_OUTER(T, ...)                                                                              \
    for (ptrdiff_t g = 0; g < groups; g++)                                                              \
    for (ptrdiff_t i0 = r0; i0 < r1; i0++)                                                              \
    for (ptrdiff_t i1 = 0; i1 < n[1]; i1++)                                                             \
    for (ptrdiff_t i2 = 0; i2 < n[2]; i2++)                                                             \
    for (ptrdiff_t i3 = 0; i3 < n[3]; i3++) {                                                           \
        const T *pa = a + go[3 * g] + i0 * as[0] + i1 * as[1] + i2 * as[2] + i3 * as[3];                \
        const T *pb = b + go[3 * g + 1] + i0 * bs[0] + i1 * bs[1] + i2 * bs[2] + i3 * bs[3];            \
        T *po = out + go[3 * g + 2] + i0 * os[0] + i1 * os[1] + i2 * os[2] + i3 * os[3];                \
        ptrdiff_t i4 = 0;                                                                               \
        __VA_ARGS__                                                                                     \
    }
#define TAPS_NEST(T, ROW) \
    TAPS_OUTER(T, for (; i4 < n[4]; i4++, pa += as[4], pb += bs[4], po += os[4]) { ROW })
/* one row: TAPS_W entries at a time as vectors (VEXPR), the rest one by one (SEXPR, its k-th entry) */
#define TAPS_VROW(T, V, VEXPR, SEXPR)                                                                   \
    ptrdiff_t k0 = 0;                                                                                   \
    for (; k0 + TAPS_W <= n[5]; k0 += TAPS_W) {                                                         \
        V v = {0};                                                                                      \
        for (ptrdiff_t s = 0; s < taps; s++) {                                                          \
            const T *x = pa + to[2 * s] + k0 * sa, *y = pb + to[2 * s + 1] + k0 * sb;                   \
            (void)y;                                                                                    \
            V t_ = (VEXPR);                                                                             \
            v = s ? v + t_ : t_;                                                                        \
        }                                                                                               \
        if (scaled) v = v * scale;                                                                      \
        if (add) v = v + LOADV(V, po + k0);                                                             \
        memcpy(po + k0, &v, sizeof v);                                                                  \
    }                                                                                                   \
    TAPS_SROW(T, SEXPR, 1)
#define TAPS_SROW(T, SEXPR, SO)                                                                         \
    for (ptrdiff_t k = k0; k < n[5]; k++) {                                                             \
        T v = 0;                                                                                        \
        for (ptrdiff_t s = 0; s < taps; s++) {                                                          \
            const T *x = pa + to[2 * s], *y = pb + to[2 * s + 1];                                       \
            (void)y;                                                                                    \
            T t_ = (SEXPR);                                                                             \
            v = s ? v + t_ : t_;                                                                        \
        }                                                                                               \
        if (scaled) v = v * scale;                                                                      \
        po[k * (SO)] = add ? po[k * (SO)] + v : v;                                                      \
    }
/* a product whose b (a kernel) is the same for rows along the last outer axis and runs along the row,
 * while a is one entry per row (a window of x): 4 such rows at once, each b read once for all 4 */
#define TAPS_STORE(V, v, p)                                                                             \
    { if (scaled) v = v * scale; if (add) v = v + LOADV(V, p); memcpy(p, &v, sizeof v); }
#define TAPS_FOUR(T, V)                                                                                 \
    for (; i4 + 4 <= n[4]; i4 += 4, pa += 4 * as[4], po += 4 * os[4])                                 \
        for (ptrdiff_t k0 = 0; k0 < n[5]; k0 += TAPS_W) {                                              \
            V v0 = {0}, v1 = {0}, v2 = {0}, v3 = {0};                                                   \
            const ptrdiff_t s4 = as[4];                                                                 \
            for (ptrdiff_t s = 0; s < taps; s++) {                                                      \
                const T *x = pa + to[2 * s];                                                            \
                const V y = LOADV(V, pb + to[2 * s + 1] + k0);                                          \
                const V t0 = x[0] * y, t1 = x[s4] * y, t2 = x[2 * s4] * y, t3 = x[3 * s4] * y;          \
                if (s) { v0 = v0 + t0; v1 = v1 + t1; v2 = v2 + t2; v3 = v3 + t3; }                      \
                else { v0 = t0; v1 = t1; v2 = t2; v3 = t3; }                                            \
            }                                                                                           \
            TAPS_STORE(V, v0, po + k0) TAPS_STORE(V, v1, po + os[4] + k0)                               \
            TAPS_STORE(V, v2, po + 2 * os[4] + k0) TAPS_STORE(V, v3, po + 3 * os[4] + k0)               \
        }
#define TAPS_NEST4(T, V) TAPS_OUTER(T, TAPS_FOUR(T, V)                                                   \
    for (; i4 < n[4]; i4++, pa += as[4], po += os[4]) { TAPS_VROW(T, V, x[0] * LOADV(V, y), x[0] * y[k]) })
#define TAPS(NAME, T, V)                                                                                \
    WIDEST void NAME(const T *a, const T *b, T *out, const ptrdiff_t *at, ptrdiff_t groups, ptrdiff_t taps, \
                     ptrdiff_t r0, ptrdiff_t r1, int add, int scaled, T scale) {                        \
        const ptrdiff_t *n = at, *as = at + 6, *bs = at + 12, *os = at + 18, *go = at + 24;             \
        const ptrdiff_t *to = go + 3 * groups, sa = as[5], sb = bs[5], so = os[5];                      \
        const int one = !b;                                                                             \
        if (one) b = a; /* its strides are 0: y is never read */                                        \
        if (so == 1 && one && sa == 1) { TAPS_NEST(T, TAPS_VROW(T, V, LOADV(V, x), x[k])) }             \
        else if (so == 1 && !one && sa == 1 && sb == 1) {                                               \
            TAPS_NEST(T, TAPS_VROW(T, V, LOADV(V, x) * LOADV(V, y), x[k] * y[k])) }                     \
        else if (so == 1 && !one && sa == 0 && sb == 1 && bs[4] == 0 && n[5] % TAPS_W == 0) {           \
            TAPS_NEST4(T, V) }                                                                          \
        else if (so == 1 && !one && sa == 0 && sb == 1) {                                               \
            TAPS_NEST(T, TAPS_VROW(T, V, x[0] * LOADV(V, y), x[0] * y[k])) }                            \
        else if (so == 1 && !one && sa == 1 && sb == 0) {                                               \
            TAPS_NEST(T, TAPS_VROW(T, V, LOADV(V, x) * y[0], x[k] * y[0])) }                            \
        else if (one) { TAPS_NEST(T, ptrdiff_t k0 = 0; TAPS_SROW(T, x[k * sa], so)) }                   \
        else { TAPS_NEST(T, ptrdiff_t k0 = 0; TAPS_SROW(T, x[k * sa] * y[k * sb], so)) }                \
    }

typedef float taps_f32 __attribute__((vector_size(TAPS_W * sizeof(float))));
typedef double taps_f64 __attribute__((vector_size(TAPS_W * sizeof(double))));
TAPS(taps_float32, float, taps_f32)
TAPS(taps_float64, double, taps_f64)

/* Row programs (notation/lowering/rowwise.py): consecutive equations over the same rows of n features
 * (a layer norm's mean, variance and normalised x; its gradient's two sums and dx), run a row at a time,
 * every equation in turn on it, so the row stays in L1 from the first equation to the last: one pass
 * over memory and one call where the equations one by one take a pass and a Python call each.
 * code: the equations' count, then per equation: whether its result is a row (1) or one value a row
 * (0), its slot, its terms' count; per term: whether it sums over the row (1) or takes its largest entry
 * (2, a max's only term), its scale's place in scales (-1: none), its factors' count; per factor: its
 * slot, how it is read (ROWS_ROW: entry e of the row, ROWS_VALUE: the row's one value, ROWS_SHARED: entry
 * e of one row for all) and its function.  A term is its factors multiplied left to right, then scaled; a sum over the row adds entry e into lane
 * e % ROWS_LANES (the first ROWS_LANES entries its start), the lanes then added in a fixed tree, in double
 * (a float32 layer norm's gradient subtracts two such sums: its float32 sums lost 4e-4 of it on 3 features),
 * as the terms of a one-value result, rounded once: the same bits on any thread, for any split, and as
 * rowwise.py's numpy passes where the library is not built. */
#define ROWS_MAX 4096
#define ROWS_BLOCK 1024 /* entries of the rows taken together through every equation: in L1 */
/* Built for AVX-512, AVX2 and the baseline, the processor's own chosen when the library loads: the same
 * operations in the same order at any width (no fused multiply-add: -ffp-contract=off), so the same bits. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define ROWS_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define ROWS_CLONES
#endif
#define ROWS_LANES 8
enum { ROWS_ROW, ROWS_VALUE, ROWS_SHARED };
/* The larger of two entries as numpy's maximum picks it: x where x >= y or x is NaN, else y. */
#define ROWS_LARGER(x, y) ((x) >= (y) || (x) != (x) ? (x) : (y))
enum { ROWS_ID, ROWS_SQUARE, ROWS_SQRT, ROWS_RSQRT, ROWS_RECIP, ROWS_DRECIP, ROWS_EXP };
/* One entry's function (ROWS_EXP: numpy's own loop on it, as the chains' final exp). */
#define ROWS_F(K, T, SQRT, f, x) rows_f_##K((f), (x))
#define ROWS_ONE(K, T, SQRT)                                                                            \
static inline T rows_f_##K(int f, T x) {                                                                \
    switch (f) {                                                                                        \
    case ROWS_SQUARE: return x * x;                                                                     \
    case ROWS_SQRT: return SQRT(x);                                                                     \
    case ROWS_RSQRT: return (T)1 / SQRT(x);                                                             \
    case ROWS_RECIP: return (T)1 / x;                                                                   \
    case ROWS_DRECIP: return -((T)1 / (x * x));                                                         \
    case ROWS_EXP: { T y; NUMPY_LOOP(NUMPY_EXP_LOOP, K, T, &x, &y, 1); return y; }                      \
    default: return x;                                                                                  \
    }                                                                                                   \
}
ROWS_ONE(0, float, sqrtf)
ROWS_ONE(1, double, sqrt)

/* t = fn(x) (first) or t * fn(x), over a row (u: scratch for numpy's exp): a loop of its own per
 * function, so that each vectorises. */
#define ROWS_FACTOR(NAME, K, T, SQRT)                                                                   \
static inline void NAME(T *restrict t, const T *restrict x, int fn, int first, ptrdiff_t n, T *restrict u) { \
    switch (fn * 2 + first) {                                                                           \
    case 2 * ROWS_ID + 1: for (ptrdiff_t e = 0; e < n; e++) t[e] = x[e]; break;                         \
    case 2 * ROWS_ID: for (ptrdiff_t e = 0; e < n; e++) t[e] = t[e] * x[e]; break;                      \
    case 2 * ROWS_SQUARE + 1: for (ptrdiff_t e = 0; e < n; e++) t[e] = x[e] * x[e]; break;              \
    case 2 * ROWS_SQUARE: for (ptrdiff_t e = 0; e < n; e++) t[e] = t[e] * (x[e] * x[e]); break;         \
    case 2 * ROWS_SQRT + 1: for (ptrdiff_t e = 0; e < n; e++) t[e] = SQRT(x[e]); break;                 \
    case 2 * ROWS_SQRT: for (ptrdiff_t e = 0; e < n; e++) t[e] = t[e] * SQRT(x[e]); break;              \
    case 2 * ROWS_RSQRT + 1: for (ptrdiff_t e = 0; e < n; e++) t[e] = (T)1 / SQRT(x[e]); break;         \
    case 2 * ROWS_RSQRT: for (ptrdiff_t e = 0; e < n; e++) t[e] = t[e] * ((T)1 / SQRT(x[e])); break;    \
    case 2 * ROWS_RECIP + 1: for (ptrdiff_t e = 0; e < n; e++) t[e] = (T)1 / x[e]; break;               \
    case 2 * ROWS_RECIP: for (ptrdiff_t e = 0; e < n; e++) t[e] = t[e] * ((T)1 / x[e]); break;          \
    case 2 * ROWS_DRECIP + 1: for (ptrdiff_t e = 0; e < n; e++) t[e] = -((T)1 / (x[e] * x[e])); break;  \
    case 2 * ROWS_DRECIP: for (ptrdiff_t e = 0; e < n; e++) t[e] = t[e] * -((T)1 / (x[e] * x[e])); break; \
    case 2 * ROWS_EXP + 1: NUMPY_LOOP(NUMPY_EXP_LOOP, K, T, x, t, n); break;                            \
    default:                                                                                            \
        NUMPY_LOOP(NUMPY_EXP_LOOP, K, T, x, u, n);                                                      \
        for (ptrdiff_t e = 0; e < n; e++) t[e] = t[e] * u[e];                                           \
        break;                                                                                          \
    }                                                                                                   \
}
ROWS_FACTOR(rows_factor_float32, 0, float, sqrtf)
ROWS_FACTOR(rows_factor_float64, 1, double, sqrt)

#define ROWS(NAME, K, T, SQRT, FACTOR)                                                                     \
ROWS_CLONES void NAME(ptrdiff_t r0, ptrdiff_t r1, ptrdiff_t n, const long long *code, const T *scales,  \
                      const long long *bases) {                                                         \
    T t[ROWS_MAX], u[ROWS_MAX];                                                                         \
    double total[ROWS_MAX]; /* a one-value result's terms, added in double, then rounded once */       \
    const ptrdiff_t block = n >= ROWS_BLOCK ? 1 : ROWS_BLOCK / n;                                       \
    for (ptrdiff_t b0 = r0; b0 < r1; b0 += block) {                                                     \
        const ptrdiff_t rows = b0 + block <= r1 ? block : r1 - b0, m = rows * n;                        \
        const long long *c = code;                                                                      \
        const long long equations = *c++;                                                               \
        for (long long q = 0; q < equations; q++) {                                                     \
            const long long row = c[0], terms = c[2];                                                   \
            T *const out = (T *)(intptr_t)bases[c[1]] + (row ? b0 * n : b0);                            \
            c += 3;                                                                                     \
            for (long long k = 0; k < terms; k++) {                                                     \
                const long long sums = c[0], scaled = c[1], factors = c[2];                             \
                const T scale = scaled >= 0 ? scales[scaled] : (T)1;                                    \
                T *const into = row && k == 0 ? out : t; /* a row result's first term: in place */      \
                c += 3;                                                                                 \
                if (!row && !sums) { /* one value a row: the product of the rows' values */            \
                    for (ptrdiff_t j = 0; j < rows; j++) {                                              \
                        T v = 1;                                                                        \
                        for (long long f = 0; f < factors; f++) {                                       \
                            const T x = ((const T *)(intptr_t)bases[c[3 * f]])[b0 + j];                 \
                            const T y = ROWS_F(K, T, SQRT, c[3 * f + 2], x);                            \
                            v = f == 0 ? y : v * y;                                                     \
                        }                                                                               \
                        v = factors == 0 ? scale : scaled >= 0 ? v * scale : v;                         \
                        total[j] = k == 0 ? (double)v : total[j] + (double)v;                           \
                    }                                                                                   \
                    c += 3 * factors;                                                                   \
                    continue;                                                                           \
                }                                                                                       \
                for (long long f = 0; f < factors; f++, c += 3) {                                       \
                    const T *x = (const T *)(intptr_t)bases[c[0]];                                      \
                    const int fn = (int)c[2];                                                           \
                    if (c[1] == ROWS_ROW)                                                               \
                        FACTOR(into, x + b0 * n, fn, f == 0, m, u);                                     \
                    else if (c[1] == ROWS_SHARED)                                                       \
                        for (ptrdiff_t j = 0; j < rows; j++) FACTOR(into + j * n, x, fn, f == 0, n, u); \
                    else                                                                                \
                        for (ptrdiff_t j = 0; j < rows; j++) {                                          \
                            const T y = ROWS_F(K, T, SQRT, fn, x[b0 + j]);                                 \
                            T *u = into + j * n;                                                        \
                            if (f == 0) for (ptrdiff_t e = 0; e < n; e++) u[e] = y;                     \
                            else for (ptrdiff_t e = 0; e < n; e++) u[e] = u[e] * y;                     \
                        }                                                                               \
                }                                                                                       \
                if (factors == 0) for (ptrdiff_t e = 0; e < m; e++) into[e] = 1;                        \
                if (scaled >= 0) for (ptrdiff_t e = 0; e < m; e++) into[e] = into[e] * scale;           \
                if (row) {                                                                              \
                    if (k > 0) for (ptrdiff_t e = 0; e < m; e++) out[e] = out[e] + t[e];                \
                    continue;                                                                           \
                }                                                                                       \
                if (sums == 2) { /* each row's largest entry, as its sum below; a NaN kept (ROWS_LARGER) */ \
                    for (ptrdiff_t j = 0; j < rows; j++) {                                              \
                        const T *u = t + j * n;                                                         \
                        T v = u[0], lane[ROWS_LANES];                                                   \
                        if (n >= ROWS_LANES) {                                                          \
                            for (int l = 0; l < ROWS_LANES; l++) lane[l] = u[l];                        \
                            ptrdiff_t e = ROWS_LANES;                                                   \
                            for (; e + ROWS_LANES <= n; e += ROWS_LANES)                                \
                                for (int l = 0; l < ROWS_LANES; l++) lane[l] = ROWS_LARGER(lane[l], u[e + l]); \
                            for (int l = 0; e < n; e++, l++) lane[l] = ROWS_LARGER(lane[l], u[e]);      \
                            for (int w = ROWS_LANES / 2; w > 0; w /= 2)                                 \
                                for (int l = 0; l < w; l++) lane[l] = ROWS_LARGER(lane[l], lane[l + w]); \
                            v = lane[0];                                                                \
                        } else                                                                          \
                            for (ptrdiff_t e = 1; e < n; e++) v = ROWS_LARGER(v, u[e]);                 \
                        total[j] = k == 0 ? (double)v : total[j] + (double)v;                           \
                    }                                                                                   \
                    continue;                                                                           \
                }                                                                                       \
                for (ptrdiff_t j = 0; j < rows; j++) { /* each row's sum: in lanes, then a fixed tree */ \
                    const T *u = t + j * n;                                                             \
                    double lane[ROWS_LANES];                                                            \
                    const int full = n >= ROWS_LANES; /* the first entries, as they are: -0 stays -0 */ \
                    for (int l = 0; l < ROWS_LANES; l++) lane[l] = full ? (double)u[l] : 0.0;           \
                    ptrdiff_t e = full ? ROWS_LANES : 0;                                                \
                    for (; e + ROWS_LANES <= n; e += ROWS_LANES)                                        \
                        for (int l = 0; l < ROWS_LANES; l++) lane[l] = lane[l] + (double)u[e + l];      \
                    for (int l = 0; e < n; e++, l++) lane[l] = lane[l] + (double)u[e];                  \
                    for (int w = ROWS_LANES / 2; w > 0; w /= 2)                                         \
                        for (int l = 0; l < w; l++) lane[l] = lane[l] + lane[l + w];                    \
                    total[j] = k == 0 ? lane[0] : total[j] + lane[0];                                   \
                }                                                                                       \
            }                                                                                           \
            if (row && terms == 0) for (ptrdiff_t e = 0; e < m; e++) out[e] = 0;                        \
            if (!row) for (ptrdiff_t j = 0; j < rows; j++) out[j] = terms ? (T)total[j] : (T)0;         \
        }                                                                                               \
    }                                                                                                   \
}

ROWS(rows_float32, 0, float, sqrtf, rows_factor_float32)
ROWS(rows_float64, 1, double, sqrt, rows_factor_float64)

/* The pool: a C loop over independent rows (CHAIN, COLSUM, TAPS, ROWS) or a list of matrix products (GEMM)
 * cut into `parts` spans, each claimed by whichever thread comes first: the caller, or a helper of
 * notation/runtime/crew.py watching its flags (flag_wait), none of them holding the GIL (ctypes
 * releases it).  A hand-off is a counter in shared memory, seen within a microsecond by a helper that
 * spins; a helper that comes late finds every span taken, and the caller never waits for it.  The
 * crew's helpers are the pool's, so that one thread spins on the second core, not two (two spinning
 * threads and the caller on two cores took turns, each hand-off then a wake-up).  Rows do not depend
 * on each other, nor products, so the bits are those of one thread; a second split while one runs
 * (two threads of a program) runs whole on its caller. */
#include <fenv.h>
#include <pthread.h>
#include <stdint.h>

enum { POOL_CHAIN, POOL_COLSUM, POOL_TAPS, POOL_GEMM, POOL_ROWS };
typedef struct { int family, dtype; const long long *a; double scale; ptrdiff_t n; int parts; } pool_job;

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;  /* held by the split running now */
static pool_job pool_current;
static unsigned pool_posted;           /* the number of the split posted last */
static unsigned long long pool_claims; /* (that number << 32) | its spans claimed so far */
static int pool_done;                  /* its spans done */
static __thread int pool_helper;       /* this thread serves the pool's spans (pool_helper_here) */
static __thread unsigned pool_seen;    /* the split it looked at last */

#define PA(T, k) ((T)(intptr_t)a[k])
#define POOL_CHAIN_CALL(NAME, T)                                                                        \
    NAME(r0, r1, (ptrdiff_t)a[0], PA(const ptrdiff_t *, 1), (int)a[2], PA(const T *const *, 3),           \
         PA(const ptrdiff_t *, 4), PA(const int *, 5), PA(const int *, 6), PA(const T *, 7), (int)a[8],   \
         PA(T *, 9), PA(const ptrdiff_t *, 10), (int)a[11])
#define POOL_COLSUM_CALL(NAME, T)                                                                       \
    NAME(r0, r1, (ptrdiff_t)a[0], (ptrdiff_t)a[1], (ptrdiff_t)a[2], (int)a[3], PA(const T *const *, 4),   \
         PA(T *, 5))
#define POOL_ROWS_CALL(NAME, T)                                                                         \
    NAME(r0, r1, (ptrdiff_t)a[0], PA(const long long *, 1), PA(const T *, 2), PA(const long long *, 3))
#define POOL_TAPS_CALL(NAME, T)                                                                         \
    NAME(PA(const T *, 0), PA(const T *, 1), PA(T *, 2), PA(const ptrdiff_t *, 3), (ptrdiff_t)a[4],        \
         (ptrdiff_t)a[5], r0, r1, (int)a[6], (int)a[7], (T)j->scale)

/* Products of matrices (notation/runtime/pool.py), each a GEMM of numpy's own BLAS called as np.matmul
 * calls it (row-major, each operand transposed or not), then a broadcast addend added to its result
 * as np.add adds it: the same bits as numpy's.  a = {A, B, C, addend base addresses, the products'
 * table, a second C}; a product's row of the table: trans a, trans b, M, N, K, A's byte offset, lda,
 * B's, ldb, C's, ldc, the addend's (-1: none), its row and column strides in entries, and which C
 * (2: the first, 5: the second, where a cut sum's later part is made apart). */
#define GEMM_ROW 15
#define ROW_MAJOR 101
typedef void (*gemm32_f32)(int, int, int, int, int, int, float, const float *, int, const float *, int, float,
                           float *, int);
typedef void (*gemm64_f32)(int, int, int, long long, long long, long long, float, const float *, long long,
                           const float *, long long, float, float *, long long);
typedef void (*gemm32_f64)(int, int, int, int, int, int, double, const double *, int, const double *, int, double,
                           double *, int);
typedef void (*gemm64_f64)(int, int, int, long long, long long, long long, double, const double *, long long,
                           const double *, long long, double, double *, long long);
static void *gemm_f32, *gemm_f64;
static int gemm_ilp64;

/* numpy's cblas_sgemm and cblas_dgemm, and whether their integers are 64-bit (pool.py finds them). */
void pool_gemm_functions(void *f32, void *f64, int ilp64) {
    gemm_f32 = f32;
    gemm_f64 = f64;
    gemm_ilp64 = ilp64;
}

#define GEMM_ADD(T)                                                                                     \
    if (g[11] >= 0) {                                                                                   \
        const T *d = (const T *)(base[3] + g[11]);                                                      \
        for (long long i = 0; i < g[2]; i++)                                                            \
            for (long long k = 0; k < g[3]; k++) c[i * g[10] + k] = c[i * g[10] + k] + d[i * g[12] + k * g[13]]; \
    }

/* One product of the table's row g: numpy's GEMM, its integers 64-bit or not, then the addend. */
#define POOL_GEMM_CALL(T, G64, G32, F)                                                                  \
    const T *a = (const T *)(base[0] + g[5]), *b = (const T *)(base[1] + g[7]);                         \
    T *c = (T *)(base[g[14]] + g[9]);                                                                   \
    if (gemm_ilp64)                                                                                     \
        ((G64)F)(ROW_MAJOR, ta, tb, g[2], g[3], g[4], (T)1, a, g[6], b, g[8], (T)0, c, g[10]);          \
    else                                                                                                \
        ((G32)F)(ROW_MAJOR, ta, tb, (int)g[2], (int)g[3], (int)g[4], (T)1, a, (int)g[6], b, (int)g[8],  \
                 (T)0, c, (int)g[10]);                                                                  \
    GEMM_ADD(T)

static int pool_raised;  /* the floating-point exceptions the products of the split running now raised */

/* The products [r0, r1); the floating-point exceptions they raised. */
static int pool_gemms(const pool_job *j, ptrdiff_t r0, ptrdiff_t r1) {
    feclearexcept(FE_ALL_EXCEPT);  /* the status flags only, never the mode */
    const char *const base[6] = {(const char *)(intptr_t)j->a[0], (const char *)(intptr_t)j->a[1],
                                 (const char *)(intptr_t)j->a[2], (const char *)(intptr_t)j->a[3], NULL,
                                 (const char *)(intptr_t)j->a[5]};
    const long long *table = (const long long *)(intptr_t)j->a[4];
    for (ptrdiff_t r = r0; r < r1; r++) {
        const long long *g = table + GEMM_ROW * r;
        const int ta = (int)g[0], tb = (int)g[1];
        if (j->dtype == 0) {
            POOL_GEMM_CALL(float, gemm64_f32, gemm32_f32, gemm_f32)
        } else {
            POOL_GEMM_CALL(double, gemm64_f64, gemm32_f64, gemm_f64)
        }
    }
    return fetestexcept(FE_ALL_EXCEPT);
}

/* Span `part` of a split; the floating-point exceptions its products raised (0 for a loop). */
static int pool_span(const pool_job *j, int part) {
    const ptrdiff_t r0 = j->n * part / j->parts, r1 = j->n * (part + 1) / j->parts;
    const long long *a = j->a;
    if (r0 >= r1) return 0;
    if (j->family == POOL_GEMM) return pool_gemms(j, r0, r1);
    switch (3 * j->family + j->dtype) {  /* dtype: 0 float32, 1 float64 */
    case 0: POOL_CHAIN_CALL(chain_float32, float); break;
    case 1: POOL_CHAIN_CALL(chain_float64, double); break;
    case 3: POOL_COLSUM_CALL(colsum_float32, float); break;
    case 4: POOL_COLSUM_CALL(colsum_float64, double); break;
    case 6: POOL_TAPS_CALL(taps_float32, float); break;
    case 7: POOL_TAPS_CALL(taps_float64, double); break;
    case 12: POOL_ROWS_CALL(rows_float32, float); break;
    case 13: POOL_ROWS_CALL(rows_float64, double); break;
    default: break;
    }
    return 0;
}

/* The spans of split `number` left unclaimed, run here one by one. */
static void pool_take(unsigned number) {
    for (;;) {
        unsigned long long c = __atomic_load_n(&pool_claims, __ATOMIC_SEQ_CST);
        const int k = (int)(c & 0xffffffffu);
        if ((unsigned)(c >> 32) != number || k >= pool_current.parts)
            return;  /* another split's (its spans all done), or none left */
        if (!__atomic_compare_exchange_n(&pool_claims, &c, c + 1, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
            continue;
        const int raised = pool_span(&pool_current, k);  /* the split cannot end before this is done */
        if (raised) __atomic_or_fetch(&pool_raised, raised, __ATOMIC_SEQ_CST);
        __atomic_add_fetch(&pool_done, 1, __ATOMIC_SEQ_CST);
    }
}

/* The calling thread (a crew helper) serves the pool's spans from now on, in flag_wait. */
void pool_helper_here(void) {
    pool_helper = 1;
    pool_seen = __atomic_load_n(&pool_posted, __ATOMIC_SEQ_CST);
}

/* A helper's look at the pool: the spans of a split posted since its last look, taken; whether any was. */
static int pool_serve(void) {
    if (!pool_helper) return 0;
    unsigned v = __atomic_load_n(&pool_posted, __ATOMIC_SEQ_CST);
    if (v == pool_seen) return 0;
    pool_seen = v;
    pool_take(v);
    return 1;
}

/* fenv.h's flags as numpy's errstate names them: 1 invalid, 2 divide, 4 over, 8 under. */
static int pool_errors(int raised) {
    return (raised & FE_INVALID ? 1 : 0) | (raised & FE_DIVBYZERO ? 2 : 0) | (raised & FE_OVERFLOW ? 4 : 0) |
           (raised & FE_UNDERFLOW ? 8 : 0);
}

/* A C loop's rows [0, n), or n products, in `parts` spans, shared with the crew's helpers where
 * `share` and no other split runs; else the same spans one after another here.  The floating-point
 * exceptions the products raised, on any thread (pool_errors; 0 for a loop): numpy's errstate is the
 * caller's to apply (notation/runtime/pool.py). */
int pool_run(int family, int dtype, const long long *args, double scale, ptrdiff_t n, int parts, int share) {
    pool_job job = {family, dtype, args, scale, n, parts < 1 ? 1 : parts};
    if (job.parts > 1 && share && !machine_busy() && pthread_mutex_trylock(&pool_lock) == 0) {
        __atomic_store_n(&pool_raised, 0, __ATOMIC_SEQ_CST);
        const unsigned number = pool_posted + 1;
        pool_current = job;
        __atomic_store_n(&pool_done, 0, __ATOMIC_SEQ_CST);
        __atomic_store_n(&pool_claims, (unsigned long long)number << 32, __ATOMIC_SEQ_CST);
        __atomic_store_n(&pool_posted, number, __ATOMIC_SEQ_CST);
        pool_take(number);
        for (unsigned i = 1; __atomic_load_n(&pool_done, __ATOMIC_SEQ_CST) < job.parts; i++) {
            if ((i & 15) == 0) sched_yield();  /* a helper's span, begun: it ends soon */
            PAUSE();
        }
        const int raised = __atomic_load_n(&pool_raised, __ATOMIC_SEQ_CST);
        pthread_mutex_unlock(&pool_lock);
        return pool_errors(raised);
    }
    int raised = 0;
    for (int p = 0; p < job.parts; p++) raised |= pool_span(&job, p);
    return pool_errors(raised);
}
