#!/usr/bin/env python3
"""Cross-checks our GGUF dequantization against llama.cpp's Python reader
(PyPI `gguf`) on a real file, and reports the error of each tensor's MLX
affine form against the GGUF's own dequantization.

    python3 -m venv /tmp/gguf-venv && /tmp/gguf-venv/bin/pip install gguf numpy
    cargo run --release --example gguf_dequant -- model.gguf /tmp/dq 3
    /tmp/gguf-venv/bin/python scripts/check_gguf_dequant.py model.gguf /tmp/dq
"""
import os
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize


def main() -> None:
    path, dump = sys.argv[1], sys.argv[2]
    reader = GGUFReader(path)
    failures = 0
    for t in reader.tensors:
        ours_path = os.path.join(dump, t.name + '.f32')
        if not os.path.exists(ours_path):
            continue
        theirs = dequantize(t.data, t.tensor_type).astype(np.float32).reshape(-1)
        ours = np.fromfile(ours_path, dtype='<f4')
        same = ours.shape == theirs.shape and np.array_equal(ours.view(np.uint32), theirs.view(np.uint32))
        failures += not same
        line = f'{t.name:32s} {t.tensor_type.name:5s} {ours.size:9d} values: ' + ('bitwise equal to gguf' if same else f'DIFFERS (max {np.max(np.abs(ours - theirs)):.3g})')
        affine_path = os.path.join(dump, t.name + '.affine.f32')
        if os.path.exists(affine_path):
            affine = np.fromfile(affine_path, dtype='<f4')
            err = np.abs(affine.astype(np.float64) - theirs)
            rel_rms = np.sqrt(np.sum(err ** 2) / max(np.sum(theirs.astype(np.float64) ** 2), 1e-300))
            line += f'; MLX affine form: max |err| {err.max():.3g} ({err.max() / max(np.abs(theirs).max(), 1e-300):.3%} of max |w|), relative RMS {rel_rms:.3%}'
        print(line)
    print('all bitwise equal' if failures == 0 else f'{failures} tensors differ')
    sys.exit(1 if failures else 0)


if __name__ == '__main__':
    main()
