"""Reference for `jenga bench vae`: diffusers' AutoencoderKLWan decode on the same weights and
latent, timed the same way (one warm-up, median of --repeats, synchronize around each run),
with the rel-L2 of its frames against ours and torch's peak allocated memory.

Input (written by `jenga bench vae --reference ...`): --weights (a safetensors file in either
naming, or a diffusers vae/ directory), --dir with inputs.safetensors (`z`, the un-normalised
latent [1, 16, F, H, W]) and ours.safetensors (`plain` / `tiled`: our frames, f32).
Prints one JSON line per variant: {"name", "ms", "rel_l2", "peak_bytes"}.
"""

import argparse
import json
import os
import statistics
import time

import torch
from diffusers import AutoencoderKLWan
from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers
from safetensors.torch import load_file


def load_vae(path, device, dtype):
    if os.path.isdir(path):
        vae = AutoencoderKLWan.from_pretrained(path, torch_dtype=torch.float32)
    else:
        sd = load_file(path)
        if "decoder.conv1.weight" in sd:
            sd = convert_wan_vae_to_diffusers(sd)
        vae = AutoencoderKLWan()
        vae.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
    return vae.to(device=device, dtype=dtype).eval()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--weights", required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bf16")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--tiled", action="store_true")
    ap.add_argument("--tiled-only", action="store_true")
    ap.add_argument("--log")
    a = ap.parse_args()
    dev = torch.device(a.device)
    dtype = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}[a.dtype]
    cuda = dev.type == "cuda"
    vae = load_vae(a.weights, dev, dtype)
    z = load_file(os.path.join(a.dir, "inputs.safetensors"))["z"].to(dev, dtype)
    ours_path = os.path.join(a.dir, "ours.safetensors")
    ours = load_file(ours_path) if os.path.exists(ours_path) else {}

    variants = [] if a.tiled_only else [("decode", False)]
    if a.tiled or a.tiled_only:
        variants.append(("decode tiled", True))
    for name, tiled in variants:
        if tiled:
            vae.enable_tiling()
        else:
            vae.disable_tiling()
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        times = []
        with torch.no_grad():
            for i in range(a.repeats + 1):
                if cuda:
                    torch.cuda.synchronize()
                t = time.perf_counter()
                out = vae.decode(z).sample
                if cuda:
                    torch.cuda.synchronize()
                if i > 0:
                    times.append((time.perf_counter() - t) * 1e3)
        rec = {"name": name, "ms": statistics.median(times), "dtype": a.dtype}
        if cuda:
            rec["peak_bytes"] = torch.cuda.max_memory_allocated()
        key = "tiled" if tiled else "plain"
        if key in ours:
            theirs = out.float().cpu()
            mine = ours[key].float()
            rec["rel_l2"] = ((mine - theirs).norm() / theirs.norm().clamp_min(1e-30)).item()
            rec["max_abs"] = (mine - theirs).abs().max().item()
        line = json.dumps(rec)
        print(line, flush=True)
        if a.log:
            with open(a.log, "a") as f:
                f.write(line + "\n")


if __name__ == "__main__":
    main()
