// CudaBackend against CpuBackend, op by op, forward and backward, on small
// seeded shapes: inputs go in through each backend's own memory methods
// (Allocate, CopyToBackend), outputs come back through CopyToHost, so the
// memory methods are exercised on every op. Outputs start as NaN bytes, so
// an output an op fails to overwrite shows up.
//
// Built twice: on the CUDA grid emulator (:backend_cuda_emulated_test, every
// CI run) and with nvcc (:backend_cuda_test, --config=cuda; skips without a
// device).
//
// Tolerance: the backend adds no arithmetic of its own; it forwards to the
// twins, so it is held to the twins' tolerance (kernels_cuda_test.cc):
// |cuda - cpu| <= 2e-4 * max(1, max|cpu|) + 1e-3 * |cpu|, for the
// different summation orders of cuBLAS/OpenBLAS and GPU FMA. Exact where
// the twins are exact by construction (data movement, gather,
// deterministic segment sum, top-K, select, AddInto's one addition).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/backend_buffer.h"
#include "kernels/cpu_test_util.h"

namespace mim::kernels {
namespace {

using testing::RandomVec;

constexpr double kAtol = 2e-4, kRtol = 1e-3;

// Host vectors placed in one backend's memory, freed at the end.
class Mem {
 public:
  explicit Mem(const ComputeBackend& b) : b_(b) {}
  ~Mem() {
    for (void* p : ptrs_) b_.Free(p);
  }
  template <typename T>
  T* In(const std::vector<T>& v) {
    T* p = Alloc<T>(v.size());
    EXPECT_TRUE(b_.CopyToBackend(p, v.data(), v.size() * sizeof(T)).ok());
    return p;
  }
  // n elements of NaN bytes (0xff).
  template <typename T>
  T* Out(size_t n) {
    T* p = Alloc<T>(n);
    const std::vector<unsigned char> ff(n * sizeof(T), 0xff);
    EXPECT_TRUE(b_.CopyToBackend(p, ff.data(), ff.size()).ok());
    return p;
  }
  template <typename T>
  std::vector<T> Get(const T* p, size_t n) {
    std::vector<T> v(n);
    const absl::Status st = b_.CopyToHost(v.data(), p, n * sizeof(T));
    EXPECT_TRUE(st.ok()) << st;
    return v;
  }

 private:
  template <typename T>
  T* Alloc(size_t n) {
    void* p = nullptr;
    const absl::Status st = b_.Allocate(std::max<size_t>(n, 1) * sizeof(T), &p);
    EXPECT_TRUE(st.ok()) << st;
    ptrs_.push_back(p);
    return static_cast<T*>(p);
  }
  const ComputeBackend& b_;
  std::vector<void*> ptrs_;
};

// Named outputs of one run of an op on one backend.
struct Outputs {
  std::map<std::string, std::vector<float>> f;
  std::map<std::string, std::vector<int32_t>> i;
};
using OpRun = std::function<Outputs(const ComputeBackend&, Mem&)>;

// Runs `op` on both backends and compares every output: floats within the
// tolerance (or exactly), ints exactly.
void Compare(const OpRun& op, bool exact) {
  Mem cpu_mem(CpuBackend()), cuda_mem(CudaBackend());
  const Outputs cpu = op(CpuBackend(), cpu_mem);
  const Outputs cuda = op(CudaBackend(), cuda_mem);
  ASSERT_EQ(cpu.f.size(), cuda.f.size());
  for (const auto& [name, want] : cpu.f) {
    const std::vector<float>& got = cuda.f.at(name);
    ASSERT_EQ(want.size(), got.size()) << name;
    double scale = 1;
    for (float x : want) scale = std::max(scale, double(std::abs(x)));
    for (size_t k = 0; k < want.size(); ++k) {
      ASSERT_FALSE(std::isnan(got[k])) << name << " element " << k << " not written";
      if (exact) {
        ASSERT_EQ(want[k], got[k]) << name << " element " << k;
      } else {
        ASSERT_NEAR(want[k], got[k], kAtol * scale + kRtol * std::abs(want[k]))
            << name << " element " << k;
      }
    }
  }
  for (const auto& [name, want] : cpu.i) {
    EXPECT_EQ(want, cuda.i.at(name)) << name;
  }
}

#define OK(expr)                                  \
  do {                                            \
    const absl::Status _st = (expr);              \
    EXPECT_TRUE(_st.ok()) << #expr << ": " << _st; \
  } while (0)

constexpr int64_t kB = 5, kL = 7, kD = 6, kDm = 9;
// Row 0 full, row 1 empty, the rest in between.
const std::vector<int32_t> kLens = {7, 0, 3, 5, 1};

TEST(CudaBackendTest, NameAndMemory) {
  SKIP_WITHOUT_CUDA();
  EXPECT_EQ(CudaBackend().name(), "cuda");
  EXPECT_FALSE(CudaBackend().host_memory());
  EXPECT_EQ(CpuBackend().name(), "cpu");
  EXPECT_TRUE(CpuBackend().host_memory());
  // Pinned host staging -> device -> device copy -> host; Zero.
  const ComputeBackend& b = CudaBackend();
  const std::vector<float> v = RandomVec<float>(1000, 1);
  void* host = nullptr;
  OK(b.AllocateHost(v.size() * sizeof(float), &host));
  ASSERT_NE(host, nullptr);
  std::memcpy(host, v.data(), v.size() * sizeof(float));
  BackendArray<float> a(&b), c(&b);
  OK(a.Resize(1000));
  OK(c.ResizeZeroed(1000));
  OK(b.CopyToBackend(a.data(), host, a.bytes()));
  OK(b.Copy(c.data(), a.data(), a.bytes()));
  std::vector<float> back(1000);
  OK(b.CopyToHost(back.data(), c.data(), c.bytes()));
  b.FreeHost(host);
  EXPECT_EQ(back, v);
  OK(b.Zero(c.data() + 10, 5 * sizeof(float)));
  OK(b.CopyToHost(back.data(), c.data(), c.bytes()));
  for (int k = 0; k < 1000; ++k) {
    ASSERT_EQ(back[k], k >= 10 && k < 15 ? 0.0f : v[k]) << k;
  }
}

TEST(CudaBackendTest, CopyColumnsAndAddInto) {
  SKIP_WITHOUT_CUDA();
  Compare(
      [](const ComputeBackend& b, Mem& m) {
        // A [4 x 3] block into columns 2..4 of a [4 x 8] matrix and back.
        const auto src = RandomVec<float>(4 * 3, 2);
        float* s = m.In(src);
        float* wide = m.In(std::vector<float>(4 * 8, 0.5f));
        OK(b.CopyColumns({4, 3, 3, 8}, s, wide + 2));
        float* narrow = m.Out<float>(4 * 3);
        OK(b.CopyColumns({4, 3, 8, 3}, wide + 2, narrow));
        float* acc = m.In(RandomVec<float>(50, 3));
        OK(b.AddInto(50, m.In(RandomVec<float>(50, 4)), acc));
        Outputs o;
        o.f["wide"] = m.Get(wide, 4 * 8);
        o.f["narrow"] = m.Get(narrow, 4 * 3);
        o.f["acc"] = m.Get(acc, 50);
        EXPECT_EQ(o.f["narrow"], src);
        return o;
      },
      /*exact=*/true);
}

TEST(CudaBackendTest, EmbeddingGatherAndSegmentSum) {
  SKIP_WITHOUT_CUDA();
  const GatherShape s{11, kD, 40};
  std::vector<int32_t> index(s.num_indices);
  const auto r = RandomVec<double>(index.size(), 5, 0, 1);
  for (size_t k = 0; k < index.size(); ++k) {
    index[k] = k % 7 == 3 ? -1 : static_cast<int32_t>(r[k] * s.rows);
  }
  const auto table = RandomVec<float>(s.rows * s.dim, 6);
  const auto grad_out = RandomVec<float>(s.num_indices * s.dim, 7);
  Compare(
      [&](const ComputeBackend& b, Mem& m) {
        const int32_t* idx = m.In(index);
        float* out = m.Out<float>(s.num_indices * s.dim);
        OK(b.EmbeddingGather(s, m.In(table), idx, out));
        float* grad = m.Out<float>(s.rows * s.dim);
        OK(b.EmbeddingGatherBackward(s, m.In(grad_out), idx,
                                     GradMode::kDeterministic, grad));
        Outputs o;
        o.f["out"] = m.Get(out, s.num_indices * s.dim);
        o.f["grad_table"] = m.Get(grad, s.rows * s.dim);
        return o;
      },
      /*exact=*/true);
  Compare(
      [&](const ComputeBackend& b, Mem& m) {
        float* grad = m.Out<float>(s.rows * s.dim);
        OK(b.EmbeddingGatherBackward(s, m.In(grad_out), m.In(index),
                                     GradMode::kAtomic, grad));
        Outputs o;
        o.f["grad_table_atomic"] = m.Get(grad, s.rows * s.dim);
        return o;
      },
      /*exact=*/false);
}

TEST(CudaBackendTest, EmbeddingGatherRefusesAnIndexOutOfRange) {
  SKIP_WITHOUT_CUDA();
  for (const ComputeBackend* b : {&CpuBackend(), &CudaBackend()}) {
    Mem m(*b);
    const absl::Status st = b->EmbeddingGather(
        {3, 2, 2}, m.In(std::vector<float>(6, 1.0f)),
        m.In(std::vector<int32_t>{0, 3}), m.Out<float>(4));
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << b->name() << ": " << st;
  }
}

TEST(CudaBackendTest, MaskedMeanPool) {
  SKIP_WITHOUT_CUDA();
  const SeqShape s{kB, kL, kD};
  const auto x = RandomVec<float>(kB * kL * kD, 8);
  const auto go = RandomVec<float>(kB * kD, 9);
  Compare(
      [&](const ComputeBackend& b, Mem& m) {
        const int32_t* lens = m.In(kLens);
        float* out = m.Out<float>(kB * kD);
        OK(b.MaskedMeanPoolForward(s, m.In(x), lens, out));
        float* gx = m.Out<float>(kB * kL * kD);
        OK(b.MaskedMeanPoolBackward(s, m.In(go), lens, gx));
        Outputs o;
        o.f["out"] = m.Get(out, kB * kD);
        o.f["grad_x"] = m.Get(gx, kB * kL * kD);
        return o;
      },
      /*exact=*/false);
}

TEST(CudaBackendTest, TopKSelectAndSelectRows) {
  SKIP_WITHOUT_CUDA();
  const SeqShape s{kB, kL, kD};
  constexpr int kK = 3;
  const auto x = RandomVec<float>(kB * kL * kD, 10);
  const auto t = RandomVec<float>(kB * kD, 11);
  const auto go = RandomVec<float>(kB * kK * kD, 12);
  Compare(
      [&](const ComputeBackend& b, Mem& m) {
        const float* xs = m.In(x);
        int32_t* pos = m.Out<int32_t>(kB * kK);
        int32_t* new_lens = m.Out<int32_t>(kB);
        OK(b.TopKSelect(s, xs, m.In(t), m.In(kLens), kK, pos, new_lens));
        float* sel = m.Out<float>(kB * kK * kD);
        OK(b.SelectRowsForward(s, xs, pos, kK, sel));
        float* gx = m.Out<float>(kB * kL * kD);
        OK(b.SelectRowsBackward(s, m.In(go), pos, kK, gx));
        Outputs o;
        o.i["positions"] = m.Get(pos, kB * kK);
        o.i["new_lens"] = m.Get(new_lens, kB);
        o.f["selected"] = m.Get(sel, kB * kK * kD);
        o.f["grad_x"] = m.Get(gx, kB * kL * kD);
        return o;
      },
      /*exact=*/true);
}

// Smallest |pre-activation| of either hidden layer of the attention MLP
// over the valid behaviours, in double (layout: attention_ops.h). Near 0,
// GPU rounding could put the twins on opposite sides of a ReLU kink, so
// the inputs below are checked to stay clear of it.
double MinAbsPreActivation(const SeqShape& s, const AttentionMlpShape& a,
                           const std::vector<int32_t>& lens,
                           const std::vector<float>& h,
                           const std::vector<float>& ht,
                           const std::vector<std::vector<float>>& p) {
  const int64_t d = s.dim, h1 = a.hidden1, h2 = a.hidden2;
  double best = std::numeric_limits<double>::infinity();
  std::vector<double> a1(h1);
  for (int64_t b = 0; b < s.batch; ++b) {
    for (int64_t i = 0; i < lens[b]; ++i) {
      const float* x = &h[(b * s.max_len + i) * d];
      const float* t = &ht[b * d];
      for (int64_t j = 0; j < h1; ++j) {
        double z = p[1][j];
        for (int64_t k = 0; k < d; ++k) {
          z += double(x[k]) * p[0][k * h1 + j] +
               double(t[k]) * p[0][(d + k) * h1 + j] +
               (double(x[k]) - t[k]) * p[0][(2 * d + k) * h1 + j] +
               double(x[k]) * t[k] * p[0][(3 * d + k) * h1 + j];
        }
        best = std::min(best, std::abs(z));
        a1[j] = std::max(z, 0.0);
      }
      for (int64_t j = 0; j < h2; ++j) {
        double z = p[3][j];
        for (int64_t q = 0; q < h1; ++q) z += a1[q] * p[2][q * h2 + j];
        best = std::min(best, std::abs(z));
      }
    }
  }
  return best;
}

TEST(CudaBackendTest, DinAttention) {
  SKIP_WITHOUT_CUDA();
  const SeqShape s{kB, kL, kD};
  const AttentionMlpShape a{8, 4};
  const auto h = RandomVec<float>(kB * kL * kD, 13);
  const auto ht = RandomVec<float>(kB * kD, 14);
  const std::vector<std::vector<float>> params = {
      RandomVec<float>(AttentionW1Size(kD, a), 15, -0.3, 0.3),
      RandomVec<float>(a.hidden1, 16, 0, 0.2),
      RandomVec<float>(a.hidden1 * a.hidden2, 17, -0.3, 0.3),
      RandomVec<float>(a.hidden2, 18, 0, 0.2),
      RandomVec<float>(a.hidden2, 19),
      RandomVec<float>(1, 20)};
  const auto go = RandomVec<float>(kB * kD, 21);
  // 1e-4 is 500x the twins' float disagreement at these sizes.
  ASSERT_GT(MinAbsPreActivation(s, a, kLens, h, ht, params), 1e-4);
  Compare(
      [&](const ComputeBackend& b, Mem& m) {
        const float *hs = m.In(h), *hts = m.In(ht);
        const int32_t* lens = m.In(kLens);
        AttentionMlpParams p{m.In(params[0]), m.In(params[1]), m.In(params[2]),
                             m.In(params[3]), m.In(params[4]), m.In(params[5])};
        float* scores = m.Out<float>(kB * kL);
        float* out = m.Out<float>(kB * kD);
        OK(b.DinAttentionForward(s, a, hs, hts, lens, p, scores, out));
        float* gh = m.Out<float>(kB * kL * kD);
        float* ght = m.Out<float>(kB * kD);
        std::vector<float*> g;
        for (const auto& v : params) g.push_back(m.Out<float>(v.size()));
        OK(b.DinAttentionBackward(s, a, hs, hts, lens, p, m.In(go), gh, ght,
                                  {g[0], g[1], g[2], g[3], g[4], g[5]}));
        Outputs o;
        o.f["scores"] = m.Get(scores, kB * kL);
        o.f["out"] = m.Get(out, kB * kD);
        o.f["grad_h"] = m.Get(gh, kB * kL * kD);
        o.f["grad_h_t"] = m.Get(ght, kB * kD);
        for (size_t k = 0; k < g.size(); ++k) {
          o.f["grad_param" + std::to_string(k)] = m.Get(g[k], params[k].size());
        }
        return o;
      },
      /*exact=*/false);
}

TEST(CudaBackendTest, ContentFusion) {
  SKIP_WITHOUT_CUDA();
  ContentShape s;
  s.content = {kB, kL, kDm};
  s.id_dim = kD;
  auto mv = RandomVec<float>(kB * kL * kDm, 22);
  // One all-zero content vector: alpha must be 0 there on both.
  std::fill(mv.begin(), mv.begin() + kDm, 0.0f);
  const auto mt = RandomVec<float>(kB * kDm, 23);
  const auto h = RandomVec<float>(kB * kL * kD, 24);
  const auto gmm = RandomVec<float>(kB * kDm, 25);
  const auto gf = RandomVec<float>(kB * kD, 26);
  Compare(
      [&](const ComputeBackend& b, Mem& m) {
        const float *ms = m.In(mv), *mts = m.In(mt), *hs = m.In(h);
        const int32_t* lens = m.In(kLens);
        float* alpha = m.Out<float>(kB * kL);
        float* hmm = m.Out<float>(kB * kDm);
        float* hf = m.Out<float>(kB * kD);
        OK(b.ContentFusionForward(s, ms, mts, hs, lens, alpha, hmm, hf));
        float* gm = m.Out<float>(kB * kL * kDm);
        float* gmt = m.Out<float>(kB * kDm);
        float* gh = m.Out<float>(kB * kL * kD);
        OK(b.ContentFusionBackward(s, ms, mts, hs, lens, m.In(gmm), m.In(gf),
                                   gm, gmt, gh));
        Outputs o;
        o.f["alpha"] = m.Get(alpha, kB * kL);
        o.f["h_mm"] = m.Get(hmm, kB * kDm);
        o.f["h_fusion"] = m.Get(hf, kB * kD);
        o.f["grad_m"] = m.Get(gm, kB * kL * kDm);
        o.f["grad_m_t"] = m.Get(gmt, kB * kDm);
        o.f["grad_h"] = m.Get(gh, kB * kL * kD);
        return o;
      },
      /*exact=*/false);
}

TEST(CudaBackendTest, DenseLayers) {
  SKIP_WITHOUT_CUDA();
  const DenseShape s{9, 13, 5};
  const auto x = RandomVec<float>(s.rows * s.in, 27);
  const auto w = RandomVec<float>(s.in * s.out, 28);
  const auto bias = RandomVec<float>(s.out, 29);
  const auto gy = RandomVec<float>(s.rows * s.out, 30);
  for (Activation act : {Activation::kNone, Activation::kRelu}) {
    SCOPED_TRACE(act == Activation::kRelu ? "relu" : "linear");
    Compare(
        [&](const ComputeBackend& b, Mem& m) {
          const float *xs = m.In(x), *ws = m.In(w);
          float* y = m.Out<float>(s.rows * s.out);
          OK(b.DenseForward(s, xs, ws, m.In(bias), act, y));
          float* gx = m.Out<float>(s.rows * s.in);
          float* gw = m.Out<float>(s.in * s.out);
          float* gb = m.Out<float>(s.out);
          OK(b.DenseBackward(s, xs, ws, y, m.In(gy), act, gx, gw, gb));
          Outputs o;
          o.f["y"] = m.Get(y, s.rows * s.out);
          o.f["grad_x"] = m.Get(gx, s.rows * s.in);
          o.f["grad_w"] = m.Get(gw, s.in * s.out);
          o.f["grad_b"] = m.Get(gb, s.out);
          return o;
        },
        /*exact=*/false);
  }
}

TEST(CudaBackendTest, LossAndAdam) {
  SKIP_WITHOUT_CUDA();
  constexpr int64_t kN = 37;
  const auto logits = RandomVec<float>(kN, 31, -4, 4);
  std::vector<float> labels(kN);
  for (int64_t k = 0; k < kN; ++k) labels[k] = k % 3 == 0 ? 1.0f : 0.0f;
  const auto grad = RandomVec<float>(kN, 32);
  const auto param = RandomVec<float>(kN, 33);
  const auto v0 = RandomVec<float>(kN, 34, 0, 0.1);
  const AdamConfig adam;
  Compare(
      [&](const ComputeBackend& b, Mem& m) {
        const float *z = m.In(logits), *y = m.In(labels);
        float* loss = m.Out<float>(1);
        OK(b.SigmoidCrossEntropyForward(kN, z, y, loss));
        float* gz = m.Out<float>(kN);
        OK(b.SigmoidCrossEntropyBackward(kN, z, y, gz));
        float* p = m.In(param);
        float* mm = m.In(std::vector<float>(kN, 0.01f));
        float* vv = m.In(v0);
        // Two steps: bias correction at t = 1 and t = 2.
        OK(b.AdamUpdate(adam, 1, kN, m.In(grad), p, mm, vv));
        OK(b.AdamUpdate(adam, 2, kN, m.In(grad), p, mm, vv));
        Outputs o;
        o.f["loss"] = m.Get(loss, 1);
        o.f["grad_logits"] = m.Get(gz, kN);
        o.f["param"] = m.Get(p, kN);
        o.f["m"] = m.Get(mm, kN);
        o.f["v"] = m.Get(vv, kN);
        return o;
      },
      /*exact=*/false);
}

}  // namespace
}  // namespace mim::kernels
