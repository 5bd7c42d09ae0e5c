import torch, torch.nn.functional as F
def t(f, it=20):
    for _ in range(3): f()
    torch.cuda.synchronize(); s=torch.cuda.Event(enable_timing=True); e=torch.cuda.Event(enable_timing=True)
    s.record()
    for _ in range(it): f()
    e.record(); torch.cuda.synchronize(); return s.elapsed_time(e)/it/1e3
m=32760; x=torch.randn(m,1536,device='cuda',dtype=torch.bfloat16)
for n,act in ((1536,None),(8960,None),(8960,'gelu')):
    w=torch.randn(n,1536,device='cuda',dtype=torch.bfloat16); b=torch.randn(n,device='cuda',dtype=torch.bfloat16)
    f=(lambda: F.linear(x,w,b)) if act is None else (lambda: F.gelu(F.linear(x,w,b),approximate='tanh'))
    s=t(f); print(f"torch linear {m}x1536x{n} {act}: {s*1e3:.3f} ms {2*m*1536*n/s/1e12:.1f} TFLOP/s")
q=torch.randn(1,12,m,128,device='cuda',dtype=torch.bfloat16)
from torch.nn.attention import sdpa_kernel, SDPBackend
for bk in (SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION):
    try:
        with sdpa_kernel(bk): s=t(lambda: F.scaled_dot_product_attention(q,q,q),5)
        print(f"torch sdpa {bk} 32760 H12 Dh128: {s*1e3:.3f} ms {4*m*m*128*12/s/1e12:.1f} TFLOP/s")
    except Exception as ex: print("sdpa", bk, ex)
