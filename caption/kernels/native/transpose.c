/* The transpose of an fp32 matrix into a new one, for the CPU:

       dst (C, R) = src (R, C)^T,   both contiguous

   equal to src.t().contiguous() bit for bit (tests/test_matmul_packed.py). caption/kernels/matmul.py
   calls it for a weight's gradient, g^T x, whose g^T oneDNN's inner product reads only whole.

   Why: PyTorch's strided copy walks one matrix element by element across rows thousands of
   floats apart, and at a decoder's output layer (g 640 x 10,000) it takes several times as long
   as reading and writing the matrix once. Here the copy goes in square tiles small enough that
   each tile's rows of both matrices stay in the cache while it is read and written, and where the
   compiler may use AVX, each tile in blocks of 8 x 8 transposed in registers (eight rows of eight
   floats read, eight written), about twice as fast again as element by element. The tiles are
   shared among `threads` OpenMP threads. */
#ifdef __AVX__
#include <immintrin.h>
#endif

#define TILE 64

#ifdef __AVX__
/* dst's 8 x 8 block (rows ld apart) = the transpose of src's (rows ls apart). */
static inline void block8(const float *src, long ls, float *dst, long ld) {
    __m256 r[8], t[8];
    for (int i = 0; i < 8; i++)
        r[i] = _mm256_loadu_ps(src + i * ls);
    for (int i = 0; i < 8; i += 2) {          /* pairs of rows interleaved */
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {          /* then pairs of pairs */
        r[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
        r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
        r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (int i = 0; i < 4; i++) {             /* then the 128-bit halves of rows 4 apart */
        _mm256_storeu_ps(dst + i * ld, _mm256_permute2f128_ps(r[i], r[i + 4], 0x20));
        _mm256_storeu_ps(dst + (i + 4) * ld, _mm256_permute2f128_ps(r[i], r[i + 4], 0x31));
    }
}
#endif

void transpose_f32(const float *src, float *dst, long R, long C, int threads) {
    long tiles_r = (R + TILE - 1) / TILE, tiles_c = (C + TILE - 1) / TILE;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (long tile = 0; tile < tiles_r * tiles_c; tile++) {
        long r0 = tile / tiles_c * TILE, c0 = tile % tiles_c * TILE;
        long r1 = r0 + TILE < R ? r0 + TILE : R, c1 = c0 + TILE < C ? c0 + TILE : C;
        long rb = r0, cb = c0;                /* where the 8 x 8 blocks end: none without AVX */
#ifdef __AVX__
        rb += (r1 - r0) / 8 * 8, cb += (c1 - c0) / 8 * 8;
        for (long r = r0; r < rb; r += 8)
            for (long c = c0; c < cb; c += 8)
                block8(src + r * C + c, C, dst + c * R + r, R);
#endif
        for (long c = c0; c < c1; c++)        /* the rest: the tile's last columns, then its last rows */
            for (long r = c < cb ? rb : r0; r < r1; r++)
                dst[c * R + r] = src[r * C + c];
    }
}
