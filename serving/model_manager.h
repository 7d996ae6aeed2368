// ModelManager: the model version the serving tier answers with, loaded
// from a model directory written by the trainer (manifest.json +
// model.mimmodel) and replaced when the directory gets a new version
// (hot reload).
//
// A request takes a snapshot (std::shared_ptr<const ServableModel>) when it
// starts and keeps it to the end, so a reload never changes the model under
// a request and never fails one: the old version lives until its last
// request finishes. A new version is loaded and checked completely (the
// manifest, the model file against the manifest's checksum, the model's
// dims against the manifest, the encoder) before it replaces the current
// one; a directory caught mid-save (the trainer writes the model file, then
// the manifest) or a broken new version is skipped, logged, and retried at
// the next poll while the current version goes on serving.
#ifndef MIM_SERVING_MODEL_MANAGER_H_
#define MIM_SERVING_MODEL_MANAGER_H_

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "serving/content_encoder.h"
#include "worker/csft/encoder.h"
#include "worker/model/batch.h"
#include "worker/model/ciubm_model.h"
#include "worker/model/manifest.h"

namespace mim::serving {

// Per-call scratch for scoring one request with one model version.
// Not thread-safe (one per request at a time; pooled by ServableModel).
struct ScoringScratch {
  std::unique_ptr<model::ModelWorkspace> workspace;
  model::BatchBuilder builder;
  model::Batch batch;
  std::vector<uint64_t> id_keys, content_keys;
  std::vector<model::FeatureRow> rows;
  std::vector<float> probs;
  // Request candidate i is scored as rows[row_of_candidate[i]]: a repeated
  // candidate (same item, same features) is one row.
  std::vector<uint32_t> row_of_candidate;
};

// One loaded model version. The model, manifest and encoder are immutable;
// the scratch pool is internally synchronised: safe for concurrent access.
class ServableModel {
 public:
  ServableModel(std::string dir, model::ModelManifest manifest,
                std::unique_ptr<const model::CiubmModel> model,
                std::shared_ptr<const ContentEncoder> encoder,
                std::shared_ptr<const csft::CsftEncoder> csft_encoder = nullptr);

  const std::string& dir() const { return dir_; }
  const model::ModelManifest& manifest() const { return manifest_; }
  const model::CiubmModel& model() const { return *model_; }
  // Null for a model without content or with an "external" encoder. For
  // a "csft" table, the fastText encoder of the C-SFT encoder's input.
  const ContentEncoder* encoder() const { return encoder_.get(); }
  std::shared_ptr<const ContentEncoder> shared_encoder() const {
    return encoder_;
  }
  // The C-SFT encoder applied after encoder() when the content table was
  // filled by //worker/csft:csft (manifest encoder kind "csft"); else null.
  const csft::CsftEncoder* csft_encoder() const { return csft_encoder_.get(); }
  std::shared_ptr<const csft::CsftEncoder> shared_csft_encoder() const {
    return csft_encoder_;
  }

  // A scratch for one request; give it back with Release.
  std::unique_ptr<ScoringScratch> Acquire() const;
  void Release(std::unique_ptr<ScoringScratch> scratch) const;

 private:
  const std::string dir_;
  const model::ModelManifest manifest_;
  const std::unique_ptr<const model::CiubmModel> model_;
  const std::shared_ptr<const ContentEncoder> encoder_;
  const std::shared_ptr<const csft::CsftEncoder> csft_encoder_;
  mutable absl::Mutex mu_;
  mutable std::vector<std::unique_ptr<ScoringScratch>> pool_
      ABSL_GUARDED_BY(mu_);
};

// Loads the version in `dir`. Errors: NOT_FOUND (no manifest or model
// file), INVALID_ARGUMENT / DATA_LOSS naming the file for a bad manifest
// or model file, FAILED_PRECONDITION when the model file does not match
// the manifest's checksum or dims, or its encoder cannot be loaded (for a
// "csft" encoder also: its id is not the manifest's, its dim is not the
// content table's, or it reads modalities besides the text vector, which
// UpsertItem cannot supply). `encoder_hint` is reused when the manifest
// names the same encoder id (so a reload does not reload the fastText
// model).
absl::StatusOr<std::shared_ptr<const ServableModel>> LoadServableModel(
    const std::string& dir,
    std::shared_ptr<const ContentEncoder> encoder_hint = nullptr);

// Safe for concurrent access.
class ModelManager {
 public:
  struct Options {
    std::string model_dir;
    // How often the directory is checked for a new version; zero: never
    // (Poll only).
    absl::Duration poll_interval = absl::Seconds(1);
    // Run on every loaded version before it is installed (the first one
    // too): an error refuses the version as a failed load does. E.g.
    // CheckModelTables (predictor.h): the tables it reads exist on the
    // shards with its dims. May be empty.
    std::function<absl::Status(const ServableModel&)> check;
    // Create: after a failed first load, how long to watch the manifest
    // for a change (a save in progress) before giving up; a change means
    // another try, at most kStartAttempts in all.
    absl::Duration start_wait = absl::Seconds(2);
  };
  static constexpr int kStartAttempts = 5;

  // Loads the current version (errors as LoadServableModel, or the
  // check's; retried while the manifest changes, see start_wait) and
  // starts the poll thread.
  static absl::StatusOr<std::unique_ptr<ModelManager>> Create(
      const Options& options);
  ~ModelManager();  // stops the poll thread

  // The version to use for one request.
  std::shared_ptr<const ServableModel> Current() const;

  // Checks the directory once: loads and installs a new version if the
  // manifest names another model_version. Returns whether it switched;
  // an error when the new version could not be loaded (the current one
  // stays). A version that failed is retried after a back-off doubling
  // from 1 s to 60 s (its last error is returned meanwhile).
  absl::StatusOr<bool> Poll();

  int64_t reloads() const { return reloads_.load(); }
  int64_t failed_reloads() const { return failed_reloads_.load(); }
  // Why the newest version named by the manifest could not be loaded
  // ("VERSION: error"); empty once a version loads (or none failed).
  std::string last_reload_error() const;

 private:
  explicit ModelManager(const Options& options);
  void PollLoop();

  const Options options_;
  mutable absl::Mutex mu_;
  std::shared_ptr<const ServableModel> current_ ABSL_GUARDED_BY(mu_);
  absl::Mutex poll_mu_;  // one Poll at a time
  // The last version that failed to load, and when to try it again.
  std::string failed_version_ ABSL_GUARDED_BY(poll_mu_);
  absl::Status failed_status_ ABSL_GUARDED_BY(poll_mu_);
  absl::Duration failed_backoff_ ABSL_GUARDED_BY(poll_mu_) = absl::Seconds(1);
  absl::Time retry_at_ ABSL_GUARDED_BY(poll_mu_) = absl::InfinitePast();
  std::atomic<int64_t> reloads_{0}, failed_reloads_{0};
  std::string last_reload_error_ ABSL_GUARDED_BY(mu_);
  absl::Notification stop_;
  std::thread thread_;
};

}  // namespace mim::serving

#endif  // MIM_SERVING_MODEL_MANAGER_H_
