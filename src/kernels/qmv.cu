// Quantized matrix times a few rows on CUDA: y[m, n] = sum_k x[m, k] * W[n, k]
// with W in MLX's affine layout (uint32 words of BITS-bit codes, lowest bits
// first; per group of GS weights a scale and a bias): W = scale * code + bias.
// This is the body of an MLX custom kernel (mlx::core::fast::cuda_kernel):
// MLX writes the signature (x, w, scales, biases as const pointers, their
// shapes, y) and the compile-time constants T (the activations' and scales'
// type), BITS, GS and M (rows, 1-7).
//
// One warp per output column n. A lane's chunk is 16 bytes of codes (32
// weights at 4 bits, 16 at 8) from one group; the warp's 32 chunks are 512
// contiguous bytes of the row. Per chunk and row a lane keeps two sums, codes
// times x and x alone, and applies the group's scale and bias once:
// scale * sum(code * x) + bias * sum(x). Sums are f32; the warp adds its
// lanes' sums with shuffles.
constexpr int VPT = 128 / BITS;  // weights per 16-byte load
constexpr int PER_WORD = 32 / BITS;
constexpr unsigned MASK = (1u << BITS) - 1u;
const int K = x_shape[1];
const int N = w_shape[0];
const int lane = threadIdx.x & 31;
const int n = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
if (n >= N) return;
const int chunks = K / VPT;
const int groups = K / GS;
const uint4* wrow = reinterpret_cast<const uint4*>(w + (size_t)n * (K / PER_WORD));
const T* srow = scales + (size_t)n * groups;
const T* brow = biases + (size_t)n * groups;
float acc[M];
#pragma unroll
for (int m = 0; m < M; m++) acc[m] = 0.0f;
// Each lane takes UNROLL chunks a pass, 32 chunks apart, and issues their
// loads before any arithmetic, so a warp has UNROLL * 512 bytes in flight.
constexpr int UNROLL = 4;
for (int c0 = lane; c0 < chunks; c0 += 32 * UNROLL) {
  uint4 packed[UNROLL];
  float scale[UNROLL], bias[UNROLL];
#pragma unroll
  for (int u = 0; u < UNROLL; u++) {
    const int c = c0 + 32 * u;
    if (c < chunks) {
      packed[u] = wrow[c];
      scale[u] = to_f32(srow[c * VPT / GS]);
      bias[u] = to_f32(brow[c * VPT / GS]);
    }
  }
#pragma unroll
  for (int u = 0; u < UNROLL; u++) {
    const int c = c0 + 32 * u;
    if (c >= chunks) break;
    const uint32_t words[4] = {packed[u].x, packed[u].y, packed[u].z, packed[u].w};
    const int k0 = c * VPT;
    float code[VPT];
#pragma unroll
    for (int i = 0; i < VPT; i++) code[i] = static_cast<float>((words[i / PER_WORD] >> (BITS * (i % PER_WORD))) & MASK);
#pragma unroll
    for (int m = 0; m < M; m++) {
      const uint4* xv = reinterpret_cast<const uint4*>(x + (size_t)m * K + k0);
      float dot = 0.0f, sum = 0.0f;
#pragma unroll
      for (int j = 0; j < VPT / 8; j++) {
        const uint4 raw = xv[j];
        const T* h = reinterpret_cast<const T*>(&raw);
#pragma unroll
        for (int e = 0; e < 8; e++) {
          const float xf = to_f32(h[e]);
          dot = fmaf(xf, code[j * 8 + e], dot);
          sum += xf;
        }
      }
      acc[m] = fmaf(scale[u], dot, fmaf(bias[u], sum, acc[m]));
    }
  }
}
#pragma unroll
for (int m = 0; m < M; m++) {
  float v = acc[m];
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  if (lane == 0) y[(size_t)m * N + n] = from_f32<T>(v);
}
