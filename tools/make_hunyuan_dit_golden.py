"""Golden for the HunyuanVideo transformer at reduced width (issue 18).

A random-init diffusers `HunyuanVideoTransformer3DModel` (2 heads x 16, 2 dual-stream + 2
single-stream blocks, 1 refiner block), saved with `save_pretrained` into
tests/fixtures/hunyuan_dit/transformer/, and one forward on a random latent with a text of 7
tokens of which 5 are valid (the padded ones must change nothing), written to
tests/fixtures/hunyuan_dit/golden.safetensors.

    /work/venv/bin/python tools/make_hunyuan_dit_golden.py
"""
import math
import os
import torch
from diffusers import HunyuanVideoTransformer3DModel
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "hunyuan_dit")
torch.manual_seed(0)
cfg = dict(
    in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=16,
    num_layers=2, num_single_layers=2, num_refiner_layers=1, mlp_ratio=4.0,
    patch_size=2, patch_size_t=1, qk_norm="rms_norm", guidance_embeds=True,
    text_embed_dim=40, pooled_projection_dim=24, rope_theta=256.0, rope_axes_dim=(4, 6, 6),
)
m = HunyuanVideoTransformer3DModel(**cfg).eval()
# random init leaves the zero-initialised gates at 0; give every parameter a real value
with torch.no_grad():
    for p in m.parameters():
        p.copy_(torch.randn_like(p) * 0.2)
m.save_pretrained(os.path.join(OUT, "transformer"), safe_serialization=True)

x = torch.randn(1, 4, 3, 8, 12)
text = torch.randn(1, 7, 40)
mask = torch.tensor([[1, 1, 1, 1, 1, 0, 0]], dtype=torch.int64)
pooled = torch.randn(1, 24)
t = torch.tensor([700.0])
g = torch.tensor([6000.0])
with torch.no_grad():
    v = m(x, t, text, mask, pooled, guidance=g, return_dict=False)[0]
    # the same with the padded rows cropped away: what our engine feeds
    v_crop = m(x, t, text[:, :5], mask[:, :5], pooled, guidance=g, return_dict=False)[0]
print("padded vs cropped max-abs", (v - v_crop).abs().max().item())
# float64: diffusers' float32 sinusoids of t = 700 and of the guidance (6000) are off by
# ~1e-4 rad at those arguments; the f64 run is the reference our f64 angles are held to
with torch.no_grad():
    m64 = m.double()
    v64 = m64(x.double(), t.double(), text.double(), mask, pooled.double(), guidance=g.double(),
              return_dict=False)[0].float()
print("f32 vs f64 reference rel-L2", ((v - v64).norm() / v64.norm()).item())
# diffusers' sinusoids (`get_timestep_embedding`) are float32 all through, and torch's float32
# sin is ~4e-4 off at 6000 (the guidance input): `v_exact` is the same forward with the
# sinusoids in float64, what jenga computes
import diffusers.models.embeddings as emb
_orig = emb.get_timestep_embedding
def exact(timesteps, embedding_dim, flip_sin_to_cos=False, downscale_freq_shift=1, scale=1, max_period=10000):
    half = embedding_dim // 2
    e = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float64) / (half - downscale_freq_shift))
    a = scale * timesteps[:, None].double() * e[None, :]
    out = torch.cat([torch.sin(a), torch.cos(a)], dim=-1)
    if flip_sin_to_cos:
        out = torch.cat([out[:, half:], out[:, :half]], dim=-1)
    return out.float()
emb.get_timestep_embedding = exact
m = m.float()
with torch.no_grad():
    v_exact = m(x, t, text, mask, pooled, guidance=g, return_dict=False)[0]
# 4 flow-match Euler steps as HunyuanVideoPipeline takes them (sigmas linspace(1, 0, N+1)[:-1],
# shift 7, embedded guidance 6 x 1000), from `noise`, with the valid text tokens only
from diffusers import FlowMatchEulerDiscreteScheduler
import numpy as np
sched = FlowMatchEulerDiscreteScheduler(shift=7.0)
steps = 4
sched.set_timesteps(sigmas=np.linspace(1.0, 0.0, steps + 1)[:-1])
noise = torch.randn(1, 4, 3, 8, 12)
lat = noise.clone()
with torch.no_grad():
    for tt in sched.timesteps:
        vp = m(lat, tt.expand(1), text[:, :5], mask[:, :5], pooled, guidance=g, return_dict=False)[0]
        lat = sched.step(vp, tt, lat, return_dict=False)[0]
print("timesteps", [round(float(t), 3) for t in sched.timesteps])
emb.get_timestep_embedding = _orig

# The official checkpoint's names (`mp_rank_00_model_states.pt`, hyvideo): the diffusers weights
# mapped back (fused qkv, single-block linear1 = q|k|v|mlp, final modulation as shift|scale),
# checked by diffusers' own converter mapping them forward again.
from hunyuan_names import to_official  # noqa: E402

import inspect
import diffusers.loaders.single_file_utils as sfu
d = cfg["num_attention_heads"] * cfg["attention_head_dim"]
# the converter hard-codes HunyuanVideo's width (3072) for the single blocks' split
src = inspect.getsource(sfu.convert_hunyuan_video_transformer_to_diffusers).replace(
    "hidden_size = 3072", f"hidden_size = {d}")
ns = {}
exec(src, sfu.__dict__, ns)
sd = {k: v.detach().clone() for k, v in m.state_dict().items()}
official = to_official(sd, d)
back = ns["convert_hunyuan_video_transformer_to_diffusers"](dict(official))
assert set(back) == set(sd), (set(back) ^ set(sd))
assert all(torch.equal(back[k], sd[k]) for k in sd), "the official names do not map back"
os.makedirs(os.path.join(OUT, "official"), exist_ok=True)
torch.save({"module": official}, os.path.join(OUT, "official", "mp_rank_00_model_states.pt"))
print("official names:", len(official), "tensors; diffusers' converter maps them back exactly")
print("stock vs exact sinusoids rel-L2", ((v - v_exact).norm() / v_exact.norm()).item())
save_file(
    {
        "x": x.contiguous(), "text": text.contiguous(), "mask": mask.float().contiguous(),
        "pooled": pooled.contiguous(), "t": t, "guidance": g, "v": v.contiguous(),
        "v_exact": v_exact.contiguous(),
        "noise": noise.contiguous(), "euler4": lat.contiguous(),
    },
    os.path.join(OUT, "golden.safetensors"),
)
print("wrote", OUT, "v", tuple(v.shape), "rms", v.pow(2).mean().sqrt().item())
