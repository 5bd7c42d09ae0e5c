"""Golden for the whole HunyuanVideo pipeline at reduced width (issue 18): diffusers'
`HunyuanVideoPipeline` with the tiny Llama / CLIP-L text towers and tokenizers of
tests/fixtures/hunyuan_text/, the tiny VAE decoder of tests/fixtures/hunyuan_vae/vae/, a new
tiny transformer (saved here with `save_pretrained`, with the scheduler's config), 5 steps from
a fixed start latent, embedded guidance 6, the frames it returns.

The pipeline's sinusoids run in float64 (as jenga's; torch's float32 sin is ~4e-4 rad off at
the guidance input 6000, see make_hunyuan_dit_golden.py).

    /work/venv/bin/python tools/make_hunyuan_pipeline_golden.py
"""
import json
import math
import os

import torch
import diffusers.models.embeddings as emb
from diffusers import (AutoencoderKLHunyuanVideo, FlowMatchEulerDiscreteScheduler,
                       HunyuanVideoPipeline, HunyuanVideoTransformer3DModel)
from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video import DEFAULT_PROMPT_TEMPLATE
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, CLIPTextModel, LlamaModel

ROOT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")
OUT = os.path.join(ROOT, "hunyuan_pipeline")
TEXT = os.path.join(ROOT, "hunyuan_text")
VAE = os.path.join(ROOT, "hunyuan_vae", "vae")
PROMPT = "A cat walks on the grass, realistic style."
CROP = 96  # the tiny tokenizer's template length (Llama-3's is 95); both sides take it
torch.manual_seed(0)

te = LlamaModel.from_pretrained(os.path.join(TEXT, "text_encoder")).eval()
tok = AutoTokenizer.from_pretrained(os.path.join(TEXT, "tokenizer"))
te2 = CLIPTextModel.from_pretrained(os.path.join(TEXT, "text_encoder_2")).eval()
tok2 = AutoTokenizer.from_pretrained(os.path.join(TEXT, "tokenizer_2"))
vcfg = json.load(open(os.path.join(VAE, "config.json")))
vae = AutoencoderKLHunyuanVideo(**{k: v for k, v in vcfg.items() if not k.startswith("_")})
missing, _ = vae.load_state_dict(
    {k: v.float() for k, v in load_file(os.path.join(VAE, "diffusion_pytorch_model.safetensors")).items()},
    strict=False)
assert all(k.startswith(("encoder.", "quant_conv.")) for k in missing), missing  # T2V decodes only
vae = vae.eval()
tr = HunyuanVideoTransformer3DModel(
    in_channels=16, out_channels=16, num_attention_heads=2, attention_head_dim=16, num_layers=1,
    num_single_layers=1, num_refiner_layers=1, patch_size=2, patch_size_t=1, guidance_embeds=True,
    text_embed_dim=te.config.hidden_size, pooled_projection_dim=te2.config.hidden_size,
    rope_axes_dim=(4, 6, 6)).eval()
with torch.no_grad():
    for p in tr.parameters():
        p.copy_(torch.randn_like(p) * 0.2)
sched = FlowMatchEulerDiscreteScheduler(shift=7.0)
tr.save_pretrained(os.path.join(OUT, "transformer"), safe_serialization=True)
sched.save_pretrained(os.path.join(OUT, "scheduler"))

# the official `ckpts/` tree's files for the same transformer and VAE: the transformer in
# hyvideo's names (checked by diffusers' converter), the VAE as hyvideo's `load_vae` reads it
import inspect
import sys
import diffusers.loaders.single_file_utils as sfu
sys.path.insert(0, os.path.dirname(__file__))
from hunyuan_names import to_official  # noqa: E402
d = tr.config.num_attention_heads * tr.config.attention_head_dim
src = inspect.getsource(sfu.convert_hunyuan_video_transformer_to_diffusers).replace(
    "hidden_size = 3072", f"hidden_size = {d}")
ns = {}
exec(src, sfu.__dict__, ns)
sd = {k: v.detach().clone() for k, v in tr.state_dict().items()}
official = to_official(sd, d)
back = ns["convert_hunyuan_video_transformer_to_diffusers"](dict(official))
assert set(back) == set(sd) and all(torch.equal(back[k], sd[k]) for k in sd)
ck = os.path.join(OUT, "official", "hunyuan-video-t2v-720p")
os.makedirs(os.path.join(ck, "transformers"), exist_ok=True)
os.makedirs(os.path.join(ck, "vae"), exist_ok=True)
torch.save({"module": official}, os.path.join(ck, "transformers", "mp_rank_00_model_states.pt"))
# a config beside it: the official tree has none (its model is the 13B default); ours is tiny
json.dump(dict(tr.config), open(os.path.join(ck, "transformers", "config.json"), "w"), indent=1)
vsd = {k: v for k, v in load_file(os.path.join(VAE, "diffusion_pytorch_model.safetensors")).items()}
torch.save({"state_dict": vsd}, os.path.join(ck, "vae", "pytorch_model.pt"))
json.dump(vcfg, open(os.path.join(ck, "vae", "config.json"), "w"), indent=1)

pipe = HunyuanVideoPipeline(transformer=tr, vae=vae, text_encoder=te, tokenizer=tok,
                            text_encoder_2=te2, tokenizer_2=tok2, scheduler=sched)
F, H, W = 2, 8, 8  # latent: 5 frames of 64 x 64
noise = torch.randn(1, 16, F, H, W)

def exact(timesteps, embedding_dim, flip_sin_to_cos=False, downscale_freq_shift=1, scale=1, max_period=10000):
    half = embedding_dim // 2
    e = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float64) / (half - downscale_freq_shift))
    a = scale * timesteps[:, None].double() * e[None, :]
    out = torch.cat([torch.sin(a), torch.cos(a)], dim=-1)
    if flip_sin_to_cos:
        out = torch.cat([out[:, half:], out[:, :half]], dim=-1)
    return out.float()
emb.get_timestep_embedding = exact

template = dict(DEFAULT_PROMPT_TEMPLATE, crop_start=CROP)
with torch.no_grad():
    frames = pipe(prompt=PROMPT, height=8 * H, width=8 * W, num_frames=4 * (F - 1) + 1,
                  num_inference_steps=5, guidance_scale=6.0, latents=noise.clone(),
                  prompt_template=template, max_sequence_length=256, output_type="np").frames
frames = torch.from_numpy(frames[0])  # [F, H, W, 3] in [0, 1]
save_file({"noise": noise.contiguous(), "frames": frames.float().contiguous()},
          os.path.join(OUT, "golden.safetensors"))
json.dump({"prompt": PROMPT, "crop_start": CROP, "steps": 5, "embedded_guidance": 6.0,
           "latent": [16, F, H, W]}, open(os.path.join(OUT, "golden.json"), "w"), indent=1)
print("frames", tuple(frames.shape), "mean", frames.mean().item(), "std", frames.std().item())
