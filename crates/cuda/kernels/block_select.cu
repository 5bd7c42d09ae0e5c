// Jenga block selection on the device (crate `jenga-carve`, importance.rs + jenga.rs, is the
// reference). For every (batch·head, query block) row `qb`:
//   qb < nv: scores = q̂_qb · k̂_jᵀ · scale over the first nv key blocks, probs = softmax;
//            keep the smallest set of most probable blocks whose mass exceeds p, at least
//            top_k of them (ties at the cut go to the lower block index);
//   every row: ∪ the fixed row (adjacency ∪ condition ∪ first-frame), as a bitmask.
// Three kernels: `select_rows` (bitmask row + count), `scan_counts` (exclusive scan → CSR
// row_ptr and the total), `expand_rows` (bitmask → ascending col_idx).
//
// The p / top-k cut is found exactly as the CPU does (no sort): binary search on the bit
// pattern of the probabilities (non-negative floats order like their bits) for the largest
// threshold whose "≥ τ" mass exceeds p, then how many of the values equal to τ are needed.
// Only summation order differs from the CPU (warp tree vs 8 lanes), so a row whose cumulative
// mass lands within float rounding of p may keep one block more or less.

#define SEL_ROWS 8  // query rows per CTA, one warp each (blockDim = 32 * SEL_ROWS)

__device__ __forceinline__ bool finite_f(float x) {
    return (__float_as_uint(x) & 0x7f800000u) != 0x7f800000u;
}

// Count and mass of the row's probabilities whose bits are >= t (every lane gets both).
__device__ __forceinline__ void count_mass_ge(const float* pr, int n, unsigned t, int lane,
                                              int& count, float& mass) {
    int c = 0;
    float m = 0.0f;
    for (int j = lane; j < n; j += 32) {
        float x = pr[j];
        if (__float_as_uint(x) >= t) {
            c += 1;
            m += x;
        }
    }
    for (int o = 16; o > 0; o >>= 1) {
        c += __shfl_xor_sync(0xffffffffu, c, o);
        m += __shfl_xor_sync(0xffffffffu, m, o);
    }
    count = c;
    mass = m;
}

__device__ __forceinline__ int count_ge(const float* pr, int n, unsigned t, int lane) {
    int c = 0;
    for (int j = lane; j < n; j += 32) c += __float_as_uint(pr[j]) >= t;
    for (int o = 16; o > 0; o >>= 1) c += __shfl_xor_sync(0xffffffffu, c, o);
    return c;
}

// Block means of q and k in one launch (blockIdx.y: 0 = q, 1 = k): x [B, L, H, D] bf16 →
// out [B, H, nb, D] bf16, the partial last block divided by `block` (zero padding counted).
// Same arithmetic as `block_mean_pool_bf16` (f32 sum in token order, / block, round to bf16),
// so the results are bit-identical, but each thread reads 8 channels with 16-byte loads.
// Needs D % 8 == 0 and 16-byte aligned x. n8 = B * nb * H * (D / 8).
extern "C" __global__ void pool_qk(const bf16* __restrict__ q, const bf16* __restrict__ k,
                                   bf16* __restrict__ qo, bf16* __restrict__ ko, long long n8,
                                   int l, int h, int d, int nb, int block) {
    const bf16* x = blockIdx.y == 0 ? q : k;
    bf16* out = blockIdx.y == 0 ? qo : ko;
    const int d8 = d / 8;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n8;
         i += (long long)gridDim.x * blockDim.x) {
        const int c = (int)(i % d8);
        const int hh = (int)((i / d8) % h);
        const int kb = (int)((i / d8 / h) % nb);
        const long long b = i / d8 / h / nb;
        const int t0 = kb * block, t1 = min(t0 + block, l);
        float s[8];
#pragma unroll
        for (int e = 0; e < 8; ++e) s[e] = 0.0f;
        const bf16* src = x + ((b * l + t0) * h + hh) * d + c * 8;
        const long long stride = (long long)h * d;
#pragma unroll 4
        for (int t = t0; t < t1; ++t, src += stride) {
            float v[8];
            load8(src, v);
#pragma unroll
            for (int e = 0; e < 8; ++e) s[e] += v[e];
        }
#pragma unroll
        for (int e = 0; e < 8; ++e) s[e] /= (float)block;
        store8(out + ((b * h + hh) * nb + kb) * (long long)d + c * 8, s);
    }
}

// grid (ceil(nb / SEL_ROWS), BH), block 32 * SEL_ROWS, dynamic smem
// SEL_ROWS * (d + nv) floats. qhat/khat bf16 [BH, nb, d]; fixed [nb, words]; bits
// [BH * nb, words]; counts [BH * nb]. vec8: d % 8 == 0 and 16-byte aligned q̂/k̂.
extern "C" __global__ void select_rows(const bf16* __restrict__ qhat,
                                       const bf16* __restrict__ khat,
                                       const unsigned* __restrict__ fixed,
                                       unsigned* __restrict__ bits, unsigned* __restrict__ counts,
                                       int nb, int nv, int d, int words, float scale, float p,
                                       int top_k, int vec8) {
    extern __shared__ float sm[];
    float* qs = sm;                   // [SEL_ROWS][d]
    float* sc = sm + SEL_ROWS * d;    // [SEL_ROWS][nv]
    const int bh = blockIdx.y;
    const int q0 = blockIdx.x * SEL_ROWS;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const bf16* qb_ptr = qhat + (size_t)bh * nb * d;
    const bf16* kb_ptr = khat + (size_t)bh * nb * d;
    // Scored query rows of this CTA: q0 .. q0 + nr (rows >= nv are condition rows, unscored).
    const int nr = max(0, min(SEL_ROWS, nv - q0));

    if (nr > 0) {
        for (int i = tid; i < SEL_ROWS * d; i += blockDim.x) {
            int r = i / d;
            qs[i] = r < nr ? bf2f(qb_ptr[(size_t)(q0 + r) * d + (i - r * d)]) : 0.0f;
        }
        __syncthreads();
        for (int j = tid; j < nv; j += blockDim.x) {
            float acc[SEL_ROWS];
#pragma unroll
            for (int r = 0; r < SEL_ROWS; ++r) acc[r] = 0.0f;
            const bf16* kr = kb_ptr + (size_t)j * d;
            if (vec8) {
                for (int c = 0; c < d; c += 8) {
                    float kv[8];
                    load8(kr + c, kv);
#pragma unroll
                    for (int r = 0; r < SEL_ROWS; ++r) {
                        const float* qr = qs + r * d + c;
#pragma unroll
                        for (int e = 0; e < 8; ++e) acc[r] = fmaf(qr[e], kv[e], acc[r]);
                    }
                }
            } else {
                for (int c = 0; c < d; ++c) {
                    float kv = bf2f(kr[c]);
#pragma unroll
                    for (int r = 0; r < SEL_ROWS; ++r) acc[r] = fmaf(qs[r * d + c], kv, acc[r]);
                }
            }
#pragma unroll
            for (int r = 0; r < SEL_ROWS; ++r)
                if (r < nr) sc[r * nv + j] = acc[r] * scale;
        }
        __syncthreads();
    }

    const int qb = q0 + warp;
    if (qb >= nb) return;
    const size_t row = (size_t)bh * nb + qb;
    const unsigned* fx = fixed + (size_t)qb * words;
    unsigned* out = bits + row * words;

    // Selection: keep[j] for j < nv is "bits > cut, or == cut and among the first take_ties".
    // all = keep every scored block (non-finite row, or need == nv).
    bool all = false, none = true;
    unsigned cut = 0xffffffffu;
    int take_ties = 0;
    if (warp < nr) {
        none = false;
        float* pr = sc + warp * nv;
        const int n = nv;
        float mx = -INFINITY;
        for (int j = lane; j < n; j += 32) mx = fmaxf(mx, pr[j]);  // fmaxf skips NaN
        mx = warp_max(mx);
        if (!finite_f(mx)) {
            all = true;
        } else {
            float s = 0.0f;
            for (int j = lane; j < n; j += 32) {
                float e = expf(pr[j] - mx);
                pr[j] = e;
                s += e;
            }
            s = warp_sum(s);
            if (!finite_f(s) || s <= 0.0f) {
                all = true;  // NaN in the row
            } else {
                const float inv = 1.0f / s;
                float tot = 0.0f;
                unsigned top = 0;
                for (int j = lane; j < n; j += 32) {
                    float x = pr[j] * inv;
                    pr[j] = x;
                    tot += x;
                    top = max(top, __float_as_uint(x));
                }
                __syncwarp();
                tot = warp_sum(tot);
                for (int o = 16; o > 0; o >>= 1)
                    top = max(top, __shfl_xor_sync(0xffffffffu, top, o));
                int need_p;
                bool have_cut_p = false;
                unsigned cut_p = 0;
                int ties_p = 0;
                if (tot <= p) {
                    need_p = n;
                } else {
                    // Largest bits t with mass(>= t) > p.
                    unsigned lo = 0, hi = top + 1;
                    while (hi - lo > 1) {
                        unsigned mid = lo + (hi - lo) / 2;
                        int c;
                        float m;
                        count_mass_ge(pr, n, mid, lane, c, m);
                        if (m > p) lo = mid; else hi = mid;
                    }
                    float tau = __uint_as_float(lo);
                    int above, ge;
                    float mass_above, unused;
                    count_mass_ge(pr, n, lo + 1, lane, above, mass_above);
                    count_mass_ge(pr, n, lo, lane, ge, unused);
                    int ties = ge - above;
                    int j;
                    if (tau > 0.0f) {
                        float jf = fmaxf(floorf((p - mass_above) / tau), 0.0f);
                        j = jf >= (float)ties ? ties : min((int)jf + 1, ties);
                    } else {
                        j = ties;
                    }
                    j = max(j, 1);
                    need_p = above + j;
                    have_cut_p = true;
                    cut_p = lo;
                    ties_p = j;
                }
                int need = min(max(need_p, top_k), n);
                if (need == n) {
                    all = true;
                } else if (have_cut_p && need == need_p) {
                    cut = cut_p;
                    take_ties = ties_p;
                } else {
                    // The need-th largest value: largest t with count(>= t) >= need.
                    unsigned lo = 0, hi = top + 1;
                    while (hi - lo > 1) {
                        unsigned mid = lo + (hi - lo) / 2;
                        if (count_ge(pr, n, mid, lane) >= need) lo = mid; else hi = mid;
                    }
                    cut = lo;
                    take_ties = need - count_ge(pr, n, lo + 1, lane);
                }
            }
        }
    }

    // Words of the row: importance bits (j < nv) ∪ the fixed row.
    const float* pr = sc + warp * nv;
    int taken = 0;
    unsigned total = 0;
    for (int w = 0; w < words; ++w) {
        const int j = w * 32 + lane;
        // none / all are uniform over the warp; every lane reaches the ballots.
        const bool in = !none && j < nv;
        const unsigned b = in && !all ? __float_as_uint(pr[j]) : 0u;
        bool keep = in && (all || b > cut);
        const bool tie = in && !all && b == cut;
        const unsigned tb = __ballot_sync(0xffffffffu, tie);
        const int rank = __popc(tb & ((1u << lane) - 1u));
        if (tie && taken + rank < take_ties) keep = true;
        taken += __popc(tb);
        unsigned word = __ballot_sync(0xffffffffu, keep) | fx[w];
        if (lane == 0) out[w] = word;
        total += __popc(word);
    }
    if (lane == 0) counts[row] = total;
}

// One CTA of 1024 threads: row_ptr[i] = sum(counts[..i]) for i in 0..=rows, *nnz = total.
extern "C" __global__ void scan_counts(const unsigned* __restrict__ counts,
                                       unsigned* __restrict__ row_ptr, unsigned* __restrict__ nnz,
                                       int rows) {
    __shared__ unsigned part[32];
    __shared__ unsigned carry_s;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    if (tid == 0) carry_s = 0;
    __syncthreads();
    for (int base = 0; base < rows; base += blockDim.x) {
        const int i = base + tid;
        unsigned v = i < rows ? counts[i] : 0u;
        unsigned x = v;  // inclusive warp scan
        for (int o = 1; o < 32; o <<= 1) {
            unsigned y = __shfl_up_sync(0xffffffffu, x, o);
            if (lane >= o) x += y;
        }
        if (lane == 31) part[warp] = x;
        __syncthreads();
        if (warp == 0) {
            unsigned s = lane < (int)(blockDim.x >> 5) ? part[lane] : 0u;
            for (int o = 1; o < 32; o <<= 1) {
                unsigned y = __shfl_up_sync(0xffffffffu, s, o);
                if (lane >= o) s += y;
            }
            part[lane] = s;  // inclusive over warps
        }
        __syncthreads();
        const unsigned carry = carry_s;
        const unsigned excl = carry + (warp > 0 ? part[warp - 1] : 0u) + x - v;
        if (i < rows) row_ptr[i] = excl;
        __syncthreads();
        if (tid == blockDim.x - 1) carry_s = carry + part[(blockDim.x >> 5) - 1];
        __syncthreads();
    }
    if (tid == 0) {
        row_ptr[rows] = carry_s;
        *nnz = carry_s;
    }
}

// One warp per row: the set bits of the row's words, ascending, at col_idx[row_ptr[row]..].
extern "C" __global__ void expand_rows(const unsigned* __restrict__ bits,
                                       const unsigned* __restrict__ row_ptr,
                                       unsigned* __restrict__ col_idx, int rows, int words) {
    const int lane = threadIdx.x & 31;
    const int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (row >= rows) return;
    const unsigned* b = bits + (size_t)row * words;
    unsigned at = row_ptr[row];
    for (int w0 = 0; w0 < words; w0 += 32) {
        const int w = w0 + lane;
        unsigned word = w < words ? b[w] : 0u;
        unsigned c = __popc(word);
        unsigned x = c;
        for (int o = 1; o < 32; o <<= 1) {
            unsigned y = __shfl_up_sync(0xffffffffu, x, o);
            if (lane >= o) x += y;
        }
        unsigned pos = at + x - c;
        while (word) {
            int bit = __ffs(word) - 1;
            col_idx[pos++] = (unsigned)(w * 32 + bit);
            word &= word - 1;
        }
        at += __shfl_sync(0xffffffffu, x, 31);
    }
}
