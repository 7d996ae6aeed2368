#include "worker/model/ciubm_model.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "worker/data/feature_key.h"
#include "worker/model/batch.h"
#include "worker/model/model_test_util.h"

namespace mim::model {
namespace {

using testing::ExpectGradMatchesFd;
using testing::RandomBatch;

const char* const kAllNames[] = {"avgpool",     "din",     "sim",
                                 "avgpool_ct",  "din_ct",  "sim_ct",
                                 "avgpool_mim", "din_mim", "sim_mim"};

// Small shapes so the finite-difference checks stay fast.
ModelConfig SmallConfig(const std::string& name) {
  ModelConfig c = ModelConfigFromName(name).value();
  c.id_dim = 4;
  c.content_dim = 5;
  c.sim_k = 3;
  c.mlp_hidden = {8, 4};
  c.att_hidden = {6, 3};
  c.seed = 42;
  return c;
}

std::string TempPath(const std::string& name) {
  return std::string(std::getenv("TEST_TMPDIR") ? std::getenv("TEST_TMPDIR")
                                                : "/tmp") +
         "/" + name;
}

TEST(ModelConfigTest, AcceptsEveryVariantName) {
  for (const char* name : kAllNames) {
    absl::StatusOr<ModelConfig> c = ModelConfigFromName(name);
    ASSERT_TRUE(c.ok()) << name;
    EXPECT_EQ(c->name, name);
    EXPECT_EQ(c->id_dim, 32);
    EXPECT_EQ(c->content_dim, 64);
    EXPECT_EQ(c->mlp_hidden, (std::vector<int>{200, 80}));
    const std::string n = name;
    EXPECT_EQ(c->mim, n.find("_mim") != std::string::npos) << name;
    EXPECT_EQ(c->content_target, n.find("_ct") != std::string::npos) << name;
    const Backbone want = n.rfind("avgpool", 0) == 0 ? Backbone::kAvgPool
                          : n.rfind("din", 0) == 0   ? Backbone::kDin
                                                     : Backbone::kSim;
    EXPECT_EQ(c->backbone, want) << name;
    EXPECT_TRUE(ValidateModelConfig(*c).ok());
  }
}

TEST(ModelConfigTest, RejectsUnknownNameListingValidOnes) {
  absl::StatusOr<ModelConfig> c = ModelConfigFromName("dien_mim");
  ASSERT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(c.status().message().find("dien_mim"), std::string::npos);
  EXPECT_NE(c.status().message().find("avgpool, din, sim, avgpool_ct"),
            std::string::npos);
  EXPECT_EQ(ModelConfigFromName("din_ct_mim").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ModelConfigTest, ValidationNamesTheBadField) {
  ModelConfig c = SmallConfig("din");
  c.att_hidden = {8};
  absl::Status st = ValidateModelConfig(c);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("att_hidden"), std::string::npos);
  c = SmallConfig("din");
  c.id_dim = 0;
  EXPECT_EQ(CiubmModel::Create(c).status().code(),
            absl::StatusCode::kInvalidArgument);
  // Sizes whose products would overflow are refused, not allocated.
  c = SmallConfig("din");
  c.att_hidden = {1 << 30, 4};
  st = ValidateModelConfig(c);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("exceeds"), std::string::npos) << st;
  c = SmallConfig("din");
  c.mlp_hidden.assign(65, 4);
  EXPECT_EQ(ValidateModelConfig(c).code(), absl::StatusCode::kInvalidArgument);
}

TEST(ModelConfigTest, AblationFlagsChangeMlpInputWidth) {
  const int64_t d = 32, dm = 64;
  EXPECT_EQ(MlpInputWidth(ModelConfigFromName("din").value()), 7 * d);
  EXPECT_EQ(MlpInputWidth(ModelConfigFromName("sim_ct").value()), 7 * d + dm);
  ModelConfig mim = ModelConfigFromName("din_mim").value();
  EXPECT_EQ(MlpInputWidth(mim), 8 * d + 2 * dm);
  ModelConfig c = mim;
  c.use_id_interest = false;
  EXPECT_EQ(MlpInputWidth(c), 7 * d + 2 * dm);
  c = mim;
  c.use_content_interest = false;
  EXPECT_EQ(MlpInputWidth(c), 8 * d + dm);
  c = mim;
  c.use_fusion = false;
  EXPECT_EQ(MlpInputWidth(c), 7 * d + 2 * dm);
  // Content/fusion switches only matter for _mim models.
  c = ModelConfigFromName("din").value();
  c.use_fusion = false;
  c.use_content_interest = false;
  EXPECT_EQ(MlpInputWidth(c), 7 * d);

  // The first MLP layer follows the width; attention disappears without
  // the ID interest module.
  c = SmallConfig("din_mim");
  c.use_id_interest = false;
  const std::vector<ParamSlice> layout = DenseParamLayout(c);
  ASSERT_EQ(layout.front().name, "mlp.0.w");
  EXPECT_EQ(layout.front().size, MlpInputWidth(c) * 8);
  EXPECT_EQ(DenseParamLayout(SmallConfig("din_mim")).front().name, "att.w1");
}

// --- Gradient checks of the whole model ---------------------------------

class ModelVariantTest : public ::testing::TestWithParam<const char*> {};

TEST_P(ModelVariantTest, BackwardMatchesFiniteDifferences) {
  const ModelConfig c = SmallConfig(GetParam());
  auto model = CiubmModel::Create(c).value();
  Batch batch = RandomBatch(/*B=*/4, /*L=*/5, /*U=*/12, /*Uc=*/6, c.id_dim,
                            c.content_dim, /*seed=*/7);
  float loss = 0;
  std::vector<float> grad_rows, grad_dense;
  ASSERT_TRUE(model->ForwardBackward(batch, &loss, &grad_rows, &grad_dense).ok());
  EXPECT_EQ(grad_dense, model->dense_gradients());
  ASSERT_EQ(static_cast<int64_t>(grad_dense.size()), model->num_dense_params());
  auto f = [&]() {
    float l = 0;
    std::vector<float> g;
    EXPECT_TRUE(model->ForwardBackward(batch, &l, &g, nullptr).ok());
    return static_cast<double>(l);
  };
  ExpectGradMatchesFd(std::string(GetParam()) + " dense", &model->dense_params(),
                      f, grad_dense);
  ExpectGradMatchesFd(std::string(GetParam()) + " id rows", &batch.id_rows, f,
                      grad_rows);
}

TEST_P(ModelVariantTest, PaddingNeverAffectsOutputsOrGradients) {
  const ModelConfig c = SmallConfig(GetParam());
  auto model = CiubmModel::Create(c).value();
  // Row 12 and content row 6 are referenced only from padding positions.
  Batch batch = RandomBatch(4, 6, 12, 6, c.id_dim, c.content_dim, 17);
  batch.num_id_rows = 13;
  batch.id_rows.resize(13 * c.id_dim, 0.3f);
  batch.num_content_rows = 7;
  batch.content_rows.resize(7 * c.content_dim, 0.5f);
  for (int b = 0; b < batch.batch_size; ++b) {
    for (int i = batch.lens[b]; i < batch.max_len; ++i) {
      batch.behavior_idx[b * batch.max_len + i] = 12;
      batch.content_behavior_idx[b * batch.max_len + i] = 6;
    }
  }
  float loss1 = 0, loss2 = 0;
  std::vector<float> g1, g2, p1, p2;
  ASSERT_TRUE(model->ForwardBackward(batch, &loss1, &g1, nullptr).ok());
  ASSERT_TRUE(model->Forward(batch, &p1).ok());
  for (int k = 0; k < c.id_dim; ++k) {
    EXPECT_EQ(g1[12 * c.id_dim + k], 0.0f) << "padding-only row got gradient";
  }
  // Different padding content and indices: identical outputs, bit for bit.
  for (int k = 0; k < c.id_dim; ++k) batch.id_rows[12 * c.id_dim + k] = 50.0f;
  for (int k = 0; k < c.content_dim; ++k) {
    batch.content_rows[6 * c.content_dim + k] = -3.0f;
  }
  for (int b = 0; b < batch.batch_size; ++b) {
    for (int i = batch.lens[b]; i < batch.max_len; ++i) {
      batch.behavior_idx[b * batch.max_len + i] = (b + i) % 12;
    }
  }
  ASSERT_TRUE(model->ForwardBackward(batch, &loss2, &g2, nullptr).ok());
  ASSERT_TRUE(model->Forward(batch, &p2).ok());
  EXPECT_EQ(p1, p2);
  EXPECT_EQ(loss1, loss2);
  // Rows 0..11 may now be referenced at padding too: their gradients must
  // not change.
  g1.resize(12 * c.id_dim);
  g2.resize(12 * c.id_dim);
  EXPECT_EQ(g1, g2);
}

TEST_P(ModelVariantTest, TrainsOnLearnableToyProblem) {
  // Labels depend on the target item (even items clicked); embeddings are
  // trained through the returned row gradients (SGD, as the PS would).
  ModelConfig c = SmallConfig(GetParam());
  c.adam.learning_rate = 0.01f;
  auto model = CiubmModel::Create(c).value();
  std::vector<data::Sample> samples;
  for (int i = 0; i < 32; ++i) {
    data::Sample s;
    s.user_id = i % 5;
    s.item_id = i % 8;
    s.age_bucket = i % 3;
    s.genres = {i % 4};
    for (int j = 0; j < i % 6; ++j) s.behavior.push_back((i + j) % 9);
    s.label = (s.item_id % 2 == 0) ? 1 : 0;
    samples.push_back(s);
  }
  BatchBuilder builder;
  Batch batch;
  std::vector<uint64_t> id_keys, content_keys;
  ASSERT_TRUE(builder
                  .Build(samples, c.id_dim, c.content_dim, &batch, &id_keys,
                         &content_keys)
                  .ok());
  batch.id_rows = testing::RandomFloats(batch.id_rows.size(), 3, -0.1f, 0.1f);
  batch.content_rows = testing::RandomFloats(batch.content_rows.size(), 4);
  float first = 0, last = 0;
  std::vector<float> grad_rows;
  for (int step = 0; step < 60; ++step) {
    float loss = 0;
    ASSERT_TRUE(model->TrainStep(batch, &loss, &grad_rows).ok());
    ASSERT_TRUE(std::isfinite(loss));
    if (step == 0) first = loss;
    last = loss;
    for (size_t k = 0; k < grad_rows.size(); ++k) {
      batch.id_rows[k] -= 0.5f * grad_rows[k];
    }
  }
  EXPECT_EQ(model->adam_step(), 60);
  EXPECT_LT(last, 0.5f * first) << GetParam() << " first " << first;
}

TEST_P(ModelVariantTest, SaveLoadRoundTripIsBitIdentical) {
  ModelConfig c = SmallConfig(GetParam());
  auto model = CiubmModel::Create(c).value();
  const Batch batch = RandomBatch(4, 5, 12, 6, c.id_dim, c.content_dim, 8);
  float loss = 0;
  std::vector<float> g;
  ASSERT_TRUE(model->TrainStep(batch, &loss, &g).ok());  // params != init
  const std::string path = TempPath(std::string(GetParam()) + ".model");
  ASSERT_TRUE(model->Save(path).ok());
  auto loaded = CiubmModel::LoadFromFile(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ((*loaded)->dense_params(), model->dense_params());
  EXPECT_EQ((*loaded)->config().name, c.name);
  std::vector<float> p1, p2;
  ASSERT_TRUE(model->Forward(batch, &p1).ok());
  ASSERT_TRUE((*loaded)->Forward(batch, &p2).ok());
  EXPECT_EQ(p1, p2);
  // Load into a fresh model of the same architecture.
  auto fresh = CiubmModel::Create(c).value();
  ASSERT_TRUE(fresh->Load(path).ok());
  EXPECT_EQ(fresh->dense_params(), model->dense_params());
}

INSTANTIATE_TEST_SUITE_P(AllVariants, ModelVariantTest,
                         ::testing::ValuesIn(kAllNames));

TEST(CiubmModelTest, AblatedMimModelsCheckGradientsAndTrain) {
  for (int drop = 0; drop < 3; ++drop) {
    ModelConfig c = SmallConfig("din_mim");
    c.use_id_interest = drop != 0;
    c.use_content_interest = drop != 1;
    c.use_fusion = drop != 2;
    auto model = CiubmModel::Create(c).value();
    Batch batch = RandomBatch(4, 5, 12, 6, c.id_dim, c.content_dim, 9);
    float loss = 0;
    std::vector<float> grad_rows, grad_dense;
    ASSERT_TRUE(
        model->ForwardBackward(batch, &loss, &grad_rows, &grad_dense).ok());
    auto f = [&]() {
      float l = 0;
      std::vector<float> g;
      EXPECT_TRUE(model->ForwardBackward(batch, &l, &g, nullptr).ok());
      return static_cast<double>(l);
    };
    ExpectGradMatchesFd("ablation dense", &model->dense_params(), f,
                        grad_dense);
    ExpectGradMatchesFd("ablation rows", &batch.id_rows, f, grad_rows);
  }
}

TEST(CiubmModelTest, ZeroContentVectorsGiveFiniteOutputs) {
  ModelConfig c = SmallConfig("sim_mim");
  auto model = CiubmModel::Create(c).value();
  Batch batch = RandomBatch(4, 5, 12, 6, c.id_dim, c.content_dim, 10);
  std::fill(batch.content_rows.begin(), batch.content_rows.end(), 0.0f);
  float loss = 0;
  std::vector<float> grad_rows, probs;
  ASSERT_TRUE(model->TrainStep(batch, &loss, &grad_rows, &probs).ok());
  EXPECT_TRUE(std::isfinite(loss));
  for (float p : probs) EXPECT_TRUE(std::isfinite(p));
  for (float g : grad_rows) EXPECT_TRUE(std::isfinite(g));
}

TEST(CiubmModelTest, DeterministicAndTrainStepEqualsManualAdam) {
  const ModelConfig c = SmallConfig("din_mim");
  auto a = CiubmModel::Create(c).value();
  auto b = CiubmModel::Create(c).value();
  EXPECT_EQ(a->dense_params(), b->dense_params());
  const Batch batch = RandomBatch(4, 5, 12, 6, c.id_dim, c.content_dim, 11);
  float la = 0, lb = 0;
  std::vector<float> ga, gb, gd;
  ASSERT_TRUE(a->TrainStep(batch, &la, &ga).ok());
  ASSERT_TRUE(b->ForwardBackward(batch, &lb, &gb, &gd).ok());
  ASSERT_TRUE(b->ApplyDenseGradients(gd).ok());
  EXPECT_EQ(la, lb);
  EXPECT_EQ(ga, gb);
  EXPECT_EQ(a->dense_params(), b->dense_params());
  gd.pop_back();
  EXPECT_EQ(b->ApplyDenseGradients(gd).code(),
            absl::StatusCode::kInvalidArgument);
}

// Predict is const with a per-call workspace: one model serves concurrent
// callers, each getting exactly the bits Forward gives, for every variant.
TEST(CiubmModelTest, ConcurrentPredictMatchesForwardBitForBit) {
  for (const char* name : {"avgpool_ct", "din", "sim_mim", "din_mim"}) {
    const ModelConfig c = SmallConfig(name);
    auto model = CiubmModel::Create(c).value();
    std::vector<Batch> batches;
    std::vector<std::vector<float>> expected(4);
    for (int i = 0; i < 4; ++i) {
      batches.push_back(
          RandomBatch(3 + i, 2 + i, 14, 8, c.id_dim, c.content_dim, 40 + i));
      ASSERT_TRUE(model->Forward(batches[i], &expected[i]).ok());
    }
    const CiubmModel& shared = *model;
    std::vector<std::vector<std::vector<float>>> got(
        4, std::vector<std::vector<float>>(4));
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&, t] {
        std::unique_ptr<ModelWorkspace> ws = shared.NewWorkspace();
        for (int rep = 0; rep < 20; ++rep) {
          const int i = (t + rep) % 4;
          ASSERT_TRUE(shared.Predict(batches[i], ws.get(), &got[t][i]).ok());
        }
      });
    }
    for (std::thread& th : threads) th.join();
    for (int t = 0; t < 4; ++t) {
      for (int i = 0; i < 4; ++i) EXPECT_EQ(got[t][i], expected[i]) << name;
    }
    std::vector<float> probs;
    EXPECT_EQ(model->Predict(batches[0], nullptr, &probs).code(),
              absl::StatusCode::kInvalidArgument);
  }
}

TEST(CiubmModelTest, MalformedBatchIsRejected) {
  const ModelConfig c = SmallConfig("din_ct");
  auto model = CiubmModel::Create(c).value();
  Batch batch = RandomBatch(4, 5, 12, 6, c.id_dim, c.content_dim, 12);
  std::vector<float> probs;
  batch.target_idx[2] = 12;
  absl::Status st = model->Forward(batch, &probs);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("target_idx[2] = 12"), std::string::npos) << st;
  batch.target_idx[2] = 0;
  batch.lens[0] = 6;
  EXPECT_EQ(model->Forward(batch, &probs).code(),
            absl::StatusCode::kInvalidArgument);
  batch.lens[0] = 5;
  batch.content_behavior_idx.pop_back();
  EXPECT_EQ(model->Forward(batch, &probs).code(),
            absl::StatusCode::kInvalidArgument);
}

// Finite but huge parameters overflow to inf - inf = NaN; Predict refuses
// rather than hand out a NaN score (found by tests/fuzz model_file: a
// model file with finite weights up to 1e34 loaded and scored NaN).
TEST(CiubmModelTest, PredictRefusesANanScore) {
  const ModelConfig c = SmallConfig("din_ct");
  auto model = CiubmModel::Create(c).value();
  const Batch batch = RandomBatch(4, 5, 12, 6, c.id_dim, c.content_dim, 13);
  std::vector<float>& params = model->dense_params();
  for (size_t i = 0; i < params.size(); ++i) {
    params[i] = i % 2 == 0 ? 3e38f : -3e38f;
  }
  std::unique_ptr<ModelWorkspace> ws = model->NewWorkspace();
  std::vector<float> probs;
  const absl::Status st = model->Predict(batch, ws.get(), &probs);
  EXPECT_EQ(st.code(), absl::StatusCode::kInternal) << st;
  EXPECT_NE(st.message().find("is NaN: the model's dense parameters or the "
                              "rows overflow on this input"),
            std::string::npos)
      << st;
}

// --- Save / Load errors ---------------------------------------------------

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)),
                     std::istreambuf_iterator<char>());
}
void WriteAll(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << data;
}

TEST(ModelFileTest, MalformedFilesAreRejectedWithClearErrors) {
  auto model = CiubmModel::Create(SmallConfig("din_mim")).value();
  const std::string path = TempPath("good.model");
  ASSERT_TRUE(model->Save(path).ok());
  const std::string good = ReadAll(path);

  EXPECT_EQ(CiubmModel::LoadFromFile(TempPath("missing.model")).status().code(),
            absl::StatusCode::kNotFound);

  const std::string bad = TempPath("bad.model");
  std::string data = good;
  data[0] = 'X';
  WriteAll(bad, data);
  absl::Status st = CiubmModel::LoadFromFile(bad).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(st.message().find("bad magic"), std::string::npos) << st;

  data = good;
  data[8] = 9;  // version
  WriteAll(bad, data);
  st = CiubmModel::LoadFromFile(bad).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(st.message().find("version"), std::string::npos) << st;

  WriteAll(bad, good.substr(0, good.size() - 5));
  st = CiubmModel::LoadFromFile(bad).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(st.message().find("truncated"), std::string::npos) << st;

  data = good;
  data[data.size() / 2] ^= 0x10;  // a parameter byte
  WriteAll(bad, data);
  st = CiubmModel::LoadFromFile(bad).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(st.message().find("checksum"), std::string::npos) << st;

  // A payload length near 2^64: length + 8 wraps to the 0 bytes that
  // follow the header, which must not pass as a match.
  data = good.substr(0, 12);
  const uint64_t huge = ~uint64_t{0} - 7;
  data.append(reinterpret_cast<const char*>(&huge), sizeof(huge));
  WriteAll(bad, data);
  st = CiubmModel::LoadFromFile(bad).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(st.message().find("truncated"), std::string::npos) << st;

  // A well-formed file of another architecture.
  auto other = CiubmModel::Create(SmallConfig("din_ct")).value();
  st = other->Load(path);
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(st.message().find("architecture"), std::string::npos) << st;
}

// Saving mid-training and resuming from the file must continue exactly:
// same params and Adam state, so the next step is bit-identical.
TEST(ModelFileTest, ResumeFromSavedFileContinuesTrainingExactly) {
  ModelConfig c = SmallConfig("din_mim");
  auto model = CiubmModel::Create(c).value();
  float loss = 0;
  std::vector<float> g;
  for (int step = 0; step < 3; ++step) {
    const Batch b = RandomBatch(4, 5, 12, 6, c.id_dim, c.content_dim, 20 + step);
    ASSERT_TRUE(model->TrainStep(b, &loss, &g).ok());
  }
  const std::string path = TempPath("resume.model");
  ASSERT_TRUE(model->Save(path).ok());
  auto from_file = CiubmModel::LoadFromFile(path).value();
  auto fresh = CiubmModel::Create(c).value();
  ASSERT_TRUE(fresh->Load(path).ok());
  EXPECT_EQ(from_file->adam_step(), 3);
  EXPECT_EQ(fresh->adam_step(), 3);
  const Batch next = RandomBatch(4, 5, 12, 6, c.id_dim, c.content_dim, 30);
  std::vector<float> g1, g2, g3;
  float l1 = 0, l2 = 0, l3 = 0;
  ASSERT_TRUE(model->TrainStep(next, &l1, &g1).ok());
  ASSERT_TRUE(from_file->TrainStep(next, &l2, &g2).ok());
  ASSERT_TRUE(fresh->TrainStep(next, &l3, &g3).ok());
  EXPECT_EQ(l1, l2);
  EXPECT_EQ(l1, l3);
  EXPECT_EQ(model->dense_params(), from_file->dense_params());
  EXPECT_EQ(model->dense_params(), fresh->dense_params());

  // Without the Adam state the step differs: the test above has teeth.
  auto params_only = CiubmModel::Create(c).value();
  params_only->dense_params() = from_file->dense_params();
  ASSERT_TRUE(params_only->TrainStep(next, &l3, &g3).ok());
  EXPECT_NE(model->dense_params(), params_only->dense_params());
}

uint64_t TestFnv1a64(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char ch : s) {
    h ^= ch;
    h *= 0x100000001b3ULL;
  }
  return h;
}

// A version 1 file (params only, written by earlier releases) still loads,
// with fresh Adam state.
TEST(ModelFileTest, VersionOneFilesLoadWithFreshAdamState) {
  ModelConfig c = SmallConfig("din");
  auto model = CiubmModel::Create(c).value();
  float loss = 0;
  std::vector<float> g;
  ASSERT_TRUE(model->TrainStep(RandomBatch(4, 5, 12, 6, c.id_dim, c.content_dim, 3),
                               &loss, &g).ok());
  const std::string path = TempPath("v2.model");
  ASSERT_TRUE(model->Save(path).ok());
  const std::string v2 = ReadAll(path);
  // Header: magic 8, u32 version, u64 payload length; then payload, u64 sum.
  uint64_t payload_len = 0;
  std::memcpy(&payload_len, v2.data() + 12, 8);
  const uint64_t n = static_cast<uint64_t>(model->num_dense_params());
  const uint64_t v1_len = payload_len - 8 - 2 * n * sizeof(float);
  const std::string payload = v2.substr(20, v1_len);
  std::string v1 = v2.substr(0, 8);
  const uint32_t version = 1;
  v1.append(reinterpret_cast<const char*>(&version), 4);
  v1.append(reinterpret_cast<const char*>(&v1_len), 8);
  v1 += payload;
  const uint64_t sum = TestFnv1a64(payload);
  v1.append(reinterpret_cast<const char*>(&sum), 8);
  const std::string v1_path = TempPath("v1.model");
  WriteAll(v1_path, v1);
  auto loaded = CiubmModel::LoadFromFile(v1_path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ((*loaded)->dense_params(), model->dense_params());
  EXPECT_EQ((*loaded)->adam_step(), 0);
}

TEST(ModelFileTest, NonFiniteParametersAreRefusedOnLoad) {
  auto model = CiubmModel::Create(SmallConfig("din")).value();
  model->dense_params()[5] = std::nanf("");
  const std::string path = TempPath("nan.model");
  ASSERT_TRUE(model->Save(path).ok());
  const absl::Status st = CiubmModel::LoadFromFile(path).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(st.message().find("parameter 5"), std::string::npos) << st;
  auto other = CiubmModel::Create(SmallConfig("din")).value();
  const std::vector<float> before = other->dense_params();
  EXPECT_EQ(other->Load(path).code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(other->dense_params(), before);  // unchanged
}

// --- BatchBuilder -----------------------------------------------------------

// Rows filled by hand (as the serving tier does) give the batch and keys
// the samples give.
TEST(BatchBuilderTest, FeatureRowsBuildTheSameBatchAsSamples) {
  data::Sample a;
  a.user_id = 7;
  a.item_id = 100;
  a.label = 1;
  a.age_bucket = 2;
  a.gender = 1;
  a.occupation = 4;
  a.genres = {3, 5};
  a.behavior = {10, 11, 12};
  data::Sample b = a;
  b.item_id = 101;
  b.label = 0;
  b.genres = {};
  const std::vector<data::Sample> samples = {a, b};
  BatchBuilder builder;
  Batch from_samples, from_rows;
  std::vector<uint64_t> ids1, ids2, content1, content2;
  ASSERT_TRUE(
      builder.Build(samples, 4, 3, &from_samples, &ids1, &content1).ok());
  const std::vector<int64_t> behavior = {10, 11, 12};
  const std::vector<int32_t> genres_a = {3, 5};
  std::vector<FeatureRow> rows(2);
  for (FeatureRow& r : rows) {
    r.user_id = 7;
    r.age_bucket = 2;
    r.gender = 1;
    r.occupation = 4;
    r.behavior = behavior;
  }
  rows[0].item_id = 100;
  rows[0].genres = genres_a;
  rows[0].label = 1;
  rows[1].item_id = 101;
  ASSERT_TRUE(builder.Build(rows, 4, 3, &from_rows, &ids2, &content2).ok());
  EXPECT_EQ(ids1, ids2);
  EXPECT_EQ(content1, content2);
  EXPECT_EQ(from_samples.user_idx, from_rows.user_idx);
  EXPECT_EQ(from_samples.behavior_idx, from_rows.behavior_idx);
  EXPECT_EQ(from_samples.genre_rows, from_rows.genre_rows);
  EXPECT_EQ(from_samples.genre_offsets, from_rows.genre_offsets);
  EXPECT_EQ(from_samples.content_behavior_idx, from_rows.content_behavior_idx);
  EXPECT_EQ(from_samples.labels, from_rows.labels);
}

TEST(BatchBuilderTest, BuildsUniqueKeysIndicesAndPadding) {
  using data::FeatureField;
  using data::FeatureKey;
  std::vector<data::Sample> samples(2);
  samples[0].user_id = 7;
  samples[0].item_id = 100;
  samples[0].label = 1;
  samples[0].genres = {3, 4};
  samples[0].behavior = {100, 101, 102};
  samples[1].user_id = 7;
  samples[1].item_id = 101;
  samples[1].behavior = {5};
  BatchBuilder builder(/*max_behavior=*/2);
  Batch b;
  std::vector<uint64_t> ids, content;
  ASSERT_TRUE(builder.Build(samples, 4, 3, &b, &ids, &content).ok());
  EXPECT_EQ(b.batch_size, 2);
  EXPECT_EQ(b.max_len, 2);
  EXPECT_EQ(b.lens, (std::vector<int32_t>{2, 1}));
  EXPECT_EQ(b.labels, (std::vector<float>{1, 0}));
  // Row keys: user, age, gender, occ, target, genres, behaviour.
  EXPECT_EQ(ids[b.user_idx[0]], FeatureKey(FeatureField::kUser, 7));
  EXPECT_EQ(b.user_idx[0], b.user_idx[1]);
  EXPECT_EQ(ids[b.target_idx[1]], FeatureKey(FeatureField::kItem, 101));
  EXPECT_EQ(ids[b.age_idx[0]], FeatureKey(FeatureField::kAgeBucket, 0));
  EXPECT_EQ(b.genre_offsets, (std::vector<int32_t>{0, 2, 2}));
  EXPECT_EQ(ids[b.genre_rows[1]], FeatureKey(FeatureField::kGenre, 4));
  // Most recent two behaviours kept; item 101 shares the target's row.
  EXPECT_EQ(ids[b.behavior_idx[0]], FeatureKey(FeatureField::kItem, 101));
  EXPECT_EQ(b.behavior_idx[0], b.target_idx[1]);
  EXPECT_EQ(ids[b.behavior_idx[1]], FeatureKey(FeatureField::kItem, 102));
  EXPECT_EQ(b.behavior_idx[3], -1);  // padding
  EXPECT_EQ(b.content_behavior_idx[3], -1);
  // Content keys are raw item ids.
  EXPECT_EQ(content[b.content_target_idx[0]], 100u);
  EXPECT_EQ(content[b.content_behavior_idx[2]], 5u);
  EXPECT_EQ(content.size(), 4u);  // 100, 101, 102, 5
  // Keys are unique and blocks sized to them.
  std::vector<uint64_t> sorted = ids;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(std::unique(sorted.begin(), sorted.end()), sorted.end());
  EXPECT_EQ(b.num_id_rows, static_cast<int64_t>(ids.size()));
  EXPECT_EQ(b.id_rows.size(), ids.size() * 4);
  EXPECT_EQ(b.content_rows.size(), content.size() * 3);
  EXPECT_TRUE(ValidateBatch(b, 4, 3).ok());

  // Reuse: a second build starts from scratch.
  ASSERT_TRUE(builder.Build({samples[1]}, 4, 3, &b, &ids, &content).ok());
  EXPECT_EQ(b.batch_size, 1);
  EXPECT_EQ(content.size(), 2u);
  EXPECT_EQ(builder.Build(absl::Span<const data::Sample>(), 4, 3, &b, &ids, &content).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace mim::model
