#!/usr/bin/env python3
"""Goldens for HunyuanVideo's two text encoders (tests/fixtures/hunyuan_text/).

Small random-init transformers models in the diffusers layout of HunyuanVideo:
  text_encoder/    LlamaModel (4 layers, hidden 128, 4 heads, 2 KV heads, RoPE θ 500000)
  tokenizer/       a Llama-3-like byte-level BPE with <|begin_of_text|>, <|start_header_id|>,
                   <|end_header_id|>, <|eot_id|> (and <pad>)
  text_encoder_2/  CLIPTextModel (hidden 64, 2 layers, quick_gelu, eos_token_id 2: the
                   legacy argmax pooling of openai/clip-vit-large-patch14)
  tokenizer_2/     a CLIP-like BPE (lower case, `</w>` word ends, <|startoftext|>/<|endoftext|>)
and the reference outputs of diffusers' own `HunyuanVideoPipeline._get_llama_prompt_embeds`
(DEFAULT_PROMPT_TEMPLATE with the crop measured for this tokenizer, max length 256,
hidden_states[-3]) and `_get_clip_prompt_embeds` (pooler_output, 77 tokens) for two prompts:
one short, one longer than both max lengths (truncation exercised).

Run: /work/venv/bin/python tools/make_hunyuan_text_golden.py
"""
import json
import os
import types

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    AutoTokenizer,
    CLIPTextConfig,
    CLIPTextModel,
    LlamaConfig,
    LlamaModel,
    PreTrainedTokenizerFast,
)
from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video import (
    DEFAULT_PROMPT_TEMPLATE,
    HunyuanVideoPipeline,
)

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "hunyuan_text")
torch.manual_seed(0)

CORPUS = [
    DEFAULT_PROMPT_TEMPLATE["template"].replace("{}", ""),
    "A cat walks on the grass, realistic style. A dog runs along the beach at sunset.",
    "the quick brown fox jumps over the lazy dog while the camera pans slowly to the left",
    "a red car drives through a rainy city street at night, neon lights reflect on the road",
    "close up of a woman smiling, soft light, shallow depth of field, cinematic colors",
] * 4

SHORT = "A cat walks on the grass, realistic style."
LONG = " ".join(
    ["a red car drives through a rainy city street at night with neon lights and a dog runs"] * 30
)
PROMPTS = [SHORT, LONG]


def llama_tokenizer():
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                "<|end_header_id|>", "<|eot_id|>", "<pad>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600, special_tokens=specials, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS, trainer)
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B",
        special_tokens=[("<|begin_of_text|>", bos)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>",
        pad_token="<pad>", padding_side="right",
    )


def clip_tokenizer():
    tok = Tokenizer(models.BPE(end_of_word_suffix="</w>", unk_token="<|endoftext|>"))
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(r"\s+", " "), normalizers.Lowercase()]
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(
            r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
            behavior="removed", invert=True,
        ),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, end_of_word_suffix="</w>", show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator([c.lower() for c in CORPUS], trainer)
    # the specials last, <|endoftext|> the highest id (as in CLIP's 49406 / 49407)
    tok.add_special_tokens(["<|startoftext|>", "<|endoftext|>"])
    bos, eos = tok.token_to_id("<|startoftext|>"), tok.token_to_id("<|endoftext|>")
    assert eos == tok.get_vocab_size() - 1
    tok.post_processor = processors.RobertaProcessing(
        ("<|endoftext|>", eos), ("<|startoftext|>", bos), trim_offsets=False, add_prefix_space=False,
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|startoftext|>", eos_token="<|endoftext|>",
        pad_token="<|endoftext|>", unk_token="<|endoftext|>", model_max_length=77,
    )


def main():
    os.makedirs(OUT, exist_ok=True)
    tk = llama_tokenizer()
    tk.save_pretrained(os.path.join(OUT, "tokenizer"))
    tk2 = clip_tokenizer()
    tk2.save_pretrained(os.path.join(OUT, "tokenizer_2"))
    tk = AutoTokenizer.from_pretrained(os.path.join(OUT, "tokenizer"))
    tk2 = AutoTokenizer.from_pretrained(os.path.join(OUT, "tokenizer_2"))

    vocab = (len(tk) + 63) // 64 * 64
    lcfg = LlamaConfig(
        vocab_size=vocab, hidden_size=128, intermediate_size=128, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
        rope_theta=500000.0, max_position_embeddings=1024, tie_word_embeddings=False,
        bos_token_id=tk.bos_token_id, eos_token_id=tk.eos_token_id, pad_token_id=tk.pad_token_id,
        attn_implementation="eager",
    )
    llama = LlamaModel(lcfg).eval()
    with torch.no_grad():  # RMSNorm weights off 1 so that they matter
        for n, p in llama.named_parameters():
            if "norm" in n:
                p.add_(0.1 * torch.randn_like(p))
    llama.save_pretrained(os.path.join(OUT, "text_encoder"))

    ccfg = CLIPTextConfig(
        vocab_size=len(tk2), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=77, hidden_act="quick_gelu",
        layer_norm_eps=1e-5, projection_dim=32, bos_token_id=0, eos_token_id=2, pad_token_id=1,
        attn_implementation="eager",
    )
    clip = CLIPTextModel(ccfg).eval()
    with torch.no_grad():
        for n, p in clip.named_parameters():
            if "layer_norm" in n:
                p.add_(0.1 * torch.randn_like(p))
    clip.save_pretrained(os.path.join(OUT, "text_encoder_2"))

    # the crop for this tokenizer, measured as the template's tokens in front of the prompt
    # (the real Llama-3 tokenizer gives DEFAULT_PROMPT_TEMPLATE's 95)
    prefix = DEFAULT_PROMPT_TEMPLATE["template"].split("{}")[0]
    crop = len(tk(prefix)["input_ids"])
    template = {"template": DEFAULT_PROMPT_TEMPLATE["template"], "crop_start": crop}

    pipe = types.SimpleNamespace(tokenizer=tk, text_encoder=llama, tokenizer_2=tk2, text_encoder_2=clip)
    out, meta = {}, {"prompts": PROMPTS, "crop_start": crop, "max_sequence_length": 256,
                     "num_hidden_layers_to_skip": 2, "template": DEFAULT_PROMPT_TEMPLATE["template"]}
    with torch.no_grad():
        for i, p in enumerate(PROMPTS):
            emb, mask = HunyuanVideoPipeline._get_llama_prompt_embeds(
                pipe, p, template, device=torch.device("cpu"), dtype=torch.float32,
            )
            pooled = HunyuanVideoPipeline._get_clip_prompt_embeds(
                pipe, p, device=torch.device("cpu"), dtype=torch.float32,
            )
            full = tk(template["template"].format(p), max_length=crop + 256, padding="max_length",
                      truncation=True)["input_ids"]
            ids2 = tk2(p, max_length=77, padding="max_length", truncation=True)["input_ids"]
            out[f"llama_states_{i}"] = emb[0].contiguous()
            out[f"llama_mask_{i}"] = mask[0].to(torch.int32).contiguous()
            out[f"llama_ids_{i}"] = torch.tensor(full, dtype=torch.int32)
            out[f"clip_pooled_{i}"] = pooled[0].contiguous()
            out[f"clip_ids_{i}"] = torch.tensor(ids2, dtype=torch.int32)
            print(p[:40], tuple(emb.shape), int(mask.sum()), tuple(pooled.shape))
    save_file(out, os.path.join(OUT, "golden.safetensors"))
    with open(os.path.join(OUT, "prompts.json"), "w") as f:
        json.dump(meta, f, indent=1)


if __name__ == "__main__":
    main()
