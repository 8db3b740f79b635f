/* The soft context and its gradient, for the CPU: for each row b of a batch,

       z[b, :] = sum_s alpha[b, s] values[b, s, :]                  (Xu et al. 2015, eq. 13)

   forward, and backward from g_z (B, D)

       g_alpha[b, s]      = values[b, s, :] . g_z[b, :]
       g_values[b, s, :] += alpha[b, s] g_z[b, :]                   (fp32: a loop's steps add up;
                                                                     NULL: values need none)

   equal to torch.bmm(alpha.unsqueeze(1), values) and its gradients within float rounding
   (tests/test_attention_lstm.py). caption/kernels/attention_lstm.py calls it.

   Why: a decoder step's context is a product with one row per image, which a batched GEMM runs far
   below the speed of reading `values`, and its gradient is a whole (B, S, D) tensor that autograd
   then adds to the sum of the steps before; here the backward pass reads `values` and updates
   the sum in the same pass.

   alpha, z, g_z and g_alpha share one storage dtype (`dtype`), values have theirs (`values_dtype`):
   0 fp32, 1 bf16; arithmetic is fp32. Rows of the batch are shared among `threads` OpenMP threads.
   Every tensor is contiguous. A return value other than 0 means out of memory. */
#include "rows.h"

#define ROWS 4   /* value rows summed per pass over the accumulator (the forward) */

/* values[b, s, :] as fp32: the row itself, or converted into `buf`. */
static inline const float *value_row(int values_dtype, const void *values, long offset, long D, float *buf) {
    if (values_dtype == 0)
        return (const float *)values + offset;
    load_row(values_dtype, values, offset, D, buf);
    return buf;
}

int context_forward(int dtype, int values_dtype, const void *alpha, const void *values, void *z,
                    long B, long S, long D, int threads) {
    int failed = 0;
#pragma omp parallel for schedule(static) num_threads(threads) reduction(| : failed)
    for (long b = 0; b < B; b++) {
        float *buf = malloc(sizeof(float) * (size_t)(S + (1 + ROWS) * D));
        if (!buf) {
            failed = 1;
            continue;
        }
        float *al = buf, *acc = buf + S, *tmp = acc + D;
        load_row(dtype, alpha, b * S, S, al);
        memset(acc, 0, sizeof(float) * (size_t)D);
        long s = 0;
        for (; s + ROWS <= S; s += ROWS) {   /* ROWS rows per pass: acc is read and written once for them */
            const float *r0 = value_row(values_dtype, values, (b * S + s) * D, D, tmp);
            const float *r1 = value_row(values_dtype, values, (b * S + s + 1) * D, D, tmp + D);
            const float *r2 = value_row(values_dtype, values, (b * S + s + 2) * D, D, tmp + 2 * D);
            const float *r3 = value_row(values_dtype, values, (b * S + s + 3) * D, D, tmp + 3 * D);
            float a0 = al[s], a1 = al[s + 1], a2 = al[s + 2], a3 = al[s + 3];
#pragma omp simd
            for (long d = 0; d < D; d++)
                acc[d] += (a0 * r0[d] + a1 * r1[d]) + (a2 * r2[d] + a3 * r3[d]);
        }
        for (; s < S; s++) {
            const float *row = value_row(values_dtype, values, (b * S + s) * D, D, tmp);
            float a = al[s];
#pragma omp simd
            for (long d = 0; d < D; d++)
                acc[d] += a * row[d];
        }
        store_row(dtype, z, b * D, D, acc);
        free(buf);
    }
    return failed;
}

int context_backward(int dtype, int values_dtype, const void *alpha, const void *values, const void *g_z,
                     void *g_alpha, float *g_values, long B, long S, long D, int threads) {
    int failed = 0;
#pragma omp parallel for schedule(static) num_threads(threads) reduction(| : failed)
    for (long b = 0; b < B; b++) {
        float *buf = malloc(sizeof(float) * (size_t)(2 * S + 2 * D));
        if (!buf) {
            failed = 1;
            continue;
        }
        float *al = buf, *ga = al + S, *gz = ga + S, *tmp = gz + D;
        load_row(dtype, alpha, b * S, S, al);
        load_row(dtype, g_z, b * D, D, gz);
        for (long s = 0; s < S; s++) {
            const float *row = value_row(values_dtype, values, (b * S + s) * D, D, tmp);
            float a = al[s], dot = 0.0f;
            if (g_values) {
                float *gv = g_values + (b * S + s) * D;
#pragma omp simd reduction(+ : dot)
                for (long d = 0; d < D; d++) {
                    dot += row[d] * gz[d];
                    gv[d] += a * gz[d];
                }
            } else {
#pragma omp simd reduction(+ : dot)
                for (long d = 0; d < D; d++)
                    dot += row[d] * gz[d];
            }
            ga[s] = dot;
        }
        store_row(dtype, g_alpha, b * S, S, ga);
        free(buf);
    }
    return failed;
}
