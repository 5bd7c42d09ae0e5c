// Tensor-core attention for any sm_80+ GPU (mma.sync m16n8k16 bf16, f32 accumulate), FA2
// style: a CTA of 4 warps owns 64 query rows (16 per warp, Q fragments kept in registers),
// streams 64-key tiles of K and V through shared memory, online softmax in the exp2 domain.
// Dense, or block-sparse over a CSR plan whose block is a multiple of 64 (the CTA then lies in
// one query block). Head dim 64 or 128. This is the portable fast path; the Hopper kernels in
// crate::attention, when present, take precedence. Key bias: query rows < bias_to get
// bias_log2 (log2 domain) added on keys >= bias_from.

#define BM 64
#define BN 64
#define NWARPS 4

__device__ __forceinline__ unsigned smem_u32(const void* p) {
    unsigned r;
    asm("{ .reg .u64 a; cvta.to.shared.u64 a, %1; cvt.u32.u64 %0, a; }" : "=r"(r) : "l"(p));
    return r;
}

__device__ __forceinline__ unsigned pack_bf16(float lo, float hi) {
    unsigned r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

__device__ __forceinline__ void mma16816(float* c, unsigned a0, unsigned a1, unsigned a2,
                                         unsigned a3, unsigned b0, unsigned b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void ldmatrix_x4(unsigned* r, unsigned addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

__device__ __forceinline__ void ldmatrix_x4_trans(unsigned* r, unsigned addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

template <int D>
__device__ __forceinline__ void attn_mma(const bf16* __restrict__ q, const bf16* __restrict__ k,
                                         const bf16* __restrict__ v, bf16* __restrict__ o,
                                         int lq, int lk, int h, float scale_log2,
                                         const unsigned* __restrict__ row_ptr,
                                         const unsigned* __restrict__ col_idx, int block,
                                         int q_blocks, int bias_from, float bias_log2,
                                         int bias_to) {
    constexpr int LDS = D + 8;  // padded row (elements): conflict-free fragment loads
    __shared__ __align__(16) bf16 sk[BN * LDS];
    __shared__ __align__(16) bf16 sv[BN * LDS];

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int g = lane >> 2, t = lane & 3;
    const int hh = blockIdx.y, b = blockIdx.z;
    const int q0 = blockIdx.x * BM + warp * 16;  // this warp's first query row
    const long long rs = (long long)h * D;       // token stride (elements)
    // Key bias of this thread's rows q0 + g and q0 + g + 8 (0 for rows at or past bias_to).
    const float badd0 = q0 + g < bias_to ? bias_log2 : 0.0f;
    const float badd1 = q0 + g + 8 < bias_to ? bias_log2 : 0.0f;

    // Q fragments (A operand, row-major 16 x D), straight from global memory.
    unsigned qa[D / 16][4];
    {
        const int r0 = q0 + g, r1 = q0 + g + 8;
        const unsigned* p0 =
            reinterpret_cast<const unsigned*>(q + ((long long)b * lq + r0) * rs + (long long)hh * D);
        const unsigned* p1 =
            reinterpret_cast<const unsigned*>(q + ((long long)b * lq + r1) * rs + (long long)hh * D);
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk) {
            qa[kk][0] = r0 < lq ? p0[kk * 8 + t] : 0u;
            qa[kk][1] = r1 < lq ? p1[kk * 8 + t] : 0u;
            qa[kk][2] = r0 < lq ? p0[kk * 8 + 4 + t] : 0u;
            qa[kk][3] = r1 < lq ? p1[kk * 8 + 4 + t] : 0u;
        }
    }

    float acc[D / 8][4];
#pragma unroll
    for (int n = 0; n < D / 8; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;  // rows g and g+8

    unsigned e0 = 0, e1 = 1;
    if (row_ptr) {
        const int qb = (blockIdx.x * BM) / block;
        const unsigned r = ((unsigned)b * h + hh) * q_blocks + qb;
        e0 = row_ptr[r];
        e1 = row_ptr[r + 1];
    }
    for (unsigned e = e0; e < e1; ++e) {
        int k_begin = 0, k_end = lk;
        if (row_ptr) {
            k_begin = (int)col_idx[e] * block;
            k_end = min(k_begin + block, lk);
        }
        for (int kt = k_begin; kt < k_end; kt += BN) {
            // ---- load K, V tile (zero rows past the range so V never feeds NaN garbage) ----
            __syncthreads();
            constexpr int CHUNKS = BN * D / 8;  // 16-byte chunks per tile
#pragma unroll
            for (int c = tid; c < CHUNKS; c += NWARPS * 32) {
                const int r = c / (D / 8), col = (c % (D / 8)) * 8;
                uint4 kv = make_uint4(0, 0, 0, 0), vv = make_uint4(0, 0, 0, 0);
                if (kt + r < k_end) {
                    const long long off = ((long long)b * lk + kt + r) * rs + (long long)hh * D + col;
                    kv = *reinterpret_cast<const uint4*>(k + off);
                    vv = *reinterpret_cast<const uint4*>(v + off);
                }
                *reinterpret_cast<uint4*>(sk + r * LDS + col) = kv;
                *reinterpret_cast<uint4*>(sv + r * LDS + col) = vv;
            }
            __syncthreads();

            // ---- S = Q K^T (16 x 64 per warp) ----
            float s[BN / 8][4];
#pragma unroll
            for (int j = 0; j < BN / 8; ++j) {
                s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
                const unsigned* kr = reinterpret_cast<const unsigned*>(sk + (j * 8 + g) * LDS);
#pragma unroll
                for (int kk = 0; kk < D / 16; ++kk)
                    mma16816(s[j], qa[kk][0], qa[kk][1], qa[kk][2], qa[kk][3], kr[kk * 8 + t],
                             kr[kk * 8 + 4 + t]);
            }
            // ---- scale, mask, bias; row maxima ----
            float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
            for (int j = 0; j < BN / 8; ++j) {
#pragma unroll
                for (int c = 0; c < 2; ++c) {
                    const int key = kt + j * 8 + 2 * t + c;
                    const bool biased = key >= bias_from;
                    const bool ok = key < k_end;
                    s[j][c] = ok ? s[j][c] * scale_log2 + (biased ? badd0 : 0.0f) : -INFINITY;
                    s[j][2 + c] =
                        ok ? s[j][2 + c] * scale_log2 + (biased ? badd1 : 0.0f) : -INFINITY;
                    mx0 = fmaxf(mx0, s[j][c]);
                    mx1 = fmaxf(mx1, s[j][2 + c]);
                }
            }
#pragma unroll
            for (int off = 1; off < 4; off <<= 1) {
                mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, off));
                mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, off));
            }
            const float mn0 = fmaxf(m0, mx0), mn1 = fmaxf(m1, mx1);
            const float mu0 = mn0 == -INFINITY ? 0.0f : mn0, mu1 = mn1 == -INFINITY ? 0.0f : mn1;
            const float corr0 = exp2f(m0 - mu0), corr1 = exp2f(m1 - mu1);
            m0 = mn0;
            m1 = mn1;
            float rs0 = 0.0f, rs1 = 0.0f;
#pragma unroll
            for (int j = 0; j < BN / 8; ++j) {
                s[j][0] = exp2f(s[j][0] - mu0);
                s[j][1] = exp2f(s[j][1] - mu0);
                s[j][2] = exp2f(s[j][2] - mu1);
                s[j][3] = exp2f(s[j][3] - mu1);
                rs0 += s[j][0] + s[j][1];
                rs1 += s[j][2] + s[j][3];
            }
            l0 = l0 * corr0 + rs0;  // per-thread partial sums; reduced over the quad at the end
            l1 = l1 * corr1 + rs1;
#pragma unroll
            for (int n = 0; n < D / 8; ++n) {
                acc[n][0] *= corr0;
                acc[n][1] *= corr0;
                acc[n][2] *= corr1;
                acc[n][3] *= corr1;
            }
            // ---- O += P V: P from the S accumulators (C layout == A layout), V via ldmatrix.trans ----
#pragma unroll
            for (int kk = 0; kk < BN / 16; ++kk) {
                const unsigned pa0 = pack_bf16(s[2 * kk][0], s[2 * kk][1]);
                const unsigned pa1 = pack_bf16(s[2 * kk][2], s[2 * kk][3]);
                const unsigned pa2 = pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]);
                const unsigned pa3 = pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3]);
                const int mi = lane >> 3, r = lane & 7;
                const bf16* vrow = sv + (kk * 16 + r + (mi & 1) * 8) * LDS + (mi >> 1) * 8;
#pragma unroll
                for (int n = 0; n < D / 16; ++n) {
                    unsigned vb[4];
                    ldmatrix_x4_trans(vb, smem_u32(vrow + n * 16));
                    mma16816(acc[2 * n], pa0, pa1, pa2, pa3, vb[0], vb[1]);
                    mma16816(acc[2 * n + 1], pa0, pa1, pa2, pa3, vb[2], vb[3]);
                }
            }
        }
    }
    // ---- normalise and store ----
#pragma unroll
    for (int off = 1; off < 4; off <<= 1) {
        l0 += __shfl_xor_sync(0xffffffffu, l0, off);
        l1 += __shfl_xor_sync(0xffffffffu, l1, off);
    }
    const float inv0 = l0 > 0.0f ? 1.0f / l0 : 0.0f, inv1 = l1 > 0.0f ? 1.0f / l1 : 0.0f;
    const int r0 = q0 + g, r1 = q0 + g + 8;
    unsigned* o0 = reinterpret_cast<unsigned*>(o + ((long long)b * lq + r0) * rs + (long long)hh * D);
    unsigned* o1 = reinterpret_cast<unsigned*>(o + ((long long)b * lq + r1) * rs + (long long)hh * D);
#pragma unroll
    for (int n = 0; n < D / 8; ++n) {
        if (r0 < lq) o0[n * 4 + t] = pack_bf16(acc[n][0] * inv0, acc[n][1] * inv0);
        if (r1 < lq) o1[n * 4 + t] = pack_bf16(acc[n][2] * inv1, acc[n][3] * inv1);
    }
}

#define ATTN_MMA_ARGS                                                                        \
    const bf16 *__restrict__ q, const bf16 *__restrict__ k, const bf16 *__restrict__ v,     \
        bf16 *__restrict__ o, int lq, int lk, int h, float scale_log2,                     \
        const unsigned *__restrict__ row_ptr, const unsigned *__restrict__ col_idx, int block, \
        int q_blocks, int bias_from, float bias_log2, int bias_to

extern "C" __global__ void __launch_bounds__(NWARPS * 32) attn_mma_d64(ATTN_MMA_ARGS) {
    attn_mma<64>(q, k, v, o, lq, lk, h, scale_log2, row_ptr, col_idx, block, q_blocks, bias_from,
                 bias_log2, bias_to);
}

extern "C" __global__ void __launch_bounds__(NWARPS * 32) attn_mma_d128(ATTN_MMA_ARGS) {
    attn_mma<128>(q, k, v, o, lq, lk, h, scale_log2, row_ptr, col_idx, block, q_blocks,
                  bias_from, bias_log2, bias_to);
}

// ---------------------------------------------------------------------------------------------
// Pipelined variant: 8 warps own 128 query rows, K/V tiles arrive by cp.async into two shared
// stages (the next tile loads while this one is computed). Needs the plan block to be a
// multiple of 128 and dynamic shared memory of 2 * 2 * 64 * (D + 8) * 2 bytes.

#define BM2 128
#define NWARPS2 8

__device__ __forceinline__ void cp_async16(unsigned dst, const void* src, int src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
                 "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// Walks the (key-block, tile) sequence of one CTA; identical in every thread.
struct TileWalk {
    const unsigned* col_idx;
    unsigned e, e1;
    int kt, k_end, block, lk;
    __device__ bool valid() const { return e < e1; }
    __device__ void start(const unsigned* ci, unsigned e0_, unsigned e1_, int block_, int lk_) {
        col_idx = ci;
        e = e0_;
        e1 = e1_;
        block = block_;
        lk = lk_;
        enter();
    }
    __device__ void enter() {
        if (e >= e1) return;
        if (col_idx) {
            kt = (int)col_idx[e] * block;
            k_end = min(kt + block, lk);
        } else {
            kt = 0;
            k_end = lk;
        }
    }
    __device__ void next() {
        kt += BN;
        if (kt >= k_end) {
            ++e;
            enter();
        }
    }
};

template <int D>
__device__ __forceinline__ void load_tile_async(bf16* sk, bf16* sv, const bf16* __restrict__ k,
                                                const bf16* __restrict__ v, long long base,
                                                long long rs, int kt, int k_end) {
    constexpr int LDS = D + 8;
    constexpr int CHUNKS = BN * D / 8;
#pragma unroll
    for (int c = threadIdx.x; c < CHUNKS; c += NWARPS2 * 32) {
        const int r = c / (D / 8), col = (c % (D / 8)) * 8;
        const bool in = kt + r < k_end;
        // Out-of-range rows read nothing (src-size 0 zero-fills) from a valid address.
        const long long off = base + (in ? (long long)(kt + r) * rs : 0) + col;
        cp_async16(smem_u32(sk + r * LDS + col), k + off, in ? 16 : 0);
        cp_async16(smem_u32(sv + r * LDS + col), v + off, in ? 16 : 0);
    }
}

template <int D>
__device__ __forceinline__ void attn_mma2(const bf16* __restrict__ q, const bf16* __restrict__ k,
                                          const bf16* __restrict__ v, bf16* __restrict__ o,
                                          int lq, int lk, int h, float scale_log2,
                                          const unsigned* __restrict__ row_ptr,
                                          const unsigned* __restrict__ col_idx, int block,
                                          int q_blocks, int bias_from, float bias_log2,
                                          int bias_to) {
    constexpr int LDS = D + 8;
    constexpr int STAGE = 2 * BN * LDS;  // K then V, elements
    extern __shared__ __align__(16) unsigned char dyn_smem[];
    bf16* smem = reinterpret_cast<bf16*>(dyn_smem);

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int g = lane >> 2, t = lane & 3;
    const int hh = blockIdx.y, b = blockIdx.z;
    const int q0 = blockIdx.x * BM2 + warp * 16;
    const long long rs = (long long)h * D;
    // Key bias of this thread's rows q0 + g and q0 + g + 8 (0 for rows at or past bias_to).
    const float badd0 = q0 + g < bias_to ? bias_log2 : 0.0f;
    const float badd1 = q0 + g + 8 < bias_to ? bias_log2 : 0.0f;
    const long long kv_base = (long long)b * lk * rs + (long long)hh * D;

    unsigned e0 = 0, e1 = 1;
    if (row_ptr) {
        const int qb = (blockIdx.x * BM2) / block;
        const unsigned r = ((unsigned)b * h + hh) * q_blocks + qb;
        e0 = row_ptr[r];
        e1 = row_ptr[r + 1];
    }
    TileWalk cur, nxt;
    cur.start(row_ptr ? col_idx : nullptr, e0, e1, block, lk);
    if (cur.valid()) {
        load_tile_async<D>(smem, smem + BN * LDS, k, v, kv_base, rs, cur.kt, cur.k_end);
    }
    cp_async_commit();

    unsigned qa[D / 16][4];
    {
        const int r0 = q0 + g, r1 = q0 + g + 8;
        const unsigned* p0 = reinterpret_cast<const unsigned*>(
            q + ((long long)b * lq + r0) * rs + (long long)hh * D);
        const unsigned* p1 = reinterpret_cast<const unsigned*>(
            q + ((long long)b * lq + r1) * rs + (long long)hh * D);
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk) {
            qa[kk][0] = r0 < lq ? p0[kk * 8 + t] : 0u;
            qa[kk][1] = r1 < lq ? p1[kk * 8 + t] : 0u;
            qa[kk][2] = r0 < lq ? p0[kk * 8 + 4 + t] : 0u;
            qa[kk][3] = r1 < lq ? p1[kk * 8 + 4 + t] : 0u;
        }
    }
    float acc[D / 8][4];
#pragma unroll
    for (int n = 0; n < D / 8; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;

    int stage = 0;
    while (cur.valid()) {
        nxt = cur;
        nxt.next();
        if (nxt.valid()) {
            bf16* ns = smem + (stage ^ 1) * STAGE;
            load_tile_async<D>(ns, ns + BN * LDS, k, v, kv_base, rs, nxt.kt, nxt.k_end);
        }
        cp_async_commit();
        cp_async_wait<1>();  // the current tile has landed (the next may still be in flight)
        __syncthreads();
        const bf16* sk = smem + stage * STAGE;
        const bf16* sv = sk + BN * LDS;
        const int kt = cur.kt, k_end = cur.k_end;

        float s[BN / 8][4];
        // K fragments by ldmatrix: lane l addresses key row (j*8 + l%8), dims (l/8)*8 of a
        // 32-dim slab, giving the B operands of two consecutive 16-dim k-steps.
        const bf16* krow = sk + (lane & 7) * LDS + (lane >> 3) * 8;
#pragma unroll
        for (int j = 0; j < BN / 8; ++j) {
            s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
#pragma unroll
            for (int kk = 0; kk < D / 16; kk += 2) {
                unsigned kb[4];
                ldmatrix_x4(kb, smem_u32(krow + j * 8 * LDS + kk * 16));
                mma16816(s[j], qa[kk][0], qa[kk][1], qa[kk][2], qa[kk][3], kb[0], kb[1]);
                mma16816(s[j], qa[kk + 1][0], qa[kk + 1][1], qa[kk + 1][2], qa[kk + 1][3], kb[2],
                         kb[3]);
            }
        }
        float mx0 = -INFINITY, mx1 = -INFINITY;
        if (kt + BN <= k_end && (kt + BN <= bias_from || (int)blockIdx.x * BM2 >= bias_to)) {
            // Whole tile in range, and before the biased keys or all of the CTA's rows
            // unbiased: scale only (the common case).
#pragma unroll
            for (int j = 0; j < BN / 8; ++j) {
#pragma unroll
                for (int c = 0; c < 4; ++c) s[j][c] *= scale_log2;
                mx0 = fmaxf(mx0, fmaxf(s[j][0], s[j][1]));
                mx1 = fmaxf(mx1, fmaxf(s[j][2], s[j][3]));
            }
        } else {
#pragma unroll
            for (int j = 0; j < BN / 8; ++j) {
#pragma unroll
                for (int c = 0; c < 2; ++c) {
                    const int key = kt + j * 8 + 2 * t + c;
                    const bool biased = key >= bias_from;
                    const bool ok = key < k_end;
                    s[j][c] = ok ? s[j][c] * scale_log2 + (biased ? badd0 : 0.0f) : -INFINITY;
                    s[j][2 + c] =
                        ok ? s[j][2 + c] * scale_log2 + (biased ? badd1 : 0.0f) : -INFINITY;
                    mx0 = fmaxf(mx0, s[j][c]);
                    mx1 = fmaxf(mx1, s[j][2 + c]);
                }
            }
        }
#pragma unroll
        for (int off = 1; off < 4; off <<= 1) {
            mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, off));
            mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, off));
        }
        const float mn0 = fmaxf(m0, mx0), mn1 = fmaxf(m1, mx1);
        const float mu0 = mn0 == -INFINITY ? 0.0f : mn0, mu1 = mn1 == -INFINITY ? 0.0f : mn1;
        const float corr0 = exp2f(m0 - mu0), corr1 = exp2f(m1 - mu1);
        m0 = mn0;
        m1 = mn1;
        float rs0 = 0.0f, rs1 = 0.0f;
#pragma unroll
        for (int j = 0; j < BN / 8; ++j) {
            s[j][0] = exp2f(s[j][0] - mu0);
            s[j][1] = exp2f(s[j][1] - mu0);
            s[j][2] = exp2f(s[j][2] - mu1);
            s[j][3] = exp2f(s[j][3] - mu1);
            rs0 += s[j][0] + s[j][1];
            rs1 += s[j][2] + s[j][3];
        }
        l0 = l0 * corr0 + rs0;
        l1 = l1 * corr1 + rs1;
#pragma unroll
        for (int n = 0; n < D / 8; ++n) {
            acc[n][0] *= corr0;
            acc[n][1] *= corr0;
            acc[n][2] *= corr1;
            acc[n][3] *= corr1;
        }
#pragma unroll
        for (int kk = 0; kk < BN / 16; ++kk) {
            const unsigned pa0 = pack_bf16(s[2 * kk][0], s[2 * kk][1]);
            const unsigned pa1 = pack_bf16(s[2 * kk][2], s[2 * kk][3]);
            const unsigned pa2 = pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]);
            const unsigned pa3 = pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3]);
            const int mi = lane >> 3, r = lane & 7;
            const bf16* vrow = sv + (kk * 16 + r + (mi & 1) * 8) * LDS + (mi >> 1) * 8;
#pragma unroll
            for (int n = 0; n < D / 16; ++n) {
                unsigned vb[4];
                ldmatrix_x4_trans(vb, smem_u32(vrow + n * 16));
                mma16816(acc[2 * n], pa0, pa1, pa2, pa3, vb[0], vb[1]);
                mma16816(acc[2 * n + 1], pa0, pa1, pa2, pa3, vb[2], vb[3]);
            }
        }
        __syncthreads();  // everyone is done with this stage before it is refilled
        cur = nxt;
        stage ^= 1;
    }
    cp_async_wait<0>();

#pragma unroll
    for (int off = 1; off < 4; off <<= 1) {
        l0 += __shfl_xor_sync(0xffffffffu, l0, off);
        l1 += __shfl_xor_sync(0xffffffffu, l1, off);
    }
    const float inv0 = l0 > 0.0f ? 1.0f / l0 : 0.0f, inv1 = l1 > 0.0f ? 1.0f / l1 : 0.0f;
    const int r0 = q0 + g, r1 = q0 + g + 8;
    unsigned* o0 =
        reinterpret_cast<unsigned*>(o + ((long long)b * lq + r0) * rs + (long long)hh * D);
    unsigned* o1 =
        reinterpret_cast<unsigned*>(o + ((long long)b * lq + r1) * rs + (long long)hh * D);
#pragma unroll
    for (int n = 0; n < D / 8; ++n) {
        if (r0 < lq) o0[n * 4 + t] = pack_bf16(acc[n][0] * inv0, acc[n][1] * inv0);
        if (r1 < lq) o1[n * 4 + t] = pack_bf16(acc[n][2] * inv1, acc[n][3] * inv1);
    }
}

extern "C" __global__ void __launch_bounds__(NWARPS2 * 32) attn_mma2_d64(ATTN_MMA_ARGS) {
    attn_mma2<64>(q, k, v, o, lq, lk, h, scale_log2, row_ptr, col_idx, block, q_blocks,
                  bias_from, bias_log2, bias_to);
}

extern "C" __global__ void __launch_bounds__(NWARPS2 * 32) attn_mma2_d128(ATTN_MMA_ARGS) {
    attn_mma2<128>(q, k, v, o, lq, lk, h, scale_log2, row_ptr, col_idx, block, q_blocks,
                   bias_from, bias_log2, bias_to);
}
