/* The transpose of an fp32 matrix into a new one, for the CPU:

       dst (C, R) = src (R, C)^T,   both contiguous

   equal to src.t().contiguous() bit for bit (tests/test_matmul_packed.py). caption/kernels/matmul.py
   calls it for a weight's gradient, g^T x, whose g^T oneDNN's inner product reads only whole.

   Why: PyTorch's strided copy walks one matrix element by element across rows thousands of
   floats apart, and at a decoder's output layer (g 640 x 10,000) it takes several times as long
   as reading and writing the matrix once. Here the copy goes in square tiles small enough that
   each tile's rows of both matrices stay in the cache while it is read and written. The tiles are
   shared among `threads` OpenMP threads. */

#define TILE 32

void transpose_f32(const float *src, float *dst, long R, long C, int threads) {
    long tiles_r = (R + TILE - 1) / TILE, tiles_c = (C + TILE - 1) / TILE;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (long tile = 0; tile < tiles_r * tiles_c; tile++) {
        long r0 = tile / tiles_c * TILE, c0 = tile % tiles_c * TILE;
        long r1 = r0 + TILE < R ? r0 + TILE : R, c1 = c0 + TILE < C ? c0 + TILE : C;
        for (long c = c0; c < c1; c++)
            for (long r = r0; r < r1; r++)
                dst[c * R + r] = src[r * C + c];
    }
}
