/* exp and tanh without a library call, so that the loops that use them vectorise. */
#ifndef CAPTION_TANH_H
#define CAPTION_TANH_H

#include <stdint.h>
#include <string.h>

/* exp(y) for |y| <= 87 without a library call, so that the loops vectorise: Cephes' expf,
   2^n times a polynomial in the remainder; within a few units in the last place of fp32. */
static inline float exp_f(float y) {
    float n = (y * 1.44269504088896341f + 12582912.0f) - 12582912.0f;   /* round(y / ln 2) */
    float r = (y - n * 0.693359375f) + n * 2.12194440e-4f;
    float e = (((((1.9875691500e-4f * r + 1.3981999507e-3f) * r + 8.3334519073e-3f) * r
                 + 4.1665795894e-2f) * r + 1.6666665459e-1f) * r + 5.0000001201e-1f) * r * r + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, 4);
    return e * scale;
}

/* tanh: Cephes' tanhf polynomial below 0.625, 1 - 2 / (exp(2|x|) + 1) above; within a few units
   in the last place of fp32. NaN stays NaN. */
static inline float tanh_f(float x) {
    float a = x < 0.0f ? -x : x;
    float s = x * x;
    float p = ((((-5.70498872745e-3f * s + 2.06390887954e-2f) * s - 5.37397155531e-2f) * s
                + 1.33314422036e-1f) * s - 3.33332819422e-1f) * s * x + x;
    float t = 1.0f - 2.0f / (exp_f(2.0f * (a < 10.0f ? a : 10.0f)) + 1.0f);   /* tanh(10) rounds to 1 */
    t = x < 0.0f ? -t : t;
    float result = a < 0.625f ? p : t;
    return x == x ? result : x;
}

/* sigmoid(x) = 1 / (1 + exp(-x)); exp's argument kept within its range (beyond it sigmoid is within
   1e-38 of 0, or rounds to 1). NaN stays NaN (and never reaches exp_f, whose rounding to an integer
   would be undefined for it). */
static inline float sigmoid_f(float x) {
    float y = (x >= -87.0f && x <= 87.0f) ? -x : (x < 0.0f ? 87.0f : -87.0f);
    return x == x ? 1.0f / (1.0f + exp_f(y)) : x;
}

#endif
