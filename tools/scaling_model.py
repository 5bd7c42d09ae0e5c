#!/usr/bin/env python3
"""Predicted multi-GPU scaling of one denoising step under sequence parallelism (CFG x Ulysses x ring).

A model, not a measurement: one-GPU step times are the H100 figures recorded in docs/BENCHMARKS.md
(sources next to each constant); everything else is arithmetic on bytes and FLOPs. The scaling run
on a multi-GPU machine is what will hold it to account (docs/BENCHMARKS.md, "Model: multi-GPU
scaling"). Stdlib only. Usage:
    python3 tools/scaling_model.py [--busbw GBPS] [--imbalance X] [--json FILE]
"""
import argparse
import json

# ---- interconnect and copies --------------------------------------------------------------------
# NCCL's effective NVLink 4 bandwidth on H100 after its ~20 % protocol overhead: 370 GB/s of the
# 450 GB/s line rate per direction, "observed as BusBw when running non-allreduce operations"
# (NVIDIA/nccl-tests#212, sjeaugey). alltoall busbw = algbw x (n-1)/n (NVIDIA/nccl-tests#130), i.e.
# bytes a rank actually sends / time; all_gather's busbw is defined the same way.
BUSBW = 370e9
# Per-collective latency: an assumption. NCCL's own tuner prices a 128-byte op at 25.2 us on H100
# (log in NVIDIA/nccl#1453); small sendrecv measures 3.5-3.7 us on H800 (NVIDIA/nccl#1984).
LATENCY_S = 25e-6
# One layout copy (pack for the send, or unpack after the receive; the other one folded into the
# neighbouring kernel) per all-to-all, read + write at 2.0 TB/s: our elementwise kernels run at
# 1.6-2.5 TB/s (docs/BENCHMARKS.md, "linears and fused ops"). PyTorch measured its Ulysses permutes
# on H100 at ~38 % of the all-to-all time (pytorch/pytorch#178066); this gives ~40 %.
HBM_COPY = 2.0e12
BF16 = 2  # bytes per q/k/v/o element on the wire
F32 = 4   # bytes per head-output / latent value gathered at the end (assume f32: the safe side)
# Per-step work that no rank split touches (solver update on the latent, host work between steps):
# a skipped step costs 2.7-3.0 ms (docs/BENCHMARKS.md, engine reshape table, "skipped step mean").
FIXED_STEP_MS = 3.0

# ---- Wan2.1-1.3B, 81 x 480 x 832 ----------------------------------------------------------------
# Latent 21x60x104, patch 1x2x2 -> 21x30x52 = 32760 tokens; 30 layers, D 1536, 12 heads x 128,
# FFN 8960, 512 text tokens (docs/BENCHMARKS.md "GPU: Wan-1.3B DiT forward"; Wan2.1 config).
WAN = dict(name="Wan2.1-1.3B 480p", tokens=32760, layers=30, dim=1536, heads=12, ffn=8960,
           text=512, batch=2,            # CFG: conditional + unconditional rows (guidance 5)
           out_per_token=16 * 1 * 2 * 2,  # head output: C=16 x patch 1x2x2 values per token
           latent=16 * 21 * 60 * 104)     # one batch row of the latent (CFG all-gather)
# Dense step, CFG batch 2: 992.6 ms median of 50 (docs/bench/bench-e2e-50.jsonl, "dense").
WAN_DENSE_STEP_MS = 992.6
# Attention share of a forward: 335.0 of 515.0 ms synchronised (docs/BENCHMARKS.md, --op-times).
WAN_ATTN_SHARE = 335.0 / 515.0
# Full-size (32760-token) computed flash steps, median ms at the measured density of the plans
# (docs/bench/bench-e2e-50.jsonl: flash@0.01, @0.3, @0.5, @0.7, flash; stage 2, steps > 50 ms).
WAN_FLASH_STEPS = [(0.0987, 399.9), (0.330, 563.2), (0.518, 700.6), (0.708, 840.5), (0.902, 978.3)]
# Density modelled for flash: the drop rates' floor at full size (flash@0.01), the lowest measured
# density, hence the least compute per rank and the hardest case for scaling.
WAN_FLASH_DENSITY = 0.0987
# Plan building per call (12 heads x 256 blocks, fused): 0.098 ms (docs/BENCHMARKS.md, mask table).
WAN_PLAN_MS = 0.098

# ---- HunyuanVideo 720p (not implemented here: a FLOP-derived model) ------------------------------
# 129 frames 720x1280 -> latent 33x90x160 -> patch 1x2x2 -> 33x45x80 = 118800 video tokens, + 256
# text tokens in joint attention = 119056 (the shape benchmarked, docs/BENCHMARKS.md attention table);
# D 3072, 24 heads x 128, 20 dual-stream + 40 single-stream blocks, MLP ratio 4 (HunyuanVideo config).
HY = dict(name="HunyuanVideo 720p", tokens=119056, layers=60, dim=3072, heads=24, batch=1,
          out_per_token=16 * 1 * 2 * 2,   # 16 latent channels x patch 1x2x2 (HunyuanVideo config)
          latent=16 * 33 * 90 * 160)
# batch 1: HunyuanVideo T2V uses embedded (distilled) guidance, no CFG rows (docs/JENGA.md presets).
# The 256 text tokens are counted with the sequence (split like video tokens; replicating them on
# every rank instead would add 0.2 % of the per-token work).
# Our attention at 24 x 119056 x 128: dense 283.2 ms, Jenga plan at 20 % 64.0 ms, plan built on the
# device 0.795 ms (docs/BENCHMARKS.md, attention + mask tables; DESIGN.md's cuDNN: 303 ms, Flex 88.3).
# Flash density 20 %: an assumption at that measured point (no trained-weight density is recorded).
HY_ATTN_DENSE_MS, HY_ATTN_20_MS, HY_PLAN_MS, HY_FLASH_DENSITY = 283.2, 64.0, 0.795, 0.20
# bench attention runs at boost clock; inside a model the 700 W cap slows it: 11.2 ms per call in
# the Wan forward against 9.89 ms in bench attention (docs/BENCHMARKS.md, "Two things to note").
POWER_CAP = 11.2 / 9.89
# Jenga paper, Table 2b (../shared/seeds/001_*.txt): HunyuanVideo DiT time on 1/2/4/8 H800 with
# xDiT Ulysses, whole 50-step runs (dense: 50 steps; Jenga-Flash: 24 computed, ProRes 540p -> 720p).
PAPER = {"dense": (1625, 844, 440, 225), "flash": (184, 107, 63, 39)}


def wan_linear_flops_per_row():
    """Per-token work of one Wan forward (batch 1): self q,k,v,o + cross q,o (6 D^2) + FFN (2 D F)
    per token, + cross k,v on the text (2 x 512 x D^2) per layer. FLOPs = 2 x MACs."""
    d, f, l = WAN["dim"], WAN["ffn"], WAN["tokens"]
    return 2 * WAN["layers"] * (l * (6 * d * d + 2 * d * f) + 2 * WAN["text"] * d * d)


def one_gpu():
    """Per-step (attention ms, per-token rest ms, plan ms) on one H100 per model and variant;
    FIXED_STEP_MS comes on top (step() adds it once per rank)."""
    wan_attn = WAN_DENSE_STEP_MS * WAN_ATTN_SHARE
    wan_rest = WAN_DENSE_STEP_MS - wan_attn - FIXED_STEP_MS   # the per-token part of the rest
    # Everything outside attention, per linear FLOP, as Wan achieves it: the effective rate we
    # carry to HunyuanVideo's bigger (D 3072) GEMMs; ~53 % of cuBLAS' 891 TFLOP/s at 8192^3
    # (DESIGN.md), conservative there (norms scale with D, GEMMs with D^2).
    rate = wan_linear_flops_per_row() * WAN["batch"] / (wan_rest * 1e-3)
    # Flash at full size: least squares step = a + b x density over the measured steps.
    n = len(WAN_FLASH_STEPS)
    mx = sum(d for d, _ in WAN_FLASH_STEPS) / n
    my = sum(t for _, t in WAN_FLASH_STEPS) / n
    b = sum((d - mx) * (t - my) for d, t in WAN_FLASH_STEPS) / sum((d - mx) ** 2 for d, _ in WAN_FLASH_STEPS)
    a = my - b * mx - FIXED_STEP_MS
    wan_plan = WAN_PLAN_MS * WAN["layers"] * WAN["batch"]
    # HunyuanVideo: dual-stream (qkv 3D^2 + proj D^2 + MLP 8D^2 per stream) and single-stream
    # (linear1 D->7D, linear2 5D->D) blocks both do 12 D^2 MACs = 24 D^2 FLOPs per token.
    hy_flops = 24 * HY["dim"] ** 2 * HY["tokens"] * HY["layers"]
    hy_rest = hy_flops / rate * 1e3
    hy_plan = HY_PLAN_MS * POWER_CAP * HY["layers"]
    return {
        ("wan", "dense"): (wan_attn, wan_rest, 0.0),
        ("wan", "flash"): (b * WAN_FLASH_DENSITY, a - wan_plan, wan_plan),
        ("hy", "dense"): (HY_ATTN_DENSE_MS * POWER_CAP * HY["layers"], hy_rest, 0.0),
        # sparse time taken proportional to density around the measured 20 % point
        ("hy", "flash"): (HY_ATTN_20_MS * HY_FLASH_DENSITY / 0.20 * POWER_CAP * HY["layers"], hy_rest, hy_plan),
    }, dict(rate_tflops=rate / 1e12, fit_a=a, fit_b=b, hy_flops=hy_flops)


def layouts(model, n, cfg_parallel):
    """(cfg, ulysses, ring) for n GPUs: CFG pair first (when asked and batch 2), then the largest
    Ulysses degree that divides the heads and the sequence ranks, the rest as ring."""
    cfg = 2 if cfg_parallel and model["batch"] == 2 and n >= 2 else 1
    s = n // cfg
    u = max(k for k in range(1, s + 1) if s % k == 0 and model["heads"] % k == 0)
    return cfg, u, s // u


def step(model, times, cfg, u, r, busbw, imbalance):
    attn1, rest1, plan1 = times
    s = u * r                              # sequence ranks
    b = model["batch"] // cfg              # batch rows per rank
    frac = b / model["batch"]              # share of the one-GPU batch this rank computes
    L, D, layers = model["tokens"], model["dim"], model["layers"]
    attn = attn1 * frac / s * (imbalance if plan1 and cfg * s > 1 else 1.0)  # plans differ per row/head
    rest = rest1 * frac / s + FIXED_STEP_MS
    plan = plan1 * frac / u                # plans are per head: split by Ulysses, redone by each ring rank
    local = b * (L / s) * D * BF16         # one [B, L/S, H, Dh] bf16 tensor a rank holds
    a2a_qkv = a2a_o = ring = 0.0
    t = 0.0                                # seconds of communication per layer
    colls = 0
    if u > 1:
        a2a_qkv = (u - 1) / u * 3 * local
        a2a_o = (u - 1) / u * local
        # wire time + one layout copy per all-to-all (read + write of q, k, v and of o) + latency
        t += (a2a_qkv + a2a_o) / busbw + 2 * (4 * local) / HBM_COPY + 2 * LATENCY_S
        colls += 2
    if r > 1:  # all-gather q, k, v of the rank's H/U heads over the ring group (no overlap)
        ring = (r - 1) / r * 3 * b * L * (D / u) * BF16
        t += ring / busbw + LATENCY_S
        colls += 1
    comm = t * layers * 1e3
    sent = (a2a_qkv + a2a_o + ring) * layers
    if s > 1:  # head outputs gathered after the last block
        g = (s - 1) / s * b * L * model["out_per_token"] * F32
        comm += (g / busbw + LATENCY_S) * 1e3
        sent += g
        colls += 1 / layers
    if cfg > 1:  # model outputs gathered over the CFG pair
        g = model["latent"] * F32
        comm += (g / busbw + LATENCY_S) * 1e3
        sent += g
        colls += 1 / layers
    return dict(attn_ms=attn + plan, rest_ms=rest, comm_ms=comm, step_ms=attn + plan + rest + comm,
                a2a_qkv_mb=a2a_qkv / 1e6, a2a_o_mb=a2a_o / 1e6, ring_mb=ring / 1e6,
                sent_gb_per_step=sent / 1e9, collectives_per_step=round(colls * layers))


def rows(busbw, imbalance):
    base, info = one_gpu()
    out = []
    for key, model in (("wan", WAN), ("hy", HY)):
        for variant in ("dense", "flash"):
            times = base[(key, variant)]
            one = step(model, times, 1, 1, 1, busbw, imbalance)["step_ms"]
            seen = set()
            for n in (1, 2, 4, 8):
                for cfgp in (True, False):
                    lay = layouts(model, n, cfgp)
                    if lay in seen:
                        continue
                    seen.add(lay)
                    cfg, u, r = lay
                    row = step(model, times, cfg, u, r, busbw, imbalance)
                    half = step(model, times, cfg, u, r, busbw / 2, imbalance)["step_ms"]
                    name = "x".join(p for p in (cfg > 1 and f"CFG{cfg}", u > 1 and f"U{u}",
                                                r > 1 and f"R{r}") if p) or "1 GPU"
                    row.update(model=model["name"], variant=variant, gpus=n, layout=name,
                               cfg=cfg, ulysses=u, ring=r, speedup=one / row["step_ms"],
                               efficiency=one / row["step_ms"] / n, speedup_half_bw=one / half)
                    out.append(row)
    return out, info


def markdown(out, info, busbw, imbalance):
    lines = [f"**Predicted per denoising step** (NCCL busbw {busbw / 1e9:.0f} GB/s, "
             f"{LATENCY_S * 1e6:.0f} us per collective, layout copies at {HBM_COPY / 1e12:.1f} TB/s, "
             f"sparse-attention imbalance x{imbalance:.2f}; non-attention work at "
             f"{info['rate_tflops']:.0f} TFLOP/s of linear FLOPs; Wan flash full-size step = "
             f"{info['fit_a'] + FIXED_STEP_MS:.0f} + {info['fit_b']:.0f} x density ms; HunyuanVideo "
             f"linears {info['hy_flops'] / 1e15:.2f} PFLOP per step):", "",
             "| model | attention | GPUs | layout | a2a MB/rank (qkv / o) | ring AG MB | GB sent/step | "
             "collectives/step | comm ms | attention ms | rest ms | step ms | speed-up | efficiency | "
             "speed-up at ½ busbw |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    fmt = lambda v, p=0: f"{v:.{p}f}" if v else "–"
    for x in out:
        wan = x["model"] == WAN["name"]
        var = "dense" if x["variant"] == "dense" else \
            f"flash {WAN_FLASH_DENSITY if wan else HY_FLASH_DENSITY:.1%}"
        lines.append(
            f"| {'Wan 1.3B 480p' if wan else 'Hunyuan 720p'} | {var} | {x['gpus']} | {x['layout']} | "
            f"{fmt(x['a2a_qkv_mb'], 1)} / {fmt(x['a2a_o_mb'], 1)} | {fmt(x['ring_mb'], 1)} | "
            f"{fmt(x['sent_gb_per_step'], 2)} | {x['collectives_per_step'] or '–'} | {x['comm_ms']:.1f} | "
            f"{x['attn_ms']:.1f} | {x['rest_ms']:.1f} | {x['step_ms']:.1f} | **{x['speedup']:.2f}x** | "
            f"{x['efficiency']:.0%} | {x['speedup_half_bw']:.2f}x |")
    lines += ["", "**HunyuanVideo: the Jenga paper (H800, xDiT Ulysses, whole runs) beside this model "
              "(per full-size step)**:", "",
              "| GPUs | paper dense s (speed-up) | model dense | paper Flash s (speed-up) | model flash 20 % "
              "| model flash at ½ busbw |", "|---|---|---|---|---|---|"]
    hy = {(x["variant"], x["gpus"]): x for x in out if x["model"] == HY["name"]}
    for i, n in enumerate((1, 2, 4, 8)):
        pd, pf = PAPER["dense"], PAPER["flash"]
        lines.append(f"| {n} | {pd[i]} ({pd[0] / pd[i]:.2f}x) | {hy[('dense', n)]['speedup']:.2f}x | "
                     f"{pf[i]} ({pf[0] / pf[i]:.2f}x) | {hy[('flash', n)]['speedup']:.2f}x | "
                     f"{hy[('flash', n)]['speedup_half_bw']:.2f}x |")
    # Amdahl through the paper's 1- and 8-GPU points: T(n) = serial + parallel / n.
    fits = []
    for v in ("dense", "flash"):
        t1, t8 = PAPER[v][0], PAPER[v][3]
        serial = (8 * t8 - t1) / 7
        at = ", ".join(f"{serial + (t1 - serial) / n:.0f}" for n in (2, 4))
        fits.append(f"{v} T(n) = {serial:.1f} s + {t1 - serial:.0f} s / n ({at} s at n = 2, 4)")
    lines += ["", "Paper, fitted through n = 1 and 8: " + "; ".join(fits) + "."]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--busbw", type=float, default=BUSBW / 1e9, help="NCCL bus bandwidth, GB/s")
    ap.add_argument("--imbalance", type=float, default=1.0,
                    help="slowest rank's sparse attention / mean (per-head plans differ in density)")
    ap.add_argument("--json", metavar="FILE", help="also write one JSON line per row to FILE")
    args = ap.parse_args()
    out, info = rows(args.busbw * 1e9, args.imbalance)
    print(markdown(out, info, args.busbw * 1e9, args.imbalance))
    if args.json:
        with open(args.json, "w") as f:
            for x in out:
                f.write(json.dumps(dict(x, busbw_gbps=args.busbw, imbalance=args.imbalance)) + "\n")


if __name__ == "__main__":
    main()
