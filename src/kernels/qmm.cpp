// The quantized-matmul MLX primitive: `y = x @ dequantize(w)^T` for affine 4-bit
// and 8-bit weights in MLX's own layout, evaluated on the CPU by our SIMD kernels
// (qmm_kernels.h) split over a small persistent thread pool. Compiled for the
// baseline CPU; the kernels are picked at run time by CPU features. Anything the
// kernels do not cover goes to MLX's own `quantized_matmul`.
//
// The C entry points at the bottom are what src/kernels/mod.rs calls. Arrays
// cross as the `ctx` pointer of an `mlx_array` (a heap `mlx::core::array`), the
// representation mlx-c and mlx-rs use.

#include <algorithm>
#include <atomic>
#include <climits>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <linux/futex.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "mlx/allocator.h"
#include "mlx/array.h"
#include "mlx/backend/cpu/encoder.h"
#include "mlx/fast.h"
#include "mlx/ops.h"
#include "mlx/primitives.h"
#include "mlx/version.h"

#include "arrays.h"
#include "qmm_api.h"

extern "C" void openblas_set_num_threads(int threads);
extern "C" void cblas_sgemm(int order, int transa, int transb, int m, int n, int k, float alpha, const float* a,
                            int lda, const float* b, int ldb, float beta, float* c, int ldc);

namespace mx = mlx::core;

namespace mlx_serving::qmm {
namespace {

enum Mode { kInt8 = 0, kF32 = 1 };
enum Isa { kAuto = 0, kAvx2 = 1, kAvx512 = 2, kMlx = 3, kAvxVnni = 4 };

// From this many activation rows on, a tile of the weights is dequantized and
// multiplied by OpenBLAS's sgemm instead (see the design notes in mod.rs).
int sgemm_rows() {
  static const int rows = [] {
    const char* v = std::getenv("MLX_SERVING_QMM_SGEMM_ROWS");
    return v ? std::atoi(v) : 48;
  }();
  return rows;
}

bool has_isa(Isa isa) {
#if defined(__x86_64__)
  switch (isa) {
    case kAvx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case kAvx512:
      return has_isa(kAvx2) && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
    case kAvxVnni:
      return has_isa(kAvx2) && __builtin_cpu_supports("avxvnni");
    default:
      return false;
  }
#else
  (void)isa;
  return false;
#endif
}

// The best kernel set this CPU runs, or the one asked for (kMlx: none).
Isa resolve(Isa asked) {
  if (asked == kAuto) {
    static const Isa best = [] {
      const char* forced = std::getenv("MLX_SERVING_QMM_ISA");
      if (forced && std::strcmp(forced, "mlx") == 0) return kMlx;
      if (forced && std::strcmp(forced, "avx2") == 0 && has_isa(kAvx2)) return kAvx2;
      if (has_isa(kAvx512)) return kAvx512;
      if (has_isa(kAvxVnni)) return kAvxVnni;
      if (has_isa(kAvx2)) return kAvx2;
      return kMlx;
    }();
    return best;
  }
  return asked == kMlx || has_isa(asked) ? asked : kMlx;
}

const Kernels* kernels_for(Isa isa) {
#if defined(__x86_64__)
  if (isa == kAvx512) return avx512_kernels();
  if (isa == kAvxVnni) return avxvnni_kernels();
  if (isa == kAvx2) return avx2_kernels();
#endif
  (void)isa;
  return nullptr;
}

// ---------------------------------------------------------------------------
// A persistent pool. The caller (MLX's CPU stream thread) takes part and waits
// only for chunks a worker has started: a worker still asleep when a job is
// posted (most are, between two matmuls of a decode step, since the other ops
// run in between) leaves the job to the caller rather than delay it by its
// wake-up. Workers then sleep on a futex at once, leaving the cores to MLX's
// threads: spinning for the next job (`MLX_SERVING_QMM_SPIN_US`, microseconds)
// took a core from the thread that builds and dispatches the graph, and a
// decode step at batch 1 took 11% longer with 100 us of it (2 cores).
//
// A job is published under a sequence lock (`seq_`); chunks are claimed from
// `cursor_`, which holds the job's id in its high half, by compare-and-swap, so
// a worker that read a job late can only claim chunks of that same job while
// it is still open, never a later job's.
class Pool {
 public:
  static Pool& get() {
    static Pool pool;
    return pool;
  }

  int threads() const { return (int)workers_.size() + 1; }

  // Calls fn(ctx, i0, i1) over [0, n) in chunks of `chunk`, on every thread.
  // A second caller while the pool is busy (another MLX stream) runs alone.
  void parallel_for(int n, int chunk, void (*fn)(void*, int, int), void* ctx) {
    std::unique_lock<std::mutex> lock(mutex_, std::try_to_lock);
    if (!lock.owns_lock() || workers_.empty() || n <= chunk) {
      fn(ctx, 0, n);
      return;
    }
    const uint32_t id = ++job_id_;
    const uint32_t seq = seq_.load(std::memory_order_relaxed);
    seq_.store(seq + 1, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_release);
    job_.id.store(id, std::memory_order_relaxed);
    job_.fn.store(fn, std::memory_order_relaxed);
    job_.ctx.store(ctx, std::memory_order_relaxed);
    job_.n.store(n, std::memory_order_relaxed);
    job_.chunk.store(chunk, std::memory_order_relaxed);
    done_.store(0, std::memory_order_relaxed);
    cursor_.store((uint64_t)id << 32, std::memory_order_relaxed);
    seq_.store(seq + 2, std::memory_order_release);
    generation_.fetch_add(1, std::memory_order_seq_cst);
    wake_all();
    const int chunks = (n + chunk - 1) / chunk;
    int mine = 0;
    for (;;) {
      const int i0 = (int)(uint32_t)cursor_.fetch_add((uint64_t)chunk, std::memory_order_acq_rel);
      if (i0 >= n) break;
      fn(ctx, i0, std::min(n, i0 + chunk));
      ++mine;
    }
    while (done_.load(std::memory_order_acquire) != chunks - mine) pause();
  }

 private:
  struct Job {
    std::atomic<uint32_t> id{0};
    std::atomic<void (*)(void*, int, int)> fn{nullptr};
    std::atomic<void*> ctx{nullptr};
    std::atomic<int> n{0}, chunk{1};
  };

  Pool() {
    int n = 0;
    if (const char* v = std::getenv("MLX_SERVING_THREADS")) n = std::atoi(v);
    if (n <= 0) {
      cpu_set_t set;
      n = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : (int)std::thread::hardware_concurrency();
    }
    n = std::max(1, std::min(n, 64));
    // The pool splits work over the cores, OpenBLAS included (each thread
    // calls sgemm on its own tile): OpenBLAS's own threads would only compete
    // with ours for the same cores.
    openblas_set_num_threads(1);
    // Workers start from generation 0: a job posted before a worker first runs
    // is still seen as new.
    for (int i = 1; i < n; ++i) workers_.emplace_back([this] { loop(0); });
  }

  ~Pool() {
    stop_.store(true);
    generation_.fetch_add(1);
    futex(FUTEX_WAKE_PRIVATE, INT32_MAX);
    for (auto& t : workers_) t.join();
  }

  static void pause() {
#if defined(__x86_64__)
    __builtin_ia32_pause();
#endif
  }

  // A worker's part of the newest job: chunks claimed while that job is open.
  void help() {
    uint32_t id;
    void (*fn)(void*, int, int);
    void* ctx;
    int n, chunk;
    for (;;) {
      const uint32_t seq = seq_.load(std::memory_order_acquire);
      if (seq & 1) {
        pause();
        continue;
      }
      id = job_.id.load(std::memory_order_relaxed);
      fn = job_.fn.load(std::memory_order_relaxed);
      ctx = job_.ctx.load(std::memory_order_relaxed);
      n = job_.n.load(std::memory_order_relaxed);
      chunk = job_.chunk.load(std::memory_order_relaxed);
      std::atomic_thread_fence(std::memory_order_acquire);
      if (seq_.load(std::memory_order_relaxed) == seq) break;
    }
    uint64_t cur = cursor_.load(std::memory_order_acquire);
    for (;;) {
      const int i0 = (int)(uint32_t)cur;
      if ((uint32_t)(cur >> 32) != id || i0 >= n) return;
      if (!cursor_.compare_exchange_weak(cur, cur + (uint64_t)chunk, std::memory_order_acq_rel)) continue;
      fn(ctx, i0, std::min(n, i0 + chunk));
      done_.fetch_add(1, std::memory_order_acq_rel);
      cur = cursor_.load(std::memory_order_acquire);
    }
  }

  void loop(uint32_t seen) {
    for (;;) {
      const auto spin_until = std::chrono::steady_clock::now() + std::chrono::microseconds(spin_us());
      uint32_t now = seen;
      for (int i = 0; (now = generation_.load(std::memory_order_acquire)) == seen; ++i) {
        if ((i & 63) == 0 && std::chrono::steady_clock::now() > spin_until) {
          // Announce the sleep, then sleep only if no job came meanwhile; the
          // kernel re-checks the word, so a wake-up cannot be lost.
          sleepers_.fetch_add(1, std::memory_order_seq_cst);
          if (generation_.load(std::memory_order_seq_cst) == seen) futex(FUTEX_WAIT_PRIVATE, seen);
          sleepers_.fetch_sub(1, std::memory_order_seq_cst);
        } else {
          pause();
        }
      }
      seen = now;
      if (stop_.load()) return;
      help();
    }
  }

  void futex(int op, uint32_t value) {
    syscall(SYS_futex, reinterpret_cast<uint32_t*>(&generation_), op, value, nullptr, nullptr, 0);
  }

  void wake_all() {
    if (sleepers_.load(std::memory_order_seq_cst) > 0) futex(FUTEX_WAKE_PRIVATE, INT32_MAX);
  }

  static int spin_us() {
    static const int us = [] {
      const char* v = std::getenv("MLX_SERVING_QMM_SPIN_US");
      return v ? std::atoi(v) : 0;
    }();
    return us;
  }

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  // Bumped per job; also the futex word sleeping workers wait on.
  std::atomic<uint32_t> generation_{0};
  static_assert(sizeof(std::atomic<uint32_t>) == 4 && std::atomic<uint32_t>::is_always_lock_free);
  std::atomic<int> sleepers_{0};
  std::atomic<bool> stop_{false};
  // The posted job, its sequence lock (odd while it is written), the next
  // chunk (job id << 32 | index) and the chunks workers have finished.
  Job job_;
  std::atomic<uint32_t> seq_{0};
  std::atomic<uint64_t> cursor_{0};
  std::atomic<int> done_{0};
  uint32_t job_id_ = 0;  // under mutex_
};

// ---------------------------------------------------------------------------
// One evaluation: out [M, N] = x [M, K] @ W^T.

// The weights of one product: MLX's layout (f32 mode) or panels (int8 mode).
struct Matrix {
  Weights rows;
  Panels panels;
  bool packed;
};

struct Call {
  const Kernels* k;
  Matrix W;
  const float* x;
  int M;
  Acts acts;
  const float* xsum;
  float* out;
};

void run_int8(void* ctx, int p0, int p1) {
  auto* c = static_cast<Call*>(ctx);
  c->k->matmul_int8(c->acts, c->W.panels, p0, p1, c->out);
}

void run_f32(void* ctx, int n0, int n1) {
  auto* c = static_cast<Call*>(ctx);
  c->k->matmul_f32(c->x, c->xsum, c->M, c->W.rows, n0, n1, c->out);
}

struct QuantizeCall {
  const Kernels* k;
  const float* x;
  int K, group, bits;
  int8_t* q;
  float* d;
  int32_t* qsum;
  float* xsum;
};

void run_quantize(void* ctx, int m0, int m1) {
  auto* c = static_cast<QuantizeCall*>(ctx);
  c->k->quantize(c->x, m0, m1, c->K, c->group, c->bits, c->q, c->d, c->qsum, c->xsum);
}

struct SgemmCall {
  const Kernels* k;
  Weights W;
  const float* x;
  int M;
  float* out;
  int rows;  // weight rows per tile
};

void run_sgemm(void* ctx, int t0, int t1) {
  auto* c = static_cast<SgemmCall*>(ctx);
  const int K = c->W.K;
  thread_local std::vector<float> tile;
  tile.resize((size_t)c->rows * K);
  for (int t = t0; t < t1; ++t) {
    const int n0 = t * c->rows, n1 = std::min(c->W.N, n0 + c->rows);
    c->k->dequantize(c->W, n0, n1, tile.data());
    cblas_sgemm(101 /* row major */, 111 /* no trans */, 112 /* trans */, c->M, n1 - n0, K, 1.0f, c->x, K, tile.data(),
                K, 0.0f, c->out + n0, c->W.N);
  }
}

// Work items of whole weight rows, a few per thread so that a core slowed by
// another process does not hold the others up.
int chunk_for(int N, int threads) {
  int chunk = N / (threads * 6);
  chunk = std::max(16, chunk - chunk % 2);
  return chunk;
}

void compute(const Kernels* k, Mode mode, const float* x, int M, const Matrix& W, float* out) {
  thread_local std::vector<int8_t> q;
  thread_local std::vector<int32_t> qsum;
  thread_local std::vector<float> d, xsum, xp;
  const int K = W.rows.K, G = K / W.rows.group;
  Pool& pool = Pool::get();
  xsum.resize((size_t)M * G);
  Call c{k, W, x, M, {}, xsum.data(), out};
  if (mode == kInt8) {
    // Every row count takes the same kernels, whose sums do not depend on the
    // rows beside a row: a prompt prefilled in chunks of any size, grouped
    // with other prompts or beside decoding streams gives what it gives alone.
    q.resize((size_t)M * K);
    d.resize((size_t)M * (K / 32));
    qsum.resize((size_t)M * (K / 32));
    QuantizeCall qc{k, x, K, W.rows.group, W.rows.bits, q.data(), d.data(), qsum.data(), xsum.data()};
    pool.parallel_for(M, 8, run_quantize, &qc);
    c.acts = {q.data(), d.data(), qsum.data(), xsum.data(), M};
    const int panels = (W.panels.N + 7) / 8;
    pool.parallel_for(panels, std::max(2, panels / (pool.threads() * 6)), run_int8, &c);
    return;
  }
  if (M >= sgemm_rows()) {
    // Tiles of weight rows (at most about 1 MiB of f32, a few per thread), each
    // dequantized and multiplied by OpenBLAS's sgemm on one of the pool's
    // threads. Its sums are not the tile kernels': from this many rows on, a
    // row's result depends on how many rows share the product.
    const int cap = std::max(16, (1 << 18) / K);
    const int rows = std::clamp(W.rows.N / (pool.threads() * 3), std::min(32, cap), cap);
    SgemmCall sc{k, W.rows, x, M, out, rows};
    pool.parallel_for((W.rows.N + rows - 1) / rows, 1, run_sgemm, &sc);
    return;
  }
  xp.resize((size_t)M * K);
  k->prepare_f32(x, M, K, W.rows.group, W.rows.bits, xp.data(), xsum.data());
  c.x = xp.data();
  pool.parallel_for(W.rows.N, chunk_for(W.rows.N, pool.threads()), run_f32, &c);
}

// ---------------------------------------------------------------------------

// What a matmul takes in besides x @ W^T, so that a transformer layer's
// neighbouring ops need no graph node of their own: an RMS norm of x before
// (`rms_norm(x, weight, eps)`, as MLX composes it on the CPU: x * (1 /
// sqrt(mean(x^2) + eps)) * weight) and an addend after (the residual stream).
struct Fused {
  bool norm = false;
  float eps = 0.0f;
  bool add = false;
};

// RMS norm of M rows of K into dst.
void rms_norm_rows(const float* x, const float* weight, float eps, int M, int K, float* dst) {
  for (int m = 0; m < M; ++m) {
    const float* xr = x + (size_t)m * K;
    float sum = 0.0f;
    for (int i = 0; i < K; ++i) sum += xr[i] * xr[i];
    const float r = 1.0f / std::sqrt(sum / (float)K + eps);
    float* o = dst + (size_t)m * K;
    for (int i = 0; i < K; ++i) o[i] = (xr[i] * r) * weight[i];
  }
}

class QuantizedMatmul : public mx::UnaryPrimitive {
 public:
  // `panels`: the weights' rows when they come in panels (the int8 mode), else 0.
  QuantizedMatmul(mx::Stream s, const Kernels* k, int group, int bits, int panels, Mode mode, Fused fused)
      : mx::UnaryPrimitive(s), k_(k), group_(group), bits_(bits), panels_(panels), mode_(mode), fused_(fused) {}

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    const mx::array& x = inputs[0];
    const mx::array& w = inputs[1];
    const mx::array& scales = inputs[2];
    const mx::array& biases = inputs[3];
    for (const mx::array* a : {&w, &scales, &biases}) {
      if (!a->flags().row_contiguous) throw std::invalid_argument("mlx_serving quantized_matmul: weights must be row-contiguous");
    }
    out.set_data(mx::allocator::malloc(out.nbytes()));
    auto& encoder = mx::cpu::get_command_encoder(stream());
    for (const auto& in : inputs) encoder.set_input_array(in);
    encoder.set_output_array(out);
    const int K = x.shape(-1);
    const int M = K == 0 ? 0 : (int)(x.size() / K);
    const int N = panels_ ? panels_ : w.shape(0);
    Matrix W{{w.data<uint8_t>(), scales.data<float>(), biases.data<float>(), N, K, group_, bits_},
             {w.data<uint32_t>(), scales.data<float>(), biases.data<float>(), N, K, group_, bits_},
             panels_ > 0};
    // Inputs after the weights: the norm's weight, then the addend.
    std::optional<mx::array> norm, add;
    size_t next = 4;
    if (fused_.norm) norm = inputs[next++];
    if (fused_.add) add = inputs[next++];
    encoder.dispatch([k = k_, mode = mode_, eps = fused_.eps, x, norm, add, M, W, out_ptr = out.data<float>()]() {
      if (M == 0 || W.rows.N == 0) return;
      std::vector<float> packed, normed, addend;
      const float* xp = row_major(x, packed);
      if (norm) {
        normed.resize((size_t)M * W.rows.K);
        std::vector<float> weight_buffer;
        rms_norm_rows(xp, row_major(*norm, weight_buffer), eps, M, W.rows.K, normed.data());
        xp = normed.data();
      }
      compute(k, mode, xp, M, W, out_ptr);
      if (add) {
        const float* a = row_major(*add, addend);
        const size_t n = (size_t)M * W.rows.N;
        for (size_t i = 0; i < n; ++i) out_ptr[i] = a[i] + out_ptr[i];
      }
    });
  }

  void eval_gpu(const std::vector<mx::array>&, mx::array&) override {
    throw std::runtime_error("mlx_serving quantized_matmul runs on the CPU only");
  }

  const char* name() const override { return "MlxServingQuantizedMatmul"; }

  bool is_equivalent(const mx::Primitive& other) const override {
    auto* o = dynamic_cast<const QuantizedMatmul*>(&other);
    return o && o->k_ == k_ && o->group_ == group_ && o->bits_ == bits_ && o->panels_ == panels_ && o->mode_ == mode_ &&
           o->fused_.norm == fused_.norm && o->fused_.eps == fused_.eps && o->fused_.add == fused_.add;
  }

 private:
  const Kernels* k_;
  int group_, bits_, panels_;
  Mode mode_;
  Fused fused_;
};

// A quantized matrix's three arrays.
struct Parts {
  mx::array w, scales, biases;
};

// MLX's layout [N, ...] regrouped in panels of 8 rows [ceil(N / 8), ..., 8]
// (zero rows pad the last panel); lazy.
Parts pack(const Parts& m) {
  const int N = m.w.shape(0), P = (N + 7) / 8;
  auto panels = [&](const mx::array& a) {
    const mx::array padded = P * 8 == N ? a : mx::pad(a, std::vector<int>{0}, mx::Shape{0}, mx::Shape{P * 8 - N});
    return mx::contiguous(mx::transpose(mx::reshape(padded, {P, 8, a.shape(1)}), {0, 2, 1}));
  };
  return {panels(m.w), panels(m.scales), panels(m.biases)};
}

// Panels back in MLX's layout, `rows` rows; lazy.
Parts unpack(const Parts& m, int rows) {
  auto back = [&](const mx::array& a) {
    mx::array flat = mx::reshape(mx::transpose(a, {0, 2, 1}), {a.shape(0) * 8, a.shape(1)});
    return mx::contiguous(mx::slice(flat, {0, 0}, {rows, a.shape(1)}));
  };
  return {back(m.w), back(m.scales), back(m.biases)};
}

// Rows `ids` (any shape) of a matrix in panels, in MLX's layout: [..., words],
// [..., groups] twice; lazy. What an embedding lookup reads.
Parts panel_rows(const Parts& m, const mx::array& ids) {
  const mx::array flat = mx::astype(mx::flatten(ids), mx::int32);
  const mx::array panel = mx::floor_divide(flat, mx::array(8)), lane = mx::remainder(flat, mx::array(8));
  auto rows = [&](const mx::array& a) {
    // [T, width, 8], then each id's lane: [T, width].
    const mx::array picked = mx::take(a, panel, 0);
    const mx::array lanes = mx::broadcast_to(mx::reshape(lane, {-1, 1, 1}), {picked.shape(0), a.shape(1), 1});
    mx::Shape shape = ids.shape();
    shape.push_back(a.shape(1));
    return mx::reshape(mx::take_along_axis(picked, lanes, 2), std::move(shape));
  };
  return {rows(m.w), rows(m.scales), rows(m.biases)};
}

// `add + rms_norm(x, norm, eps) @ dequantize(w)^T`, each part optional; with
// `panels` > 0 the weights come in panels of that many rows.
mx::array quantized_matmul(const mx::array& x, Parts m, int panels, int group, int bits, Mode mode, Isa isa,
                           const mx::array* norm, float eps, const mx::array* add) {
  const size_t dims = panels ? 3 : 2;
  if (m.w.ndim() != dims || m.w.dtype() != mx::uint32 || m.scales.ndim() != dims || m.biases.ndim() != dims || x.ndim() < 1 ||
      (panels && (m.w.shape(2) != 8 || m.w.shape(0) != (panels + 7) / 8))) {
    throw std::invalid_argument(panels ? "quantized_matmul: expected uint32 weight panels [ceil(N / 8), K * bits / 32, 8] with 3-D scales and biases"
                                       : "quantized_matmul: expected uint32 weights [N, K * bits / 32] with 2-D scales and biases");
  }
  // The f32 kernels read MLX's layout, the int8 ones panels.
  if (panels && mode == kF32) {
    m = unpack(m, panels);
    panels = 0;
  }
  const int N = panels ? panels : m.w.shape(0);
  const int K = x.shape(-1);
  const int P = panels ? m.w.shape(0) : N;
  mx::Shape shape = x.shape();
  shape.back() = N;
  const Kernels* k = kernels_for(resolve(isa));
  // Our kernels take f32 activations (the CPU's compute dtype); a model run in
  // 16 bits (MLX_SERVING_DTYPE) takes MLX's op.
  const bool ours = k && x.dtype() == mx::float32 && (bits == 4 || bits == 8) && (group == 32 || group == 64 || group == 128) && K % group == 0 &&
                    (int64_t)m.w.shape(1) * 32 == (int64_t)K * bits && m.scales.shape(0) == P && m.biases.shape(0) == P &&
                    m.scales.shape(1) == K / group && m.biases.shape(1) == K / group && mx::default_device() == mx::Device::cpu &&
                    (!norm || (norm->ndim() == 1 && norm->shape(0) == K)) && (!add || add->shape() == shape);
  if (!ours) {
    if (panels) m = unpack(m, panels);
    mx::array y = mx::quantized_matmul(norm ? mx::fast::rms_norm(x, *norm, eps) : x, m.w, m.scales, m.biases, true, group, bits,
                                       "affine");
    return add ? mx::add(*add, y) : y;
  }
  auto f32 = [](const mx::array& a) { return a.dtype() == mx::float32 ? a : mx::astype(a, mx::float32); };
  if (mode == kInt8 && !panels) {
    m = pack({m.w, f32(m.scales), f32(m.biases)});
    panels = N;
  }
  std::vector<mx::array> inputs{f32(x), m.w, f32(m.scales), f32(m.biases)};
  Fused fused{norm != nullptr, eps, add != nullptr};
  if (norm) inputs.push_back(f32(*norm));
  if (add) inputs.push_back(f32(*add));
  auto stream = mx::default_stream(mx::Device::cpu);
  return mx::array(std::move(shape), mx::float32, std::make_shared<QuantizedMatmul>(stream, k, group, bits, panels, mode, fused),
                   std::move(inputs));
}

}  // namespace

const float* row_major(const mx::array& x, std::vector<float>& buffer) {
  if (x.flags().row_contiguous) return x.data<float>();
  buffer.resize(x.size());
  const float* src = x.data<float>();
  const auto& shape = x.shape();
  const auto& strides = x.strides();
  for (size_t i = 0; i < x.size(); ++i) {
    size_t rest = i;
    int64_t offset = 0;
    for (int dim = (int)shape.size() - 1; dim >= 0; --dim) {
      offset += (int64_t)(rest % shape[dim]) * strides[dim];
      rest /= shape[dim];
    }
    buffer[i] = src[offset];
  }
  return buffer.data();
}

void set_error(char* err, size_t len, const char* what) {
  if (err && len) {
    std::snprintf(err, len, "%s", what);
  }
}

void parallel_for(int n, int chunk, void (*fn)(void*, int, int), void* ctx) { Pool::get().parallel_for(n, chunk, fn, ctx); }

bool cpu_has_avx2() { return resolve(kAuto) != kMlx && has_isa(kAvx2); }

bool cpu_has_avx512() { return resolve(kAuto) == kAvx512; }

}  // namespace mlx_serving::qmm

using namespace mlx_serving::qmm;

extern "C" {

// y = x @ dequantize(w)^T into *out (a new heap mx::array, the ctx of an
// mlx_array). panels: 0 for weights in MLX's layout, else their rows N when
// they come in panels (mlx_serving_qmm_pack). mode: 0 int8 activations, 1 f32
// activations. isa: 0 best available, 1 AVX2, 2 AVX-512 VNNI, 3 MLX's own op,
// 4 AVX-VNNI. Returns 0, or 1 with a message in err.
// With `norm` (a weight [K], or null) x is RMS-normalized first (epsilon
// `eps`); with `add` (null, or an array of the output's shape) it is added to
// the product.
int mlx_serving_qmm(void** out, void* x, void* w, void* scales, void* biases, int panels, int group, int bits, int mode,
                    int isa, void* norm, float eps, void* add, char* err, size_t err_len) {
  try {
    auto get = [](void* p) -> const mx::array& { return *static_cast<const mx::array*>(p); };
    mx::array y = quantized_matmul(get(x), {get(w), get(scales), get(biases)}, panels, group, bits, mode == 1 ? kF32 : kInt8,
                                   isa >= 0 && isa <= 4 ? static_cast<Isa>(isa) : kAuto,
                                   norm ? &get(norm) : nullptr, eps, add ? &get(add) : nullptr);
    *out = new mx::array(std::move(y));
    return 0;
  } catch (const std::exception& e) {
    set_error(err, err_len, e.what());
    return 1;
  }
}

// The three arrays of a quantized matrix, reshaped (lazily) into out[0..3] as
// new heap arrays. op: 0 pack MLX's layout into panels; 1 unpack panels of
// `rows` rows; 2 the rows `ids` of panels in MLX's layout. Returns 0, or 1
// with a message in err.
int mlx_serving_qmm_layout(void** out, void* w, void* scales, void* biases, int op, int rows, void* ids, char* err,
                           size_t err_len) {
  try {
    auto get = [](void* p) -> const mx::array& { return *static_cast<const mx::array*>(p); };
    const Parts m{get(w), get(scales), get(biases)};
    const Parts r = op == 0 ? pack(m) : op == 1 ? unpack(m, rows) : panel_rows(m, get(ids));
    out[0] = new mx::array(r.w);
    out[1] = new mx::array(r.scales);
    out[2] = new mx::array(r.biases);
    return 0;
  } catch (const std::exception& e) {
    set_error(err, err_len, e.what());
    return 1;
  }
}

// Whether the kernels of `isa` (numbered as above) run on this CPU; isa 0 asks
// which set is in use (its number, or 3 when MLX's op serves every call).
int mlx_serving_qmm_isa(int isa) {
  if (isa == 0) return resolve(kAuto);
  return isa == kMlx || has_isa(static_cast<Isa>(isa)) ? 1 : 0;
}

// The version of the MLX headers this file was compiled against.
const char* mlx_serving_mlx_header_version() {
#define QMM_STR2(x) #x
#define QMM_STR(x) QMM_STR2(x)
  return QMM_STR(MLX_VERSION_MAJOR) "." QMM_STR(MLX_VERSION_MINOR) "." QMM_STR(MLX_VERSION_PATCH);
}

// The version of the MLX runtime loaded.
const char* mlx_serving_mlx_runtime_version() { return mx::version(); }

// Threads the kernels use (the pool's workers plus the calling thread).
int mlx_serving_qmm_threads() { return Pool::get().threads(); }

}  // extern "C"
