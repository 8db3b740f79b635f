/* The cross-entropy of each row of logits with its target, and its gradient, for the CPU:

       nll[m]        = lse[m] - x[m, y[m]],   lse[m] = log sum_v exp(x[m, v])
       grad[m, v]    = g[m] (exp(x[m, v] - lse[m]) - [v == y[m]])

   equal to F.cross_entropy(x, y, reduction="none") and its gradient within float rounding
   (tests/test_cross_entropy.py). caption/kernels/cross_entropy.py calls it.

   Why: PyTorch takes a log-softmax (a pass to find the maximum, one to sum, one to write the whole
   (M, V) result), then gathers, and backward fills a zero (M, V) tensor, scatters into it and runs
   the log-softmax's backward over both: at a caption model's output layer (V 10,000) these passes
   over (M, V) cost more than the layer's product. Here forward reads x twice per row (its maximum,
   then the sum; the row stays in the cache between them) and writes one number, and backward reads
   x once and writes the gradient once.

   x and grad are fp32 or bf16 (`dtype` 0 or 1), arithmetic fp32; y are int64 in [0, V) (the caller
   checks). exp's argument is kept at or above -87, where exp_f holds: exp(-87) is below 1e-37, so a
   term that small adds nothing a float can hold next to the row's largest, which adds 1 (and a -inf
   logit's gradient is g exp(-87) where PyTorch's is 0). Rows
   are shared among `threads` OpenMP threads. A return value other than 0 means out of memory. */
#include <math.h>

#include "rows.h"
#include "tanh.h"

static inline float shifted_exp(float x) { return exp_f(x > -87.0f ? x : -87.0f); }   /* x not NaN */

/* Row m of x (M, V) in fp32, in a buffer of its own (the caller frees it), or NULL: out of memory. */
static float *loaded_row(int dtype, const void *x, long m, long V) {
    float *row = malloc(sizeof(float) * (size_t)V);
    if (row)
        load_row(dtype, x, m * V, V, row);
    return row;
}

/* lse of each row; NaN for a row with a NaN, or with no finite maximum (+inf, or every logit
   -inf), as PyTorch's log-softmax gives there. */
int nll_forward(int dtype, const void *x, const int64_t *y, float *lse, float *nll, long M, long V, int threads) {
    int failed = 0;
#pragma omp parallel for schedule(static) num_threads(threads) reduction(| : failed)
    for (long m = 0; m < M; m++) {
        float *row = loaded_row(dtype, x, m, V);
        if (!row) {
            failed = 1;
            continue;
        }
        float top = -INFINITY, sum = 0.0f;
        int nan = 0;
#pragma omp simd reduction(max : top) reduction(| : nan)
        for (long v = 0; v < V; v++) {
            top = row[v] > top ? row[v] : top;
            nan |= row[v] != row[v];
        }
        if (nan || !isfinite(top)) {
            lse[m] = NAN;
        } else {
#pragma omp simd reduction(+ : sum)
            for (long v = 0; v < V; v++)
                sum += shifted_exp(row[v] - top);
            lse[m] = top + logf(sum);
        }
        nll[m] = lse[m] - row[y[m]];
        free(row);
    }
    return failed;
}

/* grad (M, V) in dtype from g (M,) fp32, the upstream gradient of each row's nll. fp32 rows go
   from x to grad directly; bf16 ones through an fp32 buffer. */
int nll_backward(int dtype, const void *x, const int64_t *y, const float *lse, const float *g, void *grad,
                 long M, long V, int threads) {
    int failed = 0;
#pragma omp parallel for schedule(static) num_threads(threads) reduction(| : failed)
    for (long m = 0; m < M; m++) {
        float *buf = dtype == 0 ? NULL : loaded_row(dtype, x, m, V);
        if (dtype != 0 && !buf) {
            failed = 1;
            continue;
        }
        const float *row = buf ? buf : (const float *)x + m * V;
        float *out = buf ? buf : (float *)grad + m * V;
        float gm = g[m], l = lse[m];
        if (l != l) {                        /* NaN: the gradient is NaN, as PyTorch's */
            for (long v = 0; v < V; v++)
                out[v] = NAN;
        } else {
#pragma omp simd
            for (long v = 0; v < V; v++)
                out[v] = gm * shifted_exp(row[v] - l);
            out[y[m]] -= gm;
        }
        if (buf)
            store_row(dtype, grad, m * V, V, buf);
        free(buf);
    }
    return failed;
}
