//! The official checkpoint's names (`ckpts/hunyuan-video-t2v-720p/transformers/
//! mp_rank_00_model_states.pt`, Tencent/HunyuanVideo `hyvideo/modules/models.py`) served under
//! diffusers' names, so one loader reads both. The official file fuses q|k|v (and, in the
//! single-stream blocks, q|k|v|mlp in `linear1`) and stores the final modulation as
//! shift|scale where diffusers has scale|shift; those are cut or swapped here on load.

use crate::weights::WeightSource;
use crate::{ModelError, Result};

/// Which rows of the official tensor a diffusers tensor is.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Rows {
    All,
    /// Rows `start..start + len` (of the leading dim).
    Range(usize, usize),
    /// The two halves swapped.
    Swap,
}

/// A source in the official names, read in diffusers' names.
pub struct OfficialNames<'a> {
    src: &'a dyn WeightSource,
    /// Model width (the fused tensors are cut in rows of it).
    dim: usize,
}

impl<'a> OfficialNames<'a> {
    pub fn new(src: &'a dyn WeightSource, dim: usize) -> Self {
        OfficialNames { src, dim }
    }

    /// Whether `src` holds the official names.
    pub fn detect(src: &dyn WeightSource) -> bool {
        src.contains("double_blocks.0.img_attn_qkv.weight") || src.contains("img_in.proj.weight")
    }

    /// The official name and rows of a diffusers name.
    fn map(&self, name: &str) -> (String, Rows) {
        let d = self.dim;
        let qkv = |n: &str, fused: &str, tail: &str| -> Option<(String, Rows)> {
            for (i, p) in ["q", "k", "v"].iter().enumerate() {
                let key = n.replace("{}", p);
                if let Some(rest) = name.strip_suffix(tail).and_then(|s| s.strip_suffix(&key)) {
                    return Some((format!("{rest}{fused}{tail}"), Rows::Range(i * d, d)));
                }
            }
            None
        };
        let tail = if name.ends_with(".weight") {
            ".weight"
        } else {
            ".bias"
        };
        if let Some(rest) = name.strip_prefix("context_embedder.") {
            let o = format!("txt_in.{rest}")
                .replace(
                    "token_refiner.refiner_blocks",
                    "individual_token_refiner.blocks",
                )
                .replace(
                    "time_text_embed.timestep_embedder.linear_1",
                    "t_embedder.mlp.0",
                )
                .replace(
                    "time_text_embed.timestep_embedder.linear_2",
                    "t_embedder.mlp.2",
                )
                .replace("time_text_embed.text_embedder", "c_embedder")
                .replace("proj_in", "input_embedder")
                .replace("norm_out.linear", "adaLN_modulation.1")
                .replace("ff.net.0.proj", "mlp.fc1")
                .replace("ff.net.2", "mlp.fc2")
                .replace("attn.to_out.0", "self_attn_proj");
            for (i, p) in ["q", "k", "v"].iter().enumerate() {
                let key = format!("attn.to_{p}{tail}");
                if let Some(base) = o.strip_suffix(&key) {
                    return (format!("{base}self_attn_qkv{tail}"), Rows::Range(i * d, d));
                }
            }
            return (o, Rows::All);
        }
        if let Some(rest) = name.strip_prefix("transformer_blocks.") {
            let n = format!("double_blocks.{rest}");
            if let Some(r) = qkv("attn.to_{}", "img_attn_qkv", tail) {
                return (
                    r.0.replacen("transformer_blocks.", "double_blocks.", 1),
                    r.1,
                );
            }
            if let Some(r) = qkv("attn.add_{}_proj", "txt_attn_qkv", tail) {
                return (
                    r.0.replacen("transformer_blocks.", "double_blocks.", 1),
                    r.1,
                );
            }
            let mut o = n;
            for (a, b) in [
                ("attn.norm_added_q", "txt_attn_q_norm"),
                ("attn.norm_added_k", "txt_attn_k_norm"),
                ("attn.norm_q", "img_attn_q_norm"),
                ("attn.norm_k", "img_attn_k_norm"),
                ("attn.to_out.0", "img_attn_proj"),
                ("attn.to_add_out", "txt_attn_proj"),
                ("norm1_context.linear", "txt_mod.linear"),
                ("norm1.linear", "img_mod.linear"),
                ("ff_context.net.0.proj", "txt_mlp.fc1"),
                ("ff_context.net.2", "txt_mlp.fc2"),
                ("ff.net.0.proj", "img_mlp.fc1"),
                ("ff.net.2", "img_mlp.fc2"),
            ] {
                o = o.replace(a, b);
            }
            return (o, Rows::All);
        }
        if let Some(rest) = name.strip_prefix("single_transformer_blocks.") {
            if let Some(r) = qkv("attn.to_{}", "linear1", tail) {
                return (
                    r.0.replacen("single_transformer_blocks.", "single_blocks.", 1),
                    r.1,
                );
            }
            if let Some(base) = name.strip_suffix(&format!("proj_mlp{tail}")) {
                let base = base.replacen("single_transformer_blocks.", "single_blocks.", 1);
                // the mlp rows follow q|k|v; their count is what the stored tensor has left
                return (
                    format!("{base}linear1{tail}"),
                    Rows::Range(3 * d, usize::MAX),
                );
            }
            let o = format!("single_blocks.{rest}")
                .replace("proj_out", "linear2")
                .replace("attn.norm_q", "q_norm")
                .replace("attn.norm_k", "k_norm")
                .replace("norm.linear", "modulation.linear");
            return (o, Rows::All);
        }
        if let Some(rest) = name.strip_prefix("norm_out.linear") {
            return (format!("final_layer.adaLN_modulation.1{rest}"), Rows::Swap);
        }
        if let Some(rest) = name.strip_prefix("proj_out") {
            return (format!("final_layer.linear{rest}"), Rows::All);
        }
        for (a, b) in [
            ("x_embedder", "img_in"),
            (
                "time_text_embed.timestep_embedder.linear_1",
                "time_in.mlp.0",
            ),
            (
                "time_text_embed.timestep_embedder.linear_2",
                "time_in.mlp.2",
            ),
            (
                "time_text_embed.guidance_embedder.linear_1",
                "guidance_in.mlp.0",
            ),
            (
                "time_text_embed.guidance_embedder.linear_2",
                "guidance_in.mlp.2",
            ),
            (
                "time_text_embed.text_embedder.linear_1",
                "vector_in.in_layer",
            ),
            (
                "time_text_embed.text_embedder.linear_2",
                "vector_in.out_layer",
            ),
        ] {
            if let Some(rest) = name.strip_prefix(a) {
                return (format!("{b}{rest}"), Rows::All);
            }
        }
        (name.to_string(), Rows::All)
    }
}

impl WeightSource for OfficialNames<'_> {
    fn load(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let (key, rows) = self.map(name);
        let info = self.src.info(&key).ok_or_else(|| ModelError::Missing {
            name: format!("{key} (for {name})"),
            files: self.src.describe(),
        })?;
        let stored = info.shape.clone();
        let all = self.src.load(&key, &stored)?;
        let lead = stored.first().copied().unwrap_or(1);
        let row: usize = stored.iter().skip(1).product();
        let (start, len) = match rows {
            Rows::All => (0, lead),
            Rows::Range(s, l) => (s, l.min(lead.saturating_sub(s))),
            Rows::Swap => (0, lead),
        };
        let want: usize = shape.iter().product();
        if start + len > lead || len * row != want {
            return Err(ModelError::Invalid(format!(
                "{key}: stored {stored:?}, rows {start}..{} do not give {name} {shape:?}",
                start + len
            )));
        }
        Ok(match rows {
            Rows::Swap => {
                let h = lead / 2 * row;
                [&all[h..], &all[..h]].concat()
            }
            _ => all[start * row..(start + len) * row].to_vec(),
        })
    }
    fn contains(&self, name: &str) -> bool {
        self.src.contains(&self.map(name).0)
    }
    fn file_of(&self, name: &str) -> Option<std::path::PathBuf> {
        self.src.file_of(&self.map(name).0)
    }
    fn describe(&self) -> String {
        format!("{} (official HunyuanVideo names)", self.src.describe())
    }
    fn param_count(&self) -> Option<usize> {
        self.src.param_count()
    }
}
