// Elementwise ops over bf16 tensors (grid-stride loops, f32 math).

extern "C" __global__ void act_bf16(const bf16* x, bf16* y, long long n,  // may run in place
                                    int act) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x)
        y[i] = f2bf(apply_act(bf2f(x[i]), act));
}

// y[r, c] = act(x[r, c] + bias[c]); bias may be null. (Used when cuBLASLt cannot fuse.)
extern "C" __global__ void bias_act_bf16(const bf16* __restrict__ x, const bf16* __restrict__ bias,
                                         bf16* __restrict__ y, long long n, int cols, int act) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        float v = bf2f(x[i]);
        if (bias) v += bf2f(bias[i % cols]);
        y[i] = f2bf(apply_act(v, act));
    }
}

// out = x + gate[b, d] * y for x, y [B, L, D], gate [B, D]; gate null means out = x + y.
extern "C" __global__ void add_gated_bf16(const bf16* __restrict__ x, const bf16* __restrict__ y,
                                          const bf16* __restrict__ gate, bf16* __restrict__ out,
                                          long long n, long long per_batch, int d) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        float g = 1.0f;
        if (gate) g = bf2f(gate[(i / per_batch) * d + i % d]);
        out[i] = f2bf(bf2f(x[i]) + g * bf2f(y[i]));
    }
}

extern "C" __global__ void axpby_bf16(float a, const bf16* __restrict__ x, float b,
                                      const bf16* __restrict__ y, bf16* __restrict__ out,
                                      long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x)
        out[i] = f2bf(a * bf2f(x[i]) + b * bf2f(y[i]));
}

// Rotary embedding on adjacent pairs: x [B, L, H, Dh], cos/sin [L, Dh/2].
extern "C" __global__ void rope_bf16(const bf16* __restrict__ x, const bf16* __restrict__ cs,
                                     const bf16* __restrict__ sn, bf16* __restrict__ y,
                                     long long pairs, int l, int h, int half) {
    for (long long p = blockIdx.x * (long long)blockDim.x + threadIdx.x; p < pairs;
         p += (long long)gridDim.x * blockDim.x) {
        int i = (int)(p % half);
        long long tok = (p / half / h) % l;
        float c = bf2f(cs[tok * half + i]), s = bf2f(sn[tok * half + i]);
        float x0 = bf2f(x[2 * p]), x1 = bf2f(x[2 * p + 1]);
        y[2 * p] = f2bf(x0 * c - x1 * s);
        y[2 * p + 1] = f2bf(x0 * s + x1 * c);
    }
}

// dst[r * dst_stride + j] = src[r * src_stride + j] for j < width (narrow, cat).
extern "C" __global__ void copy_rows_bf16(const bf16* __restrict__ src, bf16* __restrict__ dst,
                                          long long rows, long long width, long long src_stride,
                                          long long dst_stride) {
    long long n = rows * width;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        long long r = i / width, j = i % width;
        dst[r * dst_stride + j] = src[r * src_stride + j];
    }
}

// out[b, i, r] = x[b, idx[i], r] for x [B, L, rest].
extern "C" __global__ void gather_tokens_bf16(const bf16* __restrict__ x,
                                              const unsigned* __restrict__ idx,
                                              bf16* __restrict__ out, long long n, int l, int count,
                                              long long rest) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        long long r = i % rest, t = (i / rest) % count, b = i / rest / count;
        out[i] = x[(b * l + idx[t]) * rest + r];
    }
}

// x [B, L, H, Dh] -> out [B, H, nb, Dh]: mean over `block` tokens, zero padding counted.
extern "C" __global__ void block_mean_pool_bf16(const bf16* __restrict__ x, bf16* __restrict__ out,
                                                long long n, int l, int h, int dh, int nb,
                                                int block) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        int d = (int)(i % dh);
        int kb = (int)((i / dh) % nb);
        int hh = (int)((i / dh / nb) % h);
        long long b = i / dh / nb / h;
        int t0 = kb * block, t1 = min(t0 + block, l);
        float s = 0.0f;
        for (int t = t0; t < t1; ++t) s += bf2f(x[((b * l + t) * h + hh) * dh + d]);
        out[i] = f2bf(s / (float)block);
    }
}

// acc[0] += sum |x| (grid-stride partial sums, one atomic per block).
extern "C" __global__ void sum_abs_bf16(const bf16* __restrict__ x, float* acc, long long n) {
    float s = 0.0f;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x)
        s += fabsf(bf2f(x[i]));
    s = block_sum(s);
    if (threadIdx.x == 0) atomicAdd(acc, s);
}

// Video [B, C, F, H, W] -> tokens [B, gf*gh*gw, C*pt*ph*pw], vector ordered (c, kt, ky, kx).
// Token k is raster token order[k] (order null: raster), so the curve permutation costs no
// pass of its own. One thread per output element (reads are strided, writes coalesced).
extern "C" __global__ void patchify_bf16(const bf16* __restrict__ x, bf16* __restrict__ out,
                                         const unsigned* __restrict__ order, long long n, int c,
                                         int f, int h, int w, int pt, int ph, int pw) {
    const int gf = f / pt, gh = h / ph, gw = w / pw;
    const int pv = c * pt * ph * pw;
    const long long toks = (long long)gf * gh * gw;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        int e = (int)(i % pv);
        long long tok = (i / pv) % toks, b = i / pv / toks;
        if (order) tok = order[tok];
        int kx = e % pw, ky = (e / pw) % ph, kt = (e / pw / ph) % pt, ci = e / pw / ph / pt;
        int zx = (int)(tok % gw), zy = (int)((tok / gw) % gh), zf = (int)(tok / gw / gh);
        long long src = ((((b * c + ci) * f + zf * pt + kt) * (long long)h + zy * ph + ky) * w) +
                        zx * pw + kx;
        out[i] = x[src];
    }
}

// Tokens [B, gf*gh*gw, pt*ph*pw*C] (vector ordered (kt, ky, kx, c)) -> video
// [B, C, gf*pt, gh*ph, gw*pw]. Raster token r sits at row inv[r] of x (inv null: row r), the
// inverse of patchify's order. One thread per output element.
extern "C" __global__ void unpatchify_bf16(const bf16* __restrict__ x, bf16* __restrict__ out,
                                           const unsigned* __restrict__ inv, long long n, int c,
                                           int gf, int gh, int gw, int pt, int ph, int pw) {
    const int f = gf * pt, h = gh * ph, w = gw * pw;
    const int pv = c * pt * ph * pw;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        int xx = (int)(i % w), yy = (int)((i / w) % h), ff = (int)((i / w / h) % f);
        int ci = (int)((i / w / h / f) % c);
        long long b = i / w / h / f / c;
        long long tok = ((long long)(ff / pt) * gh + yy / ph) * gw + xx / pw;
        if (inv) tok = inv[tok];
        int e = (((ff % pt) * ph + yy % ph) * pw + xx % pw) * c + ci;
        out[i] = x[(b * gf * gh * gw + tok) * pv + e];
    }
}
