#!/usr/bin/env python3
"""Times, in PyTorch on CUDA, the workloads that `vlk bench-kernels --device cuda --json` times.

Prints ONE JSON list on stdout (progress goes to stderr). Each object:
  {"name", "dtype", "shape", "impl", "ms", "ms_p10", "ms_p90", "repeats",
   "flops" and "tflops"   (compute-bound rows: gemm, attention), or
   "bytes" and "gbps"     (memory-bound rows: layernorm, xent, denoise, copy),
   "variant"              (optional: which SDPA backend was forced, e.g. "flash", "cudnn")}
impl is "cublas" (torch.matmul), "torch" (eager) or "torch.compile".
ms is the median of the timed repeats, ms_p10/ms_p90 the 10th/90th percentiles;
tflops = flops / (ms * 1e9), gbps = bytes / (ms * 1e6) (1 GB/s = 1e9 bytes/s).

Method: CUDA events recorded around the op only; warm-up first; the L2 is flushed before
every repeat by writing a 256 MiB buffer (outside the events); random normal inputs.

Usage: python3 torch_kernels_bench.py [--only SUBSTR]... [--repeats N] [--quick]
                                      [--no-compile] [--budget-s S] [--out FILE] [--json]
"""
import argparse
import contextlib
import json
import os
import sys
import time


def die_no_torch(msg):
    print(f"torch_kernels_bench: {msg}\n"
          "This script needs PyTorch with CUDA and an NVIDIA GPU "
          "(pip install torch, with a CUDA build, on a machine with a GPU).", file=sys.stderr)
    sys.exit(2)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", action="append", default=[], metavar="SUBSTR",
                   help="run only workloads whose name contains SUBSTR (repeatable)")
    p.add_argument("--repeats", type=int, default=50, help="timed repeats per row (default 50; >= 20 for real numbers)")
    p.add_argument("--warmup", type=int, default=5, help="untimed runs before timing (default 5)")
    p.add_argument("--quick", action="store_true", help="small shapes, for a smoke run (numbers mean little)")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    p.add_argument("--budget-s", type=float, default=0.0,
                   help="after this many seconds, skip the remaining torch.compile rows (0: no limit)")
    p.add_argument("--out", metavar="FILE",
                   help="also write the JSON list to FILE, rewritten after every row (survives a timeout)")
    p.add_argument("--json", action="store_true", help="accepted for symmetry with vlk; the output is always JSON")
    return p.parse_args(argv)


def percentile(sorted_xs, q):
    """Linear-interpolated percentile, q in [0, 100], of an ascending list."""
    if not sorted_xs:
        return float("nan")
    pos = (len(sorted_xs) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(sorted_xs) - 1)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (pos - lo)


class Bench:
    def __init__(self, torch, args):
        self.torch = torch
        self.args = args
        self.rows = []
        self.t0 = time.monotonic()
        # Writing this evicts the 50-60 MB L2 of an H100/H200 (and anything smaller).
        self.flush_buf = torch.empty(256 * 1024 * 1024 // 4, dtype=torch.float32, device="cuda")

    def wanted(self, name):
        return not self.args.only or any(s in name for s in self.args.only)

    def compile_allowed(self):
        if self.args.no_compile:
            return False
        if self.args.budget_s > 0 and time.monotonic() - self.t0 > self.args.budget_s:
            return False
        return True

    def time_op(self, op, setup=None):
        """Median/p10/p90 ms of op(state) over the repeats; state = setup() runs untimed before
        the flush. No host sync inside the loop, so the host runs ahead and the events measure
        device time."""
        torch = self.torch
        for _ in range(max(self.args.warmup, 1)):
            op(setup() if setup else None)
        torch.cuda.synchronize()
        n = max(self.args.repeats, 1)
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
        for i in range(n):
            state = setup() if setup else None
            self.flush_buf.zero_()
            starts[i].record()
            op(state)
            ends[i].record()
            del state
        torch.cuda.synchronize()
        ts = sorted(s.elapsed_time(e) for s, e in zip(starts, ends))
        return percentile(ts, 50), percentile(ts, 10), percentile(ts, 90), n

    def record(self, name, dtype, shape, impl, op, setup=None, flops=None, nbytes=None, variant=None):
        try:
            ms, p10, p90, n = self.time_op(op, setup)
        except Exception as e:  # unsupported backend, compile failure, OOM: skip the row
            msg = str(e).strip().splitlines()
            print(f"  skip {name} [{impl}{'/' + variant if variant else ''}]: {type(e).__name__}: "
                  f"{msg[0] if msg else ''}"[:300], file=sys.stderr)
            self.torch.cuda.synchronize()
            return
        row = {"name": name, "dtype": dtype, "shape": list(shape), "impl": impl,
               "ms": round(ms, 6), "ms_p10": round(p10, 6), "ms_p90": round(p90, 6), "repeats": n}
        if variant:
            row["variant"] = variant
        if flops is not None:
            row["flops"] = int(flops)
            row["tflops"] = round(flops / (ms * 1e9), 3)
            rate = f"{row['tflops']:.1f} TFLOP/s"
        else:
            row["bytes"] = int(nbytes)
            row["gbps"] = round(nbytes / (ms * 1e6), 2)
            rate = f"{row['gbps']:.0f} GB/s"
        self.rows.append(row)
        label = impl + (f"/{variant}" if variant else "")
        print(f"  {name:<26} {label:<20} {ms:9.4f} ms  (p10 {p10:.4f}, p90 {p90:.4f})  {rate}",
              file=sys.stderr)
        self.save()

    def save(self):
        if not self.args.out:
            return
        tmp = self.args.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.rows, f, indent=1)
            f.write("\n")
        os.replace(tmp, self.args.out)


def main(argv):
    args = parse_args(argv)
    try:
        import torch
        import torch.nn.functional as F
    except ImportError as e:
        die_no_torch(f"cannot import torch ({e}).")
    if not torch.cuda.is_available():
        die_no_torch(f"torch {torch.__version__} sees no CUDA device "
                     f"(torch.version.cuda = {torch.version.cuda}).")

    torch.manual_seed(0)
    dev = "cuda"
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}; "
          f"repeats {args.repeats}{', quick shapes' if args.quick else ''}", file=sys.stderr)
    b = Bench(torch, args)
    bf16, f32 = torch.bfloat16, torch.float32
    q = args.quick

    def randn(*shape, dtype=bf16, requires_grad=False):
        return torch.randn(*shape, device=dev, dtype=dtype).requires_grad_(requires_grad)

    def try_compile(fn):
        # Compilation is lazy: a failure shows at the first call, inside Bench.record.
        return torch.compile(fn)

    def section_done():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()

    def sec_gemm():
        # GEMM: C = A @ B (cuBLAS)
        for nominal in (1024, 4096, 8192):
            name = f"gemm_bf16_n{nominal}"
            n = nominal // 8 if q else nominal
            if b.wanted(name):
                A, B = randn(n, n), randn(n, n)
                b.record(name, "bf16", (n, n, n), "cublas", lambda _: torch.matmul(A, B), flops=2 * n ** 3)
                del A, B
        name = "gemm_f32_n4096"
        if b.wanted(name):
            n = 512 if q else 4096
            old_tf32 = torch.backends.cuda.matmul.allow_tf32
            torch.backends.cuda.matmul.allow_tf32 = False
            try:
                A, B = randn(n, n, dtype=f32), randn(n, n, dtype=f32)
                b.record(name, "f32", (n, n, n), "cublas", lambda _: torch.matmul(A, B), flops=2 * n ** 3)
                del A, B
            finally:
                torch.backends.cuda.matmul.allow_tf32 = old_tf32
        section_done()

    def sec_attention():
        # attention: F.scaled_dot_product_attention
        try:
            from torch.nn.attention import SDPBackend, sdpa_kernel
            forced = [("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION)]
        except Exception:  # older torch: default dispatch only
            forced, sdpa_kernel = [], None
        Bt, Ht, St = (2, 4, 1024) if q else (4, 16, 4096)
        for d in (64, 128):
            shape = (Bt, Ht, St, d)
            fwd_flops = 4 * Bt * Ht * St * St * d
            names = {f"attn_fwd_bf16_d{d}": False, f"attn_fwd_causal_bf16_d{d}": True}
            bwd_name = f"attn_bwd_bf16_d{d}"
            if not any(b.wanted(x) for x in list(names) + [bwd_name]):
                continue
            qt, kt, vt = randn(*shape), randn(*shape), randn(*shape)
            for variant, backend in [(None, None)] + forced:
                ctx = (lambda be=backend: sdpa_kernel([be])) if backend is not None else contextlib.nullcontext
                for name, causal in names.items():
                    if not b.wanted(name):
                        continue

                    def fwd(_, causal=causal, ctx=ctx):
                        with ctx():
                            return F.scaled_dot_product_attention(qt, kt, vt, is_causal=causal)
                    b.record(name, "bf16", shape, "torch", fwd, variant=variant,
                             flops=fwd_flops // 2 if causal else fwd_flops)
                if b.wanted(bwd_name):
                    qg, kg, vg = (t.detach().clone().requires_grad_(True) for t in (qt, kt, vt))
                    g = randn(*shape)

                    def setup(ctx=ctx, qg=qg, kg=kg, vg=vg):
                        qg.grad = kg.grad = vg.grad = None
                        with ctx():
                            return F.scaled_dot_product_attention(qg, kg, vg)

                    def bwd(out, g=g):
                        out.backward(g)
                    b.record(bwd_name, "bf16", shape, "torch", bwd, setup=setup, variant=variant,
                             flops=10 * Bt * Ht * St * St * d)
                    del qg, kg, vg, g
            del qt, kt, vt
            section_done()

    def sec_layernorm():
        # layernorm
        rows, cols = (4096, 1024) if q else (32768, 4096)
        if b.wanted("layernorm_fwd_bf16") or b.wanted("layernorm_bwd_bf16"):
            x, w, bias = randn(rows, cols), randn(cols), randn(cols)
            numel = rows * cols

            def ln(x, w, bias):
                return F.layer_norm(x, (cols,), w, bias, eps=1e-5)
            impls = [("torch", ln)] + ([("torch.compile", try_compile(ln))] if not args.no_compile else [])
            for impl, fn in impls:
                if impl == "torch.compile" and not b.compile_allowed():
                    print("  skip torch.compile rows: --budget-s spent", file=sys.stderr)
                    continue
                if b.wanted("layernorm_fwd_bf16"):
                    b.record("layernorm_fwd_bf16", "bf16", (rows, cols), impl,
                             lambda _, fn=fn: fn(x, w, bias), nbytes=2 * numel * 2)
                if b.wanted("layernorm_bwd_bf16"):
                    # dx only (weight and bias need no grad), as vlk's bench-kernels times it;
                    # bytes count x, dy and dx.
                    xg = x.detach().clone().requires_grad_(True)
                    dy = randn(rows, cols)

                    def setup(fn=fn, xg=xg):
                        xg.grad = None
                        return fn(xg, w, bias)
                    b.record("layernorm_bwd_bf16", "bf16", (rows, cols), impl,
                             lambda out, dy=dy: out.backward(dy), setup=setup, nbytes=3 * numel * 2)
                    del xg, dy
            del x, w, bias
            section_done()

    def sec_cross_entropy():
        # cross-entropy
        rows, vocab = (1024, 4096) if q else (8192, 32768)
        if b.wanted("xent_fwd_bf16") or b.wanted("xent_bwd_bf16"):
            logits = randn(rows, vocab)
            targets = torch.randint(0, vocab, (rows,), device=dev)
            numel = rows * vocab

            def xent(lg, tg):
                return F.cross_entropy(lg, tg, reduction="none")
            impls = [("torch", xent)] + ([("torch.compile", try_compile(xent))] if not args.no_compile else [])
            for impl, fn in impls:
                if impl == "torch.compile" and not b.compile_allowed():
                    print("  skip torch.compile rows: --budget-s spent", file=sys.stderr)
                    continue
                if b.wanted("xent_fwd_bf16"):
                    b.record("xent_fwd_bf16", "bf16", (rows, vocab), impl,
                             lambda _, fn=fn: fn(logits, targets), nbytes=numel * 2)
                if b.wanted("xent_bwd_bf16"):
                    lg = logits.detach().clone().requires_grad_(True)
                    gl = randn(rows)

                    def setup(fn=fn, lg=lg):
                        lg.grad = None
                        return fn(lg, targets)
                    b.record("xent_bwd_bf16", "bf16", (rows, vocab), impl,
                             lambda out, gl=gl: out.backward(gl), setup=setup, nbytes=2 * numel * 2)
                    del lg, gl
            del logits, targets
            section_done()

    def sec_denoise_step():
        # denoise step (classifier-free guidance)
        if b.wanted("denoise_bf16"):
            n = 1 << (20 if q else 26)
            x_t, cond, uncond, noise = randn(n), randn(n), randn(n), randn(n)
            g, s0, s1, c_x0, c_xt, c_noise = 4.5, 0.8, 0.6, 0.35, 0.55, 0.1

            def denoise(x_t, cond, uncond, noise):
                eps = uncond + g * (cond - uncond)
                x0 = (x_t - s1 * eps) / s0
                return c_x0 * x0 + c_xt * x_t + c_noise * noise
            impls = [("torch", denoise)] + ([("torch.compile", try_compile(denoise))] if not args.no_compile else [])
            for impl, fn in impls:
                if impl == "torch.compile" and not b.compile_allowed():
                    print("  skip torch.compile rows: --budget-s spent", file=sys.stderr)
                    continue
                b.record("denoise_bf16", "bf16", (n,), impl,
                         lambda _, fn=fn: fn(x_t, cond, uncond, noise), nbytes=5 * n * 2)
            del x_t, cond, uncond, noise
            section_done()

    def sec_device_to_device_copy():
        # device-to-device copy: the bandwidth ceiling
        if b.wanted("copy_bf16"):
            n = 1 << (24 if q else 28)
            src, dst = randn(n), torch.empty(n, device=dev, dtype=bf16)
            b.record("copy_bf16", "bf16", (n,), "torch", lambda _: dst.copy_(src), nbytes=2 * n * 2)
            del src, dst
            section_done()

    for sec in (sec_gemm, sec_attention, sec_layernorm, sec_cross_entropy, sec_denoise_step, sec_device_to_device_copy):
        try:
            sec()
        except Exception as e:  # e.g. out of memory while making inputs: skip the section
            print(f"  section {sec.__name__} failed: {type(e).__name__}: {str(e)[:300]}", file=sys.stderr)
        try:
            section_done()
        except Exception:
            pass

    print(f"done: {len(b.rows)} rows in {time.monotonic() - b.t0:.1f} s", file=sys.stderr)
    b.save()
    json.dump(b.rows, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
