"""Goldens for the Wan2.1 VAE (crates/models/tests/wan_vae.rs).

A small random diffusers `AutoencoderKLWan` (base_dim 4, dim_mult [1, 2, 4, 4] as the real one, 2 residual
blocks per level as the real one, so the original checkpoint's flat indices are the real ones;
z_dim 16 and the Wan2.1 temporal down/upsampling [False, True, True]) saved with
`save_pretrained`, the same weights in the original Wan naming (`Wan2.1_VAE.pth`'s keys, checked
against diffusers' own `convert_wan_vae_to_diffusers`), and f32 CPU outputs:

- golden_decode.safetensors: `z_norm` [1, 16, 3, 8, 8] (the DiT's latent), `z` = z_norm·std +
  mean (as WanPipeline de-normalises), `decoded` [1, 3, 9, 64, 64] = vae.decode(z), and
  `decoded_tiled` with enable_tiling(48, 48, 32, 32) (4 tiles, blended);
- golden_encode.safetensors: `video` [1, 3, 9, 64, 64], `mean` (the posterior mode, chunked
  1+4+4), `mean_tiled` (same tiling), `mean_norm` = (mean − latents_mean)/latents_std.

Run: /work/venv/bin/python tools/make_wan_vae_golden.py
"""

import json
import os
import re

import torch
from diffusers import AutoencoderKLWan
from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "wan_vae")
NRB = 2


def to_original(key: str) -> str:
    """diffusers key -> the original Wan repo's (inverse of the converter, for this config)."""
    res = {
        "norm1.gamma": "residual.0.gamma",
        "conv1": "residual.2",
        "norm2.gamma": "residual.3.gamma",
        "conv2": "residual.6",
        "conv_shortcut": "shortcut",
    }

    def res_tail(t):
        for a, b in res.items():
            if t.startswith(a):
                return b + t[len(a):]
        raise KeyError(t)

    if key.startswith("quant_conv."):
        return "conv1." + key[len("quant_conv."):]
    if key.startswith("post_quant_conv."):
        return "conv2." + key[len("post_quant_conv."):]
    side, rest = key.split(".", 1)
    if rest.startswith("conv_in."):
        return f"{side}.conv1.{rest[len('conv_in.'):]}"
    if rest.startswith("norm_out."):
        return f"{side}.head.0.{rest[len('norm_out.'):]}"
    if rest.startswith("conv_out."):
        return f"{side}.head.2.{rest[len('conv_out.'):]}"
    m = re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.*)", rest)
    if m:
        kind, i, t = m.group(1), int(m.group(2)), m.group(3)
        if kind == "attentions":
            return f"{side}.middle.1.{t}"
        return f"{side}.middle.{2 * i}.{res_tail(t)}"
    m = re.match(r"down_blocks\.(\d+)\.(.*)", rest)
    if m:
        i, t = m.group(1), m.group(2)
        if t.startswith(("resample", "time_conv")):
            return f"{side}.downsamples.{i}.{t}"
        return f"{side}.downsamples.{i}.{res_tail(t)}"
    m = re.match(r"up_blocks\.(\d+)\.(resnets\.(\d+)|upsamplers\.0)\.(.*)", rest)
    if m:
        lvl, t = int(m.group(1)), m.group(4)
        if m.group(3) is not None:
            return f"{side}.upsamples.{lvl * (NRB + 2) + int(m.group(3))}.{res_tail(t)}"
        return f"{side}.upsamples.{lvl * (NRB + 2) + NRB + 1}.{t}"
    raise KeyError(key)


def main():
    torch.manual_seed(0)
    vae = AutoencoderKLWan(
        base_dim=4,
        z_dim=16,
        dim_mult=[1, 2, 4, 4],
        num_res_blocks=NRB,
        attn_scales=[],
        temperal_downsample=[False, True, True],
    ).eval()
    # Random norms and biases too (gamma is ones, biases zeros after init), at scales that keep
    # activations O(1) through the depth.
    with torch.no_grad():
        for name, p in vae.named_parameters():
            if name.endswith("gamma"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.05 * torch.randn_like(p))
        vae.decoder.conv_out.weight.mul_(0.5)

    os.makedirs(OUT, exist_ok=True)
    vae.save_pretrained(os.path.join(OUT, "diffusers"), safe_serialization=True)

    sd = {k: v.detach().clone().contiguous() for k, v in vae.state_dict().items()}
    orig = {to_original(k): v for k, v in sd.items()}
    back = convert_wan_vae_to_diffusers(dict(orig))
    assert set(back) == set(sd), sorted(set(back) ^ set(sd))
    assert all(torch.equal(back[k], sd[k]) for k in sd)
    save_file(orig, os.path.join(OUT, "original.safetensors"))

    cfg = vae.config
    mean = torch.tensor(cfg.latents_mean).view(1, 16, 1, 1, 1)
    std = torch.tensor(cfg.latents_std).view(1, 16, 1, 1, 1)

    g = torch.Generator().manual_seed(1)
    z_norm = torch.randn(1, 16, 3, 8, 8, generator=g)
    z = z_norm * std + mean
    # A smooth clip in [-1, 1] (a real encode sees images, not white noise).
    t = torch.linspace(0, 1, 9).view(1, 1, 9, 1, 1)
    yy = torch.linspace(-1, 1, 64).view(1, 1, 1, 64, 1)
    xx = torch.linspace(-1, 1, 64).view(1, 1, 1, 1, 64)
    ph = torch.tensor([0.0, 2.0, 4.0]).view(1, 3, 1, 1, 1)
    video = torch.sin(3 * xx + 2 * yy + 4 * t + ph) * 0.8
    video = video + 0.1 * torch.randn(1, 3, 9, 64, 64, generator=g)
    video = video.clamp(-1, 1)

    with torch.no_grad():
        vae.disable_tiling()
        decoded = vae.decode(z).sample
        mu = vae.encode(video).latent_dist.mode()
        vae.enable_tiling(48, 48, 32, 32)
        decoded_tiled = vae.decode(z).sample
        mu_tiled = vae.encode(video).latent_dist.mode()
    mean_norm = (mu - mean) / std

    frac = (decoded.abs() >= 1.0).float().mean().item()
    print(f"decoded std {decoded.std():.3f}, clamped fraction {frac:.3f}")
    print(f"mean std {mu.std():.3f}, tiled vs plain max {(decoded - decoded_tiled).abs().max():.3f}")
    assert frac < 0.05, "too many clamped values: the golden would not test much"

    save_file(
        {
            "z_norm": z_norm.contiguous(),
            "z": z.contiguous(),
            "decoded": decoded.contiguous(),
            "decoded_tiled": decoded_tiled.contiguous(),
        },
        os.path.join(OUT, "golden_decode.safetensors"),
    )
    save_file(
        {
            "video": video.contiguous(),
            "mean": mu.contiguous(),
            "mean_tiled": mu_tiled.contiguous(),
            "mean_norm": mean_norm.contiguous(),
        },
        os.path.join(OUT, "golden_encode.safetensors"),
    )
    with open(os.path.join(OUT, "tiling.json"), "w") as f:
        json.dump({"tile_sample_min": 48, "tile_sample_stride": 32}, f)
    for name in sorted(os.listdir(OUT)):
        p = os.path.join(OUT, name)
        if os.path.isfile(p):
            print(f"{name}: {os.path.getsize(p)} bytes")


if __name__ == "__main__":
    main()
