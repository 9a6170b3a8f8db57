// The kernels for x86-64 with AVX2 + FMA (compiled with -mavx2 -mfma).
#define QMM_NS avx2
#define QMM_VNNI 0
#include "qmm_kernels.h"

const mlx_serving::qmm::Kernels* mlx_serving::qmm::avx2_kernels() { return &avx2::kKernels; }
