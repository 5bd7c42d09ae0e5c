#!/usr/bin/env python3
"""PyTorch attention reference for `jenga bench attention --reference "python3 tools/bench_attention.py"`.

Reads the manifest jenga writes (shapes, and per density the SAME random block plan jenga timed,
as CSR row_ptr/col_idx int32 in a safetensors file) and times, on random bf16 q/k/v of each shape:
  - torch SDPA, cuDNN backend and flash backend (dense);
  - FlexAttention (torch.compile'd flex_attention) with a BlockMask built from each plan
    (BlockMask.from_kv_blocks, kept blocks as full blocks): the same mask, block for block.
Timing as jenga: one warm-up (after compilation), then the median of --repeats runs, each
synchronize + wall clock. Prints one JSON object per line:
  {"name": <jenga's case name>, "reference": ..., "ms": ..., "tflops": ..., "device": ...}
A sanity check compares Flex on the all-kept plan (or a 100% plan) with cuDNN: "rel_l2".

Exit status 3 (one line on stderr) when torch or the device is missing: jenga then prints that
the reference was skipped.
"""
import argparse
import json
import os
import statistics
import sys
import time


def load_i32(path):
    import torch
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        data = bytearray(f.read())
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        assert e["dtype"] == "I32", e
        s, t = e["data_offsets"]
        out[name] = (torch.frombuffer(data, dtype=torch.int32, count=(t - s) // 4, offset=s)
                     if t > s else torch.zeros(0, dtype=torch.int32))
    return out


def block_mask(plan, b, h, seq, block, device):
    """CSR (rows = (b, h, q block)) -> BlockMask whose kept blocks are all full blocks."""
    import torch
    from torch.nn.attention.flex_attention import BlockMask
    rp, ci = plan["row_ptr"].long(), plan["col_idx"]
    nb = (seq + block - 1) // block
    rows = b * h * nb
    assert rp.numel() == rows + 1, (rp.numel(), rows)
    counts = rp[1:] - rp[:-1]
    row_of = torch.repeat_interleave(torch.arange(rows), counts)
    pos = torch.arange(ci.numel()) - rp[:-1][row_of]
    idx = torch.zeros(rows, nb, dtype=torch.int32)
    idx[row_of, pos] = ci
    num = counts.to(torch.int32).view(b, h, nb).to(device)
    idx = idx.view(b, h, nb, nb).to(device)
    zn, zi = torch.zeros_like(num), torch.zeros_like(idx)
    try:
        return BlockMask.from_kv_blocks(zn, zi, num, idx, BLOCK_SIZE=block, seq_lengths=(seq, seq))
    except TypeError:  # older torch: no seq_lengths
        return BlockMask.from_kv_blocks(zn, zi, num, idx, BLOCK_SIZE=block)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--no-flex", action="store_true")
    ap.add_argument("--log", default=None, help="also append each JSON line to this file")
    args = ap.parse_args()
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        print("torch is not installed", file=sys.stderr)
        sys.exit(3)
    with open(args.manifest) as f:
        man = json.load(f)
    root = os.path.dirname(os.path.abspath(args.manifest))
    dev = args.device
    on_cuda = dev.startswith("cuda")
    if on_cuda and not torch.cuda.is_available():
        print("torch sees no CUDA device", file=sys.stderr)
        sys.exit(3)
    repeats = max(1, args.repeats or man.get("repeats", 5))
    devname = torch.cuda.get_device_name() if on_cuda else "cpu"
    torch.set_grad_enabled(False)
    dt = torch.bfloat16 if on_cuda else torch.float32

    def sync():
        if on_cuda:
            torch.cuda.synchronize()

    def timed(fn):
        fn()
        sync()
        ts = []
        for _ in range(repeats):
            s = time.perf_counter()
            fn()
            sync()
            ts.append((time.perf_counter() - s) * 1e3)
        return statistics.median(ts)

    def emit(name, ref, ms, flops, **kw):
        line = {"name": name, "reference": ref, "ms": round(ms, 4),
                "tflops": round(flops / ms / 1e9, 2), "device": devname,
                "torch": torch.__version__}
        line.update(kw)
        print(json.dumps(line), flush=True)
        if args.log:
            with open(args.log, "a") as f:
                f.write(json.dumps(line) + "\n")

    from torch.nn.attention import sdpa_kernel, SDPBackend
    flex = None
    if not args.no_flex:
        try:
            from torch.nn.attention.flex_attention import flex_attention
            flex = torch.compile(flex_attention, dynamic=False) if on_cuda else flex_attention
        except Exception as e:  # noqa: BLE001
            print(f"flex_attention unavailable: {e}", file=sys.stderr)

    for si, sh in enumerate(man["shapes"]):
        b, h, seq, d, block = sh["batch"], sh["heads"], sh["seq"], sh["head_dim"], sh["block"]
        torch.manual_seed(1234 + si)
        q, k, v = (torch.randn(b, h, seq, d, device=dev, dtype=dt) for _ in range(3))
        dn, dflops = sh["dense"]["name"], sh["dense"]["flops"]
        ref_out = None
        backends = [("torch sdpa cudnn", SDPBackend.CUDNN_ATTENTION),
                    ("torch sdpa flash", SDPBackend.FLASH_ATTENTION)] if on_cuda else \
                   [("torch sdpa (cpu default)", None)]
        for label, bk in backends:
            try:
                def run():
                    if bk is None:
                        return F.scaled_dot_product_attention(q, k, v)
                    with sdpa_kernel(bk):
                        return F.scaled_dot_product_attention(q, k, v)
                ms = timed(run)
                if ref_out is None:
                    ref_out = run()
                emit(dn, label, ms, dflops)
            except RuntimeError as e:
                print(f"{label} on {sh['shape']}: {str(e).splitlines()[0]}", file=sys.stderr)
        if flex is None:
            continue
        for p in sh["plans"]:
            try:
                plan = load_i32(os.path.join(root, p["file"]))
                bm = block_mask(plan, b, h, seq, block, dev)
                run = lambda: flex(q, k, v, block_mask=bm)  # noqa: E731
                t0 = time.perf_counter()
                out = run()  # compiles on the first call of a shape
                sync()
                compile_s = time.perf_counter() - t0
                ms = timed(run)
                extra = {"compile_s": round(compile_s, 1)}
                if p["density"] >= 0.999999 and ref_out is not None:
                    r = ((out.float() - ref_out.float()).norm() / ref_out.float().norm()).item()
                    extra["rel_l2"] = r
                emit(p["name"], "torch flex_attention (same block mask)", ms, p["flops"], **extra)
                del out, bm
            except Exception as e:  # noqa: BLE001
                print(f"flex on {p['name']}: {type(e).__name__}: {str(e).splitlines()[0]}",
                      file=sys.stderr)
        del q, k, v, ref_out
        if on_cuda:
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
