// CPU twins: forward against naive double references, every backward
// against central finite differences in double precision (the same
// templated code instantiated for double), plus error contracts.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <stdexcept>
#include <thread>
#include <cmath>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/attention_ops.h"
#include "kernels/common.h"
#include "kernels/content_ops.h"
#include "kernels/cpu_templates.h"
#include "kernels/cpu_util.h"
#include "kernels/cpu_test_util.h"
#include "kernels/dense_ops.h"
#include "kernels/embedding_ops.h"
#include "kernels/sequence_ops.h"
#include "kernels/simd.h"

namespace mim::kernels {
namespace {

using testing::Dot;
using testing::ExpectAllNear;
using testing::ExpectGradMatchesFiniteDiff;
using testing::RandomVec;
using V = std::vector<double>;

// The worker pool behind ParallelFor: every index exactly once, from
// concurrent callers and from inside a chunk (nested calls must not
// deadlock), with chunk boundaries that depend only on n and the threads.
TEST(ParallelForTest, CoversEveryIndexOnceFromConcurrentAndNestedCalls) {
  SetCpuThreads(3);
  constexpr int64_t kN = 1000;
  auto run_once = [&](std::vector<std::atomic<int>>* hits) {
    cpu::ParallelFor(kN, [&](int64_t lo, int64_t hi, int chunk) {
      EXPECT_EQ(lo, kN * chunk / 3);
      EXPECT_EQ(hi, kN * (chunk + 1) / 3);
      cpu::ParallelForBalanced(hi - lo, [&](int64_t a, int64_t b) {
        for (int64_t i = lo + a; i < lo + b; ++i) (*hits)[i]++;
      });
    });
  };
  std::vector<std::vector<std::atomic<int>>> hits(4);
  for (auto& h : hits) h = std::vector<std::atomic<int>>(kN);
  std::vector<std::thread> callers;
  for (int t = 0; t < 4; ++t) {
    callers.emplace_back([&, t] {
      for (int rep = 0; rep < 50; ++rep) run_once(&hits[t]);
    });
  }
  for (auto& c : callers) c.join();
  for (const auto& h : hits) {
    for (int64_t i = 0; i < kN; ++i) ASSERT_EQ(h[i].load(), 50) << "index " << i;
  }
  SetCpuThreads(1);
}

// Most chunks that run at the same time during fn's calls (each call
// sleeps, so chunks that can overlap do).
int MaxConcurrentChunks(const std::function<void(const std::function<void()>&)>& run) {
  std::atomic<int> active{0}, most{0};
  run([&] {
    const int now = ++active;
    int seen = most.load();
    while (now > seen && !most.compare_exchange_weak(seen, now)) {
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    --active;
  });
  return most.load();
}

// SetCpuThreads is the thread budget: however many chunks a call splits
// into (ParallelForBalanced and splits_per_thread > 1 make several per
// thread), at most CpuThreads() of them run at once.
TEST(ParallelForTest, RunsAtMostCpuThreadsChunksAtOnce) {
  for (int threads : {1, 2, 3}) {
    SCOPED_TRACE(::testing::Message() << "threads=" << threads);
    SetCpuThreads(threads);
    EXPECT_LE(MaxConcurrentChunks([](const std::function<void()>& work) {
                cpu::ParallelForBalanced(64, [&](int64_t lo, int64_t hi) {
                  work();
                });
              }),
              threads);
    EXPECT_LE(MaxConcurrentChunks([](const std::function<void()>& work) {
                cpu::ParallelFor(
                    64, [&](int64_t, int64_t, int) { work(); },
                    cpu::kSplitsPerThread);
              }),
              threads);
  }
  // A smaller budget after a larger one: the pool's extra workers idle.
  SetCpuThreads(8);
  cpu::ParallelForBalanced(64, [](int64_t, int64_t) {});
  SetCpuThreads(2);
  EXPECT_LE(MaxConcurrentChunks([](const std::function<void()>& work) {
              cpu::ParallelForBalanced(64, [&](int64_t, int64_t) { work(); });
            }),
            2);
  SetCpuThreads(1);
}

// An exception from a chunk reaches the caller once every chunk that
// started has finished (the job lives on the caller's stack), and the pool
// keeps working afterwards.
TEST(ParallelForTest, ExceptionFromAChunkReachesTheCaller) {
  SetCpuThreads(3);
  for (int thrower : {0, 5, 11}) {
    std::atomic<int> ran{0};
    EXPECT_THROW(cpu::ParallelForBalanced(12,
                                          [&](int64_t lo, int64_t hi) {
                                            std::this_thread::sleep_for(
                                                std::chrono::milliseconds(2));
                                            ++ran;
                                            if (lo == thrower) {
                                              throw std::runtime_error("chunk");
                                            }
                                          }),
                 std::runtime_error);
  }
  std::atomic<int> sum{0};
  cpu::ParallelForBalanced(100, [&](int64_t lo, int64_t hi) {
    sum += static_cast<int>(hi - lo);
  });
  EXPECT_EQ(sum.load(), 100);
  SetCpuThreads(1);
}

TEST(EmbeddingGatherTest, ForwardCopiesRowsAndZeroesPadding) {
  const GatherShape s{3, 2, 4};
  const std::vector<float> table = {1, 2, 3, 4, 5, 6};
  const std::vector<int32_t> index = {2, -1, 0, 2};
  std::vector<float> out(8, 9.f);
  ASSERT_TRUE(EmbeddingGatherCpu(s, table.data(), index.data(), out.data()).ok());
  EXPECT_THAT(out, ::testing::ElementsAre(5, 6, 0, 0, 1, 2, 5, 6));
}

TEST(EmbeddingGatherTest, RejectsOutOfRangeIndex) {
  const GatherShape s{3, 2, 1};
  const std::vector<float> table(6, 0.f);
  const std::vector<int32_t> index = {3};
  std::vector<float> out(2);
  EXPECT_EQ(EmbeddingGatherCpu(s, table.data(), index.data(), out.data()).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(EmbeddingGatherBackwardCpu(s, out.data(), index.data(),
                                       GradMode::kDeterministic, out.data())
                .code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(EmbeddingGatherTest, BackwardMatchesFiniteDifferences) {
  const GatherShape s{4, 3, 7};
  const std::vector<int32_t> index = {1, 3, 1, -1, 0, 1, 3};
  V table = RandomVec<double>(12, 1), r = RandomVec<double>(21, 2);
  V out(21), grad(12, 7.0);
  auto loss = [&] {
    EXPECT_TRUE(cpu::Gather<double>(s, table.data(), index.data(), out.data()).ok());
    return Dot(out, r);
  };
  ASSERT_TRUE(cpu::GatherBackward<double>(s, r.data(), index.data(), grad.data()).ok());
  ExpectGradMatchesFiniteDiff("grad_table", &table, loss, grad);
  for (int k = 0; k < 3; ++k) EXPECT_EQ(grad[2 * 3 + k], 0.0);  // row 2 unused
}

// Naive DIN reference: materialises the 4d input, as DIN writes it.
void NaiveDin(int64_t B, int64_t L, int64_t d, int64_t h1, int64_t h2,
              const V& h, const V& ht, const std::vector<int32_t>& lens,
              const V& w1, const V& b1, const V& w2, const V& b2, const V& w3,
              const V& b3, V* out) {
  out->assign(B * d, 0.0);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t i = 0; i < lens[b]; ++i) {
      V x(4 * d);
      for (int64_t k = 0; k < d; ++k) {
        const double hi = h[(b * L + i) * d + k], t = ht[b * d + k];
        x[k] = hi;
        x[d + k] = t;
        x[2 * d + k] = hi - t;
        x[3 * d + k] = hi * t;
      }
      V z1(h1), z2(h2);
      for (int64_t j = 0; j < h1; ++j) {
        double a = b1[j];
        for (int64_t k = 0; k < 4 * d; ++k) a += x[k] * w1[k * h1 + j];
        z1[j] = std::max(a, 0.0);
      }
      for (int64_t j = 0; j < h2; ++j) {
        double a = b2[j];
        for (int64_t k = 0; k < h1; ++k) a += z1[k] * w2[k * h2 + j];
        z2[j] = std::max(a, 0.0);
      }
      double sc = b3[0];
      for (int64_t j = 0; j < h2; ++j) sc += z2[j] * w3[j];
      for (int64_t k = 0; k < d; ++k) (*out)[b * d + k] += sc * h[(b * L + i) * d + k];
    }
  }
}

struct DinFixture {
  DinFixture(int64_t B, int64_t L, int64_t d, AttentionMlpShape m,
             std::vector<int32_t> lens_in)
      : s{B, L, d}, m(m), lens(std::move(lens_in)) {
    h = RandomVec<double>(B * L * d, 11);
    ht = RandomVec<double>(B * d, 12);
    w1 = RandomVec<double>(4 * d * m.hidden1, 13, -0.5, 0.5);
    b1 = RandomVec<double>(m.hidden1, 14, 0.0, 0.3);
    w2 = RandomVec<double>(m.hidden1 * m.hidden2, 15, -0.5, 0.5);
    b2 = RandomVec<double>(m.hidden2, 16, 0.0, 0.3);
    w3 = RandomVec<double>(m.hidden2, 17);
    b3 = RandomVec<double>(1, 18);
  }
  cpu::MlpParams<double> params() const {
    return {w1.data(), b1.data(), w2.data(), b2.data(), w3.data(), b3.data()};
  }
  SeqShape s;
  AttentionMlpShape m;
  std::vector<int32_t> lens;
  V h, ht, w1, b1, w2, b2, w3, b3;
};

TEST(DinAttentionTest, FusedForwardMatchesNaiveReference) {
  DinFixture f(4, 6, 33, AttentionMlpShape{}, {6, 0, 1, 4});
  V out(4 * 33), scores(4 * 6, 5.0), ref;
  ASSERT_TRUE(cpu::DinForward<double>(f.s, f.m, f.h.data(), f.ht.data(),
                                      f.lens.data(), f.params(), scores.data(),
                                      out.data()).ok());
  NaiveDin(4, 6, 33, 80, 40, f.h, f.ht, f.lens, f.w1, f.b1, f.w2, f.b2, f.w3,
           f.b3, &ref);
  ExpectAllNear(ref, out, 1e-12, 1e-10, "out");
  for (int i = 0; i < 6; ++i) EXPECT_EQ(scores[1 * 6 + i], 0.0);  // len 0
  for (int i = 1; i < 6; ++i) EXPECT_EQ(scores[2 * 6 + i], 0.0);  // padding
}

TEST(DinAttentionTest, BackwardMatchesFiniteDifferences) {
  DinFixture f(3, 5, 7, AttentionMlpShape{6, 4}, {5, 0, 2});
  const int64_t d = 7;
  V r = RandomVec<double>(3 * d, 19), out(3 * d);
  auto loss = [&] {
    EXPECT_TRUE(cpu::DinForward<double>(f.s, f.m, f.h.data(), f.ht.data(),
                                        f.lens.data(), f.params(), nullptr,
                                        out.data()).ok());
    return Dot(out, r);
  };
  V gh(f.h.size(), 9.0), ght(f.ht.size()), gw1(f.w1.size()), gb1(6), gw2(24),
      gb2(4), gw3(4), gb3(1);
  ASSERT_TRUE(cpu::DinBackward<double>(
                  f.s, f.m, f.h.data(), f.ht.data(), f.lens.data(), f.params(),
                  r.data(), gh.data(), ght.data(),
                  {gw1.data(), gb1.data(), gw2.data(), gb2.data(), gw3.data(),
                   gb3.data()}).ok());
  ExpectGradMatchesFiniteDiff("grad_h", &f.h, loss, gh);
  ExpectGradMatchesFiniteDiff("grad_h_t", &f.ht, loss, ght);
  ExpectGradMatchesFiniteDiff("grad_w1", &f.w1, loss, gw1);
  ExpectGradMatchesFiniteDiff("grad_b1", &f.b1, loss, gb1);
  ExpectGradMatchesFiniteDiff("grad_w2", &f.w2, loss, gw2);
  ExpectGradMatchesFiniteDiff("grad_b2", &f.b2, loss, gb2);
  ExpectGradMatchesFiniteDiff("grad_w3", &f.w3, loss, gw3);
  ExpectGradMatchesFiniteDiff("grad_b3", &f.b3, loss, gb3);
}

TEST(DinAttentionTest, ZeroDimGivesZerosWithoutBlasErrors) {
  DinFixture f(3, 4, 0, AttentionMlpShape{5, 3}, {4, 0, 2});
  V out, scores(12, 7.0);
  ASSERT_TRUE(cpu::DinForward<double>(f.s, f.m, f.h.data(), f.ht.data(),
                                      f.lens.data(), f.params(), scores.data(),
                                      out.data()).ok());
  EXPECT_EQ(scores[4], 0.0);  // row 1 has no behaviours
  V gw1(0), gb1(5, 9.0), gw2(15, 9.0), gb2(3, 9.0), gw3(3, 9.0), gb3(1, 9.0);
  V r, gh, ght;
  ASSERT_TRUE(cpu::DinBackward<double>(
                  f.s, f.m, f.h.data(), f.ht.data(), f.lens.data(), f.params(),
                  r.data(), gh.data(), ght.data(),
                  {gw1.data(), gb1.data(), gw2.data(), gb2.data(), gw3.data(),
                   gb3.data()}).ok());
  // out = sum score_i h_i is empty, so every gradient is zero.
  for (const V* g : {&gb1, &gw2, &gb2, &gw3, &gb3}) {
    for (double x : *g) EXPECT_EQ(x, 0.0);
  }
}

// Long sequences (150-200 behaviours, over a thousand rows per chunk),
// checked element by element against central differences on a sample of
// w1 and h_t and all of b1.
TEST(DinAttentionTest, BackwardWithManyRowsPerChunkMatchesFiniteDifferences) {
  std::vector<int32_t> lens(24);
  for (size_t b = 0; b < lens.size(); ++b) lens[b] = 150 + (b * 37) % 51;
  lens[5] = 0;
  DinFixture f(24, 200, 5, AttentionMlpShape{6, 4}, lens);
  const int64_t d = 5;
  V r = RandomVec<double>(24 * d, 19), out(24 * d);
  auto loss = [&] {
    EXPECT_TRUE(cpu::DinForward<double>(f.s, f.m, f.h.data(), f.ht.data(),
                                        f.lens.data(), f.params(), nullptr,
                                        out.data()).ok());
    return Dot(out, r);
  };
  V gh(f.h.size()), ght(f.ht.size()), gw1(f.w1.size()), gb1(6), gw2(24),
      gb2(4), gw3(4), gb3(1);
  ASSERT_TRUE(cpu::DinBackward<double>(
                  f.s, f.m, f.h.data(), f.ht.data(), f.lens.data(), f.params(),
                  r.data(), gh.data(), ght.data(),
                  {gw1.data(), gb1.data(), gw2.data(), gb2.data(), gw3.data(),
                   gb3.data()}).ok());
  ExpectGradMatchesFiniteDiff("grad_w1", &f.w1, loss, gw1, 1e-5, 1e-6, 1e-6, 7);
  ExpectGradMatchesFiniteDiff("grad_b1", &f.b1, loss, gb1, 1e-5, 1e-6, 1e-6);
  ExpectGradMatchesFiniteDiff("grad_h_t", &f.ht, loss, ght, 1e-5, 1e-6, 1e-6, 3);
}

TEST(DinAttentionTest, TwoThreadsAgreeWithOneAndAreRepeatable) {
  const SeqShape s{9, 8, 16};
  const AttentionMlpShape m;
  std::vector<int32_t> lens = {8, 0, 3, 8, 1, 5, 7, 2, 8};
  auto h = RandomVec<float>(9 * 8 * 16, 1), ht = RandomVec<float>(9 * 16, 2);
  auto w1 = RandomVec<float>(4 * 16 * 80, 3, -0.3, 0.3),
       b1 = RandomVec<float>(80, 4), w2 = RandomVec<float>(80 * 40, 5, -0.3, 0.3),
       b2 = RandomVec<float>(40, 6), w3 = RandomVec<float>(40, 7),
       b3 = RandomVec<float>(1, 8), go = RandomVec<float>(9 * 16, 9);
  const AttentionMlpParams p{w1.data(), b1.data(), w2.data(),
                             b2.data(), w3.data(), b3.data()};
  auto run = [&](int threads, std::vector<float>* gw1) {
    SetCpuThreads(threads);
    std::vector<float> gh(h.size()), ght(ht.size()), gb1(80), gw2(3200),
        gb2(40), gw3(40), gb3(1);
    gw1->assign(w1.size(), 0.f);
    EXPECT_TRUE(DinAttentionBackwardCpu(
                    s, m, h.data(), ht.data(), lens.data(), p, go.data(),
                    gh.data(), ght.data(),
                    {gw1->data(), gb1.data(), gw2.data(), gb2.data(),
                     gw3.data(), gb3.data()}).ok());
  };
  std::vector<float> one, two_a, two_b;
  run(1, &one);
  run(2, &two_a);
  run(2, &two_b);
  SetCpuThreads(1);
  EXPECT_EQ(two_a, two_b);  // bit-identical run to run
  ExpectAllNear(one, two_a, 1e-5, 1e-5, "grad_w1 1 vs 2 threads");
}

// Dense backward over several row chunks (--threads > 1): chunk 0 writes
// grad_w and grad_b, the others add partial sums in chunk order. Every
// output matches the 1-thread (finite-difference checked) result, and is
// bit-identical run to run.
TEST(DenseTest, BackwardOverSeveralChunksMatchesOneThread) {
  const DenseShape s{7, 5, 4};
  auto x = RandomVec<float>(7 * 5, 11), w = RandomVec<float>(5 * 4, 12),
       b = RandomVec<float>(4, 13), gy = RandomVec<float>(7 * 4, 14);
  std::vector<float> y(7 * 4);
  ASSERT_TRUE(
      DenseForwardCpu(s, x.data(), w.data(), b.data(), Activation::kRelu,
                      y.data()).ok());
  struct Grads {
    std::vector<float> gx, gw, gb;
  };
  auto run = [&](int threads) {
    SetCpuThreads(threads);
    EXPECT_EQ(cpu::NumChunks(s.rows), std::min(threads, 7));
    Grads g{std::vector<float>(x.size()), std::vector<float>(w.size(), 9.f),
            std::vector<float>(4, 9.f)};
    EXPECT_TRUE(DenseBackwardCpu(s, x.data(), w.data(), y.data(), gy.data(),
                                 Activation::kRelu, g.gx.data(), g.gw.data(),
                                 g.gb.data()).ok());
    return g;
  };
  const Grads one = run(1), three_a = run(3), three_b = run(3);
  SetCpuThreads(1);
  EXPECT_EQ(three_a.gw, three_b.gw);
  EXPECT_EQ(three_a.gb, three_b.gb);
  EXPECT_EQ(three_a.gx, three_b.gx);
  ExpectAllNear(one.gw, three_a.gw, 1e-6, 1e-5, "grad_w 1 vs 3 threads");
  ExpectAllNear(one.gb, three_a.gb, 1e-6, 1e-5, "grad_b 1 vs 3 threads");
  ExpectAllNear(one.gx, three_a.gx, 1e-6, 1e-5, "grad_x 1 vs 3 threads");
}

TEST(DinAttentionTest, RejectsLengthOverMaxLen) {
  const SeqShape s{1, 2, 3};
  std::vector<int32_t> lens = {3};
  std::vector<float> buf(64);
  AttentionMlpParams p{buf.data(), buf.data(), buf.data(),
                       buf.data(), buf.data(), buf.data()};
  EXPECT_EQ(DinAttentionForwardCpu(s, AttentionMlpShape{}, buf.data(),
                                   buf.data(), lens.data(), p, nullptr,
                                   buf.data()).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ContentFusionTest, ForwardMatchesDefinition) {
  const ContentShape s{{2, 3, 5}, 4};
  std::vector<int32_t> lens = {2, 3};
  V m = RandomVec<double>(30, 1), mt = RandomVec<double>(10, 2),
    h = RandomVec<double>(24, 3), alpha(6), hmm(10), hfu(8);
  ASSERT_TRUE(cpu::ContentForward<double>(s, m.data(), mt.data(), h.data(),
                                          lens.data(), alpha.data(), hmm.data(),
                                          hfu.data()).ok());
  for (int b = 0; b < 2; ++b) {
    V emm(5, 0.0), efu(4, 0.0);
    for (int i = 0; i < lens[b]; ++i) {
      double dot = 0, nt = 0, nm = 0;
      for (int k = 0; k < 5; ++k) {
        dot += mt[b * 5 + k] * m[(b * 3 + i) * 5 + k];
        nt += mt[b * 5 + k] * mt[b * 5 + k];
        nm += m[(b * 3 + i) * 5 + k] * m[(b * 3 + i) * 5 + k];
      }
      const double a = dot / std::sqrt(nt * nm);  // eps is negligible here
      EXPECT_NEAR(alpha[b * 3 + i], a, 1e-7);
      for (int k = 0; k < 5; ++k) emm[k] += a * m[(b * 3 + i) * 5 + k];
      for (int k = 0; k < 4; ++k) efu[k] += a * h[(b * 3 + i) * 4 + k];
    }
    for (int k = 0; k < 5; ++k) EXPECT_NEAR(hmm[b * 5 + k], emm[k], 1e-7);
    for (int k = 0; k < 4; ++k) EXPECT_NEAR(hfu[b * 4 + k], efu[k], 1e-7);
  }
  EXPECT_EQ(alpha[2], 0.0);  // padding of row 0
}

// Naive double reference of the content forward, for any shape.
void ContentReference(const ContentShape& s, const V& m, const V& mt,
                      const V& h, const std::vector<int32_t>& lens, V* alpha,
                      V* hmm, V* hfu) {
  const int64_t B = s.content.batch, L = s.content.max_len,
                dm = s.content.dim, d = s.id_dim;
  alpha->assign(B * L, 0.0);
  hmm->assign(B * dm, 0.0);
  hfu->assign(B * d, 0.0);
  for (int64_t b = 0; b < B; ++b) {
    double nt = kContentCosineEps;
    for (int64_t k = 0; k < dm; ++k) nt += mt[b * dm + k] * mt[b * dm + k];
    for (int64_t i = 0; i < lens[b]; ++i) {
      const double* mi = &m[(b * L + i) * dm];
      double dot = 0, nm = kContentCosineEps;
      for (int64_t k = 0; k < dm; ++k) {
        dot += mt[b * dm + k] * mi[k];
        nm += mi[k] * mi[k];
      }
      const double a = dot / std::sqrt(nt * nm);
      (*alpha)[b * L + i] = a;
      for (int64_t k = 0; k < dm; ++k) (*hmm)[b * dm + k] += a * mi[k];
      for (int64_t k = 0; k < d; ++k) {
        (*hfu)[b * d + k] += a * h[(b * L + i) * d + k];
      }
    }
  }
}

// Widths on both sides of the 8-lane vectors and the 32/64-float register
// tiles, so the vector bodies, the 8-wide remainder and the scalar tails
// all run; in float both the AVX2 and the baseline path must give the same
// bits, and both must match the double reference.
TEST(ContentFusionTest, ForwardVectorPathsMatchReferenceAtAwkwardWidths) {
  const std::vector<std::pair<int64_t, int64_t>> dims = {
      {7, 5}, {8, 32}, {33, 7}, {64, 32}, {100, 70}, {32, 64}};
  for (const auto& [dm, d] : dims) {
    SCOPED_TRACE(::testing::Message() << "d_m=" << dm << " d=" << d);
    const int64_t B = 5, L = 11;
    const ContentShape s{{B, L, dm}, d};
    const std::vector<int32_t> lens = {11, 0, 1, 7, 10};
    const V m = RandomVec<double>(B * L * dm, 11), mt = RandomVec<double>(B * dm, 12),
            h = RandomVec<double>(B * L * d, 13);
    V ra, rmm, rfu;
    ContentReference(s, m, mt, h, lens, &ra, &rmm, &rfu);
    V alpha(B * L, 7.0), hmm(B * dm, 7.0), hfu(B * d, 7.0);
    ASSERT_TRUE(cpu::ContentForward<double>(s, m.data(), mt.data(), h.data(),
                                            lens.data(), alpha.data(),
                                            hmm.data(), hfu.data()).ok());
    ExpectAllNear(ra, alpha, 1e-12, 0, "alpha");
    ExpectAllNear(rmm, hmm, 1e-12, 0, "h_mm");
    ExpectAllNear(rfu, hfu, 1e-12, 0, "h_fusion");

    const std::vector<float> mf(m.begin(), m.end()), mtf(mt.begin(), mt.end()),
        hf(h.begin(), h.end());
    std::vector<float> out[2][3];
    for (int baseline = 0; baseline < 2; ++baseline) {
      cpu::ForceBaselineSimd(baseline == 1);
      auto& o = out[baseline];
      o[0].assign(B * L, 7.f);
      o[1].assign(B * dm, 7.f);
      o[2].assign(B * d, 7.f);
      ASSERT_TRUE(ContentFusionForwardCpu(s, mf.data(), mtf.data(), hf.data(),
                                          lens.data(), o[0].data(), o[1].data(),
                                          o[2].data()).ok());
      // alpha may be skipped: the outputs must not change.
      std::vector<float> mm2(B * dm), fu2(B * d);
      ASSERT_TRUE(ContentFusionForwardCpu(s, mf.data(), mtf.data(), hf.data(),
                                          lens.data(), nullptr, mm2.data(),
                                          fu2.data()).ok());
      EXPECT_EQ(mm2, o[1]);
      EXPECT_EQ(fu2, o[2]);
    }
    cpu::ForceBaselineSimd(false);
    for (int j = 0; j < 3; ++j) EXPECT_EQ(out[0][j], out[1][j]) << "output " << j;
    ExpectAllNear(ra, V(out[0][0].begin(), out[0][0].end()), 1e-5, 0, "float alpha");
    ExpectAllNear(rmm, V(out[0][1].begin(), out[0][1].end()), 1e-4, 1e-5, "float h_mm");
    ExpectAllNear(rfu, V(out[0][2].begin(), out[0][2].end()), 1e-4, 1e-5, "float h_fusion");
  }
}

// Every op refuses a null tensor it would read or write with
// INVALID_ARGUMENT naming that argument, and touches nothing.
TEST(CpuContractsTest, NullTensorsAreInvalidArgumentNamingThem) {
  std::vector<float> buf(4096, 1.f);
  std::vector<int32_t> lens = {2, 1}, idx = {0, 1, 0, 1};
  float* f = buf.data();
  const SeqShape s{2, 2, 4};
  auto expect_null = [](const absl::Status& st, const char* name) {
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << name << ": " << st;
    EXPECT_THAT(std::string(st.message()),
                ::testing::HasSubstr(std::string("'") + name + "'"));
  };
  expect_null(EmbeddingGatherCpu({2, 4, 4}, nullptr, idx.data(), f), "table");
  expect_null(EmbeddingGatherCpu({2, 4, 4}, f, idx.data(), nullptr), "out");
  expect_null(EmbeddingGatherBackwardCpu({2, 4, 4}, nullptr, idx.data(),
                                         GradMode::kDeterministic, f),
              "grad_out");
  expect_null(MaskedMeanPoolForwardCpu(s, nullptr, lens.data(), f), "x");
  expect_null(MaskedMeanPoolBackwardCpu(s, f, lens.data(), nullptr), "grad_x");
  expect_null(SelectRowsForwardCpu(s, f, nullptr, 1, f), "positions");
  expect_null(SelectRowsBackwardCpu(s, nullptr, idx.data(), 1, f), "grad_out");
  expect_null(TopKSelectCpu(s, f, nullptr, lens.data(), 1, idx.data(), idx.data()),
              "target");
  const ContentShape cs{s, 3};
  expect_null(ContentFusionBackwardCpu(cs, f, f, f, lens.data(), nullptr, f, f,
                                       f, f),
              "grad_mm");
  expect_null(DenseForwardCpu({2, 3, 4}, f, nullptr, f, Activation::kRelu, f), "w");
  expect_null(DenseBackwardCpu({2, 3, 4}, f, f, nullptr, f, Activation::kRelu,
                               f, f, f),
              "y");
  expect_null(SigmoidCrossEntropyForwardCpu(3, f, nullptr, f), "labels");
  expect_null(AdamUpdateCpu(AdamConfig{}, 1, 3, f, f, nullptr, f), "m");
  AttentionMlpParams din{f, f, nullptr, f, f, f};
  expect_null(DinAttentionForwardCpu(s, AttentionMlpShape{}, f, f, lens.data(),
                                     din, nullptr, f),
              "w2");
  din.w2 = f;
  expect_null(DinAttentionBackwardCpu(s, AttentionMlpShape{}, f, f, lens.data(),
                                      din, nullptr, f, f, {f, f, f, f, f, f}),
              "grad_out");
  for (float x : buf) ASSERT_EQ(x, 1.f);  // nothing was written
  // Negative shapes are refused too.
  EXPECT_EQ(SelectRowsForwardCpu({-1, 2, 4}, f, idx.data(), 1, f).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ContentFusionTest, ForwardRejectsNullPointers) {
  const ContentShape s{{1, 2, 3}, 2};
  const std::vector<int32_t> lens = {2};
  std::vector<float> m(6, 1.f), mt(3, 1.f), h(4, 1.f), hmm(3), hfu(2);
  const absl::Status st = ContentFusionForwardCpu(
      s, m.data(), nullptr, h.data(), lens.data(), nullptr, hmm.data(), hfu.data());
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()), ::testing::HasSubstr("m_t"));
}

TEST(ContentFusionTest, BackwardMatchesFiniteDifferences) {
  const ContentShape s{{3, 4, 6}, 5};
  std::vector<int32_t> lens = {4, 0, 2};
  V m = RandomVec<double>(72, 1), mt = RandomVec<double>(18, 2),
    h = RandomVec<double>(60, 3), rmm = RandomVec<double>(18, 4),
    rfu = RandomVec<double>(15, 5), hmm(18), hfu(15);
  auto loss = [&] {
    EXPECT_TRUE(cpu::ContentForward<double>(s, m.data(), mt.data(), h.data(),
                                            lens.data(), nullptr, hmm.data(),
                                            hfu.data()).ok());
    return Dot(hmm, rmm) + Dot(hfu, rfu);
  };
  V gm(72, 9.0), gmt(18), gh(60, 9.0);
  ASSERT_TRUE(cpu::ContentBackward<double>(s, m.data(), mt.data(), h.data(),
                                           lens.data(), rmm.data(), rfu.data(),
                                           gm.data(), gmt.data(), gh.data()).ok());
  ExpectGradMatchesFiniteDiff("grad_m", &m, loss, gm);
  ExpectGradMatchesFiniteDiff("grad_m_t", &mt, loss, gmt);
  ExpectGradMatchesFiniteDiff("grad_h", &h, loss, gh);
}

TEST(ContentFusionTest, ZeroVectorsGiveZeroAlphaAndFiniteGrads) {
  const ContentShape s{{1, 2, 3}, 2};
  std::vector<int32_t> lens = {2};
  V m = {0, 0, 0, 1, 2, 3}, mt = {0.5, -1, 2}, h = {1, 2, 3, 4};
  V alpha(2), hmm(3), hfu(2);
  ASSERT_TRUE(cpu::ContentForward<double>(s, m.data(), mt.data(), h.data(),
                                          lens.data(), alpha.data(), hmm.data(),
                                          hfu.data()).ok());
  EXPECT_EQ(alpha[0], 0.0);
  V r1 = {1, 1, 1}, r2 = {1, 1};
  auto loss = [&] {
    EXPECT_TRUE(cpu::ContentForward<double>(s, m.data(), mt.data(), h.data(),
                                            lens.data(), nullptr, hmm.data(),
                                            hfu.data()).ok());
    return Dot(hmm, r1) + Dot(hfu, r2);
  };
  V gm(6), gmt(3), gh(4);
  ASSERT_TRUE(cpu::ContentBackward<double>(s, m.data(), mt.data(), h.data(),
                                           lens.data(), r1.data(), r2.data(),
                                           gm.data(), gmt.data(), gh.data()).ok());
  for (double g : gm) EXPECT_TRUE(std::isfinite(g));
  // The smoothed norm has curvature scale sqrt(eps) = 1e-4 at zero, so the
  // step must be far below it.
  ExpectGradMatchesFiniteDiff("grad_m at zero", &m, loss, gm, 1e-9, 1e-6, 1e-4);
}

TEST(MeanPoolTest, ForwardAndBackward) {
  const SeqShape s{3, 4, 5};
  std::vector<int32_t> lens = {4, 0, 1};
  V x = RandomVec<double>(60, 1), r = RandomVec<double>(15, 2), out(15);
  ASSERT_TRUE(cpu::MeanPoolForward<double>(s, x.data(), lens.data(), out.data()).ok());
  for (int k = 0; k < 5; ++k) {
    EXPECT_NEAR(out[k], (x[k] + x[5 + k] + x[10 + k] + x[15 + k]) / 4, 1e-15);
    EXPECT_EQ(out[5 + k], 0.0);
    EXPECT_EQ(out[10 + k], x[40 + k]);
  }
  auto loss = [&] {
    EXPECT_TRUE(cpu::MeanPoolForward<double>(s, x.data(), lens.data(), out.data()).ok());
    return Dot(out, r);
  };
  V gx(60, 9.0);
  ASSERT_TRUE(cpu::MeanPoolBackward<double>(s, r.data(), lens.data(), gx.data()).ok());
  ExpectGradMatchesFiniteDiff("grad_x", &x, loss, gx);
}

TEST(TopKSelectTest, PicksLargestDotWithLowerIndexWinningTies) {
  const SeqShape s{3, 5, 1};
  // Scores equal x (target 1): row 0 has ties at 2.0 (positions 1, 3, 4).
  std::vector<float> x = {1, 2, 0, 2, 2,   5, 4, 3, 2, 1,   7, 7, 7, 7, 7};
  std::vector<float> t = {1, 1, 1};
  std::vector<int32_t> lens = {5, 0, 2};
  std::vector<int32_t> pos(6), nl(3);
  ASSERT_TRUE(TopKSelectCpu(s, x.data(), t.data(), lens.data(), 2, pos.data(),
                            nl.data()).ok());
  EXPECT_THAT(pos, ::testing::ElementsAre(1, 3, -1, -1, 0, 1));
  EXPECT_THAT(nl, ::testing::ElementsAre(2, 0, 2));
  EXPECT_EQ(TopKSelectCpu(s, x.data(), t.data(), lens.data(), 0, pos.data(),
                          nl.data()).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(SelectRowsTest, ForwardAndBackward) {
  const SeqShape s{2, 4, 3};
  std::vector<int32_t> pos = {3, 0, 0, -1, 2, -1};  // k = 3, repeats allowed
  V x = RandomVec<double>(24, 1), r = RandomVec<double>(18, 2), out(18);
  auto loss = [&] {
    EXPECT_TRUE(cpu::SelectRowsForward<double>(s, x.data(), pos.data(), 3, out.data()).ok());
    return Dot(out, r);
  };
  loss();
  EXPECT_EQ(out[0], x[9]);
  EXPECT_EQ(out[9 + 2], 0.0);
  V gx(24, 9.0);
  ASSERT_TRUE(cpu::SelectRowsBackward<double>(s, r.data(), pos.data(), 3, gx.data()).ok());
  ExpectGradMatchesFiniteDiff("grad_x", &x, loss, gx);
}

class DenseTest : public ::testing::TestWithParam<Activation> {};

TEST_P(DenseTest, BackwardMatchesFiniteDifferences) {
  const DenseShape s{5, 7, 3};
  V x = RandomVec<double>(35, 1), w = RandomVec<double>(21, 2),
    b = RandomVec<double>(3, 3), r = RandomVec<double>(15, 4), y(15);
  auto loss = [&] {
    EXPECT_TRUE(cpu::DenseForward<double>(s, x.data(), w.data(), b.data(), GetParam(), y.data()).ok());
    return Dot(y, r);
  };
  loss();
  for (int i = 0; i < 5; ++i) {
    for (int j = 0; j < 3; ++j) {
      double z = b[j];
      for (int k = 0; k < 7; ++k) z += x[i * 7 + k] * w[k * 3 + j];
      if (GetParam() == Activation::kRelu) z = std::max(z, 0.0);
      EXPECT_NEAR(y[i * 3 + j], z, 1e-14);
    }
  }
  V gx(35), gw(21), gb(3);
  ASSERT_TRUE(cpu::DenseBackward<double>(s, x.data(), w.data(), y.data(), r.data(),
                                         GetParam(), gx.data(), gw.data(), gb.data()).ok());
  ExpectGradMatchesFiniteDiff("grad_x", &x, loss, gx);
  ExpectGradMatchesFiniteDiff("grad_w", &w, loss, gw);
  ExpectGradMatchesFiniteDiff("grad_b", &b, loss, gb);
}

INSTANTIATE_TEST_SUITE_P(Activations, DenseTest,
                         ::testing::Values(Activation::kNone, Activation::kRelu));

TEST(SigmoidXentTest, ForwardValueAndBackwardFiniteDifferences) {
  V z = {-30, -1, 0, 0.5, 40}, y = {0, 1, 1, 0, 1};
  double loss = 0;
  ASSERT_TRUE(cpu::SigmoidXentForward<double>(5, z.data(), y.data(), &loss).ok());
  double ref = 0;
  for (int i = 0; i < 5; ++i) {
    const double p = 1 / (1 + std::exp(-z[i]));
    ref += y[i] == 1 ? -std::log(p) : -std::log1p(-p);  // labels are 0/1
  }
  EXPECT_NEAR(loss, ref / 5, 1e-12);
  V g(5);
  ASSERT_TRUE(cpu::SigmoidXentBackward<double>(5, z.data(), y.data(), g.data()).ok());
  auto f = [&] {
    double l = 0;
    EXPECT_TRUE(cpu::SigmoidXentForward<double>(5, z.data(), y.data(), &l).ok());
    return l;
  };
  ExpectGradMatchesFiniteDiff("grad_logits", &z, f, g);
  EXPECT_EQ(SigmoidCrossEntropyForwardCpu(0, nullptr, nullptr, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(AdamTest, ThreeStepsMatchDoubleReference) {
  AdamConfig c;
  c.learning_rate = 0.01f;
  auto g = RandomVec<float>(10, 1);
  auto p = RandomVec<float>(10, 2);
  std::vector<float> m(10, 0.f), v(10, 0.f);
  V pd(p.begin(), p.end()), md(10, 0.0), vd(10, 0.0);
  for (int t = 1; t <= 3; ++t) {
    ASSERT_TRUE(AdamUpdateCpu(c, t, 10, g.data(), p.data(), m.data(), v.data()).ok());
    for (int i = 0; i < 10; ++i) {
      md[i] = 0.9 * md[i] + 0.1 * g[i];
      vd[i] = 0.999 * vd[i] + 0.001 * double(g[i]) * g[i];
      const double mh = md[i] / (1 - std::pow(0.9, t)),
                   vh = vd[i] / (1 - std::pow(0.999, t));
      pd[i] -= 0.01 * mh / (std::sqrt(vh) + 1e-8);
    }
  }
  for (int i = 0; i < 10; ++i) EXPECT_NEAR(p[i], pd[i], 1e-6);
  EXPECT_EQ(AdamUpdateCpu(c, 0, 10, g.data(), p.data(), m.data(), v.data()).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(CudaStatusTest, ReportsWhyCudaIsUnusable) {
  const absl::Status s = CudaDeviceStatus();
  // Built without CUDA: UNIMPLEMENTED; with CUDA but no device:
  // FAILED_PRECONDITION; with a device: OK.
  EXPECT_THAT(s.code(), ::testing::AnyOf(absl::StatusCode::kOk,
                                         absl::StatusCode::kUnimplemented,
                                         absl::StatusCode::kFailedPrecondition));
}

}  // namespace
}  // namespace mim::kernels
