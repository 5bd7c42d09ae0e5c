// Hopper (sm_90a) attention: wgmma tensor-core GEMMs, FA3-style, head dim 128, dense or
// block-sparse over a CSR plan whose block is a multiple of 128. Requires the sm_90a target.
//
// Persistent, warp-specialized: one CTA per SM (384 threads) loops over work items (128 query
// rows of one (batch, head)) handed out by an atomic counter (the first item is blockIdx.x).
// Warpgroup 0 is the producer: one thread issues TMA bulk tensor copies (tensor maps built on the
// host: 4-D dim/head/token/batch, box 64 x 1 x 128 x 1, 128-byte swizzle, zeros past the sequence
// end; L2 hints Q evict-first, K/V evict-last) and setmaxnreg drops the group to 24 registers. It
// claims an item, publishes its index in shared memory, loads its Q tile (q_full) and streams the
// item's K/V tiles through a ring: sparse launches 128 keys x 3 stages (per stage a `full`
// mbarrier with expect_tx and an `empty` one that all 256 consumer threads arrive on), dense
// launches 176 keys x 2 stages (FA3's hdim-128 choice) with separate K and V barriers, V one tile
// behind K, each freed right after its GEMM (one shared barrier starved the 2-stage ring: 30 %
// slower). Warpgroups 1 and 2 are
// the consumers (64 query rows each, 240 registers): per tile j, S_j = Q K_j^T (wgmma, both
// operands in shared memory, K-major) and O += P_{j-1} V_{j-1} (wgmma, P from registers, V
// N-major) are issued back to back and the online softmax of S_j (exp2 domain, f32) runs while
// the P V product is in flight; the two warpgroups take turns issuing (named barriers 1 and 2,
// FA3 "ping-pong"), so one's softmax overlaps the other's GEMMs. Lazy rescale (FA4): a row's
// running max is raised only when a tile's max exceeds it by more than TAU (log2 domain, so
// unnormalised P <= 2^TAU; O, l and the final O / l use the same stale max), and O is rescaled
// only when a row of the warp raised it. Sparse launches use TAU = 8 (they rescaled on every
// tile before; 0.2-3 % faster at the H100's power cap); dense launches TAU = 0, the exact max
// (O left alone when no row max of the warp moved; the previous dense code, same SASS): a host
// replay on Wan-1.3B q/k and on random data alike rescales ~25 % of (warp, 176-key tile) steps
// with 0 and ~0.5 % with 8, yet 8 measured ~1 % slower on dense launches. Q is freed (q_empty)
// after the item's last S, so the next item's Q and first tiles load during the last P V and
// the epilogue.
// Sparse: the item walks only the kept key blocks of its query block; items run heaviest rows
// first within each head (order built on the host, or by hb_device_work_order for plans built on
// the device). Dense: the last round's query tiles are cut into key
// ranges (split-key tail, merged by the CTA that finishes a tile's last range). Key bias: keys
// >= bias_from of query rows < bias_to get bias_log2 added (log2 domain). Partial tiles are
// masked; rows past lq are computed on zeros and not stored.

#define HB_M 128          // query rows per work item
#define HB_D 128          // head dim
#define HB_PANEL 16384    // bytes: 128 rows x 64 bf16 (one 128-byte swizzle column panel of Q)
#define HB_TILE 32768     // bytes: the Q tile, 128 rows x 128 bf16 = 2 panels
// Key tiles of BN keys (128, or 176 for dense launches) in an ST-stage ring (3 or 2): a K or V
// tile is BN rows x 128 bf16 = 2 panels of BN x 128 bytes.
#define HB_KVPANEL(BN) ((BN) * 128)
#define HB_KVTILE(BN) ((BN) * 256)
// Dynamic shared memory: 1024 (alignment slack) + Q + ST x (K, V) + 2 ST + 2 mbarriers + 2 words.

__device__ __forceinline__ unsigned hb_smem_u32(const void* p) {
    unsigned r;
    asm("{ .reg .u64 a; cvta.to.shared.u64 a, %1; cvt.u32.u64 %0, a; }" : "=r"(r) : "l"(p));
    return r;
}

__device__ __forceinline__ unsigned hb_pack(float lo, float hi) {
    unsigned r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

__device__ __forceinline__ float hb_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

__device__ __forceinline__ void wg_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wg_commit() {
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
template <int N>
__device__ __forceinline__ void wg_wait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Pin registers in program order around the asynchronous GEMMs (the compiler must neither read
// accumulators before the wait nor move writes after the issue).
__device__ __forceinline__ void hb_pin(float& x) { asm volatile("" : "+f"(x)::"memory"); }
__device__ __forceinline__ void hb_pin_u(unsigned& x) { asm volatile("" : "+r"(x)::"memory"); }

// Shared-memory matrix descriptor, 128-byte swizzle: start address, leading and stride byte
// offsets (all >> 4), layout type 1 in bits 62-63.
__device__ __forceinline__ unsigned long long hb_desc(unsigned addr, unsigned lbo, unsigned sbo) {
    return (unsigned long long)((addr & 0x3FFFF) >> 4) |
           ((unsigned long long)((lbo >> 4) & 0x3FFF) << 16) |
           ((unsigned long long)((sbo >> 4) & 0x3FFF) << 32) | (1ull << 62);
}

// D = A * B (D overwritten) with A from shared memory: first k-step of S = Q K^T.
__device__ __forceinline__ void wgmma_ss0(float* d, unsigned long long da, unsigned long long db) {
    asm volatile(
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, 0, 1, 1, 0, 0;\n"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3]), "=f"(d[4]), "=f"(d[5]), "=f"(d[6]), "=f"(d[7]),
          "=f"(d[8]), "=f"(d[9]), "=f"(d[10]), "=f"(d[11]), "=f"(d[12]), "=f"(d[13]), "=f"(d[14]), "=f"(d[15]),
          "=f"(d[16]), "=f"(d[17]), "=f"(d[18]), "=f"(d[19]), "=f"(d[20]), "=f"(d[21]), "=f"(d[22]), "=f"(d[23]),
          "=f"(d[24]), "=f"(d[25]), "=f"(d[26]), "=f"(d[27]), "=f"(d[28]), "=f"(d[29]), "=f"(d[30]), "=f"(d[31]),
          "=f"(d[32]), "=f"(d[33]), "=f"(d[34]), "=f"(d[35]), "=f"(d[36]), "=f"(d[37]), "=f"(d[38]), "=f"(d[39]),
          "=f"(d[40]), "=f"(d[41]), "=f"(d[42]), "=f"(d[43]), "=f"(d[44]), "=f"(d[45]), "=f"(d[46]), "=f"(d[47]),
          "=f"(d[48]), "=f"(d[49]), "=f"(d[50]), "=f"(d[51]), "=f"(d[52]), "=f"(d[53]), "=f"(d[54]), "=f"(d[55]),
          "=f"(d[56]), "=f"(d[57]), "=f"(d[58]), "=f"(d[59]), "=f"(d[60]), "=f"(d[61]), "=f"(d[62]), "=f"(d[63])
        : "l"(da), "l"(db));
}

// D += A * B with A from shared memory: S = Q K^T, both operands K-major, 128B swizzle.
__device__ __forceinline__ void wgmma_ss(float* d, unsigned long long da, unsigned long long db) {
    asm volatile(
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, 1, 1, 1, 0, 0;\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
          "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
          "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
          "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
          "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
          "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
        : "l"(da), "l"(db));
}

__device__ __forceinline__ void wgmma_ss0_n176(float* d, unsigned long long da, unsigned long long db) {
    asm volatile(
        "wgmma.mma_async.sync.aligned.m64n176k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87}, %88, %89, 0, 1, 1, 0, 0;\n"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3]), "=f"(d[4]), "=f"(d[5]), "=f"(d[6]), "=f"(d[7]),
          "=f"(d[8]), "=f"(d[9]), "=f"(d[10]), "=f"(d[11]), "=f"(d[12]), "=f"(d[13]), "=f"(d[14]), "=f"(d[15]),
          "=f"(d[16]), "=f"(d[17]), "=f"(d[18]), "=f"(d[19]), "=f"(d[20]), "=f"(d[21]), "=f"(d[22]), "=f"(d[23]),
          "=f"(d[24]), "=f"(d[25]), "=f"(d[26]), "=f"(d[27]), "=f"(d[28]), "=f"(d[29]), "=f"(d[30]), "=f"(d[31]),
          "=f"(d[32]), "=f"(d[33]), "=f"(d[34]), "=f"(d[35]), "=f"(d[36]), "=f"(d[37]), "=f"(d[38]), "=f"(d[39]),
          "=f"(d[40]), "=f"(d[41]), "=f"(d[42]), "=f"(d[43]), "=f"(d[44]), "=f"(d[45]), "=f"(d[46]), "=f"(d[47]),
          "=f"(d[48]), "=f"(d[49]), "=f"(d[50]), "=f"(d[51]), "=f"(d[52]), "=f"(d[53]), "=f"(d[54]), "=f"(d[55]),
          "=f"(d[56]), "=f"(d[57]), "=f"(d[58]), "=f"(d[59]), "=f"(d[60]), "=f"(d[61]), "=f"(d[62]), "=f"(d[63]),
          "=f"(d[64]), "=f"(d[65]), "=f"(d[66]), "=f"(d[67]), "=f"(d[68]), "=f"(d[69]), "=f"(d[70]), "=f"(d[71]),
          "=f"(d[72]), "=f"(d[73]), "=f"(d[74]), "=f"(d[75]), "=f"(d[76]), "=f"(d[77]), "=f"(d[78]), "=f"(d[79]),
          "=f"(d[80]), "=f"(d[81]), "=f"(d[82]), "=f"(d[83]), "=f"(d[84]), "=f"(d[85]), "=f"(d[86]), "=f"(d[87])
        : "l"(da), "l"(db));
}

__device__ __forceinline__ void wgmma_ss_n176(float* d, unsigned long long da, unsigned long long db) {
    asm volatile(
        "wgmma.mma_async.sync.aligned.m64n176k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87}, %88, %89, 1, 1, 1, 0, 0;\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
          "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
          "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
          "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
          "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
          "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]),
          "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]),
          "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]),
          "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87])
        : "l"(da), "l"(db));
}


// S = Q K^T over BN keys: D = A * B (ACC false, first k-step) or D += A * B.
template <int BN, bool ACC>
__device__ __forceinline__ void wgmma_s(float* d, unsigned long long da, unsigned long long db) {
    if constexpr (BN == 128) {
        if constexpr (ACC) wgmma_ss(d, da, db); else wgmma_ss0(d, da, db);
    } else {
        static_assert(BN == 176, "key tile of 128 or 176");
        if constexpr (ACC) wgmma_ss_n176(d, da, db); else wgmma_ss0_n176(d, da, db);
    }
}

// D += A * B with A from registers (P, bf16) and B = V N-major (transposed), 128B swizzle.
__device__ __forceinline__ void wgmma_rs(float* d, unsigned a0, unsigned a1, unsigned a2,
                                         unsigned a3, unsigned long long db) {
    asm volatile(
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, {%64, %65, %66, %67}, %68, 1, 1, 1, 1;\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
          "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
          "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
          "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
          "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
          "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "l"(db));
}

// ---- mbarriers (stage full / empty) and named barriers (warpgroup turn-taking) ----
__device__ __forceinline__ void hb_mbar_init(unsigned bar, unsigned count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void hb_mbar_arrive(unsigned bar) {
    asm volatile("{\n.reg .b64 st;\nmbarrier.arrive.shared::cta.b64 st, [%0];\n}\n" ::"r"(bar)
                 : "memory");
}
// Waits for completion of the phase with parity `parity`.
__device__ __forceinline__ void hb_mbar_wait(unsigned bar, unsigned parity) {
    asm volatile(
        "{\n.reg .pred P1;\nHB_WAIT:\n"
        "mbarrier.try_wait.parity.shared::cta.b64 P1, [%0], %1;\n"
        "@P1 bra HB_DONE;\nbra HB_WAIT;\nHB_DONE:\n}\n" ::"r"(bar),
        "r"(parity)
        : "memory");
}
__device__ __forceinline__ void hb_bar_sync(int id) {
    asm volatile("bar.sync %0, 256;\n" ::"r"(id) : "memory");
}
__device__ __forceinline__ void hb_bar_arrive(int id) {
    asm volatile("bar.arrive %0, 256;\n" ::"r"(id) : "memory");
}


// Walks the key tiles (BN keys) of one CTA: dense (all of [0, lk)) or the kept key blocks of a
// CSR row.
template <int BN>
struct HbWalk {
    const unsigned* col_idx;
    unsigned e, e1;
    int kt, k_end, block, lk;
    int k0, k1;  // dense: the key range walked
    __device__ __forceinline__ bool valid() const { return e < e1; }
    __device__ __forceinline__ void enter() {
        if (e >= e1) return;
        if (col_idx) {
            kt = (int)col_idx[e] * block;
            k_end = min(kt + block, lk);
        } else {
            kt = k0;
            k_end = k1;
        }
        if (kt >= k_end) e = e1;  // defensive: an empty range ends the walk
    }
    __device__ __forceinline__ void next() {
        kt += BN;
        if (kt >= k_end) {
            ++e;
            enter();
        }
    }
};


#define HW_THREADS 384

struct __align__(64) HbTmap {
    unsigned long long v[16];
};

__device__ __forceinline__ void hb_mbar_expect(unsigned bar, unsigned bytes) {
    asm volatile(
        "{\n.reg .b64 st;\nmbarrier.arrive.expect_tx.shared::cta.b64 st, [%0], %1;\n}\n" ::"r"(bar),
        "r"(bytes)
        : "memory");
}

// One 64-dim x 128-row panel (16 KiB) of a [batch, token, head, 128] tensor into shared memory.
__device__ __forceinline__ void hb_tma(unsigned dst, const HbTmap* map, int c0, int c1, int c2,
                                       int c3, unsigned bar) {
    asm volatile(
        "cp.async.bulk.tensor.4d.shared::cluster.global.mbarrier::complete_tx::bytes"
        " [%0], [%1, {%2, %3, %4, %5}], [%6];\n" ::"r"(dst),
        "l"(reinterpret_cast<unsigned long long>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(c3),
        "r"(bar)
        : "memory");
}

// The same with an L2 cache policy (createpolicy): evict-first for Q, evict-last for K/V.
__device__ __forceinline__ void hb_tma_hint(unsigned dst, const HbTmap* map, int c0, int c1,
                                            int c2, int c3, unsigned bar,
                                            unsigned long long pol) {
    asm volatile(
        "cp.async.bulk.tensor.4d.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint"
        " [%0], [%1, {%2, %3, %4, %5}], [%6], %7;\n" ::"r"(dst),
        "l"(reinterpret_cast<unsigned long long>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(c3),
        "r"(bar), "l"(pol)
        : "memory");
}

// A work item: query rows [q_start, q_start + 128) of (b, hh) and its CSR range [e0, e1)
// (dense: one pseudo-entry covering all keys). An item past the sequence end walks nothing.
struct HbItem {
    int b, hh, q_start;
    unsigned e0, e1;
    int k0, k1;  // dense: key range
    int part;    // split-key tail: partial slot (item - tail_from), else -1
    int tail;    // split-key tail: index of the split query tile among the tail tiles
};

template <int BN>
__device__ __forceinline__ HbItem hb_decode(int w, int lq, int h,
                                            const unsigned* __restrict__ row_ptr, int q_blocks,
                                            int block, const unsigned* __restrict__ order,
                                            int subs, int qtiles, int lk, int tail_from,
                                            int splits, int chunk) {
    HbItem it;
    it.k0 = 0;
    it.k1 = lk;
    it.part = -1;
    it.tail = -1;
    if (row_ptr) {
        const unsigned ww = order ? order[w] : (unsigned)w;
        const unsigned row = ww / (unsigned)subs, sub = ww % (unsigned)subs;
        const unsigned qb = row % (unsigned)q_blocks, bh = row / (unsigned)q_blocks;
        it.hh = (int)(bh % (unsigned)h);
        it.b = (int)(bh / (unsigned)h);
        it.q_start = (int)qb * block + (int)sub * HB_M;
        it.e0 = row_ptr[row];
        it.e1 = row_ptr[row + 1];
    } else {
        if (w >= tail_from) {  // split-key tail: `splits` items per query tile
            it.part = w - tail_from;
            it.tail = it.part / splits;
            const int sp = it.part - it.tail * splits;
            w = tail_from + it.tail;
            it.k0 = sp * chunk * BN;
            it.k1 = min(lk, it.k0 + chunk * BN);
        }
        const int qt = w % qtiles, bh = w / qtiles;
        it.hh = bh % h;
        it.b = bh / h;
        it.q_start = qt * HB_M;
        it.e0 = 0;
        it.e1 = 1;
    }
    if (it.q_start >= lq) it.e1 = it.e0;
    return it;
}

template <int BN, int ST>
__device__ __forceinline__ void hw_producer(const HbTmap* tq, const HbTmap* tk,
                                            const HbTmap* tv, unsigned sq, unsigned skv,
                                            unsigned bars, int lq, int lk, int h,
                                            const unsigned* __restrict__ row_ptr,
                                            const unsigned* __restrict__ col_idx, int block,
                                            int q_blocks, const unsigned* __restrict__ order,
                                            int subs, int items, int qtiles, int tail_from,
                                            int splits, int chunk,
                                            unsigned* __restrict__ counter, int l2hint) {
    const unsigned qfull = bars + 8 * (2 * ST), qempty = qfull + 8, slot = qfull + 16;
    unsigned long long pol_q, pol_kv;
    asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;\n" : "=l"(pol_q));
    asm volatile("createpolicy.fractional.L2::evict_last.b64 %0, 1.0;\n" : "=l"(pol_kv));
    unsigned n = 0;  // tiles issued so far (tile n: stage n % ST, use n / ST there)
    int w = blockIdx.x;
    for (unsigned it = 0;; ++it) {
        if (it > 0) hb_mbar_wait(qempty, (it - 1) & 1u);
        const int pub = w < items ? w : -1;
        asm volatile("st.shared.s32 [%0], %1;\n" ::"r"(slot), "r"(pub) : "memory");
        if (pub < 0) {
            hb_mbar_arrive(qfull);
            break;
        }
        const HbItem item = hb_decode<BN>(w, lq, h, row_ptr, q_blocks, block, order, subs,
                                          qtiles, lk, tail_from, splits, chunk);
        hb_mbar_expect(qfull, HB_TILE);
        if (l2hint) {
            hb_tma_hint(sq, tq, 0, item.hh, item.q_start, item.b, qfull, pol_q);
            hb_tma_hint(sq + HB_PANEL, tq, 64, item.hh, item.q_start, item.b, qfull, pol_q);
        } else {
            hb_tma(sq, tq, 0, item.hh, item.q_start, item.b, qfull);
            hb_tma(sq + HB_PANEL, tq, 64, item.hh, item.q_start, item.b, qfull);
        }
        w = (int)gridDim.x + (int)atomicAdd(counter, 1u);  // claim the next item now
        HbWalk<BN> cur;
        cur.col_idx = row_ptr ? col_idx : nullptr;
        cur.e = item.e0;
        cur.e1 = item.e1;
        cur.block = block;
        cur.lk = lk;
        cur.k0 = item.k0;
        cur.k1 = item.k1;
        cur.enter();
        if constexpr (BN != 128) {
            // Separate K and V barriers (full_v / empty_v after the slot words), V one tile
            // behind K: K_{n+1} is issued before V_n, and each is freed as soon as its GEMM
            // is done, so two stages keep the GEMMs fed.
            const unsigned vbars = qfull + 24;
            int prev_kt = -1;
            auto load_v = [&](unsigned m, int kt) {
                const unsigned sv = m % ST;
                if (m >= ST) hb_mbar_wait(vbars + 8 * (ST + sv), (m / ST - 1) & 1u);
                const unsigned full = vbars + 8 * sv;
                const unsigned vs = skv + sv * 2 * HB_KVTILE(BN) + HB_KVTILE(BN);
                hb_mbar_expect(full, HB_KVTILE(BN));
                hb_tma_hint(vs, tv, 0, item.hh, kt, item.b, full, pol_kv);
                hb_tma_hint(vs + HB_KVPANEL(BN), tv, 64, item.hh, kt, item.b, full, pol_kv);
            };
            while (cur.valid()) {
                const unsigned sk = n % ST;
                if (n >= ST) hb_mbar_wait(bars + 8 * (ST + sk), (n / ST - 1) & 1u);
                const unsigned full = bars + 8 * sk, ks = skv + sk * 2 * HB_KVTILE(BN);
                hb_mbar_expect(full, HB_KVTILE(BN));
                hb_tma_hint(ks, tk, 0, item.hh, cur.kt, item.b, full, pol_kv);
                hb_tma_hint(ks + HB_KVPANEL(BN), tk, 64, item.hh, cur.kt, item.b, full, pol_kv);
                if (prev_kt >= 0) load_v(n - 1, prev_kt);
                prev_kt = cur.kt;
                ++n;
                cur.next();
            }
            if (prev_kt >= 0) load_v(n - 1, prev_kt);
            continue;
        }
        while (cur.valid()) {
            const unsigned s = n % ST;
            if (n >= ST) hb_mbar_wait(bars + 8 * (ST + s), (n / ST - 1) & 1u);
            const unsigned full = bars + 8 * s, ks = skv + s * 2 * HB_KVTILE(BN);
            const unsigned vs = ks + HB_KVTILE(BN), pn = HB_KVPANEL(BN);
            hb_mbar_expect(full, 2 * HB_KVTILE(BN));
            if (l2hint) {
                hb_tma_hint(ks, tk, 0, item.hh, cur.kt, item.b, full, pol_kv);
                hb_tma_hint(ks + pn, tk, 64, item.hh, cur.kt, item.b, full, pol_kv);
                hb_tma_hint(vs, tv, 0, item.hh, cur.kt, item.b, full, pol_kv);
                hb_tma_hint(vs + pn, tv, 64, item.hh, cur.kt, item.b, full, pol_kv);
            } else {
                hb_tma(ks, tk, 0, item.hh, cur.kt, item.b, full);
                hb_tma(ks + pn, tk, 64, item.hh, cur.kt, item.b, full);
                hb_tma(vs, tv, 0, item.hh, cur.kt, item.b, full);
                hb_tma(vs + pn, tv, 64, item.hh, cur.kt, item.b, full);
            }
            ++n;
            cur.next();
        }
    }
}

// Split-key tail of a dense launch: the last query tiles (fewer than the CTAs) are cut into
// `splits` key ranges so the final round is balanced. Each split writes its unnormalised O (f32,
// 128 x 128), row max and row sum (log2 domain) to its slot of part_buf; the CTA that completes
// the tile's count (counter[1 + tail]) merges the slots and writes the bf16 output.
#define HW_PART (HB_M * HB_D + 2 * HB_M)  // floats per partial slot
__device__ __forceinline__ void hw_partial(float* __restrict__ part_buf,
                                        unsigned* __restrict__ counter, const HbItem& item,
                                        const float* acc, float m0, float m1, float l0,
                                        float l1, int wg, int wl, int g, int t, int ctid,
                                        unsigned slot, int splits, int lq, long long rs,
                                        bf16* __restrict__ o) {
    float* po = part_buf + (long long)item.part * HW_PART;
    const int rr0 = wg * 64 + wl * 16 + g, rr1 = rr0 + 8;
#pragma unroll
    for (int j = 0; j < 16; ++j) {
        *reinterpret_cast<float2*>(po + rr0 * HB_D + j * 8 + 2 * t) =
            make_float2(acc[4 * j], acc[4 * j + 1]);
        *reinterpret_cast<float2*>(po + rr1 * HB_D + j * 8 + 2 * t) =
            make_float2(acc[4 * j + 2], acc[4 * j + 3]);
    }
    if (t == 0) {
        *reinterpret_cast<float2*>(po + HB_M * HB_D + 2 * rr0) = make_float2(m0, l0);
        *reinterpret_cast<float2*>(po + HB_M * HB_D + 2 * rr1) = make_float2(m1, l1);
    }
    __threadfence();
    asm volatile("bar.sync 3, 256;\n" ::: "memory");
    if (ctid == 0) {
        const unsigned done = atomicAdd(counter + 1 + item.tail, 1u);
        asm volatile("st.shared.u32 [%0], %1;\n" ::"r"(slot + 4), "r"(done) : "memory");
    }
    asm volatile("bar.sync 3, 256;\n" ::: "memory");
    unsigned done;
    asm volatile("ld.shared.u32 %0, [%1];\n" : "=r"(done) : "r"(slot + 4) : "memory");
    if (done != (unsigned)splits - 1) return;
    __threadfence();
    // Merge: thread -> (row, 64-dim half).
    const int r = ctid >> 1, half = ctid & 1;
    const float* base = part_buf + (long long)item.tail * splits * HW_PART;
    float mx = -INFINITY;
    for (int sp = 0; sp < splits; ++sp) {
        const float m = __ldcg(base + (long long)sp * HW_PART + HB_M * HB_D + 2 * r);
        mx = fmaxf(mx, m);
    }
    const float mu = mx == -INFINITY ? 0.0f : mx;
    float l = 0.0f;
    for (int sp = 0; sp < splits; ++sp) {
        const float2 ml = __ldcg(reinterpret_cast<const float2*>(base + (long long)sp * HW_PART +
                                                                 HB_M * HB_D + 2 * r));
        l += ml.y * hb_exp2(ml.x - mu);
    }
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
    const int gr = item.q_start + r;
    if (gr >= lq) return;
    unsigned* orow = reinterpret_cast<unsigned*>(o + ((long long)item.b * lq + gr) * rs +
                                                 (long long)item.hh * HB_D + half * 64);
    for (int c = 0; c < 16; ++c) {
        float4 sum = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        for (int sp = 0; sp < splits; ++sp) {
            const float* ps = base + (long long)sp * HW_PART;
            const float wgt = hb_exp2(__ldcg(ps + HB_M * HB_D + 2 * r) - mu);
            const float4 x =
                __ldcg(reinterpret_cast<const float4*>(ps + r * HB_D + half * 64 + c * 4));
            sum.x += wgt * x.x;
            sum.y += wgt * x.y;
            sum.z += wgt * x.z;
            sum.w += wgt * x.w;
        }
        orow[2 * c] = hb_pack(sum.x * inv, sum.y * inv);
        orow[2 * c + 1] = hb_pack(sum.z * inv, sum.w * inv);
    }
}

// TAU (log2 units): a row's running max moves only when a tile's max passes it by more than
// TAU (lazy rescale; 0: the exact max), and O is rescaled only when a row of the warp moved it.
template <int BN, int ST, int TAU>
__device__ __forceinline__ void hw_consumer(unsigned sq, unsigned skv, unsigned bars,
                                            bf16* __restrict__ o, int lq, int lk, int h,
                                            float scale_log2,
                                            const unsigned* __restrict__ row_ptr,
                                            const unsigned* __restrict__ col_idx, int block,
                                            int q_blocks, int bias_from, float bias_log2,
                                            int bias_to, const unsigned* __restrict__ order,
                                            int subs, int qtiles, int tail_from, int splits,
                                            int chunk,
                                            float* __restrict__ part_buf,
                                            unsigned* __restrict__ counter) {
    const unsigned qfull = bars + 8 * (2 * ST), qempty = qfull + 8, slot = qfull + 16;
    const int ctid = threadIdx.x - 128;
    const int wg = __shfl_sync(0xffffffffu, ctid >> 7, 0);
    const int wl = (ctid >> 5) & 3;
    const int lane = ctid & 31, g = lane >> 2, t = lane & 3;
    const long long rs = (long long)h * HB_D;
    const unsigned long long dq = hb_desc(sq + wg * 64 * 128, 16, 1024);
    unsigned n = 0;  // tiles consumed so far, counted as the producer does
    // Turn-taking runs on across items (both warpgroups walk the same tiles): warpgroup 0 goes
    // first, and its last turn is balanced after the last item. (Re-balancing per item would let
    // warpgroup 1 arrive twice on barrier 1 before warpgroup 0 syncs once.)
    if (wg == 1) hb_bar_arrive(1);
    for (unsigned itn = 0;; ++itn) {
        hb_mbar_wait(qfull, itn & 1u);
        int w;
        asm volatile("ld.shared.s32 %0, [%1];\n" : "=r"(w) : "r"(slot) : "memory");
        w = __shfl_sync(0xffffffffu, w, 0);
        if (w < 0) break;
        const HbItem item = hb_decode<BN>(w, lq, h, row_ptr, q_blocks, block, order, subs,
                                          qtiles, lk, tail_from, splits, chunk);
        HbWalk<BN> cur, nxt;
        cur.col_idx = row_ptr ? col_idx : nullptr;
        cur.e = item.e0;
        cur.e1 = item.e1;
        cur.block = block;
        cur.lk = lk;
        cur.k0 = item.k0;
        cur.k1 = item.k1;
        cur.enter();
        if (!cur.valid()) hb_mbar_arrive(qempty);

        float s[BN / 2], acc[64];
        unsigned p[BN / 4];
#pragma unroll
        for (int i = 0; i < 64; ++i) acc[i] = 0.0f;
#pragma unroll
        for (int i = 0; i < BN / 4; ++i) p[i] = 0u;
        float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;
        bool first = true;
        int stage = n % ST;
        // 176-key tiles: K and V have their own full/empty barriers (see the producer).
        const unsigned vbars = qfull + 24;
        while (cur.valid()) {
            hb_mbar_wait(bars + 8 * stage, (n / ST) & 1u);  // tile n (K, and V if shared) landed
            nxt = cur;
            nxt.next();
            const int nstage = stage == ST - 1 ? 0 : stage + 1;
            const unsigned long long dk = hb_desc(skv + stage * 2 * HB_KVTILE(BN), 16, 1024);
            const int pstage = stage == 0 ? ST - 1 : stage - 1;
            const unsigned long long dv = hb_desc(
                skv + pstage * 2 * HB_KVTILE(BN) + HB_KVTILE(BN), HB_KVPANEL(BN), 1024);
            if constexpr (BN != 128) {
                if (!first) hb_mbar_wait(vbars + 8 * pstage, ((n - 1) / ST) & 1u);  // V_{n-1}
            }
            hb_bar_sync(1 + wg);
#pragma unroll
            for (int i = 0; i < 64; ++i) hb_pin(acc[i]);
#pragma unroll
            for (int i = 0; i < BN / 4; ++i) hb_pin_u(p[i]);
            wg_fence();
#pragma unroll
            for (int kk = 0; kk < HB_D / 16; ++kk) {
                const unsigned offq = ((kk >> 2) * HB_PANEL + (kk & 3) * 32) >> 4;
                const unsigned offk = ((kk >> 2) * HB_KVPANEL(BN) + (kk & 3) * 32) >> 4;
                if (kk == 0)
                    wgmma_s<BN, false>(s, dq + offq, dk + offk);
                else
                    wgmma_s<BN, true>(s, dq + offq, dk + offk);
            }
            wg_commit();
            if (!first) {
#pragma unroll
                for (int kk = 0; kk < BN / 16; ++kk)
                    wgmma_rs(acc, p[4 * kk], p[4 * kk + 1], p[4 * kk + 2], p[4 * kk + 3],
                             dv + ((kk * 16 * 128) >> 4));
            }
            wg_commit();
            hb_bar_arrive(2 - wg);

            wg_wait<1>();
#pragma unroll
            for (int i = 0; i < BN / 2; ++i) hb_pin(s[i]);
            if constexpr (BN != 128) hb_mbar_arrive(bars + 8 * (ST + stage));  // K_n free
            if (!nxt.valid()) hb_mbar_arrive(qempty);  // last S of this item: Q may go

            const int kt = cur.kt, k_end = cur.k_end;
            float mx0 = -INFINITY, mx1 = -INFINITY;
            // Plain: whole tile in range, and before the biased keys or none of the item's
            // rows biased (item-uniform, so no divergence).
            const bool plain =
                kt + BN <= k_end && (kt + BN <= bias_from || item.q_start >= bias_to);
            if (plain) {
#pragma unroll
                for (int j = 0; j < BN / 8; ++j) {
                    mx0 = fmaxf(mx0, fmaxf(s[4 * j], s[4 * j + 1]));
                    mx1 = fmaxf(mx1, fmaxf(s[4 * j + 2], s[4 * j + 3]));
                }
                mx0 *= scale_log2;
                mx1 *= scale_log2;
            } else {
                // This thread's rows (as in the epilogue): r0 = q_start + wg*64 + wl*16 + g holds
                // s[4j], s[4j+1]; r0 + 8 holds s[4j+2], s[4j+3]. Rows >= bias_to: no bias.
                const int r0 = item.q_start + wg * 64 + wl * 16 + g;
                const float add0 = r0 < bias_to ? bias_log2 : 0.0f;
                const float add1 = r0 + 8 < bias_to ? bias_log2 : 0.0f;
#pragma unroll
                for (int j = 0; j < BN / 8; ++j) {
#pragma unroll
                    for (int c = 0; c < 2; ++c) {
                        const int key = kt + j * 8 + 2 * t + c;
                        const bool biased = key >= bias_from;
                        const bool ok = key < k_end;
                        s[4 * j + c] =
                            ok ? fmaf(s[4 * j + c], scale_log2, biased ? add0 : 0.0f) : -INFINITY;
                        s[4 * j + 2 + c] =
                            ok ? fmaf(s[4 * j + 2 + c], scale_log2, biased ? add1 : 0.0f)
                               : -INFINITY;
                        mx0 = fmaxf(mx0, s[4 * j + c]);
                        mx1 = fmaxf(mx1, s[4 * j + 2 + c]);
                    }
                }
            }
            mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
            mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
            mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
            mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
            float mn0, mn1, mu0, mu1, corr0, corr1;
            bool rescale;
            if constexpr (TAU == 0) {
                // Exact max; O left alone when no row max of the warp moved (factor exactly 1).
                mn0 = fmaxf(m0, mx0);
                mn1 = fmaxf(m1, mx1);
                mu0 = mn0 == -INFINITY ? 0.0f : mn0;
                mu1 = mn1 == -INFINITY ? 0.0f : mn1;
                corr0 = hb_exp2(m0 - mu0);
                corr1 = hb_exp2(m1 - mu1);
                rescale = __any_sync(0xffffffffu, m0 != mn0 || m1 != mn1);
            } else {
                // Lazy: a row's running max moves only when this tile's max passes it by more
                // than TAU (log2 units); else the stale max stays, so P <= 2^TAU, and O, l and
                // the final O / l all use it (exact up to rounding). The first finite tile always
                // moves it off -inf; a fully masked tile (mx = -inf) never does.
                const bool up0 = mx0 > m0 + (float)TAU, up1 = mx1 > m1 + (float)TAU;
                mn0 = up0 ? mx0 : m0;
                mn1 = up1 ? mx1 : m1;
                mu0 = mn0 == -INFINITY ? 0.0f : mn0;
                mu1 = mn1 == -INFINITY ? 0.0f : mn1;
                corr0 = up0 ? hb_exp2(m0 - mu0) : 1.0f;
                corr1 = up1 ? hb_exp2(m1 - mu1) : 1.0f;
                rescale = __any_sync(0xffffffffu, up0 || up1);
            }
            m0 = mn0;
            m1 = mn1;
            float rs0 = 0.0f, rs1 = 0.0f;
            if (plain) {
                const float nm0 = -mu0, nm1 = -mu1;
#pragma unroll
                for (int j = 0; j < BN / 8; ++j) {
                    s[4 * j] = hb_exp2(fmaf(s[4 * j], scale_log2, nm0));
                    s[4 * j + 1] = hb_exp2(fmaf(s[4 * j + 1], scale_log2, nm0));
                    s[4 * j + 2] = hb_exp2(fmaf(s[4 * j + 2], scale_log2, nm1));
                    s[4 * j + 3] = hb_exp2(fmaf(s[4 * j + 3], scale_log2, nm1));
                }
            } else {
#pragma unroll
                for (int j = 0; j < BN / 8; ++j) {
                    s[4 * j] = hb_exp2(s[4 * j] - mu0);
                    s[4 * j + 1] = hb_exp2(s[4 * j + 1] - mu0);
                    s[4 * j + 2] = hb_exp2(s[4 * j + 2] - mu1);
                    s[4 * j + 3] = hb_exp2(s[4 * j + 3] - mu1);
                }
            }
#pragma unroll
            for (int j = 0; j < BN / 8; ++j) {
                rs0 += s[4 * j] + s[4 * j + 1];
                rs1 += s[4 * j + 2] + s[4 * j + 3];
            }
            l0 = l0 * corr0 + rs0;
            l1 = l1 * corr1 + rs1;

            wg_wait<0>();
            if constexpr (BN != 128) {
                if (!first) hb_mbar_arrive(vbars + 8 * (ST + pstage));  // V_{n-1} free
            } else {
                if (!first) hb_mbar_arrive(bars + 8 * (ST + pstage));
            }
#pragma unroll
            for (int i = 0; i < 64; ++i) hb_pin(acc[i]);
            if (rescale) {
#pragma unroll
                for (int j = 0; j < 16; ++j) {
                    acc[4 * j] *= corr0;
                    acc[4 * j + 1] *= corr0;
                    acc[4 * j + 2] *= corr1;
                    acc[4 * j + 3] *= corr1;
                }
            }
#pragma unroll
            for (int kk = 0; kk < BN / 16; ++kk) {
                p[4 * kk] = hb_pack(s[8 * kk], s[8 * kk + 1]);
                p[4 * kk + 1] = hb_pack(s[8 * kk + 2], s[8 * kk + 3]);
                p[4 * kk + 2] = hb_pack(s[8 * kk + 4], s[8 * kk + 5]);
                p[4 * kk + 3] = hb_pack(s[8 * kk + 6], s[8 * kk + 7]);
            }
            first = false;
            stage = nstage;
            cur = nxt;
            ++n;
        }
        if (!first) {
            const int pstage = stage == 0 ? ST - 1 : stage - 1;
            const unsigned long long dv = hb_desc(
                skv + pstage * 2 * HB_KVTILE(BN) + HB_KVTILE(BN), HB_KVPANEL(BN), 1024);
            if constexpr (BN != 128) hb_mbar_wait(vbars + 8 * pstage, ((n - 1) / ST) & 1u);
#pragma unroll
            for (int i = 0; i < 64; ++i) hb_pin(acc[i]);
#pragma unroll
            for (int i = 0; i < BN / 4; ++i) hb_pin_u(p[i]);
            wg_fence();
#pragma unroll
            for (int kk = 0; kk < BN / 16; ++kk)
                wgmma_rs(acc, p[4 * kk], p[4 * kk + 1], p[4 * kk + 2], p[4 * kk + 3],
                         dv + ((kk * 16 * 128) >> 4));
            wg_commit();
            wg_wait<0>();
            if constexpr (BN != 128)
                hb_mbar_arrive(vbars + 8 * (ST + pstage));
            else
                hb_mbar_arrive(bars + 8 * (ST + pstage));
#pragma unroll
            for (int i = 0; i < 64; ++i) hb_pin(acc[i]);
        }

        l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
        l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
        l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
        l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
        if (item.part >= 0) {
            hw_partial(part_buf, counter, item, acc, m0, m1, l0, l1, wg, wl, g, t, ctid, slot,
                       splits, lq, rs, o);
            continue;
        }
        const float inv0 = l0 > 0.0f ? 1.0f / l0 : 0.0f, inv1 = l1 > 0.0f ? 1.0f / l1 : 0.0f;
        const int r0 = item.q_start + wg * 64 + wl * 16 + g, r1 = r0 + 8;
        unsigned* o0 = reinterpret_cast<unsigned*>(
            o + ((long long)item.b * lq + r0) * rs + (long long)item.hh * HB_D);
        unsigned* o1 = reinterpret_cast<unsigned*>(
            o + ((long long)item.b * lq + r1) * rs + (long long)item.hh * HB_D);
#pragma unroll
        for (int j = 0; j < 16; ++j) {
            if (r0 < lq) o0[j * 4 + t] = hb_pack(acc[4 * j] * inv0, acc[4 * j + 1] * inv0);
            if (r1 < lq) o1[j * 4 + t] = hb_pack(acc[4 * j + 2] * inv1, acc[4 * j + 3] * inv1);
        }
    }
    if (wg == 0) hb_bar_sync(1);  // balance warpgroup 1's last hand-over
}

template <int BN, int ST, int TAU>
__device__ __forceinline__ void hw_kernel(const HbTmap* tq, const HbTmap* tk, const HbTmap* tv,
                                          bf16* __restrict__ o, int lq, int lk, int h,
                                          float scale_log2, const unsigned* __restrict__ row_ptr,
                                          const unsigned* __restrict__ col_idx, int block,
                                          int q_blocks, int bias_from, float bias_log2,
                                          int bias_to, const unsigned* __restrict__ order,
                                          int subs, int items, int qtiles, int tail_from,
                                          int splits, int chunk, float* __restrict__ part_buf,
                                          unsigned* __restrict__ counter, int l2hint) {
    extern __shared__ __align__(1024) unsigned char hw_smem[];
    const unsigned base = (hb_smem_u32(hw_smem) + 1023u) & ~1023u;
    const unsigned sq = base, skv = base + HB_TILE;
    // full[ST], empty[ST], q_full, q_empty, slot
    const unsigned bars = skv + ST * 2 * HB_KVTILE(BN);
    if (threadIdx.x == 0) {
        for (int i = 0; i < ST; ++i) {
            hb_mbar_init(bars + 8 * i, 1);
            hb_mbar_init(bars + 8 * (ST + i), 256);
        }
        hb_mbar_init(bars + 8 * (2 * ST), 1);
        hb_mbar_init(bars + 8 * (2 * ST) + 8, 256);
        if constexpr (BN != 128) {  // full_v[ST], empty_v[ST] after the slot words
            for (int i = 0; i < ST; ++i) {
                hb_mbar_init(bars + 8 * (2 * ST) + 24 + 8 * i, 1);
                hb_mbar_init(bars + 8 * (2 * ST) + 24 + 8 * (ST + i), 256);
            }
        }
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    __syncthreads();
    const int role = __shfl_sync(0xffffffffu, (int)threadIdx.x >> 7, 0);
    if (role == 0) {
        asm volatile("setmaxnreg.dec.sync.aligned.u32 24;\n" ::: "memory");
        if (threadIdx.x == 0)
            hw_producer<BN, ST>(tq, tk, tv, sq, skv, bars, lq, lk, h, row_ptr, col_idx, block,
                                q_blocks, order, subs, items, qtiles, tail_from, splits, chunk,
                                counter, l2hint);
    } else {
        asm volatile("setmaxnreg.inc.sync.aligned.u32 240;\n" ::: "memory");
        hw_consumer<BN, ST, TAU>(sq, skv, bars, o, lq, lk, h, scale_log2, row_ptr, col_idx,
                                 block, q_blocks, bias_from, bias_log2, bias_to, order, subs,
                                 qtiles, tail_from, splits, chunk, part_buf, counter);
    }
}

// Entry points: 128-key tiles in 3 stages (sparse launches), 176-key tiles in 2 stages (dense
// launches); TAU: see hw_consumer.
#define HW_ENTRY(NAME, BN, ST, TAU)                                                               \
    extern "C" __global__ void __launch_bounds__(HW_THREADS, 1)                                   \
        NAME(const __grid_constant__ HbTmap tq, const __grid_constant__ HbTmap tk,                \
             const __grid_constant__ HbTmap tv, bf16* __restrict__ o, int lq, int lk, int h,     \
             float scale_log2, const unsigned* __restrict__ row_ptr,                             \
             const unsigned* __restrict__ col_idx, int block, int q_blocks, int bias_from,       \
             float bias_log2, int bias_to, const unsigned* __restrict__ order, int subs,         \
             int items, int qtiles, int tail_from, int splits, int chunk,                        \
             float* __restrict__ part_buf, unsigned* __restrict__ counter, int l2hint) {          \
        hw_kernel<BN, ST, TAU>(&tq, &tk, &tv, o, lq, lk, h, scale_log2, row_ptr, col_idx,         \
                               block, q_blocks, bias_from, bias_log2, bias_to, order, subs,       \
                               items, qtiles, tail_from, splits, chunk, part_buf, counter,        \
                               l2hint);                                                           \
    }
HW_ENTRY(attn_hopper_ws_d128_n128, 128, 3, 8)
HW_ENTRY(attn_hopper_ws_d128_n176, 176, 2, 0)

// Work order of a plan built on the device (same as the host's sparse_work_order): one CTA per
// (batch, head); its rows sorted by kept-block count, descending, ties in row order (rank =
// longer rows + equal rows before it), each row expanded into its `subs` 128-row items.
extern "C" __global__ void hb_device_work_order(const unsigned* __restrict__ row_ptr,
                                                unsigned* __restrict__ order, int q_blocks,
                                                int subs) {
    extern __shared__ unsigned hb_len[];
    const unsigned row0 = blockIdx.x * (unsigned)q_blocks;
    for (int r = threadIdx.x; r < q_blocks; r += blockDim.x)
        hb_len[r] = row_ptr[row0 + r + 1] - row_ptr[row0 + r];
    __syncthreads();
    for (int r = threadIdx.x; r < q_blocks; r += blockDim.x) {
        const unsigned len = hb_len[r];
        unsigned rank = 0;
        for (int x = 0; x < q_blocks; ++x) {
            const unsigned lx = hb_len[x];
            rank += (lx > len) | (lx == len && x < r);
        }
        const unsigned item = (row0 + (unsigned)r) * (unsigned)subs;
        const unsigned at = (row0 + rank) * (unsigned)subs;
        for (int sb = 0; sb < subs; ++sb) order[at + sb] = item + sb;
    }
}
