// The sampler's f32 latent on the device (jenga_tensor::SolverOps). The arithmetic is the host
// cfg_euler's, in its order, with no FMA contraction (__fmul_rn/__fadd_rn), so a CUDA run
// updates the latent exactly as the host did when it downloaded v every step.

// out[b·n + i] = bf16(x[i]) for b < batch: the model input, CFG batch included.
extern "C" __global__ void latent_to_bf16(const float* x, bf16* out, long long n, int batch) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        bf16 v = f2bf(x[i]);
        for (int b = 0; b < batch; ++b) out[(long long)b * n + i] = v;
    }
}

// x += dt·v, v = u + g·(c − u) with out = [c; u] (cfg != 0), else v = c.
extern "C" __global__ void latent_cfg_step(float* x, const bf16* out, long long n, int cfg,
                                           float g, float dt) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        float c = bf2f(out[i]);
        float v = c;
        if (cfg) {
            float u = bf2f(out[n + i]);
            v = __fadd_rn(u, __fmul_rn(g, __fsub_rn(c, u)));
        }
        x[i] = __fadd_rn(x[i], __fmul_rn(dt, v));
    }
}

// out = Σ_k c_k·x_k for k < nterms (≤ 4), accumulated in term order as the host lin_combine:
// the multistep (UniPC) predictor and corrector updates. Unused pointers are never read.
extern "C" __global__ void latent_combine(float* out, const float* x0, const float* x1,
                                          const float* x2, const float* x3, float c0, float c1,
                                          float c2, float c3, int nterms, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        float acc = __fmul_rn(c0, x0[i]);
        if (nterms > 1) acc = __fadd_rn(acc, __fmul_rn(c1, x1[i]));
        if (nterms > 2) acc = __fadd_rn(acc, __fmul_rn(c2, x2[i]));
        if (nterms > 3) acc = __fadd_rn(acc, __fmul_rn(c3, x3[i]));
        out[i] = acc;
    }
}
