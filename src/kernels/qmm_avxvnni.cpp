// The kernels for x86-64 with AVX-VNNI (compiled with -mavxvnni): `vpdpbusd` in
// its VEX encoding (Alder Lake, Sapphire Rapids, Zen 5); the rest is AVX2.
#define QMM_NS avxvnni
#define QMM_VNNI 2
#include "qmm_kernels.h"

const mlx_serving::qmm::Kernels* mlx_serving::qmm::avxvnni_kernels() { return &avxvnni::kKernels; }
