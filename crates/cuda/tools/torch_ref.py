# Same-run torch references for crates/cuda/examples/cuda_bench.rs.
# `python3 torch_ref.py [attention] [noflex]`: `attention` skips the linears; `noflex` skips
# FlexAttention (its torch.compile costs ~30-60 s). Attention cases also print JSON lines.
import json, sys, time
import torch, torch.nn.functional as F

attn_only = "attention" in sys.argv
def t(f, it=20):
    for _ in range(3): f()
    torch.cuda.synchronize(); s=torch.cuda.Event(enable_timing=True); e=torch.cuda.Event(enable_timing=True)
    s.record()
    for _ in range(it): f()
    e.record(); torch.cuda.synchronize(); return s.elapsed_time(e)/it/1e3
def js(**kw): print(json.dumps(kw), flush=True)

print("device:", torch.cuda.get_device_name(), "torch", torch.__version__, flush=True)
m=32760
if not attn_only:
    x=torch.randn(m,1536,device='cuda',dtype=torch.bfloat16)
    for n,act in ((1536,None),(8960,None),(8960,'gelu')):
        w=torch.randn(n,1536,device='cuda',dtype=torch.bfloat16); b=torch.randn(n,device='cuda',dtype=torch.bfloat16)
        f=(lambda: F.linear(x,w,b)) if act is None else (lambda: F.gelu(F.linear(x,w,b),approximate='tanh'))
        s=t(f); print(f"torch linear {m}x1536x{n} {act}: {s*1e3:.3f} ms {2*m*1536*n/s/1e12:.1f} TFLOP/s")
    del x

from torch.nn.attention import sdpa_kernel, SDPBackend
for (L, H, its) in ((32760, 12, 10), (119056, 24, 3)):
    q, k, v = (torch.randn(1, H, L, 128, device='cuda', dtype=torch.bfloat16) for _ in range(3))
    fl = 4 * L * L * 128 * H
    for bk, name in ((SDPBackend.CUDNN_ATTENTION, "cudnn"), (SDPBackend.FLASH_ATTENTION, "flash")):
        try:
            with sdpa_kernel(bk): s = t(lambda: F.scaled_dot_product_attention(q, k, v), its)
            print(f"torch sdpa {name} {H}x{L}x128: {s*1e3:.3f} ms {fl/s/1e12:.1f} TFLOP/s", flush=True)
            js(case=f"attention dense {H}x{L}x128", reference=f"torch SDPA {name}", reference_ms=round(s*1e3, 3), reference_tflops=round(fl/s/1e12, 1))
        except Exception as ex: print("sdpa", name, L, ex, flush=True)
    del q, k, v
    torch.cuda.empty_cache()

if "noflex" not in sys.argv:
    # FlexAttention over the same ~20% block mask as cuda_bench (diagonal + the same LCG draw).
    try:
        from torch.nn.attention.flex_attention import flex_attention, BlockMask
        H, L, B = 12, 32760, 128
        nb = (L + B - 1) // B
        keep = torch.zeros(H * nb * nb, dtype=torch.bool)
        st = 12345; M = (1 << 64) - 1; kl = []
        for i in range(H * nb * nb):
            st = (st * 6364136223846793005 + 1442695040888963407) & M
            kl.append((i // nb) % nb == i % nb or (st >> 33) % 1000 < 195)
        keep = torch.tensor(kl, dtype=torch.bool).view(1, H, nb, nb).cuda()
        density = keep.float().mean().item()
        cnt = keep.sum(-1).to(torch.int32)
        idx = torch.argsort((~keep).to(torch.int8), dim=-1, stable=True).to(torch.int32)
        Lp = nb * B  # flex works on whole blocks: pad to 32768, padded keys masked by mask_mod
        def mask_mod(b, h, qi, ki): return ki < L
        bm = BlockMask.from_kv_blocks(cnt, idx, None, None, BLOCK_SIZE=B, mask_mod=mask_mod, seq_lengths=(Lp, Lp))
        q, k, v = (torch.randn(1, H, Lp, 128, device='cuda', dtype=torch.bfloat16) for _ in range(3))
        flex = torch.compile(flex_attention)
        t0 = time.time(); flex(q, k, v, block_mask=bm); torch.cuda.synchronize()
        s = t(lambda: flex(q, k, v, block_mask=bm), 10)
        print(f"flex attention {density*100:.1f}% blocks (compile {time.time()-t0:.0f} s): {s*1e3:.3f} ms", flush=True)
        js(case=f"attention block-sparse {density*100:.1f}% kept (block 128) 12x32760x128", reference="torch FlexAttention (compiled, same block mask, all blocks partial/masked)", reference_ms=round(s*1e3, 3))
    except Exception as ex:
        print("flex attention failed:", repr(ex)[:400], flush=True)
