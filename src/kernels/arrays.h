// Helpers on MLX arrays that our primitives' eval_cpu share (qmm.cpp defines
// them). MLX types, so never included by the SIMD translation units.
#pragma once

#include <vector>

#include "mlx/array.h"

namespace mlx_serving::qmm {

// `x`'s f32 elements in row-major order: its own data when it is
// row-contiguous, else a copy gathered into `buffer` (rare: the model's
// inputs are contiguous).
const float* row_major(const mlx::core::array& x, std::vector<float>& buffer);

}  // namespace mlx_serving::qmm
