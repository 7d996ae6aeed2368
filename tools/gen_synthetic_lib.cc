#include "tools/gen_synthetic_lib.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "worker/data/content_vectors.h"
#include "worker/data/sample.h"
#include "worker/data/sample_io.h"
#include "worker/data/text_lines.h"

namespace mim::tools {
namespace {

using ::mim::data::Sample;

// Per-item and per-topic random streams are seeded from (seed, id), so item
// attributes do not depend on the order in which they are generated.
uint64_t Mix(uint64_t a, uint64_t b) {
  uint64_t z = a * 0x9E3779B97F4A7C15ULL + b + 0x632BE59BD9B4E019ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

constexpr int kGenreGroups = 2;  // Topics per genre: genres are coarser.
constexpr int kWordsPerTopic = 40;
constexpr int kSharedWords = 200;
constexpr int kTextWords = 24;

absl::Status ValidateOptions(const SyntheticOptions& o) {
  if (o.num_samples < 10 || o.num_items < 2 || o.num_users < 1 ||
      o.num_topics < 2 || o.content_dim < 2 || !(o.test_fraction > 0) ||
      !(o.test_fraction < 1) || !(o.initial_items > 0) ||
      !(o.initial_items <= 1) || o.fresh_exposure < 0 ||
      o.topic_exposure < 0 || o.fresh_exposure + o.topic_exposure > 1 ||
      o.num_items > (int64_t{1} << 31) || o.num_topics > 30000 ||
      o.num_samples >= (int64_t{1} << 32) || o.num_users > (int64_t{1} << 26) ||
      o.num_users * o.num_topics > (int64_t{1} << 30) ||
      o.content_dim > data::kMaxContentVectorDim) {
    // The upper bounds keep the arrays sized by them (users x topics
    // preferences, behaviour rings) and the arrival arithmetic (items x
    // samples) within range; they are checked before any file is touched.
    return absl::InvalidArgumentError(absl::StrCat(
        "gen_synthetic: need num_samples in [10, 2^32), num_items in [2, 2^31], "
        "num_users in [1, 2^26] with num_users * num_topics <= 2^30, "
        "num_topics in [2, 30000], content_dim in [2, ",
        data::kMaxContentVectorDim, "], "
        "0 < test_fraction < 1, 0 < initial_items <= 1, fresh_exposure and "
        "topic_exposure >= 0 with sum <= 1"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<SyntheticStats> GenerateSynthetic(
    const SyntheticOptions& o, const std::function<void(int64_t)>& progress) {
  if (absl::Status st = ValidateOptions(o); !st.ok()) return st;
  const int K = o.num_topics;
  const int64_t M = o.num_items;
  const int64_t N = o.num_samples;

  // Topic centres (unit norm) for content vectors.
  std::vector<std::vector<float>> centres(K, std::vector<float>(o.content_dim));
  for (int k = 0; k < K; ++k) {
    std::mt19937_64 rng(Mix(o.seed, 0x7070000000ULL + k));
    std::normal_distribution<float> g(0.f, 1.f);
    for (float& x : centres[k]) x = g(rng);
    data::L2Normalize(&centres[k]);
  }

  // Items: ids 1..M in arrival order. The first M0 exist at the start; the
  // rest arrive uniformly over the sample stream.
  const int64_t m0 = std::max<int64_t>(1, static_cast<int64_t>(o.initial_items * M));
  std::vector<uint16_t> topic(M);
  std::vector<float> quality(M);
  auto arrival_index = [&](int64_t j) -> int64_t {  // j is 0-based.
    if (j < m0) return 0;
    return (j - m0 + 1) * N / (M - m0 + 1);
  };
  // Every output is written to a temp file (base::TempPathFor) and put in
  // place at the end, once the whole dataset is written: a failure leaves
  // an earlier run's files as they were, never item files of one run
  // beside samples of another.
  auto vecs = data::ContentVectorWriter::Open(
      o.output_dir + "/item_vectors.tsv", o.content_dim, "synthetic");
  if (!vecs.ok()) return vecs.status();
  data::TempFile text_file(o.output_dir + "/item_text.tsv", "item text");
  data::TempFile truth_file(o.output_dir + "/item_truth.tsv", "item truth");
  {
    std::ofstream& text = text_file.out();
    std::ofstream& truth = truth_file.out();
    if (!text.is_open() || !truth.is_open()) {
      return absl::InternalError(
          absl::StrCat("cannot create item files under ", o.output_dir));
    }
    text << "#mim-item-text v1\titem\ttitle\tyear\tgenres\tplot\n";
    truth << "#item\tarrival_ts\ttopic\tquality\n";
    std::vector<float> v(o.content_dim);
    for (int64_t j = 0; j < M; ++j) {
      std::mt19937_64 rng(Mix(o.seed, static_cast<uint64_t>(j) + 1));
      std::normal_distribution<float> g(0.f, 1.f);
      std::uniform_real_distribution<double> u(0, 1);
      topic[j] = static_cast<uint16_t>(rng() % K);
      quality[j] = static_cast<float>(o.quality_std * g(rng));
      const float noise = static_cast<float>(o.content_noise / std::sqrt(o.content_dim));
      for (int d = 0; d < o.content_dim; ++d) {
        v[d] = centres[topic[j]][d] + noise * g(rng);
      }
      if (absl::Status st = (*vecs)->Write(j + 1, v); !st.ok()) return st;
      // Pseudo-text: 60% topic words, 40% shared words, so text similarity
      // reflects the topic the way the vectors do.
      std::string plot;
      for (int w = 0; w < kTextWords; ++w) {
        if (w) plot.push_back(' ');
        if (u(rng) < 0.6) {
          absl::StrAppend(&plot, "t", topic[j], "w", rng() % kWordsPerTopic);
        } else {
          absl::StrAppend(&plot, "s", rng() % kSharedWords);
        }
      }
      const int64_t arrival_ts = o.start_time + arrival_index(j);
      text << j + 1 << "\titem " << j + 1 << "\t" << 2000 + arrival_index(j) * 20 / N
           << "\tgenre" << 1 + topic[j] / kGenreGroups << "\t" << plot << '\n';
      truth << j + 1 << '\t' << arrival_ts << '\t' << topic[j] << '\t'
            << quality[j] << '\n';
    }
    text.flush();
    truth.flush();
    if (!text || !truth) {
      return absl::InternalError(absl::StrCat("write failed under ", o.output_dir));
    }
  }

  // Users: side features and topic preferences; age bucket nudges taste so
  // side features carry a little signal too.
  const int64_t U = o.num_users;
  std::vector<float> pref(U * K);
  std::vector<int32_t> age(U), gender(U), occupation(U);
  for (int64_t u = 0; u < U; ++u) {
    std::mt19937_64 rng(Mix(o.seed ^ 0xABCDEF12345ULL, static_cast<uint64_t>(u)));
    std::normal_distribution<float> g(0.f, 1.5f);
    age[u] = 1 + static_cast<int32_t>(rng() % 7);
    gender[u] = 1 + static_cast<int32_t>(rng() % 2);
    occupation[u] = 1 + static_cast<int32_t>(rng() % 21);
    for (int k = 0; k < K; ++k) {
      pref[u * K + k] = g(rng) + (k % 7 == age[u] - 1 ? 1.0f : 0.0f);
    }
  }
  constexpr int L = data::kMaxBehaviorLength;
  std::vector<uint32_t> ring(U * L);
  std::vector<uint8_t> ring_len(U, 0);
  std::vector<uint8_t> ring_head(U, 0);  // Index of the oldest entry.

  std::vector<std::vector<uint32_t>> by_topic(K);  // Arrived items per topic.
  int64_t arrived = 0;
  const int64_t fresh_window = std::max<int64_t>(1, M / 50);

  const int64_t num_train = N - static_cast<int64_t>(o.test_fraction * N);
  auto train = data::SampleWriter::Open(o.output_dir + "/train.tsv");
  if (!train.ok()) return train.status();
  auto test = data::SampleWriter::Open(o.output_dir + "/test.tsv");
  if (!test.ok()) return test.status();

  std::mt19937_64 rng(Mix(o.seed, 0x5A5A5A5A5AULL));
  std::uniform_real_distribution<double> unif(0, 1);
  std::normal_distribution<float> drift(0.f, static_cast<float>(o.drift_std));
  SyntheticStats stats;
  absl::flat_hash_set<uint32_t> train_items, test_items;
  std::vector<uint32_t> test_item_list;
  std::vector<double> w(K);
  Sample s;
  int64_t ts = o.start_time;
  for (int64_t i = 0; i < N; ++i) {
    while (arrived < M && arrival_index(arrived) <= i) {
      by_topic[topic[arrived]].push_back(static_cast<uint32_t>(arrived));
      ++arrived;
    }
    // Skewed user activity: u = U * r^2.
    const double r = unif(rng);
    const int64_t u = std::min<int64_t>(U - 1, static_cast<int64_t>(U * r * r));
    float* z = &pref[u * K];
    for (int k = 0; k < K; ++k) z[k] += drift(rng);
    double zmax = z[0];
    for (int k = 1; k < K; ++k) zmax = std::max<double>(zmax, z[k]);
    double total = 0;
    for (int k = 0; k < K; ++k) total += (w[k] = std::exp(z[k] - zmax));
    for (int k = 0; k < K; ++k) w[k] /= total;

    int64_t j;  // 0-based item.
    const double pick = unif(rng);
    if (pick < o.fresh_exposure) {
      const int64_t lo = std::max<int64_t>(0, arrived - fresh_window);
      j = lo + static_cast<int64_t>(rng() % static_cast<uint64_t>(arrived - lo));
    } else if (pick < o.fresh_exposure + o.topic_exposure) {
      double x = unif(rng);
      int k = 0;
      while (k < K - 1 && (x -= w[k]) > 0) ++k;
      if (by_topic[k].empty()) {
        j = static_cast<int64_t>(rng() % static_cast<uint64_t>(arrived));
      } else {
        j = by_topic[k][rng() % by_topic[k].size()];
      }
    } else {
      j = static_cast<int64_t>(rng() % static_cast<uint64_t>(arrived));
    }
    const double logit = o.bias +
                         o.affinity_weight * std::log(K * w[topic[j]]) +
                         quality[j];
    const int label = unif(rng) < 1.0 / (1.0 + std::exp(-logit)) ? 1 : 0;

    s.timestamp = ts;
    s.user_id = u + 1;
    s.item_id = j + 1;
    s.label = label;
    s.age_bucket = age[u];
    s.gender = gender[u];
    s.occupation = occupation[u];
    s.genres.assign(1, 1 + topic[j] / kGenreGroups);
    s.behavior.clear();
    for (int b = 0; b < ring_len[u]; ++b) {
      s.behavior.push_back(ring[u * L + (ring_head[u] + b) % L]);
    }
    const bool is_test = i >= num_train;
    if (is_test && stats.test_start == 0) stats.test_start = ts;
    absl::Status st = (is_test ? *test : *train)->Write(s);
    if (!st.ok()) return st;
    if (is_test) {
      ++stats.test_samples;
      test_items.insert(static_cast<uint32_t>(s.item_id));
      test_item_list.push_back(static_cast<uint32_t>(s.item_id));
    } else {
      ++stats.train_samples;
      train_items.insert(static_cast<uint32_t>(s.item_id));
    }
    stats.positives += label;
    // Timestamps strictly increase (1-20 s apart), so "before" is simple.
    if (label) {
      if (ring_len[u] < L) {
        ring[u * L + (ring_head[u] + ring_len[u]) % L] = static_cast<uint32_t>(s.item_id);
        ++ring_len[u];
      } else {
        ring[u * L + ring_head[u]] = static_cast<uint32_t>(s.item_id);
        ring_head[u] = static_cast<uint8_t>((ring_head[u] + 1) % L);
      }
    }
    ts += 1 + static_cast<int64_t>(rng() % 20);
    if (progress && (i + 1) % 1000000 == 0) progress(i + 1);
  }
  // Every output is finished before any is put in place.
  if (absl::Status st = (*train)->Finish(); !st.ok()) return st;
  if (absl::Status st = (*test)->Finish(); !st.ok()) return st;
  if (absl::Status st = (*vecs)->Finish(); !st.ok()) return st;
  if (absl::Status st = text_file.Finish(); !st.ok()) return st;
  if (absl::Status st = truth_file.Finish(); !st.ok()) return st;
  if (absl::Status st = (*train)->Commit(); !st.ok()) return st;
  if (absl::Status st = (*test)->Commit(); !st.ok()) return st;
  if (absl::Status st = (*vecs)->Commit(); !st.ok()) return st;
  if (absl::Status st = text_file.Commit(); !st.ok()) return st;
  if (absl::Status st = truth_file.Commit(); !st.ok()) return st;
  stats.test_items = static_cast<int64_t>(test_items.size());
  for (uint32_t item : test_items) {
    if (!train_items.contains(item)) ++stats.cold_test_items;
  }
  for (uint32_t item : test_item_list) {
    if (!train_items.contains(item)) ++stats.cold_test_samples;
  }
  return stats;
}

}  // namespace mim::tools
