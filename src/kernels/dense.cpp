// A dense f32 matrix product split over the kernels' pool: y = x @ W (W
// [K, N]) or x @ W^T (W [N, K]), plus an optional bias [N]. Each of the pool's
// threads computes a tile of the output's columns: by our AVX-512 kernel
// (dense_avx512.cpp) where the CPU has it, else by OpenBLAS's sgemm. MLX's own
// matmul calls sgemm from one thread, and the pool keeps OpenBLAS to one
// thread of its own (qmm.cpp: its threads would compete with ours), so without
// this a model of dense weights (the embedding encoders) multiplies on one core.

#include <algorithm>
#include <exception>
#include <stdexcept>
#include <vector>

#include "mlx/allocator.h"
#include "mlx/array.h"
#include "mlx/backend/cpu/encoder.h"
#include "mlx/ops.h"
#include "mlx/primitives.h"

#include "arrays.h"
#include "dense_api.h"
#include "qmm_api.h"

extern "C" void cblas_sgemm(int order, int transa, int transb, int m, int n, int k, float alpha, const float* a, int lda,
                            const float* b, int ldb, float beta, float* c, int ldc);

namespace mx = mlx::core;

namespace mlx_serving::qmm {
namespace {

struct DenseCall {
  mlx_serving::dense::Dense d;
  int cols;
  float beta;
  bool avx512;
};

void run_dense(void* ctx, int t0, int t1) {
  auto* c = static_cast<DenseCall*>(ctx);
  const auto& d = c->d;
  for (int t = t0; t < t1; ++t) {
    const int n0 = t * c->cols, n1 = std::min(d.N, n0 + c->cols);
#if defined(__x86_64__)
    if (c->avx512) {
      mlx_serving::dense::matmul_avx512(d, n0, n1, c->beta != 0.0f);
      continue;
    }
#endif
    if (d.transposed) {
      cblas_sgemm(101 /* row major */, 111 /* no trans */, 112 /* trans */, d.M, n1 - n0, d.K, 1.0f, d.x, d.K,
                  d.w + (size_t)n0 * d.K, d.K, c->beta, d.out + n0, d.N);
    } else {
      cblas_sgemm(101, 111, 111, d.M, n1 - n0, d.K, 1.0f, d.x, d.K, d.w + n0, d.N, c->beta, d.out + n0, d.N);
    }
  }
}

class DenseMatmul : public mx::UnaryPrimitive {
 public:
  DenseMatmul(mx::Stream s, bool transposed, bool bias) : mx::UnaryPrimitive(s), transposed_(transposed), bias_(bias) {}

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    const mx::array& x = inputs[0];
    const mx::array& w = inputs[1];
    if (!w.flags().row_contiguous) throw std::invalid_argument("mlx_serving dense_matmul: weights must be row-contiguous");
    out.set_data(mx::allocator::malloc(out.nbytes()));
    auto& encoder = mx::cpu::get_command_encoder(stream());
    for (const auto& in : inputs) encoder.set_input_array(in);
    encoder.set_output_array(out);
    const int K = x.shape(-1);
    const int M = K == 0 ? 0 : (int)(x.size() / K);
    const int N = transposed_ ? w.shape(0) : w.shape(1);
    std::optional<mx::array> bias;
    if (bias_) bias = inputs[2];
    encoder.dispatch([x, w, bias, M, N, K, transposed = transposed_, out_ptr = out.data<float>()]() {
      if (M == 0 || N == 0) return;
      std::vector<float> packed, bias_buffer;
      const float* xp = row_major(x, packed);
      float beta = 0.0f;
      if (bias) {
        const float* b = row_major(*bias, bias_buffer);
        for (int m = 0; m < M; ++m) std::copy(b, b + N, out_ptr + (size_t)m * N);
        beta = 1.0f;
      }
      // Column tiles, a few per thread, whole multiples of 16 (of our
      // kernel's panels of 32 when it serves).
      const bool avx512 = cpu_has_avx512();
      const int unit = avx512 ? 32 : 16;
      const int cols = std::max(unit, (N / 6 + unit - 1) / unit * unit);
      DenseCall c{{xp, w.data<float>(), out_ptr, M, N, K, transposed}, cols, beta, avx512};
      parallel_for((N + cols - 1) / cols, 1, run_dense, &c);
    });
  }

  void eval_gpu(const std::vector<mx::array>&, mx::array&) override {
    throw std::runtime_error("mlx_serving dense_matmul runs on the CPU only");
  }

  const char* name() const override { return "MlxServingDenseMatmul"; }

  bool is_equivalent(const mx::Primitive& other) const override {
    auto* o = dynamic_cast<const DenseMatmul*>(&other);
    return o && o->transposed_ == transposed_ && o->bias_ == bias_;
  }

 private:
  bool transposed_, bias_;
};

}  // namespace
}  // namespace mlx_serving::qmm

using namespace mlx_serving::qmm;

extern "C" {

// y = x @ w (w [K, N]; `transposed`: x @ w^T, w [N, K]) + bias (or null) into
// *out (a new heap mx::array). Returns 0; 2 when these inputs are not served
// here (not f32 on the CPU, shapes that do not fit), nothing made; 1 with a
// message in err.
int mlx_serving_dense(void** out, void* x, void* w, void* bias, int transposed, char* err, size_t err_len) {
  try {
    auto get = [](void* p) -> const mx::array& { return *static_cast<const mx::array*>(p); };
    const mx::array& xa = get(x);
    const mx::array& wa = get(w);
    const int K = xa.ndim() >= 1 ? xa.shape(-1) : -1;
    const bool fits = xa.dtype() == mx::float32 && wa.dtype() == mx::float32 && wa.ndim() == 2 &&
                      mx::default_device() == mx::Device::cpu && K == (transposed ? wa.shape(1) : wa.shape(0)) &&
                      (!bias || (get(bias).dtype() == mx::float32 && get(bias).ndim() == 1 &&
                                 get(bias).shape(0) == (transposed ? wa.shape(0) : wa.shape(1))));
    if (!fits) return 2;
    mx::Shape shape = xa.shape();
    shape.back() = transposed ? wa.shape(0) : wa.shape(1);
    std::vector<mx::array> inputs{xa, wa};
    if (bias) inputs.push_back(get(bias));
    auto stream = mx::default_stream(mx::Device::cpu);
    *out = new mx::array(std::move(shape), mx::float32, std::make_shared<DenseMatmul>(stream, transposed != 0, bias != nullptr),
                         std::move(inputs));
    return 0;
  } catch (const std::exception& e) {
    set_error(err, err_len, e.what());
    return 1;
  }
}

}  // extern "C"
