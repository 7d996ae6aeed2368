// Predictor: the serving tier's domain logic, free of gRPC. Scores one
// request's candidates with the current model version, pulling only the rows
// the request needs, and ingests new items' content (UpsertItem).
//
// Predict, per request:
//   1. one FeatureRow per candidate, all sharing the user and behaviours;
//   2. BatchBuilder deduplicates the ID keys and content keys across
//      behaviours and candidates;
//   3. rows come from the RowCache or, for the misses, from one PsClient
//      call per table (which fans out to the shards in parallel): ID rows
//      with GetRows (an unseen key reads as zeros and creates nothing, as in
//      the trainer's evaluation), content rows with Pull (a missing item
//      reads as zeros: no content);
//   4. all candidates are scored as one batch (CiubmModel::Predict).
// When a shard cannot be reached, rows cached within the cache's max_stale
// are used and the answer is marked stale; a row with no cached copy makes
// the request fail UNAVAILABLE (the shard is named in the log). With
// Options::degraded_reads, such a row is read as a key the table does not
// hold instead (ID: zeros, as an unseen key; content: zeros, no content),
// the answer counts it in rows_unavailable, and the shard is left out of
// the next requests' pulls for Options::shard_down_interval, so that one
// dead shard out of N costs the requests that need it a part of their rows,
// not their answers. After each interval one request (the probe) asks the
// shard again; the others leave it out meanwhile, so the retry budget's
// wait is paid once per interval (and by the requests already waiting on
// the shard when it failed), not on every request. A request whose own
// deadline runs out marks no shard down: its error says nothing about the
// shard it names.
//
// Thread-safety: safe for concurrent access.
#ifndef MIM_SERVING_PREDICTOR_H_
#define MIM_SERVING_PREDICTOR_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "base/executor.h"
#include "base/metrics.h"
#include "ps/client.h"
#include "serving/model_manager.h"
#include "serving/row_cache.h"

namespace mim::serving {

// One request, validated (see ValidatePredictInput). Plain value type.
struct PredictInput {
  int64_t user_id = 0;
  int32_t age_bucket = 0;
  int32_t gender = 0;
  int32_t occupation = 0;
  std::vector<int64_t> behaviors;  // most recent last
  std::vector<int64_t> candidates;
  // Empty, or one genre list per candidate.
  std::vector<std::vector<int32_t>> candidate_genres;
};

struct PredictOutput {
  std::vector<float> scores;  // one per candidate, request order
  std::string model_version;
  bool stale = false;
  int32_t cache_hits = 0;
  int32_t rows_pulled = 0;
  // Rows read as missing because their shard could not be reached
  // (Options::degraded_reads).
  int32_t rows_unavailable = 0;
};

struct UpsertItemOutput {
  uint64_t content_version = 0;
  // Encoder id, or "caller"; for C-SFT "csft:<C-SFT id>+<fastText id>".
  std::string encoder;
  float norm = 0;       // squared L2 norm of the written vector
};

// ModelManager::Options::check for a serving tier on `ps`: OK when every
// table the model reads (its ID table, and its content table if any) is on
// every shard with the model's dim. FAILED_PRECONDITION naming the table
// and the shards when one lacks it or holds it with another dim, so that a
// version whose every request would fail is not installed. When the shards
// cannot be asked (down, restarting), the version is not held back: OK,
// with a warning logged, and requests report the shards as they do.
absl::Status CheckModelTables(ps::PsClient* ps, const ServableModel& model);

class Predictor {
 public:
  struct Options {
    int max_candidates = 1000;
    int max_behaviors = 1000;  // longer lists are refused (the model keeps 50)
    int max_genres = 64;       // per candidate
    // How often the content table's newest version is read from the
    // shards; a version this server did not write flushes the cached
    // content rows. Zero: never.
    absl::Duration content_poll_interval = absl::Seconds(1);
    // Where shard pull latencies go (mim_serving_shard_pull_seconds by
    // table); may be null.
    base::Metrics* metrics = nullptr;
    // Threads that pull a request's content rows while its own thread
    // pulls the ID rows (when both miss the cache). 0: one after the other.
    int fetch_threads = 4;
    // Rows of a shard that cannot be reached (UNAVAILABLE, no answer in
    // time, or overloaded) and have no cached copy are read as missing
    // instead of failing the request (see the file comment); false: the
    // request fails UNAVAILABLE.
    bool degraded_reads = false;
    // How long, under degraded_reads, a shard found unreachable is left
    // out of pulls before a request tries it again.
    absl::Duration shard_down_interval = absl::Seconds(5);
  };

  // `models`, `ps` and `cache` must outlive the predictor.
  Predictor(ModelManager* models, ps::PsClient* ps, RowCache* cache,
            const Options& options);
  ~Predictor();  // stops the content poll thread

  // INVALID_ARGUMENT naming the field when `input` breaks Options' bounds
  // or has a negative id or genre.
  absl::Status ValidatePredictInput(const PredictInput& input) const;

  // Scores `input` (validated here too) by `deadline`. Errors:
  // INVALID_ARGUMENT (bad input), UNAVAILABLE (a shard holding an uncached
  // row unreachable or overloaded), DEADLINE_EXCEEDED; any other failure of
  // the shards or the model is this server's problem, not the caller's:
  // INTERNAL with a generic message (the details go to the server log).
  absl::StatusOr<PredictOutput> Predict(const PredictInput& input,
                                        absl::Time deadline);

  // Writes item `item_id`'s content vector: `vector` when not empty (it
  // must have the content table's dim and finite values), else `text`
  // encoded with the model's content encoder. For a table C-SFT filled
  // (manifest encoder kind "csft"), the text's fastText vector then goes
  // through the C-SFT encoder with the item's `genres`, exactly as
  // //worker/csft:csft encodes a catalogue item (a text with no known word
  // writes zeros, as for fastText). The version written is above the
  // item's own row's and at least the current Unix time in seconds (the
  // unit ingest_content and csft use). When this returns OK, every Predict
  // that starts afterwards reads the new row. Errors: INVALID_ARGUMENT (negative
  // id, wrong dim, non-finite value, empty text without vector, more than
  // max_genres genres, a genre id the C-SFT encoder does not know),
  // FAILED_PRECONDITION (the model has no content table, or its encoder is
  // external and no vector was given), shard errors.
  absl::StatusOr<UpsertItemOutput> UpsertItem(int64_t item_id,
                                              const std::string& text,
                                              absl::Span<const float> vector,
                                              absl::Span<const int32_t> genres,
                                              absl::Time deadline);

  // Reads the content table's newest version from the shards; flushes the
  // cached content rows when it moved since the last poll (another writer:
  // ingest_content, another replica; this server's own upserts cause at
  // most one redundant flush). Read-your-write holds per replica: a client
  // that upserts through one replica and predicts through another sees the
  // new row within that replica's poll interval or cache TTL. Called by the
  // poll thread; public for tests.
  absl::Status RefreshContentVersion();
  uint64_t content_version() const { return content_version_.load(); }

 private:
  // Fills out[i * dim ..] with the row of keys[i] from the cache or the
  // table. `id_table`: GetRows (unseen keys read zero) vs Pull.
  enum Side { kIdSide = 0, kContentSide = 1 };
  // One side's rows of a request: what the cache had, what to pull.
  struct RowFetch {
    Side side = kIdSide;
    const std::string* table = nullptr;
    int dim = 0;
    float* out = nullptr;  // keys.size() * dim floats
    RowCache::Table which{};
    absl::Time now;
    uint64_t generation = 0;
    std::vector<uint64_t> miss_keys;  // not fresh in the cache
    std::vector<size_t> miss_pos;     // their index among the keys
    std::vector<bool> miss_stale;     // a stale copy is in `out`
    bool all_misses_have_stale_copy = true;
    int32_t cache_hits = 0;
    int32_t rows_pulled = 0;
    int32_t rows_unavailable = 0;
    bool stale = false;  // shards unreachable, stale copies served
    absl::Time deadline = absl::InfiniteFuture();  // the request's
    absl::Status status;
  };
  // Fills out[i * dim ..] with the fresh cached row of keys[i] (a stale one
  // as fallback) and lists the rest in `f`.
  void LookupCached(Side side, const std::string& table,
                    absl::Span<const uint64_t> keys, int dim, float* out,
                    RowFetch* f);
  // Pulls f's misses into f->out and the cache (ID table: GetRows, so
  // unseen keys read their initial value without creating rows; content:
  // Pull). Sets f->status. Under degraded_reads, leaves out the shards
  // marked down, and marks down (and leaves out) one that fails unreachable.
  void PullMisses(RowFetch* f);
  // One PsClient call for `keys` of f's table into `rows` (keys.size() *
  // f->dim floats).
  absl::Status FetchRows(const RowFetch& f, absl::Span<const uint64_t> keys,
                         std::vector<float>* rows);
  // Under degraded_reads: whether a pull at `now` leaves `shard` out. A
  // shard marked down is left out until its interval ends; then one pull
  // claims the probe (the mark moves one interval on, so the others still
  // leave it out) and asks it: *probe is set to the mark it claimed (0:
  // none), and the caller reports the outcome with MarkShardUp or
  // MarkShardDown. (The two sides of one request share the mark: the side
  // that does not hold the probe leaves the shard out until it is up.)
  bool LeaveOut(uint32_t shard, absl::Time now, int64_t* probe);
  void MarkShardDown(uint32_t shard, const absl::Status& why);
  // Clears the mark `claimed` (a newer one, set since, stays).
  void MarkShardUp(uint32_t shard, int64_t claimed);
  // Both sides' misses, concurrently when both have some (the content side
  // on fetch_executor_); the first error, ID side first.
  absl::Status PullBoth(RowFetch* id, RowFetch* content, absl::Time deadline);
  void PollLoop();

  ModelManager* const models_;
  ps::PsClient* const ps_;
  RowCache* const cache_;
  const Options options_;
  prometheus::Histogram* pull_seconds_[2] = {nullptr, nullptr};
  prometheus::Counter* rows_unavailable_[2] = {nullptr, nullptr};
  // Per shard, until when (Unix micros) it is left out of pulls; 0: up.
  // Null when constructed without a PsClient (tests of validation only).
  std::unique_ptr<std::atomic<int64_t>[]> shard_down_until_;
  std::unique_ptr<base::Executor> fetch_executor_;  // null: fetch_threads 0
  std::atomic<uint64_t> content_version_{0};
  std::atomic<uint64_t> last_polled_version_{0};
  std::atomic<uint64_t> last_polled_writes_{0};
  absl::Notification stop_;
  std::thread thread_;
};

}  // namespace mim::serving

#endif  // MIM_SERVING_PREDICTOR_H_
