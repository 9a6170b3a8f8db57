"""Our CUDA quantized matmul (src/kernels/cuda_qmm.cu) on a card with CuPy and no
MLX: the kernel bodies wrapped as MLX's cuda_kernel wraps them, checked
against a float64 reference and timed against our matrix-vector kernel
(qmv.cu), the widened path (cuda_qmm_dequantize.cu + cuBLAS) and the card's copy
bandwidth. bench/cuda_qmm.py is the same through MLX (its quantized_matmul
beside ours).

    python bench/cuda_qmm_cupy.py check            # correctness, f16 and bf16, groups 32/64/128
    python bench/cuda_qmm_cupy.py sweep            # every block shape on the benchmark's matrices
    python bench/cuda_qmm_cupy.py time             # the addon's rule (cuda_qmm.rs) against the others
    ... --kernels DIR                              # kernel sources (default src/kernels)

Timings replay a CUDA graph of one product per weight copy, with enough
copies to leave the L2 cache behind; the median of several replays, in
microseconds per product, and GB/s of weights (codes, scales and biases).
"""

import argparse
import math
import os
import statistics
import sys
import time

import cupy as cp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qmm_layout  # noqa: E402
from qmm_layout import qmm_config  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

# (model, matrix, N, K) of the decode step's 4-bit matrices.
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

PREAMBLES = [
    "#include <cuda/std/cstdint>\nusing cuda::std::uint32_t;\nusing cuda::std::uint64_t;\n",
    "#include <cstdint>\n",
    "typedef unsigned int uint32_t;\ntypedef unsigned long long uint64_t;\n",
]
CTYPE = {"f16": "__half", "bf16": "__nv_bfloat16", "f32": "float", "u32": "uint32_t"}


class Kernel:
    """One MLX custom-kernel body, compiled per constant set as MLX would
    (the signature MLX writes; shapes as ints here instead of MLX's Shape)."""

    def __init__(self, name, body, header, inputs, outputs):
        self.name, self.body, self.header, self.inputs, self.outputs = name, body, header, inputs, outputs
        self.cache = {}

    def source(self, preamble, types, consts):
        fn = f"{self.name}_{abs(hash((tuple(types.items()), tuple(consts))))}"
        params, shapes = [], []
        for n in self.inputs:
            params.append(f"const {CTYPE[types[n]]}* {n}")
            if f"{n}_shape" in self.body:
                params += [f"int {n}_shape0", f"int {n}_shape1"]
                shapes.append(f"  const int {n}_shape[2] = {{{n}_shape0, {n}_shape1}};\n")
        params += [f"{CTYPE[types[n]]}* {n}" for n in self.outputs]
        lines = [f"  using {k} = {CTYPE[v]};\n" if isinstance(v, str) else f"  constexpr int {k} = {v};\n" for k, v in consts]
        src = preamble + self.header + f'\nextern "C" __global__ void {fn}(' + ", ".join(params) + ") {\n"
        return fn, src + "".join(shapes) + "".join(lines) + self.body + "\n}\n"

    def get(self, types, consts):
        key = (tuple(sorted(types.items())), tuple(consts))
        if key not in self.cache:
            err = None
            for pre in PREAMBLES:
                fn, src = self.source(pre, types, consts)
                try:
                    k = cp.RawKernel(src, fn, options=("--std=c++17",))
                    k.compile()
                    self.cache[key] = k
                    break
                except Exception as e:  # the next preamble
                    err = e
            else:
                raise RuntimeError(f"{self.name} {consts}: {err}")
        return self.cache[key]

    def __call__(self, types, consts, grid, block, arrays):
        args = []
        for n in self.inputs:
            a = arrays[n]
            args.append(a)
            if f"{n}_shape" in self.body:
                args += [np.int32(a.shape[0]), np.int32(a.shape[1])]
        args += [arrays[n] for n in self.outputs]
        self.get(types, consts)(grid, block, tuple(args))


def load_kernels(src):
    rd = lambda f: open(os.path.join(src, f)).read()
    qmm_h = rd("cuda_qmm_header.cuh")
    return {
        "qmm": Kernel("qmm", rd("cuda_qmm.cu"), qmm_h, ["x", "w", "sb"], ["y"]),
        "deq": Kernel("qmm_dequantize", rd("cuda_qmm_dequantize.cu"), qmm_h, ["w", "sb"], ["y"]),
        "qmv": Kernel("qmv", rd("qmv.cu"), rd("qmv_header.cuh"), ["x", "w", "scales", "biases"], ["y"]),
    }


# --- data ---------------------------------------------------------------------


def to_bf16_bits(a):
    u = cp.asarray(a, dtype=cp.float32).view(cp.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(cp.uint16)


def from_bits(a, dtype):
    if dtype == "f16":
        return a.astype(cp.float64)
    return (a.astype(cp.uint32) << 16).view(cp.float32).astype(cp.float64)


def as_dtype(a, dtype):
    return a.astype(cp.float16) if dtype == "f16" else to_bf16_bits(a)


class Matrix:
    """A random 4-bit matrix of the shape, in MLX's layout and ours."""

    def __init__(self, n, k, gs, dtype, rng):
        self.n, self.k, self.gs, self.dtype = n, k, gs, dtype
        codes = cp.asarray(rng.integers(0, 16, (n, k), dtype=np.uint8))
        self.words = (codes.reshape(n, k // 8, 8).astype(cp.uint32) << (4 * cp.arange(8, dtype=cp.uint32))).sum(-1, dtype=cp.uint32)
        g = k // gs
        scales = cp.asarray(rng.uniform(0.004, 0.02, (n, g)).astype(np.float32))
        biases = -8 * scales + cp.asarray(rng.normal(0, 0.002, (n, g)).astype(np.float32))
        self.scales, self.biases = as_dtype(scales, dtype), as_dtype(biases, dtype)
        self.w, self.sb = qmm_layout.pack(self.words, self.scales, self.biases, gs, xp=cp)
        self.codes = codes

    def dense64(self):
        """W as cuda_qmm_dequantize.cu and MLX's dequantize make it: rounded once to the dtype."""
        s = from_bits(self.scales, self.dtype)
        b = from_bits(self.biases, self.dtype)
        q = self.codes.astype(cp.float64).reshape(self.n, self.k // self.gs, self.gs)
        w = (q * s[..., None] + b[..., None]).reshape(self.n, self.k)
        return from_bits(as_dtype(w, self.dtype), self.dtype)

    def nbytes(self):
        return self.w.nbytes + self.sb.nbytes


def run_qmm(K, x, m, cfg, dtype, out=None, partial=None):
    nt, wn, wk, split = cfg
    rows, k = x.shape
    n = m.n
    mt = (rows + 7) // 8
    blocks = math.ceil(n // 16 / (nt * wn))
    types = {"x": dtype, "w": "u32", "sb": dtype, "y": "f32" if split > 1 else dtype}
    consts = [("T", dtype), ("GS", m.gs), ("MT", mt), ("NT", nt), ("WN", wn), ("WK", wk), ("SPLIT", split)]
    npdt = cp.float16 if dtype == "f16" else cp.uint16
    if split == 1:
        y = out if out is not None else cp.empty((rows, n), npdt)
        K["qmm"](types, consts, (blocks, 1, 1), (32 * wn * wk, 1, 1), {"x": x, "w": m.w, "sb": m.sb, "y": y})
        return y
    p = partial if partial is not None else cp.empty((split, rows, n), cp.float32)
    K["qmm"](types, consts, (blocks, split, 1), (32 * wn * wk, 1, 1), {"x": x, "w": m.w, "sb": m.sb, "y": p})
    if dtype != "f16":
        raise ValueError("split sums are timed in f16 only")
    y = out if out is not None else cp.empty((rows, n), npdt)
    cp.copyto(y, cp.sum(p, axis=0), casting="unsafe")  # as the addon: MLX's sum, then the dtype
    return y


def run_dequant(K, m, dtype, out=None):
    n, k = m.n, m.k
    npdt = cp.float16 if dtype == "f16" else cp.uint16
    y = out if out is not None else cp.empty((n, k), npdt)
    words = n // 16 * (k // 64) * 32
    K["deq"]({"w": "u32", "sb": dtype, "y": dtype}, [("T", dtype), ("GS", m.gs)], (math.ceil(words / 256), 1, 1), (256, 1, 1), {"w": m.w, "sb": m.sb, "y": y})
    return y


def policy_lanes(n, k, bits=4):
    chunks = k * bits // 128
    lanes = 1 << (min(max(chunks // 4, 8), 32).bit_length() - 1)
    while lanes < 32 and n * lanes // 32 < 4096 and lanes * 2 <= chunks:
        lanes *= 2
    return lanes


def run_qmv(K, x, m, dtype, out=None):
    rows, k = x.shape
    lanes = policy_lanes(m.n, k)
    y = out if out is not None else cp.empty((rows, m.n), cp.float16)
    threads = (m.n * lanes + 127) // 128 * 128
    K["qmv"]({"x": dtype, "w": "u32", "scales": dtype, "biases": dtype, "y": dtype},
             [("T", dtype), ("BITS", 4), ("GS", m.gs), ("M", rows), ("LANES", lanes)],
             (threads // 128, 1, 1), (128, 1, 1), {"x": x, "w": m.words, "scales": m.scales, "biases": m.biases, "y": y})
    return y


def rel_err(got, want):
    return float(cp.linalg.norm(got - want) / cp.linalg.norm(want))


# --- correctness --------------------------------------------------------------


def check(K, a):
    rng = np.random.default_rng(a.seed)
    fails = 0
    cases = []
    for dtype in ["f16", "bf16"]:
        for gs in [32, 64, 128]:
            cases.append((576, 1536, gs, dtype, [1, 2, 3, 8, 9, 24, 33, 64]))
            cases.append((4096, 4096, gs, dtype, [1, 5, 16, 40, 64]))
    cases.append((2048, 576, 32, "f16", list(range(1, 65))))  # every row count
    cases.append((28672, 4096, 32, "f16", [2, 32, 64]))
    cases.append((4096, 14336, 32, "bf16", [7, 64]))
    configs = [(1, 1, 8, 1), (1, 1, 4, 1), (2, 1, 4, 1), (1, 4, 2, 1), (2, 2, 2, 1), (2, 4, 1, 1), (1, 2, 4, 2), (2, 4, 1, 4)]
    print(f"{'N x K':>13} {'dtype':>5} {'g':>4} {'rows':>5} {'config':>12} {'rel err':>9}  written")
    for n, k, gs, dtype, row_counts in cases:
        m = Matrix(n, k, gs, dtype, rng)
        w64 = m.dense64()
        deq = run_dequant(K, m, dtype)
        derr = float(cp.abs(from_bits(deq, dtype) - w64).max() / cp.abs(w64).max())
        if not derr < 1e-3:
            fails += 1
            print(f"FAIL dequantize {n}x{k} g{gs} {dtype}: {derr:.2e}")
        for rows in row_counts:
            cfgs = [qmm_config(n, k, rows)]
            if gs == 32 and ((n, k, dtype) == (576, 1536, "f16") or (n, k, rows) == (4096, 4096, 64)):
                cfgs += [c for c in configs if c != cfgs[0] and (dtype == "f16" or c[3] == 1)]
            for cfg in cfgs:
                xf = cp.asarray(rng.standard_normal((rows, k)).astype(np.float32))
                x = as_dtype(xf, dtype)
                want = from_bits(x, dtype) @ w64.T
                npdt = cp.float16 if dtype == "f16" else cp.uint16
                y = cp.full((rows, n), 0x7E00 if dtype == "f16" else 0x7FC0, cp.uint16).view(npdt)  # NaN
                run_qmm(K, x, m, cfg, dtype, out=y)
                got = from_bits(y, dtype)
                written = bool(cp.isfinite(got).all())
                err = rel_err(got, want) if written else float("nan")
                tol = 2e-3 if dtype == "f16" else 1e-2
                ok = written and err < tol
                fails += not ok
                if not ok or rows in (1, 64) and cfg == cfgs[0] or cfg != cfgs[0] and rows in (9, 64):
                    print(f"{n:>6}x{k:<6} {dtype:>5} {gs:>4} {rows:>5} {str(cfg):>12} {err:>9.2e}  {written}{'' if ok else '  FAIL'}", flush=True)
        if dtype == "f16" and gs == 32:
            for rows in [1, 4, 7]:
                x = as_dtype(cp.asarray(rng.standard_normal((rows, k)).astype(np.float32)), dtype)
                err = rel_err(run_qmv(K, x, m, dtype).astype(cp.float64), from_bits(x, dtype) @ w64.T)
                print(f"{n:>6}x{k:<6} qmv {rows} rows: {err:.2e}")
        del m
    print(f"check: {'all passed' if not fails else f'{fails} FAILED'}")
    return fails


# --- timing -------------------------------------------------------------------


def timed(launches, stream, reps=20):
    """Median microseconds per launch of a graph replaying `launches` (or, where
    capture fails, of the launches themselves)."""
    with stream:
        for f in launches:
            f()
    stream.synchronize()
    graph = None
    try:
        stream.begin_capture()
        with stream:
            for f in launches:
                f()
        graph = stream.end_capture()
        if hasattr(graph, "upload"):
            graph.upload(stream)
    except Exception:
        graph = None
        try:
            stream.end_capture()
        except Exception:
            pass
    e0, e1 = cp.cuda.Event(), cp.cuda.Event()
    times = []
    for _ in range(reps):
        e0.record(stream)
        if graph is not None:
            graph.launch(stream)
        else:
            with stream:
                for f in launches:
                    f()
        e1.record(stream)
        e1.synchronize()
        times.append(cp.cuda.get_elapsed_time(e0, e1) * 1000 / len(launches))
    return statistics.median(times), graph is not None


def copy_bandwidth(stream):
    size = 1 << 30
    a, b = cp.empty(size, cp.uint8), cp.empty(size, cp.uint8)
    a.fill(1)
    t, _ = timed([lambda: b.data.copy_from_device_async(a.data, size, stream)], stream, reps=10)
    del a, b
    return 2 * size / (t * 1e-6) / 1e9


def copies_of(m, l2_bytes):
    count = max(2, math.ceil(3 * l2_bytes / m.nbytes()))
    out = []
    for _ in range(count):
        c = Matrix.__new__(Matrix)
        c.__dict__.update(m.__dict__)
        c.w, c.sb = m.w.copy(), m.sb.copy()
        c.words, c.scales, c.biases = m.words.copy(), m.scales.copy(), m.biases.copy()
        out.append(c)
    return out


def sweep(K, a, rule_only=False):
    rng = np.random.default_rng(a.seed)
    stream = cp.cuda.Stream(non_blocking=True)
    dev = cp.cuda.Device()
    props = cp.cuda.runtime.getDeviceProperties(dev.id)
    l2 = props["l2CacheSize"]
    bw = copy_bandwidth(stream)
    print(f"device: {props['name'].decode()}, {props['multiProcessorCount']} SMs, L2 {l2 >> 20} MiB; copy {bw:.0f} GB/s (read + write)")
    configs = [(1, 1, 8, 1), (1, 1, 4, 1), (2, 1, 4, 1), (1, 2, 4, 1), (1, 4, 2, 1), (2, 2, 2, 1), (2, 4, 1, 1), (1, 4, 2, 2), (2, 4, 1, 4), (1, 8, 1, 4)]
    rows_list = a.rows
    summary = []
    for model, name, n, k in SHAPES:
        if a.only and name not in a.only and model not in a.only:
            continue
        m = Matrix(n, k, 32, "f16", rng)
        copies = copies_of(m, l2)
        wide = [run_dequant(K, c, "f16") for c in copies]
        size = m.nbytes()
        roof_us = size / (bw * 1e9) * 1e6
        for rows in rows_list:
            x = cp.asarray(rng.standard_normal((rows, k)).astype(np.float16))
            y = cp.empty((rows, n), cp.float16)
            res = {}
            rule = qmm_config(n, k, rows)
            cands = [rule] if rule_only else [rule] + [c for c in configs if c != rule]
            for cfg in cands:
                if (rows + 7) // 8 * cfg[0] > 16:
                    continue
                part = cp.empty((cfg[3], rows, n), cp.float32) if cfg[3] > 1 else None
                try:
                    res[cfg], _ = timed([lambda c=c, cfg=cfg: run_qmm(K, x, c, cfg, "f16", out=y, partial=part) for c in copies], stream)
                except Exception as e:
                    print(f"  {cfg}: {str(e)[:200]}")
            best = min(res, key=res.get)
            qmv = timed([lambda c=c: run_qmv(K, x, c, "f16", out=y) for c in copies], stream)[0] if rows <= 7 else float("nan")
            dw = cp.empty((n, k), cp.float16)
            widened = timed([lambda c=c: (run_dequant(K, c, "f16", out=dw), cp.matmul(x, dw.T, out=y)) for c in copies], stream)[0]
            gemm = timed([lambda wd=wd: cp.matmul(x, wd.T, out=y) for wd in wide], stream)[0]
            del dw
            row = (model, name, n, k, rows, res[rule], best, res[best], qmv, widened, gemm, roof_us, size)
            summary.append(row)
            others = " ".join(f"{c[0]}{c[1]}{c[2]}{c[3]}:{t:.1f}" for c, t in sorted(res.items()))
            print(f"{model} {name} {n}x{k} rows {rows}: rule {rule} {res[rule]:.1f} us, best {best} {res[best]:.1f}; qmv {qmv:.1f}, widened {widened:.1f} (GEMM alone {gemm:.1f}), roofline {roof_us:.1f} | {others}", flush=True)
        del copies, wide, m
        cp.get_default_memory_pool().free_all_blocks()
    print()
    print(f"| model | matrix | N x K | rows | ours (rule) us | GB/s | of copy BW | best config | best us | qmv us | widened us | GEMM alone us |")
    print("|---|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|")
    for model, name, n, k, rows, t_rule, best, t_best, qmv, widened, gemm, roof, size in summary:
        print(f"| {model} | {name} | {n} x {k} | {rows} | {t_rule:.1f} | {size / t_rule / 1e3:.0f} | {roof / t_rule:.0%} | {best} | {t_best:.1f} | {qmv:.1f} | {widened:.1f} | {gemm:.1f} |")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["check", "sweep", "time"])
    p.add_argument("--kernels", default=os.path.join(ROOT, "src", "kernels"))
    p.add_argument("--qmv", default=None, help="directory of qmv.cu (default: --kernels)")
    p.add_argument("--rows", nargs="*", type=int, default=[1, 2, 4, 8, 16, 32, 64])
    p.add_argument("--only", nargs="*", default=None, help="models or matrices to time")
    p.add_argument("--seed", type=int, default=int(time.time()))
    a = p.parse_args()
    K = load_kernels(a.kernels)
    if a.qmv:
        K["qmv"] = load_kernels(a.qmv)["qmv"] if os.path.exists(os.path.join(a.qmv, "cuda_qmm.cu")) else Kernel(
            "qmv", open(os.path.join(a.qmv, "qmv.cu")).read(), open(os.path.join(a.qmv, "qmv_header.cuh")).read(), ["x", "w", "scales", "biases"], ["y"])
    print(f"seed {a.seed}")
    if a.mode == "check":
        sys.exit(1 if check(K, a) else 0)
    sweep(K, a, rule_only=a.mode == "time")


if __name__ == "__main__":
    main()
