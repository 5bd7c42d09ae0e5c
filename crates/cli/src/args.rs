//! Command-line flags.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "jenga",
    version,
    about = "Fast video diffusion transformers (Wan2.1) with Jenga sparse attention"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Generate a video from a prompt (embedded tiny-wan model by default).
    Generate(GenerateArgs),
    /// Describe a model (config, parameters, dtypes, memory) or draw a token curve.
    Inspect(InspectArgs),
    /// Time the model and kernels against a reference measured in the same run.
    Bench(BenchArgs),
    /// Fidelity and speed of Jenga variants against dense on the same prompt and seed.
    Eval(EvalArgs),
    /// GPU checks: every op against the CPU backend, the embedded model GPU vs CPU.
    Selftest {
        #[arg(long, default_value = "cuda")]
        device: String,
    },
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub what: BenchWhat,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Append one JSON object per result line to FILE.
    #[arg(long, global = true)]
    pub json: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum BenchWhat {
    /// Attention policies side by side on one prompt and seed (dense, jenga, svg, draft):
    /// density, recall, PSNR vs dense, time, speed-up.
    Policies(PoliciesArgs),
    /// Whole generations (DiT only) of a Wan-size model, dense vs Jenga presets: wall time,
    /// per-step ms, speed-up, density per stage, mask-building share.
    E2e(E2eArgs),
    /// The umT5 text encoder (Wan2.1's) on random ids, vs transformers in the same run.
    Text(crate::bench_text::TextArgs),
    /// Wan2.1 image-to-video components: CLIP ViT-H states and one i2v DiT forward, vs
    /// transformers / diffusers on the same weights in the same run.
    I2v(crate::bench_i2v::I2vArgs),
    /// The Wan2.1 VAE decode (plain and tiled) at a latent size, vs diffusers' AutoencoderKLWan
    /// in the same run: time, rel-L2, peak memory.
    Vae(crate::bench_vae::VaeArgs),
    /// One DiT forward (batch 1) per size, with GFLOP/s against a square matmul.
    Dit {
        /// Video sizes FRAMESxHEIGHTxWIDTH in model units (tiny-wan: pixels).
        #[arg(long, num_args = 1.., default_values = ["8x32x32", "16x64x64"])]
        sizes: Vec<String>,
        /// Timed repetitions (median reported) after one warm-up.
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        /// Write config.json, weights.safetensors (bf16), inputs.safetensors (x, t, context)
        /// and ours.safetensors (v, first size) to DIR, for tools/wan_reference.py.
        #[arg(long, value_name = "DIR")]
        export: Option<PathBuf>,
        /// Reference command run after our timings on the exported first size (same run),
        /// e.g. "python3 tools/wan_reference.py"; it gets `--dir DIR --device cpu|cuda`.
        #[arg(long, value_name = "CMD")]
        reference: Option<String>,
        /// After the timings, one more forward per size with every op between two device
        /// synchronizes: where the time goes, op by op (CUDA only).
        #[arg(long)]
        op_times: bool,
    },
    /// Attention: dense, and random per-head block plans at each density, through the
    /// backend's attention (whatever kernel it picks), with TFLOP/s.
    Attention {
        /// wan480p (12x32760x128), hunyuan720p (24x119056x128) or HEADSxTOKENSxHEADDIM.
        #[arg(long, value_delimiter = ',', default_value = "wan480p,hunyuan720p")]
        shapes: Vec<String>,
        /// Kept percentage of (query block, key block) pairs of the random sparse plans.
        #[arg(long, value_delimiter = ',', default_value = "10,20,30,50,100")]
        densities: Vec<f64>,
        /// Tokens per block of the sparse plans.
        #[arg(long, default_value_t = 128)]
        block: usize,
        /// Timed repetitions (median reported) after one warm-up.
        #[arg(long, default_value_t = 5)]
        repeats: usize,
        /// Reference command run after our timings (same run), e.g.
        /// "python3 tools/bench_attention.py"; it gets `--manifest FILE` with the same plans.
        #[arg(long, value_name = "CMD")]
        reference: Option<String>,
        /// Where the plans for the reference are written (default: a temporary directory).
        #[arg(long, value_name = "DIR")]
        plans: Option<PathBuf>,
        /// Seed of the random inputs and plans.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Sparse plans to time: `random` (random blocks, diagonal kept) and/or `jenga`
        /// (Jenga's rule on the inputs: top-k blocks by pooled scores ∪ the curve adjacency ∪
        /// the first-frame/text blocks, k tuned to each density; also times the on-GPU mask
        /// building). `jenga` needs the wan480p or hunyuan720p shape (it needs a latent grid).
        #[arg(long = "policy", value_delimiter = ',', default_value = "random")]
        policies: Vec<String>,
    },
}

/// `--frames/--height/--width`, shared by `generate`, `bench e2e` and `bench policies`.
#[derive(Args, Debug, Clone, Default)]
pub struct VideoSize {
    /// Frames. Checkpoints (with a VAE): video frames, 1 + 4k (default 81); the embedded
    /// tiny-wan: video frames (default 8); --random-weights (no VAE): latent frames (21 for
    /// 81 video frames).
    #[arg(long, allow_negative_numbers = true, value_parser = parse_size)]
    pub frames: Option<usize>,
    /// Height. Checkpoints: pixels, a multiple of 16 (default 480 for 1.3B, 720 for 14B);
    /// tiny-wan: pixels (32); --random-weights: latent rows (60 for 480 px).
    #[arg(long, allow_negative_numbers = true, value_parser = parse_size)]
    pub height: Option<usize>,
    /// Width. Checkpoints: pixels, a multiple of 16 (default 832 for 1.3B, 1280 for 14B);
    /// tiny-wan: pixels (32); --random-weights: latent columns (104 for 832 px).
    #[arg(long, allow_negative_numbers = true, value_parser = parse_size)]
    pub width: Option<usize>,
}

impl VideoSize {
    /// The flags that were given, as `generate` arguments (runs that re-parse its flags).
    pub fn to_argv(&self) -> Vec<String> {
        [
            ("--frames", self.frames),
            ("--height", self.height),
            ("--width", self.width),
        ]
        .into_iter()
        .filter_map(|(f, v)| v.map(|v| [f.to_string(), v.to_string()]))
        .flatten()
        .collect()
    }
}

/// `jenga bench e2e` flags (model flags are the global ones; default `--random-weights wan-1.3b`).
#[derive(Args, Debug, Clone)]
pub struct E2eArgs {
    /// Denoising steps of each run (a 50-step total is extrapolated from the per-step times).
    #[arg(long, default_value_t = 8)]
    pub steps: usize,
    #[command(flatten)]
    pub size: VideoSize,
    /// Guidance scale (default: the model's; ≠ 1 runs cond + uncond as one batch of 2).
    #[arg(long)]
    pub guidance: Option<f32>,
    /// Jenga presets compared with dense; NAME@P replaces the preset's cutoff p.
    #[arg(long, value_delimiter = ',', default_value = "base,turbo,flash,3stage")]
    pub presets: Vec<String>,
    /// Do not run dense (no speed-ups then).
    #[arg(long)]
    pub skip_dense: bool,
    /// Also run each preset with every mask-building call between two device syncs and
    /// report its share of the DiT time (the timed runs have no extra syncs).
    #[arg(long)]
    pub profile_masks: bool,
    /// Also time mask building vs the sparse attention of one layer at 12x256 and 24x931
    /// blocks (CUDA only).
    #[arg(long)]
    pub mask_kernels: bool,
    /// Whole pipelines (`--model DIR` of a checkpoint): run this reference in the same run on
    /// the same checkpoint and start noise, e.g. `python3 tools/wan_pipeline_reference.py`
    /// (diffusers `WanPipeline`); reports its time and the PSNR of our frames against its.
    #[arg(long, value_name = "CMD")]
    pub reference: Option<String>,
    /// Whole pipelines: where the start noise and both engines' frames are written (default:
    /// a temporary directory, removed after the run).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Whole pipelines: also run dense as one rank of the parallel path (NCCL with one rank
    /// on CUDA, one thread rank on the CPU) and report its cost and whether its frames are
    /// bit-for-bit the plain run's.
    #[arg(long)]
    pub one_rank: bool,
}

#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Model directory: a diffusers Wan2.1 pipeline (model_index.json, transformer/,
    /// text_encoder/, tokenizer/, vae/, scheduler/), the original Wan2.1 repo (config.json,
    /// diffusion_pytorch_model*.safetensors, models_t5_umt5-xxl-enc-bf16.pth, Wan2.1_VAE.pth,
    /// google/umt5-xxl/), or a tiny-wan-style bundle. Default: the embedded tiny-wan.
    #[arg(long, global = true)]
    pub model: Option<PathBuf>,
    /// Single files as ComfyUI keeps them: the DiT (`model.diffusion_model.` prefix and fp8
    /// handled); needs --text-encoder, --vae and --tokenizer.
    #[arg(long, global = true, value_name = "FILE")]
    pub dit: Option<PathBuf>,
    /// Single files: the umT5-XXL encoder (.safetensors or .pth; "scaled" fp8 dequantised).
    #[arg(long, global = true, value_name = "FILE")]
    pub text_encoder: Option<PathBuf>,
    /// Single files: the Wan2.1 VAE (.safetensors or .pth).
    #[arg(long, global = true, value_name = "FILE")]
    pub vae: Option<PathBuf>,
    /// Single files: google/umt5-xxl's tokenizer.json (or its folder).
    #[arg(long, global = true, value_name = "PATH")]
    pub tokenizer: Option<PathBuf>,
    /// Single files, image-to-video: the CLIP ViT-H/14 image encoder (ComfyUI's
    /// clip_vision_h.safetensors, transformers or Wan key names).
    #[arg(long, global = true, value_name = "FILE")]
    pub clip_vision: Option<PathBuf>,
    /// Use seeded random weights for a built-in config instead of a checkpoint
    /// (wan-1.3b, wan-14b, tiny) — for benchmarks; outputs are noise.
    #[arg(long, value_name = "CONFIG", global = true)]
    pub random_weights: Option<String>,
    /// auto | cpu | cuda | cuda:N. auto uses CUDA when a driver and GPU are present.
    #[arg(long, default_value = "auto", global = true)]
    pub device: String,
    /// CPU threads (default: all cores).
    #[arg(long, global = true)]
    pub threads: Option<usize>,
}

/// What one generation computes: shared by `generate` and `eval` (which writes no video).
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// The caption of the video. The embedded tiny-wan knows one template,
    /// "a {colour} {shape} moving {direction} on a {colour} background" (`jenga inspect` lists
    /// its words per slot); words outside its vocabulary are left out, with a note.
    #[arg(long, short)]
    pub prompt: String,
    /// Negative prompt (the unconditional branch of classifier-free guidance). Default: Wan's
    /// own negative prompt for checkpoints with umT5, empty for tiny-wan and random weights;
    /// `--negative-prompt ""` is an empty one.
    #[arg(long)]
    pub negative_prompt: Option<String>,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub size: VideoSize,
    /// Denoising steps, 1..=1000 (default: the model's, 30 for tiny-wan).
    #[arg(long, allow_negative_numbers = true, value_parser = parse_steps)]
    pub steps: Option<usize>,
    /// Flow-matching schedule shift, > 0 (default: the model's).
    #[arg(long, allow_negative_numbers = true, value_parser = parse_shift)]
    pub shift: Option<f64>,
    /// Classifier-free guidance scale, 0..=100 (1 = no guidance, one forward per step;
    /// default: the model's). For HunyuanVideo (guidance-distilled) it is the embedded
    /// guidance (default 6; also `--embedded-guidance`), still one forward per step.
    #[arg(long, alias = "embedded-guidance", allow_negative_numbers = true, value_parser = parse_guidance)]
    pub guidance: Option<f32>,
    /// ODE solver: unipc (Wan's FlowUniPCMultistepScheduler, the Wan default) or euler
    /// (HunyuanVideo's; tiny-wan's default). Default: the model family's.
    #[arg(long)]
    pub solver: Option<String>,
    /// Seed of the initial noise (and of the re-noise at ProRes stage switches): the same
    /// seed, prompt and flags give the same video.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Start from this noise instead of the seeded one: a safetensors file with tensor
    /// `noise` of the start latent's shape [16, T, H, W] (T = (frames − 1)/4 + 1, H = height/8,
    /// W = width/8; at the first stage's size under ProRes), to reproduce another engine's run.
    #[arg(long, value_name = "FILE.safetensors")]
    pub init_noise: Option<PathBuf>,
    /// Image-to-video (a Wan2.1 I2V checkpoint): the first frame, PNG, JPEG or WebP. The video
    /// takes the image's aspect ratio at the area --height x --width (default 720x1280, or
    /// 480x832 for a checkpoint named 480P), rounded down to multiples of 16.
    #[arg(long, value_name = "FILE")]
    pub image: Option<PathBuf>,
    #[command(flatten)]
    pub jenga: JengaArgs,
    #[command(flatten)]
    pub parallel: ParallelArgs,
}

/// Several ranks per video: sequence parallelism (Ulysses, ring) and CFG parallelism.
#[derive(Args, Debug, Clone, Default)]
pub struct ParallelArgs {
    /// GPUs per video on this host: one process per GPU, NCCL between them (CUDA only). The
    /// layout comes from --ulysses/--ring/--cfg-parallel, or is chosen from the count.
    #[arg(long, value_parser = parse_ranks)]
    pub gpus: Option<usize>,
    /// Ranks as threads of this one process: the parallel path on the CPU, for checking it
    /// (no speed-up: the threads share the cores).
    #[arg(long, value_parser = parse_ranks, conflicts_with = "gpus")]
    pub ranks: Option<usize>,
    /// Ulysses degree: ranks that trade tokens for heads around each attention (must divide
    /// the heads: 12 for Wan-1.3B, 40 for Wan-14B).
    #[arg(long, value_parser = parse_ranks)]
    pub ulysses: Option<usize>,
    /// Ring degree: ranks that gather keys and values (for what --ulysses cannot divide).
    #[arg(long, value_parser = parse_ranks)]
    pub ring: Option<usize>,
    /// The conditional and unconditional rows of guidance on different ranks (default: on
    /// when the rank count is even and guidance is on; `--cfg-parallel false` turns it off).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub cfg_parallel: Option<bool>,
    /// Hosts of a multi-host run; every host runs the same command with its own
    /// --node-rank, and --master naming host 0.
    #[arg(long, default_value_t = 1, value_parser = parse_ranks)]
    pub nodes: usize,
    /// This host's index, 0..nodes.
    #[arg(long, default_value_t = 0)]
    pub node_rank: usize,
    /// Host 0's ADDR:PORT, where the other hosts fetch the NCCL id (multi-host only).
    #[arg(long, value_name = "ADDR:PORT")]
    pub master: Option<std::net::SocketAddr>,
}

fn parse_ranks(s: &str) -> Result<usize, String> {
    parse_int_in(s, 1, 4096).map(|v| v as usize)
}

#[derive(Args, Debug, Clone)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Output: FILE.mp4, FILE.gif, or a new or empty directory for PNG frames (a directory
    /// holding only this tool's frame_*.png is replaced; anything else is refused).
    #[arg(long, short, default_value = "jenga.mp4")]
    pub out: PathBuf,
    /// Frames per second of the written video, 1..=240.
    #[arg(long, default_value_t = 8, allow_negative_numbers = true, value_parser = parse_fps)]
    pub fps: u32,
    /// Integer nearest-neighbour upscale of the written frames, 1..=32 (default: tiny-wan's
    /// 32 px frames to 256 px, else 1).
    #[arg(long, allow_negative_numbers = true, value_parser = parse_upscale)]
    pub upscale: Option<u32>,
    /// Also write a PNG strip of the frames side by side (for docs and quick looks).
    #[arg(long, value_name = "FILE.png")]
    pub strip: Option<PathBuf>,
    /// Suppress the progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// The most denoising steps a run takes (the flow-matching schedules have 1000 train steps).
pub const MAX_STEPS: usize = 1000;

fn parse_int_in(s: &str, lo: i64, hi: i64) -> Result<i64, String> {
    let v: i64 = s
        .trim()
        .parse()
        .map_err(|_| format!("not a whole number (expected {lo}..={hi})"))?;
    if !(lo..=hi).contains(&v) {
        return Err(format!("must be in {lo}..={hi}"));
    }
    Ok(v)
}

fn parse_steps(s: &str) -> Result<usize, String> {
    parse_int_in(s, 1, MAX_STEPS as i64).map(|v| v as usize)
}

fn parse_fps(s: &str) -> Result<u32, String> {
    parse_int_in(s, 1, 240).map(|v| v as u32)
}

fn parse_upscale(s: &str) -> Result<u32, String> {
    parse_int_in(s, 1, 32).map(|v| v as u32)
}

/// 0 passes here so that the size check, which knows the patch size, names it.
fn parse_size(s: &str) -> Result<usize, String> {
    parse_int_in(s, 0, 1 << 20)
        .map(|v| v as usize)
        .map_err(|_| "must be a positive whole number".into())
}

fn parse_guidance(s: &str) -> Result<f32, String> {
    match s.trim().parse::<f32>() {
        Ok(v) if v.is_finite() && (0.0..=100.0).contains(&v) => Ok(v),
        Ok(_) => Err("must be a number in 0..=100".into()),
        Err(_) => Err("not a number (expected 0..=100)".into()),
    }
}

fn parse_shift(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 1000.0 => Ok(v),
        Ok(_) => Err("must be a number in (0, 1000]".into()),
        Err(_) => Err("not a number (expected a positive number)".into()),
    }
}

/// Attention policy, ProRes and step-skip flags (the Jenga seed's names).
#[derive(Args, Debug, Clone)]
pub struct JengaArgs {
    /// dense | jenga | svg | draft. Default: jenga when a preset or Jenga flag is given,
    /// else dense. svg = Sparse VideoGen, draft = DraftAttention (docs/POLICIES.md).
    #[arg(long)]
    pub policy: Option<String>,
    /// Wan: base | turbo (the official scripts per checkpoint) | turbo-15 | flash-wan |
    /// 3stage-wan (jenga-rs's own; flash and 3stage are aliases); HunyuanVideo: base | turbo |
    /// flash | 3stage. Expands to the flags below, shift and guidance (explicit flags override).
    #[arg(long)]
    pub preset: Option<String>,
    /// Attention drop rate per stage (keep ratio k = 1 − drop); with one stage, two values
    /// split the steps in half.
    #[arg(long, num_args = 1..)]
    pub sa_drop_rates: Option<Vec<f64>>,
    /// Cumulative-probability cutoff p of the importance mask (one, or one per stage).
    #[arg(long, num_args = 1..)]
    pub p_remain_rates: Option<Vec<f64>>,
    /// ProRes: spatial scale of each stage (last = 1.0).
    #[arg(long, num_args = 1..)]
    pub res_rate_list: Option<Vec<f64>>,
    /// ProRes: fraction of the steps at which each stage ends (increasing, last = 1.0).
    #[arg(long, num_args = 1..)]
    pub step_rate_list: Option<Vec<f64>>,
    /// ProRes: scheduler shift of each stage.
    #[arg(long, num_args = 1..)]
    pub scheduler_shift_list: Option<Vec<f64>>,
    /// ProRes re-noise at a resolution switch: wan (x̂0 at the old σ[i], noise at the old
    /// σ[i+1]), hunyuan (re-shift first, both at the new grid) or consistent (jenga-rs's own:
    /// x̂0 at the old σ[i], noise at the new σ[i+1]). Default: the model family's.
    #[arg(long)]
    pub prores_renoise: Option<String>,
    /// Up-sampling between stages: trilinear (reference code) or area (paper).
    #[arg(long, default_value = "trilinear")]
    pub interp: String,
    /// Step skipping: none | static (jenga-rs's 23-of-50 schedule) | official (HunyuanVideo's
    /// list, jenga_hyvideo.py) | teacache.
    #[arg(long)]
    pub skip: Option<String>,
    /// Static skip: steps kept out of every 50 [default: the preset's, else 23].
    #[arg(long)]
    pub skip_keep: Option<usize>,
    /// TeaCache threshold on the accumulated rescaled relative L1 change [default: the
    /// preset's, else 0.15].
    #[arg(long)]
    pub teacache_thresh: Option<f64>,
    /// Text-attention amplifier strength ρ (β = −ρ·log(N_s/N_S) in low-resolution stages).
    #[arg(long, default_value_t = 0.5)]
    pub text_amp_rho: f64,
    /// Token curve: sliced or gilbert3d (default: the model family's, as the official
    /// scripts: sliced for Wan, gilbert3d for HunyuanVideo).
    #[arg(long, default_value = "auto")]
    pub curve: String,
    /// Tokens per block of the block-sparse attention.
    #[arg(long, default_value_t = 128)]
    pub block: usize,
    /// Sparse VideoGen / DraftAttention flags (`--svg-*`, `--draft-*`).
    #[command(flatten)]
    pub peers: crate::policy::PeerArgs,
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    pub gen: RunArgs,
    /// Evaluate each of these presets (comma-separated), e.g. base,turbo,flash,3stage.
    #[arg(long, value_delimiter = ',')]
    pub presets: Vec<String>,
    /// Measure attention recall on calls of every N-th step.
    #[arg(long, default_value_t = 5)]
    pub recall_every: usize,
    /// Write PNG pictures of kept blocks (a few layers/heads/steps) to DIR.
    #[arg(long, value_name = "DIR")]
    pub save_masks: Option<PathBuf>,
    /// Write the markdown report to FILE.md.
    #[arg(long, value_name = "FILE.md")]
    pub report: Option<PathBuf>,
    /// Write frame strips (dense first, then each variant) to FILE.png.
    #[arg(long, value_name = "FILE.png")]
    pub strips: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    #[command(subcommand)]
    pub what: Option<InspectWhat>,
    /// Wan model directory (config.json + safetensors). Default: the embedded tiny-wan.
    #[arg(long)]
    pub model: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum InspectWhat {
    /// What a preset or a set of flags will do, before running it: one tab-separated line per
    /// step (`step stage grid t sigma computed drop p`), planned as `generate` plans, with no
    /// weights loaded.
    Schedule(Box<ScheduleArgs>),
    /// Print the raster index (z·h·w + y·w + x) of each position of a token curve, one per line.
    Curve {
        /// Frames of the token grid (latent frames for Wan).
        t: usize,
        /// Rows of the token grid.
        h: usize,
        /// Columns of the token grid.
        w: usize,
        /// gilbert3d (HunyuanVideo) or sliced (Wan2.1).
        #[arg(long, default_value = "sliced")]
        kind: String,
        /// Draw the curve (frames side by side) to a PNG instead of printing it.
        #[arg(long)]
        png: Option<PathBuf>,
    },
}

#[derive(Args, Debug)]
pub struct ScheduleArgs {
    /// wan-1.3b | wan-14b | hunyuan: the family's official defaults (default: the model's).
    #[arg(long)]
    pub family: Option<String>,
    /// Wan model directory (its config only). Default: the embedded tiny-wan.
    #[arg(long)]
    pub model: Option<PathBuf>,
    #[command(flatten)]
    pub size: VideoSize,
    /// Denoising steps (default: the family's).
    #[arg(long, allow_negative_numbers = true, value_parser = parse_steps)]
    pub steps: Option<usize>,
    /// Schedule shift (default: the preset's, else the family's).
    #[arg(long, allow_negative_numbers = true, value_parser = parse_shift)]
    pub shift: Option<f64>,
    /// unipc | euler (default: the family's).
    #[arg(long)]
    pub solver: Option<String>,
    #[command(flatten)]
    pub jenga: JengaArgs,
}

/// `jenga bench policies` flags (model and device flags are the global ones).
#[derive(clap::Args, Debug, Clone)]
pub struct PoliciesArgs {
    #[arg(long, default_value = "a red circle moving right on a blue background")]
    pub prompt: String,
    #[command(flatten)]
    pub size: crate::args::VideoSize,
    /// Denoising steps (default: the model's, 30 for tiny-wan).
    #[arg(long)]
    pub steps: Option<usize>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Variants compared with dense, comma-separated: a policy name followed by any of
    /// `generate`'s policy flags, e.g. "draft --draft-sparsity 0.5".
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "jenga --sa-drop-rates 0.7 0.8 --p-remain-rates 0.9,svg,draft"
    )]
    pub variants: Vec<String>,
    /// Measure attention recall on the calls of every N-th step (0 = never).
    #[arg(long, default_value_t = 5)]
    pub recall_every: usize,
    /// Write the table into FILE (replacing its `bench-policies` section, or appending one).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
}
