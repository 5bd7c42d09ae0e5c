#!/usr/bin/env python3
"""Reference for `jenga bench i2v`: transformers' CLIPVisionModel (penultimate hidden states)
and diffusers' i2v WanTransformer3DModel (one forward) on the same weights and inputs.

Make random full-size weights once (Wan2.1-I2V-14B's transformer config as the diffusers
checkpoints ship it, open-clip ViT-H/14 as CLIPVisionModel), saved with save_pretrained:
    python3 tools/wan_i2v_reference.py --make /tmp/wan-i2v-14b --device cuda [--layers N]
Then (run by `jenga bench i2v --weights DIR --reference "python3 tools/wan_i2v_reference.py"`):
    python3 tools/wan_i2v_reference.py --dir DIR --io io.safetensors --device cuda --repeats 3
reads `pixels`, `clip` (ours), `x`, `y`, `context`, `t`, `v` (ours) from the io file, and
prints one JSON line per component: {"name", "ms", "rel_l2", "max_abs", "peak_gib"}. The DiT
gets our CLIP states, so its error is its own. bf16 on CUDA, f32 on the CPU.
"""

import argparse
import json
import os
import time

import torch
from safetensors.torch import load_file


def make(a):
    from diffusers import WanTransformer3DModel
    from transformers import CLIPVisionConfig, CLIPVisionModel

    dtype = torch.bfloat16 if a.device == "cuda" else torch.float32
    torch.manual_seed(0)
    with torch.device(a.device):
        clip = CLIPVisionModel(CLIPVisionConfig(
            hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
            num_attention_heads=16, patch_size=14, image_size=224, hidden_act="gelu",
            layer_norm_eps=1e-5, projection_dim=1024)).to(dtype).eval()
        clip.save_pretrained(os.path.join(a.make, "image_encoder"))
        del clip
        dit = WanTransformer3DModel(
            patch_size=(1, 2, 2), num_attention_heads=40, attention_head_dim=128,
            in_channels=36, out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=13824,
            num_layers=a.layers, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
            eps=1e-6, image_dim=1280, added_kv_proj_dim=5120, rope_max_seq_len=1024,
        ).to(dtype).eval()
        dit.save_pretrained(os.path.join(a.make, "transformer"))
    print(json.dumps({"made": a.make, "layers": a.layers}))


def rel(a, b):
    a, b = a.float(), b.float()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item(), (a - b).abs().max().item()


def run(a):
    from diffusers import WanTransformer3DModel
    from transformers import CLIPVisionModel

    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    io = load_file(a.io)

    def timed(f):
        f()
        if cuda:
            torch.cuda.synchronize()
        v = []
        out = None
        for _ in range(max(1, a.repeats)):
            t0 = time.perf_counter()
            out = f()
            if cuda:
                torch.cuda.synchronize()
            v.append((time.perf_counter() - t0) * 1e3)
        v.sort()
        return out, v[len(v) // 2]

    def peak():
        return torch.cuda.max_memory_allocated() / 2**30 if cuda else None

    with torch.no_grad():
        clip = CLIPVisionModel.from_pretrained(os.path.join(a.dir, "image_encoder"),
                                               torch_dtype=dtype).to(dev).eval()
        px = io["pixels"].to(dev, dtype)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        h, ms = timed(lambda: clip(px, output_hidden_states=True).hidden_states[-2])
        r, m = rel(h.cpu(), io["clip"])
        print(json.dumps({"name": "clip penultimate", "ms": ms, "rel_l2": r, "max_abs": m,
                          "peak_gib": peak(), "reference": "transformers CLIPVisionModel"}),
              flush=True)
        del clip, h
        if cuda:
            torch.cuda.empty_cache()

        dit = WanTransformer3DModel.from_pretrained(os.path.join(a.dir, "transformer"),
                                                    torch_dtype=dtype).to(dev).eval()
        x = torch.cat([io["x"], io["y"]], 1).to(dev, dtype)
        t = io["t"].to(dev)
        ctx = io["context"].to(dev, dtype)
        img = io["clip"].to(dev, dtype)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        v, ms = timed(lambda: dit(hidden_states=x, timestep=t, encoder_hidden_states=ctx,
                                  encoder_hidden_states_image=img, return_dict=False)[0])
        r, m = rel(v.cpu(), io["v"])
        print(json.dumps({"name": "i2v dit forward", "ms": ms, "rel_l2": r, "max_abs": m,
                          "peak_gib": peak(),
                          "reference": "diffusers WanTransformer3DModel (eager, SDPA)"}),
              flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--make")
    ap.add_argument("--layers", type=int, default=40)
    ap.add_argument("--dir")
    ap.add_argument("--io")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    if a.make:
        make(a)
    else:
        run(a)


if __name__ == "__main__":
    main()
