#!/usr/bin/env python3
"""Golden for the Wan2.1 image-to-video DiT (crates/models/tests/wan_i2v.rs).

A small random diffusers `WanTransformer3DModel` in the i2v configuration (in_channels 36 =
noise 16 + mask 4 + image latent 16, `image_dim` CLIP features through the image embedder,
`added_kv_proj_dim`: the extra image keys/values `add_k_proj`/`add_v_proj` + `norm_added_k` of
every cross-attention), saved with `save_pretrained` into tests/fixtures/wan_i2v/transformer/,
and one forward in float32 on the CPU: x [1, 36, 3, 8, 8] at t = 900, text states [1, 512, 64]
(diffusers splits the image tokens off at 512 text tokens), CLIP states [1, 257, 48].
Also the same weights in the original Wan names (`wan.safetensors`, renamed as diffusers'
conversion script does), so both namings are checked.

Output tests/fixtures/wan_i2v/golden.safetensors: `x`, `t`, `text`, `clip`, `v` (the velocity
[1, 16, 3, 8, 8]), `clip_emb` (the image embedder's output [1, 257, 32]).

    /work/venv/bin/python tools/make_wan_i2v_golden.py
"""

import os
import shutil

import torch
from diffusers import WanTransformer3DModel
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "wan_i2v")

# diffusers name -> Wan name (scripts/convert_wan_to_diffusers.py, inverted; block-local keys)
RENAMES = [
    ("condition_embedder.image_embedder.norm1", "img_emb.proj.0"),
    ("condition_embedder.image_embedder.ff.net.0.proj", "img_emb.proj.1"),
    ("condition_embedder.image_embedder.ff.net.2", "img_emb.proj.3"),
    ("condition_embedder.image_embedder.norm2", "img_emb.proj.4"),
    ("condition_embedder.text_embedder.linear_1", "text_embedding.0"),
    ("condition_embedder.text_embedder.linear_2", "text_embedding.2"),
    ("condition_embedder.time_embedder.linear_1", "time_embedding.0"),
    ("condition_embedder.time_embedder.linear_2", "time_embedding.2"),
    ("condition_embedder.time_proj", "time_projection.1"),
    ("patch_embedding", "patch_embedding"),
    ("proj_out", "head.head"),
    (".attn1.to_q", ".self_attn.q"), (".attn1.to_k", ".self_attn.k"),
    (".attn1.to_v", ".self_attn.v"), (".attn1.to_out.0", ".self_attn.o"),
    (".attn1.norm_q", ".self_attn.norm_q"), (".attn1.norm_k", ".self_attn.norm_k"),
    (".attn2.to_q", ".cross_attn.q"), (".attn2.to_k", ".cross_attn.k"),
    (".attn2.to_v", ".cross_attn.v"), (".attn2.to_out.0", ".cross_attn.o"),
    (".attn2.norm_q", ".cross_attn.norm_q"), (".attn2.norm_k", ".cross_attn.norm_k"),
    (".attn2.add_k_proj", ".cross_attn.k_img"), (".attn2.add_v_proj", ".cross_attn.v_img"),
    (".attn2.norm_added_k", ".cross_attn.norm_k_img"),
    (".norm2", ".norm3"),
    (".ffn.net.0.proj", ".ffn.0"), (".ffn.net.2", ".ffn.2"),
    (".scale_shift_table", ".modulation"),
]


def to_wan(sd):
    out = {}
    for k, v in sd.items():
        n = "head.modulation" if k == "scale_shift_table" else k
        for a, b in RENAMES:
            if a in n:
                n = n.replace(a, b)
        out[n] = v.contiguous()
    return out


def main():
    torch.manual_seed(0)
    m = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=36,
        out_channels=16, text_dim=64, freq_dim=256, ffn_dim=64, num_layers=2,
        cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=48,
        added_kv_proj_dim=32, rope_max_seq_len=1024,
    ).eval()
    with torch.no_grad():
        for name, p in m.named_parameters():
            if p.dim() >= 2:
                torch.nn.init.normal_(p, std=0.2)
            elif "norm" not in name:
                torch.nn.init.normal_(p, std=0.1)
            else:
                torch.nn.init.normal_(p, mean=1.0, std=0.1)
    path = os.path.join(OUT, "transformer")
    shutil.rmtree(path, ignore_errors=True)
    m.save_pretrained(path)
    m = WanTransformer3DModel.from_pretrained(path).eval()
    g = torch.Generator().manual_seed(7)
    x = torch.randn(1, 36, 3, 8, 8, generator=g)
    text = torch.randn(1, 512, 64, generator=g)
    clip = torch.randn(1, 257, 48, generator=g)
    t = torch.tensor([900])
    with torch.no_grad():
        v = m(hidden_states=x, timestep=t, encoder_hidden_states=text,
              encoder_hidden_states_image=clip, return_dict=False)[0]
        clip_emb = m.condition_embedder.image_embedder(clip)
    print("v std", v.std().item())
    save_file({"x": x, "t": t.float(), "text": text, "clip": clip, "v": v.contiguous(),
               "clip_emb": clip_emb.contiguous()}, os.path.join(OUT, "golden.safetensors"))
    save_file(to_wan(m.state_dict()), os.path.join(OUT, "wan.safetensors"))


if __name__ == "__main__":
    main()
