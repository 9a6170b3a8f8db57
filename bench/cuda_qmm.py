"""Our CUDA quantized matmul for 1-64 rows (src/kernels/cuda_qmm.cu, weights
repacked at load) against MLX's quantized_matmul, the widened path
(dequantize, then a dense matmul) and our matrix-vector kernel (qmv.cu), on
the matrices of the models we benchmark, through MLX's Python API with its
CUDA runtime (mlx[cuda13]).

    python bench/cuda_qmm.py check              # ours vs MLX's op, f16 and bf16, groups 32/64/128
    python bench/cuda_qmm.py time [--rows ...]  # microseconds and GB/s per product

As bench/cuda_qmv.py, each matrix is copied until the copies outgrow the L2
cache and one evaluation multiplies every copy; the best of five, per
product. The roofline is the weights' bytes over the card's copy bandwidth
(bytes read plus written by a 1 GiB copy). bench/cuda_qmm_cupy.py runs the
same kernels through CuPy (no MLX) and sweeps their block shapes.
"""

import argparse
import math
import os
import sys
import time

import mlx.core as mx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qmm_layout import qmm_config  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

SHAPES = [
    ("smollm2", "gate_up", 3072, 576),
    ("smollm2", "down", 576, 1536),
    ("llama-1b", "qkv", 3072, 2048),
    ("llama-1b", "gate_up", 16384, 2048),
    ("llama-1b", "down", 2048, 8192),
    ("llama-8b", "qkv", 6144, 4096),
    ("llama-8b", "o", 4096, 4096),
    ("llama-8b", "gate_up", 28672, 4096),
    ("llama-8b", "down", 4096, 14336),
]


def kernels(src):
    rd = lambda f: open(os.path.join(src, f)).read()
    header = rd("cuda_qmm_header.cuh")
    return {
        "qmm": mx.fast.cuda_kernel(name="mlx_serving_qmm", input_names=["x", "w", "sb"], output_names=["y"], source=rd("cuda_qmm.cu"), header=header),
        "deq": mx.fast.cuda_kernel(name="mlx_serving_qmm_dequantize", input_names=["w", "sb"], output_names=["y"], source=rd("cuda_qmm_dequantize.cu"), header=header),
        "qmv": mx.fast.cuda_kernel(name="mlx_serving_qmv", input_names=["x", "w", "scales", "biases"], output_names=["y"], source=rd("qmv.cu"), header=rd("qmv_header.cuh")),
    }


def pack(w, scales, biases, gs):
    """MLX's 4-bit affine form to cuda_qmm.cu's, by MLX ops (as src/kernels/cuda_qmm.rs)."""
    n = w.shape[0]
    codes = (w[..., None] >> (4 * mx.arange(8, dtype=mx.uint32))) & 15
    k = codes.shape[1] * 8
    q = codes.reshape(n // 16, 2, 8, k // 64, 4, 4, 2, 2).transpose(0, 3, 2, 4, 5, 7, 6, 1).reshape(-1, 8)
    packed = (q << (4 * mx.arange(8, dtype=mx.uint32))).sum(-1).astype(mx.uint32).reshape(n, k // 8)
    g = k // gs
    sb = mx.stack([scales, biases], -1).reshape(n // 16, 2, 8, g, 2).transpose(0, 3, 2, 1, 4).reshape(n, 2 * g)
    return packed, sb


def qmm(K, x, w, sb, gs, cfg=None):
    rows, k = x.shape
    n = w.shape[0]
    nt, wn, wk, split = cfg or qmm_config(n, k, rows)
    blocks = math.ceil(n // 16 / (nt * wn))
    threads = 32 * wn * wk
    y = K["qmm"](
        inputs=[x, w, sb],
        template=[("T", x.dtype), ("GS", gs), ("MT", (rows + 7) // 8), ("NT", nt), ("WN", wn), ("WK", wk), ("SPLIT", split)],
        grid=(blocks * threads, split, 1),
        threadgroup=(threads, 1, 1),
        output_shapes=[(split, rows, n) if split > 1 else (rows, n)],
        output_dtypes=[mx.float32 if split > 1 else x.dtype],
    )[0]
    return y.sum(0).astype(x.dtype) if split > 1 else y


def dequantized(K, w, sb, gs, dtype):
    n, k = w.shape[0], w.shape[1] * 8
    words = n // 16 * (k // 64) * 32
    return K["deq"](inputs=[w, sb], template=[("T", dtype), ("GS", gs)], grid=(math.ceil(words / 256) * 256, 1, 1), threadgroup=(256, 1, 1),
                    output_shapes=[(n, k)], output_dtypes=[dtype])[0]


def policy_lanes(n, k, bits=4):
    chunks = k * bits // 128
    lanes = 1 << (min(max(chunks // 4, 8), 32).bit_length() - 1)
    while lanes < 32 and n * lanes // 32 < 4096 and lanes * 2 <= chunks:
        lanes *= 2
    return lanes


def qmv(K, x, w, s, b, gs):
    rows, k = x.shape
    n = w.shape[0]
    lanes = policy_lanes(n, k)
    return K["qmv"](inputs=[x, w, s, b], template=[("T", x.dtype), ("BITS", 4), ("GS", gs), ("M", rows), ("LANES", lanes)],
                    grid=((n * lanes + 127) // 128 * 128, 1, 1), threadgroup=(128, 1, 1), output_shapes=[(rows, n)], output_dtypes=[x.dtype])[0]


def relative(got, want):
    got, want = got.astype(mx.float32), want.astype(mx.float32)
    return (mx.sqrt(((got - want) ** 2).sum()) / mx.sqrt((want**2).sum())).item()


def check(K, a):
    mx.random.seed(a.seed)
    fails = 0
    cases = []
    for dtype in [mx.float16, mx.bfloat16]:
        for gs in [32, 64, 128]:
            cases.append((576, 1536, gs, dtype, [1, 2, 7, 8, 9, 33, 64]))
            cases.append((4096, 4096, gs, dtype, [1, 3, 16, 40, 64]))
    cases.append((4096, 14336, 32, mx.float16, list(range(1, 65))))
    cases.append((28672, 4096, 32, mx.bfloat16, [4, 64]))
    for n, k, gs, dtype, row_counts in cases:
        wf = mx.random.normal((n, k)) * 0.02
        w, s, b = mx.quantize(wf, group_size=gs, bits=4)
        s, b = s.astype(dtype), b.astype(dtype)
        pw, sb = pack(w, s, b, gs)
        mx.eval(pw, sb)
        dense = mx.dequantize(w, s, b, group_size=gs, bits=4)
        ours_dense = dequantized(K, pw, sb, gs, dtype)
        derr = mx.abs(ours_dense.astype(mx.float32) - dense.astype(mx.float32)).max().item() / mx.abs(dense.astype(mx.float32)).max().item()
        if not derr < 1e-3:
            fails += 1
            print(f"FAIL dequantize {n}x{k} g{gs} {dtype}: {derr:.2e}")
        worst = 0.0
        for rows in row_counts:
            x = mx.random.normal((rows, k)).astype(dtype)
            got = qmm(K, x, pw, sb, gs)
            want = mx.quantized_matmul(x, w, s, b, transpose=True, group_size=gs, bits=4)
            ref = x.astype(mx.float32) @ dense.astype(mx.float32).T
            e_ours, e_mlx = relative(got, ref), relative(want, ref)
            written = mx.all(mx.isfinite(got)).item()
            tol = 2e-3 if dtype == mx.float16 else 1e-2
            ok = written and e_ours < tol
            fails += not ok
            worst = max(worst, e_ours)
            if not ok or rows in (1, 64):
                print(f"{n:>6}x{k:<6} {str(dtype):>14} g{gs:<4} {rows:>3} rows: ours {e_ours:.2e}, MLX's op {e_mlx:.2e} (vs f32 of the dequantized matrix){'' if ok else '  FAIL'}", flush=True)
        print(f"{n:>6}x{k:<6} {str(dtype):>14} g{gs:<4} rows {row_counts[0]}..{row_counts[-1]}: worst {worst:.2e}; dequantize {derr:.1e}", flush=True)
    print(f"check: {'all passed' if not fails else f'{fails} FAILED'}")
    return fails


def timed(fn, copies, repeats=5):
    mx.eval([fn(c) for c in copies])  # compile and warm
    best = float("inf")
    for _ in range(repeats):
        mx.synchronize()
        t = time.perf_counter()
        mx.eval([fn(c) for c in copies])
        mx.synchronize()
        best = min(best, time.perf_counter() - t)
    return best / len(copies)


def copy_bandwidth():
    a = mx.zeros((1 << 28,), dtype=mx.float32) + 1
    mx.eval(a)
    t = timed(lambda c: c + 1, [a] * 8)
    return 2 * a.nbytes / t / 1e9


def time_all(K, a):
    mx.random.seed(a.seed)
    dtype = getattr(mx, a.dtype)
    bw = copy_bandwidth()
    print(f"device: {mx.default_device()}, {a.dtype}, copy bandwidth {bw:.0f} GB/s (read + write)")
    table = []
    for model, name, n, k in SHAPES:
        if a.only and name not in a.only and model not in a.only:
            continue
        gs = 32
        wf = mx.random.normal((n, k)) * 0.02
        w, s, b = mx.quantize(wf, group_size=gs, bits=4)
        s, b = s.astype(dtype), b.astype(dtype)
        pw, sb = pack(w, s, b, gs)
        mx.eval(w, s, b, pw, sb)
        del wf
        size = pw.nbytes + sb.nbytes
        # Past the L2, and enough products that an evaluation's fixed cost is small.
        count = max(16, min(2000, int(1e9 // size)))
        copies = [(w + 0, s + 0, b + 0, pw + 0, sb + 0) for _ in range(count)]
        mx.eval(copies)
        for rows in a.rows:
            x = mx.random.normal((rows, k)).astype(dtype)
            t_ours = timed(lambda c: qmm(K, x, c[3], c[4], gs), copies)
            t_mlx = timed(lambda c: mx.quantized_matmul(x, c[0], c[1], c[2], transpose=True, group_size=gs, bits=4), copies)
            t_wide = timed(lambda c: x @ mx.dequantize(c[0], c[1], c[2], group_size=gs, bits=4).T, copies)
            t_qmv = timed(lambda c: qmv(K, x, c[0], c[1], c[2], gs), copies) if rows <= 7 else float("nan")
            roof = size / (bw * 1e9)
            table.append((model, name, n, k, rows, t_ours, t_mlx, t_wide, t_qmv, roof, size))
            print(f"{model} {name} {n}x{k} rows {rows}: ours {t_ours * 1e6:.1f} us ({size / t_ours / 1e9:.0f} GB/s, {roof / t_ours:.0%} of roofline), MLX qmm {t_mlx * 1e6:.1f}, widened {t_wide * 1e6:.1f}, qmv {t_qmv * 1e6:.1f}", flush=True)
        del copies
    print()
    print("| model | matrix | N x K | rows | ours us | ours GB/s | of roofline | MLX quantized_matmul us | widened (dequantize + matmul) us | our qmv us | ours vs MLX | ours vs widened |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for model, name, n, k, rows, t, tm, tw, tq, roof, size in table:
        print(f"| {model} | {name} | {n} x {k} | {rows} | {t * 1e6:.1f} | {size / t / 1e9:.0f} | {roof / t:.0%} | {tm * 1e6:.1f} | {tw * 1e6:.1f} | {tq * 1e6:.1f} | {tm / t:.2f}x | {tw / t:.2f}x |")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["check", "time"])
    p.add_argument("--kernels", default=os.path.join(ROOT, "src", "kernels"))
    p.add_argument("--qmv", default=None, help="directory of qmv.cu (default: --kernels)")
    p.add_argument("--rows", nargs="*", type=int, default=[1, 2, 4, 8, 16, 32, 64])
    p.add_argument("--only", nargs="*", default=None)
    p.add_argument("--dtype", default="float16")
    p.add_argument("--seed", type=int, default=int(time.time()))
    a = p.parse_args()
    K = kernels(a.kernels)
    if a.qmv:
        rd = lambda f: open(os.path.join(a.qmv, f)).read()
        K["qmv"] = mx.fast.cuda_kernel(name="mlx_serving_qmv", input_names=["x", "w", "scales", "biases"], output_names=["y"], source=rd("qmv.cu"), header=rd("qmv_header.cuh"))
    print(f"seed {a.seed}, {mx.default_device()}")
    if a.mode == "check":
        sys.exit(1 if check(K, a) else 0)
    time_all(K, a)


if __name__ == "__main__":
    main()
