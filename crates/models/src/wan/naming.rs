//! Wan checkpoint key names: the original repo's (`blocks.0.self_attn.q.weight`, the names the
//! model is written with) or diffusers' `WanTransformer3DModel`'s
//! (`blocks.0.attn1.to_q.weight`). The table is `TRANSFORMER_KEYS_RENAME_DICT` of diffusers'
//! `scripts/convert_wan_to_diffusers.py`, applied the way that script applies it: every entry
//! in order, each a plain substring replacement (so `norm2`/`norm3` swap through a placeholder:
//! Wan's cross-attention norm is `norm3`, diffusers' is `norm2`).

use crate::nn::KeyMap;
use crate::WeightSource;

/// Original → diffusers, in the converter's order.
pub const DIFFUSERS_RENAMES: [(&str, &str); 33] = [
    (
        "time_embedding.0",
        "condition_embedder.time_embedder.linear_1",
    ),
    (
        "time_embedding.2",
        "condition_embedder.time_embedder.linear_2",
    ),
    (
        "text_embedding.0",
        "condition_embedder.text_embedder.linear_1",
    ),
    (
        "text_embedding.2",
        "condition_embedder.text_embedder.linear_2",
    ),
    ("time_projection.1", "condition_embedder.time_proj"),
    ("head.modulation", "scale_shift_table"),
    ("head.head", "proj_out"),
    ("modulation", "scale_shift_table"),
    ("ffn.0", "ffn.net.0.proj"),
    ("ffn.2", "ffn.net.2"),
    ("norm2", "norm__placeholder"),
    ("norm3", "norm2"),
    ("norm__placeholder", "norm3"),
    ("img_emb.proj.0", "condition_embedder.image_embedder.norm1"),
    (
        "img_emb.proj.1",
        "condition_embedder.image_embedder.ff.net.0.proj",
    ),
    (
        "img_emb.proj.3",
        "condition_embedder.image_embedder.ff.net.2",
    ),
    ("img_emb.proj.4", "condition_embedder.image_embedder.norm2"),
    (
        "img_emb.emb_pos",
        "condition_embedder.image_embedder.pos_embed",
    ),
    ("self_attn.q", "attn1.to_q"),
    ("self_attn.k", "attn1.to_k"),
    ("self_attn.v", "attn1.to_v"),
    ("self_attn.o", "attn1.to_out.0"),
    ("self_attn.norm_q", "attn1.norm_q"),
    ("self_attn.norm_k", "attn1.norm_k"),
    ("cross_attn.q", "attn2.to_q"),
    ("cross_attn.k", "attn2.to_k"),
    ("cross_attn.v", "attn2.to_v"),
    ("cross_attn.o", "attn2.to_out.0"),
    ("cross_attn.norm_q", "attn2.norm_q"),
    ("cross_attn.norm_k", "attn2.norm_k"),
    ("attn2.to_k_img", "attn2.add_k_proj"),
    ("attn2.to_v_img", "attn2.add_v_proj"),
    ("attn2.norm_k_img", "attn2.norm_added_k"),
];

/// How a Wan checkpoint names its tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WanKeys {
    /// The original repo's names (also tiny-wan's and `--export`'s).
    Original,
    /// diffusers' `WanTransformer3DModel`.
    Diffusers,
}

/// An original Wan key → its diffusers name.
pub fn to_diffusers(key: &str) -> String {
    let mut k = key.to_string();
    for (from, to) in DIFFUSERS_RENAMES {
        if k.contains(from) {
            k = k.replace(from, to);
        }
    }
    k
}

impl WanKeys {
    /// Which naming `src` uses, from its keys: diffusers' checkpoints have
    /// `condition_embedder.*` and no `time_projection.1.*`. Generated weights (which hold every
    /// name) count as original.
    pub fn detect(src: &dyn WeightSource) -> WanKeys {
        if src.contains("condition_embedder.time_proj.weight")
            && !src.contains("time_projection.1.weight")
        {
            WanKeys::Diffusers
        } else {
            WanKeys::Original
        }
    }
}

impl WanKeys {
    /// `original (Wan repo)` / `diffusers (WanTransformer3DModel)`, for `jenga inspect`.
    pub fn naming_name(self) -> &'static str {
        match self {
            WanKeys::Original => "original (Wan repo)",
            WanKeys::Diffusers => "diffusers (WanTransformer3DModel)",
        }
    }
}

impl KeyMap for WanKeys {
    fn stored_key(&self, key: &str) -> String {
        match self {
            WanKeys::Original => key.to_string(),
            WanKeys::Diffusers => to_diffusers(key),
        }
    }
    fn naming(&self) -> &'static str {
        match self {
            WanKeys::Original => "original",
            WanKeys::Diffusers => "diffusers",
        }
    }
    /// diffusers' `scale_shift_table`s are `[1, 6, D]` / `[1, 2, D]` as Wan's `modulation`s, but
    /// exports squeezing the leading axis exist: accept any shape equal up to axes of size 1.
    fn loose_shape(&self, stored_key: &str) -> bool {
        *self == WanKeys::Diffusers && stored_key.ends_with("scale_shift_table")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn original_to_diffusers_names() {
        for (o, d) in [
            ("blocks.3.self_attn.q.weight", "blocks.3.attn1.to_q.weight"),
            ("blocks.3.self_attn.o.bias", "blocks.3.attn1.to_out.0.bias"),
            (
                "blocks.3.self_attn.norm_k.weight",
                "blocks.3.attn1.norm_k.weight",
            ),
            ("blocks.3.cross_attn.v.weight", "blocks.3.attn2.to_v.weight"),
            (
                "blocks.3.cross_attn.norm_q.weight",
                "blocks.3.attn2.norm_q.weight",
            ),
            ("blocks.3.norm3.weight", "blocks.3.norm2.weight"),
            ("blocks.3.norm3.bias", "blocks.3.norm2.bias"),
            ("blocks.3.ffn.0.weight", "blocks.3.ffn.net.0.proj.weight"),
            ("blocks.3.ffn.2.bias", "blocks.3.ffn.net.2.bias"),
            ("blocks.3.modulation", "blocks.3.scale_shift_table"),
            ("blocks.12.ffn.0.bias", "blocks.12.ffn.net.0.proj.bias"),
            ("head.modulation", "scale_shift_table"),
            ("head.head.weight", "proj_out.weight"),
            (
                "text_embedding.0.weight",
                "condition_embedder.text_embedder.linear_1.weight",
            ),
            (
                "text_embedding.2.bias",
                "condition_embedder.text_embedder.linear_2.bias",
            ),
            (
                "time_embedding.0.weight",
                "condition_embedder.time_embedder.linear_1.weight",
            ),
            (
                "time_embedding.2.weight",
                "condition_embedder.time_embedder.linear_2.weight",
            ),
            (
                "time_projection.1.weight",
                "condition_embedder.time_proj.weight",
            ),
            ("patch_embedding.weight", "patch_embedding.weight"),
        ] {
            assert_eq!(to_diffusers(o), d, "{o}");
        }
    }
}
