//! Flags of the peer policies (Sparse VideoGen, DraftAttention); the engine holds the
//! policies themselves.

/// Flags of the peer policies (Sparse VideoGen, DraftAttention). Defaults are the reference
/// scripts' for Wan2.1 (docs/POLICIES.md).
#[derive(clap::Args, Debug, Clone)]
pub struct PeerArgs {
    /// SVG: fraction of the attention its band keeps (`--sparsity` of the reference).
    #[arg(long, default_value_t = 0.3)]
    pub svg_sparsity: f64,
    /// SVG: query rows sampled per call to choose spatial or temporal heads.
    #[arg(long, default_value_t = 64)]
    pub svg_sampled_rows: usize,
    /// SVG: fraction of the first steps run dense (`first_times_fp`).
    #[arg(long, default_value_t = 0.2)]
    pub svg_first_times_fp: f64,
    /// SVG: fraction of the first layers run dense (`first_layers_fp`).
    #[arg(long, default_value_t = 0.03)]
    pub svg_first_layers_fp: f64,
    /// DraftAttention: fraction of the low-resolution attention map dropped per head.
    #[arg(long, default_value_t = 0.75)]
    pub draft_sparsity: f64,
    /// DraftAttention: pooled region ROWSxCOLS of latent tokens per frame.
    #[arg(long, default_value = "8x16")]
    pub draft_pool: String,
    /// DraftAttention: leading transformer layers run dense.
    #[arg(long, default_value_t = 1)]
    pub draft_dense_layers: usize,
    /// DraftAttention: steps whose timestep (1000·σ) is above this run dense.
    #[arg(long, default_value_t = 925.0)]
    pub draft_dense_timestep: f64,
    /// DraftAttention: every draft row keeps at least this many blocks (0 = reference, which
    /// may leave a row empty).
    #[arg(long, default_value_t = 1)]
    pub draft_min_blocks: usize,
}
