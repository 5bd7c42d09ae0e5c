#!/usr/bin/env python3
"""Golden for the HunyuanVideo ProRes switch convention (`--prores-renoise hunyuan`,
crates/pipeline/tests/unipc_golden.rs `prores_switch_equals_jenga_hunyuan`).

The official loop of Jenga's `hyvideo/diffusion/pipelines/pipeline_hunyuan_video_prores.py`
(L631-L790), transcribed with its own `FlowMatchDiscreteScheduler`
(`hyvideo/diffusion/schedulers/scheduling_flow_match_discrete.py`, executed from a checkout of
dvlab-research/Jenga, `JENGA_REPO`), on the analytic velocity field of
tests/fixtures/unipc/unipc.safetensors (the UniPC golden's, under CFG): after the model call
of step i == int(N·r) of a non-final stage that is not at full resolution, the scheduler is
re-shifted (`config.shift = shift[s+1]; set_timesteps`), x̂0 = `predict_x0_from_xt` at the new
timesteps[i], trilinear resize, `add_noise_to_step` at the new timesteps[i+1], and the loop
goes on on the new grid (`_step_index = i + 1`). Euler, 50 steps, flow-reverse.

Outputs tests/fixtures/unipc/hunyuan.safetensors: per case `NAME.x0` (start latent),
`NAME.noiseK` (stage K's re-noise), `NAME.traj` [51, C·F·H·W] (the latent entering each step
and the final one, zero-padded to the full size), `NAME.t` [50] (the timesteps fed).

    JENGA_REPO=/path/to/Jenga /work/venv/bin/python tools/make_hunyuan_prores_golden.py
"""

import os
import types

import torch
from safetensors.torch import load_file, save_file

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "..", "tests", "fixtures", "unipc")
C, F, H, W = 4, 2, 8, 8
STEPS = 50


def scheduler_class():
    repo = os.environ.get("JENGA_REPO", "/tmp/jenga")
    path = os.path.join(repo, "hyvideo", "diffusion", "schedulers",
                        "scheduling_flow_match_discrete.py")
    mod = types.ModuleType("scheduling_flow_match_discrete")
    exec(compile(open(path).read(), path, "exec"), mod.__dict__)
    return mod.FlowMatchDiscreteScheduler


def main():
    g = load_file(os.path.join(FIX, "unipc.safetensors"))
    G = float(g["guidance"][0])
    sh = (C, 1, 1, 1)

    def velocity(x, t):
        tt = torch.tensor(float(t), dtype=torch.float32) / 1000.0
        vc = g["a_c"].view(sh) * x + g["b_c"].view(sh) * tt + g["c_c"].view(sh)
        vu = g["a_u"].view(sh) * x + g["b_u"].view(sh) * tt + g["c_u"].view(sh)
        return vu + G * (vc - vu)

    Sched = scheduler_class()
    gen = torch.Generator().manual_seed(4321)
    out = {}
    for name, shifts, rates, res in [
        ("hy_prores2_n50", [7.0, 9.0], [0.5, 1.0], [0.75, 1.0]),
        ("hy_prores3_n50", [7.0, 9.0, 11.0], [0.3, 0.5, 1.0], [0.5, 0.75, 1.0]),
    ]:
        sizes = [(int(H * r), int(W * r)) for r in res]
        x = torch.randn(C, F, *sizes[0], generator=gen, dtype=torch.float32)
        noises = [torch.randn(C, F, *sz, generator=gen, dtype=torch.float32)
                  for sz in sizes[1:]]
        s = Sched(shift=shifts[0], reverse=True, solver="euler")
        s.set_timesteps(STEPS, device="cpu")
        timesteps = s.timesteps
        split = [int(STEPS * r) for r in rates]
        stage = 0
        latents = x[None]
        traj, ts = [x.reshape(-1).clone()], []
        for i in range(len(timesteps)):
            t = timesteps[i]
            ts.append(float(t))
            v = velocity(latents[0], t)[None]
            if i in split:
                stage += 1
                if res[stage - 1] != 1.0:
                    s.config.shift = shifts[stage]  # "scheduler re-shift"
                    s.set_timesteps(STEPS, device="cpu")
                    s._step_index = i
                    timesteps = s.timesteps
                    t = timesteps[i]
                    latents = s.predict_x0_from_xt(v, t, latents, return_dict=False)[0]
                    latents = torch.nn.functional.interpolate(
                        latents, size=(F,) + sizes[stage], mode="trilinear")
                    latents = s.add_noise_to_step(latents, noises[stage - 1][None],
                                                  timesteps[i + 1]).prev_sample
                    s._step_index += 1
                else:
                    latents = s.step(v, t, latents, return_dict=False)[0]
            else:
                latents = s.step(v, t, latents, return_dict=False)[0]
            traj.append(latents.reshape(-1).clone())
        n = C * F * H * W
        flat = torch.zeros(len(traj), n)
        for k, a in enumerate(traj):
            flat[k, : a.numel()] = a
        out[f"{name}.x0"] = x.contiguous()
        for k, nz in enumerate(noises):
            out[f"{name}.noise{k + 1}"] = nz.contiguous()
        out[f"{name}.traj"] = flat.contiguous()
        out[f"{name}.t"] = torch.tensor(ts, dtype=torch.float32)
        print(f"{name}: final |x| max {float(flat[-1].abs().max()):.3f}, t[0..3] {ts[:3]}")
    save_file(out, os.path.join(FIX, "hunyuan.safetensors"))


if __name__ == "__main__":
    main()
