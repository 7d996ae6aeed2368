// bazel run //tools:prepare_movielens -- --input_dir=DIR --output_dir=OUT
//     --test_start=UNIX_SECONDS
// Writes OUT/train.tsv, OUT/test.tsv (mim-samples v1) and OUT/item_text.tsv.
#include <cstdio>
#include <filesystem>
#include <string>

#include "gflags/gflags.h"
#include "tools/prepare_movielens_lib.h"

DEFINE_string(input_dir, "", "folder with ml-100k.{inter,user,item} and "
              "(optional) movies_extrainfos.dat");
DEFINE_string(output_dir, "", "folder for train.tsv, test.tsv, item_text.tsv "
              "(created if missing)");
DEFINE_int64(test_start, -1, "unix seconds; samples at or after go to test");
DEFINE_string(prefix, "ml-100k", "base name of the RecBole atomic files");

int main(int argc, char** argv) {
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  if (FLAGS_input_dir.empty() || FLAGS_output_dir.empty() || FLAGS_test_start < 0) {
    std::fprintf(stderr, "need --input_dir, --output_dir and --test_start >= 0\n");
    return 2;
  }
  std::error_code ec;
  std::filesystem::create_directories(FLAGS_output_dir, ec);
  if (ec) {
    std::fprintf(stderr, "cannot create %s: %s\n", FLAGS_output_dir.c_str(),
                 ec.message().c_str());
    return 1;
  }
  mim::tools::MovieLensPrepOptions opt;
  opt.input_dir = FLAGS_input_dir;
  opt.output_dir = FLAGS_output_dir;
  opt.test_start = FLAGS_test_start;
  opt.prefix = FLAGS_prefix;
  auto stats = mim::tools::PrepareMovieLens(opt);
  if (!stats.ok()) {
    std::fprintf(stderr, "prepare_movielens: %s\n", stats.status().ToString().c_str());
    return 1;
  }
  const auto& s = *stats;
  std::printf("samples            %lld\n", (long long)s.samples);
  std::printf("positive rate      %.4f (%lld)\n",
              s.samples ? double(s.positives) / s.samples : 0.0, (long long)s.positives);
  std::printf("train / test       %lld / %lld\n", (long long)s.train_samples,
              (long long)s.test_samples);
  std::printf("users              %lld\n", (long long)s.users);
  std::printf("items (in samples) %lld; catalogue %lld\n", (long long)s.items,
              (long long)s.catalogue_items);
  std::printf("test items         %lld; cold (no train sample) %lld, "
              "their test samples %lld\n",
              (long long)s.test_items, (long long)s.cold_test_items,
              (long long)s.cold_test_samples);
  std::printf("plots matched      %lld of %lld (%lld on the full title)\n",
              (long long)s.plot_matches, (long long)s.catalogue_items,
              (long long)s.plot_matches_exact);
  return 0;
}
