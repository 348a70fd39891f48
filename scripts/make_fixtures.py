#!/usr/bin/env python3
"""Write tiny random-initialised Hugging Face checkpoints + reference outputs
into ``tests/fixtures/`` for the Rust tests.

Not run by CI: the outputs are committed.  Needs torch, transformers (5.24.0
and torch 2.15.0 CPU were used), safetensors, tokenizers, numpy; run
``scripts/make_clip_tokenizer.py`` first (clip-f16 copies its tokenizer.json).
Deterministic: everything is seeded; run it again and the files are rebuilt
(bit-identical on the same library versions).

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
            if isinstance(mod, torch.nn.LayerNorm):
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
    print(f"== {d.relative_to(REPO)}: {len(keys)} tensors in model.safetensors, dtypes {sorted(dtypes)}")
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


def main():
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

    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"tests/fixtures total: {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
