"""Our CUDA matrix-vector kernel for quantized weights (src/kernels/qmv.cu)
against MLX's quantized_matmul, on the matrices of the models we benchmark,
through MLX's Python API with its CUDA runtime (mlx[cuda13]).

    python bench/cuda_qmv.py                      # the kernel in src/kernels
    python bench/cuda_qmv.py --source DIR ...     # other versions of it (qmv.cu + qmv_header.cuh)

Each matrix is copied until the copies outgrow the card's L2 cache, and one
graph multiplies every copy, so the figure is the weights' streaming rate
(GB/s of codes, scales and biases), not a cached one. Small matrices measure
the launch more than the kernel (and a Python call of a custom kernel costs
more than one of MLX's op): the model's own A/B (MLX_SERVING_CUDA_QMV=0|1,
bench/ab.cjs) is the judge there. Prints a table and the largest difference
from MLX's result.
"""

import argparse
import os
import time

import mlx.core as mx

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

# (model, matrix, out N, in K, bits, group size): the decode step's matrices.
SHAPES = [
    ("qwen2.5-0.5b", "qkv", 1152, 896, 4, 32),
    ("qwen2.5-0.5b", "gate_up", 9728, 896, 4, 32),
    ("qwen2.5-0.5b", "down", 896, 4864, 4, 32),
    ("qwen2.5-0.5b", "output", 151936, 896, 8, 32),
    ("llama-1b", "qkv", 3072, 2048, 4, 32),
    ("llama-1b", "o", 2048, 2048, 4, 32),
    ("llama-1b", "gate_up", 16384, 2048, 4, 32),
    ("llama-1b", "down", 2048, 8192, 4, 32),
    ("llama-8b", "qkv", 6144, 4096, 4, 32),
    ("llama-8b", "o", 4096, 4096, 4, 32),
    ("llama-8b", "gate_up", 28672, 4096, 4, 32),
    ("llama-8b", "down", 4096, 14336, 4, 32),
    ("llama-8b", "down-g64", 4096, 14336, 4, 64),
    ("llama-8b", "down-8bit", 4096, 14336, 8, 32),
]


def load(source):
    with open(os.path.join(source, "qmv.cu")) as f:
        body = f.read()
    with open(os.path.join(source, "qmv_header.cuh")) as f:
        header = f.read()
    name = "qmv_" + os.path.basename(os.path.normpath(source)).replace("-", "_")
    # A version without LANES has a warp (32 lanes) per column.
    lanes = None if "LANES" in body else [32]
    return lanes, mx.fast.cuda_kernel(name=name, input_names=["x", "w", "scales", "biases"], output_names=["y"], source=body, header=header)


def policy_lanes(n, k, bits):
    """src/kernels/cuda.rs's lanes(): threads per output column."""
    chunks = k * bits // 128
    lanes = 1 << (min(max(chunks // 4, 8), 32).bit_length() - 1)
    while lanes < 32 and n * lanes // 32 < 4096 and lanes * 2 <= chunks:
        lanes *= 2
    return lanes


def ours(kernel, x, w, s, b, bits, gs, lanes):
    rows, n = x.shape[0], w.shape[0]
    lanes = lanes or policy_lanes(n, x.shape[1], bits)
    return kernel(
        inputs=[x, w, s, b],
        template=[("T", x.dtype), ("BITS", bits), ("GS", gs), ("M", rows), ("LANES", lanes)],
        grid=((n * lanes + 127) // 128 * 128, 1, 1),
        threadgroup=(128, 1, 1),
        output_shapes=[(rows, n)],
        output_dtypes=[x.dtype],
    )[0]


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


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--source", nargs="*", default=[os.path.join(ROOT, "src", "kernels")])
    p.add_argument("--lanes", nargs="*", type=int, default=[0], help="threads per column; 0: the addon's rule")
    p.add_argument("--rows", nargs="*", type=int, default=[1, 4])
    p.add_argument("--dtype", default="float16")
    a = p.parse_args()
    dtype = getattr(mx, a.dtype)
    runs = []  # (label, kernel, lanes)
    for source in a.source:
        lanes, kernel = load(source)
        label = os.path.basename(os.path.normpath(source))
        runs += [(f"{label} L{l or 'auto'}", kernel, l) for l in lanes or a.lanes]
    print(f"device: {mx.default_device()}, {a.dtype}")
    print("| model | matrix | N x K | bits/g | rows | MLX us | MLX GB/s | " + " | ".join(f"{r[0]} GB/s" for r in runs) + " | max rel diff |")
    print("|" + "---|" * (7 + len(runs) + 1))
    for model, matrix, n, k, bits, gs in SHAPES:
        w = mx.random.normal((n, k)).astype(dtype) * 0.02
        qw, s, b = mx.quantize(w, group_size=gs, bits=bits)
        mx.eval(qw, s, b)
        size = qw.nbytes + s.nbytes + b.nbytes
        # Well past the L2 cache, and enough products that a graph's fixed cost is small.
        count = max(8, min(2000, int(1e9 // size)))
        copies = [(qw + 0, s + 0, b + 0) for _ in range(count)]
        mx.eval(copies)
        del w
        for rows in a.rows:
            x = mx.random.normal((rows, k)).astype(dtype)
            mlx_s = timed(lambda c: mx.quantized_matmul(x, c[0], c[1], c[2], transpose=True, group_size=gs, bits=bits), copies)
            ref = mx.quantized_matmul(x, qw, s, b, transpose=True, group_size=gs, bits=bits).astype(mx.float32)
            cells, worst = [], 0.0
            for _, kernel, lanes in runs:
                t = timed(lambda c: ours(kernel, x, c[0], c[1], c[2], bits, gs, lanes), copies)
                got = ours(kernel, x, qw, s, b, bits, gs, lanes).astype(mx.float32)
                worst = max(worst, (mx.abs(got - ref).max() / mx.abs(ref).max()).item())
                cells.append(f"{size / t / 1e9:.0f} ({mlx_s / t:.2f}x)")
            print(f"| {model} | {matrix} | {n} x {k} | {bits}/{gs} | {rows} | {mlx_s * 1e6:.1f} | {size / mlx_s / 1e9:.0f} | " + " | ".join(cells) + f" | {worst:.1e} |", flush=True)
        del copies


if __name__ == "__main__":
    main()
