// The matrix of src/kernels/cuda_qmm.cu's packed layout widened to T [N, K]
// (scale * code + bias, rounded once, as MLX's dequantize), for products of
// more rows than cuda_qmm.cu takes. Body of an MLX custom kernel: inputs w
// (uint32 [N, K / 8]) and sb in cuda_qmm.cu's layout, output y [N, K]; constants
// T and GS. One thread per 16-byte word of w: rows g and g + 8 of a
// 16-row tile, 16 consecutive k's each (two 32-byte stores per row).
const int K = w_shape[1] * 8;
const int N = w_shape[0];
const int KT = K / 64;
const int G = K / GS;
const size_t word = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
if (word < (size_t)(N / 16) * KT * 32) {
  const int lane = word % 32, g = lane / 4, t = lane % 4;
  const int kt = (word / 32) % KT;
  const size_t tile = word / 32 / KT;
  const uint4 v = reinterpret_cast<const uint4*>(w)[word];
  const uint2 s = reinterpret_cast<const uint2*>(sb)[(tile * G + (kt * 64 + 16 * t) / GS) * 8 + g];
  const uint32_t words[4] = {v.x, v.y, v.z, v.w};
  uint32_t lo[8], hi[8];  // rows g and g + 8, k = 64 kt + 16 t + 0..15
#pragma unroll
  for (int j = 0; j < 4; j++) {
    uint32_t a[4];
    qmm_dequant_word<T>(words[j], s, a);
    lo[2 * j] = a[0];
    lo[2 * j + 1] = a[2];
    hi[2 * j] = a[1];
    hi[2 * j + 1] = a[3];
  }
  const size_t k0 = (size_t)kt * 64 + 16 * t;
  uint4* r0 = reinterpret_cast<uint4*>(y + (tile * 16 + g) * K + k0);
  uint4* r1 = reinterpret_cast<uint4*>(y + (tile * 16 + g + 8) * K + k0);
  r0[0] = make_uint4(lo[0], lo[1], lo[2], lo[3]);
  r0[1] = make_uint4(lo[4], lo[5], lo[6], lo[7]);
  r1[0] = make_uint4(hi[0], hi[1], hi[2], hi[3]);
  r1[1] = make_uint4(hi[4], hi[5], hi[6], hi[7]);
}
