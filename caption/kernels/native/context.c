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
   0 fp32, 1 bf16; arithmetic is fp32, bf16 values widened in the loop that reads them (a bf16 is the
   top half of an fp32): read straight from memory, half the bytes of fp32. Rows of the batch are
   shared among `threads` OpenMP threads.
   Every tensor is contiguous. A return value other than 0 means out of memory. */
#include "rows.h"

#define ROWS 4   /* value rows summed per pass over the accumulator (the forward) */
_Static_assert(ROWS == 4, "add_rows_f32 and add_rows_bf16 take 4 rows");

/* acc += the ROWS value rows from `row` on, each times its alpha, in one pass over acc: fp32 rows, or
   bf16 rows widened in the same loop (a bf16 is the top half of an fp32: no second pass, no buffer). */
static inline void add_rows_f32(float *acc, const float *row, const float *al, long D) {
    const float *r0 = row, *r1 = row + D, *r2 = row + 2 * D, *r3 = row + 3 * D;
    float a0 = al[0], a1 = al[1], a2 = al[2], a3 = al[3];
#pragma omp simd
    for (long d = 0; d < D; d++)
        acc[d] += (a0 * r0[d] + a1 * r1[d]) + (a2 * r2[d] + a3 * r3[d]);
}

static inline void add_rows_bf16(float *acc, const uint16_t *row, const float *al, long D) {
    const uint16_t *r0 = row, *r1 = row + D, *r2 = row + 2 * D, *r3 = row + 3 * D;
    float a0 = al[0], a1 = al[1], a2 = al[2], a3 = al[3];
#pragma omp simd
    for (long d = 0; d < D; d++)
        acc[d] += (a0 * bf16_to_float(r0[d]) + a1 * bf16_to_float(r1[d])) +
                  (a2 * bf16_to_float(r2[d]) + a3 * bf16_to_float(r3[d]));
}

static inline void add_row(int values_dtype, float *acc, const void *values, long offset, float a, long D) {
    if (values_dtype == 0) {
        const float *row = (const float *)values + offset;
#pragma omp simd
        for (long d = 0; d < D; d++)
            acc[d] += a * row[d];
    } else {
        const uint16_t *row = (const uint16_t *)values + offset;
#pragma omp simd
        for (long d = 0; d < D; d++)
            acc[d] += a * bf16_to_float(row[d]);
    }
}

int context_forward(int dtype, int values_dtype, const void *alpha, const void *values, void *z,
                    long B, long S, long D, int threads) {
    int failed = 0;
#pragma omp parallel for schedule(static) num_threads(threads) reduction(| : failed)
    for (long b = 0; b < B; b++) {
        float *buf = malloc(sizeof(float) * (size_t)(S + D));
        if (!buf) {
            failed = 1;
            continue;
        }
        float *al = buf, *acc = buf + S;
        load_row(dtype, alpha, b * S, S, al);
        memset(acc, 0, sizeof(float) * (size_t)D);
        long s = 0;
        for (; s + ROWS <= S; s += ROWS) {   /* ROWS rows per pass: acc is read and written once for them */
            if (values_dtype == 0)
                add_rows_f32(acc, (const float *)values + (b * S + s) * D, al + s, D);
            else
                add_rows_bf16(acc, (const uint16_t *)values + (b * S + s) * D, al + s, D);
        }
        for (; s < S; s++)
            add_row(values_dtype, acc, values, (b * S + s) * D, al[s], D);
        store_row(dtype, z, b * D, D, acc);
        free(buf);
    }
    return failed;
}

/* values[b, s, :] . gz, and g_values[b, s, :] += a gz where g_values is not NULL: one pass over the row. */
static inline float row_dot(int values_dtype, const void *values, long offset, const float *gz, float a,
                            float *gv, long D) {
    float dot = 0.0f;
    if (values_dtype == 0) {
        const float *row = (const float *)values + offset;
        if (gv) {
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
    } else {
        const uint16_t *row = (const uint16_t *)values + offset;
        if (gv) {
#pragma omp simd reduction(+ : dot)
            for (long d = 0; d < D; d++) {
                dot += bf16_to_float(row[d]) * gz[d];
                gv[d] += a * gz[d];
            }
        } else {
#pragma omp simd reduction(+ : dot)
            for (long d = 0; d < D; d++)
                dot += bf16_to_float(row[d]) * gz[d];
        }
    }
    return dot;
}

int context_backward(int dtype, int values_dtype, const void *alpha, const void *values, const void *g_z,
                     void *g_alpha, float *g_values, long B, long S, long D, int threads) {
    int failed = 0;
#pragma omp parallel for schedule(static) num_threads(threads) reduction(| : failed)
    for (long b = 0; b < B; b++) {
        float *buf = malloc(sizeof(float) * (size_t)(2 * S + D));
        if (!buf) {
            failed = 1;
            continue;
        }
        float *al = buf, *ga = al + S, *gz = ga + S;
        load_row(dtype, alpha, b * S, S, al);
        load_row(dtype, g_z, b * D, D, gz);
        for (long s = 0; s < S; s++)
            ga[s] = row_dot(values_dtype, values, (b * S + s) * D, gz, al[s],
                            g_values ? g_values + (b * S + s) * D : NULL, D);
        store_row(dtype, g_alpha, b * S, S, ga);
        free(buf);
    }
    return failed;
}
