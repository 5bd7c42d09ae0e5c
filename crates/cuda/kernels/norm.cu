// Row norms over the last dim, one block per row, f32 statistics (two passes over the row; the
// second read hits L1/L2).

__device__ __forceinline__ void row_stats(const bf16* __restrict__ xr, int d, float& mean,
                                          float& rstd, float eps) {
    float s = 0.0f;
    for (int i = threadIdx.x; i < d; i += blockDim.x) s += bf2f(xr[i]);
    mean = block_sum(s) / (float)d;
    float v = 0.0f;
    for (int i = threadIdx.x; i < d; i += blockDim.x) {
        float t = bf2f(xr[i]) - mean;
        v += t * t;
    }
    rstd = rsqrtf(block_sum(v) / (float)d + eps);
}

// y = LN(x) * w + b (w, b may be null).
extern "C" __global__ void layer_norm_bf16(const bf16* __restrict__ x, const bf16* __restrict__ w,
                                           const bf16* __restrict__ b, bf16* __restrict__ y, int d,
                                           float eps) {
    const bf16* xr = x + (long long)blockIdx.x * d;
    bf16* yr = y + (long long)blockIdx.x * d;
    float mean, rstd;
    row_stats(xr, d, mean, rstd, eps);
    for (int i = threadIdx.x; i < d; i += blockDim.x) {
        float v = (bf2f(xr[i]) - mean) * rstd;
        if (w) v *= bf2f(w[i]);
        if (b) v += bf2f(b[i]);
        yr[i] = f2bf(v);
    }
}

// y = LN(x) * (1 + scale[b]) + shift[b]; x [B, L, D] rows, shift/scale [B, D].
extern "C" __global__ void norm_modulate_bf16(const bf16* __restrict__ x,
                                              const bf16* __restrict__ shift,
                                              const bf16* __restrict__ scale,
                                              bf16* __restrict__ y, int d, int l, float eps) {
    const bf16* xr = x + (long long)blockIdx.x * d;
    bf16* yr = y + (long long)blockIdx.x * d;
    const long long mrow = (long long)(blockIdx.x / l) * d;
    float mean, rstd;
    row_stats(xr, d, mean, rstd, eps);
    for (int i = threadIdx.x; i < d; i += blockDim.x) {
        float v = (bf2f(xr[i]) - mean) * rstd;
        yr[i] = f2bf(v * (1.0f + bf2f(scale[mrow + i])) + bf2f(shift[mrow + i]));
    }
}

// y = x / sqrt(mean(x^2) + eps) * w.
extern "C" __global__ void rms_norm_bf16(const bf16* __restrict__ x, const bf16* __restrict__ w,
                                         bf16* __restrict__ y, int d, float eps) {
    const bf16* xr = x + (long long)blockIdx.x * d;
    bf16* yr = y + (long long)blockIdx.x * d;
    float s = 0.0f;
    for (int i = threadIdx.x; i < d; i += blockDim.x) {
        float t = bf2f(xr[i]);
        s += t * t;
    }
    float r = rsqrtf(block_sum(s) / (float)d + eps);
    for (int i = threadIdx.x; i < d; i += blockDim.x) yr[i] = f2bf(bf2f(xr[i]) * r * bf2f(w[i]));
}
