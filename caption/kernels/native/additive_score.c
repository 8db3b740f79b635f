/* The additive attention score and its gradient in one pass over the keys, for the CPU.

       e[b, t, s] = sum_a v[a] tanh(q[b, t, a] + k[b, s, a])

   equals torch.tanh(q.unsqueeze(2) + k.unsqueeze(1)) @ v and its gradients within float rounding
   (tests/test_native_score.py). caption/kernels/native.py compiles this file on the user's machine
   and calls it through ctypes; caption/kernels/additive_score.py says when it is used.

   Why: PyTorch forms the (B, T, S, A) middle tensor and walks it once per operation (add, tanh,
   product with v; in the backward pass tanh', the product with the incoming gradient, two sums),
   about a dozen passes over memory per decoder step. Here the keys are read once forward, where
   tanh(q + k) is written for the backward pass, which reads it once and writes both gradients.
   A loop that scores the same keys at every step (caption/kernels/attention_lstm.py) keeps no
   tanh: its backward pass recomputes it as the forward made it (tanh_row), a product and a
   division per element, where keeping it would write and read back (B, S, A) at every step
   (256 MB per pass at the paper's COCO sizes).

   Storage is fp32 or bf16 (dtype 0 or 1); arithmetic is fp32 throughout and v is fp32. Rows of
   the batch are shared among `threads` threads (run_split). Every tensor is contiguous. A return
   value other than 0 means out of memory. */
#include <stdlib.h>
#include <string.h>

#include "rows.h"
#include "tanh.h"

/* Where a loop calls the score at every step with the same keys, tanh(q + k) = 1 - 2 / (p + 1)
   with p = exp(2q) exp(2k): exp(2k) is taken once for all the steps (score_keys_exp), and a step
   costs a product and a division per element instead of a whole tanh. Its error is absolute, as
   tanh's own rounding near 1 is: within 3e-7 everywhere, so e and both gradients are as close to
   the exact ones as with tanh_f (tests/test_attention_lstm.py), though tanh of a tiny argument is
   not close relatively. |q| and |k| up to EXP_LIMIT keep each exp, and their product's overflow to
   inf or 0 gives +-1 as it should; a query row or keys beyond it take tanh_f. */
#define EXP_LIMIT 40.0f

typedef struct {
    int dtype;
    const void *q, *k, *grad;
    const float *v, *u;            /* u: exp(2k) (B, S, A), or NULL: tanh_f throughout */
    void *e, *tanh, *grad_q, *grad_k;
    float *grad_v;                 /* this thread's partial sum, A floats */
    long b0, b1, T, S, A;
    int accumulate;                /* grad_k is fp32 and receives the sum (a loop's steps add up) */
    int failed;
} Work;

/* exp(2q) of one query row into wq; 0 where some |q| is beyond EXP_LIMIT (or NaN). */
static int query_exp(const float *q, long A, float *wq) {
    int inside = 1;
    for (long a = 0; a < A; a++)
        inside &= q[a] <= EXP_LIMIT && q[a] >= -EXP_LIMIT;
    if (inside)
#pragma omp simd
        for (long a = 0; a < A; a++)
            wq[a] = exp_f(2.0f * q[a]);
    return inside;
}

/* tanh(q + k) of one query row and one key row into th: by exp(2q) exp(2k) where `fast` (wq and u
   that row's exp(2q) and exp(2k)), else by tanh_f. The forward pass and a backward pass that
   recomputes tanh call this one function, so both see the same numbers. */
static inline void tanh_row(int fast, const float *wq, const float *u, const float *q, const float *k, long A,
                            float *th) {
    if (fast) {
#pragma omp simd
        for (long a = 0; a < A; a++)
            th[a] = 1.0f - 2.0f / (wq[a] * u[a] + 1.0f);
    } else {
#pragma omp simd
        for (long a = 0; a < A; a++)
            th[a] = tanh_f(q[a] + k[a]);
    }
}

/* Row b's queries q (T, A) into q, exp(2q) into wq where the exp(2k) route serves a query (fast[t]);
   returns 1 where some query needs the keys themselves (tanh_f). */
static int load_queries(const Work *w, long b, float *q, float *wq, unsigned char *fast) {
    long T = w->T, A = w->A;
    load_row(w->dtype, w->q, b * T * A, T * A, q);
    int slow = 0;
    for (long t = 0; t < T; t++) {
        fast[t] = w->u && query_exp(q + t * A, A, wq + t * A);
        slow |= !fast[t];
    }
    return slow;
}

/* e for rows b0..b1, and tanh(q + k) (B, T, S, A) where w->tanh is not NULL. */
static void forward_rows(Work *w) {
    long T = w->T, S = w->S, A = w->A;
    float *buf = malloc(sizeof(float) * (size_t)((2 * T + 2) * A + T * S) + (size_t)T);
    if (!buf) { w->failed = 1; return; }
    float *q = buf, *wq = q + T * A, *k = wq + T * A, *th = k + A, *e = th + A;
    unsigned char *fast = (unsigned char *)(e + T * S);     /* per query: the exp(2k) route */
    const float *v = w->v;
    for (long b = w->b0; b < w->b1; b++) {
        int slow = load_queries(w, b, q, wq, fast);
        for (long s = 0; s < S; s++) {
            if (slow)
                load_row(w->dtype, w->k, (b * S + s) * A, A, k);
            const float *u = w->u ? w->u + (b * S + s) * A : NULL;
            for (long t = 0; t < T; t++) {
                float acc = 0.0f;
                if (fast[t] && !w->tanh) {     /* tanh_row's fast route, summed without a buffer */
                    const float *wt = wq + t * A;
#pragma omp simd reduction(+ : acc)
                    for (long a = 0; a < A; a++)
                        acc += v[a] * (1.0f - 2.0f / (wt[a] * u[a] + 1.0f));
                    e[t * S + s] = acc;
                    continue;
                }
                tanh_row(fast[t], wq + t * A, u, q + t * A, k, A, th);
#pragma omp simd reduction(+ : acc)
                for (long a = 0; a < A; a++)
                    acc += v[a] * th[a];
                e[t * S + s] = acc;
                if (w->tanh)
                    store_row(w->dtype, w->tanh, ((b * T + t) * S + s) * A, A, th);
            }
        }
        store_row(w->dtype, w->e, b * T * S, T * S, e);
    }
    free(buf);
}

/* One (s, t) term of the gradients: d = g v (1 - tanh^2) into grad_k's row gk and query t's gq
   (each where not NULL), g tanh into gv (where not NULL). */
static inline void backward_term(float g, const float *v, const float *th, float *gq, float *gk, float *gv,
                                 long A) {
    if (gq && gk && gv) {
#pragma omp simd
        for (long a = 0; a < A; a++) {
            float d = g * v[a] * (1.0f - th[a] * th[a]);   /* tanh' = 1 - tanh^2 */
            gv[a] += g * th[a];
            gk[a] += d;
            gq[a] += d;
        }
    } else {                            /* some of them: each its own loop */
        if (gq)
#pragma omp simd
            for (long a = 0; a < A; a++)
                gq[a] += g * v[a] * (1.0f - th[a] * th[a]);
        if (gk)
#pragma omp simd
            for (long a = 0; a < A; a++)
                gk[a] += g * v[a] * (1.0f - th[a] * th[a]);
        if (gv)
#pragma omp simd
            for (long a = 0; a < A; a++)
                gv[a] += g * th[a];
    }
}

/* Row b of a loop's backward pass (every gradient wanted, grad_k summed in place, tanh recomputed
   by the exp(2k) route for each of the row's queries, wq their exp(2q), g the row's gradient of e):
   the sums of backward_rows in one pass per key row, with v factored out of grad_q's sum over the
   keys and out of grad_k's over the queries (the sum of g v (1 - tanh^2) taken as v times the sum
   of g (1 - tanh^2)), so that no tanh and, for one query, no grad_k row goes through a buffer.
   acc_q (T, A) and acc_k (A) are working rows. */
static void fused_backward_row(const Work *w, long b, const float *wq, const float *g, float *acc_q, float *acc_k) {
    long T = w->T, S = w->S, A = w->A;
    const float *v = w->v;
    float *gv = w->grad_v;
    memset(acc_q, 0, sizeof(float) * (size_t)(T * A));
    for (long s = 0; s < S; s++) {
        const float *u = w->u + (b * S + s) * A;
        float *dst = (float *)w->grad_k + (b * S + s) * A;
        if (T == 1) {                          /* a loop's step: grad_k's row updated in the same pass */
            const float gs = g[s];
#pragma omp simd
            for (long a = 0; a < A; a++) {
                float th = 1.0f - 2.0f / (wq[a] * u[a] + 1.0f);
                float d = gs * (1.0f - th * th);
                acc_q[a] += d;
                dst[a] += d * v[a];
                gv[a] += gs * th;
            }
            continue;
        }
        memset(acc_k, 0, sizeof(float) * (size_t)A);
        for (long t = 0; t < T; t++) {
            const float gs = g[t * S + s], *wt = wq + t * A;
            float *aq = acc_q + t * A;
#pragma omp simd
            for (long a = 0; a < A; a++) {
                float th = 1.0f - 2.0f / (wt[a] * u[a] + 1.0f);
                float d = gs * (1.0f - th * th);
                aq[a] += d;
                acc_k[a] += d;
                gv[a] += gs * th;
            }
        }
#pragma omp simd
        for (long a = 0; a < A; a++)
            dst[a] += acc_k[a] * v[a];
    }
    for (long t = 0; t < T; t++)
#pragma omp simd
        for (long a = 0; a < A; a++)
            acc_q[t * A + a] *= v[a];
    store_row(w->dtype, w->grad_q, b * T * A, T * A, acc_q);
}

/* grad_q, grad_k and this thread's part of grad_v for rows b0..b1 (each where wanted), from the
   stored tanh, or with w->tanh NULL from tanh recomputed as the forward pass made it. */
static void backward_rows(Work *w) {
    long T = w->T, S = w->S, A = w->A;
    float *buf = malloc(sizeof(float) * (size_t)((3 * T + 3) * A + T * S) + (size_t)T);
    if (!buf) { w->failed = 1; return; }
    float *gq = buf, *th = gq + T * A, *gk = th + A, *g = gk + A, *q = g + T * S, *wq = q + T * A, *k = wq + T * A;
    unsigned char *fast = (unsigned char *)(k + A);
    const float *v = w->v;
    int recompute = w->tanh == NULL;
    for (long b = w->b0; b < w->b1; b++) {
        load_row(w->dtype, w->grad, b * T * S, T * S, g);
        int slow = recompute ? load_queries(w, b, q, wq, fast) : 0;
        if (recompute && w->u && !slow && w->grad_q && w->grad_k && w->grad_v && w->accumulate) {
            fused_backward_row(w, b, wq, g, gq, gk);
            continue;
        }
        memset(gq, 0, sizeof(float) * (size_t)(T * A));
        for (long s = 0; s < S; s++) {
            if (slow)
                load_row(w->dtype, w->k, (b * S + s) * A, A, k);
            const float *u = w->u ? w->u + (b * S + s) * A : NULL;
            memset(gk, 0, sizeof(float) * (size_t)A);
            for (long t = 0; t < T; t++) {
                if (recompute)
                    tanh_row(fast[t], wq + t * A, u, q + t * A, k, A, th);
                else
                    load_row(w->dtype, w->tanh, ((b * T + t) * S + s) * A, A, th);
                backward_term(g[t * S + s], v, th, w->grad_q ? gq + t * A : NULL, w->grad_k ? gk : NULL,
                              w->grad_v, A);
            }
            if (w->grad_k && w->accumulate) {
                float *dst = (float *)w->grad_k + (b * S + s) * A;
#pragma omp simd
                for (long a = 0; a < A; a++)
                    dst[a] += gk[a];
            } else if (w->grad_k) {
                store_row(w->dtype, w->grad_k, (b * S + s) * A, A, gk);
            }
        }
        if (w->grad_q)
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

/* e (B, T, S); tanh (B, T, S, A) is written too unless it is NULL (no gradient to come, or a
   backward pass that recomputes it). u is exp(2k) from score_keys_exp, or NULL. */
int score_forward(int dtype, const void *q, const void *k, const float *u, const float *v, void *e,
                  void *tanh, long B, long T, long S, long A, int threads) {
    Work w = {dtype, q, k, NULL, v, u, e, tanh, NULL, NULL, NULL, 0, 0, T, S, A, 0, 0};
    return run_split(&w, B, clamp_threads(threads, B), forward_rows, NULL);
}

/* grad_v (A floats) receives the sum over every row; grad_q is written whole, and grad_k too, or
   with `accumulate` grad_k is fp32 and the gradient is added to it. Any of the three may be NULL
   (not wanted). tanh is the forward pass's, or NULL: then it is recomputed from q, and from u or
   the keys k as score_forward took them (a loop's backward pass, which keeps no tanh). */
int score_backward(int dtype, const void *tanh, const void *q, const void *k, const float *u, const float *v,
                   const void *grad, void *grad_q, void *grad_k, float *grad_v, long B, long T, long S, long A,
                   int threads, int accumulate) {
    threads = clamp_threads(threads, B);
    float *partials = grad_v ? calloc((size_t)threads * (size_t)A, sizeof(float)) : NULL;
    if (grad_v && !partials) return 1;
    Work w = {dtype, q, k, grad, v, u, NULL, (void *)tanh, grad_q, grad_k, NULL, 0, 0, T, S, A, accumulate, 0};
    int failed = run_split(&w, B, threads, backward_rows, partials);
    if (grad_v) {
        memset(grad_v, 0, sizeof(float) * (size_t)A);
        for (int i = 0; i < threads; i++)     /* a fixed order: the same sum every time */
            for (long a = 0; a < A; a++)
                grad_v[a] += partials[(long)i * A + a];
    }
    free(partials);
    return failed;
}

/* u = exp(2k) for the n elements of the keys k, once for a loop's steps (score_forward). Returns 2,
   and u unfinished, where some |k| is beyond EXP_LIMIT (or NaN): then the steps take tanh_f. */
int score_keys_exp(int dtype, const void *k, float *u, long n, int threads) {
    int outside = 0;
    const long chunk = 4096;
#pragma omp parallel for schedule(static) num_threads(threads) reduction(+ : outside)
    for (long i = 0; i < n; i += chunk) {
        long m = n - i < chunk ? n - i : chunk;
        float *x = u + i;
        load_row(dtype, k, i, m, x);
        int out = 0;
#pragma omp simd reduction(+ : out)
        for (long j = 0; j < m; j++)
            out += !(x[j] <= EXP_LIMIT && x[j] >= -EXP_LIMIT);
        if (out) {
            outside += out;
            continue;
        }
#pragma omp simd
        for (long j = 0; j < m; j++)
            x[j] = exp_f(2.0f * x[j]);
    }
    return outside ? 2 : 0;
}
