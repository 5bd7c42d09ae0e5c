// 16-byte vectorised variants (8 bf16 per access) of the memory-bound ops. The host picks them
// when every pointer is 16-byte aligned and the sizes are multiples of 8; otherwise it falls
// back to the scalar kernels. Same math as the scalar versions.

#define GRID_STRIDE8(i, n8)                                                             \
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < (n8); \
         i += (long long)gridDim.x * blockDim.x)

extern "C" __global__ void act_v8(const bf16* x, bf16* y, long long n8, int act) {
    GRID_STRIDE8(i, n8) {
        float v[8];
        load8(x + 8 * i, v);
#pragma unroll
        for (int j = 0; j < 8; ++j) v[j] = apply_act(v[j], act);
        store8(y + 8 * i, v);
    }
}

// cols % 8 == 0; bias may be null.
extern "C" __global__ void bias_act_v8(const bf16* x, const bf16* __restrict__ bias, bf16* y,
                                       long long n8, int cols, int act) {
    GRID_STRIDE8(i, n8) {
        float v[8], b[8];
        load8(x + 8 * i, v);
        if (bias) {
            load8(bias + (8 * i) % cols, b);
#pragma unroll
            for (int j = 0; j < 8; ++j) v[j] += b[j];
        }
#pragma unroll
        for (int j = 0; j < 8; ++j) v[j] = apply_act(v[j], act);
        store8(y + 8 * i, v);
    }
}

// d % 8 == 0 when gated.
extern "C" __global__ void add_gated_v8(const bf16* __restrict__ x, const bf16* __restrict__ y,
                                        const bf16* __restrict__ gate, bf16* __restrict__ out,
                                        long long n8, long long per_batch, int d) {
    GRID_STRIDE8(i, n8) {
        float a[8], b[8], g[8];
        load8(x + 8 * i, a);
        load8(y + 8 * i, b);
        if (gate) {
            long long e = 8 * i;
            load8(gate + (e / per_batch) * d + e % d, g);
        } else {
#pragma unroll
            for (int j = 0; j < 8; ++j) g[j] = 1.0f;
        }
#pragma unroll
        for (int j = 0; j < 8; ++j) a[j] += g[j] * b[j];
        store8(out + 8 * i, a);
    }
}

extern "C" __global__ void axpby_v8(float alpha, const bf16* __restrict__ x, float beta,
                                    const bf16* __restrict__ y, bf16* __restrict__ out,
                                    long long n8) {
    GRID_STRIDE8(i, n8) {
        float a[8], b[8];
        load8(x + 8 * i, a);
        load8(y + 8 * i, b);
#pragma unroll
        for (int j = 0; j < 8; ++j) a[j] = alpha * a[j] + beta * b[j];
        store8(out + 8 * i, a);
    }
}

// Rotate 4 adjacent pairs v[0..8) by one token's cos/sin, given as 2 x u32 words (4 bf16)
// each. Shared by rope_v8 and rope_pool_v8 so both round alike.
__device__ __forceinline__ void rope4(float* v, const unsigned* cw, const unsigned* sw) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        unsigned cu = cw[j / 2], su = sw[j / 2];
        float c = __uint_as_float((j & 1) ? (cu & 0xffff0000u) : (cu << 16));
        float s = __uint_as_float((j & 1) ? (su & 0xffff0000u) : (su << 16));
        float x0 = v[2 * j], x1 = v[2 * j + 1];
        v[2 * j] = x0 * c - x1 * s;
        v[2 * j + 1] = x0 * s + x1 * c;
    }
}

// The 4 cos (or sin) values of pairs pi .. pi + 4 of a token: 8 bytes (8-byte aligned).
__device__ __forceinline__ uint2 load_cs4(const bf16* __restrict__ p) {
    return *reinterpret_cast<const uint2*>(p);
}

// half % 4 == 0: each thread rotates 4 adjacent pairs.
extern "C" __global__ void rope_v8(const bf16* __restrict__ x, const bf16* __restrict__ cs,
                                   const bf16* __restrict__ sn, bf16* __restrict__ y,
                                   long long n8, int l, int h, int half) {
    GRID_STRIDE8(i, n8) {
        long long p0 = 4 * i;  // first pair
        int pi = (int)(p0 % half);
        long long tok = (p0 / half / h) % l;
        float v[8];
        load8(x + 8 * i, v);
        // cos/sin for 4 pairs = 8 bytes each: read as 2 x u32.
        const unsigned* c2 = reinterpret_cast<const unsigned*>(cs + tok * half + pi);
        const unsigned* s2 = reinterpret_cast<const unsigned*>(sn + tok * half + pi);
        unsigned cw[2] = {c2[0], c2[1]}, sw[2] = {s2[0], s2[1]};
        rope4(v, cw, sw);
        store8(y + 8 * i, v);
    }
}

// RoPE fused with the block means of its output (Jenga's pooled q̂/k̂), one pass over x:
// x [B, L, H, Dh] → y [B, L, H, Dh] exactly as rope_v8 writes it, and pooled [B, H, nb, Dh]
// exactly as block_mean_pool_bf16(y) (f32 sum of the bf16 outputs in token order, / block, the
// partial last block counting its zero padding). One thread per (batch, block, head, 8
// channels) walks the block's tokens, ROPE_POOL_U of them loaded ahead. half % 4 == 0, every
// pointer 16-byte aligned. n8 = B * nb * H * (Dh / 8).
#define ROPE_POOL_U 8
extern "C" __global__ void rope_pool_v8(const bf16* __restrict__ x, const bf16* __restrict__ cs,
                                        const bf16* __restrict__ sn, bf16* __restrict__ y,
                                        bf16* __restrict__ pooled, long long n8, int l, int h,
                                        int half, int nb, int block) {
    const int d = 2 * half, d8 = d / 8;
    GRID_STRIDE8(i, n8) {
        const int c = (int)(i % d8);
        const int hh = (int)((i / d8) % h);
        const int kb = (int)((i / d8 / h) % nb);
        const long long b = i / d8 / h / nb;
        const int t0 = kb * block, t1 = min(t0 + block, l);
        const long long stride = (long long)h * d;
        const long long base = ((b * l + t0) * h + hh) * d + c * 8;
        float s[8];
#pragma unroll
        for (int e = 0; e < 8; ++e) s[e] = 0.0f;
        for (int t = t0; t < t1; t += ROPE_POOL_U) {
            const int n = min(ROPE_POOL_U, t1 - t);
            // Every load of the group first (x, cos, sin), then the math in token order.
            uint4 u[ROPE_POOL_U];
            uint2 cw[ROPE_POOL_U], sw[ROPE_POOL_U];
#pragma unroll
            for (int j = 0; j < ROPE_POOL_U; ++j) {
                if (j < n) {
                    const long long tab = (long long)(t + j) * half + c * 4;
                    u[j] = *reinterpret_cast<const uint4*>(x + base + (t - t0 + j) * stride);
                    cw[j] = load_cs4(cs + tab);
                    sw[j] = load_cs4(sn + tab);
                }
            }
#pragma unroll
            for (int j = 0; j < ROPE_POOL_U; ++j) {
                if (j < n) {
                    float v[8];
                    unsigned w[4] = {u[j].x, u[j].y, u[j].z, u[j].w};
#pragma unroll
                    for (int e = 0; e < 4; ++e) {
                        v[2 * e] = __uint_as_float(w[e] << 16);
                        v[2 * e + 1] = __uint_as_float(w[e] & 0xffff0000u);
                    }
                    const unsigned c2[2] = {cw[j].x, cw[j].y}, s2[2] = {sw[j].x, sw[j].y};
                    rope4(v, c2, s2);
                    store8(y + base + (t - t0 + j) * stride, v);
#pragma unroll
                    for (int e = 0; e < 8; ++e) s[e] += bf2f(f2bf(v[e]));
                }
            }
        }
#pragma unroll
        for (int e = 0; e < 8; ++e) s[e] = s[e] / (float)block;
        store8(pooled + ((b * h + hh) * nb + kb) * (long long)d + c * 8, s);
    }
}

// Row norms with the row held in registers (one global read): d % 8 == 0 and
// d <= 8 * blockDim.x * NCH.
#define NCH 4

__device__ __forceinline__ int row_load(const bf16* __restrict__ xr, int d8, float (*v)[8]) {
    int nc = 0;
#pragma unroll
    for (int j = 0; j < NCH; ++j) {
        int c = threadIdx.x + j * blockDim.x;
        if (c < d8) {
            load8(xr + 8 * c, v[j]);
            nc = j + 1;
        }
    }
    return nc;
}

__device__ __forceinline__ void row_stats_v(float (*v)[8], int d8, int d, float eps,
                                            float& mean, float& rstd) {
    float s = 0.0f;
#pragma unroll
    for (int j = 0; j < NCH; ++j)
        if (threadIdx.x + j * blockDim.x < d8)
#pragma unroll
            for (int e = 0; e < 8; ++e) s += v[j][e];
    mean = block_sum(s) / (float)d;
    float q = 0.0f;
#pragma unroll
    for (int j = 0; j < NCH; ++j)
        if (threadIdx.x + j * blockDim.x < d8)
#pragma unroll
            for (int e = 0; e < 8; ++e) {
                float t = v[j][e] - mean;
                q += t * t;
            }
    rstd = rsqrtf(block_sum(q) / (float)d + eps);
}

// The rest of a register-resident row norm once the row is in v: statistics, then
// LN(v)·w + b (w, b may be null) ...
__device__ __forceinline__ void layer_norm_row_out(float (*v)[8], int d8, int d, float eps,
                                                   const bf16* __restrict__ w,
                                                   const bf16* __restrict__ b,
                                                   bf16* __restrict__ yr) {
    float mean, rstd;
    row_stats_v(v, d8, d, eps, mean, rstd);
#pragma unroll
    for (int j = 0; j < NCH; ++j) {
        int c = threadIdx.x + j * blockDim.x;
        if (c >= d8) continue;
        float wv[8], bv[8];
        if (w) load8(w + 8 * c, wv);
        if (b) load8(b + 8 * c, bv);
#pragma unroll
        for (int e = 0; e < 8; ++e) {
            float t = (v[j][e] - mean) * rstd;
            if (w) t *= wv[e];
            if (b) t += bv[e];
            v[j][e] = t;
        }
        store8(yr + 8 * c, v[j]);
    }
}

// ... or LN(v)·(1 + scale) + shift (shift/scale: this row's sample's [D] vectors).
__device__ __forceinline__ void norm_modulate_row_out(float (*v)[8], int d8, int d, float eps,
                                                      const bf16* __restrict__ shift,
                                                      const bf16* __restrict__ scale,
                                                      bf16* __restrict__ yr) {
    float mean, rstd;
    row_stats_v(v, d8, d, eps, mean, rstd);
#pragma unroll
    for (int j = 0; j < NCH; ++j) {
        int c = threadIdx.x + j * blockDim.x;
        if (c >= d8) continue;
        float sh[8], sc[8];
        load8(shift + 8 * c, sh);
        load8(scale + 8 * c, sc);
#pragma unroll
        for (int e = 0; e < 8; ++e) v[j][e] = (v[j][e] - mean) * rstd * (1.0f + sc[e]) + sh[e];
        store8(yr + 8 * c, v[j]);
    }
}

extern "C" __global__ void layer_norm_v8(const bf16* __restrict__ x, const bf16* __restrict__ w,
                                         const bf16* __restrict__ b, bf16* __restrict__ y, int d,
                                         float eps) {
    const int d8 = d / 8;
    const bf16* xr = x + (long long)blockIdx.x * d;
    bf16* yr = y + (long long)blockIdx.x * d;
    float v[NCH][8];
    row_load(xr, d8, v);
    layer_norm_row_out(v, d8, d, eps, w, b, yr);
}

extern "C" __global__ void norm_modulate_v8(const bf16* __restrict__ x,
                                            const bf16* __restrict__ shift,
                                            const bf16* __restrict__ scale, bf16* __restrict__ y,
                                            int d, int l, float eps) {
    const int d8 = d / 8;
    const bf16* xr = x + (long long)blockIdx.x * d;
    bf16* yr = y + (long long)blockIdx.x * d;
    const long long mrow = (long long)(blockIdx.x / l) * d;
    float v[NCH][8];
    row_load(xr, d8, v);
    norm_modulate_row_out(v, d8, d, eps, shift + mrow, scale + mrow, yr);
}

extern "C" __global__ void rms_norm_v8(const bf16* __restrict__ x, const bf16* __restrict__ w,
                                       bf16* __restrict__ y, int d, float eps) {
    const int d8 = d / 8;
    const bf16* xr = x + (long long)blockIdx.x * d;
    bf16* yr = y + (long long)blockIdx.x * d;
    float v[NCH][8];
    row_load(xr, d8, v);
    float s = 0.0f;
#pragma unroll
    for (int j = 0; j < NCH; ++j)
        if (threadIdx.x + j * blockDim.x < d8)
#pragma unroll
            for (int e = 0; e < 8; ++e) s += v[j][e] * v[j][e];
    float r = rsqrtf(block_sum(s) / (float)d + eps);
#pragma unroll
    for (int j = 0; j < NCH; ++j) {
        int c = threadIdx.x + j * blockDim.x;
        if (c >= d8) continue;
        float wv[8];
        load8(w + 8 * c, wv);
#pragma unroll
        for (int e = 0; e < 8; ++e) v[j][e] = v[j][e] * r * wv[e];
        store8(yr + 8 * c, v[j]);
    }
}

// x + gate·y (exactly as add_gated_v8; gate [B, D] or null for 1) written to s, then the row
// norm of that bf16 sum exactly as layer_norm_v8 (shift null: LN·w + b, w/b may be null) or
// norm_modulate_v8 (shift/scale [B, D]) computes it, to out: one read of x and y instead of
// the unfused pair's two reads of the sum. Launch as the register-resident norms (rows x, d % 8
// == 0, every pointer 16-byte aligned).
extern "C" __global__ void add_gated_norm_v8(const bf16* __restrict__ x,
                                             const bf16* __restrict__ y,
                                             const bf16* __restrict__ gate,
                                             const bf16* __restrict__ w,
                                             const bf16* __restrict__ b,
                                             const bf16* __restrict__ shift,
                                             const bf16* __restrict__ scale, bf16* __restrict__ s,
                                             bf16* __restrict__ out, int d, int l, float eps) {
    const int d8 = d / 8;
    const long long row = (long long)blockIdx.x * d;
    const long long mrow = (long long)(blockIdx.x / l) * d;
    float v[NCH][8];
#pragma unroll
    for (int j = 0; j < NCH; ++j) {
        int c = threadIdx.x + j * blockDim.x;
        if (c >= d8) continue;
        float a[8], yv[8], g[8];
        load8(x + row + 8 * c, a);
        load8(y + row + 8 * c, yv);
        if (gate) {
            load8(gate + mrow + 8 * c, g);
        } else {
#pragma unroll
            for (int e = 0; e < 8; ++e) g[e] = 1.0f;
        }
#pragma unroll
        for (int e = 0; e < 8; ++e) a[e] += g[e] * yv[e];
        store8(s + row + 8 * c, a);
        // The norm reads the sum as stored (bf16), as the unfused norm does.
#pragma unroll
        for (int e = 0; e < 8; ++e) v[j][e] = bf2f(f2bf(a[e]));
    }
    if (shift)
        norm_modulate_row_out(v, d8, d, eps, shift + mrow, scale + mrow, out + row);
    else
        layer_norm_row_out(v, d8, d, eps, w, b, out + row);
}

// RMSNorm over each token's whole row of H·Dh channels (exactly as rms_norm_v8 on the
// [B, L, H·Dh] view), then RoPE (exactly as rope_v8) and, with pooled, the block means of the
// output (exactly as rope_pool_v8: f32 sum of the bf16 outputs in token order, / block, the
// partial last block counting its zero padding): x [B, L, H, Dh] → y, pooled [B, H, nb, Dh],
// one read of x. One CTA per (batch, block of `block` tokens), one thread per 8 channels of a
// token's row (blockDim = H·Dh/8 ≤ 1024 rounded up to 32, as rms_norm_v8's); the CTA walks its
// tokens U at a time, all their loads first, then one CTA reduction for the group's sums of
// squares (each adding up as rms_norm_v8's block_sum does). The normed value is rounded to
// bf16 before the rotation, as the unfused rms_norm stores it. w null: RoPE alone. pooled
// null: no means. Dh % 8 == 0, every pointer 16-byte aligned.
template <int U>
__device__ __forceinline__ void rms_rope_body(const bf16* __restrict__ x,
                                              const bf16* __restrict__ w,
                                              const bf16* __restrict__ cs,
                                              const bf16* __restrict__ sn, bf16* __restrict__ y,
                                              bf16* __restrict__ pooled, int l, int h, int half,
                                              int nb, int block, float eps) {
    __shared__ float part[32][U];
    __shared__ float tot[U];
    const int dh = 2 * half, d = h * dh, d8 = d / 8, hd8 = dh / 8;
    const int c = threadIdx.x;
    const bool on = c < d8;
    const int hh = c / hd8, cc = c % hd8;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    const int kb = blockIdx.x % nb;
    const long long b = blockIdx.x / nb;
    const int t0 = kb * block, t1 = min(t0 + block, l);
    float wv[8], s[8];
#pragma unroll
    for (int e = 0; e < 8; ++e) s[e] = 0.0f;
    if (w && on) load8(w + 8 * c, wv);
    for (int t = t0; t < t1; t += U) {
        const int n = min(U, t1 - t);
        float v[U][8];
        uint2 cw[U], sw[U];
#pragma unroll
        for (int j = 0; j < U; ++j) {
            if (on && j < n) {
                const long long tab = (long long)(t + j) * half + cc * 4;
                load8(x + (b * l + t + j) * (long long)d + 8 * c, v[j]);
                cw[j] = load_cs4(cs + tab);
                sw[j] = load_cs4(sn + tab);
            }
        }
        if (w) {
            float q[U];
#pragma unroll
            for (int j = 0; j < U; ++j) {
                q[j] = 0.0f;
                if (on && j < n)
#pragma unroll
                    for (int e = 0; e < 8; ++e) q[j] += v[j][e] * v[j][e];
                q[j] = warp_sum(q[j]);
            }
            __syncthreads();  // the previous group's tot is read
            if (lane == 0)
#pragma unroll
                for (int j = 0; j < U; ++j) part[warp][j] = q[j];
            __syncthreads();
            for (int j = warp; j < U; j += nwarps) {
                float p = lane < nwarps ? part[lane][j] : 0.0f;
                p = warp_sum(p);
                if (lane == 0) tot[j] = p;
            }
            __syncthreads();
#pragma unroll
            for (int j = 0; j < U; ++j) {
                if (on && j < n) {
                    const float r = rsqrtf(tot[j] / (float)d + eps);
#pragma unroll
                    for (int e = 0; e < 8; ++e) v[j][e] = bf2f(f2bf(v[j][e] * r * wv[e]));
                }
            }
        }
#pragma unroll
        for (int j = 0; j < U; ++j) {
            if (on && j < n) {
                const unsigned c2[2] = {cw[j].x, cw[j].y}, s2[2] = {sw[j].x, sw[j].y};
                rope4(v[j], c2, s2);
                store8(y + (b * l + t + j) * (long long)d + 8 * c, v[j]);
                if (pooled)
#pragma unroll
                    for (int e = 0; e < 8; ++e) s[e] += bf2f(f2bf(v[j][e]));
            }
        }
    }
    if (pooled && on) {
#pragma unroll
        for (int e = 0; e < 8; ++e) s[e] = s[e] / (float)block;
        store8(pooled + ((b * h + hh) * nb + kb) * (long long)dh + cc * 8, s);
    }
}

// One token per CTA (block = 1, nb = L, pooled null): few registers, so CTAs enough to keep
// the memory busy, as rms_norm_v8.
extern "C" __global__ void rms_rope_v8(const bf16* __restrict__ x, const bf16* __restrict__ w,
                                       const bf16* __restrict__ cs, const bf16* __restrict__ sn,
                                       bf16* __restrict__ y, bf16* __restrict__ pooled, int l,
                                       int h, int half, int nb, int block, float eps) {
    rms_rope_body<1>(x, w, cs, sn, y, pooled, l, h, half, nb, block, eps);
}

// A pool block per CTA, its tokens 8 at a time (the means need one thread to walk a block).
extern "C" __global__ void rms_rope_pool_v8(const bf16* __restrict__ x,
                                            const bf16* __restrict__ w,
                                            const bf16* __restrict__ cs,
                                            const bf16* __restrict__ sn, bf16* __restrict__ y,
                                            bf16* __restrict__ pooled, int l, int h, int half,
                                            int nb, int block, float eps) {
    rms_rope_body<8>(x, w, cs, sn, y, pooled, l, h, half, nb, block, eps);
}
