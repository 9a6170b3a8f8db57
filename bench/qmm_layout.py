"""The packed layout of src/kernels/cuda_qmm.cu in numpy: MLX's affine 4-bit form,
its repacking (as src/kernels/cuda_qmm.rs does with MLX ops at load), the float
reference, and a lane-by-lane model of the kernel's fragments that checks the
layout against the tensor cores' m16n8k16 fragment definition on the CPU:

    python bench/qmm_layout.py        # the self-check (no GPU needed)
"""

import numpy as np


def quantize(w, group_size, bits=4):
    """`w` [N, K] float to MLX's affine form: codes (uint32 [N, K * bits / 32],
    lowest bits first), scales and biases [N, K / group_size] (float32), with
    w ~ scale * code + bias."""
    n, k = w.shape
    g = w.reshape(n, k // group_size, group_size)
    lo, hi = g.min(-1), g.max(-1)
    levels = (1 << bits) - 1
    scale = np.where(hi > lo, (hi - lo) / levels, 1.0).astype(np.float32)
    codes = np.clip(np.rint((g - lo[..., None]) / scale[..., None]), 0, levels).astype(np.uint32).reshape(n, k)
    per = 32 // bits
    words = (codes.reshape(n, k // per, per) << (bits * np.arange(per, dtype=np.uint32))).sum(-1, dtype=np.uint32)
    return words, scale, lo.astype(np.float32)


def codes_of(words, bits=4, xp=np):
    """MLX's packed words back to codes [N, K] (`xp`: numpy or cupy)."""
    per = 32 // bits
    n = words.shape[0]
    return ((words[..., None] >> (bits * xp.arange(per, dtype=xp.uint32))) & ((1 << bits) - 1)).reshape(n, -1)


def dequantize(words, scales, biases, group_size, bits=4):
    q = codes_of(words, bits).astype(np.float64)
    n, k = q.shape
    return (q.reshape(n, k // group_size, group_size) * scales[..., None] + biases[..., None]).reshape(n, k)


def pack(words, scales, biases, group_size, xp=np):
    """MLX's 4-bit affine form to cuda_qmm.cu's: (w uint32 [N, K / 8], sb [N, 2 K / group_size]
    in the scales' dtype). `xp`: numpy or cupy."""
    n = words.shape[0]
    q = codes_of(words, xp=xp)
    k = q.shape[1]
    assert n % 16 == 0 and k % 64 == 0 and group_size in (32, 64, 128)
    # [tile, h, g, kt, t, j, p, e]: row 16 tile + 8 h + g, k = 64 kt + 16 t + 4 j + 2 p + e
    q = q.reshape(n // 16, 2, 8, k // 64, 4, 4, 2, 2)
    # [tile, kt, g, t, j, e, p, h]: nibble i = 4 e + 2 p + h of word j of lane 4 g + t
    q = q.transpose(0, 3, 2, 4, 5, 7, 6, 1).reshape(-1, 8).astype(xp.uint32)
    w = (q << (4 * xp.arange(8, dtype=xp.uint32))).sum(-1, dtype=xp.uint32).reshape(n, k // 8)
    groups = k // group_size
    sb = xp.stack([scales, biases], -1).reshape(n // 16, 2, 8, groups, 2).transpose(0, 3, 2, 1, 4)
    return w, xp.ascontiguousarray(sb).reshape(n, 2 * groups)


def simulate(x, w, sb, group_size):
    """The kernel's arithmetic lane by lane (float64): each lane's A and B
    registers as cuda_qmm.cu forms them, placed where PTX's m16n8k16 fragment
    layout says they belong, and multiplied as matrices."""
    m_rows, k = x.shape
    n = w.shape[0]
    kt_count, groups = k // 64, k // group_size
    words = w.reshape(n // 16, kt_count, 32, 4)
    sbt = sb.reshape(n // 16, groups, 8, 2, 2).astype(np.float64)
    mt_count = (m_rows + 7) // 8
    xs = np.concatenate([x, np.repeat(x[-1:], mt_count * 8 - m_rows, 0)]).astype(np.float64)
    y = np.zeros((mt_count * 8, n))
    for tile in range(n // 16):
        for kt in range(kt_count):
            for j in range(4):
                a = np.zeros((16, 16))
                b = np.zeros((16, mt_count * 8))
                for lane in range(32):
                    g, t = lane // 4, lane % 4
                    word = int(words[tile, kt, lane, j])
                    s = sbt[tile, (kt * 64 + 16 * t) // group_size, g]  # [h][scale, bias]
                    pair = lambda shift, h: [((word >> (shift + 16 * e)) & 15) * s[h, 0] + s[h, 1] for e in (0, 1)]
                    # a0: row g, k 2t..2t+1; a1: row g+8; a2: row g, k 2t+8..2t+9; a3: row g+8
                    a[g, 2 * t:2 * t + 2] = pair(0, 0)
                    a[g + 8, 2 * t:2 * t + 2] = pair(4, 1)
                    a[g, 2 * t + 8:2 * t + 10] = pair(8, 0)
                    a[g + 8, 2 * t + 8:2 * t + 10] = pair(12, 1)
                    c = kt * 64 + 16 * t + 4 * j
                    for mt in range(mt_count):
                        # b0: k 2t..2t+1 of column g; b1: k 2t+8..2t+9 (words 2j, 2j+1 of the lane's 16 x's)
                        b[2 * t:2 * t + 2, mt * 8 + g] = xs[mt * 8 + g, c:c + 2]
                        b[2 * t + 8:2 * t + 10, mt * 8 + g] = xs[mt * 8 + g, c + 2:c + 4]
                y[:, tile * 16:tile * 16 + 16] += (a @ b).T
    return y[:m_rows]


def unpack_dense(w, sb, group_size):
    """cuda_qmm_dequantize.cu's output, in float64."""
    n = w.shape[0]
    k = w.shape[1] * 8
    words = w.reshape(n // 16, k // 64, 8, 4, 4)  # [tile, kt, g, t, j]
    sbt = sb.reshape(n // 16, k // group_size, 8, 2, 2).astype(np.float64)
    out = np.zeros((n, k))
    for tile in range(n // 16):
        for kt in range(k // 64):
            for g in range(8):
                for t in range(4):
                    s = sbt[tile, (kt * 64 + 16 * t) // group_size, g]
                    for j in range(4):
                        word = int(words[tile, kt, g, t, j])
                        nib = [(word >> (4 * i)) & 15 for i in range(8)]
                        c = kt * 64 + 16 * t + 4 * j
                        for h in range(2):
                            row = tile * 16 + 8 * h + g
                            # nibble 4e + 2p + h is k = c + 2p + e
                            for p in range(2):
                                for e in range(2):
                                    out[row, c + 2 * p + e] = nib[4 * e + 2 * p + h] * s[h, 0] + s[h, 1]
    return out


def qmm_config(n, k, rows):
    """(NT, WN, WK, SPLIT) of cuda_qmm.cu for an N x K matrix and `rows` rows:
    src/kernels/cuda_qmm.rs's rule (keep in step)."""
    return (1, 1, 8, 1) if (rows + 7) // 8 <= 4 else (2, 1, 4, 1)


def main():
    rng = np.random.default_rng(1)
    for n, k, gs, rows in [(32, 128, 32, 3), (16, 256, 64, 9), (48, 128, 128, 17), (16, 64, 32, 1)]:
        wf = rng.standard_normal((n, k)).astype(np.float32)
        words, s, b = quantize(wf, gs)
        ref_w = dequantize(words, s, b, gs)
        assert np.abs(ref_w - wf).max() < 0.6, "quantization is coarse but bounded"
        w, sb = pack(words, s, b, gs)
        assert w.shape == words.shape and sb.shape == (n, 2 * k // gs)
        assert sorted(codes_of(w).ravel().tolist()) == sorted(codes_of(words).ravel().tolist())
        x = rng.standard_normal((rows, k))
        want = x @ ref_w.T
        got = simulate(x, w, sb, gs)
        err = np.abs(got - want).max() / np.abs(want).max()
        dense = unpack_dense(w, sb, gs)
        print(f"{n}x{k} g{gs} {rows} rows: fragments vs reference {err:.1e}, dequantized {np.abs(dense - ref_w).max():.1e}")
        assert err < 1e-12 and np.abs(dense - ref_w).max() < 1e-12
    print("layout ok")


if __name__ == "__main__":
    main()
