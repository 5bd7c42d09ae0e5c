#!/usr/bin/env python3
"""Golden for the CLIP vision tower of Wan2.1 I2V (crates/models/tests/clip_vision.rs).

Wan2.1 image-to-video conditions on the penultimate hidden states of the open-clip ViT-H/14
visual tower (`use_31_block=True`; diffusers: `CLIPVisionModel(...).hidden_states[-2]`, as
`WanImageToVideoPipeline.encode_image` takes them). A small random transformers
`CLIPVisionModel` (patch 14 at 224 px as ViT-H/14, so 257 tokens; hidden 64, 4 heads, MLP 128,
3 layers, exact GELU, LayerNorm eps 1e-5) is saved with `save_pretrained` into
tests/fixtures/clip/image_encoder/ and run in float32 on a fixed pixel tensor.

Output tests/fixtures/clip/golden.safetensors: `pixels` [1, 3, 224, 224] (normalised, as the
processor hands them), `penultimate` [1, 257, 64].

    /work/venv/bin/python tools/make_clip_golden.py
"""

import os
import shutil

import torch
from safetensors.torch import save_file
from transformers import CLIPVisionConfig, CLIPVisionModel

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "clip")


def main():
    torch.manual_seed(0)
    cfg = CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                           num_attention_heads=4, patch_size=14, image_size=224,
                           hidden_act="gelu", layer_norm_eps=1e-5, projection_dim=32)
    m = CLIPVisionModel(cfg).eval()
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "norm" in n:
                p.normal_(1.0 if n.endswith("weight") else 0.0, 0.1)
            elif p.dim() >= 2:
                p.normal_(0.0, 0.1)
            else:
                p.normal_(0.0, 0.1)
    path = os.path.join(OUT, "image_encoder")
    shutil.rmtree(path, ignore_errors=True)
    m.save_pretrained(path)
    m = CLIPVisionModel.from_pretrained(path).eval()
    g = torch.Generator().manual_seed(3)
    pixels = torch.randn(1, 3, 224, 224, generator=g)
    with torch.no_grad():
        h = m(pixel_values=pixels, output_hidden_states=True).hidden_states[-2]
    print("penultimate", tuple(h.shape), h.std().item())
    save_file({"pixels": pixels, "penultimate": h.contiguous()},
              os.path.join(OUT, "golden.safetensors"))


if __name__ == "__main__":
    main()
