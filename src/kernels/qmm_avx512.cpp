// The kernels for x86-64 with AVX-512 VNNI (compiled with -mavx512f -mavx512bw
// -mavx512vl -mavx512vnni): the int8 dot product is one `vpdpbusd` on 256-bit
// vectors instead of `maddubs` + `madd`; the rest is the AVX2 code.
#define QMM_NS avx512
#define QMM_VNNI 1
#include "qmm_kernels.h"

const mlx_serving::qmm::Kernels* mlx_serving::qmm::avx512_kernels() { return &avx512::kKernels; }
