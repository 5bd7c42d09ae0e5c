//! What a run will need in memory, estimated before anything is loaded, so an oversized request
//! is refused with one line instead of growing for a minute and aborting in the allocator.

use anyhow::{bail, Result};
use jenga_models::WanConfig;
use jenga_pipeline::SampleSpec;

/// Bytes a generation needs on its device (weights and activations) and on the host (frames).
#[derive(Clone, Debug, PartialEq)]
pub struct MemEstimate {
    pub weights: usize,
    /// The largest stage's hidden states, projections, FFN and the skip residual, CFG batch.
    pub activations: usize,
    /// RoPE tables, the attention output and the block plans of the largest stage.
    pub attention: usize,
    /// Latent/pixel vectors on the host and the RGB frames written (upscaled).
    pub frames: usize,
    /// A checkpoint's text encoder (loaded, run and freed before the DiT loads): 0 otherwise.
    pub text_encoder: usize,
    /// A checkpoint's VAE while it decodes (weights and the largest chunk's feature maps,
    /// next to the DiT's weights): 0 otherwise.
    pub vae: usize,
}

impl MemEstimate {
    pub fn new(
        cfg: &WanConfig,
        spec: &SampleSpec,
        on_gpu: bool,
        sparse: bool,
        upscale: u32,
    ) -> Self {
        let elem = if on_gpu { 2 } else { 4 };
        let [pt, ph, pw] = cfg.patch_size;
        let batch = if spec.guidance != 1.0 { 2 } else { 1 };
        let tokens = (0..spec.stages.len())
            .map(|s| {
                let (h, w) = spec.stage_size(s, cfg.patch_size);
                (spec.frames / pt) * (h / ph) * (w / pw)
            })
            .max()
            .unwrap_or(0);
        let bl = batch * tokens;
        // Live at once inside a block: x, its norm, q, k, v, the attention output, its
        // projection and a sum (≈ 8·D), two FFN-wide buffers (up + activation), the residual.
        let activations = bl * (9 * cfg.dim + 2 * cfg.ffn_dim) * elem;
        // A sparse policy scores every (query block, key block) pair of every head.
        let blocks = if sparse { tokens.div_ceil(128) } else { 0 };
        let attention = tokens * cfg.head_dim() * 2 * 4
            + bl * cfg.dim * elem
            + batch * cfg.num_heads * blocks * blocks * 4;
        let latent = cfg.in_dim.max(cfg.out_dim) * spec.frames * spec.height * spec.width;
        let up = upscale.max(1) as usize;
        let frames =
            latent * 4 * (3 + batch) + spec.frames * spec.height * spec.width * 3 * up * up;
        MemEstimate {
            weights: cfg.num_params() * elem,
            activations,
            attention,
            frames,
            text_encoder: 0,
            vae: 0,
        }
    }

    /// Adds a checkpoint's text encoder (`text_params`) and the VAE decoding video frames
    /// `out` (frames, height, width in pixels; `tiled`: tiles of 256 px): its widest level
    /// (`base_dim` channels at full resolution) over the 4 frames of one latent chunk, ≈ 8
    /// such maps live (input, norm, conv, residual, the causal caches), in f32; and the host's
    /// f32 frames `[3, F, H, W]` next to the u8 video.
    pub fn with_pipeline(
        mut self,
        on_gpu: bool,
        text_params: usize,
        vae_params: usize,
        base_dim: usize,
        out: (usize, usize, usize),
        tiled: bool,
    ) -> Self {
        let elem = if on_gpu { 2 } else { 4 };
        self.text_encoder = text_params * elem;
        let (f, h, w) = out;
        let (th, tw) = if tiled {
            (h.min(256), w.min(256))
        } else {
            (h, w)
        };
        self.vae = vae_params * 4 + 8 * base_dim * 4 * th * tw * 4;
        self.frames += 3 * f * h * w * 4 + f * h * w * 3;
        self
    }

    /// The peak on the device: the text encoder alone, then the DiT sampling, then the DiT's
    /// weights next to the VAE decoding.
    pub fn device(&self) -> usize {
        (self.weights + self.activations + self.attention)
            .max(self.text_encoder)
            .max(self.weights + self.vae)
    }
}

/// Refuse a run whose estimate exceeds what the device (and, for frames, the host) has.
/// `device_free` is the GPU's free memory or the host's available memory on the CPU.
pub fn check(
    est: &MemEstimate,
    device_free: Option<(usize, &str)>,
    host_free: Option<usize>,
) -> Result<()> {
    let gib = crate::fmt_bytes;
    let on_host = device_free.is_some_and(|(_, what)| what.contains("RAM"));
    if let Some((free, what)) = device_free {
        let need = est.device() + if on_host { est.frames } else { 0 };
        if need > free {
            bail!(
                "this run needs about {} (weights {}, activations {}, attention {}{}, frames {}) but {what} is {}: lower --frames/--height/--width, or use a larger device",
                gib(need),
                gib(est.weights),
                gib(est.activations),
                gib(est.attention),
                if est.text_encoder + est.vae > 0 {
                    format!(", text encoder {} (before the DiT), VAE decode {}", gib(est.text_encoder), gib(est.vae))
                } else {
                    String::new()
                },
                gib(if on_host { est.frames } else { 0 }),
                gib(free)
            );
        }
    }
    if let Some(free) = host_free.filter(|_| !on_host) {
        if est.frames > free {
            bail!(
                "the output frames need about {} on the host but available RAM is {}: lower --frames/--height/--width or --upscale",
                gib(est.frames),
                gib(free)
            );
        }
    }
    Ok(())
}

/// `MemAvailable` of /proc/meminfo (None where there is no such file).
pub fn host_available() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> WanConfig {
        jenga_models::ModelBundle::embedded().unwrap().config
    }

    #[test]
    fn default_tiny_run_is_small_and_the_newcomers_run_is_refused() {
        let cfg = tiny();
        let spec = SampleSpec::single(8, 32, 32, 30, 3.0, 5.0, 0);
        let est = MemEstimate::new(&cfg, &spec, false, true, 8);
        // measured: the default run peaks at ~150 MB resident (binary and allocator included)
        assert!(est.device() + est.frames < 200 << 20, "{est:?}");
        assert!(est.device() > 50 << 20, "{est:?}");
        assert!(check(&est, Some((8 << 30, "available RAM")), None).is_ok());

        // --frames 400 --height 1024 --width 1024 aborted in the allocator after 21 s
        let big = SampleSpec::single(400, 1024, 1024, 30, 3.0, 5.0, 0);
        let est = MemEstimate::new(&cfg, &big, false, false, 1);
        let err = check(&est, Some((22 << 30, "available RAM")), None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("needs about") && err.contains("available RAM is 22.00 GiB"),
            "{err}"
        );
        // on a GPU, the frames count against the host only
        let err = check(&est, Some((80 << 30, "free GPU memory")), Some(1 << 40))
            .unwrap_err()
            .to_string();
        assert!(err.contains("free GPU memory is 80.00 GiB"), "{err}");
    }

    #[test]
    fn wan_1_3b_at_480p_fits_an_h100_but_not_as_f32_on_a_laptop() {
        let cfg = WanConfig::wan_1_3b();
        let spec = SampleSpec::single(21, 60, 104, 50, 5.0, 5.0, 0);
        let gpu = MemEstimate::new(&cfg, &spec, true, true, 1);
        assert!(gpu.device() < 20 << 30, "{gpu:?}");
        assert!(check(&gpu, Some((79 << 30, "free GPU memory")), Some(8 << 30)).is_ok());
        let cpu = MemEstimate::new(&cfg, &spec, false, false, 1);
        assert!(check(&cpu, Some((8 << 30, "available RAM")), None).is_err());
    }

    #[test]
    fn a_whole_checkpoint_counts_its_text_encoder_and_vae() {
        let cfg = WanConfig::wan_1_3b();
        let spec = SampleSpec::single(21, 60, 104, 50, 5.0, 5.0, 0);
        let umt5 = jenga_models::Umt5Config::xxl().parameters();
        let dit = MemEstimate::new(&cfg, &spec, true, false, 1);
        let full = dit
            .clone()
            .with_pipeline(true, umt5, 127_000_000, 96, (81, 480, 832), false);
        // umT5-XXL in bf16 (≈ 11 GB) outweighs the 1.3B DiT's whole sampling peak
        assert!(
            full.device() >= umt5 * 2 && full.device() > dit.device(),
            "{full:?}"
        );
        // ... and fits an H100; on a 16 GB laptop's RAM in f32 it does not
        assert!(check(&full, Some((79 << 30, "free GPU memory")), Some(8 << 30)).is_ok());
        let cpu = MemEstimate::new(&cfg, &spec, false, false, 1).with_pipeline(
            false,
            umt5,
            127_000_000,
            96,
            (81, 480, 832),
            false,
        );
        let e = check(&cpu, Some((16 << 30, "available RAM")), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("text encoder"), "{e}");
        // tiles bound the VAE's share at 720p
        let untiled = dit
            .clone()
            .with_pipeline(true, 0, 0, 96, (81, 720, 1280), false)
            .vae;
        let tiled = dit.with_pipeline(true, 0, 0, 96, (81, 720, 1280), true).vae;
        assert!(tiled * 10 < untiled, "{tiled} vs {untiled}");
    }
}
