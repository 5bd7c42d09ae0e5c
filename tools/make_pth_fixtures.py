"""Write tests/fixtures/pth/: small torch.save checkpoints read by crates/models/tests/pth.rs.

Each `NAME.pth` is written by torch.save itself; `NAME.safetensors` holds the same tensors
(contiguous copies, same dtypes) for the comparison, keys joined by `.` for nested dicts.
`malicious.pth` is a torch.save of an object whose pickle calls os.system: it must be refused.
`scaled_fp8.safetensors`: a ComfyUI-style fp8-e4m3fn "scaled" file (`scaled_fp8` marker,
`X.scale_weight`), `scaled_fp8_ref.safetensors`: torch's dequantisation (w.float() * scale, bf16).
Run: /work/venv/bin/python tools/make_pth_fixtures.py
"""
import collections
import os
import pathlib

import torch
from safetensors.torch import save_file

out = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "pth"
out.mkdir(parents=True, exist_ok=True)
torch.manual_seed(0)
g = torch.Generator().manual_seed(0)


def rnd(*shape, dtype=torch.float32):
    return torch.randn(*shape, generator=g).to(dtype)


def flat(d, prefix=""):
    o = {}
    for k, v in d.items():
        if isinstance(v, dict):
            o.update(flat(v, prefix + k + "."))
        elif isinstance(v, torch.Tensor):
            o[prefix + k] = v.detach().contiguous().clone()
    return o


def write(name, obj):
    torch.save(obj, out / f"{name}.pth")
    save_file(flat(obj), str(out / f"{name}.safetensors"))


for dt, name in [(torch.bfloat16, "bf16"), (torch.float16, "f16"), (torch.float32, "f32")]:
    write(name, {"blocks.0.attn.q.weight": rnd(8, 6, dtype=dt), "norm.weight": rnd(6, dtype=dt),
                 "conv.weight": rnd(4, 3, 1, 2, 2, dtype=dt)})

base = rnd(6, 10, dtype=torch.bfloat16)
write("strided", {
    "transposed": base.t(),                 # stride (1, 10)
    "slice": base[2:5, 3:9],                # offset 23, stride (10, 1)
    "rows": base[1:3],                      # contiguous view at offset 10
    "step": base[:, ::3],                   # stride (10, 3)
    "whole": base,                          # shares the storage with the four above
    "scalar": torch.tensor(2.5, dtype=torch.bfloat16),
    "empty": torch.zeros(0, 4, dtype=torch.bfloat16),
})

write("nested", {"state_dict": {"a.weight": rnd(3, 4, dtype=torch.bfloat16),
                                "sub": {"b": rnd(5, dtype=torch.float32)}},
                 "epoch": 3, "lr": 1.5e-4, "name": "wan", "flags": [True, None], "big": 2**40})

m = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3)).to(torch.bfloat16)
sd = m.state_dict()  # an OrderedDict with `_metadata` (BUILD)
assert isinstance(sd, collections.OrderedDict)
write("ordered", sd)

# nn.Parameter values (torch._utils._rebuild_parameter) and an fp8 tensor (_rebuild_tensor_v3)
write("params", {"p": torch.nn.Parameter(rnd(2, 3, dtype=torch.bfloat16)),
                 "f8": rnd(4, 2).to(torch.float8_e4m3fn)})


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/jenga-pwned",))


torch.save({"w": torch.zeros(2), "x": Evil()}, out / "malicious.pth")

# ComfyUI "scaled" fp8: weight = fp8 * scale_weight (per tensor), marker `scaled_fp8`
w1, w2 = rnd(8, 6), rnd(5, 8)
s1, s2 = w1.abs().max() / 448, w2.abs().max() / 448
sf = {
    "scaled_fp8": torch.empty(0, dtype=torch.float8_e4m3fn),
    "encoder.block.0.layer.0.SelfAttention.q.weight": (w1 / s1).to(torch.float8_e4m3fn),
    "encoder.block.0.layer.0.SelfAttention.q.scale_weight": s1.reshape(1).float(),
    "encoder.block.0.layer.1.DenseReluDense.wo.weight": (w2 / s2).to(torch.float8_e4m3fn),
    "encoder.block.0.layer.1.DenseReluDense.wo.scale_weight": s2.float(),
    "encoder.final_layer_norm.weight": rnd(6, dtype=torch.bfloat16),
}
save_file(sf, str(out / "scaled_fp8.safetensors"))
ref = {k: (v.float() * sf[k.replace(".weight", ".scale_weight")]).to(torch.bfloat16)
       for k, v in sf.items() if v.dtype == torch.float8_e4m3fn and v.numel() > 0}
ref["encoder.final_layer_norm.weight"] = sf["encoder.final_layer_norm.weight"]
save_file(ref, str(out / "scaled_fp8_ref.safetensors"))
noscale = {k: v for k, v in sf.items() if "scale_weight" not in k}
save_file(noscale, str(out / "fp8_no_scales.safetensors"))
print("wrote", sorted(p.name for p in out.iterdir()))

# A tiny Wan DiT (original naming, bf16) as one .pth: dim 64, 1 head, 1 block (for
# crates/models/tests/pth_load.rs; shapes as WanConfig::tensor_shapes lists them).
d, f, n_in, n_out, t_dim, fr = 64, 128, 4, 4, 32, 32
shapes = {"patch_embedding.weight": (d, n_in, 1, 2, 2), "patch_embedding.bias": (d,),
          "text_embedding.0.weight": (d, t_dim), "text_embedding.0.bias": (d,),
          "text_embedding.2.weight": (d, d), "text_embedding.2.bias": (d,),
          "time_embedding.0.weight": (d, fr), "time_embedding.0.bias": (d,),
          "time_embedding.2.weight": (d, d), "time_embedding.2.bias": (d,),
          "time_projection.1.weight": (6 * d, d), "time_projection.1.bias": (6 * d,)}
for a in ["self_attn", "cross_attn"]:
    for l in "qkvo":
        shapes[f"blocks.0.{a}.{l}.weight"] = (d, d)
        shapes[f"blocks.0.{a}.{l}.bias"] = (d,)
    shapes[f"blocks.0.{a}.norm_q.weight"] = (d,)
    shapes[f"blocks.0.{a}.norm_k.weight"] = (d,)
shapes.update({"blocks.0.norm3.weight": (d,), "blocks.0.norm3.bias": (d,),
               "blocks.0.ffn.0.weight": (f, d), "blocks.0.ffn.0.bias": (f,),
               "blocks.0.ffn.2.weight": (d, f), "blocks.0.ffn.2.bias": (d,),
               "blocks.0.modulation": (1, 6, d), "head.head.weight": (n_out * 4, d),
               "head.head.bias": (n_out * 4,), "head.modulation": (1, 2, d)})
torch.save({k: rnd(*s, dtype=torch.bfloat16) * 0.1 for k, s in shapes.items()}, out / "dit_tiny.pth")
