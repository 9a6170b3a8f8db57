// Quantized matrix times up to 64 rows on CUDA's tensor cores:
// y[m, n] = sum_k x[m, k] * W[n, k], W 4-bit affine (per group of GS weights
// along k a scale and a bias: W = scale * code + bias), each code read once,
// widened in registers and fed to mma.sync m16n8k16 (f16 or bf16, f32 sums).
// This is the body of an MLX custom kernel (mlx::core::fast::cuda_kernel):
// MLX writes the signature (x [M, K], w, sb as const pointers, their shapes,
// y) and the compile-time constants:
//   T      the activations' and scales' type (__half or __nv_bfloat16)
//   GS     the group size (32, 64, 128)
//   MT     8-row tiles of x (rows 8 * MT - 7 .. 8 * MT; missing rows repeat the last)
//   NT     16-column tiles of W per warp
//   WN, WK warps per block along the columns and along k (WK a power of two)
//   SPLIT  blocks along k (blockIdx.y); above 1, y is f32 [SPLIT, M, N] of
//          partial sums, which the caller adds up
//
// The matrix is the product's A operand (16 columns of W as the 16 rows of
// a fragment) and x the B operand (8 rows of x as its 8 columns), so a row
// or a few waste no loads of W, only tensor-core work the card has to spare.
// Within one k16 step the order of k is free as long as A and B agree, so
// lane (g = lane / 4, t = lane % 4) takes the k's c .. c + 3 of its own,
// c = 64 kt + 16 t + 4 j in step j of k64 tile kt: its part of x for a k64
// tile is 16 consecutive values (two 16-byte loads, no shuffling), and its
// part of W 32 codes, rows g and g + 8, in one 16-byte word laid out at load
// (src/kernels/cuda_qmm.rs, `pack`):
//   w: uint32 [N / 16][K / 64][32 lanes][4 steps j], word j's nibbles
//      (bits 4i..4i+3) i = 0..7: rows g, g+8, g, g+8, g, g+8, g, g+8 at
//      k = c, c, c+2, c+2, c+1, c+1, c+3, c+3; a warp's tile is 512
//      contiguous bytes
//   sb: T [N / 16][K / GS][8 g][scale, bias of row g, scale, bias of row g + 8]
// A lane's 16 k's of a tile lie in one group (GS >= 16).
//
// Each warp walks its k64 tiles (every WK-th of its block's range), issuing
// the loads of UNROLL tiles before using any; the WK warps of a column tile
// then add their sums in shared memory in a fixed order (deterministic).
constexpr int UNROLL = MT * NT <= 2 ? 4 : 2;
constexpr int SLOTS = WK > 1 ? WN * (WK / 2) : 1;
constexpr int ACC = NT * MT * 4;
const int M = x_shape[0];
const int K = x_shape[1];
const int N = w_shape[0];
const int KT = K / 64;
const int N16 = N / 16;
const int G = K / GS;
const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
const int wn = warp % WN, wk = warp / WN;
const int g = lane / 4, t = lane % 4;
const int kt_begin = KT * blockIdx.y / SPLIT, kt_end = KT * (blockIdx.y + 1) / SPLIT;

const uint4* wp = reinterpret_cast<const uint4*>(w);
const uint2* sbp = reinterpret_cast<const uint2*>(sb);
int tile[NT];
#pragma unroll
for (int nt = 0; nt < NT; nt++) tile[nt] = min((blockIdx.x * WN + wn) * NT + nt, N16 - 1);
const uint4* xr[MT];
#pragma unroll
for (int mt = 0; mt < MT; mt++) xr[mt] = reinterpret_cast<const uint4*>(x + (size_t)min(mt * 8 + g, M - 1) * K) + 2 * t;

float acc[NT][MT][4];
#pragma unroll
for (int nt = 0; nt < NT; nt++)
#pragma unroll
  for (int mt = 0; mt < MT; mt++)
#pragma unroll
    for (int i = 0; i < 4; i++) acc[nt][mt][i] = 0.0f;

for (int kt0 = kt_begin + wk; kt0 < kt_end; kt0 += WK * UNROLL) {
  uint4 wv[UNROLL][NT];
  uint2 sv[UNROLL][NT];
#pragma unroll
  for (int u = 0; u < UNROLL; u++) {
    const int kt = kt0 + u * WK;
    if (kt < kt_end) {
      const int group = (kt * 64 + 16 * t) / GS;
#pragma unroll
      for (int nt = 0; nt < NT; nt++) {
        wv[u][nt] = qmm_load_stream(wp + ((size_t)tile[nt] * KT + kt) * 32 + lane);
        sv[u][nt] = __ldg(sbp + ((size_t)tile[nt] * G + group) * 8 + g);
      }
    }
  }
#pragma unroll
  for (int u = 0; u < UNROLL; u++) {
    const int kt = kt0 + u * WK;
    if (kt >= kt_end) break;
    uint32_t a[NT][4][4];
#pragma unroll
    for (int nt = 0; nt < NT; nt++) {
      qmm_dequant_word<T>(wv[u][nt].x, sv[u][nt], a[nt][0]);
      qmm_dequant_word<T>(wv[u][nt].y, sv[u][nt], a[nt][1]);
      qmm_dequant_word<T>(wv[u][nt].z, sv[u][nt], a[nt][2]);
      qmm_dequant_word<T>(wv[u][nt].w, sv[u][nt], a[nt][3]);
    }
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
      const uint4 x0 = __ldg(xr[mt] + kt * 8), x1 = __ldg(xr[mt] + kt * 8 + 1);
      const uint32_t b[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
#pragma unroll
      for (int j = 0; j < 4; j++)
#pragma unroll
        for (int nt = 0; nt < NT; nt++) qmm_mma<T>(acc[nt][mt], a[nt][j], b[2 * j], b[2 * j + 1]);
    }
  }
}

if constexpr (WK > 1) {
  // Halving rounds: warps wk in [h, 2h) hand their sums to warp wk - h.
  __shared__ float red[SLOTS * ACC * 32];
#pragma unroll
  for (int h = WK / 2; h > 0; h /= 2) {
    if (wk >= h && wk < 2 * h) {
      float* slot = red + (size_t)(wn * (WK / 2) + wk - h) * ACC * 32 + lane;
#pragma unroll
      for (int nt = 0; nt < NT; nt++)
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
          for (int i = 0; i < 4; i++) slot[((nt * MT + mt) * 4 + i) * 32] = acc[nt][mt][i];
    }
    __syncthreads();
    if (wk < h) {
      const float* slot = red + (size_t)(wn * (WK / 2) + wk) * ACC * 32 + lane;
#pragma unroll
      for (int nt = 0; nt < NT; nt++)
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
          for (int i = 0; i < 4; i++) acc[nt][mt][i] += slot[((nt * MT + mt) * 4 + i) * 32];
    }
    __syncthreads();
  }
}

if (wk == 0) {
  // acc[nt][mt]: (column g, row 2t), (g, 2t + 1), (g + 8, 2t), (g + 8, 2t + 1).
  const size_t base = (size_t)blockIdx.y * M * N;
#pragma unroll
  for (int nt = 0; nt < NT; nt++) {
    const int tl = (blockIdx.x * WN + wn) * NT + nt;
    if (tl >= N16) continue;
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
#pragma unroll
      for (int i = 0; i < 4; i++) {
        const int m = mt * 8 + 2 * t + (i & 1);
        const int n = tl * 16 + g + 8 * (i >> 1);
        if (m < M) qmm_store(y, base + (size_t)m * N + n, acc[nt][mt][i]);
      }
    }
  }
}
