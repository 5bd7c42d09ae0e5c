#!/usr/bin/env python3
"""Whole-pipeline golden for `jenga generate --model DIR` (crates/engine/tests/wan_pipeline.rs).

A tiny random diffusers `WanPipeline` — the umT5 and Wan VAE of the component goldens
(tests/fixtures/umt5/{hf,tokenizer.json}, tests/fixtures/wan_vae/diffusers), a new random
`WanTransformer3DModel` (dim 32 = 2 heads x 16, 2 layers, text_dim 64) and
`UniPCMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction",
flow_shift=3.0)` as the Wan2.1 diffusers checkpoints configure it — is saved with
`save_pretrained` into tests/fixtures/wan_pipeline/pipeline/ and run for 10 steps (guidance 5)
from a fixed start latent, in float32 on the CPU.

Outputs (tests/fixtures/wan_pipeline/):
  pipeline/                the saved pipeline (model_index.json, transformer/, text_encoder/,
                           tokenizer/, vae/, scheduler/)
  init_noise.safetensors   `noise` [16, 3, 8, 8]: the start latent (`--init-noise`)
  golden.safetensors       `frames` [9, 64, 64, 3] in [0, 1] (output_type="np"), `latent`
                           [16, 3, 8, 8] (output_type="latent": the DiT's final latent)
  golden.json              prompt, negative prompt, steps, guidance, size
  original/                the same umT5 and VAE weights as the original Wan repo's files,
                           written with `torch.save` (models_t5_umt5-xxl-enc-bf16.pth in
                           Wan's T5 names, f32 here; Wan2.1_VAE.pth in Wan's VAE names), from
                           tests/fixtures/umt5/wan.safetensors and wan_vae/original.safetensors;
                           the test builds the rest of that layout (config.json, the DiT in
                           original names, google/umt5-xxl/) from the pipeline

    /work/venv/bin/python tools/make_wan_pipeline_golden.py
"""

import json
import os
import shutil

import torch
from diffusers import (AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline,
                       WanTransformer3DModel)
from safetensors.torch import load_file, save_file
from transformers import T5TokenizerFast, UMT5EncoderModel

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
OUT = os.path.join(ROOT, "wan_pipeline")
PROMPT = "A red cat walks on the grass, realistic style."
NEGATIVE = "Two dogs play in the snow and the blue light is quiet."
STD = float(os.environ.get("GOLDEN_STD", "0.2"))
STEPS, GUIDANCE, FRAMES, HEIGHT, WIDTH = 10, 5.0, 9, 64, 64


def main():
    torch.manual_seed(0)
    text_encoder = UMT5EncoderModel.from_pretrained(os.path.join(ROOT, "umt5", "hf")).eval()
    tokenizer = T5TokenizerFast(
        tokenizer_file=os.path.join(ROOT, "umt5", "tokenizer.json"),
        pad_token="<pad>", eos_token="</s>", unk_token="<unk>", extra_ids=0,
    )
    vae = AutoencoderKLWan.from_pretrained(os.path.join(ROOT, "wan_vae", "diffusers")).eval()
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=128,
        in_channels=16, out_channels=16, text_dim=text_encoder.config.d_model, freq_dim=256,
        ffn_dim=128, num_layers=1, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
        eps=1e-6, rope_max_seq_len=1024,
    ).eval()
    # diffusers' default init leaves the velocity small next to the noise; at these widths the
    # prompt and the guidance change the frames to ~33 dB from the golden (and the final latent
    # by ~13 %), so a wrong text path or guidance cannot pass the 40 dB check.
    with torch.no_grad():
        for name, p in transformer.named_parameters():
            if p.dim() >= 2:
                torch.nn.init.normal_(p, std=STD / max(1.0, (p.shape[-1] / 32) ** 0.5))
            elif "norm" not in name:
                torch.nn.init.normal_(p, std=0.1)
    transformer = transformer.to(torch.bfloat16)
    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000,
        flow_shift=3.0,
    )
    pipe = WanPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae,
                       transformer=transformer, scheduler=scheduler)
    path = os.path.join(OUT, "pipeline")
    shutil.rmtree(path, ignore_errors=True)
    pipe.save_pretrained(path)
    # what a user has: the pipeline as loaded back from disk
    pipe = WanPipeline.from_pretrained(path, torch_dtype=torch.float32)
    assert pipe.transformer.dtype == torch.float32

    t = (FRAMES - 1) // 4 + 1
    g = torch.Generator().manual_seed(1234)
    noise = torch.randn(1, 16, t, HEIGHT // 8, WIDTH // 8, generator=g, dtype=torch.float32)
    def run(output_type):
        with torch.no_grad():
            return pipe(
                prompt=PROMPT, negative_prompt=NEGATIVE, height=HEIGHT, width=WIDTH,
                num_frames=FRAMES, num_inference_steps=STEPS, guidance_scale=GUIDANCE,
                latents=noise.clone(), output_type=output_type,
            ).frames[0]

    frames = run("np")
    latent = run("latent")  # the DiT's final latent (normalised, before the VAE)
    frames = torch.from_numpy(frames).float().contiguous()
    assert frames.shape == (FRAMES, HEIGHT, WIDTH, 3), frames.shape
    print("frames mean", frames.mean().item(), "std", frames.std().item())
    save_file({"noise": noise[0].contiguous()}, os.path.join(OUT, "init_noise.safetensors"))
    save_file({"frames": frames, "latent": latent.float().contiguous()},
              os.path.join(OUT, "golden.safetensors"))
    with open(os.path.join(OUT, "golden.json"), "w") as f:
        json.dump({"prompt": PROMPT, "negative_prompt": NEGATIVE, "steps": STEPS,
                   "guidance": GUIDANCE, "frames": FRAMES, "height": HEIGHT, "width": WIDTH,
                   "flow_shift": 3.0}, f, indent=1)
    orig = os.path.join(OUT, "original")
    os.makedirs(orig, exist_ok=True)
    torch.save(load_file(os.path.join(ROOT, "umt5", "wan.safetensors")),
               os.path.join(orig, "models_t5_umt5-xxl-enc-bf16.pth"))
    torch.save(load_file(os.path.join(ROOT, "wan_vae", "original.safetensors")),
               os.path.join(orig, "Wan2.1_VAE.pth"))


if __name__ == "__main__":
    main()
