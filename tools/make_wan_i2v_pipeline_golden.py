#!/usr/bin/env python3
"""Image-to-video pipeline golden for `jenga generate --model DIR --image FILE`
(crates/engine/tests/wan_i2v_pipeline.rs).

A tiny random diffusers `WanImageToVideoPipeline` — the umT5 and Wan VAE of the component
goldens (tests/fixtures/umt5, tests/fixtures/wan_vae/diffusers), a random `CLIPVisionModel`
(hidden 160 = 2 heads of 80 as ViT-H's, 2 layers, 56 px, patch 14: 17 tokens) with its
`CLIPImageProcessor` (shortest edge 56, centre crop 56), a random i2v `WanTransformer3DModel`
(in 36, image_dim 160, 1 layer of 2 x 128) and diffusers' UniPC with flow sigmas (shift 3) — is
saved with `save_pretrained` and run for 5 steps (guidance 5) from a fixed start latent on a
96x60 image at the area 48x80: the video is 48x64 (the image's aspect, diffusers' I2V
example's rounding), so the CLIP resize (PIL bicubic up to 89x56, crop) and the first-frame resize (PIL
Lanczos down to 64x48) both do work.

Two references, float32 on the CPU:
  diffusers  the pipeline as it is (CLIPImageProcessor, VideoProcessor);
  wan        Wan's own preprocessing (`image2video.py` / `clip.py`: the image in [-1, 1],
             `F.interpolate(bicubic)` to 56x56 for CLIP and to 48x64 for the VAE), its CLIP
             states computed by Wan's own `VisionTransformer(use_31_block=True)` on the same
             weights converted to Wan's names (written as the original repo's
             models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth), then the same diffusers
             transformer and scheduler (`image_embeds=`, `image=` the interpolated tensor).

Outputs (tests/fixtures/wan_i2v_pipeline/):
  pipeline/               the saved pipeline (+ image_encoder/, image_processor/) without
                          text_encoder/ and vae/: the T2V golden's, which the test copies in
  image.png               the 96x60 input image
  init_noise.safetensors  `noise` [16, 2, 6, 8]
  golden.safetensors      per reference R in (diffusers, wan): `R.clip` [17, 160] (penultimate
                          states), `R.y` [20, 2, 6, 8] (mask + encoded first frame), `R.frames`
                          [5, 48, 64, 3] in [0, 1], `R.latent` [16, 2, 6, 8]
  golden.json             prompt, negative prompt, steps, guidance, sizes
  original/models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth  the CLIP in Wan's names

    WAN_REPO=/path/to/Wan2.1 /work/venv/bin/python tools/make_wan_i2v_pipeline_golden.py
(WAN_REPO: a checkout of Wan-Video/Wan2.1, for wan/modules/clip.py.)
"""

import json
import math
import os
import shutil
import types

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import (AutoencoderKLWan, UniPCMultistepScheduler, WanImageToVideoPipeline,
                       WanTransformer3DModel)
from PIL import Image
from safetensors.torch import save_file
from transformers import (CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel,
                          T5TokenizerFast, UMT5EncoderModel)

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
OUT = os.path.join(ROOT, "wan_i2v_pipeline")
PROMPT = "A red cat walks on the grass, realistic style."
NEGATIVE = "Two dogs play in the snow and the blue light is quiet."
STEPS, GUIDANCE, FRAMES = 5, 5.0, 5
AREA_H, AREA_W = 48, 80
IMG_W, IMG_H = 96, 60
CLIP_SIZE = 56


def wan_clip_module():
    """Wan's wan/modules/clip.py, its unused imports stubbed (flash attention → SDPA)."""
    repo = os.environ.get("WAN_REPO", "/tmp/wan2.1")
    src = open(os.path.join(repo, "wan", "modules", "clip.py")).read()
    src = src.replace("import torchvision.transforms as T", "T = None")
    src = src.replace("from .attention import flash_attention", "")
    src = src.replace("from .tokenizers import HuggingfaceTokenizer", "")
    src = src.replace("from .xlm_roberta import XLMRoberta", "XLMRoberta = torch.nn.Module")
    mod = types.ModuleType("wan_clip")

    def flash_attention(q, k, v, dropout_p=0.0, causal=False, version=None):
        o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                           v.transpose(1, 2), is_causal=causal)
        return o.transpose(1, 2)

    mod.__dict__["flash_attention"] = flash_attention
    exec(compile(src, "wan/modules/clip.py", "exec"), mod.__dict__)
    return mod


def to_wan_names(sd, layers):
    """transformers CLIPVisionModel → Wan's `visual.` names (to_qkv fused)."""
    p = "vision_model." if "vision_model.pre_layrnorm.weight" in sd else ""
    out = {
        "visual.patch_embedding.weight": sd[p + "embeddings.patch_embedding.weight"],
        "visual.cls_embedding": sd[p + "embeddings.class_embedding"][None, None],
        "visual.pos_embedding": sd[p + "embeddings.position_embedding.weight"][None],
        "visual.pre_norm.weight": sd[p + "pre_layrnorm.weight"],
        "visual.pre_norm.bias": sd[p + "pre_layrnorm.bias"],
        "visual.post_norm.weight": sd[p + "post_layernorm.weight"],
        "visual.post_norm.bias": sd[p + "post_layernorm.bias"],
    }
    for i in range(layers):
        a, b = f"{p}encoder.layers.{i}.", f"visual.transformer.{i}."
        for x in ("weight", "bias"):
            out[b + "norm1." + x] = sd[a + "layer_norm1." + x]
            out[b + "norm2." + x] = sd[a + "layer_norm2." + x]
            out[b + "attn.to_qkv." + x] = torch.cat(
                [sd[a + f"self_attn.{n}_proj." + x] for n in "qkv"], 0)
            out[b + "attn.proj." + x] = sd[a + "self_attn.out_proj." + x]
            out[b + "mlp.0." + x] = sd[a + "mlp.fc1." + x]
            out[b + "mlp.2." + x] = sd[a + "mlp.fc2." + x]
    return {k: v.contiguous() for k, v in out.items()}


def make_image():
    y, x = np.mgrid[0:IMG_H, 0:IMG_W].astype(np.float32)
    r = 128 + 100 * np.sin(x / 7.0) * np.cos(y / 5.0)
    g = 255 * x / IMG_W
    b = np.where((x - 60) ** 2 + (y - 25) ** 2 < 200, 230, 40 + y)
    return Image.fromarray(np.clip(np.stack([r, g, b], -1), 0, 255).astype(np.uint8))


def main():
    torch.manual_seed(0)
    text_encoder = UMT5EncoderModel.from_pretrained(os.path.join(ROOT, "umt5", "hf")).eval()
    tokenizer = T5TokenizerFast(
        tokenizer_file=os.path.join(ROOT, "umt5", "tokenizer.json"),
        pad_token="<pad>", eos_token="</s>", unk_token="<unk>", extra_ids=0,
    )
    vae = AutoencoderKLWan.from_pretrained(os.path.join(ROOT, "wan_vae", "diffusers")).eval()
    ccfg = CLIPVisionConfig(hidden_size=160, intermediate_size=320, num_hidden_layers=2,
                            num_attention_heads=2, patch_size=14, image_size=CLIP_SIZE,
                            hidden_act="gelu", layer_norm_eps=1e-5, projection_dim=32)
    clip = CLIPVisionModel(ccfg).eval()
    with torch.no_grad():
        for n, p in clip.named_parameters():
            if "norm" in n:
                p.normal_(1.0 if n.endswith("weight") else 0.0, 0.1)
            else:
                p.normal_(0.0, 0.05)
    clip = clip.to(torch.bfloat16)  # stored in bf16 (the golden runs the same values in f32)
    processor = CLIPImageProcessor(size={"shortest_edge": CLIP_SIZE},
                                   crop_size={"height": CLIP_SIZE, "width": CLIP_SIZE})
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=128,
        in_channels=36, out_channels=16, text_dim=text_encoder.config.d_model, freq_dim=256,
        ffn_dim=128, num_layers=1, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
        eps=1e-6, rope_max_seq_len=1024, image_dim=160, added_kv_proj_dim=256,
    ).eval()
    with torch.no_grad():
        for name, p in transformer.named_parameters():
            if p.dim() >= 2:
                torch.nn.init.normal_(p, std=0.2 / max(1.0, (p.shape[-1] / 32) ** 0.5))
            elif "norm" not in name:
                torch.nn.init.normal_(p, std=0.1)
    transformer = transformer.to(torch.bfloat16)
    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000,
        flow_shift=3.0,
    )
    pipe = WanImageToVideoPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae,
                                   transformer=transformer, scheduler=scheduler,
                                   image_encoder=clip, image_processor=processor)
    path = os.path.join(OUT, "pipeline")
    shutil.rmtree(path, ignore_errors=True)
    pipe.save_pretrained(path)
    pipe = WanImageToVideoPipeline.from_pretrained(path, torch_dtype=torch.float32)
    clip = pipe.image_encoder
    print("image processor:", type(pipe.image_processor).__name__)
    # the umT5 and the VAE are the T2V golden's (tests/fixtures/wan_pipeline/pipeline): the
    # test copies them back rather than the repo holding them twice
    for sub in ("text_encoder", "vae"):
        shutil.rmtree(os.path.join(path, sub))

    img = make_image()
    img.save(os.path.join(OUT, "image.png"))
    # the video size: the area at the image's aspect, as diffusers' Wan I2V example
    ar = IMG_H / IMG_W
    h = round(math.sqrt(AREA_H * AREA_W * ar)) // 16 * 16
    w = round(math.sqrt(AREA_H * AREA_W / ar)) // 16 * 16
    t = (FRAMES - 1) // 4 + 1
    g = torch.Generator().manual_seed(1234)
    noise = torch.randn(1, 16, t, h // 8, w // 8, generator=g, dtype=torch.float32)

    def run(output_type, image, image_embeds=None):
        # `image` and `image_embeds` cannot both be passed: the CLIP states come through
        # encode_image instead
        encode = pipe.encode_image
        if image_embeds is not None:
            pipe.encode_image = lambda *_a, **_k: image_embeds
        try:
            with torch.no_grad():
                return call(output_type, image)
        finally:
            pipe.encode_image = encode

    def call(output_type, image):
        with torch.no_grad():
            return pipe(image=image, prompt=PROMPT,
                        negative_prompt=NEGATIVE, height=h, width=w, num_frames=FRAMES,
                        num_inference_steps=STEPS, guidance_scale=GUIDANCE,
                        latents=noise.clone(), output_type=output_type).frames[0]

    def condition(image_tensor):
        """`prepare_latents`' condition: mask + normalised posterior mean, [20, T, h, w]."""
        with torch.no_grad():
            _, cond = pipe.prepare_latents(image_tensor, 1, 16, h, w, FRAMES, torch.float32,
                                           "cpu", None, noise.clone())
        return cond[0]

    golden = {}
    # diffusers
    with torch.no_grad():
        golden["diffusers.clip"] = pipe.encode_image(img, "cpu")[0]
    vid_img = pipe.video_processor.preprocess(img, height=h, width=w).to(torch.float32)
    golden["diffusers.y"] = condition(vid_img)
    golden["diffusers.frames"] = torch.from_numpy(run("np", img)).float()
    golden["diffusers.latent"] = run("latent", img)

    # Wan's own preprocessing and CLIP module
    wan = wan_clip_module()
    vt = wan.VisionTransformer(image_size=CLIP_SIZE, patch_size=14, dim=160, mlp_ratio=2,
                               out_dim=32, num_heads=2, num_layers=2, pool_type="token",
                               pre_norm=True, post_norm=False, activation="gelu").eval()
    sd = to_wan_names(clip.state_dict(), 2)
    missing = vt.load_state_dict({k[len("visual."):]: v for k, v in sd.items()}, strict=False)
    assert not missing.missing_keys or missing.missing_keys == ["head"], missing
    x = torch.from_numpy(np.asarray(img)).permute(2, 0, 1).float() / 255.0
    x = x.sub(0.5).div(0.5)  # TF.to_tensor(img).sub_(0.5).div_(0.5)
    cx = F.interpolate(x[None], size=(CLIP_SIZE, CLIP_SIZE), mode="bicubic",
                       align_corners=False)
    cx = cx.mul(0.5).add(0.5)
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073])[:, None, None]
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711])[:, None, None]
    with torch.no_grad():
        wan_clip = vt((cx - mean) / std, use_31_block=True)
        # Wan's module and transformers' agree on Wan's input
        hf = clip((cx - mean) / std, output_hidden_states=True).hidden_states[-2]
    print("wan vs transformers clip max abs", (wan_clip - hf).abs().max().item())
    assert (wan_clip - hf).abs().max().item() < 1e-4
    vx = F.interpolate(x[None], size=(h, w), mode="bicubic")  # image2video.py
    golden["wan.clip"] = wan_clip[0]
    golden["wan.y"] = condition(vx)
    golden["wan.frames"] = torch.from_numpy(run("np", vx, wan_clip)).float()
    golden["wan.latent"] = run("latent", vx, wan_clip)
    golden = {k: v.float().contiguous().squeeze(0) if k.endswith("latent") else
              v.float().contiguous() for k, v in golden.items()}
    for k, v in golden.items():
        print(k, tuple(v.shape), "mean", v.mean().item(), "std", v.std().item())
    d = golden["diffusers.frames"] - golden["wan.frames"]
    print("diffusers vs wan preprocessing: frames max abs", d.abs().max().item())

    save_file({"noise": noise[0].contiguous()}, os.path.join(OUT, "init_noise.safetensors"))
    save_file(golden, os.path.join(OUT, "golden.safetensors"))
    with open(os.path.join(OUT, "golden.json"), "w") as f:
        json.dump({"prompt": PROMPT, "negative_prompt": NEGATIVE, "steps": STEPS,
                   "guidance": GUIDANCE, "frames": FRAMES, "area_height": AREA_H,
                   "area_width": AREA_W, "height": h, "width": w, "flow_shift": 3.0}, f,
                  indent=1)
    orig = os.path.join(OUT, "original")
    os.makedirs(orig, exist_ok=True)
    torch.save({k: v.to(torch.bfloat16) for k, v in sd.items()},
               os.path.join(orig, "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"))


if __name__ == "__main__":
    main()
