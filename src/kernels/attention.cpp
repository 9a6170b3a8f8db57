// The attention MLX primitive: softmax(scale * q k^T + mask) v on the CPU, for
// prefill and decode alike. MLX's CPU attention is composed of ops whose
// element-wise passes over the scores (mask, max, exp, sum, divide) are slower
// than the two matmuls, and its `exp` is scalar; at a few thousand tokens of
// context those passes dominate a prefill chunk. Here each tile of query rows
// makes one pass over its keys for the scores, one softmax over a row it
// keeps in cache, and one pass over the values, skipping keys the mask hides
// at either end (the causal future, a sliding window's past, a row's padding).
// Work items (batch row x key/value head x tile of query rows) are spread over
// the quantized matmul's thread pool.

#include <algorithm>
#include <exception>
#include <stdexcept>
#include <vector>

#include "mlx/allocator.h"
#include "mlx/array.h"
#include "mlx/backend/cpu/encoder.h"
#include "mlx/ops.h"
#include "mlx/primitives.h"

#include "attention_api.h"
#include "qmm_api.h"

namespace mx = mlx::core;

namespace mlx_serving::attn {
namespace {

constexpr int kTileRows = 16;  // query rows per work item (kMaxRows in the kernel)

struct Call {
  Args args;
  int tiles;  // per (batch row, key/value head)
};

void run(void* ctx, int i0, int i1) {
  const auto* c = static_cast<const Call*>(ctx);
  const Args& a = c->args;
  const int rows = (a.Hq / a.Hkv) * a.Lq;
  for (int i = i0; i < i1; ++i) {
    const int tile = i % c->tiles, bg = i / c->tiles;
    const int r0 = tile * kTileRows;
#if defined(__x86_64__)
    attend_avx2(a, bg / a.Hkv, bg % a.Hkv, r0, std::min(rows, r0 + kTileRows));
#else
    (void)a, (void)bg, (void)r0, (void)rows;
#endif
  }
}

mx::array as_f32(const mx::array& x) { return x.dtype() == mx::float32 ? x : mx::astype(x, mx::float32); }

// `x` with a contiguous last dimension, as the kernel reads rows of D floats:
// itself, or a copy gathered into `buffer` (rare: views of the cache and of
// projections keep it contiguous).
const float* rows_of(const mx::array& x, int64_t* s, std::vector<float>& buffer) {
  for (int d = 0; d < 4; ++d) s[d] = x.strides()[d];
  if (s[3] == 1) return x.data<float>();
  const auto& shape = x.shape();
  buffer.resize(x.size());
  const float* src = x.data<float>();
  size_t i = 0;
  for (int a = 0; a < shape[0]; ++a)
    for (int b = 0; b < shape[1]; ++b)
      for (int c = 0; c < shape[2]; ++c)
        for (int d = 0; d < shape[3]; ++d) buffer[i++] = src[a * s[0] + b * s[1] + c * s[2] + d * s[3]];
  s[3] = 1;
  s[2] = shape[3];
  s[1] = (int64_t)shape[2] * shape[3];
  s[0] = (int64_t)shape[1] * s[1];
  return buffer.data();
}

class Attention : public mx::UnaryPrimitive {
 public:
  Attention(mx::Stream s, float scale, bool causal) : mx::UnaryPrimitive(s), scale_(scale), causal_(causal) {}

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    out.set_data(mx::allocator::malloc(out.nbytes()));
    auto& encoder = mx::cpu::get_command_encoder(stream());
    for (const auto& in : inputs) encoder.set_input_array(in);
    encoder.set_output_array(out);
    const mx::array &q = inputs[0], &k = inputs[1], &v = inputs[2];
    const bool has_mask = inputs.size() > 3;
    Args a{};
    if (has_mask) {
      const mx::array& m = inputs[3];
      a.mask = m.data<bool>();
      for (int d = 0; d < 4; ++d) a.ms[d] = m.strides()[d];
      if (m.shape(0) == 1) a.ms[0] = 0;
      if (m.shape(2) == 1) a.ms[2] = 0;
    }
    a.causal = causal_;
    a.out = out.data<float>();
    a.B = q.shape(0);
    a.Hq = q.shape(1);
    a.Lq = q.shape(2);
    a.D = q.shape(3);
    a.Hkv = k.shape(1);
    a.S = k.shape(2);
    a.scale = scale_;
    encoder.dispatch([a, q, k, v]() mutable {
      std::vector<float> qb, kb, vb;
      a.q = rows_of(q, a.qs, qb);
      a.k = rows_of(k, a.ks, kb);
      a.v = rows_of(v, a.vs, vb);
      Call c{a, ((a.Hq / a.Hkv) * a.Lq + kTileRows - 1) / kTileRows};
      qmm::parallel_for(a.B * a.Hkv * c.tiles, 1, run, &c);
    });
  }

  void eval_gpu(const std::vector<mx::array>&, mx::array&) override {
    throw std::runtime_error("mlx_serving attention runs on the CPU only");
  }

  const char* name() const override { return "MlxServingAttention"; }

  bool is_equivalent(const mx::Primitive& other) const override {
    auto* o = dynamic_cast<const Attention*>(&other);
    return o && o->scale_ == scale_ && o->causal_ == causal_;
  }

 private:
  float scale_;
  bool causal_;
};

// Our kernel covers f32 queries (a model run in 16 bits composes) with f32-able
// keys and values, contiguous head dimensions that are a multiple of 8, query
// heads a multiple of key/value heads, on an AVX2 CPU while MLX computes on the
// CPU. Anything else is the caller's to compose.
bool covered(const mx::array& q, const mx::array& k, const mx::array& v, const mx::array* mask) {
  if (!qmm::cpu_has_avx2() || mx::default_device() != mx::Device::cpu) return false;
  if (q.ndim() != 4 || k.ndim() != 4 || v.ndim() != 4 || q.dtype() != mx::float32) return false;
  const int B = q.shape(0), Hq = q.shape(1), Lq = q.shape(2), D = q.shape(3), Hkv = k.shape(1), S = k.shape(2);
  if (D % 8 != 0 || D > 512 || Hkv == 0 || Hq % Hkv != 0 || Lq == 0 || S == 0) return false;
  if (k.shape(0) != B || v.shape(0) != B || v.shape(1) != Hkv || v.shape(2) != S || k.shape(3) != D || v.shape(3) != D)
    return false;
  if (mask) {
    const auto& m = *mask;
    if (m.ndim() != 4 || m.dtype() != mx::bool_ || (m.shape(0) != 1 && m.shape(0) != B) || m.shape(1) != 1 ||
        (m.shape(2) != 1 && m.shape(2) != Lq) || m.shape(3) != S)
      return false;
  }
  return true;
}

}  // namespace
}  // namespace mlx_serving::attn

using namespace mlx_serving::attn;

extern "C" {

// softmax(scale * q k^T, mask) v into *out (a new heap mx::array) as
// [B, Lq, Hq * D] (heads merged, as the output projection takes them), q [B, Hq,
// Lq, D], k and v [B, Hkv, S, D], mask null or bool [B or 1, 1, Lq or 1, S];
// causal (without a mask): query i sees keys up to S - Lq + i. Returns 0, 2
// when the kernel does not cover these inputs (compose attention instead), or
// 1 with a message in err.
int mlx_serving_attention(void** out, void* q, void* k, void* v, void* mask, float scale, int causal, char* err,
                          size_t err_len) {
  try {
    auto get = [](void* p) -> const mx::array& { return *static_cast<const mx::array*>(p); };
    const mx::array* m = mask ? &get(mask) : nullptr;
    if (!covered(get(q), get(k), get(v), m)) return 2;
    std::vector<mx::array> inputs{as_f32(get(q)), as_f32(get(k)), as_f32(get(v))};
    if (m) inputs.push_back(*m);
    auto stream = mx::default_stream(mx::Device::cpu);
    const mx::array& qa = get(q);
    mx::Shape shape{qa.shape(0), qa.shape(2), qa.shape(1) * qa.shape(3)};
    *out = new mx::array(std::move(shape), mx::float32,
                         std::make_shared<Attention>(stream, scale, causal != 0 && !m), std::move(inputs));
    return 0;
  } catch (const std::exception& e) {
    mlx_serving::qmm::set_error(err, err_len, e.what());
    return 1;
  }
}

}  // extern "C"
