// bazel run //tools:gen_synthetic -- --output_dir=OUT [--num_samples=N
//     --num_items=M --num_users=U --seed=S ...]
// Synthetic CTR stream with ID and content signal and arriving items; see
// tools/gen_synthetic_lib.h for the generative story and the output files.
#include <chrono>
#include <cstdio>
#include <filesystem>

#include "gflags/gflags.h"
#include "tools/gen_synthetic_lib.h"

DEFINE_string(output_dir, "", "output folder (created if missing)");
DEFINE_int64(num_samples, 300000, "total samples (train + test)");
DEFINE_int64(num_items, 10000, "items, arriving over time");
DEFINE_int64(num_users, 5000, "users");
DEFINE_int32(num_topics, 16, "latent topics");
DEFINE_int32(content_dim, 64, "content vector dimension");
DEFINE_uint64(seed, 1, "random seed; same seed, same files");
DEFINE_double(test_fraction, 0.2, "last fraction of the stream that is test");

int main(int argc, char** argv) {
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  if (FLAGS_output_dir.empty()) {
    std::fprintf(stderr, "need --output_dir\n");
    return 2;
  }
  std::error_code ec;
  std::filesystem::create_directories(FLAGS_output_dir, ec);
  if (ec) {
    std::fprintf(stderr, "cannot create %s: %s\n", FLAGS_output_dir.c_str(),
                 ec.message().c_str());
    return 1;
  }
  mim::tools::SyntheticOptions o;
  o.output_dir = FLAGS_output_dir;
  o.num_samples = FLAGS_num_samples;
  o.num_items = FLAGS_num_items;
  o.num_users = FLAGS_num_users;
  o.num_topics = FLAGS_num_topics;
  o.content_dim = FLAGS_content_dim;
  o.seed = FLAGS_seed;
  o.test_fraction = FLAGS_test_fraction;
  const auto start = std::chrono::steady_clock::now();
  auto stats = mim::tools::GenerateSynthetic(o, [&](int64_t n) {
    const double s = std::chrono::duration<double>(
        std::chrono::steady_clock::now() - start).count();
    std::fprintf(stderr, "gen_synthetic: %lld samples, %.1f s\n", (long long)n, s);
  });
  if (!stats.ok()) {
    std::fprintf(stderr, "gen_synthetic: %s\n", stats.status().ToString().c_str());
    return 1;
  }
  const double secs = std::chrono::duration<double>(
      std::chrono::steady_clock::now() - start).count();
  const auto& s = *stats;
  const long long total = s.train_samples + s.test_samples;
  std::printf("train / test       %lld / %lld\n", (long long)s.train_samples,
              (long long)s.test_samples);
  std::printf("positive rate      %.4f\n", total ? double(s.positives) / total : 0.0);
  std::printf("test_start         %lld\n", (long long)s.test_start);
  std::printf("test items         %lld; cold (no train sample) %lld, "
              "their test samples %lld\n",
              (long long)s.test_items, (long long)s.cold_test_items,
              (long long)s.cold_test_samples);
  std::printf("wall time          %.2f s\n", secs);
  return 0;
}
