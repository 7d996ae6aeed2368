#include "serving/model_manager.h"

#include <filesystem>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/atomic_file.h"
#include "base/status_macros.h"
#include "glog/logging.h"

namespace mim::serving {

ServableModel::ServableModel(std::string dir, model::ModelManifest manifest,
                             std::unique_ptr<const model::CiubmModel> model,
                             std::shared_ptr<const ContentEncoder> encoder,
                             std::shared_ptr<const csft::CsftEncoder> csft_encoder)
    : dir_(std::move(dir)),
      manifest_(std::move(manifest)),
      model_(std::move(model)),
      encoder_(std::move(encoder)),
      csft_encoder_(std::move(csft_encoder)) {}

std::unique_ptr<ScoringScratch> ServableModel::Acquire() const {
  {
    absl::MutexLock lock(&mu_);
    if (!pool_.empty()) {
      std::unique_ptr<ScoringScratch> s = std::move(pool_.back());
      pool_.pop_back();
      return s;
    }
  }
  auto s = std::make_unique<ScoringScratch>();
  s->workspace = model_->NewWorkspace();
  return s;
}

void ServableModel::Release(std::unique_ptr<ScoringScratch> scratch) const {
  absl::MutexLock lock(&mu_);
  pool_.push_back(std::move(scratch));
}

namespace {

std::string InDir(const std::string& dir, const std::string& path) {
  return !path.empty() && path[0] != '/' ? dir + "/" + path : path;
}

// The fastText encoder at `path` (relative to the model dir `dir`), or
// `hint` when it is the same encoder (same id and dim).
absl::StatusOr<std::shared_ptr<const ContentEncoder>> LoadTextEncoder(
    const std::string& dir, const std::string& manifest_path,
    const std::string& id, int dim,
    std::shared_ptr<const ContentEncoder> hint) {
  if (hint != nullptr && !id.empty() && hint->id() == id &&
      hint->dim() == dim) {
    return hint;
  }
  const std::string path = InDir(dir, manifest_path);
  absl::StatusOr<std::unique_ptr<ContentEncoder>> loaded =
      ContentEncoder::Load(path);
  if (!loaded.ok()) {
    return absl::FailedPreconditionError(absl::StrCat(
        dir, "/manifest.json names content encoder ", path,
        " which cannot be loaded: ", loaded.status().message()));
  }
  if (!id.empty() && (*loaded)->id() != id) {
    return absl::FailedPreconditionError(absl::StrCat(
        "content encoder ", path, " has id ", (*loaded)->id(), ", but ",
        dir, "/manifest.json was trained on the table encoder ", id,
        " filled (the encoder was replaced since)"));
  }
  if ((*loaded)->dim() != dim) {
    return absl::FailedPreconditionError(absl::StrCat(
        "content encoder ", path, " has dim ", (*loaded)->dim(),
        ", the model's content table has dim ", dim));
  }
  return std::shared_ptr<const ContentEncoder>(std::move(*loaded));
}

// The C-SFT encoder the manifest names, checked against its id and the
// content table's dim; it must read the text vector only (input_dim ==
// dim): the serving tier has no other modality of a new item.
absl::StatusOr<std::shared_ptr<const csft::CsftEncoder>> LoadCsftEncoder(
    const std::string& dir, const model::ContentEncoderInfo& info, int dim) {
  const std::string path = InDir(dir, info.path);
  absl::StatusOr<std::unique_ptr<csft::CsftEncoder>> loaded =
      csft::CsftEncoder::Load(path);
  if (!loaded.ok()) {
    return absl::FailedPreconditionError(absl::StrCat(
        dir, "/manifest.json names C-SFT encoder ", path,
        " which cannot be loaded: ", loaded.status().message()));
  }
  const std::string id = absl::StrFormat("%016x", (*loaded)->Fingerprint());
  if (!info.id.empty() && id != info.id) {
    return absl::FailedPreconditionError(absl::StrCat(
        "C-SFT encoder ", path, " has id ", id, ", but ", dir,
        "/manifest.json was trained on the table encoder ", info.id,
        " filled (the encoder was replaced since)"));
  }
  const csft::EncoderConfig& c = (*loaded)->config();
  if (c.dim != dim || c.input_dim != dim) {
    return absl::FailedPreconditionError(absl::StrCat(
        "C-SFT encoder ", path, " has dim ", c.dim, " and input_dim ",
        c.input_dim, "; the serving tier encodes new items from their text "
        "only, so both must be the content table's dim ", dim,
        " (an encoder trained with extra modalities cannot encode new items "
        "here: upsert their vectors instead)"));
  }
  return std::shared_ptr<const csft::CsftEncoder>(std::move(*loaded));
}

}  // namespace

absl::StatusOr<std::shared_ptr<const ServableModel>> LoadServableModel(
    const std::string& dir, std::shared_ptr<const ContentEncoder> encoder_hint) {
  MIM_ASSIGN_OR_RETURN(model::ModelManifest manifest, model::ReadManifest(dir));
  const std::string model_path = dir + "/" + manifest.model_file;
  MIM_RETURN_IF_ERROR(model::CheckModelFile(model_path, manifest));
  MIM_ASSIGN_OR_RETURN(std::unique_ptr<model::CiubmModel> m,
                       model::CiubmModel::LoadFromFile(model_path));
  if (manifest.model_file_checksum != 0) {
    // The file was read twice (checksum, then load): a save that replaced
    // it in between must not install its parameters under this manifest.
    MIM_ASSIGN_OR_RETURN(const uint64_t after, model::FileChecksum(model_path));
    if (after != manifest.model_file_checksum) {
      return absl::FailedPreconditionError(absl::StrCat(
          model_path, " was replaced while it was being loaded (a save in "
          "progress); retried at the next poll"));
    }
  }
  const model::ModelConfig& c = m->config();
  if (c.id_dim != manifest.id_dim || model::UsesContent(c) != manifest.uses_content ||
      (manifest.uses_content && c.content_dim != manifest.content_dim)) {
    return absl::FailedPreconditionError(absl::StrCat(
        model_path, " holds model '", c.name, "' (id_dim ", c.id_dim,
        ", content_dim ", c.content_dim, ") which does not match ", dir,
        "/manifest.json (id_dim ", manifest.id_dim, ", content_dim ",
        manifest.content_dim, ")"));
  }
  std::shared_ptr<const ContentEncoder> encoder;
  std::shared_ptr<const csft::CsftEncoder> csft_encoder;
  if (manifest.content_table.has_value()) {
    const model::ContentEncoderInfo& info = manifest.content_table->encoder;
    if (info.kind == "fasttext") {
      MIM_ASSIGN_OR_RETURN(
          encoder, LoadTextEncoder(dir, info.path, info.id,
                                   manifest.content_dim,
                                   std::move(encoder_hint)));
    } else if (info.kind == "csft") {
      MIM_ASSIGN_OR_RETURN(
          encoder, LoadTextEncoder(dir, info.text_path, info.text_id,
                                   manifest.content_dim,
                                   std::move(encoder_hint)));
      MIM_ASSIGN_OR_RETURN(csft_encoder,
                           LoadCsftEncoder(dir, info, manifest.content_dim));
    }
  }
  return std::make_shared<const ServableModel>(
      dir, std::move(manifest), std::move(m), std::move(encoder),
      std::move(csft_encoder));
}

ModelManager::ModelManager(const Options& options) : options_(options) {}

namespace {

// The manifest's bytes, or "" when it cannot be read.
std::string ManifestText(const std::string& dir) {
  std::string text;
  if (!base::ReadFileToString(
           absl::StrCat(dir, "/", model::kManifestFileName), &text)
           .ok()) {
    text.clear();
  }
  return text;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ModelManager>> ModelManager::Create(
    const Options& options) {
  // A save in progress (the trainer writes the model file, then the
  // manifest) can fail the first load for a moment: while the manifest
  // changes within `start_wait` of a failure, the load is tried again.
  absl::StatusOr<std::shared_ptr<const ServableModel>> loaded;
  for (int attempt = 1;; ++attempt) {
    const std::string manifest = ManifestText(options.model_dir);
    loaded = LoadServableModel(options.model_dir);
    if (loaded.ok() || attempt >= kStartAttempts) break;
    bool changed = false;
    const absl::Time give_up = absl::Now() + options.start_wait;
    while (!changed && absl::Now() < give_up) {
      absl::SleepFor(absl::Milliseconds(20));
      changed = ManifestText(options.model_dir) != manifest;
    }
    if (!changed) break;
    LOG(WARNING) << "loading " << options.model_dir << " failed while its "
                 << "manifest changed (a save in progress?); trying again: "
                 << loaded.status();
  }
  if (!loaded.ok()) return loaded.status();
  std::shared_ptr<const ServableModel> first = std::move(*loaded);
  if (options.check) MIM_RETURN_IF_ERROR(options.check(*first));
  std::unique_ptr<ModelManager> manager(new ModelManager(options));
  {
    absl::MutexLock lock(&manager->mu_);
    manager->current_ = std::move(first);
  }
  if (options.poll_interval > absl::ZeroDuration()) {
    manager->thread_ = std::thread([m = manager.get()] { m->PollLoop(); });
  }
  return manager;
}

ModelManager::~ModelManager() {
  stop_.Notify();
  if (thread_.joinable()) thread_.join();
}

std::shared_ptr<const ServableModel> ModelManager::Current() const {
  absl::MutexLock lock(&mu_);
  return current_;
}

absl::StatusOr<bool> ModelManager::Poll() {
  absl::MutexLock poll_lock(&poll_mu_);
  const std::shared_ptr<const ServableModel> current = Current();
  absl::StatusOr<model::ModelManifest> manifest =
      model::ReadManifest(options_.model_dir);
  if (!manifest.ok()) return manifest.status();
  if (manifest->model_version == current->manifest().model_version) {
    // The manifest names the version served (put back after a failed one,
    // say): nothing failed to load now.
    absl::MutexLock lock(&mu_);
    last_reload_error_.clear();
    return false;
  }
  // A version that failed to load is tried again only after a back-off
  // (loading means reading the model and perhaps a large encoder), unless
  // the manifest names another version meanwhile.
  const absl::Time now = absl::Now();
  if (manifest->model_version == failed_version_ && now < retry_at_) {
    return failed_status_;
  }
  absl::StatusOr<std::shared_ptr<const ServableModel>> next =
      LoadServableModel(options_.model_dir, current->shared_encoder());
  if (next.ok() && options_.check) {
    if (absl::Status checked = options_.check(**next); !checked.ok()) {
      next = absl::Status(
          checked.code(),
          absl::StrCat((*next)->manifest().model_version, ": ",
                       checked.message()));
    }
  }
  if (!next.ok()) {
    ++failed_reloads_;
    if (manifest->model_version != failed_version_) {
      failed_backoff_ = absl::Seconds(1);
    } else {
      failed_backoff_ = std::min(failed_backoff_ * 2, absl::Seconds(60));
    }
    failed_version_ = manifest->model_version;
    failed_status_ = next.status();
    retry_at_ = now + failed_backoff_;
    {
      absl::MutexLock lock(&mu_);
      // The check's errors already start with the version.
      const std::string prefix = absl::StrCat(manifest->model_version, ": ");
      const absl::string_view message = next.status().message();
      last_reload_error_ = absl::StrCat(
          prefix, absl::StatusCodeToString(next.status().code()), ": ",
          absl::StartsWith(message, prefix) ? message.substr(prefix.size())
                                            : message);
    }
    return next.status();
  }
  failed_version_.clear();
  if ((*next)->manifest().model_version == current->manifest().model_version) {
    return false;  // the manifest changed back between the two reads
  }
  LOG(INFO) << "model " << current->manifest().model_version << " -> "
            << (*next)->manifest().model_version;
  {
    absl::MutexLock lock(&mu_);
    current_ = std::move(*next);
    last_reload_error_.clear();
  }
  ++reloads_;
  return true;
}

std::string ModelManager::last_reload_error() const {
  absl::MutexLock lock(&mu_);
  return last_reload_error_;
}

void ModelManager::PollLoop() {
  std::string last_error;
  while (!stop_.WaitForNotificationWithTimeout(options_.poll_interval)) {
    absl::StatusOr<bool> switched = Poll();
    if (!switched.ok()) {
      // A save in progress shows up as one failed poll; log each distinct
      // error once.
      const std::string error = switched.status().ToString();
      if (error != last_error) {
        LOG(WARNING) << "model reload skipped, still serving "
                     << Current()->manifest().model_version << ": " << error;
        last_error = error;
      }
    } else {
      last_error.clear();
    }
  }
}

}  // namespace mim::serving
