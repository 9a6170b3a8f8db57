"""Writes a llama-architecture GGUF of a real model's shape with random Q4_1
weights and another GGUF's tokenizer, for speed comparisons where the real
weights are too large to fetch or carry (llama.cpp, mlx-lm through
bench/convert_gguf.py, and this engine all read the same file). The text it
generates is noise; every step costs what the real model's would.

    python scripts/random_gguf.py out.gguf --shape llama-3.2-1b --tokenizer models/SmolLM2-135M-Instruct.Q4_1.gguf

Needs only numpy. Deterministic for a given --seed.
"""

import argparse
import struct
from pathlib import Path

import numpy as np

# hidden, layers, heads, kv heads, MLP width, RoPE base (vocabulary: the tokenizer's).
SHAPES = {
    "llama-3.2-1b": (2048, 16, 32, 8, 8192, 500000.0),
    "llama-3.2-3b": (3072, 28, 24, 8, 8192, 500000.0),
    "llama-3.1-8b": (4096, 32, 32, 8, 14336, 500000.0),
}

# GGUF value types and tensor types used here.
U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)
SCALAR = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f", BOOL: "<?", U64: "<Q", I64: "<q", F64: "<d"}
GGML_F32, GGML_Q4_1 = 0, 3
ALIGN = 32


class Reader:
    def __init__(self, data: bytes):
        self.data, self.at = data, 0

    def take(self, fmt):
        (v,) = struct.unpack_from(fmt, self.data, self.at)
        self.at += struct.calcsize(fmt)
        return v

    def string(self):
        n = self.take("<Q")
        s = self.data[self.at : self.at + n]
        self.at += n
        return s

    def value(self, kind):
        if kind == STRING:
            return self.string()
        if kind == ARRAY:
            inner, n = self.take("<I"), self.take("<Q")
            return (inner, [self.value(inner) for _ in range(n)])
        return self.take(SCALAR[kind])


def read_metadata(path: Path):
    """The (key, type, value) entries of a GGUF's metadata, in file order."""
    with open(path, "rb") as f:
        head = f.read(1 << 26)  # the metadata (a tokenizer's vocabulary and merges) fits in 64 MiB
    r = Reader(head)
    if head[:4] != b"GGUF":
        raise SystemExit(f"{path}: not a GGUF file")
    r.at = 4
    version, _tensors, kvs = r.take("<I"), r.take("<Q"), r.take("<Q")
    if version < 2:
        raise SystemExit(f"{path}: GGUF version {version} is not supported")
    out = []
    for _ in range(kvs):
        key = r.string().decode()
        kind = r.take("<I")
        out.append((key, kind, r.value(kind)))
    return out


def put_value(out: bytearray, kind, value):
    if kind == STRING:
        b = value if isinstance(value, bytes) else value.encode()
        out += struct.pack("<Q", len(b)) + b
    elif kind == ARRAY:
        inner, items = value
        out += struct.pack("<IQ", inner, len(items))
        if inner in SCALAR:
            out += np.asarray(items, dtype=np.dtype(SCALAR[inner])).tobytes()
        else:
            for item in items:
                put_value(out, inner, item)
    else:
        out += struct.pack(SCALAR[kind], value)


def q4_1_blocks(rng, rows: int, cols: int) -> bytes:
    """Random Q4_1 blocks: per 32 weights an f16 scale d and minimum m, then
    16 bytes of nibbles. Weights spread over [-7.5d, 7.5d] with d ~ 0.0045
    (a standard deviation of ~0.02, as initialisations use)."""
    blocks = rows * cols // 32
    d = (0.0045 * rng.uniform(0.8, 1.2, blocks)).astype(np.float16)
    m = (-7.5 * d.astype(np.float32)).astype(np.float16)
    qs = rng.integers(0, 256, size=(blocks, 16), dtype=np.uint8)
    out = np.empty((blocks, 20), dtype=np.uint8)
    out[:, 0:2] = d.view(np.uint8).reshape(blocks, 2)
    out[:, 2:4] = m.view(np.uint8).reshape(blocks, 2)
    out[:, 4:] = qs
    return out.tobytes()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--shape", choices=sorted(SHAPES), default="llama-3.2-1b")
    ap.add_argument("--tokenizer", type=Path, required=True, help="a GGUF whose tokenizer.* metadata is copied")
    ap.add_argument("--context", type=int, default=8192)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    hidden, layers, heads, kv_heads, ffn, rope_base = SHAPES[args.shape]
    head_dim = hidden // heads

    tokenizer = [(k, t, v) for k, t, v in read_metadata(args.tokenizer) if k.startswith("tokenizer.")]
    vocab = next(len(v[1]) for k, t, v in tokenizer if k == "tokenizer.ggml.tokens")
    meta = [
        ("general.architecture", STRING, "llama"),
        ("general.name", STRING, f"random {args.shape} (seed {args.seed})"),
        ("general.file_type", U32, 3),  # MOSTLY_Q4_1
        ("general.alignment", U32, ALIGN),
        ("llama.context_length", U32, args.context),
        ("llama.embedding_length", U32, hidden),
        ("llama.block_count", U32, layers),
        ("llama.feed_forward_length", U32, ffn),
        ("llama.attention.head_count", U32, heads),
        ("llama.attention.head_count_kv", U32, kv_heads),
        ("llama.attention.layer_norm_rms_epsilon", F32, 1e-5),
        ("llama.rope.freq_base", F32, rope_base),
        ("llama.rope.dimension_count", U32, head_dim),
        ("llama.vocab_size", U32, vocab),
    ] + tokenizer

    # Tensors as (name, GGUF dims (columns first), type); the output projection is tied to the embedding.
    tensors = [("token_embd.weight", (hidden, vocab), GGML_Q4_1)]
    for i in range(layers):
        p = f"blk.{i}"
        tensors += [
            (f"{p}.attn_norm.weight", (hidden,), GGML_F32),
            (f"{p}.attn_q.weight", (hidden, heads * head_dim), GGML_Q4_1),
            (f"{p}.attn_k.weight", (hidden, kv_heads * head_dim), GGML_Q4_1),
            (f"{p}.attn_v.weight", (hidden, kv_heads * head_dim), GGML_Q4_1),
            (f"{p}.attn_output.weight", (heads * head_dim, hidden), GGML_Q4_1),
            (f"{p}.ffn_norm.weight", (hidden,), GGML_F32),
            (f"{p}.ffn_gate.weight", (hidden, ffn), GGML_Q4_1),
            (f"{p}.ffn_up.weight", (hidden, ffn), GGML_Q4_1),
            (f"{p}.ffn_down.weight", (ffn, hidden), GGML_Q4_1),
        ]
    tensors.append(("output_norm.weight", (hidden,), GGML_F32))

    def nbytes(dims, kind):
        n = int(np.prod(dims))
        return n * 4 if kind == GGML_F32 else n // 32 * 20

    head = bytearray(b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(meta)))
    for key, kind, value in meta:
        put_value(head, STRING, key)
        head += struct.pack("<I", kind)
        put_value(head, kind, value)
    offset = 0
    for name, dims, kind in tensors:
        put_value(head, STRING, name)
        head += struct.pack("<I", len(dims)) + struct.pack(f"<{len(dims)}Q", *dims) + struct.pack("<IQ", kind, offset)
        offset += -(-nbytes(dims, kind) // ALIGN) * ALIGN
    head += bytes(-len(head) % ALIGN)

    rng = np.random.default_rng(args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "wb") as f:
        f.write(head)
        for name, dims, kind in tensors:
            if kind == GGML_F32:
                data = np.ones(dims, dtype=np.float32).tobytes()
            else:
                data = q4_1_blocks(rng, dims[1], dims[0])
            f.write(data + bytes(-len(data) % ALIGN))
    params = sum(int(np.prod(d)) for _, d, _ in tensors)
    print(f"{args.out}: {args.shape}, {params / 1e9:.2f}B parameters, vocabulary {vocab}, {args.out.stat().st_size / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
