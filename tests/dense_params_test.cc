// The dense parameters kept on the shards (worker/trainer_sync.h,
// PsDenseParams: chunks of an Adam ID table on real //ps:server shards on
// loopback) against the trainer's local Adam (kernels::AdamUpdateCpu) on
// the same gradients: one worker, and two workers whose pushes alternate
// (every push is applied once, in the order acknowledged). The vector is
// not a multiple of the chunk size, so the last chunk's padding is
// covered; a gradient of the wrong size is refused and changes nothing.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/dense_ops.h"
#include "ps/client.h"
#include "tests/process.h"
#include "tests/shared_cluster.h"
#include "worker/trainer_sync.h"

namespace mim {
namespace {

using ::mim::testing::SharedClusterTest;
using ::mim::worker::PsDenseParams;

constexpr int kParams = 2 * worker::kDenseChunk + 23;  // 3 chunks, 1 partial

class DenseParamsTest : public SharedClusterTest {
 protected:
  static void SetUpTestSuite() { StartSharedCluster("dense_params"); }
};

std::vector<float> Random(std::mt19937* rng, float scale) {
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> v(kParams);
  for (float& x : v) x = normal(*rng);
  return v;
}

// Pushes `steps` random gradients through `workers` in turn (worker
// s % size pushes step s) and checks the shards' parameters against local
// Adam over the same gradients in the same order, after every 5 steps.
void CheckAgainstLocalAdam(const std::string& table, int num_workers,
                           int steps) {
  PsDenseParams::AdamOptions adam;
  adam.learning_rate = 0.01f;
  kernels::AdamConfig local;
  local.learning_rate = adam.learning_rate;
  local.beta1 = adam.beta1;
  local.beta2 = adam.beta2;
  local.epsilon = adam.epsilon;
  std::mt19937 rng(17);
  const std::vector<float> initial = Random(&rng, 0.5f);
  std::vector<std::unique_ptr<ps::PsClient>> clients;
  std::vector<std::unique_ptr<PsDenseParams>> workers;
  for (int w = 0; w < num_workers; ++w) {
    clients.push_back(DenseParamsTest::Client());
    ASSERT_NE(clients.back(), nullptr);
    auto p = PsDenseParams::Create(clients.back().get(), table, initial, adam,
                                   /*seed=*/3);
    ASSERT_TRUE(p.ok()) << p.status();
    workers.push_back(std::move(*p));
  }
  std::vector<float> fetched;
  ASSERT_TRUE(workers[0]->Fetch(&fetched).ok());
  EXPECT_EQ(fetched, initial);  // zero rows: exactly the initial vector
  std::vector<float> param = initial, m(kParams, 0.0f), v(kParams, 0.0f);
  for (int s = 1; s <= steps; ++s) {
    // Gradients of several scales, some exactly 0 (a parameter the batch
    // did not touch).
    std::vector<float> grad = Random(&rng, s % 3 == 0 ? 2.0f : 0.1f);
    for (int i = 0; i < kParams; i += 7) grad[i] = 0.0f;
    ASSERT_TRUE(workers[s % num_workers]->PushGradient(grad).ok())
        << "step " << s;
    ASSERT_TRUE(kernels::AdamUpdateCpu(local, s, kParams, grad.data(),
                                       param.data(), m.data(), v.data())
                    .ok());
    if (s % 5 != 0) continue;
    for (int w = 0; w < num_workers; ++w) {
      ASSERT_TRUE(workers[w]->Fetch(&fetched).ok());
      ASSERT_EQ(fetched.size(), size_t(kParams));
      double moved = 0;
      for (int i = 0; i < kParams; ++i) {
        // The shard keeps initial + row and folds the bias corrections
        // differently: float rounding apart, the same update.
        ASSERT_NEAR(fetched[i], param[i], 2e-6 + 2e-5 * std::abs(param[i]))
            << "parameter " << i << " after step " << s << ", worker " << w;
        moved = std::max(moved, double(std::abs(param[i] - initial[i])));
      }
      EXPECT_GT(moved, 2 * adam.learning_rate);  // Adam moved them
    }
  }
}

TEST_F(DenseParamsTest, OneWorkerMatchesLocalAdam) {
  CheckAgainstLocalAdam("dense_one", 1, 30);
}

TEST_F(DenseParamsTest, TwoWorkersPushesEachApplyOnce) {
  CheckAgainstLocalAdam("dense_two", 2, 30);
}

TEST_F(DenseParamsTest, WrongSizeIsRefusedAndChangesNothing) {
  auto client = Client();
  ASSERT_NE(client, nullptr);
  std::mt19937 rng(5);
  const std::vector<float> initial = Random(&rng, 1.0f);
  auto p = PsDenseParams::Create(client.get(), "dense_bad", initial, {}, 1);
  ASSERT_TRUE(p.ok()) << p.status();
  const std::vector<float> short_grad(kParams - 1, 1.0f);
  const absl::Status st = (*p)->PushGradient(short_grad);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find(absl::StrCat(kParams - 1, " floats; expected ",
                                           kParams)),
            std::string::npos)
      << st;
  std::vector<float> fetched;
  ASSERT_TRUE((*p)->Fetch(&fetched).ok());
  EXPECT_EQ(fetched, initial);
}

}  // namespace
}  // namespace mim
