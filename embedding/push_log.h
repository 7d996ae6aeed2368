// PushLog: which tagged pushes a shard has applied, per client, so that a
// push resent after a lost answer is acknowledged without being applied
// again (exactly-once pushes; EmbeddingStore::PushOnce).
//
// A client (PsClient) tags each push call with its random 64-bit id and a
// sequence number (1, 2, ...; a resend keeps its number). Calls of one
// client may arrive out of order (several threads, several calls per
// request), so the log keeps, per client, the highest sequence applied and
// a window of which of the kWindow sequences below it were applied. A
// sequence older than the window cannot be told apart (kTooOld): the push
// is refused rather than risk a second application.
//
// The log is bounded: at most `max_clients` clients are remembered; a new
// one evicts the least recently used that is not in a push. A client
// evicted (silent while that many others pushed) loses its protection: a
// resend of one of its old pushes would be applied again.
//
// Records travel in the same storage batch as the rows they protect, so
// the log is exactly as durable as the rows (it survives kill -9 and is
// restored with a checkpoint).
//
// Thread-safety: ClientWindow is not thread-safe; PushLog's own methods are
// safe for concurrent access, and each Entry has a mutex that serializes
// the pushes of one client.
#ifndef MIM_EMBEDDING_PUSH_LOG_H_
#define MIM_EMBEDDING_PUSH_LOG_H_

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace mim::embedding {

class ClientWindow {
 public:
  // Sequences remembered below the highest one applied.
  static constexpr uint64_t kWindow = 1024;

  enum class Seen { kNew, kApplied, kTooOld };
  Seen Check(uint64_t sequence) const;
  // Records `sequence` as applied (Check gave kNew).
  void Mark(uint64_t sequence);
  uint64_t highest() const { return highest_; }

  // Storage value: format, highest, window bits, last use, checksum.
  std::string Encode(int64_t last_used_micros) const;
  // DATA_LOSS naming the client when `value` is damaged.
  static absl::StatusOr<ClientWindow> Decode(uint64_t client_id,
                                             absl::string_view value,
                                             int64_t* last_used_micros);

  bool operator==(const ClientWindow& o) const {
    return highest_ == o.highest_ && bits_ == o.bits_;
  }

 private:
  uint64_t highest_ = 0;  // 0: nothing applied
  // Bit i: sequence highest_ - i was applied (bit 0 is highest_ itself).
  std::array<uint64_t, kWindow / 64> bits_{};
};

// Storage key of a client's record: "c/" + 8 bytes big-endian id.
std::string PushLogKey(uint64_t client_id);
inline constexpr absl::string_view kPushLogPrefix = "c/";
// The client id of a key made by PushLogKey; false if it is not one.
bool ParsePushLogKey(absl::string_view key, uint64_t* client_id);

class PushLog {
 public:
  struct Entry {
    absl::Mutex mu;  // held for the whole of one push of this client
    ClientWindow window ABSL_GUARDED_BY(mu);
    int64_t last_used_micros ABSL_GUARDED_BY(mu) = 0;
    // How many Pinned handles hold this entry; guarded by the log's mu_.
    // A pinned entry is never evicted.
    int pins = 0;
  };

  // A client's entry, kept in the log (never evicted) for as long as this
  // lives: from Get to the end of the push, including the moment before
  // the push takes the entry's mutex. Move-only.
  class Pinned {
   public:
    Pinned(Pinned&& other) noexcept
        : log_(other.log_), entry_(std::move(other.entry_)) {}
    Pinned& operator=(Pinned&&) = delete;
    Pinned(const Pinned&) = delete;
    Pinned& operator=(const Pinned&) = delete;
    ~Pinned();
    Entry* operator->() const { return entry_.get(); }
    Entry& operator*() const { return *entry_; }

   private:
    friend class PushLog;
    Pinned(PushLog* log, std::shared_ptr<Entry> entry)
        : log_(log), entry_(std::move(entry)) {}
    PushLog* log_;
    std::shared_ptr<Entry> entry_;
  };

  // A client dropped from the log by Get.
  struct Evicted {
    uint64_t client_id;
    std::shared_ptr<Entry> entry;
  };

  explicit PushLog(size_t max_clients) : max_clients_(max_clients) {}

  // The entry of `client_id`, created if new, pinned. When that makes the
  // log exceed max_clients, the least recently used other client that is
  // not pinned is dropped and appended to `evicted`: its record must be
  // deleted from storage in the caller's batch, and the caller then calls
  // EvictionsWritten, or, if that batch is not written, Reinstate. Until
  // then a push of an evicted client is refused ABORTED (nothing done; send
  // it again): its new record could otherwise be written before the
  // deletion and deleted by it.
  absl::StatusOr<Pinned> Get(uint64_t client_id, int64_t now_micros,
                             std::vector<Evicted>* evicted);
  // The deletions of `evicted` (from Get) are written.
  void EvictionsWritten(const std::vector<Evicted>& evicted);
  // Puts clients that Get evicted back (their deletion was not written).
  // None can have come back meanwhile: Get refuses it until then.
  void Reinstate(std::vector<Evicted> evicted);
  // Loads a stored record (Open, Restore): nothing is evicted.
  void Load(uint64_t client_id, const ClientWindow& window,
            int64_t last_used_micros);
  size_t size() const;
  size_t max_clients() const { return max_clients_; }
  // Replaces the whole log (Restore).
  void Swap(PushLog* other);

 private:
  void Unpin(Entry* entry);

  const size_t max_clients_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<uint64_t, std::shared_ptr<Entry>> entries_
      ABSL_GUARDED_BY(mu_);
  // Clients evicted whose record's deletion is not written yet.
  absl::flat_hash_set<uint64_t> evicting_ ABSL_GUARDED_BY(mu_);
};

}  // namespace mim::embedding

#endif  // MIM_EMBEDDING_PUSH_LOG_H_
