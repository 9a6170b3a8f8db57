// The MLP's gated activation as one MLX primitive: silu(gate) * up (SwiGLU)
// or gelu_tanh(gate) * up (GeGLU), reading gate and up either from the two
// halves of the stacked gate/up projection's output or from two arrays.
// Composed from MLX's ops this is two slices and five element-wise ops per
// layer, each with its own output buffer and graph node; at decode, where
// every op works on a few thousand floats, their fixed cost (graph walk,
// allocation, dispatch to the stream thread) is what such a step spends, not
// the arithmetic. Large inputs (prefill) are split over the kernels' pool.

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
#include "glu_api.h"
#include "qmm_api.h"

namespace mx = mlx::core;

namespace mlx_serving::glu {
namespace {

// Elements per work item when a call is split over the pool.
constexpr int64_t kItem = 1 << 15;

struct Call {
  Args args;
  int64_t rows_per_item;
};

void run(void* ctx, int i0, int i1) {
#if defined(__x86_64__)
  const auto* c = static_cast<const Call*>(ctx);
  const int64_t r0 = (int64_t)i0 * c->rows_per_item;
  const int64_t r1 = std::min(c->args.rows, (int64_t)i1 * c->rows_per_item);
  glu_avx2(c->args, r0, r1);
#else
  (void)ctx, (void)i0, (void)i1;
#endif
}

class Glu : public mx::UnaryPrimitive {
 public:
  Glu(mx::Stream s, Kind kind) : mx::UnaryPrimitive(s), kind_(kind) {}

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    out.set_data(mx::allocator::malloc(out.nbytes()));
    auto& encoder = mx::cpu::get_command_encoder(stream());
    for (const auto& in : inputs) encoder.set_input_array(in);
    encoder.set_output_array(out);
    const Kind kind = kind_;
    std::vector<mx::array> in = inputs;
    float* dst = out.data<float>();
    const int64_t width = out.shape(-1), rows = width ? (int64_t)(out.size() / width) : 0;
    encoder.dispatch([in, dst, width, rows, kind]() {
      std::vector<float> first, second;
      Args a{};
      a.out = dst;
      a.rows = rows;
      a.width = width;
      a.kind = kind;
      a.gate = qmm::row_major(in[0], first);
      if (kind == kGeluErf) {
        a.up = nullptr;
        a.in_row = width;
      } else if (in.size() == 1) {
        // Stacked: each row is gate then up.
        a.up = a.gate + width;
        a.in_row = 2 * width;
      } else {
        a.up = qmm::row_major(in[1], second);
        a.in_row = width;
      }
      Call c{a, std::max<int64_t>(1, kItem / std::max<int64_t>(1, width))};
      const int64_t items = (rows + c.rows_per_item - 1) / c.rows_per_item;
      qmm::parallel_for((int)items, 1, run, &c);
    });
  }

  void eval_gpu(const std::vector<mx::array>&, mx::array&) override {
    throw std::runtime_error("mlx_serving glu runs on the CPU only");
  }

  const char* name() const override { return "MlxServingGlu"; }

  bool is_equivalent(const mx::Primitive& other) const override {
    auto* o = dynamic_cast<const Glu*>(&other);
    return o && o->kind_ == kind_;
  }

 private:
  Kind kind_;
};

}  // namespace
}  // namespace mlx_serving::glu

using namespace mlx_serving::glu;

extern "C" {

// act(gate) * up into *out (a new heap mx::array): with `up` null, `gate`
// holds [..., 2F], gate in its first F columns and up in the rest; otherwise
// gate and up are both [..., F]. kind: 0 SiLU, 1 GELU (tanh approximation);
// 2: the exact GELU of `gate` alone (`up` null, the output gate's shape).
// Returns 0, 2 when the kernel does not cover these inputs (compose the
// activation instead), or 1 with a message in err.
int mlx_serving_glu(void** out, void* gate, void* up, int kind, char* err, size_t err_len) {
  try {
    auto get = [](void* p) -> const mx::array& { return *static_cast<const mx::array*>(p); };
    if (!mlx_serving::qmm::cpu_has_avx2() || mx::default_device() != mx::Device::cpu) return 2;
    if (kind != kSilu && kind != kGeluTanh && kind != kGeluErf) return 2;
    const mx::array& g = get(gate);
    if (g.dtype() != mx::float32 || g.ndim() == 0) return 2;
    std::vector<mx::array> inputs{g};
    mx::Shape shape = g.shape();
    if (kind == kGeluErf) {
      if (up) return 2;
    } else if (up) {
      const mx::array& u = get(up);
      if (u.dtype() != mx::float32 || u.shape() != g.shape()) return 2;
      inputs.push_back(u);
    } else {
      if (shape.back() % 2 != 0) return 2;
      shape.back() /= 2;
    }
    auto stream = mx::default_stream(mx::Device::cpu);
    *out = new mx::array(std::move(shape), mx::float32, std::make_shared<Glu>(stream, (Kind)kind), std::move(inputs));
    return 0;
  } catch (const std::exception& e) {
    mlx_serving::qmm::set_error(err, err_len, e.what());
    return 1;
  }
}

}  // extern "C"
