"""Goldens for the HunyuanVideo VAE decoder (crates/models/tests/hunyuan_vae.rs).

A small random diffusers `AutoencoderKLHunyuanVideo` (block_out_channels (8, 16, 16, 32): the
up blocks go 32→32→16→16→8, so two of them have a shortcut conv; layers_per_block 1, norm
groups 4, latent_channels 16, the real 8x / 4x compression) saved with `save_pretrained` in
float16 (to keep the fixture small), of which `vae/diffusion_pytorch_model.safetensors` keeps
the decoder's and `post_quant_conv`'s tensors only (same names, same dtype: the encoder is not
used by a decode and would double the file). The goldens are computed in float32 on the CPU
from exactly those f16-rounded weights:

- golden_decode.safetensors: `latent` [1, 16, 3, 4, 4] (what the DiT produces), `video`
  [1, 3, 9, 32, 32] = vae.decode(latent / scaling_factor) (3 latent frames: no framewise
  decoding, no tiling: one pass through the decoder);
- golden_tiled.safetensors: `latent` [1, 16, 5, 6, 5], `video_tiled` = the same decode with
  diffusers' default framewise decoding (5 > 16 // 4 latent frames: tiles of 5 latent frames,
  3 apart, blended over 4 frames) and `enable_tiling(32, 32, stride 24, 24)` (tiles of 4x4
  latent pixels, 3 apart, blended over 8 pixels), and `video_untiled` (framewise decoding off,
  no tiling: one pass).

Run: /work/venv/bin/python tools/make_hunyuan_vae_golden.py
"""

import json
import os
import shutil
import tempfile

import torch
from diffusers import AutoencoderKLHunyuanVideo
from safetensors.torch import load_file, save_file

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "hunyuan_vae")
TILING = dict(
    tile_sample_min_height=32,
    tile_sample_min_width=32,
    tile_sample_stride_height=24,
    tile_sample_stride_width=24,
)


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


def main():
    torch.manual_seed(0)
    vae = AutoencoderKLHunyuanVideo(
        block_out_channels=(8, 16, 16, 32),
        layers_per_block=1,
        norm_num_groups=4,
        latent_channels=16,
    )
    # Random init leaves the norms at 1/0: perturb every parameter a little so that the affine
    # terms are exercised too.
    with torch.no_grad():
        for name, p in vae.named_parameters():
            if "norm" in name:
                p.copy_(p + 0.1 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.05 * torch.randn_like(p))
    vae = vae.to(torch.float16)

    os.makedirs(OUT, exist_ok=True)
    vdir = os.path.join(OUT, "vae")
    if os.path.isdir(vdir):
        shutil.rmtree(vdir)
    with tempfile.TemporaryDirectory() as tmp:
        vae.save_pretrained(tmp)
        sd = load_file(os.path.join(tmp, "diffusion_pytorch_model.safetensors"))
        keep = {k: v for k, v in sd.items() if k.startswith(("decoder.", "post_quant_conv."))}
        os.makedirs(vdir)
        save_file(keep, os.path.join(vdir, "diffusion_pytorch_model.safetensors"), metadata={"format": "pt"})
        shutil.copy(os.path.join(tmp, "config.json"), os.path.join(vdir, "config.json"))
    vae = vae.float().eval()
    sf = vae.config.scaling_factor

    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        latent = torch.randn(1, 16, 3, 4, 4, generator=g)
        video = vae.decode(latent / sf).sample
        save_file(
            {"latent": latent.contiguous(), "video": video.contiguous()},
            os.path.join(OUT, "golden_decode.safetensors"),
        )
        print("decode", tuple(latent.shape), "->", tuple(video.shape))

        latent = torch.randn(1, 16, 5, 6, 5, generator=g)
        vae.enable_tiling(**TILING)
        tiled = vae.decode(latent / sf).sample
        vae.disable_tiling()
        vae.use_framewise_decoding = False
        untiled = vae.decode(latent / sf).sample
        save_file(
            {
                "latent": latent.contiguous(),
                "video_tiled": tiled.contiguous(),
                "video_untiled": untiled.contiguous(),
            },
            os.path.join(OUT, "golden_tiled.safetensors"),
        )
        print("tiled", tuple(latent.shape), "->", tuple(tiled.shape))
        print(f"diffusers tiled vs untiled: rel-L2 {rel(tiled, untiled):.3e}, max {(tiled - untiled).abs().max():.3e}")
    with open(os.path.join(OUT, "tiling.json"), "w") as f:
        json.dump(TILING, f, indent=2)


if __name__ == "__main__":
    main()
