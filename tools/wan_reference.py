#!/usr/bin/env python3
"""Plain PyTorch eager Wan2.1 DiT (t2v) forward: the reference `jenga bench dit` compares with.

Reads what `jenga bench dit --export DIR` writes:
  DIR/config.json          Wan config (dim, ffn_dim, num_heads, num_layers, patch_size, ...)
  DIR/weights.safetensors  bf16 weights under the original Wan key names
  DIR/inputs.safetensors   x [1, C, F, H, W], t [1] (= sigma * 1000), context [1, text_len, text_dim]
  DIR/ours.safetensors     v [1, C_out, F, H, W]: jenga's output on the same inputs
runs the forward (warm-up + median of --repeats, synchronize + wall clock, like jenga), compares
its output with ours (relative L2) and prints one JSON line.

The model is written from Wan2.1's `wan/modules/model.py` (WanModel, t2v) with the precisions of
the official inference code: bf16 linears, attention through torch SDPA (cuDNN backend by
default), LayerNorm/RMSNorm computed in float32, the residual stream, the time embedding,
modulation and the output head in float32, RoPE on adjacent pairs (frame/row/col split of the
head dim as Wan). With --dtype float32 everything is float32 (RoPE angles in float64): that mode
checks this script against jenga's CPU backend to ~1e-6.

Exit status 3 (one line on stderr) when torch or the device is missing: jenga then prints that
the reference was skipped.
"""
import argparse
import json
import math
import statistics
import sys
import time


def load_safetensors(path):
    """Tensors of a safetensors file (the `safetensors` package if present, else by hand)."""
    import torch
    try:
        from safetensors.torch import load_file
        return load_file(path, device="cpu")
    except ImportError:
        pass
    dtypes = {"F32": (torch.float32, 4), "BF16": (torch.bfloat16, 2), "F16": (torch.float16, 2),
              "I32": (torch.int32, 4), "I64": (torch.int64, 8)}
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        data = bytearray(f.read())
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        dt, size = dtypes[e["dtype"]]
        s, t = e["data_offsets"]
        if t == s:
            out[name] = torch.zeros(e["shape"], dtype=dt)
        else:
            out[name] = torch.frombuffer(data, dtype=dt, count=(t - s) // size,
                                         offset=s).reshape(e["shape"])
    return out


class WanEager:
    """Wan2.1 DiT, t2v, eager. `dt` is the compute dtype of linears and attention."""

    def __init__(self, cfg, weights, device, dt, sdpa):
        import torch
        self.cfg, self.device, self.dt, self.sdpa = cfg, device, dt, sdpa
        self.notes = set()
        self.dim, self.heads = cfg["dim"], cfg["num_heads"]
        self.eps = float(cfg.get("eps", 1e-6))
        self.patch = tuple(cfg.get("patch_size", [1, 2, 2]))
        # fp32 parts, as the official code runs them under autocast(float32)
        f32 = ("time_embedding.", "time_projection.", "head.", "modulation", "norm3.")
        self.w = {}
        for k, v in weights.items():
            keep32 = dt == torch.float32 or any(p in k for p in f32)
            self.w[k] = v.to(device=device, dtype=torch.float32 if keep32 else dt)

    def lin(self, x, name, act=None):
        import torch.nn.functional as F
        w, b = self.w[name + ".weight"], self.w.get(name + ".bias")
        y = F.linear(x.to(w.dtype), w, b)
        if act == "gelu":
            y = F.gelu(y, approximate="tanh")
        elif act == "silu":
            y = F.silu(y)
        return y

    def ln(self, x, w=None, b=None):
        import torch.nn.functional as F
        return F.layer_norm(x.float(), (x.shape[-1],), w, b, self.eps)

    def rms(self, x, w):
        import torch
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return y.type_as(x) * w

    def rope_tables(self, f, h, w):
        """cos/sin [L, 1, Dh/2] for raster tokens; Wan's split of the pairs by axis."""
        import torch
        dh = self.dim // self.heads
        c = dh // 2
        parts = [c - 2 * (c // 3), c // 3, c // 3]  # pairs per axis (= d - 4(d/6), 2(d/6), 2(d/6) dims)
        ang = []
        for n, pairs, axis in zip((f, h, w), parts, range(3)):
            inv = 1.0 / torch.pow(10000.0, torch.arange(0, 2 * pairs, 2, dtype=torch.float64) / (2 * pairs))
            pos = torch.arange(n, dtype=torch.float64)
            a = torch.outer(pos, inv)  # [n, pairs]
            shape = [1, 1, 1, pairs]
            shape[axis] = n
            ang.append(a.view(shape).expand(f, h, w, pairs))
        ang = torch.cat(ang, dim=-1).reshape(f * h * w, 1, c)
        rd = torch.float64 if self.dt == torch.float32 else torch.float32
        return ang.cos().to(self.device, rd), ang.sin().to(self.device, rd)

    def rope(self, x, cos, sin):
        import torch
        b, l, n, d = x.shape
        xr = x.to(cos.dtype).reshape(b, l, n, d // 2, 2)
        x0, x1 = xr[..., 0], xr[..., 1]
        out = torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1)
        return out.flatten(3).to(self.dt)

    def attention(self, q, k, v):
        import torch.nn.functional as F
        from contextlib import nullcontext
        ctx = nullcontext()
        if self.sdpa != "default":
            from torch.nn.attention import sdpa_kernel, SDPBackend
            be = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
                  "math": SDPBackend.MATH, "efficient": SDPBackend.EFFICIENT_ATTENTION}[self.sdpa]
            ctx = sdpa_kernel(be)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        try:
            with ctx:
                o = F.scaled_dot_product_attention(q, k, v)
        except RuntimeError as e:  # backend refused this shape: say so, use the default
            self.notes.add(f"SDPA {self.sdpa} refused {tuple(q.shape)}x{tuple(k.shape)}: "
                           f"{str(e).splitlines()[0][:120]}; used the default backend")
            o = F.scaled_dot_product_attention(q, k, v)
        return o.transpose(1, 2).flatten(2)

    def attn_block(self, pre, x, kv, rope):
        b, n = x.shape[0], self.heads
        q = self.lin(x, pre + ".q")
        k = self.lin(kv, pre + ".k")
        v = self.lin(kv, pre + ".v")
        if pre + ".norm_q.weight" in self.w:
            q = self.rms(q, self.w[pre + ".norm_q.weight"].to(q.dtype))
            k = self.rms(k, self.w[pre + ".norm_k.weight"].to(k.dtype))
        q, k, v = (t.view(b, t.shape[1], n, -1) for t in (q, k, v))
        if rope is not None:
            q, k = self.rope(q, *rope), self.rope(k, *rope)
        return self.lin(self.attention(q, k, v), pre + ".o")

    def forward(self, x, t, context):
        import torch
        import torch.nn.functional as F
        cfg, d, W = self.cfg, self.dim, self.w
        pt, ph, pw = self.patch
        bsz, _, fr, hh, ww = x.shape
        f, h, w = fr // pt, hh // ph, ww // pw
        # patch embedding (Conv3d, kernel = stride = patch)
        xe = F.conv3d(x.to(self.dt), W["patch_embedding.weight"], W["patch_embedding.bias"],
                      stride=self.patch)
        xs = xe.flatten(2).transpose(1, 2).float()  # [B, L, D] raster (f, h, w)
        # time embedding: sinusoidal in float64, [cos, sin]
        half = cfg.get("freq_dim", 256) // 2
        tt = t.detach().to("cpu", torch.float64).view(-1)
        arg = torch.outer(tt, torch.pow(10000.0, -torch.arange(half, dtype=torch.float64) / half))
        sin = torch.cat([arg.cos(), arg.sin()], dim=1).float().to(self.device)
        e = self.lin(self.lin(sin, "time_embedding.0", "silu"), "time_embedding.2")
        e0 = self.lin(F.silu(e), "time_projection.1").unflatten(1, (6, d))  # [B, 6, D] fp32
        ctx = self.lin(self.lin(context.to(self.device), "text_embedding.0", "gelu"),
                       "text_embedding.2")
        rope = self.rope_tables(f, h, w)
        for i in range(cfg["num_layers"]):
            p = f"blocks.{i}"
            m = (W[p + ".modulation"] + e0).chunk(6, dim=1)  # each [B, 1, D] fp32
            xn = (self.ln(xs) * (1 + m[1]) + m[0]).to(self.dt)
            y = self.attn_block(p + ".self_attn", xn, xn, rope)
            xs = xs + y.float() * m[2]
            if p + ".norm3.weight" in W:
                xn = self.ln(xs, W[p + ".norm3.weight"], W[p + ".norm3.bias"])
            else:
                xn = xs
            xs = xs + self.attn_block(p + ".cross_attn", xn.to(self.dt), ctx, None).float()
            y = self.lin(self.lin((self.ln(xs) * (1 + m[4]) + m[3]).to(self.dt), p + ".ffn.0", "gelu"),
                         p + ".ffn.2")
            xs = xs + y.float() * m[5]
        mh = (W["head.modulation"] + e.unsqueeze(1)).chunk(2, dim=1)
        out = self.lin(self.ln(xs) * (1 + mh[1]) + mh[0], "head.head")  # fp32, [B, L, p*C]
        c = cfg["out_dim"]
        out = out.view(bsz, f, h, w, pt, ph, pw, c)
        out = torch.einsum("bfhwpqrc->bcfphqwr", out)
        return out.reshape(bsz, c, f * pt, h * ph, w * pw)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", required=True, help="directory written by `jenga bench dit --export`")
    ap.add_argument("--device", default="cuda", help="cuda | cpu")
    ap.add_argument("--dtype", default=None, help="bfloat16 (default on cuda) | float32 (default on cpu)")
    ap.add_argument("--sdpa", default=None, help="cudnn (default on cuda) | flash | efficient | math | default")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--log", default=None, help="also append each JSON line to this file")
    args = ap.parse_args()
    try:
        import torch
    except ImportError:
        print("torch is not installed", file=sys.stderr)
        sys.exit(3)
    dev = args.device
    if dev.startswith("cuda") and not torch.cuda.is_available():
        print("torch sees no CUDA device", file=sys.stderr)
        sys.exit(3)
    on_cuda = dev.startswith("cuda")
    dt = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float32": torch.float32,
          "f32": torch.float32}[args.dtype or ("bfloat16" if on_cuda else "float32")]
    sdpa = args.sdpa or ("cudnn" if on_cuda else "default")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_grad_enabled(False)

    t0 = time.perf_counter()
    with open(f"{args.dir}/config.json") as f:
        cfg = json.load(f)
    weights = load_safetensors(f"{args.dir}/weights.safetensors")
    inputs = load_safetensors(f"{args.dir}/inputs.safetensors")
    ours = load_safetensors(f"{args.dir}/ours.safetensors")["v"]
    model = WanEager(cfg, weights, dev, dt, sdpa)
    del weights
    x, t, context = (inputs[k].to(dev) for k in ("x", "t", "context"))
    load_s = time.perf_counter() - t0

    def sync():
        if on_cuda:
            torch.cuda.synchronize()

    out = model.forward(x, t, context)  # warm-up (and the output compared)
    sync()
    times = []
    for _ in range(max(1, args.repeats)):
        s = time.perf_counter()
        model.forward(x, t, context)
        sync()
        times.append((time.perf_counter() - s) * 1e3)
    ms = statistics.median(times)
    a, b = out.double().cpu(), ours.double()
    rel = ((a - b).norm() / b.norm()).item()
    max_abs = (a - b).abs().max().item()
    name = "torch eager " + ("bf16" if dt == torch.bfloat16 else "f32") + f" (SDPA {sdpa})"
    devname = torch.cuda.get_device_name() if on_cuda else "cpu"
    tokens = x.shape[2] // model.patch[0] * (x.shape[3] // model.patch[1]) * (x.shape[4] // model.patch[2])
    line = json.dumps({
        "name": "dit_forward", "reference": name, "ms": round(ms, 3), "rel_l2": rel,
        "max_abs": max_abs, "tokens": tokens, "reference_device": devname,
        "torch": torch.__version__, "load_s": round(load_s, 2),
        "finite": bool(torch.isfinite(out).all().item()),
        "note": "; ".join(sorted(model.notes)) or None,
    })
    print(line, flush=True)
    if args.log:
        with open(args.log, "a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
