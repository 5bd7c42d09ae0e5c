"""Reference for `jenga bench text`: transformers' UMT5EncoderModel on the same weights and ids.

Make a random full-size umT5-XXL (Wan2.1's text encoder) once, saved with save_pretrained:
    python3 tools/umt5_reference.py --make /tmp/umt5-xxl --device cuda [--layers 24]
Then (run by `jenga bench text --weights DIR --reference "python3 tools/umt5_reference.py"`):
    python3 tools/umt5_reference.py --dir DIR --inputs inputs.safetensors \
        --ours ours.safetensors --device cuda --repeats 5
prints one JSON line per input length: {"tokens", "ms", "rel_l2", "max_abs", "peak_gib", ...}.
Runs in bf16 on CUDA (Wan's dtype), f32 on the CPU.
"""

import argparse
import json
import time

import torch
from safetensors.torch import load_file


def make(args):
    from transformers import UMT5Config, UMT5EncoderModel

    cfg = UMT5Config(
        vocab_size=256384,
        d_model=4096,
        d_kv=64,
        d_ff=10240,
        num_layers=args.layers,
        num_heads=64,
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
        dropout_rate=0.0,
        layer_norm_epsilon=1e-6,
        feed_forward_proj="gated-gelu",
        is_encoder_decoder=False,
        use_cache=False,
        tie_word_embeddings=True,
    )
    torch.manual_seed(args.seed)
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    torch.set_default_dtype(dtype)
    with torch.device(args.device):
        model = UMT5EncoderModel(cfg).eval()
        with torch.no_grad():
            # as tools/make_umt5_golden.py: a bias and norms that matter
            for n, p in model.named_parameters():
                if "relative_attention_bias" in n:
                    p.normal_(0.0, 1.0)
                elif "layer_norm" in n:
                    p.uniform_(0.5, 1.5)
                elif n == "shared.weight":
                    p.normal_(0.0, 1.0)
                else:
                    p.normal_(0.0, p.shape[1] ** -0.5)
    model.save_pretrained(args.make, safe_serialization=True, max_shard_size="5GB")
    print(f"saved {sum(p.numel() for p in model.parameters()) / 1e9:.2f}B parameters ({dtype}) to {args.make}")


def bench(args):
    from transformers import UMT5EncoderModel

    dev = torch.device(args.device)
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    model = UMT5EncoderModel.from_pretrained(args.dir, dtype=dtype).to(dev).eval()
    inputs = load_file(args.inputs)
    ours = load_file(args.ours) if args.ours else {}
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    name = f"transformers UMT5EncoderModel {str(dtype).replace('torch.', '')}"
    lengths = sorted(int(k.split("_")[1]) for k in inputs if k.startswith("ids_"))
    for n in lengths:
        ids = inputs[f"ids_{n}"].to(torch.long).unsqueeze(0).to(dev)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        with torch.no_grad():
            h = model(input_ids=ids).last_hidden_state[0]
            sync()
            times = []
            for _ in range(max(args.repeats, 1)):
                t = time.perf_counter()
                h = model(input_ids=ids).last_hidden_state[0]
                sync()
                times.append((time.perf_counter() - t) * 1e3)
        times.sort()
        line = {"reference": name, "tokens": n, "ms": times[len(times) // 2],
                "reference_device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu"}
        if dev.type == "cuda":
            line["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
        key = f"hidden_{n}"
        if key in ours:
            ref = h.float().cpu()
            o = ours[key].float()
            line["rel_l2"] = ((o - ref).norm() / ref.norm()).item()
            line["max_abs"] = (o - ref).abs().max().item()
        print(json.dumps(line), flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--make", help="write a random umT5-XXL UMT5EncoderModel to this directory")
    p.add_argument("--layers", type=int, default=24)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dir")
    p.add_argument("--inputs")
    p.add_argument("--ours")
    p.add_argument("--device", default="cuda")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    if args.make:
        make(args)
    else:
        if not (args.dir and args.inputs):
            p.error("--dir and --inputs (or --make DIR)")
        bench(args)


if __name__ == "__main__":
    main()
