"""Goldens for the umT5 text encoder (crates/models/src/text/umt5.rs, tokenizer.rs).

Writes tests/fixtures/umt5/:
- tokenizer.json: a small umT5-shaped tokenizer (sentencepiece Unigram trained here with
  nmt_nfkc normalisation and byte fallback; pad 0, </s> 1, <unk> 2; built as transformers'
  T5 converter builds google/umt5-xxl's: Precompiled charsmap + Replace(" {2,}"), Metaspace,
  `$A </s>` post-processor, extra ids at the end of the vocabulary);
- hf/: a small random `UMT5EncoderModel` saved with `save_pretrained` (safetensors, f32);
- hf_bf16/: the same weights in bf16 (`save_pretrained` after `.to(torch.bfloat16)`);
- wan.safetensors: the same f32 weights under Wan's own T5 names (wan/modules/t5.py);
- golden.safetensors: per prompt i, `ids_i` (i32, Wan's cleaning + `</s>`), `hidden_i` (f32
  `[n, d]`, transformers in f32), `hidden_bf16_i` (transformers in bf16, as f32),
  `padded_i` (`[text_len, d]`, Wan's trim + zero pad, from a run padded to text_len with the
  attention mask as Wan runs it), `buckets` (i32 bucket of relative positions −600..600);
- prompts.json: the raw prompts, the cleaned ones, and the config.

Run: /work/venv/bin/python tools/make_umt5_golden.py
"""

import html
import json
import math
import os
import re
import tempfile

import ftfy
import sentencepiece as spm
import torch
from safetensors.torch import save_file
from sentencepiece import sentencepiece_model_pb2
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import UMT5Config, UMT5EncoderModel

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "umt5")
TEXT_LEN = 64  # Wan's is 512; small here so the padded goldens stay small
EXTRA_IDS = 8  # umT5 has its <extra_id_*> after the sentencepiece pieces

PROMPTS = [
    "A cat walks on the grass, realistic style.",
    "  Two  dogs\tplay\n in   the snow &amp; the sun  ",
    "“Quoted” words, ﬁne ligatures and ＦＵＬＬＷＩＤＴＨ letters; 日本 and ☃ fall back to bytes",
    "",
    # > 128 tokens: relative positions past max_distance and the log buckets
    " ".join(["a small red bird flies over a quiet lake at sunset"] * 16),
]


def wan_clean(text):
    """wan/modules/tokenizers.py, clean='whitespace'."""
    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    text = re.sub(r"\s+", " ", text)
    return text.strip()


def corpus():
    colours = "red green blue yellow white black orange purple".split()
    things = "cat dog bird fish car tree house river mountain city boat horse".split()
    verbs = "walks runs flies swims stands moves jumps sleeps".split()
    places = "on the grass|in the snow|over the lake|at sunset|under the sun|in the city".split("|")
    lines = []
    for i, c in enumerate(colours):
        for j, t in enumerate(things):
            v = verbs[(i + j) % len(verbs)]
            p = places[(i * 3 + j) % len(places)]
            lines.append(f"A {c} {t} {v} {p}, realistic style.")
            lines.append(f"Two {t}s play {p} and the {c} light is quiet.")
    return lines


def build_tokenizer(tmp):
    text = os.path.join(tmp, "corpus.txt")
    with open(text, "w") as f:
        f.write("\n".join(corpus()) + "\n")
    prefix = os.path.join(tmp, "spm")
    spm.SentencePieceTrainer.train(
        input=text,
        model_prefix=prefix,
        model_type="unigram",
        vocab_size=420,
        byte_fallback=True,
        normalization_rule_name="nmt_nfkc",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        hard_vocab_limit=False,
    )
    proto = sentencepiece_model_pb2.ModelProto()
    with open(prefix + ".model", "rb") as f:
        proto.ParseFromString(f.read())
    vocab = [(p.piece, p.score) for p in proto.pieces]
    vocab += [(f"<extra_id_{i}>", 0.0) for i in range(EXTRA_IDS - 1, -1, -1)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=True))
    tok.normalizer = normalizers.Sequence(
        [
            normalizers.Precompiled(proto.normalizer_spec.precompiled_charsmap),
            normalizers.Replace(Regex(" {2,}"), " "),
        ]
    )
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    eos = tok.token_to_id("</s>")
    assert eos == 1, eos
    tok.post_processor = processors.TemplateProcessing(
        single=["$A", "</s>"], pair=["$A", "</s>", "$B", "</s>"], special_tokens=[("</s>", eos)]
    )
    tok.add_special_tokens(["<pad>", "</s>", "<unk>"] + [f"<extra_id_{i}>" for i in range(EXTRA_IDS)])
    path = os.path.join(OUT, "tokenizer.json")
    tok.save(path)
    tok = Tokenizer.from_file(path)  # what a reader of the file gets
    # transformers' padding='max_length', truncation=True, max_length=text_len (Wan's call)
    tok.enable_truncation(TEXT_LEN)
    return tok, len(vocab)


# Wan's T5 names (wan/modules/t5.py) for transformers' UMT5EncoderModel names.
def wan_name(k):
    if k == "shared.weight":
        return "token_embedding.weight"
    if k == "encoder.final_layer_norm.weight":
        return "norm.weight"
    m = re.match(r"encoder\.block\.(\d+)\.layer\.(\d)\.(.*)", k)
    assert m, k
    i, sub, rest = m.group(1), m.group(2), m.group(3)
    table = {
        "0": {
            "layer_norm.weight": "norm1.weight",
            "SelfAttention.q.weight": "attn.q.weight",
            "SelfAttention.k.weight": "attn.k.weight",
            "SelfAttention.v.weight": "attn.v.weight",
            "SelfAttention.o.weight": "attn.o.weight",
            "SelfAttention.relative_attention_bias.weight": "pos_embedding.embedding.weight",
        },
        "1": {
            "layer_norm.weight": "norm2.weight",
            "DenseReluDense.wi_0.weight": "ffn.gate.0.weight",
            "DenseReluDense.wi_1.weight": "ffn.fc1.weight",
            "DenseReluDense.wo.weight": "ffn.fc2.weight",
        },
    }
    return f"blocks.{i}.{table[sub][rest]}"


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        tok, vocab_size = build_tokenizer(tmp)

    cfg = UMT5Config(
        vocab_size=vocab_size,
        d_model=64,
        d_kv=16,
        d_ff=128,
        num_layers=3,
        num_heads=4,
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
        dropout_rate=0.0,
        layer_norm_epsilon=1e-6,
        feed_forward_proj="gated-gelu",
        is_encoder_decoder=False,
        use_cache=False,
        tie_word_embeddings=True,
    )
    model = UMT5EncoderModel(cfg).eval()
    with torch.no_grad():
        # Larger than the default init so that a wrong bucket or a missing bias shows, and
        # non-unit norm weights so that a dropped norm weight shows.
        for n, p in model.named_parameters():
            if "relative_attention_bias" in n:
                p.normal_(0.0, 2.0)
            elif "layer_norm" in n:
                p.uniform_(0.5, 1.5)
            elif n == "shared.weight":
                p.normal_(0.0, 1.0)
            else:
                p.normal_(0.0, p.shape[1] ** -0.5)
    model.save_pretrained(os.path.join(OUT, "hf"), safe_serialization=True)
    sd = {k: v.contiguous() for k, v in model.state_dict().items() if k != "encoder.embed_tokens.weight"}
    save_file({wan_name(k): v for k, v in sd.items()}, os.path.join(OUT, "wan.safetensors"))
    model_bf16 = UMT5EncoderModel.from_pretrained(os.path.join(OUT, "hf")).eval().to(torch.bfloat16)
    model_bf16.save_pretrained(os.path.join(OUT, "hf_bf16"), safe_serialization=True)

    golden = {}
    cleaned = [wan_clean(p) for p in PROMPTS]
    with torch.no_grad():
        for i, text in enumerate(cleaned):
            ids = tok.encode(text, add_special_tokens=True).ids
            n = len(ids)
            t = torch.tensor([ids])
            golden[f"ids_{i}"] = torch.tensor(ids, dtype=torch.int32)
            golden[f"hidden_{i}"] = model(input_ids=t).last_hidden_state[0].contiguous()
            golden[f"hidden_bf16_{i}"] = model_bf16(input_ids=t).last_hidden_state[0].float().contiguous()
            # As Wan runs it: padded to text_len with the mask, then trimmed and zero-padded.
            padded = torch.zeros(1, TEXT_LEN, dtype=torch.long)
            padded[0, :n] = t[0]
            mask = torch.zeros(1, TEXT_LEN, dtype=torch.long)
            mask[0, :n] = 1
            h = model(input_ids=padded, attention_mask=mask).last_hidden_state[0]
            out = torch.zeros(TEXT_LEN, cfg.d_model)
            out[:n] = h[:n]
            golden[f"padded_{i}"] = out
        # Past max_distance (128) and the text length: the whole long prompt, untruncated.
        tok.no_truncation()
        ids = tok.encode(cleaned[-1], add_special_tokens=True).ids
        assert len(ids) > 160, len(ids)
        golden["long_ids"] = torch.tensor(ids, dtype=torch.int32)
        golden["long_hidden"] = model(input_ids=torch.tensor([ids])).last_hidden_state[0].contiguous()
        attn = model.encoder.block[0].layer[0].SelfAttention
        rel = torch.arange(-600, 601)
        golden["buckets"] = attn._relative_position_bucket(rel).to(torch.int32)
    save_file(golden, os.path.join(OUT, "golden.safetensors"))
    with open(os.path.join(OUT, "prompts.json"), "w") as f:
        json.dump(
            {
                "prompts": PROMPTS,
                "cleaned": cleaned,
                "text_len": TEXT_LEN,
                "vocab_size": vocab_size,
                "d_model": cfg.d_model,
                "num_heads": cfg.num_heads,
                "d_kv": cfg.d_kv,
                "d_ff": cfg.d_ff,
                "num_layers": cfg.num_layers,
            },
            f,
            ensure_ascii=False,
            indent=1,
        )
    for i in range(len(PROMPTS)):
        h = golden[f"hidden_{i}"]
        hb = golden[f"hidden_bf16_{i}"]
        rel_l2 = ((h - hb).norm() / h.norm()).item() if h.numel() else 0.0
        pad_err = (golden[f"padded_{i}"][: h.shape[0]] - h).abs().max().item()
        print(f"prompt {i}: {len(golden[f'ids_{i}'])} ids, |h| {h.abs().mean():.3f}, "
              f"bf16 rel-L2 {rel_l2:.2e}, padded-vs-unpadded max {pad_err:.1e}")


if __name__ == "__main__":
    main()
