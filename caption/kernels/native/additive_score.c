/* The additive attention score and its gradient in one pass over the keys, for the CPU.

       e[b, t, s] = sum_a v[a] tanh(q[b, t, a] + k[b, s, a])

   equals torch.tanh(q.unsqueeze(2) + k.unsqueeze(1)) @ v and its gradients within float rounding
   (tests/test_native_score.py). caption/kernels/native.py compiles this file on the user's machine
   and calls it through ctypes; caption/kernels/additive_score.py says when it is used.

   Why: PyTorch forms the (B, T, S, A) middle tensor and walks it once per operation (add, tanh,
   product with v; in the backward pass tanh', the product with the incoming gradient, two sums),
   about a dozen passes over memory per decoder step. Here the keys are read once forward, where
   tanh(q + k) is written for the backward pass, which reads it once and writes both gradients.

   Storage is fp32 or bf16 (dtype 0 or 1); arithmetic is fp32 throughout and v is fp32. Rows of
   the batch are shared among `threads` threads (run_split). Every tensor is contiguous. A return
   value other than 0 means out of memory. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static inline float bf16_to_float(uint16_t x) {
    uint32_t u = (uint32_t)x << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint16_t float_to_bf16(float f) {   /* round to nearest even, as PyTorch does */
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40u);       /* a quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static void load_row(int dtype, const void *src, long offset, long n, float *dst) {
    if (dtype == 0) {
        memcpy(dst, (const float *)src + offset, (size_t)n * sizeof(float));
    } else {
        const uint16_t *p = (const uint16_t *)src + offset;
        for (long i = 0; i < n; i++)
            dst[i] = bf16_to_float(p[i]);
    }
}

static void store_row(int dtype, void *dst, long offset, long n, const float *src) {
    if (dtype == 0) {
        memcpy((float *)dst + offset, src, (size_t)n * sizeof(float));
    } else {
        uint16_t *p = (uint16_t *)dst + offset;
        for (long i = 0; i < n; i++)
            p[i] = float_to_bf16(src[i]);
    }
}

/* tanh without a library call, so that the loops vectorise: Cephes' tanhf polynomial below 0.625,
   1 - 2 / (exp(2|x|) + 1) above, with exp from Cephes' expf (2^n times a polynomial); within a few
   units in the last place of fp32. NaN stays NaN. */
static inline float tanh_f(float x) {
    float a = x < 0.0f ? -x : x;
    float s = x * x;
    float p = ((((-5.70498872745e-3f * s + 2.06390887954e-2f) * s - 5.37397155531e-2f) * s
                + 1.33314422036e-1f) * s - 3.33332819422e-1f) * s * x + x;
    float y = 2.0f * (a < 10.0f ? a : 10.0f);         /* tanh(10) rounds to 1 in fp32 */
    float n = (y * 1.44269504088896341f + 12582912.0f) - 12582912.0f;   /* round(y / ln 2) */
    float r = (y - n * 0.693359375f) + n * 2.12194440e-4f;
    float e = (((((1.9875691500e-4f * r + 1.3981999507e-3f) * r + 8.3334519073e-3f) * r
                 + 4.1665795894e-2f) * r + 1.6666665459e-1f) * r + 5.0000001201e-1f) * r * r + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, 4);
    float t = 1.0f - 2.0f / (e * scale + 1.0f);
    t = x < 0.0f ? -t : t;
    float result = a < 0.625f ? p : t;
    return x == x ? result : x;
}

typedef struct {
    int dtype;
    const void *q, *k, *grad;
    const float *v;
    void *e, *tanh, *grad_q, *grad_k;
    float *grad_v;                 /* this thread's partial sum, A floats */
    long b0, b1, T, S, A;
    int failed;
} Work;

/* e for rows b0..b1, and tanh(q + k) (B, T, S, A) where w->tanh is not NULL. */
static void forward_rows(Work *w) {
    long T = w->T, S = w->S, A = w->A;
    float *buf = malloc(sizeof(float) * (size_t)((T + 2) * A + T * S));
    if (!buf) { w->failed = 1; return; }
    float *q = buf, *k = buf + T * A, *th = k + A, *e = th + A;
    const float *v = w->v;
    for (long b = w->b0; b < w->b1; b++) {
        load_row(w->dtype, w->q, b * T * A, T * A, q);
        for (long s = 0; s < S; s++) {
            load_row(w->dtype, w->k, (b * S + s) * A, A, k);
            for (long t = 0; t < T; t++) {
                const float *qt = q + t * A;
                float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
                for (long a = 0; a < A; a++) {
                    th[a] = tanh_f(qt[a] + k[a]);
                    acc += v[a] * th[a];
                }
                e[t * S + s] = acc;
                if (w->tanh)
                    store_row(w->dtype, w->tanh, ((b * T + t) * S + s) * A, A, th);
            }
        }
        store_row(w->dtype, w->e, b * T * S, T * S, e);
    }
    free(buf);
}

/* From the stored tanh: grad_q and grad_k for rows b0..b1, and this thread's part of grad_v. */
static void backward_rows(Work *w) {
    long T = w->T, S = w->S, A = w->A;
    float *buf = malloc(sizeof(float) * (size_t)((T + 2) * A + T * S));
    if (!buf) { w->failed = 1; return; }
    float *gq = buf, *th = gq + T * A, *gk = th + A, *g = gk + A;
    float *gv = w->grad_v;
    const float *v = w->v;
    for (long b = w->b0; b < w->b1; b++) {
        load_row(w->dtype, w->grad, b * T * S, T * S, g);
        memset(gq, 0, sizeof(float) * (size_t)(T * A));
        for (long s = 0; s < S; s++) {
            memset(gk, 0, sizeof(float) * (size_t)A);
            for (long t = 0; t < T; t++) {
                load_row(w->dtype, w->tanh, ((b * T + t) * S + s) * A, A, th);
                float *gqt = gq + t * A;
                float gts = g[t * S + s];
#pragma omp simd
                for (long a = 0; a < A; a++) {
                    float d = gts * v[a] * (1.0f - th[a] * th[a]);   /* tanh' = 1 - tanh^2 */
                    gv[a] += gts * th[a];
                    gk[a] += d;
                    gqt[a] += d;
                }
            }
            store_row(w->dtype, w->grad_k, (b * S + s) * A, A, gk);
        }
        store_row(w->dtype, w->grad_q, b * T * A, T * A, gq);
    }
    free(buf);
}

static int clamp_threads(int threads, long B) {
    if (threads > B) threads = (int)B;
    if (threads > 64) threads = 64;
    return threads < 1 ? 1 : threads;
}

/* Splits rows 0..B among `threads` threads and runs `fn` on each share. The threads are OpenMP's:
   loaded beside PyTorch, this library shares PyTorch's own OpenMP runtime and its threads, which
   would otherwise still be spinning on the same cores when these start. Without OpenMP, one. */
static int run_split(Work *proto, long B, int threads, void (*fn)(Work *), float *partials) {
    Work work[64];
    for (int i = 0; i < threads; i++) {
        work[i] = *proto;
        work[i].b0 = B * i / threads;
        work[i].b1 = B * (i + 1) / threads;
        work[i].grad_v = partials ? partials + (long)i * proto->A : NULL;
    }
#pragma omp parallel for schedule(static, 1) num_threads(threads)
    for (int i = 0; i < threads; i++)
        fn(&work[i]);
    int failed = 0;
    for (int i = 0; i < threads; i++)
        failed |= work[i].failed;
    return failed;
}

/* e (B, T, S); tanh (B, T, S, A) is written too unless it is NULL (no gradient to come). */
int score_forward(int dtype, const void *q, const void *k, const float *v, void *e, void *tanh,
                  long B, long T, long S, long A, int threads) {
    Work w = {dtype, q, k, NULL, v, e, tanh, NULL, NULL, NULL, 0, 0, T, S, A, 0};
    return run_split(&w, B, clamp_threads(threads, B), forward_rows, NULL);
}

/* grad_v (A floats) receives the sum over every row; grad_q and grad_k are written whole. */
int score_backward(int dtype, const void *tanh, const float *v, const void *grad,
                   void *grad_q, void *grad_k, float *grad_v, long B, long T, long S, long A, int threads) {
    threads = clamp_threads(threads, B);
    float *partials = calloc((size_t)threads * (size_t)A, sizeof(float));
    if (!partials) return 1;
    Work w = {dtype, NULL, NULL, grad, v, NULL, (void *)tanh, grad_q, grad_k, NULL, 0, 0, T, S, A, 0};
    int failed = run_split(&w, B, threads, backward_rows, partials);
    memset(grad_v, 0, sizeof(float) * (size_t)A);
    for (int i = 0; i < threads; i++)     /* a fixed order: the same sum every time */
        for (long a = 0; a < A; a++)
            grad_v[a] += partials[(long)i * A + a];
    free(partials);
    return failed;
}
