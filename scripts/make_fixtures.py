#!/usr/bin/env python3
"""Write tiny random-initialised Hugging Face checkpoints + reference outputs
into ``tests/fixtures/`` for the Rust tests.

Not run by CI: the outputs are committed.  Needs torch, transformers (5.24.0
and torch 2.15.0 CPU were used), safetensors, tokenizers, numpy, and for the
diffusion fixtures diffusers (0.42.1); run ``scripts/make_clip_tokenizer.py``
first (clip-f16 copies its tokenizer.json).  Deterministic: everything is
seeded; run it again and the files are rebuilt (bit-identical on the same
library versions).

  python scripts/make_fixtures.py                   # everything
  python scripts/make_fixtures.py --only hf         # clip-*, vit-tiny, preprocess
  python scripts/make_fixtures.py --only diffusion  # schedulers.json, dit-tiny*
  (--out DIR writes somewhere else than tests/fixtures)

Fixtures (each a Hub-style directory):
  clip-gelu/       CLIPModel, f32, hidden_act gelu, vision 48 / text 32 wide
  clip-quickgelu/  CLIPModel, f32, quick_gelu, vision 32 / text 48, eps 1e-6
  clip-f16/        CLIPModel saved in float16, real vocab (49408), 77 positions,
                   + tokenizer.json; references computed in f32 on CPU from the
                   f16-rounded weights
  vit-tiny/        ViTModel with pooler, f32
  preprocess/      three small images (PNG and JPEG, wide, tall, square) and the
                   pixel values CLIPImageProcessor (shortest edge 16, crop 16)
                   makes of each
  schedulers.json  DDPMScheduler / DDIMScheduler references (beta schedules,
                   set_timesteps lists, single DDPM steps, whole DDIM loops)
  dit-tiny/        DiTTransformer2DModel (config.json +
                   diffusion_pytorch_model.safetensors), f32, D 16 (2 heads x 8),
                   patch 2, in 4 / out 8 channels, 2 layers, 10 classes, norm_eps 1e-6
  dit-tiny-p4/     the same with patch 4, in = out = 3 channels, 1 layer,
                   norm_eps 1e-5 (the class default)

All weights are re-drawn after init (matrices/embeddings N(0, 0.2), biases
N(0, 0.1), LayerNorm weight 1 + N(0, 0.1), LayerNorm bias N(0, 0.1),
logit_scale ln(1/0.07) + N(0, 0.05)) so that activations are far from zero.
Attention is "eager" for the references.  Each saved directory is reloaded
with from_pretrained and must reproduce the references; a separate load with
transformers 4.57.6 reproduced every reference tensor bit-exactly (max err 0).

What transformers returns (checked by ``check_hidden_state_semantics`` below,
the script fails if any of this stops being true):
  CLIP vision  hidden_states[0]   = pre_layrnorm(embeddings(pixel_values))
               hidden_states[i]   = output of encoder layer i-1 (i = 1..L),
               hidden_states[L]   = encoder output, *no* post_layernorm
               (the model's last_hidden_state is the same tensor)
               pooler_output      = post_layernorm(hidden_states[L][:, 0])
  CLIP text    hidden_states[0]   = token_embedding + position_embedding
               hidden_states[i]   = output of layer i-1; hidden_states[L] is
               *before* final_layer_norm; last_hidden_state = final_layer_norm(hs[L])
               the mask is causal AND key-padding (attention_mask); padded
               query rows are still computed (attend to earlier real tokens)
               pooler_output      = last_hidden_state[b, p] where, because
               eos_token_id != 2 in these configs, p = FIRST index with
               input_ids == eos_token_id; (legacy configs with eos_token_id == 2
               use p = argmax(input_ids))
  CLIPModel    image_embeds = normalize(visual_projection(vision pooled))
               text_embeds  = normalize(text_projection(text pooled))
               logits_per_text = exp(logit_scale) * text_embeds @ image_embeds.T
               logits_per_image = logits_per_text.T
  ViT          hidden_states[0] = embeddings (cls + patches + positions; no LN)
               hidden_states[i] = output of layer i-1, hs[L] before final layernorm
               last_hidden_state = layernorm(hs[L]); pooler_output = tanh(dense(last[:, 0]))

What diffusers 0.42.1 does (the schedulers are re-computed in-script with the
formulas below and the DiT forward is re-implemented from the state dict in
``dit_manual_forward``; the script fails if any of this stops being true).
N = num_train_timesteps, n = num_inference_steps, ac = alphas_cumprod.
  Beta schedules (DDPM and DDIM identical; float32 tensors)
    linear            betas = torch.linspace(beta_start, beta_end, N)
    scaled_linear     betas = torch.linspace(sqrt(beta_start), sqrt(beta_end), N) ** 2 (square in f32)
    squaredcos_cap_v2 betas[i] = min(1 - abar((i+1)/N) / abar(i/N), 0.999) in f64, then rounded to
                      f32; abar(u) = cos((u + 0.008) / 1.008 * pi / 2) ** 2; beta_start/end ignored
    ac = cumprod(1 - betas): 1 - beta rounded to f32, running product in f64, each prefix rounded
      to f32 (bit-exact given the same betas).  torch's f32 linspace is not a simple formula;
      start + i * (end - start) / (N - 1) in f64, rounded to f32, is within 4e-7 relative (1-3 ulp)
      of it: compare schedules with a tolerance, or take betas from the fixture.
  set_timesteps(n) (DDPM and DDIM give the same list; int64, descending)
    leading   r = N // n; t_i = (n - 1 - i) * r + steps_offset, i = 0..n-1
    trailing  r = N / n (f64); numpy arange(N, 0, -r) (= N - i*r while > 0; n entries in every case
              here), rounded, minus 1 -> starts at N - 1.  steps_offset ignored
    linspace  numpy linspace(0, N - 1, n) rounded, reversed (n = 1 -> [0]); steps_offset ignored
    rounding is numpy's half-to-even: linspace 1000/7 -> 999 832 666 500 333 166 0
    (166.5 -> 166, 499.5 -> 500, 832.5 -> 832)
  Previous timestep and the alpha it uses
    DDPM  after set_timesteps: the next entry of the list, -1 after the last; without
          set_timesteps (num_inference_steps None, the full chain): t - 1.
          alpha_prod_t_prev = ac[prev] if prev >= 0 else 1.0
    DDIM  prev = t - N // n for EVERY spacing, even where that is not the next list entry
          (linspace 1000/7: 999 -> 857 although the next timestep is 832; trailing 50/13: 49 -> 46).
          alpha_prod_t_prev = ac[prev] if prev >= 0 else final_alpha_cumprod, which is 1.0 when
          set_alpha_to_one (the default True) and ac[0] when False.
  DDPMScheduler.step(m, t, x) (variance_type fixed_small, thresholding False; every scalar is a
  0-d f32 tensor, every op f32, in this order):
    a_t = ac[t]; a_p = as above; b_t = 1 - a_t; b_p = 1 - a_p; cur_a = a_t / a_p; cur_b = 1 - cur_a
    x0 = (x - sqrt(b_t) * m) / sqrt(a_t)            prediction_type epsilon
    x0 = sqrt(a_t) * x - sqrt(b_t) * m              prediction_type v_prediction
    if clip_sample: x0 = clamp(x0, -clip_sample_range, +clip_sample_range)   (default True, 1.0)
    mean = (sqrt(a_p) * cur_b / b_t) * x0 + (sqrt(cur_a) * b_p / b_t) * x
    prev_sample = mean + sqrt(max(b_p / b_t * cur_b, 1e-20)) * z   if t > 0, else mean
    z = torch.randn(x.shape, generator) is drawn iff t > 0 -- NOT iff prev >= 0: trailing's last
    step (t 39 -> -1) still draws it (std 1e-10); leading's t = 0 draws nothing.
    pred_original_sample = x0 after clipping.  f32 matters: near t = 0 cur_b = 1 - a_t / a_p
    cancels, and a float64 evaluation differs from diffusers by up to 1.3e-4 on these fixtures
    (the f32 evaluation in this order: < 1e-6).
  DDIMScheduler.step(m, t, x, eta, variance_noise) (thresholding False, use_clipped_model_output False)
    epsilon:      x0 = (x - sqrt(b_t) * m) / sqrt(a_t);  eps = m
    v_prediction: x0 = sqrt(a_t) * x - sqrt(b_t) * m;    eps = sqrt(a_t) * m + sqrt(b_t) * x
    if clip_sample: clamp x0 as above (eps is NOT recomputed from the clipped x0)
    var = (b_p / b_t) * (1 - a_t / a_p); std = eta * sqrt(var)
    prev_sample = sqrt(a_p) * x0 + sqrt(1 - a_p - std^2) * eps   (+ std * z if eta > 0, z =
    variance_noise, else randn from the generator).  With a_p = 1 (final step, set_alpha_to_one)
    var = 0 and prev_sample = x0.
  DiTTransformer2DModel forward(x [B, C, H, W] f32, t [B] (float or int), y [B] int64); D = heads *
  head_dim, p = patch_size, gh = H/p, gw = W/p, T = gh * gw tokens, hd = head_dim
    1 PatchEmbed: pos_embed.proj = Conv2d(C, D, kernel p, stride p, bias) then flatten(2).transpose:
      token n = r * gw + c (row-major over the patch grid) =
      proj.weight.reshape(D, C*p*p) @ x[b, :, r*p:(r+1)*p, c*p:(c+1)*p].reshape(C*p*p) + proj.bias
      (patch flattened in (channel, row-in-patch, col-in-patch) order); no LayerNorm; then
      + pos_embed[n] (fixed; a non-persistent buffer, NOT in the checkpoint):
        q = D / 4, w_k = 1 / 10000^(k / q), k = 0..q-1
        pos_embed[r * gw + c] = [sin(c' w), cos(c' w), sin(r' w), cos(r' w)]   (each q wide)
        i.e. the COLUMN (w) coordinate fills the first half, the row the second half (diffusers
        calls the first half "emb_h", but meshgrid(grid_w, grid_h, indexing="xy") puts w in it);
        c' = c / (gw / base_size) / interpolation_scale, r' = r / (gh / base_size) / ...,
        base_size = sample_size // p, interpolation_scale = 1, so c' = c, r' = r at the trained
        size (other sizes regenerate the table for (gh, gw) with the same base_size).  Positions
        f32, sin/cos in f64, rounded to f32.
    2 conditioning c [B, D] (CombinedTimestepLabelEmbeddings; EVERY block has its own copy,
      transformer_blocks.{i}.norm1.emb.*, and recomputes it):
        s = sinusoid(t) [B, 256]: f_k = exp(-ln(10000) * k / 127), k = 0..127 (half 128,
        downscale_freq_shift 1 -> divide by half - 1); arg = t * f_k; s = [cos(arg), sin(arg)]
        (flip_sin_to_cos: cos FIRST).  All f32 in torch: (-ln 1e4 as f32) * k, / 127, exp, * t.
        temb = timestep_embedder.linear_2(silu(timestep_embedder.linear_1(s)))   256 -> D -> D
        c = temb + class_embedder.embedding_table[y]; the table has num_embeds_ada_norm + 1 rows
        (class_dropout_prob 0.1 > 0 adds one); row num_embeds_ada_norm is the null (CFG) class;
        no label dropout in eval.
    3 each block (BasicTransformerBlock, ada_norm_zero, self-attention only, no norm2/attn2):
        mod = norm1.linear(silu(c)) [B, 6D], chunk(6) in order
              shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp (each D wide)
        n = LN(h, eps 1e-6 hard-coded, no affine) * (1 + scale_msa) + shift_msa
        attn1: q/k/v = to_q/to_k/to_v(n) (all with bias); head j = channels [j*hd, (j+1)*hd);
               softmax(q k^T * hd^-0.5) v, no mask; heads concatenated; to_out.0 (with bias)
        h = h + gate_msa * attn
        n = norm3(h): LN(eps = config norm_eps, no affine since norm_elementwise_affine False)
            * (1 + scale_mlp) + shift_mlp
        h = h + gate_mlp * ff.net.2(gelu_tanh(ff.net.0.proj(n)))   (inner 4D; F.gelu(approximate=
            "tanh"); activation_fn "gelu-approximate" -- "gelu-tanh" is not a valid name there)
    4 final layer: uses block 0's conditioning (transformer_blocks[0].norm1.emb; no separate one)
        shift, scale = proj_out_1(silu(c0)).chunk(2)       SHIFT FIRST, then scale
        h = LN(h, eps 1e-6 hard-coded, no affine) * (1 + scale) + shift
        h = proj_out_2(h)                                  [B, T, p*p*C_out]
    5 unpatchify (square grids only: s = int(sqrt(T))): reshape (B, s, s, p, p, C_out), einsum
        nhwpqc->nchpwq, reshape (B, C_out, s*p, s*p):
        out[b, ch, r*p + i, c*p + j] = h[b, r*s + c, (i*p + j) * C_out + ch]
      C_out = out_channels or in_channels.  With out = 2 * in (dit-tiny) the pipeline takes
      channels [0, in) as the prediction and [in, 2 in) as the learned variance.
    Checkpoint tensors (f32): pos_embed.proj.{weight [D,C,p,p], bias}; per block i
    transformer_blocks.{i}.norm1.emb.timestep_embedder.linear_1.{weight [D,256], bias},
    ...linear_2.{weight [D,D], bias}, ...norm1.emb.class_embedder.embedding_table.weight [K+1,D],
    norm1.linear.{weight [6D,D], bias}, attn1.to_{q,k,v}.{weight [D,D], bias},
    attn1.to_out.0.{weight, bias}, ff.net.0.proj.{weight [4D,D], bias}, ff.net.2.{weight [D,4D],
    bias}; proj_out_1.{weight [2D,D], bias}; proj_out_2.{weight [p*p*C_out, D], bias}.
    reference.safetensors: hidden_states, timestep (f32), class_labels (i64), sample (output),
    pos_embed [T, D], conditioning [B, D] (block 0's = the final layer's), timestep_proj [B, 256],
    embedded [B, T, D] (patch embed + pos), block_conditioning.{i} [B, D], block_output.{i} [B, T, D].
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

import transformers
from transformers import CLIPConfig, CLIPModel, ViTConfig, ViTModel

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "tests" / "fixtures"
TOKENIZER = REPO / "assets" / "clip" / "tokenizer.json"
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def redraw(model: torch.nn.Module, seed: int, logit_scale: bool = False):
    g = torch.Generator().manual_seed(seed)

    def randn(shape):
        return torch.randn(shape, generator=g, dtype=torch.float32)

    with torch.no_grad():
        ln_params = set()
        for mod in model.modules():
            if isinstance(mod, torch.nn.LayerNorm) and mod.weight is not None:  # (diffusers: affine-free LNs)
                mod.weight.copy_(1.0 + 0.1 * randn(mod.weight.shape))
                mod.bias.copy_(0.1 * randn(mod.bias.shape))
                ln_params.update({id(mod.weight), id(mod.bias)})
        for name, p in model.named_parameters():
            if id(p) in ln_params:
                continue
            if name == "logit_scale":
                p.copy_(torch.tensor(math.log(1 / 0.07)) + 0.05 * randn(p.shape))
            elif name.endswith("bias"):
                p.copy_(0.1 * randn(p.shape))
            else:
                p.copy_(0.2 * randn(p.shape))


def preprocessor_config(image_size: int) -> dict:
    # what CLIPImageProcessor(...).save_pretrained writes for the openai/clip-* repos
    return {
        "crop_size": {"height": image_size, "width": image_size},
        "do_center_crop": True,
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": CLIP_MEAN,
        "image_processor_type": "CLIPImageProcessor",
        "image_std": CLIP_STD,
        "resample": 3,
        "rescale_factor": 1 / 255,
        "size": {"shortest_edge": image_size},
    }


def save_preprocessor(d: Path, image_size: int):
    try:
        from transformers import CLIPImageProcessor

        CLIPImageProcessor(
            size={"shortest_edge": image_size},
            crop_size={"height": image_size, "width": image_size},
            image_mean=CLIP_MEAN,
            image_std=CLIP_STD,
        ).save_pretrained(d)
    except Exception as e:  # e.g. a backend missing: write the same keys by hand
        print(f"  CLIPImageProcessor unavailable ({e!r}); writing preprocessor_config.json by hand")
        (d / "preprocessor_config.json").write_text(json.dumps(preprocessor_config(image_size), indent=2) + "\n")
    cfg = json.loads((d / "preprocessor_config.json").read_text())
    assert cfg["size"] == {"shortest_edge": image_size}, cfg
    assert cfg["crop_size"] == {"height": image_size, "width": image_size}, cfg


def close(a, b, what):
    err = (a - b).abs().max().item()
    assert err < 1e-5, f"{what}: max abs err {err}"


def check_clip_semantics(model: CLIPModel, out, pixel_values, input_ids, attention_mask):
    vm, tm = model.vision_model, model.text_model
    vo, to = out.vision_model_output, out.text_model_output
    L = model.config.vision_config.num_hidden_layers
    with torch.no_grad():
        emb = vm.embeddings(pixel_values)
        h = vm.pre_layrnorm(emb)
        close(vo.hidden_states[0], h, "vision hs[0] == pre_layrnorm(embeddings)")
        for i, layer in enumerate(vm.encoder.layers):
            h = layer(h, None)
            h = h[0] if isinstance(h, tuple) else h
            close(vo.hidden_states[i + 1], h, f"vision hs[{i + 1}] == layer {i} output")
        assert len(vo.hidden_states) == L + 1
        close(vo.last_hidden_state, h, "vision last_hidden_state == hs[L]")
        close(vo.pooler_output, model.visual_projection(vm.post_layernorm(h[:, 0])), "get_image_features pooled")

        temb = tm.embeddings(input_ids=input_ids)
        close(to.hidden_states[0], temb, "text hs[0] == embeddings")
        Lt = model.config.text_config.num_hidden_layers
        assert len(to.hidden_states) == Lt + 1
        close(to.last_hidden_state, tm.final_layer_norm(to.hidden_states[Lt]), "text last == final_ln(hs[L])")
        eos = model.config.text_config.eos_token_id
        assert eos != 2
        pos = (input_ids == eos).int().argmax(-1)
        pooled = to.last_hidden_state[torch.arange(input_ids.shape[0]), pos]
        close(to.pooler_output, model.text_projection(pooled), "text pooled = first-eos rule")


def make_clip(name, vision, text, projection_dim, seed, input_ids, attention_mask, f16=False, tokenizer=False):
    d = OUT / name
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=dict(text, projection_dim=projection_dim),
        vision_config=dict(vision, projection_dim=projection_dim),
        projection_dim=projection_dim,
        logit_scale_init_value=math.log(1 / 0.07),
    )
    config._attn_implementation = "eager"
    model = CLIPModel(config).eval()
    redraw(model, seed + 1)
    if f16:
        model = model.half().float()  # the reference sees exactly the weights that get saved
        model.half().save_pretrained(d)
        model = model.float()
    else:
        model.save_pretrained(d)
    save_preprocessor(d, vision["image_size"])
    if tokenizer:
        shutil.copyfile(TOKENIZER, d / "tokenizer.json")

    g = torch.Generator().manual_seed(seed + 2)
    S = vision["image_size"]
    pixel_values = torch.randn(2, 3, S, S, generator=g)
    with torch.no_grad():
        out = model(
            input_ids=input_ids,
            pixel_values=pixel_values,
            attention_mask=attention_mask,
            output_hidden_states=True,
            return_dict=True,
        )
    check_clip_semantics(model, out, pixel_values, input_ids, attention_mask)
    vo, to = out.vision_model_output, out.text_model_output
    with torch.no_grad():
        vision_pooled = model.vision_model.post_layernorm(vo.last_hidden_state[:, 0])
        eos = config.text_config.eos_token_id
        pos = (input_ids == eos).int().argmax(-1)
        text_pooled = to.last_hidden_state[torch.arange(2), pos]
    ref = {
        "pixel_values": pixel_values,
        "input_ids": input_ids.to(torch.int64),
        "attention_mask": attention_mask.to(torch.int64),
        "vision_pooled": vision_pooled,
        "image_embeds": out.image_embeds,
        "text_last_hidden_state": to.last_hidden_state,
        "text_pooled": text_pooled,
        "text_embeds": out.text_embeds,
        "logits_per_image": out.logits_per_image,
        "logits_per_text": out.logits_per_text,
    }
    for i, h in enumerate(vo.hidden_states):
        ref[f"vision_hidden_states.{i}"] = h
    for i, h in enumerate(to.hidden_states):
        ref[f"text_hidden_states.{i}"] = h
    ref = {k: (v.float() if v.is_floating_point() else v).contiguous() for k, v in ref.items()}
    save_file(ref, d / "reference.safetensors", metadata={"transformers": transformers.__version__})
    # the saved directory (f16 upcast to f32 on load) must reproduce the references
    reloaded = CLIPModel.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
    with torch.no_grad():
        o2 = reloaded(input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask)
    close(o2.logits_per_image, ref["logits_per_image"], "reloaded logits")
    close(o2.text_embeds, ref["text_embeds"], "reloaded text_embeds")
    close(o2.image_embeds, ref["image_embeds"], "reloaded image_embeds")
    report(d, ref, out)


def make_vit(seed=40):
    d = OUT / "vit-tiny"
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    torch.manual_seed(seed)
    config = ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        patch_size=4,
        image_size=16,
        num_channels=3,
        hidden_act="gelu",
    )
    config._attn_implementation = "eager"
    model = ViTModel(config, add_pooling_layer=True).eval()
    redraw(model, seed + 1)
    model.save_pretrained(d)
    g = torch.Generator().manual_seed(seed + 2)
    pixel_values = torch.randn(2, 3, 16, 16, generator=g)
    model.eval()
    with torch.no_grad():
        out = model(pixel_values=pixel_values, output_hidden_states=True, return_dict=True)
        emb = model.embeddings(pixel_values)
        close(out.hidden_states[0], emb, "vit hs[0] == embeddings")
        h = emb
        layers = model.layers if hasattr(model, "layers") else model.encoder.layer  # transformers 5 vs 4
        for i, layer in enumerate(layers):
            h = layer(h)
            h = h[0] if isinstance(h, tuple) else h
            close(out.hidden_states[i + 1], h, f"vit hs[{i + 1}]")
        close(out.last_hidden_state, model.layernorm(h), "vit last == layernorm(hs[L])")
        close(out.pooler_output, torch.tanh(model.pooler.dense(out.last_hidden_state[:, 0])), "vit pooler")
    ref = {
        "pixel_values": pixel_values,
        "last_hidden_state": out.last_hidden_state,
        "pooler_output": out.pooler_output,
    }
    for i, h in enumerate(out.hidden_states):
        ref[f"hidden_states.{i}"] = h
    ref = {k: v.float().contiguous() for k, v in ref.items()}
    save_file(ref, d / "reference.safetensors", metadata={"transformers": transformers.__version__})
    reloaded = ViTModel.from_pretrained(d, attn_implementation="eager").eval()
    with torch.no_grad():
        o2 = reloaded(pixel_values=pixel_values)
    close(o2.pooler_output, ref["pooler_output"], "reloaded vit pooler")
    close(o2.last_hidden_state, ref["last_hidden_state"], "reloaded vit last")
    report(d, ref, out)


def report(d: Path, ref, out):
    with safe_open(d / "model.safetensors", "pt") as f:
        keys = sorted(f.keys())
        dtypes = {str(f.get_slice(k).get_dtype()) for k in keys}
    shown = d.relative_to(REPO) if d.is_relative_to(REPO) else d
    print(f"== {shown}: {len(keys)} tensors in model.safetensors, dtypes {sorted(dtypes)}")
    if any("position_ids" in k for k in keys):
        print("   position_ids buffers ARE saved")
    for k in keys:
        with safe_open(d / "model.safetensors", "pt") as f:
            print(f"   {k} {list(f.get_slice(k).get_shape())}")
    stats = {k: f"{tuple(v.shape)} std={v.float().std().item():.3f}" for k, v in ref.items() if v.is_floating_point()}
    for k, v in stats.items():
        print(f"   ref {k}: {v}")


def make_preprocess():
    """Images of three aspect ratios and what CLIPImageProcessor makes of them."""
    import numpy as np
    from PIL import Image
    from safetensors.numpy import save_file as save_numpy
    from transformers import CLIPImageProcessor

    d = OUT / "preprocess"
    d.mkdir(parents=True, exist_ok=True)
    proc = CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16})
    out = {}
    for name, (w, h) in {"wide.png": (53, 37), "tall.jpg": (29, 61), "square.png": (40, 40)}.items():
        y, x = np.mgrid[0:h, 0:w]
        img = np.stack([(x * 255 / w), (y * 255 / h), ((x + y) * 3) % 256], -1).astype(np.uint8)
        img[h // 3 : 2 * h // 3, w // 3 : 2 * w // 3] = [200, 40, 90]
        Image.fromarray(img).save(d / name, **({"quality": 95} if name.endswith(".jpg") else {}))
        decoded = Image.open(d / name).convert("RGB")
        out[name] = proc(images=decoded, return_tensors="np")["pixel_values"][0].astype(np.float32)
    save_numpy(out, str(d / "reference.safetensors"))


def make_hf_fixtures():
    assert TOKENIZER.exists(), "run scripts/make_clip_tokenizer.py first"
    OUT.mkdir(parents=True, exist_ok=True)

    # --- clip-gelu / clip-quickgelu: toy vocab 512, bos 510, eos 511, pad 1 ---
    g = torch.Generator().manual_seed(7)
    L = 10
    ids = torch.randint(2, 510, (2, L), generator=g)
    ids[:, 0] = 510
    ids[0, L - 1] = 511  # row 0: full length
    ids[1, 6] = 511  # row 1: 7 real tokens then padding
    ids[1, 7:] = 1
    mask = torch.ones(2, L, dtype=torch.int64)
    mask[1, 7:] = 0
    toy_text = dict(
        vocab_size=512,
        max_position_embeddings=16,
        bos_token_id=510,
        eos_token_id=511,
        pad_token_id=1,
    )
    make_clip(
        "clip-gelu",
        vision=dict(
            hidden_size=48,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=96,
            patch_size=4,
            image_size=16,
            num_channels=3,
            hidden_act="gelu",
        ),
        text=dict(
            toy_text, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, hidden_act="gelu"
        ),
        projection_dim=24,
        seed=10,
        input_ids=ids,
        attention_mask=mask,
    )
    make_clip(
        "clip-quickgelu",
        vision=dict(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            patch_size=4,
            image_size=16,
            num_channels=3,
            hidden_act="quick_gelu",
            layer_norm_eps=1e-6,
        ),
        text=dict(
            toy_text,
            hidden_size=48,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=96,
            hidden_act="quick_gelu",
            layer_norm_eps=1e-6,
        ),
        projection_dim=24,
        seed=20,
        input_ids=ids,
        attention_mask=mask,
    )

    # --- clip-f16: real vocab, ids from the shipped tokenizer, padded to 77 with <|endoftext|> ---
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(TOKENIZER))
    rows = [tok.encode(t).ids for t in ["a photo of a cat", "a diagram"]]
    assert rows[0] == [49406, 320, 1125, 539, 320, 2368, 49407], rows[0]
    ids77 = torch.full((2, 77), 49407, dtype=torch.int64)  # HF pads CLIP with <|endoftext|>
    mask77 = torch.zeros(2, 77, dtype=torch.int64)
    for i, r in enumerate(rows):
        ids77[i, : len(r)] = torch.tensor(r)
        mask77[i, : len(r)] = 1
    make_clip(
        "clip-f16",
        vision=dict(
            hidden_size=48,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=96,
            patch_size=4,
            image_size=16,
            num_channels=3,
            hidden_act="gelu",
        ),
        text=dict(
            vocab_size=49408,
            max_position_embeddings=77,
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=1,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            hidden_act="gelu",
        ),
        projection_dim=24,
        seed=30,
        input_ids=ids77,
        attention_mask=mask77,
        f16=True,
        tokenizer=True,
    )

    make_vit()
    make_preprocess()


# ---------------------------------------------------------------------------
# diffusers fixtures: schedulers.json, dit-tiny/, dit-tiny-p4/
# ---------------------------------------------------------------------------


def _flat(t: torch.Tensor) -> list:
    return t.detach().reshape(-1).tolist()


def _assert_close64(got: torch.Tensor, want: torch.Tensor, what: str, atol=1e-6, rtol=1e-6):
    """got (f32, from diffusers) against an independent recomputation: |got - want| <= atol + rtol |want|."""
    got, want = got.double(), want.double()
    err = ((got - want).abs() - rtol * want.abs()).max().item()
    assert err <= atol, f"{what}: max err {err}"


def _ddpm_closed_form(ac, t, prev_t, x, m, noise, prediction_type, clip, clip_range, dt=torch.float32):
    """DDPMScheduler.step (variance_type fixed_small, no thresholding), scalars and tensors in dtype dt."""
    ac = ac.to(dt)
    x, m, noise = x.to(dt), m.to(dt), noise.to(dt)
    a_t = ac[t]
    a_prev = ac[prev_t] if prev_t >= 0 else torch.tensor(1.0, dtype=dt)
    b_t, b_prev = 1 - a_t, 1 - a_prev
    cur_a = a_t / a_prev
    cur_b = 1 - cur_a
    if prediction_type == "epsilon":
        x0 = (x - b_t.sqrt() * m) / a_t.sqrt()
    else:  # v_prediction
        x0 = a_t.sqrt() * x - b_t.sqrt() * m
    if clip:
        x0 = x0.clamp(-clip_range, clip_range)
    mean = (a_prev.sqrt() * cur_b / b_t) * x0 + (cur_a.sqrt() * b_prev / b_t) * x
    if t > 0:
        var = torch.clamp(b_prev / b_t * cur_b, min=1e-20)
        mean = mean + var.sqrt() * noise
    return mean, x0


def _ddim_closed_form(
    ac, final_alpha, t, prev_t, x, m, noise, eta, prediction_type, clip, clip_range, dt=torch.float32
):
    """DDIMScheduler.step (no thresholding, use_clipped_model_output False), in dtype dt."""
    ac = ac.to(dt)
    x, m = x.to(dt), m.to(dt)
    a_t = ac[t]
    a_prev = ac[prev_t] if prev_t >= 0 else torch.tensor(float(final_alpha), dtype=dt)
    b_t, b_prev = 1 - a_t, 1 - a_prev
    if prediction_type == "epsilon":
        x0, eps = (x - b_t.sqrt() * m) / a_t.sqrt(), m
    else:  # v_prediction
        x0, eps = a_t.sqrt() * x - b_t.sqrt() * m, a_t.sqrt() * m + b_t.sqrt() * x
    if clip:
        x0 = x0.clamp(-clip_range, clip_range)  # eps is NOT recomputed from the clipped x0
    var = (b_prev / b_t) * (1 - a_t / a_prev)
    std = eta * var.sqrt()
    prev = a_prev.sqrt() * x0 + (1 - a_prev - std**2).sqrt() * eps
    if eta > 0:
        prev = prev + std * noise.to(dt)
    return prev, x0


def make_scheduler_fixtures():
    import diffusers
    from diffusers import DDIMScheduler, DDPMScheduler
    from diffusers.utils.torch_utils import randn_tensor

    out = {
        "generator": {"diffusers": diffusers.__version__, "torch": torch.__version__.split("+")[0]},
        "notes": [
            "all tensors are row-major flattened lists; shape given by 'shape'",
            "floats are the exact float32 values (json float64 repr); cast to f32",
            "semantics: see the docstring of scripts/make_fixtures.py",
        ],
    }

    # --- beta schedules ---
    schedules = []
    for n_train, b0, b1 in [(1000, 0.0001, 0.02), (50, 0.001, 0.03)]:
        for bs in ["linear", "scaled_linear", "squaredcos_cap_v2"]:
            s = DDPMScheduler(num_train_timesteps=n_train, beta_start=b0, beta_end=b1, beta_schedule=bs)
            d = DDIMScheduler(num_train_timesteps=n_train, beta_start=b0, beta_end=b1, beta_schedule=bs)
            assert torch.equal(s.betas, d.betas) and torch.equal(s.alphas_cumprod, d.alphas_cumprod)
            assert s.betas.dtype == torch.float32 and s.alphas_cumprod.dtype == torch.float32
            # alphas_cumprod: (1 - beta) in f32, running product in f64, each prefix rounded to f32 (exact)
            want = torch.cumprod((1 - s.betas).double(), 0).float()
            assert torch.equal(want, s.alphas_cumprod), f"cumprod rule {bs}"
            # betas from the f64 formulas, rounded to f32: squaredcos exact, linspace-based within 4e-7 rel
            i = torch.arange(n_train, dtype=torch.float64)
            if bs == "linear":
                b64 = b0 + i * (b1 - b0) / (n_train - 1)
            elif bs == "scaled_linear":
                b64 = (b0**0.5 + i * (b1**0.5 - b0**0.5) / (n_train - 1)).float().double() ** 2
            else:
                abar = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
                b64 = torch.tensor(
                    [min(1 - abar((k + 1) / n_train) / abar(k / n_train), 0.999) for k in range(n_train)]
                )
            rel = ((b64.float().double() - s.betas.double()).abs() / s.betas.double()).max().item()
            assert rel < (4e-7 if bs != "squaredcos_cap_v2" else 1e-300), f"beta formula {bs}: {rel}"
            schedules.append(
                {
                    "beta_schedule": bs,
                    "num_train_timesteps": n_train,
                    "beta_start": b0,
                    "beta_end": b1,
                    "betas": s.betas.tolist(),
                    "alphas_cumprod": s.alphas_cumprod.tolist(),
                }
            )
    out["schedules"] = schedules

    # --- set_timesteps / previous-timestep rules ---
    timesteps = []
    combos = [(1000, 50, 0), (1000, 50, 1), (1000, 7, 0), (1000, 1, 0), (1000, 1000, 0), (50, 13, 1), (1000, 10, 1)]
    for spacing in ["leading", "trailing", "linspace"]:
        for n_train, n_inf, off in combos:
            cfg = dict(num_train_timesteps=n_train, steps_offset=off, timestep_spacing=spacing)
            ddim = DDIMScheduler(**cfg)
            ddim.set_timesteps(n_inf)
            ddpm = DDPMScheduler(**cfg)
            ddpm.set_timesteps(n_inf)
            dt, pt = ddim.timesteps.tolist(), ddpm.timesteps.tolist()
            ddim_prev = [t - n_train // n_inf for t in dt]
            ddpm_prev = [int(ddpm.previous_timestep(t)) for t in pt]
            assert ddpm_prev == pt[1:] + [-1] and dt == pt and len(dt) == n_inf
            timesteps.append(
                {
                    "timestep_spacing": spacing,
                    "num_train_timesteps": n_train,
                    "num_inference_steps": n_inf,
                    "steps_offset": off,
                    "ddim": {"timesteps": dt, "prev_timesteps": ddim_prev},
                    "ddpm": {"timesteps": pt, "prev_timesteps": ddpm_prev},
                }
            )
    out["timesteps"] = timesteps

    # --- single DDPM steps ---
    shape = [2, 3, 4, 4]
    ddpm_steps = []
    case = 0
    worst64 = 0.0
    variants = []
    for pred in ["epsilon", "v_prediction"]:
        for clip in [True, False]:
            for n_inf, spacing in [(None, "leading"), (25, "leading"), (25, "trailing")]:
                variants.append((pred, clip, 1.0, n_inf, spacing))
    variants.append(("epsilon", True, 1.5, 25, "leading"))  # non-default clip range
    schedules_cycle = ["linear", "scaled_linear", "squaredcos_cap_v2"]
    for vi, (pred, clip, clip_range, n_inf, spacing) in enumerate(variants):
        config = dict(
            num_train_timesteps=1000,
            beta_start=0.0001,
            beta_end=0.02,
            beta_schedule=schedules_cycle[(vi + vi // 3) % 3],
            variance_type="fixed_small",
            clip_sample=clip,
            clip_sample_range=clip_range,
            prediction_type=pred,
            timestep_spacing=spacing,
            steps_offset=0,
        )
        sched = DDPMScheduler(**config)
        if n_inf is not None:
            sched.set_timesteps(n_inf)
            ts = sched.timesteps.tolist()
        else:
            ts = list(range(999, -1, -1))
        picks = [ts[len(ts) // 2], ts[-2], ts[-1]]
        for t in picks:
            seed = 5000 + case
            g = torch.Generator().manual_seed(seed)
            sample = torch.randn(shape, generator=g)
            model_output = torch.randn(shape, generator=g)
            step_seed = 9000 + case
            res = sched.step(model_output, t, sample, generator=torch.Generator().manual_seed(step_seed))
            prev_t = int(sched.previous_timestep(t))
            assert n_inf is not None or prev_t == t - 1
            noise_added = t > 0
            if noise_added:  # the exact draw step() made
                noise = randn_tensor(
                    model_output.shape,
                    generator=torch.Generator().manual_seed(step_seed),
                    device=model_output.device,
                    dtype=model_output.dtype,
                )
            else:
                noise = torch.zeros(shape)
            args = (sched.alphas_cumprod, t, prev_t, sample, model_output, noise, pred, clip, clip_range)
            want_prev, want_x0 = _ddpm_closed_form(*args)  # f32, same op order as diffusers
            _assert_close64(res.pred_original_sample, want_x0, f"ddpm case {case} x0")
            _assert_close64(res.prev_sample, want_prev, f"ddpm case {case} prev_sample")
            # f64: only loosely equal, f32 cancellation in 1 - a_t / a_prev near t = 0 (see docstring)
            want64, _ = _ddpm_closed_form(*args, dt=torch.float64)
            _assert_close64(res.prev_sample, want64, f"ddpm case {case} prev_sample f64", atol=2e-4, rtol=1e-4)
            worst64 = max(worst64, (res.prev_sample.double() - want64).abs().max().item())
            ddpm_steps.append(
                {
                    "config": config,
                    "num_inference_steps": n_inf,
                    "timestep": t,
                    "prev_timestep": prev_t,
                    "noise_added": noise_added,
                    "shape": shape,
                    "sample": _flat(sample),
                    "model_output": _flat(model_output),
                    "noise": _flat(noise),
                    "prev_sample": _flat(res.prev_sample),
                    "pred_original_sample": _flat(res.pred_original_sample),
                }
            )
            case += 1
    out["ddpm_steps"] = ddpm_steps
    print(f"   ddpm steps: max |diffusers f32 - float64 closed form| = {worst64:.2e}")

    # --- whole DDIM loops with a fake model ---
    shape = [1, 2, 3, 3]
    idx = torch.arange(math.prod(shape), dtype=torch.float32).reshape(shape)

    def fake_model(x, t):
        return 0.3 * x + 0.2 * torch.cos(torch.tensor(float(t)) / 37.0 + idx)

    traj_cases = [
        # spacing, offset, eta, pred, set_alpha_to_one, clip, beta_schedule
        ("leading", 1, 0.0, "epsilon", True, False, "linear"),
        ("trailing", 0, 0.0, "epsilon", False, True, "linear"),
        ("leading", 1, 0.5, "v_prediction", False, False, "linear"),
        ("trailing", 0, 0.5, "v_prediction", True, True, "linear"),
        ("trailing", 0, 0.0, "v_prediction", True, False, "scaled_linear"),
        ("leading", 1, 0.5, "epsilon", True, True, "squaredcos_cap_v2"),
        ("leading", 1, 1.0, "epsilon", False, False, "scaled_linear"),
    ]
    trajs = []
    for ci, (spacing, off, eta, pred, one, clip, bs) in enumerate(traj_cases):
        config = dict(
            num_train_timesteps=1000,
            beta_start=0.0001,
            beta_end=0.02,
            beta_schedule=bs,
            clip_sample=clip,
            clip_sample_range=1.0,
            set_alpha_to_one=one,
            steps_offset=off,
            prediction_type=pred,
            timestep_spacing=spacing,
        )
        sched = DDIMScheduler(**config)
        n_inf = 10
        sched.set_timesteps(n_inf)
        ts = sched.timesteps.tolist()
        g = torch.Generator().manual_seed(7000 + ci)
        x = torch.randn(shape, generator=g)
        init = x.clone()
        final_alpha = float(sched.final_alpha_cumprod)
        assert final_alpha == (1.0 if one else float(sched.alphas_cumprod[0]))
        mos, samples, noises, prevs, a_prevs = [], [], [], [], []
        for t in ts:
            m = fake_model(x, t)
            prev_t = t - 1000 // n_inf
            noise = torch.randn(shape, generator=g) if eta > 0 else None
            res = sched.step(m, t, x, eta=eta, variance_noise=noise)
            args = (sched.alphas_cumprod, final_alpha, t, prev_t, x, m, noise, eta, pred, clip, 1.0)
            want, _ = _ddim_closed_form(*args)
            _assert_close64(res.prev_sample, want, f"ddim traj {ci} t={t}")
            want64, _ = _ddim_closed_form(*args, dt=torch.float64)
            _assert_close64(res.prev_sample, want64, f"ddim traj {ci} t={t} f64", atol=1e-4, rtol=1e-4)
            mos.append(_flat(m))
            if noise is not None:
                noises.append(_flat(noise))
            prevs.append(prev_t)
            a_prevs.append(float(sched.alphas_cumprod[prev_t]) if prev_t >= 0 else final_alpha)
            x = res.prev_sample
            samples.append(_flat(x))
        trajs.append(
            {
                "config": config,
                "num_inference_steps": n_inf,
                "eta": eta,
                "shape": shape,
                "fake_model": "model_output[k] = 0.3 * sample[k] + 0.2 * cos(t / 37 + k), k = flat index, f32",
                "timesteps": ts,
                "prev_timesteps": prevs,
                "alpha_prod_t_prev": a_prevs,
                "initial_sample": _flat(init),
                "model_outputs": mos,
                "samples": samples,
                "noises": noises if eta > 0 else None,
            }
        )
    out["ddim_trajectories"] = trajs

    path = OUT / "schedulers.json"
    path.write_text(json.dumps(out) + "\n")
    print(
        f"== {path.relative_to(REPO) if path.is_relative_to(REPO) else path}: "
        f"{len(schedules)} schedules, {len(timesteps)} timestep cases, {len(ddpm_steps)} ddpm steps, "
        f"{len(trajs)} ddim trajectories, {path.stat().st_size / 1e3:.0f} kB"
    )


def sincos_pos_embed_2d(dim: int, gh: int, gw: int, base_size: int, interpolation_scale: float = 1.0):
    """Independent re-statement of get_2d_sincos_pos_embed (see docstring): token n = row * gw + col,
    [sin(col w), cos(col w), sin(row w), cos(row w)], w_k = 10000^(-k / (dim / 4)), float64 -> f32."""
    q = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(q, dtype=torch.float64) / q)
    # positions are float32 arange(g) / (g / base_size) / interpolation_scale
    row = (torch.arange(gh, dtype=torch.float32) / (gh / base_size) / interpolation_scale).double()
    col = (torch.arange(gw, dtype=torch.float32) / (gw / base_size) / interpolation_scale).double()
    r = row[:, None].expand(gh, gw).reshape(-1)
    c = col[None, :].expand(gh, gw).reshape(-1)
    a, b = torch.outer(c, omega), torch.outer(r, omega)
    return torch.cat([a.sin(), a.cos(), b.sin(), b.cos()], dim=1).float()


def timestep_sinusoid(t: torch.Tensor, dim: int = 256) -> torch.Tensor:
    """get_timestep_embedding(t, 256, flip_sin_to_cos=True, downscale_freq_shift=1), f32 like torch."""
    half = dim // 2
    exponent = -math.log(10000) * torch.arange(half, dtype=torch.float32) / (half - 1)
    arg = t.float()[:, None] * torch.exp(exponent)[None, :]
    return torch.cat([torch.cos(arg), torch.sin(arg)], dim=1)


def dit_manual_forward(sd: dict, cfg: dict, x, t, y):
    """DiTTransformer2DModel forward re-implemented from the state dict following the docstring."""
    F = torch.nn.functional
    p, heads, hd = cfg["patch_size"], cfg["num_attention_heads"], cfg["attention_head_dim"]
    D = heads * hd
    c_out = cfg["out_channels"] or cfg["in_channels"]
    B, C, H, W = x.shape
    gh, gw = H // p, W // p

    def lin(v, name):
        return v @ sd[name + ".weight"].T + sd[name + ".bias"]

    def ln(v, eps):
        mu = v.mean(-1, keepdim=True)
        var = ((v - mu) ** 2).mean(-1, keepdim=True)
        return (v - mu) / torch.sqrt(var + eps)

    def cond(pre):
        temb = lin(timestep_sinusoid(t), pre + "timestep_embedder.linear_1")
        temb = lin(F.silu(temb), pre + "timestep_embedder.linear_2")
        return temb + sd[pre + "class_embedder.embedding_table.weight"][y]

    # patch embed: conv(k=p, s=p) == patches in (c, i, j) order @ W.reshape(D, C*p*p).T
    patches = x.reshape(B, C, gh, p, gw, p).permute(0, 2, 4, 1, 3, 5).reshape(B, gh * gw, C * p * p)
    h = patches @ sd["pos_embed.proj.weight"].reshape(D, -1).T + sd["pos_embed.proj.bias"]
    pe = sincos_pos_embed_2d(D, gh, gw, base_size=cfg["sample_size"] // p)
    h = h + pe
    embedded = h
    conds, block_outs = [], []
    for i in range(cfg["num_layers"]):
        pre = f"transformer_blocks.{i}."
        c = cond(pre + "norm1.emb.")
        conds.append(c)
        mod = lin(F.silu(c), pre + "norm1.linear")
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.chunk(6, dim=1)
        n = ln(h, 1e-6) * (1 + scale_msa[:, None]) + shift_msa[:, None]
        q, k, v = (lin(n, pre + f"attn1.to_{w}").reshape(B, -1, heads, hd).transpose(1, 2) for w in "qkv")
        att = torch.softmax(q @ k.transpose(-1, -2) * hd**-0.5, dim=-1) @ v
        att = lin(att.transpose(1, 2).reshape(B, -1, D), pre + "attn1.to_out.0")
        h = h + gate_msa[:, None] * att
        n = ln(h, cfg["norm_eps"]) * (1 + scale_mlp[:, None]) + shift_mlp[:, None]
        f = lin(F.gelu(lin(n, pre + "ff.net.0.proj"), approximate="tanh"), pre + "ff.net.2")
        h = h + gate_mlp[:, None] * f
        block_outs.append(h)
    shift, scale = lin(F.silu(conds[0]), "proj_out_1").chunk(2, dim=1)
    h = ln(h, 1e-6) * (1 + scale[:, None]) + shift[:, None]
    h = lin(h, "proj_out_2")  # [B, gh*gw, p*p*c_out], last dim ordered (pi, pj, c)
    out = h.reshape(B, gh, gw, p, p, c_out).permute(0, 5, 1, 3, 2, 4).reshape(B, c_out, gh * p, gw * p)
    return out, pe, embedded, conds, block_outs


def make_dit(name: str, seed: int, **kw):
    from diffusers import DiTTransformer2DModel
    from diffusers.models.attention_processor import Attention, AttnProcessor

    d = OUT / name
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    torch.manual_seed(seed)
    model = DiTTransformer2DModel(**kw).eval()
    # no LayerNorm has parameters here; matrices/embeddings/conv N(0, 0.2), biases N(0, 0.1)
    assert not any(isinstance(m, torch.nn.LayerNorm) and m.weight is not None for m in model.modules())
    redraw(model, seed + 1)
    model.save_pretrained(d)
    cfg = dict(model.config)

    g = torch.Generator().manual_seed(seed + 2)
    S, C = cfg["sample_size"], cfg["in_channels"]
    hidden_states = torch.randn(3, C, S, S, generator=g)
    timestep = torch.tensor([0.0, 417.0, 999.0], dtype=torch.float32)
    n_cls = cfg["num_embeds_ada_norm"]
    class_labels = torch.tensor([3, n_cls, 0], dtype=torch.int64)  # n_cls = the null (CFG) class

    with torch.no_grad():
        default_out = model(hidden_states, timestep=timestep, class_labels=class_labels).sample  # SDPA processor
        for m in model.modules():
            if isinstance(m, Attention):
                m.set_processor(AttnProcessor())  # "eager": baddbmm + softmax + bmm
        sample = model(hidden_states, timestep=timestep, class_labels=class_labels).sample
        close(default_out, sample, f"{name}: sdpa vs eager")
        pos_embed = model.pos_embed.pos_embed[0]
        emb0 = model.transformer_blocks[0].norm1.emb
        conditioning = emb0(timestep, class_labels, hidden_dtype=torch.float32)
        tproj = emb0.time_proj(timestep)
        embedded = model.pos_embed(hidden_states)

        # the docstring's semantics, re-implemented from the state dict
        sd = {k: v.detach() for k, v in model.state_dict().items()}
        assert "pos_embed.pos_embed" not in sd  # non-persistent buffer, not in the checkpoint
        man, pe, emb_m, conds, block_outs = dit_manual_forward(sd, cfg, hidden_states, timestep, class_labels)
        assert (pe - pos_embed).abs().max().item() < 1e-6, "pos embed formula"
        close(timestep_sinusoid(timestep), tproj, f"{name}: timestep sinusoid")
        close(emb_m, embedded, f"{name}: patch embed")
        close(conds[0], conditioning, f"{name}: conditioning")
        close(man, sample, f"{name}: manual forward")
        # every block has its own embedder, and the final layer uses block 0's
        h = embedded
        for i, blk in enumerate(model.transformer_blocks):
            h = blk(h, timestep=timestep, class_labels=class_labels)
            close(block_outs[i], h, f"{name}: block {i}")
            close(conds[i], blk.norm1.emb(timestep, class_labels, hidden_dtype=torch.float32), f"{name}: cond {i}")

    ref = {
        "hidden_states": hidden_states,
        "timestep": timestep,
        "class_labels": class_labels,
        "sample": sample,
        "pos_embed": pos_embed,
        "conditioning": conditioning,
        "timestep_proj": tproj,
        "embedded": embedded,
    }
    for i, c in enumerate(conds):
        ref[f"block_conditioning.{i}"] = c
    for i, b in enumerate(block_outs):
        ref[f"block_output.{i}"] = b
    ref = {k: v.detach().contiguous() for k, v in ref.items()}
    import diffusers

    save_file(ref, d / "reference.safetensors", metadata={"diffusers": diffusers.__version__})

    reloaded = DiTTransformer2DModel.from_pretrained(d).eval()
    with torch.no_grad():
        o2 = reloaded(hidden_states, timestep=timestep, class_labels=class_labels).sample
    close(o2, sample, f"{name}: reloaded")

    wpath = d / "diffusion_pytorch_model.safetensors"
    with safe_open(wpath, "pt") as f:
        keys = sorted(f.keys())
        print(f"== {d.name}: {len(keys)} tensors in {wpath.name}, {wpath.stat().st_size / 1e3:.0f} kB")
        for k in keys:
            print(f"   {k} {list(f.get_slice(k).get_shape())} {f.get_slice(k).get_dtype()}")
    for k, v in ref.items():
        extra = f" std={v.float().std().item():.3f}" if v.is_floating_point() and v.numel() > 1 else ""
        print(f"   ref {k}: {tuple(v.shape)} {v.dtype}{extra}")


def make_diffusion_fixtures():
    make_scheduler_fixtures()
    common = dict(
        num_attention_heads=2,
        attention_head_dim=8,
        num_embeds_ada_norm=10,
        norm_type="ada_norm_zero",
        dropout=0.0,
        activation_fn="gelu-approximate",
        norm_elementwise_affine=False,
        sample_size=8,
    )
    make_dit("dit-tiny", seed=60, in_channels=4, out_channels=8, num_layers=2, patch_size=2, norm_eps=1e-6, **common)
    # norm_eps left at DiTTransformer2DModel's default (1e-5) here, so norm3's eps differs from the
    # hard-coded 1e-6 of norm1 / norm_out
    make_dit("dit-tiny-p4", seed=70, in_channels=3, out_channels=3, num_layers=1, patch_size=4, **common)


def main():
    import argparse

    global OUT
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--only",
        choices=["all", "hf", "diffusion"],
        default="all",
        help="hf: clip-*/vit-tiny/preprocess (transformers); diffusion: schedulers.json, dit-tiny, dit-tiny-p4 "
        "(diffusers); all (default): both",
    )
    ap.add_argument("--out", type=Path, default=OUT, help="output directory (default tests/fixtures)")
    args = ap.parse_args()
    OUT = args.out.resolve()
    OUT.mkdir(parents=True, exist_ok=True)
    if args.only in ("all", "hf"):
        make_hf_fixtures()
    if args.only in ("all", "diffusion"):
        make_diffusion_fixtures()
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"{OUT} total: {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
