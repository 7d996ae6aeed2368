// A gtest fixture whose tests share one cluster of real //ps:server shards,
// started once per suite (tests that each need their own tables, not their
// own processes). Test-only.
//
// Thread-safety: Client() may be called from any thread while the suite
// runs; the rest from gtest's suite setup and teardown.
#ifndef MIM_TESTS_SHARED_CLUSTER_H_
#define MIM_TESTS_SHARED_CLUSTER_H_

#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "ps/client.h"
#include "tests/process.h"

namespace mim::testing {

class SharedClusterTest : public ::testing::Test {
 public:
  // A new client of the suite's shards; null (and a test failure) if it
  // cannot be created.
  static std::unique_ptr<ps::PsClient> Client() {
    if (shards_ == nullptr) {
      ADD_FAILURE() << "the suite's shards did not start";
      return nullptr;
    }
    auto c = ps::PsClient::Create(ShardProcess::Addresses(*shards_));
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? std::move(*c) : nullptr;
  }

 protected:
  // From the fixture's SetUpTestSuite: starts `num_shards` shards keeping
  // their data in $TEST_TMPDIR/<name>.
  static void StartSharedCluster(const std::string& name,
                                 uint32_t num_shards = 2) {
    auto shards = ShardProcess::StartCluster(
        std::string(std::getenv("TEST_TMPDIR")) + "/" + name, num_shards);
    ASSERT_TRUE(shards.ok()) << shards.status();
    shards_ =
        new std::vector<std::unique_ptr<ShardProcess>>(std::move(*shards));
  }
  static void TearDownTestSuite() {
    delete shards_;
    shards_ = nullptr;
  }
  static const std::vector<std::unique_ptr<ShardProcess>>& shards() {
    return *shards_;
  }

 private:
  static inline std::vector<std::unique_ptr<ShardProcess>>* shards_ = nullptr;
};

}  // namespace mim::testing

#endif  // MIM_TESTS_SHARED_CLUSTER_H_
