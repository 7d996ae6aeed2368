// C-SFT library: pair mining and the split, the encoder (untrained output,
// gradients against finite differences, file round trip and corruption),
// negative counts per configuration, recall.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "worker/csft/csft_test_util.h"
#include "worker/csft/csft_trainer.h"
#include "worker/csft/encoder.h"
#include "worker/csft/pairs.h"
#include "worker/data/sample.h"

namespace mim::csft {
namespace {

data::Sample Positive(int64_t item, std::vector<int64_t> behavior,
                      int label = 1) {
  data::Sample s;
  s.item_id = item;
  s.label = label;
  s.behavior = std::move(behavior);
  return s;
}

TEST(MinePairsTest, LastWindowPositivesMostRecentFirstSkippingSelfAndNegatives) {
  const std::vector<data::Sample> samples = {
      Positive(5, {1, 2, 3}),
      Positive(6, {1, 2}, /*label=*/0),
      Positive(3, {9, 3}),
      Positive(7, {}),
  };
  auto pairs = MinePairs(samples, PairOptions{2});
  ASSERT_TRUE(pairs.ok()) << pairs.status();
  EXPECT_EQ(*pairs, (std::vector<InterestPair>{{3, 5}, {2, 5}, {9, 3}}));
  EXPECT_EQ(MinePairs(samples, PairOptions{0}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(SplitPairsTest, HeldOutItemsNeverTrainAndValidNewHasThemAsPositive) {
  std::vector<InterestPair> pairs;
  for (int64_t q = 0; q < 60; ++q) {
    for (int64_t p = 0; p < 60; p += 7) {
      if (p != q) pairs.push_back({q, p});
    }
  }
  auto split = SplitPairs(pairs, 0.2, 0.1, 3);
  ASSERT_TRUE(split.ok());
  EXPECT_FALSE(split->held_out_items.empty());
  EXPECT_FALSE(split->valid_new.empty());
  EXPECT_FALSE(split->valid_warm.empty());
  for (const auto& p : split->train) {
    EXPECT_FALSE(split->held_out_items.contains(p.query));
    EXPECT_FALSE(split->held_out_items.contains(p.item));
  }
  for (const auto& p : split->valid_new) {
    EXPECT_TRUE(split->held_out_items.contains(p.item));
    EXPECT_FALSE(split->held_out_items.contains(p.query));
  }
  auto again = SplitPairs(pairs, 0.2, 0.1, 3);
  EXPECT_EQ(again->train, split->train);
  EXPECT_EQ(SplitPairs(pairs, 1.0, 0.1, 3).status().code(),
            absl::StatusCode::kInvalidArgument);
}

using ::mim::csft::testing::Batch;
using ::mim::csft::testing::TestCatalog;

TEST(EncoderTest, UntrainedEncoderIsThePlainVector) {
  const Catalog c = TestCatalog(8, 6);
  EncoderConfig config{6, 8, 6, 4, 16, true};
  auto e = CsftEncoder::Create(config, 1);
  ASSERT_TRUE(e.ok());
  std::vector<float> out(6);
  ASSERT_TRUE((*e)->Encode({c.Input(3)}, out.data()).ok());
  for (int k = 0; k < 6; ++k) EXPECT_NEAR(out[k], c.features[3 * 8 + k], 1e-6);
}

// Loss of the encoder's outputs with fixed random weights.
double EncoderLoss(const CsftEncoder& e, const std::vector<ItemInput>& in,
                   const std::vector<float>& wv, const std::vector<float>& wt,
                   const std::vector<float>& wc, float lambda) {
  EncoderPass pass;
  EXPECT_TRUE(e.Forward(in, &pass).ok());
  double l = 0, pen = 0;
  for (size_t i = 0; i < pass.v.size(); ++i) {
    l += double(wv[i]) * pass.v[i] + double(wt[i]) * pass.t[i] +
         double(wc[i]) * pass.c[i];
    pen += double(pass.r[i]) * pass.r[i];
  }
  return l + lambda * pen / double(pass.rows);
}

// Float code path (the encoder is float only): central differences with
// step `step` against the analytic gradient, |num - ana| <= 3e-3 + 3e-2|num|.
// A ReLU input within `step` of its kink would fail the check by chance,
// not by a wrong gradient: the step is chosen below the smallest one.
void CheckGradients(const EncoderConfig& config,
                    const std::vector<int64_t>& interactions,
                    const std::vector<bool>& drop = {false, false, false},
                    float step = 1e-2f) {
  Catalog c = TestCatalog(5, 3);
  c.interactions.assign(c.ids.size(), 0);
  c.interactions[0] = interactions[0];
  c.interactions[25] = interactions[1];
  c.interactions[31] = interactions[2];
  auto e = CsftEncoder::Create(config, 2);
  ASSERT_TRUE(e.ok());
  std::mt19937 rng(9);
  std::uniform_real_distribution<float> u(-0.5f, 0.5f);
  for (float& p : *(*e)->mutable_params()) p += u(rng);  // W2 != 0 too
  std::vector<ItemInput> in = {c.Input(0), c.Input(25), c.Input(31)};
  for (size_t i = 0; i < in.size(); ++i) in[i].drop_modalities = drop[i];
  const size_t n = in.size() * config.dim;
  std::vector<float> wv(n), wt(n), wc(n);
  for (float& x : wv) x = u(rng);
  for (float& x : wt) x = u(rng);
  for (float& x : wc) x = u(rng);
  const float lambda = 0.7f;
  EncoderPass pass;
  ASSERT_TRUE((*e)->Forward(in, &pass).ok());
  std::vector<float> grads((*e)->num_params(), 0.0f);
  ASSERT_TRUE((*e)->Backward(pass, wv.data(), wt.data(), wc.data(), lambda,
                             grads.data())
                  .ok());
  std::vector<float>& params = *(*e)->mutable_params();
  int checked = 0;
  for (size_t i = 0; i < params.size(); ++i) {
    const float saved = params[i];
    params[i] = saved + step;
    const double up = EncoderLoss(**e, in, wv, wt, wc, lambda);
    params[i] = saved - step;
    const double down = EncoderLoss(**e, in, wv, wt, wc, lambda);
    params[i] = saved;
    const double num = (up - down) / (2.0 * step);
    ASSERT_NEAR(grads[i], num, 3e-3 + 3e-2 * std::abs(num))
        << "parameter " << i;
    ++checked;
  }
  EXPECT_EQ(checked, (*e)->num_params());
}

class EncoderGradTest : public ::testing::TestWithParam<bool> {};

TEST_P(EncoderGradTest, BackwardMatchesFiniteDifferences) {
  CheckGradients(EncoderConfig{3, 5, 6, 2, 4, GetParam()}, {0, 0, 0});
}

INSTANTIATE_TEST_SUITE_P(Fusion, EncoderGradTest, ::testing::Bool());

TEST(EncoderTest, GatedResidualBackwardMatchesFiniteDifferences) {
  EncoderConfig config{3, 5, 6, 2, 4, true};
  config.residual_gate = 3;
  CheckGradients(config, {1, 0, 9});  // g = 0.25, 0, 0.75
}

TEST_P(EncoderGradTest, ModalityDropoutBackwardMatchesFiniteDifferences) {
  // Dropped rows have few non-zero fusion inputs, so ReLU inputs sit closer
  // to the kink (one at 0.008 with tensor fusion): step 1e-3.
  CheckGradients(EncoderConfig{3, 5, 6, 2, 4, GetParam()}, {0, 0, 0},
                 {true, false, true}, 1e-3f);
}

TEST(EncoderTest, DroppedModalitiesLeaveTheResidualToTheGenres) {
  const Catalog c = TestCatalog(8, 6);
  auto e = CsftEncoder::Create({6, 8, 6, 4, 16, true}, 1);
  ASSERT_TRUE(e.ok());
  for (float& p : *(*e)->mutable_params()) p += 0.05f;  // W2, b2 != 0
  // Items 21 and 24 have different vectors and the same genres {2, 3}.
  ASSERT_EQ(c.genres[21], c.genres[24]);
  std::vector<ItemInput> in = {c.Input(21), c.Input(24), c.Input(21)};
  in[0].drop_modalities = in[1].drop_modalities = true;
  EncoderPass pass;
  ASSERT_TRUE((*e)->Forward(in, &pass).ok());
  EncoderPass kept;
  ASSERT_TRUE((*e)->Forward({c.Input(21)}, &kept).ok());
  double moved = 0;
  for (int k = 0; k < 6; ++k) {
    // Dropped rows: one residual (genres only), each its own plain vector.
    EXPECT_EQ(pass.r[k], pass.r[6 + k]);
    EXPECT_EQ(pass.u[k], c.features[21 * 8 + k] + pass.r[k]);
    EXPECT_EQ(pass.u[6 + k], c.features[24 * 8 + k] + pass.r[6 + k]);
    EXPECT_EQ(pass.t[k], pass.t[12 + k]);  // the text head reads the text
    // A row not dropped is the encoding of the item (the table's vector).
    EXPECT_EQ(pass.v[12 + k], kept.v[k]);
    moved += std::abs(pass.r[k] - pass.r[12 + k]);
  }
  EXPECT_GT(moved, 1e-3);  // the text does change the residual
}

TEST(EncoderTest, GatedResidualKeepsItemsWithoutPairsAtTheirPlainVector) {
  Catalog c = TestCatalog(8, 6);
  EncoderConfig config{6, 8, 6, 4, 16, true};
  config.residual_gate = 4;
  auto e = CsftEncoder::Create(config, 1);
  ASSERT_TRUE(e.ok());
  for (float& p : *(*e)->mutable_params()) p += 0.05f;  // W2, b2 != 0
  c.interactions.assign(c.ids.size(), 0);
  c.interactions[4] = 12;
  std::vector<float> fresh(6), seen(6);
  ASSERT_TRUE((*e)->Encode({c.Input(3)}, fresh.data()).ok());
  ASSERT_TRUE((*e)->Encode({c.Input(4)}, seen.data()).ok());
  double moved = 0;
  for (int k = 0; k < 6; ++k) {
    EXPECT_NEAR(fresh[k], c.features[3 * 8 + k], 1e-6);
    moved += std::abs(seen[k] - c.features[4 * 8 + k]);
  }
  EXPECT_GT(moved, 1e-2);  // n = 12: g = 0.75 of a non-zero residual

  // The gate is part of the file.
  const std::string path = ::testing::TempDir() + "/gated.bin";
  ASSERT_TRUE((*e)->Save(path).ok());
  auto loaded = CsftEncoder::Load(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ((*loaded)->config().residual_gate, 4.0f);
  std::vector<float> again(6);
  ASSERT_TRUE((*loaded)->Encode({c.Input(4)}, again.data()).ok());
  EXPECT_EQ(again, seen);
}

TEST(EncoderTest, SaveLoadRoundTripAndCorruption) {
  const Catalog c = TestCatalog(8, 6);
  auto e = CsftEncoder::Create({6, 8, 6, 4, 16, true}, 3);
  ASSERT_TRUE(e.ok());
  for (float& p : *(*e)->mutable_params()) p += 0.01f;
  const std::string path = ::testing::TempDir() + "/enc.bin";
  ASSERT_TRUE((*e)->Save(path).ok());
  auto loaded = CsftEncoder::Load(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ((*loaded)->params(), (*e)->params());
  std::vector<float> a(6), b(6);
  ASSERT_TRUE((*e)->Encode({c.Input(30)}, a.data()).ok());
  ASSERT_TRUE((*loaded)->Encode({c.Input(30)}, b.data()).ok());
  EXPECT_EQ(a, b);
  {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-3, std::ios::end);
    f.put('\x7f');
  }
  EXPECT_EQ(CsftEncoder::Load(path).status().code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(CsftEncoder::Load(path + ".missing").status().code(),
            absl::StatusCode::kNotFound);

  // A NaN parameter under a right checksum is refused, naming it.
  (*e)->mutable_params()->at(5) = std::nanf("");
  ASSERT_TRUE((*e)->Save(path).ok());
  absl::Status s = CsftEncoder::Load(path).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("parameter 5 is not finite"), std::string::npos)
      << s.message();

  // Headers that ask for too much are refused before anything is
  // allocated: a huge genre count, and a genre_dim whose fusion size
  // wrapped around in 32 bits (65 * 66076420 = 2^32 + 4).
  for (const std::string& header :
       {std::string("num_genres=1000000000\tgenre_dim=8"),
        std::string("num_genres=6\tgenre_dim=66076419")}) {
    const std::string bad = ::testing::TempDir() + "/enc_bad.bin";
    {
      std::ofstream f(bad, std::ios::binary | std::ios::trunc);
      f << "#mim-csft-encoder v1\tdim=64\tinput_dim=64\t" << header
        << "\thidden=16\tfusion=tensor\tparams=100\tfnv1a64=0\n";
      const std::vector<float> params(100, 0.0f);
      f.write(reinterpret_cast<const char*>(params.data()),
              params.size() * sizeof(float));
    }
    s = CsftEncoder::Load(bad).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << header;
    EXPECT_NE(s.message().find("parameters; at most"), std::string::npos)
        << s.message();
  }
  EXPECT_EQ(CsftEncoder::Create({64, 64, 6, 66076419, 16, true}, 1)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

// Batches of 4 distinct pairs (Batch): hard negatives come from items
// 100+{4..9} (genre 1, as the positives), so nothing is masked and the
// counts are exact.

struct NegCase {
  bool in_batch, hard;
  int queue;
  int64_t first, second, third;  // negatives summed over 4 queries
};

class NegativeCountTest : public ::testing::TestWithParam<NegCase> {};

TEST_P(NegativeCountTest, CountsPerConfiguration) {
  const NegCase& k = GetParam();
  const Catalog c = TestCatalog();
  CsftOptions o;
  o.batch_size = 4;
  o.in_batch_negatives = k.in_batch;
  o.hard_negatives = k.hard;
  o.queue_batches = k.queue;
  auto t = CsftTrainer::Create(&c, o, {104, 105, 106, 107, 108, 109});
  ASSERT_TRUE(t.ok());
  auto s1 = (*t)->Step(Batch(10));  // positives 110..113, queries 130..133
  ASSERT_TRUE(s1.ok()) << s1.status();
  EXPECT_EQ(s1->negatives, k.first);
  auto s2 = (*t)->Step(Batch(14));
  ASSERT_TRUE(s2.ok());
  EXPECT_EQ(s2->negatives, k.second);
  auto s3 = (*t)->Step(Batch(0));
  ASSERT_TRUE(s3.ok());
  EXPECT_EQ(s3->negatives, k.third);
  EXPECT_EQ((*t)->queue_rows(), size_t(4 * std::min(k.queue, 3)));
}

INSTANTIATE_TEST_SUITE_P(
    Negatives, NegativeCountTest,
    ::testing::Values(
        // in-batch 3 + hard 4 per query, + 4 per queued batch
        NegCase{true, true, 2, 4 * 7, 4 * 11, 4 * 15},
        NegCase{true, true, 1, 4 * 7, 4 * 11, 4 * 11},
        NegCase{true, true, 0, 4 * 7, 4 * 7, 4 * 7},
        NegCase{true, false, 2, 4 * 3, 4 * 7, 4 * 11},
        // each query alone: its own hard negative + the queue
        NegCase{false, true, 2, 4 * 1, 4 * 5, 4 * 9},
        NegCase{false, false, 0, 0, 0, 0}));

TEST(NegativeCountTest, RepeatedPositiveIsNotItsOwnNegative) {
  const Catalog c = TestCatalog();
  CsftOptions o;
  o.hard_negatives = false;
  o.queue_batches = 0;
  auto t = CsftTrainer::Create(&c, o, {});
  ASSERT_TRUE(t.ok());
  // Two queries share positive 101; a third query is item 101 itself.
  auto s = (*t)->Step(std::vector<InterestPair>{{120, 101}, {121, 101},
                                                {101, 102}});
  ASSERT_TRUE(s.ok());
  // Rows 0, 1: only 102 (101 again masked); row 2: 101 is its query -> 0.
  EXPECT_EQ(s->negatives, 1 + 1 + 0);
  EXPECT_EQ((*t)->Step(std::vector<InterestPair>{{120, 999}}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(CsftTrainerTest, ModalityDropoutOutsideZeroToOneIsRefused) {
  const Catalog c = TestCatalog();
  for (double p : {-0.1, 1.0}) {
    CsftOptions o;
    o.modality_dropout = p;
    EXPECT_EQ(CsftTrainer::Create(&c, o, {}).status().code(),
              absl::StatusCode::kInvalidArgument)
        << p;
  }
  CsftOptions o;
  o.modality_dropout = 0.5;
  auto t = CsftTrainer::Create(&c, o, {104, 105, 106, 107, 108, 109});
  ASSERT_TRUE(t.ok()) << t.status();
  auto s = (*t)->Step(Batch(10));
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->negatives, 4 * 7);  // dropout changes no negative count
}

TEST(CsftTrainerTest, NonFiniteOptionsAreRefused) {
  const Catalog c = TestCatalog();
  const double nan = std::nan("");
  const double inf = std::numeric_limits<double>::infinity();
  for (int field = 0; field < 5; ++field) {
    for (double bad : {nan, inf}) {
      CsftOptions o;
      double* target[] = {&o.alpha, &o.beta, &o.residual_penalty,
                          &o.learning_rate, &o.temperature};
      *target[field] = bad;
      EXPECT_EQ(CsftTrainer::Create(&c, o, {}).status().code(),
                absl::StatusCode::kInvalidArgument)
          << "field " << field << " = " << bad;
    }
  }
}

// A zero plain vector (no direction) and a genre id out of range are
// refused with the item named, before any encoder is built.
TEST(BuildCatalogTest, RefusesZeroVectorsAndHugeGenreIds) {
  const std::string path = ::testing::TempDir() + "/catalog_vectors.tsv";
  {
    std::ofstream f(path, std::ios::trunc);
    f << "#mim-vectors v1\tdim=2\tmodality=text\n"
      << "1\t0.5 0.5\n7\t0 0\n";
  }
  absl::StatusOr<Catalog> c = BuildCatalog({path}, {});
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(c.status().message().find("item 7 has an all-zero vector"),
            std::string::npos)
      << c.status();
  {
    std::ofstream f(path, std::ios::trunc);
    f << "#mim-vectors v1\tdim=2\tmodality=text\n"
      << "1\t0.5 0.5\n7\t0 1\n";
  }
  for (int32_t id : {kMaxGenreId, std::numeric_limits<int32_t>::max(), -1}) {
    c = BuildCatalog({path}, {{7, {1, id}}});
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << id;
    EXPECT_NE(c.status().message().find(absl::StrCat("item 7 has genre id ", id)),
              std::string::npos)
        << c.status();
  }
  c = BuildCatalog({path}, {{7, {1, 3}}});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->num_genres, 4);
}

TEST(RecallTest, RanksByCosineExcludingTheQuery) {
  Catalog c;
  c.dim = c.input_dim = 2;
  c.ids = {1, 2, 3};
  c.index = {{1, 0}, {2, 1}, {3, 2}};
  // item 1 = (1,0); 2 = (0.6,0.8); 3 = (0.8,0.6): from 1, item 3 ranks first.
  const std::vector<float> v = {1, 0, 0.6f, 0.8f, 0.8f, 0.6f};
  Recall r = EvaluateRecall(c, v, {{1, 3}, {1, 2}, {1, 77}});
  EXPECT_EQ(r.pairs, 2);
  EXPECT_EQ(r.skipped, 1);
  EXPECT_EQ(r.at10, 1.0);
}

// The whole C-SFT loss (q2item over in-batch, hard, queue and peer
// negatives; q2txt; q2cat; the residual penalty; modality dropout) against
// central differences of the same loss, for every encoder parameter, on
// the trainer's own rows after two steps (the queue filled, the parameters
// moved off their start). Per query alone (ablation) and over the batch.
class CombinedLossGradTest : public ::testing::TestWithParam<bool> {};

TEST_P(CombinedLossGradTest, MatchesFiniteDifferences) {
  const Catalog c = TestCatalog(5, 3);
  CsftOptions o;
  o.alpha = 0.5;
  o.beta = 0.3;
  o.residual_penalty = 0.7;
  o.hard_negatives = true;
  o.queue_batches = 2;
  o.genre_dim = 2;
  o.hidden = 4;
  o.tensor_fusion = true;
  o.modality_dropout = 0.4;
  o.temperature = 0.5;
  o.learning_rate = 0.05;
  o.in_batch_negatives = GetParam();
  auto t = CsftTrainer::Create(&c, o, c.ids);
  ASSERT_TRUE(t.ok()) << t.status();
  CsftTrainer& trainer = **t;
  ASSERT_TRUE(trainer.Step(Batch(0)).ok());
  ASSERT_TRUE(trainer.Step(Batch(4)).ok());
  ASSERT_EQ(trainer.queue_rows(), size_t(8));
  auto rows = trainer.DrawRows(Batch(8));
  ASSERT_TRUE(rows.ok()) << rows.status();
  int dropped = 0;
  for (const ItemInput& in : rows->inputs) dropped += in.drop_modalities;
  ASSERT_GT(dropped, 0);  // the draw covers both kinds of rows
  ASSERT_LT(dropped, static_cast<int>(rows->inputs.size()));
  // Two detached rows from other workers, one with a query's id (masked).
  std::vector<int64_t> peer_ids = {133, rows->ids[0]};
  std::vector<float> peer_vectors = {0.6f, 0.0f, -0.8f, 0.0f, 1.0f, 0.0f};
  const auto loss = [&]() {
    EncoderPass pass;
    EXPECT_TRUE(trainer.encoder().Forward(rows->inputs, &pass).ok());
    auto stats =
        trainer.LossAndGradient(*rows, pass, peer_ids, peer_vectors, nullptr);
    EXPECT_TRUE(stats.ok()) << stats.status();
    return stats.ok() ? stats->loss : 0.0;
  };
  EncoderPass pass;
  ASSERT_TRUE(trainer.encoder().Forward(rows->inputs, &pass).ok());
  std::vector<float> grads;
  auto stats =
      trainer.LossAndGradient(*rows, pass, peer_ids, peer_vectors, &grads);
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->peer_rows, 2);
  EXPECT_DOUBLE_EQ(stats->loss, loss());  // nothing changed by the call
  ASSERT_EQ(grads.size(), size_t(trainer.encoder().num_params()));
  std::vector<float>& params = *trainer.mutable_encoder()->mutable_params();
  // A ReLU input within the step of its kink would fail by chance, not by
  // a wrong gradient: 1e-3 is below the smallest one here.
  const float step = 1e-3f;
  int nonzero = 0;
  for (size_t i = 0; i < params.size(); ++i) {
    const float saved = params[i];
    params[i] = saved + step;
    const double up = loss();
    params[i] = saved - step;
    const double down = loss();
    params[i] = saved;
    const double num = (up - down) / (2.0 * step);
    ASSERT_NEAR(grads[i], num, 3e-3 + 3e-2 * std::abs(num))
        << "parameter " << i << " of " << params.size();
    nonzero += std::abs(num) > 1e-3;
  }
  EXPECT_GT(nonzero, static_cast<int>(params.size()) / 2);
  // A mismatched call is refused, naming the sizes.
  auto bad = trainer.LossAndGradient(*rows, pass, {1}, {}, &grads);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
}

INSTANTIATE_TEST_SUITE_P(InBatchNegatives, CombinedLossGradTest,
                         ::testing::Bool());

TEST(TrainCsftTest, SelectionNeverBelowThePlainVectorsOnValidNew) {
  const Catalog c = TestCatalog();
  PairSplit split;
  for (int q = 0; q < 30; ++q) {
    for (int p = 0; p < 30; p += 3) {
      if (p == q) continue;
      // genre-1 items pair among themselves, others among themselves
      if ((q < 20) != (p < 20)) continue;
      (p % 9 == 0 ? split.valid_new : split.train).push_back({100 + q, 100 + p});
    }
  }
  CsftOptions o;
  o.epochs = 3;
  o.patience = 3;
  o.batch_size = 16;
  auto r = TrainCsft(c, split, o);
  ASSERT_TRUE(r.ok()) << r.status();
  const Recall& plain = r->log[0].valid_new;
  const Recall& chosen = r->log[r->best_epoch].valid_new;
  EXPECT_GE(chosen.at50, plain.at50);
  if (chosen.at50 == plain.at50) EXPECT_GE(chosen.at10, plain.at10);
  EXPECT_EQ(r->log.size(), size_t(4));
}

// Without a held-out new-item pair in the catalogue no epoch can beat the
// plain vectors: refused (unless the last epoch is kept), as are epochs < 1.
TEST(TrainCsftTest, NothingToSelectOnIsRefused) {
  const Catalog c = TestCatalog();
  PairSplit split;
  for (int q = 0; q < 20; ++q) split.train.push_back({100 + q, 100 + (q + 3) % 20});
  split.valid_new.push_back({100, 99999});  // an item outside the catalogue
  CsftOptions o;
  o.epochs = 1;
  o.batch_size = 8;
  auto r = TrainCsft(c, split, o);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("no held-out new-item pair (of 1)"),
            std::string::npos)
      << r.status();
  o.select_last_epoch = true;
  r = TrainCsft(c, split, o);
  EXPECT_TRUE(r.ok()) << r.status();
  o.epochs = 0;
  EXPECT_EQ(TrainCsft(c, split, o).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace mim::csft
