/* nn.LSTMCell's update from its pre-activations, and its gradient, for the CPU: for each row,

       i, f, g, o = sigmoid(x_i), sigmoid(x_f), tanh(x_g), sigmoid(x_o)    x (n, 4H) in that order
       c = f c_prev + i g,   h = o tanh(c)                                 (Xu et al. 2015, eq. 1-3)

   equal to caption/image/decoder.py's _lstm_cell and its gradient within float rounding
   (tests/test_attention_lstm.py). caption/kernels/attention_lstm.py calls it once per step.

   Why: in PyTorch's ops the update is nine operations forward and about twenty backward, each a
   pass over a (n, H) or (n, 4H) tensor and a dispatch; here it is one pass each way.

   State and gradients are fp32; h and the gates' gradient are also written in the products'
   dtype (`dtype`: 0 fp32, 1 bf16), for the next product. Some rows are `*_stride` elements apart (a
   step's rows of the loop's (N, T, .) tensors, or a column block of a wider matrix); the others are
   contiguous. Rows are shared among
   `threads` OpenMP threads. */
#include "rows.h"
#include "tanh.h"

/* act (n, 4H) = i, f, g, o; c, tanh_c (n, H); h (rows h_stride apart); h_cast (n, H) in dtype. */
void lstm_cell_forward(int dtype, const float *x, const float *c_prev, float *act, float *c, float *tanh_c,
                       float *h, long h_stride, void *h_cast, long n, long H, int threads) {
#pragma omp parallel for schedule(static) num_threads(threads)
    for (long r = 0; r < n; r++) {
        const float *xr = x + r * 4 * H;
        float *ar = act + r * 4 * H, *cr = c + r * H, *tr = tanh_c + r * H, *hr = h + r * h_stride;
        const float *cp = c_prev + r * H;
#pragma omp simd
        for (long k = 0; k < H; k++) {
            float i = sigmoid_f(xr[k]), f = sigmoid_f(xr[H + k]);
            float g = tanh_f(xr[2 * H + k]), o = sigmoid_f(xr[3 * H + k]);
            float cn = f * cp[k] + i * g;
            float tc = tanh_f(cn);
            ar[k] = i;
            ar[H + k] = f;
            ar[2 * H + k] = g;
            ar[3 * H + k] = o;
            cr[k] = cn;
            tr[k] = tc;
            hr[k] = o * tc;
        }
        store_row(dtype, h_cast, r * H, H, hr);
    }
}

/* From the gradients reaching h and c (g_h: carry_h plus, where outer is not NULL, the output's own
   at this step, rows outer_stride apart; carry_c): the gates' gradient (fp32, rows g_stride apart,
   and in dtype, rows cast_stride apart), and that of c_prev, written over carry_c. */
void lstm_cell_backward(int dtype, const float *act, const float *tanh_c, const float *c_prev,
                        const float *carry_h, const float *outer, long outer_stride, float *carry_c,
                        float *g_gates, long g_stride, void *g_cast, long cast_stride, long n, long H,
                        int threads) {
#pragma omp parallel for schedule(static) num_threads(threads)
    for (long r = 0; r < n; r++) {
        const float *ar = act + r * 4 * H, *tr = tanh_c + r * H, *cp = c_prev + r * H, *hr = carry_h + r * H;
        const float *orow = outer ? outer + r * outer_stride : NULL;
        float *cc = carry_c + r * H, *gr = g_gates + r * g_stride;
#pragma omp simd
        for (long k = 0; k < H; k++) {
            float i = ar[k], f = ar[H + k], g = ar[2 * H + k], o = ar[3 * H + k], tc = tr[k];
            float gh = hr[k] + (orow ? orow[k] : 0.0f);
            float gc = cc[k] + gh * o * (1.0f - tc * tc);
            gr[k] = gc * g * i * (1.0f - i);
            gr[H + k] = gc * cp[k] * f * (1.0f - f);
            gr[2 * H + k] = gc * i * (1.0f - g * g);
            gr[3 * H + k] = gh * tc * o * (1.0f - o);
            cc[k] = gc * f;
        }
        store_row(dtype, g_cast, r * cast_stride, 4 * H, gr);
    }
}
