#!/usr/bin/env python3
"""The PyTorch side of `vlk bench --vs torch`: times the same workloads in PyTorch.

vlk starts this script with `--serve` and talks to it over stdin/stdout, one JSON object a
line, so both sides run in one process tree and their timings interleave:

  vlk -> {"cmd": "setup", "workload": {...}}   builds inputs/models, warms up
  <- {"ok": true, "impls": ["torch", ...]}     or {"ok": false, "error": "..."}
  vlk -> {"cmd": "time", "repeats": N}         times N repeats of every impl
  <- {"ok": true, "ms": {"torch": [..], ...}}

A workload is the JSON vlk sends (see src/cli/bench/workloads.rs): "op" (gemm, attn_fwd,
attn_bwd, layernorm_fwd, layernorm_bwd, xent_fwd, xent_bwd, denoise, copy, clip_image,
clip_text, clip_train), "dtype" (f32 or bf16) and its shape fields. CLIP workloads carry the
model config in Hugging Face's layout and, for text, the token ids vlk itself uses.

impls: "torch" (eager; "cublas" for GEMM on a GPU, which is what torch.matmul calls) and, on
a GPU with --compile, "torch.compile" for the memory-bound ops. On a GPU every repeat is
timed with CUDA events after the L2 is flushed by writing a 256 MiB buffer; on a CPU with
time.perf_counter, on as many threads as vlk uses (--threads).

Needs only torch (no transformers): pip install torch --index-url https://download.pytorch.org/whl/cpu
"""
import argparse
import json
import math
import sys
import time

WARM_UP_S = 0.3  # seconds of warm-up runs after the first, as vlk bench's WARM_UP_MS

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError as err:
    print(json.dumps({"ok": False, "error": f"{sys.executable} cannot import torch ({err}); install it with "
                      "`pip install torch --index-url https://download.pytorch.org/whl/cpu` (CPU) or a CUDA "
                      "build, or point vlk at a python that has it with --python"}), flush=True)
    sys.exit(2)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--serve", action="store_true", help="answer vlk's requests on stdin/stdout")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    p.add_argument("--compile", action="store_true", help="also time torch.compile where it applies")
    return p.parse_args(argv)


def quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


class Block(nn.Module):
    """A pre-LN transformer layer laid out as Hugging Face's CLIPEncoderLayer."""

    def __init__(self, d, ff, heads, act, eps):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d, eps=eps), nn.LayerNorm(d, eps=eps)
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.fc1, self.fc2 = nn.Linear(d, ff), nn.Linear(ff, d)
        self.act = quick_gelu if act == "quick_gelu" else F.gelu

    def forward(self, x, mask, causal):
        b, s, d = x.shape
        h = self.ln1(x)
        split = lambda t: t.view(b, s, self.heads, d // self.heads).transpose(1, 2)
        a = F.scaled_dot_product_attention(split(self.q(h)), split(self.k(h)), split(self.v(h)),
                                           attn_mask=mask, is_causal=causal and mask is None)
        x = x + self.o(a.transpose(1, 2).reshape(b, s, d))
        return x + self.fc2(self.act(self.fc1(self.ln2(x))))


class Tower(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.layers = nn.ModuleList(Block(c["hidden_size"], c["intermediate_size"], c["num_attention_heads"],
                                          c.get("hidden_act", "quick_gelu"), c.get("layer_norm_eps", 1e-5))
                                    for _ in range(c["num_hidden_layers"]))

    def encode(self, x, mask=None, causal=False):
        for layer in self.layers:
            x = layer(x, mask, causal)
        return x


class Vision(Tower):
    def __init__(self, c, proj):
        super().__init__(c)
        d, p = c["hidden_size"], c["patch_size"]
        self.patch = nn.Conv2d(c.get("num_channels", 3), d, p, stride=p, bias=False)
        self.cls = nn.Parameter(torch.randn(d))
        self.pos = nn.Embedding((c["image_size"] // p) ** 2 + 1, d)
        self.pre, self.post = nn.LayerNorm(d), nn.LayerNorm(d)
        self.proj = nn.Linear(d, proj, bias=False)

    def forward(self, pixels):
        x = self.patch(pixels).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], 1, -1).to(x.dtype), x], 1) + self.pos.weight
        x = self.encode(self.pre(x))
        return self.proj(self.post(x[:, 0]))


class Text(Tower):
    def __init__(self, c, proj):
        super().__init__(c)
        d = c["hidden_size"]
        self.eos = c.get("eos_token_id", 2)
        self.tok = nn.Embedding(c["vocab_size"], d)
        self.pos = nn.Embedding(c["max_position_embeddings"], d)
        self.final = nn.LayerNorm(d)
        self.proj = nn.Linear(d, proj, bias=False)

    def forward(self, ids, pad_mask=None):
        b, s = ids.shape
        x = self.tok(ids) + self.pos.weight[:s]
        mask = None
        if pad_mask is not None:  # causal and padding together, as a boolean "may attend" mask
            causal = torch.ones(s, s, dtype=torch.bool, device=ids.device).tril()
            mask = (causal & pad_mask.bool()[:, None, None, :])
        x = self.final(self.encode(x, mask, causal=True))
        # transformers' legacy rule: with eos_token_id 2 the pooled token is the largest id.
        first_eos = ids.argmax(-1) if self.eos == 2 else (ids == self.eos).int().argmax(-1)
        return self.proj(x[torch.arange(b, device=ids.device), first_eos])


class Clip(nn.Module):
    def __init__(self, config):
        super().__init__()
        proj = config["projection_dim"]
        self.vision = Vision(config["vision_config"], proj)
        self.text = Text(config["text_config"], proj)
        self.logit_scale = nn.Parameter(torch.tensor(config.get("logit_scale_init_value", 2.6592)))

    def loss(self, pixels, ids, pad_mask):
        img = F.normalize(self.vision(pixels).float(), dim=-1)
        txt = F.normalize(self.text(ids, pad_mask).float(), dim=-1)
        logits = self.logit_scale.exp() * img @ txt.t()
        labels = torch.arange(logits.shape[0], device=logits.device)
        return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2


class Peer:
    def __init__(self, args):
        self.dev = args.device
        self.compile = args.compile
        self.cuda = self.dev.startswith("cuda")
        self.fns = {}
        # Writing this evicts the 50-60 MB L2 of an H100/H200 between repeats.
        self.flush = torch.empty(64 << 20, device=self.dev) if self.cuda else None

    def randn(self, *shape, dtype, grad=False):
        return torch.randn(*shape, device=self.dev, dtype=dtype).requires_grad_(grad)

    def setup(self, w):
        self.fns = {}
        dt = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}[w["dtype"]]
        op = w["op"]
        maybe_compiled = lambda f: [("torch", f)] + ([("torch.compile", torch.compile(f))] if self.compile and self.cuda else [])
        if op == "gemm":
            a, b = self.randn(w["m"], w["k"], dtype=dt), self.randn(w["k"], w["n"], dtype=dt)
            self.fns["cublas" if self.cuda else "torch"] = lambda: torch.matmul(a, b)
        elif op in ("attn_fwd", "attn_bwd"):
            shape = (w["b"], w["h"], w["s"], w["d"])
            q, k, v = (self.randn(*shape, dtype=dt, grad=op == "attn_bwd") for _ in range(3))
            causal = w.get("causal", False)
            if op == "attn_fwd":
                self.fns["torch"] = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal)
            else:
                out, g = F.scaled_dot_product_attention(q, k, v, is_causal=causal), self.randn(*shape, dtype=dt)
                self.fns["torch"] = lambda: torch.autograd.grad(out, (q, k, v), g, retain_graph=True)
        elif op in ("layernorm_fwd", "layernorm_bwd"):
            rows, cols = w["rows"], w["cols"]
            x = self.randn(rows, cols, dtype=dt, grad=op == "layernorm_bwd")
            gamma, beta = self.randn(cols, dtype=dt, grad=True), self.randn(cols, dtype=dt, grad=True)
            ln = lambda x: F.layer_norm(x, (cols,), gamma, beta, eps=1e-5)
            for impl, f in maybe_compiled(ln):
                if op == "layernorm_fwd":
                    self.fns[impl] = lambda f=f: f(x)
                else:
                    y, g = f(x), self.randn(rows, cols, dtype=dt)
                    self.fns[impl] = lambda y=y, g=g: torch.autograd.grad(y, (x, gamma, beta), g, retain_graph=True)
        elif op in ("xent_fwd", "xent_bwd"):
            rows, classes = w["rows"], w["classes"]
            logits = self.randn(rows, classes, dtype=dt, grad=op == "xent_bwd")
            targets = torch.randint(0, classes, (rows,), device=self.dev)
            xent = lambda lg: F.cross_entropy(lg, targets, reduction="none")
            for impl, f in maybe_compiled(xent):
                if op == "xent_fwd":
                    self.fns[impl] = lambda f=f: f(logits)
                else:
                    loss, g = f(logits), self.randn(rows, dtype=dt)
                    self.fns[impl] = lambda loss=loss, g=g: torch.autograd.grad(loss, logits, g, retain_graph=True)
        elif op == "denoise":
            x, c, u, z = (self.randn(w["n"], dtype=dt) for _ in range(4))
            p = w["params"]

            def step(x, c, u, z):  # classifier-free guidance, epsilon prediction, then the DDIM/DDPM update
                eps = u + p["guidance"] * (c - u)
                x0 = (x - p["sqrt_one_minus_alpha_bar"] * eps) / p["sqrt_alpha_bar"]
                return p["c_x0"] * x0 + p["c_xt"] * x + p["c_noise"] * z
            for impl, f in maybe_compiled(step):
                self.fns[impl] = lambda f=f: f(x, c, u, z)
        elif op == "copy":
            src, dst = self.randn(w["n"], dtype=dt), torch.empty(w["n"], device=self.dev, dtype=dt)
            self.fns["torch"] = lambda: dst.copy_(src)
        elif op in ("clip_image", "clip_text", "clip_train"):
            self.setup_clip(w, dt)
        else:
            raise ValueError(f"unknown op {op!r}")
        for f in self.fns.values():  # warm-up as vlk's: one run (compiling), then 0.3 s of runs
            f()
            self.sync()
            start = time.perf_counter()
            while time.perf_counter() - start < WARM_UP_S:
                f()
                self.sync()
        return list(self.fns)

    def setup_clip(self, w, dt):
        torch.manual_seed(0)
        model = Clip(w["config"]).to(self.dev)
        vc = w["config"]["vision_config"]
        batch = w["batch"]
        ids = mask = None
        if "ids" in w:
            ids = torch.tensor(w["ids"], device=self.dev).view(batch, -1)
            mask = torch.tensor(w["mask"], device=self.dev).view(batch, -1) if "mask" in w else None
        pixels = self.randn(batch, vc.get("num_channels", 3), vc["image_size"], vc["image_size"], dtype=torch.float32)
        if w["op"] == "clip_train":
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)
            autocast = torch.autocast(self.dev.split(":")[0], dtype=dt, enabled=dt != torch.float32)

            def step():
                with autocast:
                    loss = model.loss(pixels, ids, mask)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                with torch.no_grad():
                    model.logit_scale.clamp_(max=math.log(100))
            self.fns["torch"] = step
            return
        model = model.to(dt).eval()
        if w["op"] == "clip_image":
            pixels = pixels.to(dt)
            self.fns["torch"] = lambda: self.no_grad(model.vision, pixels)
        else:
            self.fns["torch"] = lambda: self.no_grad(model.text, ids, mask)

    @staticmethod
    def no_grad(f, *args):
        with torch.inference_mode():
            return f(*args)

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def time(self, repeats):
        out = {}
        for impl, f in self.fns.items():
            if self.cuda:
                samples = []
                for _ in range(repeats):
                    self.flush.zero_()
                    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    start.record()
                    f()
                    stop.record()
                    stop.synchronize()
                    samples.append(start.elapsed_time(stop))
            else:
                samples = []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    f()
                    samples.append((time.perf_counter() - t0) * 1e3)
            out[impl] = samples
        return out


def serve(args):
    peer = Peer(args)
    hello = {"ok": True, "torch": torch.__version__, "threads": torch.get_num_threads(), "device": args.device}
    if peer.cuda:
        hello["gpu"] = torch.cuda.get_device_name(0)
    print(json.dumps(hello), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        try:
            if req["cmd"] == "setup":
                reply = {"ok": True, "impls": peer.setup(req["workload"])}
            elif req["cmd"] == "time":
                reply = {"ok": True, "ms": peer.time(int(req["repeats"]))}
            else:
                reply = {"ok": False, "error": f"unknown command {req['cmd']!r}"}
        except Exception as e:  # unsupported op, out of memory: vlk prints it and goes on
            peer.fns = {}
            if peer.cuda:
                torch.cuda.empty_cache()
            reply = {"ok": False, "error": f"{type(e).__name__}: {str(e).strip()[:400]}"}
        print(json.dumps(reply), flush=True)
    return 0


if __name__ == "__main__":
    ARGS = parse_args(sys.argv[1:])
    if ARGS.threads > 0:
        torch.set_num_threads(ARGS.threads)
    if not ARGS.serve:
        print("torch_bench.py is driven by `vlk bench --vs torch`; see --help", file=sys.stderr)
        sys.exit(2)
    sys.exit(serve(ARGS))
