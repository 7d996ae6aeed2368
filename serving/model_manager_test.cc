// ModelManager::Create against a save in progress: the model file already
// replaced, the manifest still the old one (its checksum no longer
// matches). The first load is retried while the manifest changes, and a
// manifest that never changes fails the start after start_wait.
#include "serving/model_manager.h"

#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "worker/model/ciubm_model.h"
#include "worker/model/manifest.h"

namespace mim::serving {
namespace {

// A din model (small shapes) saved in `dir` with `seed`, and a manifest of
// version `version` whose checksum is the file's (or, with `stale`, not).
model::ModelManifest SaveModel(const std::string& dir, uint64_t seed,
                               const std::string& version, bool stale) {
  std::filesystem::create_directories(dir);
  model::ModelConfig c = model::ModelConfigFromName("din").value();
  c.id_dim = 4;
  c.mlp_hidden = {8, 4};
  c.att_hidden = {6, 3};
  c.seed = seed;
  auto m = model::CiubmModel::Create(c);
  EXPECT_TRUE(m.ok()) << m.status();
  const std::string path = dir + "/" + model::kModelFileName;
  EXPECT_TRUE((*m)->Save(path).ok());
  model::ModelManifest manifest;
  manifest.model_version = version;
  manifest.model_name = "din";
  manifest.id_dim = 4;
  manifest.id_table.name = "user_item_ids";
  manifest.id_table.dim = 4;
  manifest.num_shards = 1;
  manifest.seed = seed;
  manifest.model_file_checksum = model::FileChecksum(path).value() + stale;
  return manifest;
}

std::string Dir(const std::string& name) {
  return std::string(std::getenv("TEST_TMPDIR")) + "/" + name;
}

TEST(ModelManagerTest, FirstLoadWaitsOutASaveInProgress) {
  const std::string dir = Dir("in_progress");
  const model::ModelManifest stale = SaveModel(dir, 1, "v1", /*stale=*/true);
  const absl::Status written = model::WriteManifest(dir, stale);
  ASSERT_TRUE(written.ok()) << written;
  // The save finishes 300 ms later: the manifest of the new file.
  std::thread finish([&] {
    absl::SleepFor(absl::Milliseconds(300));
    model::ModelManifest done = stale;
    done.model_version = "v2";
    done.model_file_checksum -= 1;  // the file's own
    EXPECT_TRUE(model::WriteManifest(dir, done).ok());
  });
  ModelManager::Options o;
  o.model_dir = dir;
  o.poll_interval = absl::ZeroDuration();
  o.start_wait = absl::Seconds(30);  // ends when the manifest changes
  auto manager = ModelManager::Create(o);
  finish.join();
  ASSERT_TRUE(manager.ok()) << manager.status();
  EXPECT_EQ((*manager)->Current()->manifest().model_version, "v2");
}

TEST(ModelManagerTest, AManifestThatStaysWrongFailsTheStart) {
  const std::string dir = Dir("broken");
  ASSERT_TRUE(
      model::WriteManifest(dir, SaveModel(dir, 1, "v1", /*stale=*/true)).ok());
  ModelManager::Options o;
  o.model_dir = dir;
  o.poll_interval = absl::ZeroDuration();
  o.start_wait = absl::Milliseconds(200);
  const absl::Time start = absl::Now();
  auto manager = ModelManager::Create(o);
  EXPECT_FALSE(manager.ok());
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(200));
  // A good save loads at once.
  const std::string good = Dir("good");
  ASSERT_TRUE(
      model::WriteManifest(good, SaveModel(good, 2, "g1", /*stale=*/false))
          .ok());
  o.model_dir = good;
  auto loaded = ModelManager::Create(o);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ((*loaded)->Current()->manifest().model_version, "g1");
}

}  // namespace
}  // namespace mim::serving

// libfasttext (linked through the content encoder) defines its own main();
// this one must win, so the test links gtest without gtest_main.
int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
