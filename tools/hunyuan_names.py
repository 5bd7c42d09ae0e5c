"""HunyuanVideo transformer weights from diffusers' names to the official checkpoint's
(`mp_rank_00_model_states.pt`, Tencent/HunyuanVideo hyvideo): fused q|k|v, single-block
linear1 = q|k|v|mlp, the final modulation as shift|scale. The golden scripts check the result
with diffusers' own converter (`convert_hunyuan_video_transformer_to_diffusers`).
"""
import torch


def to_official(sd, d):
    out = {}
    def put(k, v):
        out[k] = v.clone()
    qkv = {}
    for k, v in sd.items():
        o = k
        for a, b in [("x_embedder", "img_in"), ("time_text_embed.timestep_embedder.linear_1", "time_in.mlp.0"),
                     ("time_text_embed.timestep_embedder.linear_2", "time_in.mlp.2"),
                     ("time_text_embed.guidance_embedder.linear_1", "guidance_in.mlp.0"),
                     ("time_text_embed.guidance_embedder.linear_2", "guidance_in.mlp.2"),
                     ("time_text_embed.text_embedder.linear_1", "vector_in.in_layer"),
                     ("time_text_embed.text_embedder.linear_2", "vector_in.out_layer")]:
            if o.startswith(a):
                o = b + o[len(a):]
        if o.startswith("context_embedder."):
            o = "txt_in." + o[len("context_embedder."):]
            o = o.replace("token_refiner.refiner_blocks", "individual_token_refiner.blocks")
            o = o.replace("time_text_embed.timestep_embedder.linear_1", "t_embedder.mlp.0")
            o = o.replace("time_text_embed.timestep_embedder.linear_2", "t_embedder.mlp.2")
            o = o.replace("time_text_embed.text_embedder", "c_embedder")
            o = o.replace("proj_in", "input_embedder").replace("norm_out.linear", "adaLN_modulation.1")
            o = o.replace("ff.net.0.proj", "mlp.fc1").replace("ff.net.2", "mlp.fc2")
            o = o.replace("attn.to_out.0", "self_attn_proj")
            for n in ("q", "k", "v"):
                if f"attn.to_{n}." in o:
                    qkv.setdefault((o.replace(f"attn.to_{n}.", "self_attn_qkv."), "qkv"), {})[n] = v
                    o = None
                    break
            if o:
                put(o, v)
            continue
        if o.startswith("transformer_blocks."):
            o = "double_blocks." + o[len("transformer_blocks."):]
            for a, b in [("attn.norm_added_q", "txt_attn_q_norm"), ("attn.norm_added_k", "txt_attn_k_norm"),
                         ("attn.norm_q", "img_attn_q_norm"), ("attn.norm_k", "img_attn_k_norm"),
                         ("attn.to_out.0", "img_attn_proj"), ("attn.to_add_out", "txt_attn_proj"),
                         ("norm1_context.linear", "txt_mod.linear"), ("norm1.linear", "img_mod.linear"),
                         ("ff_context.net.0.proj", "txt_mlp.fc1"), ("ff_context.net.2", "txt_mlp.fc2"),
                         ("ff.net.0.proj", "img_mlp.fc1"), ("ff.net.2", "img_mlp.fc2")]:
                o = o.replace(a, b)
            for n in ("q", "k", "v"):
                if f"attn.to_{n}." in o:
                    qkv.setdefault((o.replace(f"attn.to_{n}.", "img_attn_qkv."), "qkv"), {})[n] = v
                    o = None
                    break
                if f"attn.add_{n}_proj." in o:
                    qkv.setdefault((o.replace(f"attn.add_{n}_proj.", "txt_attn_qkv."), "qkv"), {})[n] = v
                    o = None
                    break
            if o:
                put(o, v)
            continue
        if o.startswith("single_transformer_blocks."):
            o = "single_blocks." + o[len("single_transformer_blocks."):]
            for n in ("q", "k", "v"):
                if f"attn.to_{n}." in o:
                    qkv.setdefault((o.replace(f"attn.to_{n}.", "linear1."), "qkvm"), {})[n] = v
                    o = None
                    break
            if o and "proj_mlp." in o:
                qkv.setdefault((o.replace("proj_mlp.", "linear1."), "qkvm"), {})["m"] = v
                o = None
            if o:
                o = o.replace("proj_out", "linear2").replace("attn.norm_q", "q_norm").replace("attn.norm_k", "k_norm")
                o = o.replace("norm.linear", "modulation.linear")
                put(o, v)
            continue
        if o.startswith("norm_out.linear"):
            scale, shift = v.chunk(2, dim=0)
            put(o.replace("norm_out.linear", "final_layer.adaLN_modulation.1"), torch.cat([shift, scale]))
            continue
        if o.startswith("proj_out"):
            put(o.replace("proj_out", "final_layer.linear"), v)
            continue
        put(o, v)
    for (k, kind), parts in qkv.items():
        names = ["q", "k", "v"] + (["m"] if kind == "qkvm" else [])
        out[k] = torch.cat([parts[n] for n in names], dim=0).clone()
    return out
