// In-memory Storage backend: a sorted map, checkpoints are shared immutable
// copies of it, numbered in creation order. Also what the Storage interface
// defines for every backend (the default batch builder, checkpoint names).
#include <algorithm>
#include <map>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "base/status_macros.h"
#include "embedding/storage/storage.h"

namespace mim::embedding {
namespace {

using Contents = std::map<std::string, std::string, std::less<>>;

// Safe for concurrent access.
class MemoryStorage : public Storage {
 public:
  MemoryStorage() = default;
  // Read-only view of a checkpoint.
  explicit MemoryStorage(std::shared_ptr<const Contents> frozen)
      : read_only_(true), data_(*frozen) {}

  absl::Status Write(const StorageBatch& batch) override {
    if (read_only_) return ReadOnlyError();
    for (const auto& prefix : batch.delete_prefixes) {
      MIM_RETURN_IF_ERROR(ValidateDeletePrefix(prefix));
    }
    absl::MutexLock lock(&mu_);
    for (const auto& [k, v] : batch.puts) data_[k] = v;
    for (const auto& k : batch.deletes) data_.erase(k);
    for (const auto& prefix : batch.delete_prefixes) {
      auto it = data_.lower_bound(prefix);
      while (it != data_.end() && absl::StartsWith(it->first, prefix)) {
        it = data_.erase(it);
      }
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::string> Get(absl::string_view key) const override {
    absl::ReaderMutexLock lock(&mu_);
    auto it = data_.find(key);
    if (it == data_.end()) {
      return absl::NotFoundError(absl::StrCat("no key '", key, "'"));
    }
    return it->second;
  }

  absl::Status ScanAfter(absl::string_view prefix, absl::string_view after,
                         const Visitor& visit) const override {
    absl::ReaderMutexLock lock(&mu_);
    auto it = after.empty() || after < prefix ? data_.lower_bound(prefix)
                                              : data_.upper_bound(after);
    for (; it != data_.end() && absl::StartsWith(it->first, prefix); ++it) {
      absl::Status st = visit(it->first, it->second);
      if (!st.ok()) return st;
    }
    return absl::OkStatus();
  }

  absl::Status CreateCheckpoint(const std::string& name) override {
    if (read_only_) return ReadOnlyError();
    absl::Status st = ValidateCheckpointName(name);
    if (!st.ok()) return st;
    absl::MutexLock lock(&mu_);
    if (checkpoints_.count(name) > 0) {
      return absl::AlreadyExistsError(
          absl::StrCat("checkpoint '", name, "' already exists"));
    }
    checkpoints_[name] = {next_sequence_++, absl::ToUnixMicros(absl::Now()),
                          std::make_shared<const Contents>(data_)};
    return absl::OkStatus();
  }

  std::vector<StoredCheckpoint> ListCheckpoints() const override {
    absl::ReaderMutexLock lock(&mu_);
    std::vector<StoredCheckpoint> out;
    for (const auto& [name, c] : checkpoints_) {
      out.push_back({name, c.sequence, c.created_micros});
    }
    std::sort(out.begin(), out.end(),
              [](const StoredCheckpoint& a, const StoredCheckpoint& b) {
                return a.sequence < b.sequence;
              });
    return out;
  }

  std::string CheckpointPath(const std::string& name) const override {
    return absl::StrCat("memory:", name);
  }

  absl::StatusOr<std::unique_ptr<Storage>> OpenCheckpoint(
      const std::string& name) const override {
    absl::ReaderMutexLock lock(&mu_);
    auto it = checkpoints_.find(name);
    if (it == checkpoints_.end()) return MissingCheckpoint(name);
    return std::unique_ptr<Storage>(new MemoryStorage(it->second.contents));
  }

  absl::Status RestoreCheckpoint(const std::string& name) override {
    if (read_only_) return ReadOnlyError();
    absl::MutexLock lock(&mu_);
    auto it = checkpoints_.find(name);
    if (it == checkpoints_.end()) return MissingCheckpoint(name);
    data_ = *it->second.contents;
    return absl::OkStatus();
  }

  absl::Status DeleteCheckpoint(const std::string& name) override {
    if (read_only_) return ReadOnlyError();
    absl::MutexLock lock(&mu_);
    if (checkpoints_.erase(name) == 0) return MissingCheckpoint(name);
    return absl::OkStatus();
  }

 private:
  static absl::Status ReadOnlyError() {
    return absl::FailedPreconditionError(
        "storage is a read-only checkpoint view");
  }
  static absl::Status MissingCheckpoint(const std::string& name) {
    return absl::NotFoundError(absl::StrCat("no checkpoint named '", name, "'"));
  }

  struct Checkpoint {
    uint64_t sequence;  // creation order
    int64_t created_micros;
    std::shared_ptr<const Contents> contents;
  };

  const bool read_only_ = false;
  mutable absl::Mutex mu_;
  Contents data_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, Checkpoint> checkpoints_ ABSL_GUARDED_BY(mu_);
  uint64_t next_sequence_ ABSL_GUARDED_BY(mu_) = 1;
};

// Storage's default builder: a StorageBatch.
class PlainBatchBuilder : public StorageBatchBuilder {
 public:
  explicit PlainBatchBuilder(const Storage* owner) : owner_(owner) {}
  void PutParts(absl::Span<const absl::string_view> key_parts,
                absl::Span<const absl::string_view> value_parts) override {
    batch_.puts.emplace_back(absl::StrJoin(key_parts, ""),
                             absl::StrJoin(value_parts, ""));
  }
  void Delete(absl::string_view key) override {
    batch_.deletes.emplace_back(key);
  }
  void DeletePrefix(absl::string_view prefix) override {
    batch_.delete_prefixes.emplace_back(prefix);
  }
  const Storage* owner() const { return owner_; }
  const StorageBatch& batch() const { return batch_; }

 private:
  const Storage* const owner_;
  StorageBatch batch_;
};

}  // namespace

std::unique_ptr<StorageBatchBuilder> Storage::NewBatchBuilder(
    size_t /*puts*/, size_t /*bytes*/) {
  return std::make_unique<PlainBatchBuilder>(this);
}

absl::Status Storage::WriteBuilt(std::unique_ptr<StorageBatchBuilder> batch) {
  const auto* plain = dynamic_cast<const PlainBatchBuilder*>(batch.get());
  if (plain == nullptr || plain->owner() != this) {
    return absl::InvalidArgumentError(
        "WriteBuilt takes a batch from the same storage's NewBatchBuilder");
  }
  return Write(plain->batch());
}

absl::Status ValidateDeletePrefix(absl::string_view prefix) {
  if (prefix.empty()) {
    return absl::InvalidArgumentError(
        "a prefix delete needs a non-empty prefix (an empty one would delete "
        "every key)");
  }
  for (char c : prefix) {
    if (static_cast<uint8_t>(c) != 0xff) return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "a prefix delete of ", prefix.size(),
      " 0xff bytes only is not supported (no key bounds its range)"));
}

absl::Status ValidateCheckpointName(absl::string_view name) {
  if (name.empty() || name.size() > 128 || name == "." ||
      absl::StrContains(name, "..")) {
    return absl::InvalidArgumentError(absl::StrCat(
        "checkpoint name '", name,
        "' must be 1..128 characters of [A-Za-z0-9_.-], not '.' and "
        "without '..'"));
  }
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                    (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
    if (!ok) {
      return absl::InvalidArgumentError(absl::StrCat(
          "checkpoint name '", name,
          "' must be 1..128 characters of [A-Za-z0-9_.-] (no '/')"));
    }
  }
  if (absl::EndsWith(name, ".tmp")) {
    return absl::InvalidArgumentError(absl::StrCat(
        "checkpoint name '", name, "' may not end in '.tmp' (reserved)"));
  }
  return absl::OkStatus();
}

std::unique_ptr<Storage> NewMemoryStorage() {
  return std::make_unique<MemoryStorage>();
}

}  // namespace mim::embedding
