// Helpers for src/kernels/cuda_qmm.cu and cuda_qmm_dequantize.cu (the header of those
// MLX custom kernels): 4-bit codes to f16/bf16 pairs in registers, and the
// tensor cores' m16n8k16 product.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

// A code's bits or'ed into the mantissa of a power of two give that power
// plus the code, exactly: 1024 + q in f16 (10 mantissa bits), 128 + q in bf16
// (7). Subtracting the power gives q exactly; one fma then gives
// scale * q + bias, rounded once to the type, as MLX's dequantize does.
template <typename T> struct QmmPair;
template <> struct QmmPair<__half> {
  using P = __half2;
  static constexpr uint32_t MAGIC = 0x64006400u;  // 1024, 1024
};
template <> struct QmmPair<__nv_bfloat16> {
  using P = __nv_bfloat162;
  static constexpr uint32_t MAGIC = 0x43004300u;  // 128, 128
};

template <typename T> __device__ __forceinline__ typename QmmPair<T>::P qmm_as_pair(uint32_t u) {
  return *reinterpret_cast<const typename QmmPair<T>::P*>(&u);
}
template <typename P> __device__ __forceinline__ uint32_t qmm_as_word(P p) {
  return *reinterpret_cast<const uint32_t*>(&p);
}

// The two codes at bits 0-3 and 16-19 of `bits` (already shifted into place)
// as (scale * q + bias) for both, `scale2` and `bias2` holding the scale and
// bias in both halves.
template <typename T> __device__ __forceinline__ uint32_t qmm_dequant_pair(uint32_t bits, uint32_t scale2, uint32_t bias2) {
  using Pr = QmmPair<T>;
  const uint32_t placed = (bits & 0x000f000fu) | Pr::MAGIC;  // one LOP3
  const auto q = __hsub2(qmm_as_pair<T>(placed), qmm_as_pair<T>(Pr::MAGIC));
  return qmm_as_word(__hfma2(q, qmm_as_pair<T>(scale2), qmm_as_pair<T>(bias2)));
}

// One word of the packed layout (see qmm.cu) to the A fragment of one k16
// step: a[0] and a[2] row g (scale and bias in sb.x), a[1] and a[3] row g + 8
// (sb.y).
template <typename T> __device__ __forceinline__ void qmm_dequant_word(uint32_t word, uint2 sb, uint32_t (&a)[4]) {
  const uint32_t s0 = __byte_perm(sb.x, 0, 0x1010), b0 = __byte_perm(sb.x, 0, 0x3232);
  const uint32_t s1 = __byte_perm(sb.y, 0, 0x1010), b1 = __byte_perm(sb.y, 0, 0x3232);
  a[0] = qmm_dequant_pair<T>(word, s0, b0);
  a[1] = qmm_dequant_pair<T>(word >> 4, s1, b1);
  a[2] = qmm_dequant_pair<T>(word >> 8, s0, b0);
  a[3] = qmm_dequant_pair<T>(word >> 12, s1, b1);
}

// d += a * b, a 16x16 (row-major fragments), b 16x8, d 16x8 in f32.
template <typename T> __device__ __forceinline__ void qmm_mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1);
template <> __device__ __forceinline__ void qmm_mma<__half>(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <> __device__ __forceinline__ void qmm_mma<__nv_bfloat16>(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// 16 bytes of weights read once: not kept in L1 (the activations are).
__device__ __forceinline__ uint4 qmm_load_stream(const uint4* p) {
  uint4 v;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

__device__ __forceinline__ void qmm_store(float* y, size_t i, float v) { y[i] = v; }
__device__ __forceinline__ void qmm_store(__half* y, size_t i, float v) { y[i] = __float2half(v); }
__device__ __forceinline__ void qmm_store(__nv_bfloat16* y, size_t i, float v) { y[i] = __float2bfloat16(v); }
