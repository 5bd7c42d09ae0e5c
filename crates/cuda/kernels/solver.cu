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
