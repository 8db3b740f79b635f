/* Batch norm with the batch's statistics followed by ReLU, and its gradient, for the CPU, on an
   fp32 channels-last map x (M, C): M = N H W positions, each a row of C channels:

       mean[c] = sum_m x[m, c] / M,   var[c] = sum_m (x[m, c] - mean[c])^2 / M     (biased)
       r[c]    = 1 / sqrt(var[c] + eps)
       y[m, c] = max(0, x[m, c] scale[c] + shift[c]),   scale = w r,  shift = b - mean scale

   and backward from g (M, C), with g'[m, c] = 0 where x[m, c] scale[c] + shift[c] <= 0, else g[m, c]:

       grad_b[c] = sum_m g'[m, c],   grad_w[c] = sum_m g'[m, c] (x[m, c] - mean[c]) r[c]
       grad_x[m, c] = scale[c] (g'[m, c] - grad_b[c] / M - (x[m, c] - mean[c]) r[c] grad_w[c] / M)

   equal to F.relu(F.batch_norm(x, None, None, w, b, training=True, eps=eps)) and its gradients
   within float rounding (tests/test_batch_norm.py). caption/kernels/batch_norm.py calls it.

   Why: PyTorch takes the batch's statistics in one pass and normalises in another, ReLU rewrites
   the result in place, and backward runs ReLU's gradient (a pass reading g and y, writing g') and
   then batch norm's (more passes, over g' and x): at the built-in CNN's first layers
   (64 x 32 x 56 x 56, 26 MB a map) each pass is a trip through memory. Here forward reads x twice
   and writes y once, and backward reads g and x twice (ReLU's mask recomputed from x, as forward
   made it) and writes grad_x once.

   Every tensor is fp32 and contiguous. The per-channel sums are taken in fp32 over chunks of
   CHUNK rows and in double across chunks, per thread, the threads' parts added in a fixed order
   (the same numbers every time). Rows are shared among `threads` OpenMP threads. A return value
   other than 0 means out of memory. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK 64   /* rows summed in fp32 before their sums join the double ones */

static inline int threads_for(int threads, long M) {
    if (threads > M) threads = (int)M;
    if (threads > 64) threads = 64;
    return threads < 1 ? 1 : threads;
}

/* What the per-channel sums read: x, and for the backward pass g, the forward pass's affine map
   (scale, shift) and the mean. */
typedef struct {
    const float *x, *g, *scale, *shift, *mean;
    long M, C;
} Sums;

/* Forward, rows [m0, m1): sum d and sum d^2 per channel into part (2C floats), d = x - x[0]: the
   sums about the map's first row, a sample of each channel, so that a mean far from 0 against the
   spread costs no precision (var = E[d^2] - E[d]^2, with E[d] of the order of the spread). */
static void forward_part(const Sums *s, long m0, long m1, float *part) {
    long C = s->C;
    const float *x = s->x;
    for (long m = m0; m < m1; m++)
#pragma omp simd
        for (long c = 0; c < C; c++) {
            float d = x[m * C + c] - x[c];
            part[c] += d;
            part[C + c] += d * d;
        }
}

/* Backward, rows [m0, m1): sum g' and sum g' (x - mean) per channel into part (2C floats). */
static void backward_part(const Sums *s, long m0, long m1, float *part) {
    long C = s->C;
    const float *x = s->x, *g = s->g, *scale = s->scale, *shift = s->shift, *mean = s->mean;
    for (long m = m0; m < m1; m++)
#pragma omp simd
        for (long c = 0; c < C; c++) {
            float xv = x[m * C + c], gl = g[m * C + c];
            float gv = xv * scale[c] + shift[c] <= 0.0f ? 0.0f : gl;   /* ReLU's mask */
            part[c] += gv;
            part[C + c] += gv * (xv - mean[c]);
        }
}

/* The sums of `fn` over all rows into out (2C doubles): each thread's rows chunk by chunk, then
   the threads' sums added in order. */
static int channel_sums(const Sums *s, int threads, void (*fn)(const Sums *, long, long, float *), double *out) {
    long M = s->M, C = s->C;
    threads = threads_for(threads, M);
    double *sums = calloc((size_t)threads * 2 * (size_t)C, sizeof(double));
    if (!sums) return 1;
    int failed = 0;
#pragma omp parallel for schedule(static, 1) num_threads(threads) reduction(| : failed)
    for (int t = 0; t < threads; t++) {
        float *part = malloc(sizeof(float) * 2 * (size_t)C);
        if (!part) {
            failed = 1;
            continue;
        }
        double *acc = sums + (long)t * 2 * C;
        for (long m0 = M * t / threads, end = M * (t + 1) / threads; m0 < end; m0 += CHUNK) {
            memset(part, 0, sizeof(float) * 2 * (size_t)C);
            fn(s, m0, m0 + CHUNK < end ? m0 + CHUNK : end, part);
            for (long c = 0; c < 2 * C; c++)
                acc[c] += part[c];
        }
        free(part);
    }
    for (long i = 0; i < 2 * C; i++) {
        out[i] = 0.0;
        for (int t = 0; t < threads; t++)
            out[i] += sums[(long)t * 2 * C + i];
    }
    free(sums);
    return failed;
}

/* y from x; per channel out: mean, r (1/sqrt(var + eps)) and var (biased), for the running
   statistics, and the affine map scale and shift, which the backward pass takes to recompute ReLU's
   mask exactly as this pass made it. */
int bn_relu_forward(const float *x, const float *w, const float *b, double eps, float *y, float *mean, float *r,
                    float *var, float *scale, float *shift, long M, long C, int threads) {
    double *sums = malloc(sizeof(double) * 2 * (size_t)C);
    Sums s = {x, NULL, NULL, NULL, NULL, M, C};
    if (!sums || channel_sums(&s, threads, forward_part, sums)) {
        free(sums);
        return 1;
    }
    for (long c = 0; c < C; c++) {
        double shifted = sums[c] / M, v = sums[C + c] / M - shifted * shifted;
        v = v < 0.0 ? 0.0 : v;                /* rounding can leave a constant channel's below 0; NaN stays */
        mean[c] = (float)(x[c] + shifted), var[c] = (float)v, r[c] = (float)(1.0 / sqrt(v + eps));
        scale[c] = w[c] * r[c], shift[c] = b[c] - mean[c] * scale[c];
    }
    free(sums);
#pragma omp parallel for schedule(static) num_threads(threads_for(threads, M))
    for (long m = 0; m < M; m++)
#pragma omp simd
        for (long c = 0; c < C; c++) {
            float v = x[m * C + c] * scale[c] + shift[c];
            y[m * C + c] = v <= 0.0f ? 0.0f : v;      /* NaN stays NaN, as F.relu's */
        }
    return 0;
}

/* grad_x, grad_w and grad_b from g, x and the forward pass's mean, r, scale and shift. */
int bn_relu_backward(const float *x, const float *g, const float *mean, const float *r, const float *scale,
                     const float *shift, float *grad_x, float *grad_w, float *grad_b, long M, long C, int threads) {
    float *k0 = malloc(sizeof(float) * 2 * (size_t)C), *k1 = k0 ? k0 + C : NULL;
    double *sums = malloc(sizeof(double) * 2 * (size_t)C);
    Sums s = {x, g, scale, shift, mean, M, C};
    if (!k0 || !sums || channel_sums(&s, threads, backward_part, sums)) {
        free(k0), free(sums);
        return 1;
    }
    for (long c = 0; c < C; c++) {
        grad_b[c] = (float)sums[c];
        grad_w[c] = (float)(sums[C + c] * r[c]);
        k0[c] = (float)(sums[c] / M);         /* grad_x = scale (g' - k0 - (x - mean) k1) */
        k1[c] = (float)(sums[C + c] * r[c] * r[c] / M);
    }
    free(sums);
#pragma omp parallel for schedule(static) num_threads(threads_for(threads, M))
    for (long m = 0; m < M; m++)
#pragma omp simd
        for (long c = 0; c < C; c++) {
            float xv = x[m * C + c], gl = g[m * C + c];
            float gv = xv * scale[c] + shift[c] <= 0.0f ? 0.0f : gl;   /* ReLU's mask, as forward's y */
            grad_x[m * C + c] = scale[c] * (gv - k0[c] - (xv - mean[c]) * k1[c]);
        }
    free(k0);
    return 0;
}
