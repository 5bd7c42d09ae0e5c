#!/usr/bin/env python3
"""Reference for `jenga bench e2e --model DIR`: diffusers' `WanPipeline` on the same checkpoint
and start latent, timed end to end the same way (one call, synchronised), its frames written
for jenga to compare.

Make a full-size random-weight Wan2.1 pipeline once (the real configs: umT5-XXL, the 1.3B or
14B DiT, the Wan VAE, UniPC with flow sigmas; the tokenizer is the small test one, whose ids
are valid for umT5's 256384-token vocabulary), saved with save_pretrained:
    python3 tools/wan_pipeline_reference.py --make /tmp/wan-1.3b --size 1.3b --device cuda
Then (run by `jenga bench e2e --model DIR --reference "python3 tools/wan_pipeline_reference.py"`):
    python3 tools/wan_pipeline_reference.py --model DIR --dir D --prompt P --negative-prompt N \
        --steps 10 --guidance 5 --frames 81 --height 480 --width 832 --device cuda --dtype bf16
reads D/inputs.safetensors (`noise` [16, T, H, W]), writes D/reference.safetensors (`frames`
[F, H, W, 3] in [0, 1]) and prints one JSON line {"name": "pipeline", "ms", "text_ms",
"peak_bytes"}.
"""

import argparse
import json
import os
import time

import torch
from safetensors.torch import load_file, save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")

# diffusers' Wan-AI/Wan2.1-T2V-{1.3B,14B}-Diffusers transformer configs
SIZES = {
    "1.3b": dict(num_attention_heads=12, ffn_dim=8960, num_layers=30, flow_shift=3.0),
    "14b": dict(num_attention_heads=40, ffn_dim=13824, num_layers=40, flow_shift=5.0),
}


def make(a):
    from diffusers import (AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline,
                           WanTransformer3DModel)
    from transformers import T5TokenizerFast, UMT5Config, UMT5EncoderModel

    s = SIZES[a.size]
    dtype = torch.bfloat16 if a.device == "cuda" else torch.float32
    torch.manual_seed(0)
    with torch.device(a.device):
        te = UMT5EncoderModel(UMT5Config(
            vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=a.text_layers,
            num_heads=64, relative_attention_num_buckets=32, relative_attention_max_distance=128,
            dropout_rate=0.0, layer_norm_epsilon=1e-6, feed_forward_proj="gated-gelu",
            is_encoder_decoder=False, use_cache=False, tie_word_embeddings=True,
        )).to(dtype).eval()
        dit = WanTransformer3DModel(
            patch_size=(1, 2, 2), num_attention_heads=s["num_attention_heads"],
            attention_head_dim=128, in_channels=16, out_channels=16, text_dim=4096,
            freq_dim=256, ffn_dim=s["ffn_dim"], num_layers=a.layers or s["num_layers"],
            cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6,
            rope_max_seq_len=1024,
        ).to(dtype).eval()
        vae = AutoencoderKLWan().to(torch.float32).eval()
    tok = T5TokenizerFast(tokenizer_file=os.path.join(ROOT, "umt5", "tokenizer.json"),
                          pad_token="<pad>", eos_token="</s>", unk_token="<unk>", extra_ids=0)
    sched = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                    num_train_timesteps=1000, flow_shift=s["flow_shift"])
    WanPipeline(tokenizer=tok, text_encoder=te, vae=vae, transformer=dit,
                scheduler=sched).save_pretrained(a.make)
    print(json.dumps({"made": a.make, "size": a.size}))


def run(a):
    from diffusers import AutoencoderKLWan, WanPipeline

    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    dtype = {"bf16": torch.bfloat16, "f32": torch.float32}[a.dtype]
    # the VAE in f32 as the diffusers model card runs it; the rest in `dtype`
    vae = AutoencoderKLWan.from_pretrained(a.model, subfolder="vae", torch_dtype=torch.float32)
    pipe = WanPipeline.from_pretrained(a.model, vae=vae, torch_dtype=dtype).to(dev)
    pipe.set_progress_bar_config(disable=True)
    noise = load_file(os.path.join(a.dir, "inputs.safetensors"))["noise"][None].to(dev)

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def call():
        with torch.no_grad():
            return pipe(prompt=a.prompt, negative_prompt=a.negative_prompt, height=a.height,
                        width=a.width, num_frames=a.frames, num_inference_steps=a.steps,
                        guidance_scale=a.guidance, latents=noise.clone(),
                        output_type="np").frames[0]

    sync()
    t0 = time.perf_counter()
    with torch.no_grad():
        pipe.encode_prompt(a.prompt, a.negative_prompt, do_classifier_free_guidance=a.guidance > 1,
                           device=dev)
    sync()
    text_ms = (time.perf_counter() - t0) * 1e3
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    sync()
    t0 = time.perf_counter()
    frames = call()
    sync()
    ms = (time.perf_counter() - t0) * 1e3
    frames = torch.from_numpy(frames).float().contiguous()
    save_file({"frames": frames}, os.path.join(a.dir, "reference.safetensors"))
    print(json.dumps({"name": "pipeline", "ms": ms, "text_ms": text_ms,
                      "peak_bytes": torch.cuda.max_memory_allocated() if cuda else None}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--make")
    ap.add_argument("--size", choices=sorted(SIZES), default="1.3b")
    ap.add_argument("--layers", type=int, default=0, help="DiT layers (0: the real count)")
    ap.add_argument("--text-layers", type=int, default=24)
    ap.add_argument("--model")
    ap.add_argument("--dir")
    ap.add_argument("--prompt", default="")
    ap.add_argument("--negative-prompt", default="")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--guidance", type=float, default=5.0)
    ap.add_argument("--frames", type=int, default=81)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--width", type=int, default=832)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bf16")
    a = ap.parse_args()
    if a.make:
        make(a)
    else:
        run(a)


if __name__ == "__main__":
    main()
