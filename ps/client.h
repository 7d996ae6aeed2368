// PsClient: the client library of the mim parameter server.
//
// Holds one or more gRPC channels to every shard (addresses in shard order:
// address i is shard i of N). Key-based calls deduplicate the keys, route each
// distinct key with embedding::ShardOf, send one request per involved shard in
// parallel (a large one as several concurrent calls: Options::
// pull_keys_per_call, max_keys_per_call; async calls on a CompletionQueue
// that the caller's thread keeps and drains; one call: a blocking call), and
// reassemble the answers in request order, so a repeated key gets the same
// row at every position.
//
// Every RPC carries a deadline (Options::timeout). A shard answering
// UNAVAILABLE (down, restarting, connection refused or broken) is retried
// with exponential backoff while Options::max_attempts and
// Options::retry_budget both allow another attempt; other errors are
// returned at once. Errors keep their canonical code and name the shard:
// "shard 1/2 (127.0.0.1:5001): <server message>"; one that outlived its
// retries adds how many attempts over how long.
//
// Pulls, GetRows and the other idempotent calls are also retried when an
// attempt runs into its deadline (Options::timeout): a shard that is up but
// hung (e.g. SIGSTOP) is asked again until the retry limits run out, and
// the error names it ("no answer before the deadline ... hung, stopped or
// overloaded?").
//
// Pushes are exactly once: every push call carries this client's random id
// and its own sequence number (PushRequest), and a shard applies each
// (id, sequence) once, acknowledging a resend without applying it again
// (embedding/push_log.h). So by default (PushRetry::kAlways) a push is
// resent like a pull, on UNAVAILABLE (connection broken, shard restarting),
// DEADLINE_EXCEEDED and CANCELLED (gRPC ended the call, e.g. at the shard's
// shutdown), and a push cut off after it was sent is resent
// until its shard answers: none is lost, none applied twice. Only when the
// retry limits run out, or the shard answered that its storage failed in
// the middle of the write (INTERNAL, DATA_LOSS), is a push "in doubt":
// IsPushInDoubt() tells that apart from a shard that stayed unreachable
// (nothing was sent to it) or refused the push. Options::push_retry picks the older policies (never
// resend a sent push; a single attempt) instead.
//
// Thread-safety: safe for concurrent access (channels and stubs are
// thread-safe; each call keeps its state on the stack; the pushes held in
// doubt and the learned dims are under mutexes).
#ifndef MIM_PS_CLIENT_H_
#define MIM_PS_CLIENT_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "proto/ps.pb.h"
#include "ps/limits.h"

namespace grpc {
class ChannelCredentials;
}  // namespace grpc

namespace mim::ps {

// PsClient::Options::pull_keys_per_call's default (docs/BENCHMARKS.md,
// "Issue 13: the client side" chose 2048 at load 7-9; "pull_keys_per_call
// 1024 on a quiet machine" moved it to 1024: calls the shard's default
// --inline_pull_keys answers on gRPC's thread).
inline constexpr int kDefaultPullKeysPerCall = 1024;

class PsClient {
 public:
  struct Options {
    // Deadline of every RPC attempt.
    absl::Duration timeout = absl::Seconds(10);
    // UNAVAILABLE and DEADLINE_EXCEEDED (idempotent calls and pushes; see
    // the file comment) are retried while both limits allow: at most
    // max_attempts attempts in total (>= 1), and no attempt starts later
    // than retry_budget after the call's first one. A call gives up within
    // retry_budget plus one timeout, plus, for pushes (which go out only
    // over a connected channel), the time its last wait for the shard's
    // connection took (each connect try is short: about max_backoff at
    // most, unless name resolution hangs). Backoff between attempts: from
    // initial_backoff, doubling up to max_backoff. To ride through a shard
    // restart, bound the time, not the count: e.g. retry_budget 60 s and
    // max_attempts std::numeric_limits<int>::max() (the trainer's
    // --ps_retry_seconds). A shard's "busy" refusal (RESOURCE_EXHAUSTED
    // marked retry-later, ps/status_convert.h: it did nothing) is retried
    // within the same limits by every call but those of PushRetry::kNever;
    // when they run out the caller gets it, IsRetryLater() true.
    int max_attempts = 5;
    absl::Duration retry_budget = absl::InfiniteDuration();
    absl::Duration initial_backoff = absl::Milliseconds(50);
    absl::Duration max_backoff = absl::Seconds(2);
    // Separate TCP connections per shard; calls pick one round-robin, so
    // several caller threads do not share one HTTP/2 connection.
    int channels_per_shard = 1;
    // How a Push to a shard that is (or becomes) unavailable is retried.
    enum class PushRetry {
      // One attempt. Any UNAVAILABLE or DEADLINE_EXCEEDED is in doubt.
      kNever,
      // Sent only over a connected channel (waiting for it within the retry
      // limits), never resent: at most once when in doubt.
      kUnsent,
      // Resent on every UNAVAILABLE and DEADLINE_EXCEEDED, like a pull.
      // Exactly once: the shard recognizes a resend by its tag (see the
      // file comment). A shard built before tags existed ignores them and
      // applies a resend again (at least once).
      kAlways,
    };
    PushRetry push_retry = PushRetry::kAlways;
    // Called on the calling thread before each retry (and each wait for an
    // unreachable shard) with the error naming the shard and the attempt
    // that failed (1 = the first); e.g. for a log line. May be empty.
    std::function<void(const absl::Status& error, int attempt)> on_retry;
    // A shard's part of a request is split into concurrent calls of this
    // many keys (0: never split), so that a big batch is served by several
    // shard threads and transfer overlaps lookup; at most
    // max_calls_per_shard calls per shard (larger calls beyond that).
    int max_keys_per_call = 0;
    int max_calls_per_shard = 4;
    // A Pull's part for one shard is split the same way by this many keys
    // instead (0 or 1: as every other call, by max_keys_per_call): calls
    // of at least pull_keys_per_call keys, at most max_calls_per_shard of
    // them, sent together. The shard looks up one call's rows while
    // another's travel, on as many of its threads, and calls small enough
    // run on its gRPC thread (--inline_pull_keys). Rows, missing keys and
    // errors are those of one call (an error names the shard, as always).
    int pull_keys_per_call = kDefaultPullKeysPerCall;
    // Hard bounds of one call, whatever the split above: at most
    // max_keys_per_rpc keys (0: no bound; the shards refuse more than their
    // --max_keys_per_request, default the same), and no message above
    // max_message_bytes (the shards' --max_message_mb, default the same).
    // A larger request is split into more calls, sent in waves of at most
    // max_calls_per_shard calls per shard, so a caller never meets these
    // limits. A pull's rows are sized by the table's dim, learned from the
    // shards' first answer (until then the largest dim a table may have
    // is assumed). Defaults: ps/limits.h.
    int max_keys_per_rpc = static_cast<int>(kDefaultMaxKeysPerRequest);
    int max_message_bytes = static_cast<int>(kDefaultMaxMessageBytes);
    // Channel credentials of every connection (base/grpc_tls.h builds TLS
    // ones from --tls_ca etc.); null: insecure.
    std::shared_ptr<grpc::ChannelCredentials> credentials;
    // Bearer token sent with every call, health checks included
    // (base/grpc_auth.h; from --auth_token_file); empty: none. A shard
    // with --auth_tokens answers a call without one UNAUTHENTICATED, which
    // is not retried.
    std::string auth_token;
  };

  struct PullResult {
    uint32_t dim = 0;
    std::vector<float> values;      // keys.size() * dim, request order
    std::vector<uint32_t> missing;  // request indices of missing content rows
  };

  struct UpsertResult {
    uint64_t rows_written = 0;
    uint64_t rows_stale = 0;
  };

  struct GetRowsResult {
    uint32_t dim = 0;
    std::vector<float> values;   // keys.size() * dim, zeros where missing
    std::vector<RowMeta> meta;   // one per key, request order
    std::vector<uint32_t> missing;
  };

  // One shard's answer to a call sent to every shard.
  struct ShardStats {
    std::string address;
    TableStatsResponse stats;
  };
  struct ShardCheckpoint {
    std::string address;
    CheckpointResponse checkpoint;
  };
  struct ShardRestore {
    std::string address;
    RestoreResponse restore;
  };
  struct ShardCheckpoints {
    std::string address;
    ListCheckpointsResponse list;  // oldest first by that shard's creation
  };
  struct ShardDelete {
    std::string address;
    DeleteCheckpointResponse deleted;  // deleted() false: it had none
  };
  struct ShardDrop {
    std::string address;
    DropTableResponse drop;  // dropped() false: it had no such table
    // The shard had the table before the drop and answered dropped() false:
    // an earlier attempt dropped it and its answer was lost. drop is then
    // marked dropped, with the rows the shard held before.
    bool answer_lost = false;
  };

  // Creates channels to `addresses` ("host:port", shard order). Connections
  // are made lazily on the first call. INVALID_ARGUMENT for an empty list or
  // an empty address.
  static absl::StatusOr<std::unique_ptr<PsClient>> Create(
      std::vector<std::string> addresses, const Options& options);
  static absl::StatusOr<std::unique_ptr<PsClient>> Create(
      std::vector<std::string> addresses) {
    return Create(std::move(addresses), Options());
  }

  ~PsClient();
  PsClient(const PsClient&) = delete;
  PsClient& operator=(const PsClient&) = delete;

  // While alive, every call this thread makes (on any PsClient) ends by
  // `deadline`: each RPC's deadline is the earlier of it and now +
  // Options::timeout, and no retry starts after it; a call past it fails
  // DEADLINE_EXCEEDED (or UNAVAILABLE from the last attempt). Nested scopes
  // keep the earliest deadline. For a server that forwards its own caller's
  // deadline. Not thread-safe (thread-local; create and destroy on one
  // thread).
  class ScopedDeadline {
   public:
    explicit ScopedDeadline(absl::Time deadline);
    ~ScopedDeadline();
    ScopedDeadline(const ScopedDeadline&) = delete;
    ScopedDeadline& operator=(const ScopedDeadline&) = delete;

   private:
    absl::Time previous_;
  };

  uint32_t num_shards() const;
  const std::vector<std::string>& addresses() const { return addresses_; }

  // Creates the table on every shard. With if_not_exists an existing table
  // with the same config is success. On a partial failure the shards that
  // succeeded keep the table (repeat with if_not_exists to converge).
  absl::Status CreateTable(const TableConfig& config, bool if_not_exists);

  // Tables of shard 0, checked to exist with the same dim and kind on every
  // other shard (FAILED_PRECONDITION naming the shard otherwise).
  absl::StatusOr<std::vector<TableConfig>> ListTables();

  // Rows of `keys` (an unseen key of an ID table reads as its initial value
  // and creates no row; content tables report unseen keys in `missing`,
  // zero-filled). NOT_FOUND for an unknown table. No keys: OK with an empty
  // result and no RPC.
  absl::StatusOr<PullResult> Pull(absl::string_view table,
                                  absl::Span<const uint64_t> keys);

  // As Pull, into a caller buffer of exactly keys.size() * dim floats
  // (INVALID_ARGUMENT if the shard's dim does not match). `missing` may be
  // null when the caller does not need it.
  absl::Status PullInto(absl::string_view table,
                        absl::Span<const uint64_t> keys, absl::Span<float> out,
                        std::vector<uint32_t>* missing);

  // Applies gradients (keys.size() * dim floats, dim = gradients.size() /
  // keys.size()). Gradients of a repeated key are summed here, so each shard
  // gets every key once. Returns the distinct rows updated.
  absl::StatusOr<uint64_t> Push(absl::string_view table,
                                absl::Span<const uint64_t> keys,
                                absl::Span<const float> gradients);

  // With Options::push_retry kAlways (the default), a push in doubt
  // (IsPushInDoubt) leaves here the parts that went out unanswered and
  // those of its later waves that were never sent, with their sequence
  // numbers; a push that failed outright ("another part ... may or may
  // not have been applied") leaves its unanswered parts only, and its
  // failure is the caller's to act on. ResolvePushesInDoubt resends the
  // held parts (within the same retry limits as a push, at most
  // max_calls_per_shard calls per shard at a time): a shard applies each
  // (client, sequence) once, so a part that gets an answer is settled,
  // applied exactly once, whether or not its first attempt had landed.
  // OK when nothing is held or every part got an answer; otherwise the
  // error (naming the shard), and the unsettled parts stay held. A shard
  // refuses a resend older than its window of remembered sequences
  // (embedding::ClientWindow::kWindow pushes to that shard since): such a
  // part stays unknown. At most 4096 parts and 256 MiB are held; parts
  // beyond that are counted, and every later ResolvePushesInDoubt fails
  // with DATA_LOSS naming them. Thread-safe; resolves run one at a time.
  absl::Status ResolvePushesInDoubt();
  // Parts held for ResolvePushesInDoubt (being resent included), plus
  // those not kept.
  size_t pushes_held_in_doubt() const;

  // Writes content rows with `version` (a repeated key keeps its last row).
  absl::StatusOr<UpsertResult> Upsert(absl::string_view table,
                                      absl::Span<const uint64_t> keys,
                                      absl::Span<const float> values,
                                      uint64_t version);

  // Rows and metadata without creating rows.
  absl::StatusOr<GetRowsResult> GetRows(absl::string_view table,
                                        absl::Span<const uint64_t> keys);

  // Per-shard stats of `table` (empty: all tables), shard order.
  absl::StatusOr<std::vector<ShardStats>> Stats(absl::string_view table);

  // Checkpoints every shard under one name; an empty name is replaced by a
  // timestamp chosen here so that all shards agree.
  absl::StatusOr<std::vector<ShardCheckpoint>> Checkpoint(
      const std::string& name);

  // Every shard's checkpoints, shard order, each list oldest first by that
  // shard's creation order. Fails (naming the shard) if any shard fails.
  absl::StatusOr<std::vector<ShardCheckpoints>> ListCheckpoints();

  // Restores one checkpoint on every shard, so that all of them hold the
  // parameters of the same moment. First lists every shard's checkpoints;
  // `name` empty picks NewestCommonCheckpoint of those lists (a checkpoint
  // that landed on some shards only is never picked). The restore itself
  // always sends that explicit name, never "".
  //
  // Nothing is restored when the name is not on every shard: NOT_FOUND
  // naming the shards without it (a given name), or FAILED_PRECONDITION
  // naming each shard's checkpoints (empty name, no checkpoint on every
  // shard). If a shard then fails its restore (e.g. DATA_LOSS in the
  // checkpoint), the error names the shards that did restore; repeating
  // the restore of that name converges once the cause is fixed.
  absl::StatusOr<std::vector<ShardRestore>> Restore(const std::string& name);

  // Deletes checkpoint `name` on every shard that has it, shard order (a
  // shard without it answers deleted = false). NOT_FOUND naming each
  // shard's checkpoints when no shard had it. Retried on UNAVAILABLE (a
  // shard restarting, or busy with another checkpoint operation: those run
  // one at a time per shard); a repeat after a lost answer is not an error.
  absl::StatusOr<std::vector<ShardDelete>> DeleteCheckpoint(
      const std::string& name);

  // Drops `table` on every shard that has it, shard order (a shard without
  // it answers dropped = false), and forgets its dim. Each shard's tables
  // are read first, so that a shard whose answer was lost (it dropped the
  // table, the client resent, the resend found nothing) is reported as
  // dropped (ShardDrop::answer_lost). NOT_FOUND naming the tables there
  // are when no shard had it. Retried on UNAVAILABLE. A shard that fails
  // its drop fails the call naming it; the shards that did drop it stay
  // dropped, and repeating the drop converges.
  absl::StatusOr<std::vector<ShardDrop>> DropTable(const std::string& table);

  // grpc.health.v1 Check of every shard, shard order: OK when SERVING,
  // UNAVAILABLE (naming the address) when unreachable or not serving.
  // Not retried: a health check reports the state now.
  std::vector<absl::Status> Health();

 private:
  struct Shard;
  PsClient(std::vector<std::string> addresses, const Options& options);
  // Pull's engine: `buffer(dim)` returns where keys.size() * dim floats go,
  // once the shards have answered.
  absl::Status PullRows(
      absl::string_view table, absl::Span<const uint64_t> keys,
      const std::function<absl::StatusOr<float*>(uint32_t dim)>& buffer,
      std::vector<uint32_t>* missing);
  // `status` of shard `shard`, with the shard named in its message.
  absl::Status ShardError(uint32_t shard, const absl::Status& status) const;
  // Most keys in one call: Options::max_keys_per_rpc and the keys whose
  // message fits Options::max_message_bytes (`fit`).
  size_t KeysPerCall(size_t fit) const;
  // The dim the shards last answered for `table`; 0 when not known yet.
  uint32_t KnownDim(absl::string_view table) const;
  void SetKnownDim(absl::string_view table, uint32_t dim) const;

  std::vector<std::string> addresses_;
  Options options_;
  std::vector<std::unique_ptr<Shard>> shards_;
  mutable std::atomic<uint64_t> next_channel_{0};
  // Tags of this client's pushes (PushRequest.client_id; the sequence is
  // per shard, Shard::next_sequence).
  const uint64_t client_id_;
  // Parts of pushes in doubt (ResolvePushesInDoubt).
  struct HeldPush {
    uint32_t shard;
    PushRequest request;
  };
  // Adds `parts` to held_; beyond the limits below they are counted in
  // held_dropped_ instead.
  void Hold(std::vector<HeldPush> parts);
  static constexpr size_t kMaxHeldPushes = 4096;
  static constexpr size_t kMaxHeldPushBytes = size_t{256} << 20;
  absl::Mutex resolve_mu_;  // held through a ResolvePushesInDoubt
  mutable absl::Mutex held_mu_;
  std::vector<HeldPush> held_ ABSL_GUARDED_BY(held_mu_);
  size_t held_bytes_ ABSL_GUARDED_BY(held_mu_) = 0;
  size_t held_resending_ ABSL_GUARDED_BY(held_mu_) = 0;
  size_t held_resending_bytes_ ABSL_GUARDED_BY(held_mu_) = 0;
  uint64_t held_dropped_ ABSL_GUARDED_BY(held_mu_) = 0;
  mutable absl::Mutex dims_mu_;
  mutable absl::flat_hash_map<std::string, uint32_t> dims_
      ABSL_GUARDED_BY(dims_mu_);

  friend class ShardCaller;
};

// Whether `status` (from PsClient::Push) says the push may or may not have
// been applied: an attempt of one of its calls was sent (or may have been)
// and ended UNAVAILABLE (connection broke), DEADLINE_EXCEEDED, CANCELLED or
// UNKNOWN (gRPC ended the call after the shard may have run it), INTERNAL
// or DATA_LOSS (the shard's storage failed mid-write: a WAL record whose
// fsync failed is replayed at its next open), and the
// retries did not get an answer (whatever the last attempt's error), and
// no other call of the push failed outright. Other errors of a Push mean
// that the failing shard did not apply its part (with several shards, the
// others may have applied theirs; one whose part is in doubt is named in
// the message; a push sent in several waves whose later wave failed says
// how many calls of the earlier waves were applied).
bool IsPushInDoubt(const absl::Status& status);

// The shard (its index in the client's addresses) whose answer, or lack of
// one, an error of a PsClient call came from, so that a caller can tell
// which shard is down without parsing the message: set on the errors of
// Pull, PullInto, GetRows, Upsert and of a Push part that certainly
// failed. nullopt for OK, for errors of the client itself (bad arguments,
// a dim mismatch between shards), for a push in doubt, and for calls sent
// to every shard, whose errors may combine several shards' (Restore).
std::optional<uint32_t> FailedShard(const absl::Status& status);

// Sum of per-shard stats for each table name, in the order of first shard.
std::vector<TableStats> TotalStats(
    const std::vector<PsClient::ShardStats>& shards);

// Where one table is, from every shard's answer to Stats("") (all tables):
// a table may be on some shards only (a drop or create that failed part
// way).
struct TableOnShards {
  std::vector<int64_t> rows;      // per shard; -1 where it has no such table
  std::vector<uint32_t> dims;     // per shard; 0 where it has no such table
  std::vector<std::string> names;  // every table on any shard, sorted
  size_t shards_with_table() const;
  uint64_t total_rows() const;
  // NOT_FOUND "no shard has table 'T'; tables: a, b" ("none" if none).
  absl::Status NotFound(absl::string_view table) const;
};
TableOnShards FindTableOnShards(const std::vector<PsClient::ShardStats>& shards,
                                absl::string_view table);

// The checkpoint names present on every shard, oldest to newest; empty when
// there are none (or no shards). Order rule: restrict each shard's list to
// these names, keeping that shard's creation order, and call a name's index
// there its rank on that shard. Names are sorted by their smallest rank
// over the shards, then by their largest, then by name. When the shards
// agree on the order of these names this is exactly that order; when they
// disagree (say shard 0 took p before q and shard 1 q before p), the last
// name is the one that every shard has with the most of the common
// checkpoints older than it.
std::vector<std::string> CommonCheckpoints(
    const std::vector<PsClient::ShardCheckpoints>& shards);

// The last of CommonCheckpoints: what Restore("") restores.
// FAILED_PRECONDITION naming each shard's checkpoints when no name is on
// every shard.
absl::StatusOr<std::string> NewestCommonCheckpoint(
    const std::vector<PsClient::ShardCheckpoints>& shards);

}  // namespace mim::ps

#endif  // MIM_PS_CLIENT_H_
