// The peer policies' plan building on the device (crate `jenga-carve`, svg.rs and draft.rs,
// is the reference; jenga_tensor::SvgSelect / DraftSelect say what is computed).
//
// Sparse VideoGen (three kernels):
//   svg_partial  scores of the sampled query rows against one chunk of keys (CUDA cores, f32),
//                per row the chunk's online-softmax state (max, Σe, Σe under mask 0, under 1);
//   svg_choose   per (batch·head): merge the chunks, Σ over rows of kept mass / total mass for
//                both masks, choice = mask 1 keeps more (ties → 0), count of choice-1 heads;
//   svg_assemble the plan: per head the chosen candidate's CSR rows, copied into one CSR.
// DraftAttention (five kernels, then the shared scan/expand):
//   draft_pool   region means of q and k (f32, token order, times 1/count, as the host);
//   draft_map    per draft row: scores q̂·k̂ᵀ/√d, softmax (f32);
//   draft_thresh per head: the exclude-th smallest entry of the map (radix select on the bits:
//                probabilities are non-negative floats, which order like their bits);
//   draft_keep   per draft row: entries ≥ threshold as a bitmask, top-up of short rows;
//   draft_blocks per plan block row: regions of the block → blocks of the kept regions.
// Block bitmask rows → CSR: the block-selection module's scan_counts / expand_rows.

#define SVG_RG 32     // sampled rows per CTA pass (per-thread accumulators)
#define SVG_TILE 256  // keys per tile = threads per CTA of svg_partial
#define PEER_MAX_WORDS 128  // bitmask words per row kept in shared memory (4096 regions/blocks)

__device__ __forceinline__ unsigned long long splitmix_at(unsigned long long seed, int i) {
    unsigned long long z = seed + 0x9e3779b97f4a7c15ULL * (unsigned long long)(i + 1);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

// Index of token t in candidate c's layout (0: frame-major as is; 1: position-major).
__device__ __forceinline__ int svg_index(int t, int c, int frames, int fs) {
    return c == 0 ? t : (t % fs) * frames + t / fs;
}

__device__ __forceinline__ bool svg_allowed(int qi, int ki, int c, int frames, int fs, int video,
                                            int rb, int band) {
    if (qi >= video || ki >= video) return true;
    const int a = svg_index(qi, c, frames, fs), b = svg_index(ki, c, frames, fs);
    if (b < fs) return true;
    const int d = a / rb - b / rb;
    return (d < 0 ? -d : d) < band;
}

// grid (chunks, B·H, ceil(R / SVG_RG)), block SVG_TILE; dynamic smem SVG_RG·(d + SVG_TILE)
// floats; d % 8 == 0 and k 16-byte aligned (8-channel loads). part[((bh·R + r)·chunks + chunk)] = (max, Σe, Σe mask 0, Σe mask 1), e = exp(s − max).
extern "C" __global__ void svg_partial(const bf16* __restrict__ q, const bf16* __restrict__ k,
                                       float4* __restrict__ part, int l, int h, int d, int rows,
                                       int row_hi, unsigned long long seed, int frames, int fs,
                                       int video, int rb, int band, int chunk_len, float scale) {
    extern __shared__ float smem[];
    float* qs = smem;                // [SVG_RG][d], pre-scaled
    float* sc = smem + SVG_RG * d;   // [SVG_RG][SVG_TILE]
    __shared__ int rowtok[SVG_RG];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int bh = blockIdx.y, b = bh / h, hh = bh % h;
    const int r0 = blockIdx.z * SVG_RG;
    const int nr = min(SVG_RG, rows - r0);
    const int chunks = gridDim.x;
    if (tid < SVG_RG)
        rowtok[tid] = tid < nr ? (int)(splitmix_at(seed, r0 + tid) % (unsigned long long)row_hi) : 0;
    __syncthreads();
    for (int i = tid; i < SVG_RG * d; i += blockDim.x) {
        const int r = i / d, c = i % d;
        qs[i] = r < nr ? bf2f(q[(((long long)b * l + rowtok[r]) * h + hh) * d + c]) * scale : 0.0f;
    }
    __syncthreads();
    // warp w keeps the state of rows 4w .. 4w + 3 (uniform over its lanes)
    float m[4], z[4], k0[4], k1[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        m[i] = -INFINITY;
        z[i] = k0[i] = k1[i] = 0.0f;
    }
    const int kb = blockIdx.x * chunk_len, ke = min(kb + chunk_len, l);
    for (int t0 = kb; t0 < ke; t0 += SVG_TILE) {
        const int key = t0 + tid;
        float acc[SVG_RG];
#pragma unroll
        for (int r = 0; r < SVG_RG; ++r) acc[r] = 0.0f;
        if (key < ke) {
            const bf16* kp = k + (((long long)b * l + key) * h + hh) * d;
            for (int c0 = 0; c0 < d; c0 += 8) {
                float kv[8];
                load8(kp + c0, kv);
#pragma unroll
                for (int r = 0; r < SVG_RG; ++r) {
                    const float4 qa = *reinterpret_cast<const float4*>(qs + r * d + c0);
                    const float4 qb = *reinterpret_cast<const float4*>(qs + r * d + c0 + 4);
                    acc[r] = fmaf(qa.x, kv[0], acc[r]);
                    acc[r] = fmaf(qa.y, kv[1], acc[r]);
                    acc[r] = fmaf(qa.z, kv[2], acc[r]);
                    acc[r] = fmaf(qa.w, kv[3], acc[r]);
                    acc[r] = fmaf(qb.x, kv[4], acc[r]);
                    acc[r] = fmaf(qb.y, kv[5], acc[r]);
                    acc[r] = fmaf(qb.z, kv[6], acc[r]);
                    acc[r] = fmaf(qb.w, kv[7], acc[r]);
                }
            }
        }
#pragma unroll
        for (int r = 0; r < SVG_RG; ++r) sc[r * SVG_TILE + tid] = key < ke ? acc[r] : -INFINITY;
        __syncthreads();
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int r = warp * 4 + i;
            if (r >= nr) continue;
            const float* s = sc + r * SVG_TILE;
            float tmax = -INFINITY;
            for (int j = lane; j < SVG_TILE; j += 32) tmax = fmaxf(tmax, s[j]);
            tmax = warp_max(tmax);
            const float mn = fmaxf(m[i], tmax);
            if (mn == -INFINITY) continue;
            const float alpha = m[i] == -INFINITY ? 0.0f : __expf(m[i] - mn);
            float sz = 0.0f, s0 = 0.0f, s1 = 0.0f;
            const int qi = rowtok[r];
            for (int j = lane; j < SVG_TILE; j += 32) {
                const int kk = t0 + j;
                if (kk >= ke) continue;
                const float e = __expf(s[j] - mn);
                sz += e;
                if (svg_allowed(qi, kk, 0, frames, fs, video, rb, band)) s0 += e;
                if (svg_allowed(qi, kk, 1, frames, fs, video, rb, band)) s1 += e;
            }
            sz = warp_sum(sz);
            s0 = warp_sum(s0);
            s1 = warp_sum(s1);
            z[i] = z[i] * alpha + sz;
            k0[i] = k0[i] * alpha + s0;
            k1[i] = k1[i] * alpha + s1;
            m[i] = mn;
        }
        __syncthreads();
    }
    if (lane == 0) {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int r = warp * 4 + i;
            if (r < nr)
                part[((long long)bh * rows + r0 + r) * chunks + blockIdx.x] =
                    make_float4(m[i], z[i], k0[i], k1[i]);
        }
    }
}

// grid B·H, block 256. mass[bh·2 + c] = Σ_rows kept_c / total; choice[bh]; *count += choice.
extern "C" __global__ void svg_choose(const float4* __restrict__ part, float* __restrict__ mass,
                                      unsigned* __restrict__ choice, unsigned* __restrict__ count,
                                      int rows, int chunks) {
    const int bh = blockIdx.x;
    float a0 = 0.0f, a1 = 0.0f;
    for (int r = threadIdx.x; r < rows; r += blockDim.x) {
        const float4* p = part + ((long long)bh * rows + r) * chunks;
        float mx = -INFINITY;
        for (int c = 0; c < chunks; ++c) mx = fmaxf(mx, p[c].x);
        float zz = 0.0f, s0 = 0.0f, s1 = 0.0f;
        for (int c = 0; c < chunks; ++c) {
            const float4 v = p[c];
            if (v.x == -INFINITY) continue;
            const float f = __expf(v.x - mx);
            zz += v.y * f;
            s0 += v.z * f;
            s1 += v.w * f;
        }
        if (zz > 0.0f) {
            a0 += s0 / zz;
            a1 += s1 / zz;
        }
    }
    a0 = block_sum(a0);
    a1 = block_sum(a1);
    if (threadIdx.x == 0) {
        mass[bh * 2] = a0;
        mass[bh * 2 + 1] = a1;
        const unsigned c = a1 > a0 ? 1u : 0u;
        choice[bh] = c;
        if (c) atomicAdd(count, 1u);
    }
}

// One thread per plan row (bh, qb): the chosen candidate's row, at the head's offset.
extern "C" __global__ void svg_assemble(const unsigned* __restrict__ choice,
                                        const unsigned* __restrict__ rp0,
                                        const unsigned* __restrict__ col0,
                                        const unsigned* __restrict__ rp1,
                                        const unsigned* __restrict__ col1,
                                        unsigned* __restrict__ row_ptr,
                                        unsigned* __restrict__ col_idx, unsigned* __restrict__ nnz,
                                        int nb, int bhs) {
    const long long row = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    const long long rows = (long long)nb * bhs;
    if (row >= rows) return;
    const int bh = (int)(row / nb), qb = (int)(row % nb);
    const unsigned n0 = rp0[nb], n1 = rp1[nb];
    unsigned off = 0;
    for (int i = 0; i < bh; ++i) off += choice[i] ? n1 : n0;
    const bool c = choice[bh] != 0;
    const unsigned* rp = c ? rp1 : rp0;
    const unsigned* col = c ? col1 : col0;
    const unsigned s = rp[qb], e = rp[qb + 1];
    row_ptr[row] = off + s;
    for (unsigned j = s; j < e; ++j) col_idx[off + j] = col[j];
    if (row == rows - 1) {
        const unsigned total = off + (c ? n1 : n0);
        row_ptr[rows] = total;
        *nnz = total;
    }
}

// grid (S, B, ceil(H·D / 256)), block 256: region means of q and k → [B, H, S, D] f32.
extern "C" __global__ void draft_pool(const bf16* __restrict__ q, const bf16* __restrict__ k,
                                      const unsigned* __restrict__ region_start,
                                      float* __restrict__ qo, float* __restrict__ ko, int l, int h,
                                      int d, int s) {
    const int r = blockIdx.x, b = blockIdx.y;
    const int hd = blockIdx.z * blockDim.x + threadIdx.x;
    if (hd >= h * d) return;
    const int hh = hd / d, c = hd % d;
    const int t0 = (int)region_start[r], t1 = (int)region_start[r + 1];
    float sq = 0.0f, sk = 0.0f;
    for (int t = t0; t < t1; ++t) {
        const long long at = (((long long)b * l + t) * h + hh) * d + c;
        sq += bf2f(q[at]);
        sk += bf2f(k[at]);
    }
    const float inv = 1.0f / (float)max(t1 - t0, 1);
    const long long o = (((long long)b * h + hh) * s + r) * d + c;
    qo[o] = sq * inv;
    ko[o] = sk * inv;
}

// grid (ceil(S / 8), B·H), block 256 (one warp per draft row): map[bh][i][:] = softmax row.
extern "C" __global__ void draft_map(const float* __restrict__ qh, const float* __restrict__ kh,
                                     float* __restrict__ map, int s, int d, float scale) {
    const int lane = threadIdx.x & 31;
    const int i = blockIdx.x * 8 + (threadIdx.x >> 5);
    const int bh = blockIdx.y;
    if (i >= s) return;
    const float* qr = qh + ((long long)bh * s + i) * d;
    const float* kb = kh + (long long)bh * s * d;
    float* out = map + ((long long)bh * s + i) * s;
    float mx = -INFINITY;
    for (int j = 0; j < s; ++j) {
        float acc = 0.0f;
        for (int c = lane; c < d; c += 32) acc = fmaf(qr[c], kb[(long long)j * d + c], acc);
        acc = warp_sum(acc) * scale;
        mx = fmaxf(mx, acc);
        if (lane == 0) out[j] = acc;
    }
    __syncwarp();
    float z = 0.0f;
    for (int j = lane; j < s; j += 32) {
        const float e = expf(out[j] - mx);
        out[j] = e;
        z += e;
    }
    z = warp_sum(z);
    __syncwarp();
    const float iz = 1.0f / z;
    for (int j = lane; j < s; j += 32) out[j] = out[j] * iz;
}

// grid B·H, block 1024: thr[bh] = the exclude-th smallest entry of the head's map (bits), or
// 0 (keep all) when exclude is 0.
extern "C" __global__ void draft_thresh(const float* __restrict__ map, float* __restrict__ thr,
                                        long long n, long long exclude) {
    __shared__ unsigned hist[256];
    __shared__ unsigned prefix_s, mask_s;
    __shared__ long long rank_s;
    const float* x = map + blockIdx.x * n;
    if (exclude <= 0) {
        if (threadIdx.x == 0) thr[blockIdx.x] = 0.0f;
        return;
    }
    if (exclude >= n) {
        if (threadIdx.x == 0) thr[blockIdx.x] = INFINITY;
        return;
    }
    if (threadIdx.x == 0) {
        prefix_s = 0u;
        mask_s = 0u;
        rank_s = exclude - 1;
    }
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int i = threadIdx.x; i < 256; i += blockDim.x) hist[i] = 0u;
        __syncthreads();
        const unsigned prefix = prefix_s, mask = mask_s;
        for (long long i = threadIdx.x; i < n; i += blockDim.x) {
            const unsigned u = __float_as_uint(x[i]);
            if ((u & mask) == prefix) atomicAdd(&hist[(u >> shift) & 255u], 1u);
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            long long rank = rank_s, cum = 0;
            int bin = 0;
            for (; bin < 255; ++bin) {
                if (cum + hist[bin] > rank) break;
                cum += hist[bin];
            }
            rank_s = rank - cum;
            prefix_s = prefix | ((unsigned)bin << shift);
            mask_s = mask | (255u << shift);
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) thr[blockIdx.x] = __uint_as_float(prefix_s);
}

// grid (ceil(S / 8), B·H), block 256 (one warp per draft row): keep[bh][i][words] bitmask of
// entries ≥ thr; rows with fewer than min(min_per_row, S) kept entries also keep their
// min_per_row largest (ties → lower index), counted in *topped.
extern "C" __global__ void draft_keep(const float* __restrict__ map, const float* __restrict__ thr,
                                      unsigned* __restrict__ keep, unsigned* __restrict__ topped,
                                      int s, int words, int min_per_row) {
    __shared__ unsigned kw[8][PEER_MAX_WORDS];
    __shared__ unsigned picked[8][PEER_MAX_WORDS];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int i = blockIdx.x * 8 + warp;
    const int bh = blockIdx.y;
    if (i >= s) return;
    const float* row = map + ((long long)bh * s + i) * s;
    const float t = thr[bh];
    int have = 0;
    for (int w = lane; w < words; w += 32) {
        unsigned bits = 0u;
        for (int e = 0; e < 32; ++e) {
            const int j = w * 32 + e;
            if (j < s && row[j] >= t) bits |= 1u << e;
        }
        kw[warp][w] = bits;
        picked[warp][w] = 0u;
        have += __popc(bits);
    }
    for (int o = 16; o > 0; o >>= 1) have += __shfl_xor_sync(0xffffffffu, have, o);
    __syncwarp();
    if (min_per_row > 0 && have < min(min_per_row, s)) {
        if (lane == 0) atomicAdd(topped, 1u);
        for (int it = 0; it < min(min_per_row, s); ++it) {
            unsigned best = 0u;
            int bj = 0x7fffffff;
            for (int j = lane; j < s; j += 32) {
                if (picked[warp][j >> 5] & (1u << (j & 31))) continue;
                const unsigned u = __float_as_uint(row[j]);
                if (bj == 0x7fffffff || u > best) {
                    best = u;
                    bj = j;
                }
            }
            for (int o = 16; o > 0; o >>= 1) {
                const unsigned ob = __shfl_xor_sync(0xffffffffu, best, o);
                const int oj = __shfl_xor_sync(0xffffffffu, bj, o);
                if (oj != 0x7fffffff &&
                    (bj == 0x7fffffff || ob > best || (ob == best && oj < bj))) {
                    best = ob;
                    bj = oj;
                }
            }
            if (lane == 0 && bj != 0x7fffffff) {
                picked[warp][bj >> 5] |= 1u << (bj & 31);
                kw[warp][bj >> 5] |= 1u << (bj & 31);
            }
            __syncwarp();
        }
    }
    unsigned* out = keep + ((long long)bh * s + i) * words;
    for (int w = lane; w < words; w += 32) out[w] = kw[warp][w];
}

// grid (ceil(nb / 8), B·H), block 256 (one warp per plan row): block bitmask rows + counts.
// tables: block_regions as [nb][3] = (lo, hi, cond).
extern "C" __global__ void draft_blocks(const unsigned* __restrict__ keep,
                                        const unsigned* __restrict__ tables,
                                        unsigned* __restrict__ bits, unsigned* __restrict__ counts,
                                        int s, int words_s, int nb, int words_b) {
    __shared__ unsigned any[8][PEER_MAX_WORDS];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int i = blockIdx.x * 8 + warp;
    const int bh = blockIdx.y;
    if (i >= nb) return;
    const long long row = (long long)bh * nb + i;
    unsigned* out = bits + row * words_b;
    const unsigned lo = tables[i * 3], hi = tables[i * 3 + 1], cond = tables[i * 3 + 2];
    int cnt = 0;
    if (cond) {
        for (int w = lane; w < words_b; w += 32) {
            const int left = nb - w * 32;
            const unsigned v = left >= 32 ? 0xffffffffu : ((1u << left) - 1u);
            out[w] = v;
            cnt += __popc(v);
        }
    } else {
        for (int w = lane; w < words_s; w += 32) {
            unsigned v = 0u;
            for (unsigned r = lo; r < hi; ++r) v |= keep[((long long)bh * s + r) * words_s + w];
            any[warp][w] = v;
        }
        __syncwarp();
        for (int w = lane; w < words_b; w += 32) {
            unsigned v = 0u;
            for (int e = 0; e < 32; ++e) {
                const int j = w * 32 + e;
                if (j >= nb) break;
                bool kept = tables[j * 3 + 2] != 0;
                for (unsigned r = tables[j * 3]; !kept && r < tables[j * 3 + 1]; ++r)
                    kept = (any[warp][r >> 5] >> (r & 31)) & 1u;
                if (kept) v |= 1u << e;
            }
            out[w] = v;
            cnt += __popc(v);
        }
    }
    for (int o = 16; o > 0; o >>= 1) cnt += __shfl_xor_sync(0xffffffffu, cnt, o);
    if (lane == 0) counts[row] = (unsigned)cnt;
}

