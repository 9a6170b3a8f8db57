// Quantized matrix times a few rows on CUDA: y[m, n] = sum_k x[m, k] * W[n, k]
// with W in MLX's affine layout (uint32 words of BITS-bit codes, lowest bits
// first; per group of GS weights a scale and a bias): W = scale * code + bias.
// This is the body of an MLX custom kernel (mlx::core::fast::cuda_kernel):
// MLX writes the signature (x, w, scales, biases as const pointers, their
// shapes, y) and the compile-time constants T (the activations' and scales'
// type), BITS, GS, M (rows, 1-7) and LANES (threads per output column, 8,
// 16 or 32).
//
// LANES threads share output column n and read its row's codes as contiguous
// 16-byte chunks (32 weights at 4 bits, 16 at 8; a chunk lies in one group),
// UNROLL chunks in flight each. Short rows get fewer lanes, so that each has
// a few chunks; few columns get more, so that the card has warps enough to
// hide the loads' latency. Sums are f32, a column's added by shuffles.
//
// No code is converted to float by I2F: its bits are placed in the mantissa
// of 1.0, giving the float 1 + code / 2^BITS (a shift and a LOP3). With
// d' = sum(x * (1 + code / 2^BITS)) and s = sum(x) over a chunk,
// sum(x * code) = 2^BITS * (d' - s), so the chunk adds
// scale * sum(x * code) + bias * s = 2^BITS * scale * d' + (bias - 2^BITS * scale) * s.
// Halves are widened two at a time.
constexpr int VPT = 128 / BITS;  // weights per chunk
constexpr int PER_WORD = 32 / BITS;
constexpr unsigned MASK = (1u << BITS) - 1u;
constexpr int MANTISSA_SHIFT = 23 - BITS;  // a code's place under 1.0's exponent
constexpr float LEVELS = static_cast<float>(1u << BITS);
constexpr int UNROLL = 4;
const int K = x_shape[1];
const int N = w_shape[0];
const int lane = threadIdx.x % LANES;
// A warp shuffles as a whole: threads past the last column compute the last
// one again and do not store it.
const int column = (blockIdx.x * blockDim.x + threadIdx.x) / LANES;
const int n = column < N ? column : N - 1;
const int chunks = K / VPT;
const int groups = K / GS;
const uint4* wrow = reinterpret_cast<const uint4*>(w + (size_t)n * (K / PER_WORD));
const T* srow = scales + (size_t)n * groups;
const T* brow = biases + (size_t)n * groups;
float acc[M];
#pragma unroll
for (int m = 0; m < M; m++) acc[m] = 0.0f;
for (int c0 = lane; c0 < chunks; c0 += LANES * UNROLL) {
  // The loads of UNROLL chunks, LANES chunks apart, before any arithmetic.
  uint4 packed[UNROLL];
  float scale[UNROLL], bias[UNROLL];
#pragma unroll
  for (int u = 0; u < UNROLL; u++) {
    const int c = c0 + LANES * u;
    if (c < chunks) {
      packed[u] = wrow[c];
      scale[u] = to_f32(srow[c * VPT / GS]);
      bias[u] = to_f32(brow[c * VPT / GS]);
    }
  }
#pragma unroll
  for (int u = 0; u < UNROLL; u++) {
    const int c = c0 + LANES * u;
    if (c >= chunks) break;
    const uint32_t words[4] = {packed[u].x, packed[u].y, packed[u].z, packed[u].w};
    float code[VPT];  // 1 + code / 2^BITS
#pragma unroll
    for (int i = 0; i < VPT; i++) {
      const int shift = MANTISSA_SHIFT - BITS * (i % PER_WORD);
      const uint32_t word = words[i / PER_WORD];
      const uint32_t placed = shift >= 0 ? word << shift : word >> -shift;
      code[i] = __uint_as_float((placed & (MASK << MANTISSA_SHIFT)) | 0x3f800000u);
    }
    const float scaled = scale[u] * LEVELS;
    const float offset = bias[u] - scaled;
    const int k0 = c * VPT;
#pragma unroll
    for (int m = 0; m < M; m++) {
      const uint4* xv = reinterpret_cast<const uint4*>(x + (size_t)m * K + k0);
      float dot = 0.0f, sum = 0.0f;
#pragma unroll
      for (int j = 0; j < VPT / 8; j++) {
        const uint4 raw = xv[j];
        const uint32_t pairs[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
        for (int e = 0; e < 4; e++) {
          const float2 xf = to_f32x2<T>(pairs[e]);
          dot = fmaf(xf.x, code[j * 8 + 2 * e], dot);
          dot = fmaf(xf.y, code[j * 8 + 2 * e + 1], dot);
          sum += xf.x + xf.y;
        }
      }
      acc[m] = fmaf(scaled, dot, fmaf(offset, sum, acc[m]));
    }
  }
}
#pragma unroll
for (int m = 0; m < M; m++) {
#pragma unroll
  for (int offset = LANES / 2; offset > 0; offset >>= 1) acc[m] += __shfl_xor_sync(0xffffffffu, acc[m], offset, LANES);
}
if (lane == 0 && column < N) {
#pragma unroll
  for (int m = 0; m < M; m++) y[(size_t)m * N + n] = from_f32<T>(acc[m]);
}
