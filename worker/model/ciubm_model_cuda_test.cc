// CiubmModel on kernels::CudaBackend() against the same model on the CPU
// backend, every variant: several TrainSteps on seeded random batches of
// changing shapes (buffers grow and are reused), then Predict in a second
// workspace, dense_params() round trips, ApplyDenseGradients and
// Save/Load. Built as //worker/model:ciubm_model_cuda_emulated_test, on the
// CUDA grid emulator (every CI run; the emulator faults on any host
// pointer a kernel is given, so a buffer the model forgot to keep on the
// device fails the test).
//
// Tolerance: the two runs execute the same twins in different summation
// orders (kernels_cuda_test.cc: 2e-4 absolute at unit scale, 1e-3
// relative per op). Losses, probabilities and gradients: 1e-3 absolute +
// 1e-3 relative. Parameters after 4 Adam steps (lr 1e-2): 2e-3. Adam's
// epsilon is 1e-3 here, not 1e-8: with 1e-8 a gradient component that is
// rounding noise (|g| ~ 1e-7, its sign differing between a GPU and the
// CPU) would move a parameter by a whole +-lr, which says nothing about
// the backend; with 1e-3 such a component moves it by ~lr * |g| / 1e-3.
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "worker/model/batch.h"
#include "worker/model/ciubm_model.h"
#include "worker/model/model_test_util.h"

namespace mim::model {
namespace {

using testing::RandomBatch;

constexpr double kTol = 1e-3;

ModelConfig SmallConfig(const std::string& name) {
  ModelConfig c = ModelConfigFromName(name).value();
  c.id_dim = 4;
  c.content_dim = 5;
  c.sim_k = 3;
  c.mlp_hidden = {8, 4};
  c.att_hidden = {6, 3};
  c.seed = 42;
  c.adam.learning_rate = 1e-2f;
  c.adam.epsilon = 1e-3f;  // see the tolerance note above
  return c;
}

void ExpectNear(const std::vector<float>& want, const std::vector<float>& got,
                double tol, const std::string& what) {
  ASSERT_EQ(want.size(), got.size()) << what;
  for (size_t i = 0; i < want.size(); ++i) {
    ASSERT_NEAR(want[i], got[i], tol + kTol * std::abs(want[i]))
        << what << " element " << i;
  }
}

class CudaModelTest : public ::testing::TestWithParam<const char*> {};

TEST_P(CudaModelTest, TrainsLikeTheCpuBackend) {
  ASSERT_TRUE(kernels::CudaDeviceStatus().ok());
  const ModelConfig c = SmallConfig(GetParam());
  auto cpu = CiubmModel::Create(c, kernels::CpuBackend()).value();
  auto cuda = CiubmModel::Create(c, kernels::CudaBackend()).value();
  EXPECT_EQ(cuda->backend().name(), "cuda");
  ASSERT_EQ(cpu->dense_params(), cuda->dense_params());
  // Shapes change (and grow) between steps.
  const int shapes[][4] = {{4, 5, 12, 6}, {6, 7, 20, 9}, {3, 2, 8, 4}, {6, 7, 20, 9}};
  uint32_t seed = 7;
  for (const auto& sh : shapes) {
    SCOPED_TRACE(::testing::Message() << "B=" << sh[0] << " L=" << sh[1]);
    const Batch b = RandomBatch(sh[0], sh[1], sh[2], sh[3], c.id_dim,
                                c.content_dim, seed++);
    float loss_cpu = 0, loss_cuda = 0;
    std::vector<float> g_cpu, g_cuda, p_cpu, p_cuda;
    ASSERT_TRUE(cpu->TrainStep(b, &loss_cpu, &g_cpu, &p_cpu).ok());
    const absl::Status st = cuda->TrainStep(b, &loss_cuda, &g_cuda, &p_cuda);
    ASSERT_TRUE(st.ok()) << st;
    EXPECT_NEAR(loss_cpu, loss_cuda, kTol);
    ExpectNear(g_cpu, g_cuda, kTol, "grad id rows");
    ExpectNear(p_cpu, p_cuda, kTol, "probs");
    ExpectNear(cpu->dense_gradients(), cuda->dense_gradients(), kTol,
               "dense gradient");
  }
  EXPECT_EQ(cpu->adam_step(), cuda->adam_step());
  ExpectNear(cpu->dense_params(), cuda->dense_params(), 2e-3, "params");

  // Predict in a workspace of its own.
  const Batch b = RandomBatch(5, 4, 10, 5, c.id_dim, c.content_dim, 99);
  auto ws_cpu = cpu->NewWorkspace();
  auto ws_cuda = cuda->NewWorkspace();
  std::vector<float> pr_cpu, pr_cuda;
  ASSERT_TRUE(cpu->Predict(b, ws_cpu.get(), &pr_cpu).ok());
  ASSERT_TRUE(cuda->Predict(b, ws_cuda.get(), &pr_cuda).ok());
  ExpectNear(pr_cpu, pr_cuda, kTol, "predict");

  // Host writes reach the device: make both models' params identical,
  // then a step from an external gradient.
  cuda->dense_params() = cpu->dense_params();
  const std::vector<float> grad =
      testing::RandomFloats(cpu->num_dense_params(), 5, -0.1f, 0.1f);
  ASSERT_TRUE(cpu->ApplyDenseGradients(grad).ok());
  ASSERT_TRUE(cuda->ApplyDenseGradients(grad).ok());
  // Params equal, Adam moments within the gradients' tolerance: the step
  // differs by about lr * 1e-3.
  ExpectNear(cpu->dense_params(), cuda->dense_params(), 1e-4, "after apply");
  // ... and the dense gradient of the last step is untouched by it.
  ExpectNear(cpu->dense_gradients(), cuda->dense_gradients(), kTol,
             "dense gradient after apply");

  // Save from the device model, load into a fresh CPU model.
  const std::string path =
      std::string(std::getenv("TEST_TMPDIR")) + "/" + GetParam() + ".model";
  ASSERT_TRUE(cuda->Save(path).ok());
  auto loaded = CiubmModel::LoadFromFile(path, kernels::CudaBackend()).value();
  EXPECT_EQ(loaded->dense_params(), cuda->dense_params());
  EXPECT_EQ(loaded->adam_step(), cuda->adam_step());
  std::vector<float> pr_loaded;
  ASSERT_TRUE(loaded->Forward(b, &pr_loaded).ok());
  std::vector<float> pr_again;
  ASSERT_TRUE(cuda->Predict(b, ws_cuda.get(), &pr_again).ok());
  EXPECT_EQ(pr_loaded, pr_again);
}

// Double-buffered inputs: batch N+1 is staged on another thread while the
// model trains on batch N (what the trainer's prefetch thread does). The
// staged path must give the same bits as the model copying each batch in
// itself; a slot rewritten before its compute finished would differ, and
// the emulator faults on a copy that no event orders after the compute
// that reads its buffer (or a compute that reads before the copy lands).
TEST_P(CudaModelTest, StagedInputsTrainToTheSameBits) {
  const ModelConfig c = SmallConfig(GetParam());
  auto plain = CiubmModel::Create(c, kernels::CudaBackend()).value();
  auto staged = CiubmModel::Create(c, kernels::CudaBackend()).value();
  std::unique_ptr<InputStager> stager = staged->NewInputStager();
  const int shapes[][4] = {{4, 5, 12, 6}, {6, 7, 20, 9}, {3, 2, 8, 4},
                           {6, 7, 20, 9}, {5, 3, 10, 5}, {2, 6, 9, 4}};
  std::vector<Batch> batches;
  uint32_t seed = 11;
  for (const auto& sh : shapes) {
    batches.push_back(RandomBatch(sh[0], sh[1], sh[2], sh[3], c.id_dim,
                                  c.content_dim, seed++));
  }
  std::vector<Batch> copies = batches;
  absl::Status staged0;
  std::thread([&] { staged0 = stager->Stage(&copies[0]); }).join();
  ASSERT_TRUE(staged0.ok()) << staged0;
  for (size_t n = 0; n < batches.size(); ++n) {
    SCOPED_TRACE(::testing::Message() << "batch " << n);
    ASSERT_NE(copies[n].staged.slot, nullptr);
    absl::Status next_staged;
    std::thread stage_next([&] {
      if (n + 1 < copies.size()) next_staged = stager->Stage(&copies[n + 1]);
    });
    float loss_plain = 0, loss_staged = 0;
    std::vector<float> g_plain, g_staged, p_plain, p_staged;
    ASSERT_TRUE(plain->TrainStep(batches[n], &loss_plain, &g_plain, &p_plain).ok());
    const absl::Status st =
        staged->TrainStep(copies[n], &loss_staged, &g_staged, &p_staged);
    stage_next.join();
    ASSERT_TRUE(st.ok()) << st;
    ASSERT_TRUE(next_staged.ok()) << next_staged;
    EXPECT_EQ(loss_plain, loss_staged);
    EXPECT_EQ(g_plain, g_staged);
    EXPECT_EQ(p_plain, p_staged);
  }
  EXPECT_EQ(plain->dense_params(), staged->dense_params());
  // The saved files are byte for byte the same.
  const std::string dir = std::string(std::getenv("TEST_TMPDIR")) + "/";
  ASSERT_TRUE(plain->Save(dir + GetParam() + ".plain").ok());
  ASSERT_TRUE(staged->Save(dir + GetParam() + ".staged").ok());
  auto slurp = [](const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  EXPECT_EQ(slurp(dir + GetParam() + ".plain"),
            slurp(dir + GetParam() + ".staged"));

  // Predict and Forward read staged inputs too.
  Batch b = RandomBatch(5, 4, 10, 5, c.id_dim, c.content_dim, 99);
  Batch b_staged = b;
  ASSERT_TRUE(stager->Stage(&b_staged).ok());
  auto ws = staged->NewWorkspace();
  std::vector<float> pr, pr_staged;
  ASSERT_TRUE(plain->Predict(b, plain->NewWorkspace().get(), &pr).ok());
  ASSERT_TRUE(staged->Predict(b_staged, ws.get(), &pr_staged).ok());
  EXPECT_EQ(pr, pr_staged);
}

TEST(CudaModelStagingTest, StagingMoreThanOneBatchAheadIsRefused) {
  const ModelConfig c = SmallConfig("din_mim");
  auto model = CiubmModel::Create(c, kernels::CudaBackend()).value();
  std::unique_ptr<InputStager> stager = model->NewInputStager();
  std::vector<Batch> b;
  for (uint32_t i = 0; i < 3; ++i) {
    b.push_back(RandomBatch(4, 5, 12, 6, c.id_dim, c.content_dim, 20 + i));
  }
  ASSERT_TRUE(stager->Stage(&b[0]).ok());
  ASSERT_TRUE(stager->Stage(&b[1]).ok());
  // Slot 0 still holds batch 0, not computed yet.
  const absl::Status ahead = stager->Stage(&b[2]);
  EXPECT_EQ(ahead.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(ahead.message().find("slot 0 still holds staging 1"),
            std::string::npos)
      << ahead;
  EXPECT_EQ(b[2].staged.slot, nullptr);

  float loss = 0;
  std::vector<float> grad;
  ASSERT_TRUE(model->TrainStep(b[0], &loss, &grad).ok());
  ASSERT_TRUE(stager->Stage(&b[2]).ok());
  // Batch 0's slot now holds batch 2.
  const absl::Status stale = model->TrainStep(b[0], &loss, &grad);
  EXPECT_EQ(stale.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(stale.message().find("overwritten"), std::string::npos) << stale;
  // A batch changed after staging.
  Batch changed = RandomBatch(6, 7, 20, 9, c.id_dim, c.content_dim, 5);
  changed.staged = b[2].staged;
  const absl::Status differs = model->TrainStep(changed, &loss, &grad);
  EXPECT_EQ(differs.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(differs.message().find("changed after InputStager::Stage"),
            std::string::npos)
      << differs;
  // Another model's stager.
  auto other = CiubmModel::Create(SmallConfig("din"), kernels::CudaBackend()).value();
  const absl::Status foreign = other->TrainStep(b[2], &loss, &grad);
  EXPECT_EQ(foreign.code(), absl::StatusCode::kFailedPrecondition);
}

TEST(CudaModelStagingTest, AFailedComputeFreesItsSlot) {
  const ModelConfig c = SmallConfig("din_mim");
  auto model = CiubmModel::Create(c, kernels::CudaBackend()).value();
  auto plain = CiubmModel::Create(c, kernels::CudaBackend()).value();
  std::unique_ptr<InputStager> stager = model->NewInputStager();
  std::vector<Batch> b;
  for (uint32_t i = 0; i < 4; ++i) {
    b.push_back(RandomBatch(4, 5, 12, 6, c.id_dim, c.content_dim, 40 + i));
  }
  ASSERT_TRUE(stager->Stage(&b[0]).ok());  // slot 0
  ASSERT_TRUE(stager->Stage(&b[1]).ok());  // slot 1
  // A call on batch 0's staged inputs that fails: the batch no longer
  // matches what was staged.
  Batch changed = RandomBatch(6, 7, 20, 9, c.id_dim, c.content_dim, 5);
  changed.staged = b[0].staged;
  float loss = 0;
  std::vector<float> grad, probs;
  ASSERT_EQ(model->TrainStep(changed, &loss, &grad).code(),
            absl::StatusCode::kFailedPrecondition);
  // Slot 0 is free again, and the model goes on with the same results as
  // one that never failed.
  ASSERT_TRUE(stager->Stage(&b[2]).ok());
  float loss_plain = 0;
  std::vector<float> grad_plain;
  ASSERT_TRUE(model->TrainStep(b[1], &loss, &grad).ok());
  ASSERT_TRUE(plain->TrainStep(b[1], &loss_plain, &grad_plain).ok());
  EXPECT_EQ(loss, loss_plain);
  EXPECT_EQ(grad, grad_plain);
  ASSERT_TRUE(model->TrainStep(b[2], &loss, &grad).ok());
  Batch b2 = b[2];
  b2.staged = StagedInputs{};
  ASSERT_TRUE(plain->TrainStep(b2, &loss_plain, &grad_plain).ok());
  EXPECT_EQ(loss, loss_plain);
  EXPECT_EQ(grad, grad_plain);
  // A failed Predict frees its slot too.
  ASSERT_TRUE(stager->Stage(&b[3]).ok());  // slot 1
  Batch changed3 = RandomBatch(6, 7, 20, 9, c.id_dim, c.content_dim, 6);
  changed3.staged = b[3].staged;
  auto ws = model->NewWorkspace();
  ASSERT_EQ(model->Predict(changed3, ws.get(), &probs).code(),
            absl::StatusCode::kFailedPrecondition);
  Batch again = b[0];
  again.staged = StagedInputs{};
  EXPECT_TRUE(stager->Stage(&again).ok());  // slot 0 (batch 2 computed)
  EXPECT_TRUE(stager->Stage(&b[1]).ok());   // slot 1, freed by the failure
  // A foreign model's failure leaves the slot alone.
  auto other = CiubmModel::Create(SmallConfig("din"), kernels::CudaBackend()).value();
  ASSERT_EQ(other->TrainStep(b[1], &loss, &grad).code(),
            absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(model->TrainStep(again, &loss, &grad).ok());  // frees slot 0
  Batch extra = b[3];
  extra.staged = StagedInputs{};
  ASSERT_TRUE(stager->Stage(&extra).ok());  // slot 0
  Batch next = b[2];
  next.staged = StagedInputs{};
  const absl::Status held = stager->Stage(&next);  // slot 1: b[1], not computed
  EXPECT_EQ(held.code(), absl::StatusCode::kFailedPrecondition) << held;
  EXPECT_NE(held.message().find("slot 1 still holds"), std::string::npos)
      << held;
}

TEST(CudaModelStagingTest, TheCpuBackendReadsBatchesInPlace) {
  const ModelConfig c = SmallConfig("din_mim");
  auto model = CiubmModel::Create(c, kernels::CpuBackend()).value();
  std::unique_ptr<InputStager> stager = model->NewInputStager();
  Batch b = RandomBatch(4, 5, 12, 6, c.id_dim, c.content_dim, 1);
  ASSERT_TRUE(stager->Stage(&b).ok());
  EXPECT_EQ(b.staged.slot, nullptr);
}

TEST(CudaModelErrorsTest, BadIndexIsInvalidArgument) {
  const ModelConfig c = SmallConfig("din_mim");
  auto cuda = CiubmModel::Create(c, kernels::CudaBackend()).value();
  Batch b = RandomBatch(4, 5, 12, 6, c.id_dim, c.content_dim, 3);
  b.user_idx[2] = 12;  // = U
  std::vector<float> probs;
  EXPECT_EQ(cuda->Forward(b, &probs).code(),
            absl::StatusCode::kInvalidArgument);
}

INSTANTIATE_TEST_SUITE_P(AllVariants, CudaModelTest,
                         ::testing::Values("avgpool", "din", "sim",
                                           "avgpool_ct", "din_ct", "sim_ct",
                                           "avgpool_mim", "din_mim",
                                           "sim_mim"));

}  // namespace
}  // namespace mim::model
