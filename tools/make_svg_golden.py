"""Golden for Sparse VideoGen (SVG 1) as the official code runs it on Wan.

Copies the official functions of svg-project/Sparse-VideoGen @5ce7b01 (torch, CPU, f32):
`sparsity_to_width`, `generate_temporal_head_mask_mod` (svg/models/wan/utils.py), the mask of
`get_attention_mask` (same file), `WanAttn_SVGAttn_Processor2_0.sample_mse` +
`attention_core_logic` (svg/models/wan/attention.py), and the index map of the Triton head
placement `wan_sparse_head_placement_kernel` / `wan_hidden_states_placement_kernel`
(svg/models/wan/placement.py; the `ref_` torch versions slice `[:-0]` and fail for Wan's
context_length 0). flex_attention evaluates the mask per token inside partial blocks; here the
same mask is applied densely (`out_token`). `out_block` is the same call with every 128-token
block that the mask touches computed whole (the block plan jenga-rs runs).

Run: /work/venv/bin/python tools/make_svg_golden.py  → tests/fixtures/svg/reference.safetensors
"""
import math
from math import ceil

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

torch.manual_seed(0)

# Geometry: 5 frames of 12×16 = 192 tokens (1.5 blocks: unaligned sink and frames), L = 960.
B, H, D = 2, 4, 8
NUM_FRAME, FRAME_SIZE, CONTEXT = 5, 12 * 16, 0
L = CONTEXT + NUM_FRAME * FRAME_SIZE
SPARSITY, ROWS, MAX_ROW = 0.3, 64, 10000


# ---- svg/models/wan/utils.py ----
def sparsity_to_width(sparsity, context_length, num_frame, frame_size):
    seq_len = context_length + num_frame * frame_size
    total_elements = seq_len**2
    sparsity = (sparsity * total_elements - 2 * seq_len * context_length) / total_elements
    width = seq_len * (1 - math.sqrt(1 - sparsity))
    width_frame = width / frame_size
    return width_frame


def generate_temporal_head_mask_mod(context_length, prompt_length, num_frames, token_per_frame, mul=2):
    def round_to_multiple(idx):
        return ceil(idx / 128) * 128

    def temporal_mask_mod(b, h, q_idx, kv_idx):
        two_frame = round_to_multiple(mul * token_per_frame)
        temporal_head_mask = torch.abs(q_idx - kv_idx) <= two_frame
        first_frame_mask = kv_idx < token_per_frame
        video_mask = first_frame_mask | temporal_head_mask
        return video_mask

    return temporal_mask_mod


def get_attention_mask(mask_name, sample_mse_max_row, context_length, num_frame, frame_size):
    n = context_length + num_frame * frame_size
    pixel_attn_mask = torch.zeros((n, n), dtype=torch.bool)
    pixel_attn_mask[:, :frame_size] = 1  # First Frame Sink
    block_size, block_thres = 128, frame_size * 2
    num_block = math.ceil(num_frame * frame_size / block_size)
    for i in range(num_block):
        for j in range(num_block):
            if abs(i - j) < block_thres // block_size:
                pixel_attn_mask[i * block_size : (i + 1) * block_size, j * block_size : (j + 1) * block_size] = 1
    if mask_name != "spatial":
        pixel_attn_mask = (
            pixel_attn_mask.reshape(frame_size, num_frame, frame_size, num_frame)
            .permute(1, 0, 3, 2)
            .reshape(frame_size * num_frame, frame_size * num_frame)
        )
    return pixel_attn_mask[:sample_mse_max_row]


# ---- svg/models/wan/attention.py: sample_mse, with the sampled rows given ----
def sample_mse(query, key, value, attention_masks, sampled_rows):
    cfg, num_heads, seq_len, dim = query.size()
    sampled_q = query[:, :, sampled_rows, :]
    sampled_qk_scores = torch.matmul(sampled_q, key.transpose(-2, -1)) / (dim**0.5)
    sampled_attn_weights = F.softmax(sampled_qk_scores, dim=-1)
    sampled_golden_hidden_states = torch.matmul(sampled_attn_weights, value)
    sampled_mses = torch.zeros(len(attention_masks), cfg, num_heads, dtype=query.dtype)
    for mask_idx, attn_mask in enumerate(attention_masks):
        sampled_attention_mask = attn_mask[sampled_rows, :]
        sampled_attention_scores = sampled_qk_scores.masked_fill(sampled_attention_mask == 0, float("-inf"))
        sampled_attn_weights = F.softmax(sampled_attention_scores, dim=-1)
        sampled_hidden_states = torch.matmul(sampled_attn_weights, value)
        mse = torch.mean((sampled_hidden_states - sampled_golden_hidden_states) ** 2, dim=(2, 3))
        sampled_mses[mask_idx] = mse
    return sampled_mses


# ---- svg/models/wan/placement.py: the Triton kernels' index maps ----
def head_placement(x, best_mask_idx, context_length, num_frame, frame_size):
    cfg, num_heads, seq_len, _ = x.shape
    t = torch.arange(seq_len)
    frame_id, patch_id = t // frame_size, t % frame_size
    store = torch.where(t >= seq_len - context_length, t, patch_id * num_frame + frame_id)
    out = x.clone()
    for b in range(cfg):
        for h in range(num_heads):
            if best_mask_idx[b, h] == 1:
                out[b, h, store] = x[b, h, t]
    return out


def hidden_states_placement(x, best_mask_idx, context_length, num_frame, frame_size):
    cfg, num_heads, seq_len, _ = x.shape
    t = torch.arange(seq_len)
    patch_id, frame_id = t // num_frame, t % num_frame
    store = torch.where(t >= seq_len - context_length, t, frame_id * frame_size + patch_id)
    out = x.clone()
    for b in range(cfg):
        for h in range(num_heads):
            if best_mask_idx[b, h] == 1:
                out[b, h, store] = x[b, h, t]
    return out


def masked_attention(q, k, v, mask):
    s = torch.matmul(q, k.transpose(-2, -1)) / (q.shape[-1] ** 0.5)
    s = s.masked_fill(~mask, float("-inf"))
    return torch.matmul(F.softmax(s, dim=-1), v)


def block_superset(mask, block=128):
    n = mask.shape[0]
    nb = ceil(n / block)
    pad = torch.zeros((nb * block, nb * block), dtype=torch.bool)
    pad[:n, :n] = mask
    blk = pad.reshape(nb, block, nb, block).any(dim=3).any(dim=1)
    return blk.repeat_interleave(block, 0).repeat_interleave(block, 1)[:n, :n]


# ---- inputs: heads with a temporal, a spatial and no structure, in [B, H, L, D] ----
t = torch.arange(L)
frame, pos = t // FRAME_SIZE, t % FRAME_SIZE
pos_emb = torch.randn(FRAME_SIZE, D)
frame_emb = torch.randn(NUM_FRAME, D)
q = torch.randn(B, H, L, D)
k = torch.randn(B, H, L, D)
v = torch.randn(B, H, L, D)
for b in range(B):
    tmp, spa = (0, 1) if b == 0 else (2, 0)
    q[b, tmp] += 3.0 * pos_emb[pos]
    k[b, tmp] += 3.0 * pos_emb[pos]
    q[b, spa] += 3.0 * frame_emb[frame]
    k[b, spa] += 3.0 * frame_emb[frame]
q[:, 3] *= 2.0  # a sharp unstructured head

sampled_rows = torch.randint(low=0, high=min(MAX_ROW, L), size=(ROWS,))
masks = [get_attention_mask(m, MAX_ROW, CONTEXT, NUM_FRAME, FRAME_SIZE) for m in ["spatial", "temporal"]]
mses = sample_mse(q, k, v, masks, sampled_rows)
best = torch.argmin(mses, dim=0)

# attention_core_logic (sparse branch): placement, one band mask for all heads, placement back
mul = sparsity_to_width(SPARSITY, CONTEXT, NUM_FRAME, FRAME_SIZE)
mask_mod = generate_temporal_head_mask_mod(CONTEXT, CONTEXT, NUM_FRAME, FRAME_SIZE, mul=mul)
token_mask = mask_mod(None, None, t[:, None], t[None, :])
qo, ko, vo = (head_placement(x, best, CONTEXT, NUM_FRAME, FRAME_SIZE) for x in (q, k, v))
out = {}
for name, m in [("token", token_mask), ("block", block_superset(token_mask))]:
    hs = masked_attention(qo, ko, vo, m)
    out[name] = hidden_states_placement(hs, best, CONTEXT, NUM_FRAME, FRAME_SIZE)
dense = masked_attention(q, k, v, torch.ones(L, L, dtype=torch.bool))

print("width tokens", ceil(mul * FRAME_SIZE / 128) * 128, "best", best.tolist())
print("mse", mses.tolist())
print("token-mask density", token_mask.float().mean().item(), "block", block_superset(token_mask).float().mean().item())


def blhd(x):  # [B, H, L, D] → jenga-rs layout [B, L, H, D]
    return x.transpose(1, 2).contiguous()


save_file(
    {
        "q": blhd(q),
        "k": blhd(k),
        "v": blhd(v),
        "rows": sampled_rows.to(torch.int64),
        "mse": mses.contiguous(),
        "best": best.to(torch.int64).contiguous(),
        "out_token": blhd(out["token"]),
        "out_block": blhd(out["block"]),
        "out_dense": blhd(dense),
        "geometry": torch.tensor([NUM_FRAME, 12, 16, CONTEXT], dtype=torch.int64),
    },
    "tests/fixtures/svg/reference.safetensors",
)
