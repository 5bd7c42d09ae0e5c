//! Wan VAE key names. The model is written with the original repo's names (the keys of
//! `Wan2.1_VAE.pth`: `decoder.upsamples.4.residual.2.weight`); diffusers' `AutoencoderKLWan`
//! names the same tensors by block (`decoder.up_blocks.1.resnets.0.conv1.weight`). The mapping
//! is `convert_wan_vae_to_diffusers` of diffusers' `single_file_utils.py`, written for any
//! depth: the original decoder's flat `upsamples` list holds, per level, `num_res_blocks + 1`
//! residual blocks then the level's resample, so a flat index is (level, position).

use crate::nn::KeyMap;
use crate::WeightSource;

/// How a Wan VAE checkpoint names its tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WanVaeKeys {
    /// The original Wan repo's (`Wan2.1_VAE.pth`).
    Original,
    /// diffusers' `AutoencoderKLWan`; `per_level` = `num_res_blocks + 2` (the original decoder
    /// list's entries per level).
    Diffusers { per_level: usize },
}

/// The residual block's `nn.Sequential` indices → diffusers' names.
fn residual(tail: &str) -> String {
    for (from, to) in [
        ("residual.0.", "norm1."),
        ("residual.2.", "conv1."),
        ("residual.3.", "norm2."),
        ("residual.6.", "conv2."),
        ("shortcut.", "conv_shortcut."),
    ] {
        if let Some(rest) = tail.strip_prefix(from) {
            return format!("{to}{rest}");
        }
    }
    tail.to_string()
}

/// An original Wan VAE key → its diffusers name (`per_level` as in [`WanVaeKeys::Diffusers`]).
pub fn to_diffusers(key: &str, per_level: usize) -> String {
    if let Some(rest) = key.strip_prefix("conv1.") {
        return format!("quant_conv.{rest}");
    }
    if let Some(rest) = key.strip_prefix("conv2.") {
        return format!("post_quant_conv.{rest}");
    }
    let Some((side, rest)) = key.split_once('.') else {
        return key.to_string();
    };
    if let Some(r) = rest.strip_prefix("conv1.") {
        return format!("{side}.conv_in.{r}");
    }
    if let Some(r) = rest.strip_prefix("head.0.") {
        return format!("{side}.norm_out.{r}");
    }
    if let Some(r) = rest.strip_prefix("head.2.") {
        return format!("{side}.conv_out.{r}");
    }
    let indexed = |prefix: &str| -> Option<(usize, String)> {
        let r = rest.strip_prefix(prefix)?;
        let (n, tail) = r.split_once('.')?;
        Some((n.parse().ok()?, tail.to_string()))
    };
    if let Some((n, tail)) = indexed("middle.") {
        return match n {
            1 => format!("{side}.mid_block.attentions.0.{tail}"),
            _ => format!("{side}.mid_block.resnets.{}.{}", n / 2, residual(&tail)),
        };
    }
    if let Some((n, tail)) = indexed("downsamples.") {
        return format!("{side}.down_blocks.{n}.{}", residual(&tail));
    }
    if let Some((n, tail)) = indexed("upsamples.") {
        let (level, pos) = (n / per_level, n % per_level);
        return if pos + 1 == per_level {
            format!("{side}.up_blocks.{level}.upsamplers.0.{tail}")
        } else {
            format!("{side}.up_blocks.{level}.resnets.{pos}.{}", residual(&tail))
        };
    }
    key.to_string()
}

impl WanVaeKeys {
    /// Which naming `src` uses: diffusers' has `decoder.conv_in.*`, the original
    /// `decoder.conv1.*`. Generated weights (which hold every name) count as original.
    pub fn detect(src: &dyn WeightSource, num_res_blocks: usize) -> WanVaeKeys {
        if src.contains("decoder.conv_in.weight") && !src.contains("decoder.conv1.weight") {
            WanVaeKeys::Diffusers {
                per_level: num_res_blocks + 2,
            }
        } else {
            WanVaeKeys::Original
        }
    }
}

impl KeyMap for WanVaeKeys {
    fn stored_key(&self, key: &str) -> String {
        match *self {
            WanVaeKeys::Original => key.to_string(),
            WanVaeKeys::Diffusers { per_level } => to_diffusers(key, per_level),
        }
    }
    fn naming(&self) -> &'static str {
        match self {
            WanVaeKeys::Original => "original",
            WanVaeKeys::Diffusers { .. } => "diffusers",
        }
    }
    /// RMS-norm gammas are `[C, 1, 1, 1]` / `[C, 1, 1]`; exports squeezing them to `[C]` exist.
    fn loose_shape(&self, stored_key: &str) -> bool {
        stored_key.ends_with(".gamma")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The real Wan2.1 VAE's keys (num_res_blocks 2), as diffusers' converter maps them.
    #[test]
    fn converter_names() {
        for (o, d) in [
            ("conv1.weight", "quant_conv.weight"),
            ("conv2.bias", "post_quant_conv.bias"),
            ("encoder.conv1.weight", "encoder.conv_in.weight"),
            ("decoder.conv1.bias", "decoder.conv_in.bias"),
            ("encoder.head.0.gamma", "encoder.norm_out.gamma"),
            ("decoder.head.2.weight", "decoder.conv_out.weight"),
            (
                "encoder.middle.2.residual.6.weight",
                "encoder.mid_block.resnets.1.conv2.weight",
            ),
            (
                "decoder.middle.0.residual.0.gamma",
                "decoder.mid_block.resnets.0.norm1.gamma",
            ),
            (
                "decoder.middle.1.to_qkv.weight",
                "decoder.mid_block.attentions.0.to_qkv.weight",
            ),
            (
                "encoder.downsamples.2.resample.1.weight",
                "encoder.down_blocks.2.resample.1.weight",
            ),
            (
                "encoder.downsamples.3.shortcut.bias",
                "encoder.down_blocks.3.conv_shortcut.bias",
            ),
            (
                "encoder.downsamples.5.time_conv.weight",
                "encoder.down_blocks.5.time_conv.weight",
            ),
            (
                "decoder.upsamples.2.residual.3.gamma",
                "decoder.up_blocks.0.resnets.2.norm2.gamma",
            ),
            (
                "decoder.upsamples.3.time_conv.bias",
                "decoder.up_blocks.0.upsamplers.0.time_conv.bias",
            ),
            (
                "decoder.upsamples.4.shortcut.weight",
                "decoder.up_blocks.1.resnets.0.conv_shortcut.weight",
            ),
            (
                "decoder.upsamples.11.resample.1.weight",
                "decoder.up_blocks.2.upsamplers.0.resample.1.weight",
            ),
            (
                "decoder.upsamples.14.residual.6.bias",
                "decoder.up_blocks.3.resnets.2.conv2.bias",
            ),
        ] {
            assert_eq!(to_diffusers(o, 4), d, "{o}");
        }
    }
}
