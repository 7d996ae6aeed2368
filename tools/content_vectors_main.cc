// bazel run //tools:content_vectors -- --item_text=FILE --output=FILE
//     [--encoder_out=DIR --dim --model --epoch --seed ...]
// Every flag's default is ContentVectorOptions' (tools/content_vectors_lib.h).
// Trains fastText on the item texts and writes one L2-normalised vector per
// item (mim-vectors v1, see docs/DATA_FORMAT.md). --encoder_out=DIR also
// saves the encoder (fastText model + centring mean, "Content encoder
// directory" in docs/DATA_FORMAT.md) that the serving tier loads to encode
// new items exactly as this run encoded the catalogue.
#include <chrono>
#include <cstdio>

#include "gflags/gflags.h"
#include "tools/content_vectors_lib.h"

namespace {
// The defaults of every flag come from ContentVectorOptions' member
// initialisers (one home per default). Defined before the flags: they read
// it during static initialisation of this file, in order.
const mim::tools::ContentVectorOptions kDefaults;
}  // namespace

DEFINE_string(item_text, kDefaults.item_text.c_str(),
              "item text file (item_id<TAB>text columns...)");
DEFINE_string(output, kDefaults.output.c_str(), "vector file to write");
DEFINE_string(encoder_out, kDefaults.encoder_out.c_str(),
              "if set, also save the encoder (fastText model and centring "
              "mean) to this directory, for the serving tier's UpsertItem");
DEFINE_int32(dim, kDefaults.dim, "vector dimension");
DEFINE_string(model, kDefaults.model.c_str(), "skipgram or cbow");
DEFINE_int32(epoch, kDefaults.epoch,
             "fastText epochs (default chosen on a MovieLens validation "
             "tail, see docs/RESULTS.md)");
DEFINE_int32(min_count, kDefaults.min_count, "minimal word count");
DEFINE_int32(threads, kDefaults.threads,
             "training threads (1 = deterministic by seed)");
DEFINE_int32(seed, kDefaults.seed, "fastText seed");
DEFINE_string(modality, kDefaults.modality.c_str(),
              "modality written in the header");
DEFINE_bool(center, kDefaults.center,
            "subtract the mean item vector before normalising");

int main(int argc, char** argv) {
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  if (FLAGS_item_text.empty() || FLAGS_output.empty()) {
    std::fprintf(stderr, "need --item_text and --output\n");
    return 2;
  }
  mim::tools::ContentVectorOptions o;
  o.item_text = FLAGS_item_text;
  o.output = FLAGS_output;
  o.encoder_out = FLAGS_encoder_out;
  o.dim = FLAGS_dim;
  o.model = FLAGS_model;
  o.epoch = FLAGS_epoch;
  o.min_count = FLAGS_min_count;
  o.threads = FLAGS_threads;
  o.seed = FLAGS_seed;
  o.modality = FLAGS_modality;
  o.center = FLAGS_center;
  const auto start = std::chrono::steady_clock::now();
  auto stats = mim::tools::BuildContentVectors(o);
  if (!stats.ok()) {
    std::fprintf(stderr, "content_vectors: %s\n", stats.status().ToString().c_str());
    return 1;
  }
  std::printf("items %lld, vectors written %lld, skipped (no words) %lld, "
              "vocabulary %lld, %.2f s\n",
              (long long)stats->items, (long long)stats->written,
              (long long)stats->skipped_empty, (long long)stats->vocabulary,
              std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
                  .count());
  if (!stats->encoder_id.empty()) {
    std::printf("encoder %s saved to %s\n", stats->encoder_id.c_str(),
                FLAGS_encoder_out.c_str());
  }
  return 0;
}
