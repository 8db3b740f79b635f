"""Code that exists only for speed: each module equals a plain PyTorch expression (its docstring
names the expression and the test that pins them equal) and changes no result beyond float rounding.

    matmul           fp32 CPU products through oneDNN (Linear, linear, mm, Packed; backend("torch") turns it off)
    additive_score   v^T tanh(q + k) for every query and key, fused and chunked for the CPU
    native           the C kernels (native/*.c) compiled here on first use: the additive score in training
    attention_lstm   the soft-attention LSTM loop, forward and backward through time by hand (CPU training)
    cross_entropy    each row's cross-entropy with its target, forward and backward in C (CPU training)
    batch_norm       batch norm with the batch's statistics, then ReLU, forward and backward in C (fp32 CPU training)
    recurrent_linear a recurrence's weight gradient as one GEMM over all steps (RecurrentLinear)
    malloc           glibc malloc tuning: freed memory kept for reuse (keep_freed_memory)

The package imports nothing here, so `caption.kernels.malloc` loads without torch.
"""
