// Kernel throughput at CiUBM shapes (B=1024, L in {50, 1000}, d in {32, 64}),
// forward and backward, CPU twins and (with --gpu and a device) CUDA twins.
// Prints one "RESULT ..." line per measurement; bench/kernels_bench_torch.py
// runs this binary and the same ops in PyTorch and prints both side by side.
//
//   bazel run -c opt //bench:kernels_bench -- --threads=2
//     [--ops=content_fwd,din_bwd] [--shapes=50:32] [--reps=N] [--gpu [--no-cpu]]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "kernels/attention_ops.h"
#include "kernels/common.h"
#include "kernels/content_ops.h"
#include "kernels/dense_ops.h"
#include "kernels/device_buffer.h"
#include "kernels/embedding_ops.h"
#include "kernels/sequence_ops.h"

namespace mim::kernels {
namespace {

constexpr double kH100PeakBytesPerSec = 3.35e12;

// Plain heap operands, as the trainer and PyTorch 1.13 (no THP advice in
// Debian's build) both allocate them.
std::vector<float> Rand(size_t n, uint32_t seed, float lo = -1.f, float hi = 1.f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = u(rng);
  return v;
}

void Must(const absl::Status& s, const char* what) {
  if (!s.ok()) {
    std::fprintf(stderr, "%s failed: %s\n", what, std::string(s.message()).c_str());
    std::exit(1);
  }
}

double g_last_median = 0;  // median of the last Time() call, for Report

// Seconds per call: one untimed warm-up call, then the best of `reps`
// (the median is kept in g_last_median).
double Time(const std::function<void()>& fn, int reps, bool gpu) {
  fn();
  if (gpu) Must(CudaSynchronize(), "sync");
  std::vector<double> t(reps);
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    if (gpu) Must(CudaSynchronize(), "sync");
    t[r] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  std::sort(t.begin(), t.end());
  g_last_median = t[reps / 2];
  return t[0];
}

// --ops=a,b limits the run to those ops (default: all); --reps=N overrides
// the repetitions per measurement.
std::string g_ops;
int g_reps = 0;
bool Want(const char* op) {
  if (g_ops.empty()) return true;
  const std::string list = "," + g_ops + ",";
  return list.find("," + std::string(op) + ",") != std::string::npos;
}

void Report(const char* dev, const char* op, int64_t L, int64_t d, double sec,
            double amount, const char* unit) {
  const double rate = amount / sec / 1e9;
  std::printf("RESULT dev=%s op=%s L=%lld d=%lld ms=%.3f rate=%.2f unit=%s", dev, op,
              static_cast<long long>(L), static_cast<long long>(d), sec * 1e3, rate, unit);
  if (std::strcmp(dev, "gpu") == 0 && std::strcmp(unit, "GB/s") == 0) {
    std::printf(" peak_frac=%.3f", amount / sec / kH100PeakBytesPerSec);
  }
  std::printf(" median_ms=%.3f\n", g_last_median * 1e3);
  std::fflush(stdout);
}

// Host or device storage for one input, picked once per run.
struct Buf {
  std::vector<float> host;
  DeviceBuffer<float> dev;
  float* p = nullptr;
};
struct IBuf {
  std::vector<int32_t> host;
  DeviceBuffer<int32_t> dev;
  int32_t* p = nullptr;
};

void Place(Buf* b, bool gpu) {
  if (!gpu) {
    b->p = b->host.data();
    return;
  }
  auto d = DeviceBuffer<float>::FromHost(absl::MakeConstSpan(b->host));
  Must(d.status(), "upload");
  b->dev = std::move(d).value();
  b->p = b->dev.data();
}
void Place(IBuf* b, bool gpu) {
  if (!gpu) {
    b->p = b->host.data();
    return;
  }
  auto d = DeviceBuffer<int32_t>::FromHost(absl::MakeConstSpan(b->host));
  Must(d.status(), "upload");
  b->dev = std::move(d).value();
  b->p = b->dev.data();
}
Buf Make(size_t n, uint32_t seed, bool gpu, float lo = -1.f, float hi = 1.f) {
  Buf b;
  b.host = Rand(n, seed, lo, hi);
  Place(&b, gpu);
  return b;
}

void RunShape(bool gpu, int64_t B, int64_t L, int64_t d) {
  const char* dev = gpu ? "gpu" : "cpu";
  const int reps = g_reps > 0 ? g_reps : gpu ? 10 : (L >= 1000 ? 2 : 10);
  const SeqShape s{B, L, d};
  IBuf lens;
  lens.host.resize(B);
  std::mt19937 rng(7);
  int64_t valid = 0;
  for (auto& l : lens.host) {  // lengths uniform in [L/2, L]
    l = static_cast<int32_t>(L / 2 + rng() % (L - L / 2 + 1));
    valid += l;
  }
  Place(&lens, gpu);
  const double f = 4.0;  // bytes per float
  Buf h = Make(B * L * d, 1, gpu), ht = Make(B * d, 2, gpu), go = Make(B * d, 3, gpu);
  Buf out = Make(B * d, 4, gpu), gh = Make(B * L * d, 5, gpu), ght = Make(B * d, 6, gpu);

  // Embedding gather from a pulled block of U unique rows.
  {
    const int64_t U = std::min<int64_t>(B * L, 100000);
    GatherShape gs{U, d, B * L};
    IBuf idx;
    idx.host.resize(B * L);
    for (auto& i : idx.host) i = static_cast<int32_t>(rng() % U);
    Place(&idx, gpu);
    Buf table = Make(U * d, 8, gpu), gt = Make(U * d, 9, gpu);
    auto fwd = [&] { Must(gpu ? EmbeddingGatherCuda(gs, table.p, idx.p, gh.p)
                              : EmbeddingGatherCpu(gs, table.p, idx.p, gh.p), "gather"); };
    if (Want("gather_fwd")) Report(dev, "gather_fwd", L, d, Time(fwd, reps, gpu), f * 2 * B * L * d + 4.0 * B * L, "GB/s");
    auto bwd = [&] { Must(gpu ? EmbeddingGatherBackwardCuda(gs, h.p, idx.p, GradMode::kDeterministic, gt.p)
                              : EmbeddingGatherBackwardCpu(gs, h.p, idx.p, GradMode::kDeterministic, gt.p),
                          "gather bwd"); };
    if (Want("gather_bwd")) Report(dev, "gather_bwd", L, d, Time(bwd, reps, gpu), f * (B * L * d + U * d) + 4.0 * B * L, "GB/s");
  }
  // DIN attention.
  {
    const AttentionMlpShape m;
    Buf w1 = Make(4 * d * 80, 10, gpu, -0.2f, 0.2f), b1 = Make(80, 11, gpu), w2 = Make(3200, 12, gpu, -0.2f, 0.2f),
        b2 = Make(40, 13, gpu), w3 = Make(40, 14, gpu), b3 = Make(1, 15, gpu);
    Buf gw1 = Make(4 * d * 80, 16, gpu), gb1 = Make(80, 17, gpu), gw2 = Make(3200, 18, gpu),
        gb2 = Make(40, 19, gpu), gw3 = Make(40, 20, gpu), gb3 = Make(1, 21, gpu);
    const AttentionMlpParams p{w1.p, b1.p, w2.p, b2.p, w3.p, b3.p};
    const AttentionMlpGrads g{gw1.p, gb1.p, gw2.p, gb2.p, gw3.p, gb3.p};
    // MLP flops per valid behaviour (fused first layer: d x 80).
    const double fwd_flops = 2.0 * valid * (d * 80 + 80 * 40 + 40 + d);
    auto fwd = [&] { Must(gpu ? DinAttentionForwardCuda(s, m, h.p, ht.p, lens.p, p, nullptr, out.p)
                              : DinAttentionForwardCpu(s, m, h.p, ht.p, lens.p, p, nullptr, out.p), "din"); };
    if (Want("din_fwd")) Report(dev, "din_fwd", L, d, Time(fwd, reps, gpu), fwd_flops, "GFLOP/s");
    auto bwd = [&] { Must(gpu ? DinAttentionBackwardCuda(s, m, h.p, ht.p, lens.p, p, go.p, gh.p, ght.p, g)
                              : DinAttentionBackwardCpu(s, m, h.p, ht.p, lens.p, p, go.p, gh.p, ght.p, g),
                          "din bwd"); };
    // Backward = recomputed forward + two GEMMs per forward GEMM.
    if (Want("din_bwd")) Report(dev, "din_bwd", L, d, Time(bwd, reps, gpu), 3 * fwd_flops, "GFLOP/s");
  }
  // Content interest + fusion (content dim = d here).
  {
    const ContentShape cs{{B, L, d}, d};
    Buf m = Make(B * L * d, 22, gpu), mt = Make(B * d, 23, gpu), hmm = Make(B * d, 24, gpu),
        gm = Make(B * L * d, 25, gpu), gmt = Make(B * d, 26, gpu);
    auto fwd = [&] { Must(gpu ? ContentFusionForwardCuda(cs, m.p, mt.p, h.p, lens.p, nullptr, hmm.p, out.p)
                              : ContentFusionForwardCpu(cs, m.p, mt.p, h.p, lens.p, nullptr, hmm.p, out.p),
                          "content"); };
    if (Want("content_fwd")) Report(dev, "content_fwd", L, d, Time(fwd, reps, gpu), f * 2 * valid * d, "GB/s");
    auto bwd = [&] { Must(gpu ? ContentFusionBackwardCuda(cs, m.p, mt.p, h.p, lens.p, go.p, go.p, gm.p, gmt.p, gh.p)
                              : ContentFusionBackwardCpu(cs, m.p, mt.p, h.p, lens.p, go.p, go.p, gm.p, gmt.p, gh.p),
                          "content bwd"); };
    if (Want("content_bwd")) Report(dev, "content_bwd", L, d, Time(bwd, reps, gpu), f * 4 * B * L * d, "GB/s");
  }
  // Masked mean pooling.
  {
    auto fwd = [&] { Must(gpu ? MaskedMeanPoolForwardCuda(s, h.p, lens.p, out.p)
                              : MaskedMeanPoolForwardCpu(s, h.p, lens.p, out.p), "pool"); };
    if (Want("pool_fwd")) Report(dev, "pool_fwd", L, d, Time(fwd, reps, gpu), f * valid * d, "GB/s");
    auto bwd = [&] { Must(gpu ? MaskedMeanPoolBackwardCuda(s, go.p, lens.p, gh.p)
                              : MaskedMeanPoolBackwardCpu(s, go.p, lens.p, gh.p), "pool bwd"); };
    if (Want("pool_bwd")) Report(dev, "pool_bwd", L, d, Time(bwd, reps, gpu), f * B * L * d, "GB/s");
  }
  // SIM top-K (k = 20) + gather of the selected rows.
  {
    const int k = 20;
    IBuf pos, nl;
    pos.host.assign(B * k, 0);
    nl.host.assign(B, 0);
    Place(&pos, gpu);
    Place(&nl, gpu);
    Buf sel = Make(B * k * d, 27, gpu);
    auto topk = [&] { Must(gpu ? TopKSelectCuda(s, h.p, ht.p, lens.p, k, pos.p, nl.p)
                               : TopKSelectCpu(s, h.p, ht.p, lens.p, k, pos.p, nl.p), "topk"); };
    if (Want("topk")) Report(dev, "topk", L, d, Time(topk, reps, gpu), f * valid * d, "GB/s");
    auto fwd = [&] { Must(gpu ? SelectRowsForwardCuda(s, h.p, pos.p, k, sel.p)
                              : SelectRowsForwardCpu(s, h.p, pos.p, k, sel.p), "select"); };
    if (Want("select_fwd")) Report(dev, "select_fwd", L, d, Time(fwd, reps, gpu), f * 2 * B * k * d, "GB/s");
  }
  // Dense layer of the CTR tower: [B, 4d] -> 200, ReLU.
  {
    const DenseShape ds{B, 4 * d, 200};
    Buf x = Make(B * 4 * d, 28, gpu), w = Make(4 * d * 200, 29, gpu), b = Make(200, 30, gpu),
        y = Make(B * 200, 31, gpu), gy = Make(B * 200, 32, gpu), gx = Make(B * 4 * d, 33, gpu),
        gw = Make(4 * d * 200, 34, gpu), gb = Make(200, 35, gpu);
    const double flops = 2.0 * B * 4 * d * 200;
    auto fwd = [&] { Must(gpu ? DenseForwardCuda(ds, x.p, w.p, b.p, Activation::kRelu, y.p)
                              : DenseForwardCpu(ds, x.p, w.p, b.p, Activation::kRelu, y.p), "dense"); };
    if (Want("dense_fwd")) Report(dev, "dense_fwd", L, d, Time(fwd, gpu ? reps : 20, gpu), flops, "GFLOP/s");
    auto bwd = [&] { Must(gpu ? DenseBackwardCuda(ds, x.p, w.p, y.p, gy.p, Activation::kRelu, gx.p, gw.p, gb.p)
                              : DenseBackwardCpu(ds, x.p, w.p, y.p, gy.p, Activation::kRelu, gx.p, gw.p, gb.p),
                          "dense bwd"); };
    if (Want("dense_bwd")) Report(dev, "dense_bwd", L, d, Time(bwd, gpu ? reps : 20, gpu), 2 * flops, "GFLOP/s");
  }
}

}  // namespace
}  // namespace mim::kernels

int main(int argc, char** argv) {
  int threads = 2;
  bool gpu = false, cpu = true;
  bool probe = false;  // --probe: only say whether a CUDA device is usable
  std::string shapes;  // --shapes=50:32,1000:64 limits the (L, d) shapes
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--threads=", 10) == 0) threads = std::atoi(argv[i] + 10);
    if (std::strcmp(argv[i], "--gpu") == 0) gpu = true;
    if (std::strcmp(argv[i], "--no-cpu") == 0) cpu = false;
    if (std::strcmp(argv[i], "--probe") == 0) probe = true;
    if (std::strncmp(argv[i], "--shapes=", 9) == 0) shapes = argv[i] + 9;
    if (std::strncmp(argv[i], "--ops=", 6) == 0) mim::kernels::g_ops = argv[i] + 6;
    if (std::strncmp(argv[i], "--reps=", 7) == 0) mim::kernels::g_reps = std::atoi(argv[i] + 7);
  }
  mim::kernels::SetCpuThreads(threads);
  std::printf("INFO cpu_threads=%d\n", threads);
  if (gpu) {
    const absl::Status st = mim::kernels::CudaDeviceStatus();
    if (!st.ok()) {
      std::printf("INFO gpu skipped: %s\n", std::string(st.message()).c_str());
      gpu = false;
    }
  }
  if (probe) {
    if (gpu) std::printf("INFO gpu ok\n");
    return gpu ? 0 : 1;
  }
  for (int64_t L : {50, 1000}) {
    for (int64_t d : {32, 64}) {
      const std::string shape = std::to_string(L) + ":" + std::to_string(d);
      if (!shapes.empty() &&
          ("," + shapes + ",").find("," + shape + ",") == std::string::npos) {
        continue;
      }
      if (cpu) mim::kernels::RunShape(false, 1024, L, d);
      if (gpu) mim::kernels::RunShape(true, 1024, L, d);
    }
  }
  return 0;
}
