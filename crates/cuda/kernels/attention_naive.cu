// Reference attention: one warp per query row, keys streamed through shared memory in tiles of
// 32 (lane j scores key j), online softmax in the exp2 domain, f32 everywhere. Any Dh <= 128.
// Dense (row_ptr == null) or block-sparse over a CSR plan: every warp of a CTA sits in the same
// query block, so the CTA walks one key-block list and the tile loads stay block-uniform.
// Key bias: query rows < bias_to get bias_log2 (log2 domain) on keys >= bias_from.

#define TK 32
#define WARPS 8
#define MAXC 4  // Dh / 32 accumulators per lane

extern "C" __global__ void __launch_bounds__(WARPS * 32)
attn_naive_bf16(const bf16* __restrict__ q, const bf16* __restrict__ k,
                const bf16* __restrict__ v, bf16* __restrict__ o, int lq, int lk, int h, int dh,
                float scale_log2, const unsigned* __restrict__ row_ptr,
                const unsigned* __restrict__ col_idx, int block, int q_blocks, int chunks,
                int bias_from, float bias_log2, int bias_to) {
    extern __shared__ float smem[];
    const int ld = dh + 1;  // padding: lane j reads row j, stride ld avoids bank conflicts
    float* sk = smem;
    float* sv = sk + TK * ld;
    float* sq = sv + TK * ld;

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int hh = blockIdx.y, b = blockIdx.z;
    int qi, qb = 0;
    bool valid;
    if (row_ptr) {
        qb = blockIdx.x / chunks;
        int within = (blockIdx.x % chunks) * WARPS + warp;
        qi = qb * block + within;
        valid = within < block && qi < lq;
    } else {
        qi = blockIdx.x * WARPS + warp;
        valid = qi < lq;
    }

    const long long row_stride = (long long)h * dh;
    if (valid) {
        const bf16* qr = q + ((long long)b * lq + qi) * row_stride + (long long)hh * dh;
        for (int d = lane; d < dh; d += 32) sq[warp * dh + d] = bf2f(qr[d]) * scale_log2;
    }
    __syncwarp();

    float m = -INFINITY, l = 0.0f;
    float acc[MAXC];
#pragma unroll
    for (int c = 0; c < MAXC; ++c) acc[c] = 0.0f;

    unsigned e0 = 0, e1 = 1;
    if (row_ptr) {
        unsigned r = ((unsigned)b * h + hh) * q_blocks + qb;
        e0 = row_ptr[r];
        e1 = row_ptr[r + 1];
    }
    for (unsigned e = e0; e < e1; ++e) {
        int k0 = 0, k1 = lk;
        if (row_ptr) {
            k0 = (int)col_idx[e] * block;
            k1 = min(k0 + block, lk);
        }
        for (int t0 = k0; t0 < k1; t0 += TK) {
            const int nt = min(TK, k1 - t0);
            __syncthreads();
            for (int i = threadIdx.x; i < TK * dh; i += blockDim.x) {
                int j = i / dh, d = i % dh;
                float kv = 0.0f, vv = 0.0f;
                if (j < nt) {
                    long long off = ((long long)b * lk + t0 + j) * row_stride + (long long)hh * dh + d;
                    kv = bf2f(k[off]);
                    vv = bf2f(v[off]);
                }
                sk[j * ld + d] = kv;
                sv[j * ld + d] = vv;
            }
            __syncthreads();
            if (!valid) continue;
            float s = -INFINITY;
            if (lane < nt) {
                s = 0.0f;
                const float* kr = sk + lane * ld;
                const float* qr = sq + warp * dh;
                for (int d = 0; d < dh; ++d) s += qr[d] * kr[d];
                if (t0 + lane >= bias_from && qi < bias_to) s += bias_log2;
            }
            float m_new = fmaxf(m, warp_max(s));
            float corr = m == -INFINITY ? 0.0f : exp2f(m - m_new);
            float p = lane < nt ? exp2f(s - m_new) : 0.0f;
            l = l * corr + warp_sum(p);
            m = m_new;
#pragma unroll
            for (int c = 0; c < MAXC; ++c) acc[c] *= corr;
            for (int j = 0; j < nt; ++j) {
                float pj = __shfl_sync(0xffffffffu, p, j);
                const float* vr = sv + j * ld;
#pragma unroll
                for (int c = 0; c < MAXC; ++c) {
                    int d = lane + 32 * c;
                    if (d < dh) acc[c] += pj * vr[d];
                }
            }
        }
    }
    if (valid) {
        bf16* orow = o + ((long long)b * lq + qi) * row_stride + (long long)hh * dh;
        float inv = l > 0.0f ? 1.0f / l : 0.0f;  // a query with no kept key outputs zeros
#pragma unroll
        for (int c = 0; c < MAXC; ++c) {
            int d = lane + 32 * c;
            if (d < dh) orow[d] = f2bf(acc[c] * inv);
        }
    }
}
