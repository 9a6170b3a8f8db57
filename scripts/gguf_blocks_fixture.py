#!/usr/bin/env python3
"""Makes src/model/load/testdata/blocks.gguf: for every GGUF block type our
loader reads, a small tensor of random blocks (`<TYPE>`) and what PyPI's `gguf`
package (llama.cpp's own Python reader) dequantizes it to (`<TYPE>.expected`,
F32). The Rust test `blocks_match_the_gguf_package` checks our reference
dequantizer against it, so CI needs no Python.

    python3 -m venv /tmp/gguf-venv && /tmp/gguf-venv/bin/pip install gguf numpy
    /tmp/gguf-venv/bin/python scripts/gguf_blocks_fixture.py
"""
import os
import sys

import numpy as np
from gguf import GGUFWriter, GGMLQuantizationType as T, GGML_QUANT_SIZES
from gguf.quants import dequantize

SEED = 20261126
ROWS, COLS = 2, 256
# Byte offsets of the f16 scale fields in each block; every other byte is random.
HALVES = {
    T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0],
    T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
}


def main() -> None:
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), '..', 'src', 'model', 'load', 'testdata', 'blocks.gguf')
    rng = np.random.default_rng(SEED)
    w = GGUFWriter(out, 'blocks-fixture')
    w.add_string('fixture.made_by', f'scripts/gguf_blocks_fixture.py, gguf {getattr(__import__("gguf"), "__version__", "?")}, seed {SEED}')
    for qtype, halves in HALVES.items():
        block, size = GGML_QUANT_SIZES[qtype]
        raw = rng.integers(0, 256, size=(ROWS, COLS // block, size), dtype=np.uint8)
        for at in halves:
            d = rng.uniform(-0.05, 0.05, size=(ROWS, COLS // block)).astype(np.float16)
            raw[:, :, at:at + 2] = d.view(np.uint8).reshape(ROWS, COLS // block, 2)
        raw = raw.reshape(ROWS, COLS // block * size)
        w.add_tensor(qtype.name, raw, raw_dtype=qtype)
        w.add_tensor(qtype.name + '.expected', dequantize(raw, qtype).astype(np.float32))
    dense = rng.normal(0, 1, size=(ROWS, COLS)).astype(np.float32)
    w.add_tensor('F16', dense.astype(np.float16))
    w.add_tensor('F16.expected', dense.astype(np.float16).astype(np.float32))
    bf16 = (dense.view(np.uint32) >> 16).astype(np.uint16)
    w.add_tensor('BF16', bf16.view(np.uint8).reshape(ROWS, COLS * 2), raw_dtype=T.BF16)
    w.add_tensor('BF16.expected', dequantize(bf16.view(np.uint8).reshape(ROWS, COLS * 2), T.BF16).astype(np.float32))
    w.add_tensor('F32', dense)
    w.add_tensor('F32.expected', dense)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(out, os.path.getsize(out), 'bytes')


if __name__ == '__main__':
    main()
