/* Rows of fp32 or bf16 storage (dtype 0 or 1) read into and written from fp32 buffers: the
   kernels' storage dtypes, with fp32 arithmetic. bf16 is rounded to nearest even, as PyTorch does. */
#ifndef CAPTION_ROWS_H
#define CAPTION_ROWS_H

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
    uint32_t nan = (u >> 16) | 0x40u;                /* a quiet NaN */
    uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    return (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? nan : rounded);   /* no branch: loops vectorise */
}

static inline void load_row(int dtype, const void *src, long offset, long n, float *dst) {
    if (dtype == 0) {
        memcpy(dst, (const float *)src + offset, (size_t)n * sizeof(float));
    } else {
        const uint16_t *p = (const uint16_t *)src + offset;
        for (long i = 0; i < n; i++)
            dst[i] = bf16_to_float(p[i]);
    }
}

static inline void store_row(int dtype, void *dst, long offset, long n, const float *src) {
    if (dtype == 0) {
        memcpy((float *)dst + offset, src, (size_t)n * sizeof(float));
    } else {
        uint16_t *p = (uint16_t *)dst + offset;
        for (long i = 0; i < n; i++)
            p[i] = float_to_bf16(src[i]);
    }
}

#endif
