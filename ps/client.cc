#include "ps/client.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <numeric>
#include <set>
#include <string>
#include <tuple>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/random/random.h"
#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "base/grpc_auth.h"
#include "embedding/sharding.h"
#include "grpcpp/channel.h"
#include "grpcpp/completion_queue.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"
#include "proto/ps.grpc.pb.h"
#include "ps/health.grpc.pb.h"
#include "ps/pull_wire.h"
#include "ps/status_convert.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "rows travel as little-endian float32 bytes");

namespace mim::ps {

namespace {

using Stub = ParameterServer::Stub;
// Pull's request is written straight into a slice and its answer read in
// place (ps/pull_wire.h): no PullRequest or PullResponse object.
using PullStub = grpc::TemplatedGenericStub<grpc::ByteBuffer, PullReply>;
constexpr char kPullMethod[] = "/mim.ps.ParameterServer/Pull";

// The stubs of one channel.
struct ChannelStubs {
  Stub* stub;
  PullStub* pull;
};

}  // namespace

struct PsClient::Shard {
  std::vector<std::shared_ptr<grpc::Channel>> channels;  // one per stub
  std::vector<std::unique_ptr<ParameterServer::Stub>> stubs;
  std::vector<std::unique_ptr<PullStub>> pull_stubs;  // one per channel
  std::unique_ptr<grpc::health::v1::Health::Stub> health;
  // Sequence numbers of this client's push calls to this shard (1, 2, ...).
  // Per shard, so that the shard's window of remembered sequences
  // (embedding::ClientWindow::kWindow) covers that many of the calls it
  // receives, however many shards a push spans.
  std::atomic<uint64_t> next_sequence{0};
};

namespace {

// Both call forms of one RPC, so that the fan-out below is written once.
// A single-shard call is a plain blocking call; several shards go out
// together as async calls on one CompletionQueue that the caller's thread
// drains, so no other thread is involved in either case.
#define MIM_PS_DEFINE_RPC(Name)                                              \
  struct Name##Rpc {                                                         \
    using Request = Name##Request;                                           \
    using Response = Name##Response;                                         \
    static grpc::Status Sync(const ChannelStubs& stubs,                      \
                             grpc::ClientContext* context,                   \
                             const Request& request, Response* response) {   \
      return stubs.stub->Name(context, request, response);                   \
    }                                                                        \
    static std::unique_ptr<grpc::ClientAsyncResponseReader<Response>> Async( \
        const ChannelStubs& stubs, grpc::ClientContext* context,             \
        const Request& request, grpc::CompletionQueue* cq) {                 \
      return stubs.stub->Async##Name(context, request, cq);                  \
    }                                                                        \
  };
MIM_PS_DEFINE_RPC(Push)
MIM_PS_DEFINE_RPC(Upsert)
MIM_PS_DEFINE_RPC(CreateTable)
MIM_PS_DEFINE_RPC(ListTables)
MIM_PS_DEFINE_RPC(TableStats)
MIM_PS_DEFINE_RPC(GetRows)
MIM_PS_DEFINE_RPC(Checkpoint)
MIM_PS_DEFINE_RPC(Restore)
MIM_PS_DEFINE_RPC(ListCheckpoints)
MIM_PS_DEFINE_RPC(DeleteCheckpoint)
MIM_PS_DEFINE_RPC(DropTable)
#undef MIM_PS_DEFINE_RPC

// Pull with its request prebuilt (PullRequestBuffer) and its answer read in
// place: the same method on the wire.
struct PullRpc {
  using Request = grpc::ByteBuffer;
  using Response = PullReply;
  static std::unique_ptr<grpc::ClientAsyncResponseReader<Response>> Async(
      const ChannelStubs& stubs, grpc::ClientContext* context,
      const Request& request, grpc::CompletionQueue* cq) {
    auto reader = stubs.pull->PrepareUnaryCall(context, kPullMethod, request,
                                               cq);
    reader->StartCall();
    return reader;
  }
  static grpc::Status Sync(const ChannelStubs& stubs,
                           grpc::ClientContext* context,
                           const Request& request, Response* response);
};

// Waits for `n` completions on `cq`.
void Await(grpc::CompletionQueue* cq, size_t n) {
  void* tag = nullptr;
  bool ok = false;
  for (size_t i = 0; i < n && cq->Next(&tag, &ok); ++i) {
  }
}

// Waits for `n` completions on `cq`, then shuts it down and drains it (a
// CompletionQueue must be empty before it is destroyed).
void AwaitAll(grpc::CompletionQueue* cq, size_t n) {
  Await(cq, n);
  cq->Shutdown();
  void* tag = nullptr;
  bool ok = false;
  while (cq->Next(&tag, &ok)) {
  }
}

// The completion queue of this thread's calls, made once per thread
// rather than once per call (its creation and shutdown showed in the
// client's profile). Every call waits for all of its completions before
// it returns, so the queue is empty between calls (a nested call, e.g.
// from Options::on_retry, runs between attempts); it is shut down and
// drained when the thread ends. Not thread-safe (per thread).
grpc::CompletionQueue* ThreadQueue() {
  struct Queue {
    grpc::CompletionQueue cq;
    ~Queue() { AwaitAll(&cq, 0); }
  };
  thread_local Queue queue;
  return &queue.cq;
}

grpc::Status PullRpc::Sync(const ChannelStubs& stubs,
                           grpc::ClientContext* context,
                           const Request& request, Response* response) {
  // A blocking call is a completion queue drained by this thread, as
  // gRPC's own blocking calls are.
  grpc::CompletionQueue* cq = ThreadQueue();
  grpc::Status status;
  Async(stubs, context, request, cq)->Finish(response, &status, nullptr);
  Await(cq, 1);
  return status;
}

// The deadline set by the innermost PsClient::ScopedDeadline on this
// thread (InfiniteFuture: none).
thread_local absl::Time call_deadline = absl::InfiniteFuture();

std::chrono::system_clock::time_point Deadline(absl::Duration timeout) {
  return absl::ToChronoTime(std::min(absl::Now() + timeout, call_deadline));
}

// Rows as packed bytes: the wire form of keys.size() * dim floats.
const float* RowsOf(const std::string& bytes) {
  return reinterpret_cast<const float*>(bytes.data());
}
float* MutableRowsOf(std::string* bytes) {
  return reinterpret_cast<float*>(bytes->data());
}

absl::Status CheckFinite(absl::Span<const uint64_t> keys,
                         absl::Span<const float> rows, size_t dim,
                         absl::string_view what) {
  for (size_t i = 0; i < rows.size(); ++i) {
    if (!std::isfinite(rows[i])) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, " of key ", keys[i / dim], " (index ", i / dim,
          ") is not finite at dimension ", i % dim));
    }
  }
  return absl::OkStatus();
}

size_t MessageBytes(const PsClient::Options& options) {
  return static_cast<size_t>(std::max(0, options.max_message_bytes));
}

absl::StatusOr<size_t> RowDim(size_t num_keys, size_t num_floats,
                              absl::string_view what) {
  if (num_floats % num_keys != 0 || num_floats == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, " has ", num_floats, " floats, not a positive multiple of the ",
        num_keys, " keys"));
  }
  return num_floats / num_keys;
}

// Where each distinct key of a request goes: keys are deduplicated, then
// appended, in first-seen order, to a call to their shard. A shard's keys are
// split into up to Options::max_calls_per_shard calls of at least
// Options::max_keys_per_call keys (a Pull's: Options::pull_keys_per_call;
// see Split), so a large batch is served by several
// shard threads at once and the client reads one answer while the shard
// computes the next; but no call gets more than `max_keys` keys (what the
// shard accepts and what fits a message), which may take more calls. Calls
// go out in waves of at most max_calls_per_shard per shard.
struct Routing {
  std::vector<uint64_t> unique;          // the distinct keys, first-seen order
  std::vector<uint32_t> call_of_unique;
  std::vector<uint32_t> pos_of_unique;   // index in its call's request
  std::vector<uint32_t> unique_of_key;   // per request position
  std::vector<std::vector<uint32_t>> unique_at;  // [call][pos] -> unique
  std::vector<uint32_t> shard_of_call;
  std::vector<uint32_t> calls;           // 0 .. number of calls - 1
  std::vector<std::vector<uint32_t>> waves;  // the calls sent together
};

// The distinct keys of one request, numbered in first-seen order: an
// open-addressing table of (key, number), one per thread, reused from call
// to call. Entries of earlier calls are told apart by a generation number,
// so nothing is cleared between calls, and a call reads and writes about
// 32 bytes per key, within the first 2 * keys (rounded up to a power of
// two) entries. Not thread-safe (per thread).
class KeyNumbering {
 public:
  // Starts a call of up to `keys` keys.
  void Reset(size_t keys) {
    size_t capacity = 16;
    while (capacity < 2 * keys) capacity <<= 1;
    if (capacity > entries_.size()) {
      entries_.assign(capacity, Entry{});
      generation_ = 0;
    }
    mask_ = capacity - 1;
    if (++generation_ == 0) {  // wrapped: forget every earlier call
      for (Entry& e : entries_) e.generation = 0;
      generation_ = 1;
    }
  }

  // The number of `key`: `next` if it is new (then `inserted`), else the
  // number it got first.
  std::pair<uint32_t, bool> Number(uint64_t key, uint32_t next) {
    for (size_t i = embedding::MixKey(key) & mask_;; i = (i + 1) & mask_) {
      Entry& e = entries_[i];
      if (e.generation != generation_) {
        e = Entry{key, next, generation_};
        return {next, true};
      }
      if (e.key == key) return {e.number, false};
    }
  }

  // Starts loading the entry where `key`'s probe begins, so that the
  // probes of a batch miss the cache in parallel rather than one by one
  // (the probe was most of routing's time at 16384 keys).
  void Prefetch(uint64_t key) const {
    __builtin_prefetch(&entries_[embedding::MixKey(key) & mask_], 1);
  }

  // The table a thread keeps for calls of up to `keys` keys; larger calls
  // get `one_off`, so that no thread keeps a huge table for good.
  static KeyNumbering& For(size_t keys, KeyNumbering* one_off) {
    constexpr size_t kKeptKeys = size_t{1} << 16;  // 2 MiB of entries
    thread_local KeyNumbering kept;
    KeyNumbering& n = keys <= kKeptKeys ? kept : *one_off;
    n.Reset(keys);
    return n;
  }

 private:
  struct Entry {
    uint64_t key = 0;
    uint32_t number = 0;
    uint32_t generation = 0;  // 0: never used
  };
  std::vector<Entry> entries_;
  size_t mask_ = 0;
  uint32_t generation_ = 0;
};

// The split of Routing, from PsClient::Options: a shard's keys go in calls
// of at least `keys_per_call` keys (0: one call, unless max_keys needs
// more), at most `max_calls` calls per shard and wave.
struct Split {
  int keys_per_call;
  int max_calls;
};

// How Pull splits a shard's keys: by Options::pull_keys_per_call, or as
// every other call when that is off.
Split PullSplit(const PsClient::Options& options) {
  return Split{options.pull_keys_per_call > 1 ? options.pull_keys_per_call
                                              : options.max_keys_per_call,
               options.max_calls_per_shard};
}

// Fills r->calls and r->waves from r->shard_of_call: calls in order, at
// most `max_calls` of one shard in a wave.
void AssignWaves(uint32_t num_shards, size_t max_calls, Routing* r) {
  std::vector<size_t> calls_so_far(num_shards, 0);
  for (uint32_t c = 0; c < r->shard_of_call.size(); ++c) {
    r->calls.push_back(c);
    const size_t wave = calls_so_far[r->shard_of_call[c]]++ / max_calls;
    if (wave == r->waves.size()) r->waves.emplace_back();
    r->waves[wave].push_back(c);
  }
}

template <typename AddKey>  // void(uint32_t call, uint64_t key)
Routing Route(absl::Span<const uint64_t> keys, uint32_t num_shards,
              Split split, size_t max_keys, const AddKey& add) {
  Routing r;
  r.unique_of_key.resize(keys.size());
  // Pass 1: distinct keys and their shards.
  std::vector<uint64_t>& unique = r.unique;
  std::vector<uint32_t> shard_of_unique;
  unique.reserve(keys.size());
  shard_of_unique.reserve(keys.size());
  std::vector<size_t> per_shard(num_shards, 0);
  KeyNumbering one_off;
  KeyNumbering& numbering = KeyNumbering::For(keys.size(), &one_off);
  constexpr size_t kPrefetchAhead = 16;
  for (size_t i = 0; i < std::min(kPrefetchAhead, keys.size()); ++i) {
    numbering.Prefetch(keys[i]);
  }
  for (size_t i = 0; i < keys.size(); ++i) {
    if (i + kPrefetchAhead < keys.size()) {
      numbering.Prefetch(keys[i + kPrefetchAhead]);
    }
    const auto [number, inserted] =
        numbering.Number(keys[i], static_cast<uint32_t>(unique.size()));
    r.unique_of_key[i] = number;
    if (!inserted) continue;
    const uint32_t shard =
        num_shards == 1 ? 0 : embedding::ShardOf(keys[i], num_shards);
    unique.push_back(keys[i]);
    shard_of_unique.push_back(shard);
    ++per_shard[shard];
  }
  // Keys per call for each shard: at least max_keys_per_call, and at most
  // max_calls_per_shard calls, so one request cannot occupy every thread of
  // a shard.
  std::vector<size_t> chunk(num_shards);
  const size_t min_chunk = split.keys_per_call > 0
                               ? static_cast<size_t>(split.keys_per_call)
                               : std::numeric_limits<size_t>::max();
  const size_t max_calls = static_cast<size_t>(std::max(1, split.max_calls));
  for (uint32_t s = 0; s < num_shards; ++s) {
    chunk[s] = std::min(
        std::max<size_t>(1, max_keys),
        std::max(min_chunk, (per_shard[s] + max_calls - 1) / max_calls));
  }
  // Pass 2: append each distinct key to its shard's open call.
  r.call_of_unique.resize(unique.size());
  r.pos_of_unique.resize(unique.size());
  std::vector<int64_t> open_call(num_shards, -1);
  for (uint32_t u = 0; u < unique.size(); ++u) {
    const uint32_t shard = shard_of_unique[u];
    int64_t& call = open_call[shard];
    if (call < 0 || r.unique_at[call].size() >= chunk[shard]) {
      call = static_cast<int64_t>(r.shard_of_call.size());
      r.shard_of_call.push_back(shard);
      r.unique_at.emplace_back();
      r.unique_at.back().reserve(std::min(chunk[shard], per_shard[shard]));
    }
    r.call_of_unique[u] = static_cast<uint32_t>(call);
    r.pos_of_unique[u] = static_cast<uint32_t>(r.unique_at[call].size());
    r.unique_at[call].push_back(u);
    add(static_cast<uint32_t>(call), unique[u]);
  }
  AssignWaves(num_shards, max_calls, &r);
  return r;
}

// Routes `keys` into one request per call, each carrying its keys and
// naming `table`.
template <typename Request>
Routing RouteRequests(absl::string_view table, absl::Span<const uint64_t> keys,
                      uint32_t num_shards, const PsClient::Options& options,
                      size_t max_keys, std::vector<Request>* requests) {
  Routing routing = Route(keys, num_shards,
                          Split{options.max_keys_per_call,
                                options.max_calls_per_shard},
                          max_keys, [requests](uint32_t c, uint64_t key) {
                            if (c == requests->size()) requests->emplace_back();
                            (*requests)[c].add_keys(key);
                          });
  for (Request& r : *requests) r.set_table(std::string(table));
  return routing;
}

// Per distinct key, whether its shard reported it missing. Positions a shard
// reports beyond its request are ignored.
template <typename Response>
std::vector<char> UniqueMissing(const Routing& routing,
                                const std::vector<Response>& responses) {
  std::vector<char> unique_missing(routing.call_of_unique.size(), 0);
  for (const uint32_t c : routing.calls) {
    for (const uint32_t p : responses[c].missing()) {
      if (p < routing.unique_at[c].size()) {
        unique_missing[routing.unique_at[c][p]] = 1;
      }
    }
  }
  return unique_missing;
}

// Each shard's response next to its address, shard order.
template <typename Out, typename Response>
std::vector<Out> WithAddresses(const std::vector<std::string>& addresses,
                               std::vector<Response> responses,
                               Response Out::*field) {
  std::vector<Out> out(responses.size());
  for (size_t s = 0; s < responses.size(); ++s) {
    out[s].address = addresses[s];
    out[s].*field = std::move(responses[s]);
  }
  return out;
}

// "[a, b]" or "no checkpoints": one shard's checkpoints, oldest first.
std::string CheckpointNames(const ListCheckpointsResponse& list) {
  if (list.checkpoints().empty()) return "no checkpoints";
  return absl::StrCat(
      "[",
      absl::StrJoin(list.checkpoints(), ", ",
                    [](std::string* out, const CheckpointEntry& c) {
                      absl::StrAppend(out, c.name());
                    }),
      "]");
}

// "shard 0 (H:P) has [a, b]; shard 1 (H:P) has no checkpoints".
std::string EveryShardsCheckpoints(
    const std::vector<PsClient::ShardCheckpoints>& shards) {
  std::string out;
  for (size_t s = 0; s < shards.size(); ++s) {
    absl::StrAppend(&out, s == 0 ? "" : "; ", "shard ", s, " (",
                    shards[s].address, ") has ",
                    CheckpointNames(shards[s].list));
  }
  return out;
}

bool HasCheckpoint(const ListCheckpointsResponse& list,
                   const std::string& name) {
  return std::any_of(
      list.checkpoints().begin(), list.checkpoints().end(),
      [&name](const CheckpointEntry& c) { return c.name() == name; });
}

// When a call that failed UNAVAILABLE is sent again.
enum class Resend {
  kNever,   // one attempt
  kUnsent,  // only a call not sent yet: sent once its channel is connected
  // Every UNAVAILABLE, DEADLINE_EXCEEDED and CANCELLED (idempotent calls,
  // and tagged pushes, which a shard applies once however often they
  // arrive).
  kAlways,
};

// Payload type URL of a push error whose effect on the shard is unknown.
constexpr char kPushInDoubtUrl[] = "type.mim.ps/PushInDoubt";
// The index of the shard an error came from (decimal), on every error
// ShardError names.
constexpr char kFailedShardUrl[] = "type.mim.ps/FailedShard";

Resend PushResend(PsClient::Options::PushRetry retry) {
  switch (retry) {
    case PsClient::Options::PushRetry::kNever:
      return Resend::kNever;
    case PsClient::Options::PushRetry::kUnsent:
      return Resend::kUnsent;
    case PsClient::Options::PushRetry::kAlways:
      return Resend::kAlways;
  }
  return Resend::kUnsent;
}

}  // namespace

// Sends one request per listed shard, in parallel, retrying UNAVAILABLE.
class ShardCaller {
 public:
  // A call that did not end OK: whether an attempt of it went out and got
  // no answer (so it may have been applied), or whether it was never tried
  // (a later wave of CallRouted, after a wave that failed).
  struct Unsettled {
    uint32_t call;
    bool maybe_applied;
    bool untried = false;
  };
  // Sends requests[c] for every c in `calls` to shard shard_of_call[c];
  // `responses` gets one entry per request. With `push`, an error that
  // leaves the call's effect unknown carries kPushInDoubtUrl.
  template <typename Rpc>
  static absl::Status Call(const PsClient& client,
                           absl::Span<const uint32_t> calls,
                           absl::Span<const uint32_t> shard_of_call,
                           const std::vector<typename Rpc::Request>& requests,
                           std::vector<typename Rpc::Response>* responses,
                           Resend resend, bool push = false,
                           std::vector<Unsettled>* unsettled = nullptr) {
    const PsClient::Options& options = client.options_;
    const int max_attempts =
        resend == Resend::kNever ? 1 : std::max(1, options.max_attempts);
    const absl::Time start = absl::Now();
    const absl::Time give_up =
        std::min(start + options.retry_budget, call_deadline);
    responses->resize(requests.size());
    std::vector<grpc::Status> status(requests.size());
    // Whether an attempt of the call may have reached its shard, whether
    // one may have been applied there without an answer (it went out and
    // ended UNAVAILABLE or DEADLINE_EXCEEDED), and how many attempts it
    // had.
    std::vector<char> sent(requests.size(), 0);
    std::vector<char> maybe_applied(requests.size(), 0);
    std::vector<int> tries(requests.size(), 0);
    std::vector<uint32_t> pending(calls.begin(), calls.end());
    absl::Duration backoff = options.initial_backoff;
    // Pushes (resent or not) go out only over a connected channel, so that
    // a push to a shard that stayed down is known never to have been sent.
    const bool only_connected =
        resend == Resend::kUnsent || (push && resend == Resend::kAlways);
    for (int attempt = 1;; ++attempt) {
      // An attempt takes at least the backoff: a failed call is retried,
      // and an unconnected shard waited for, until then.
      const absl::Time round_end = std::min(absl::Now() + backoff, give_up);
      std::vector<uint32_t> go;
      std::vector<ChannelStubs> stubs;
      for (const uint32_t s : pending) {
        const size_t c = ChannelFor(client, shard_of_call[s]);
        const PsClient::Shard& shard = *client.shards_[shard_of_call[s]];
        (*responses)[s].Clear();
        ++tries[s];
        if (only_connected &&
            !WaitConnected(shard.channels[c].get(), round_end,
                           absl::Now() + options.timeout)) {
          status[s] = grpc::Status(
              grpc::StatusCode::UNAVAILABLE,
              "not connected (shard down or restarting); nothing was sent");
          continue;
        }
        sent[s] = 1;
        go.push_back(s);
        stubs.push_back({shard.stubs[c].get(), shard.pull_stubs[c].get()});
      }
      if (go.size() == 1) {
        grpc::ClientContext context;
        context.set_deadline(Deadline(options.timeout));
        base::AddBearerToken(options.auth_token, &context);
        status[go[0]] = Rpc::Sync(stubs[0], &context, requests[go[0]],
                                  &(*responses)[go[0]]);
      } else if (!go.empty()) {
        grpc::CompletionQueue* cq = ThreadQueue();
        std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
        std::vector<std::unique_ptr<
            grpc::ClientAsyncResponseReader<typename Rpc::Response>>>
            readers;
        for (size_t i = 0; i < go.size(); ++i) {
          const uint32_t s = go[i];
          contexts.push_back(std::make_unique<grpc::ClientContext>());
          contexts.back()->set_deadline(Deadline(options.timeout));
          base::AddBearerToken(options.auth_token, contexts.back().get());
          readers.push_back(Rpc::Async(stubs[i], contexts.back().get(),
                                       requests[s], cq));
          readers.back()->Finish(&(*responses)[s], &status[s],
                                 reinterpret_cast<void*>(uintptr_t{s}));
        }
        Await(cq, go.size());
      }
      for (const uint32_t s : go) {
        const grpc::StatusCode code = status[s].error_code();
        if (MaybeApplied(code)) maybe_applied[s] = 1;
      }
      std::vector<uint32_t> again;
      if (attempt < max_attempts && absl::Now() < give_up) {
        for (const uint32_t s : pending) {
          const grpc::StatusCode code = status[s].error_code();
          if (resend == Resend::kAlways
                  ? code == grpc::StatusCode::UNAVAILABLE ||
                        code == grpc::StatusCode::DEADLINE_EXCEEDED ||
                        code == grpc::StatusCode::CANCELLED
                  : resend == Resend::kUnsent && !sent[s] &&
                        code == grpc::StatusCode::UNAVAILABLE) {
            again.push_back(s);
          } else if (resend != Resend::kNever && ShardBusy(status[s])) {
            // Refused before the shard did anything: safe to send again,
            // a push too, whatever the resend policy.
            again.push_back(s);
          }
        }
      }
      if (again.empty()) break;
      if (options.on_retry) {
        for (const uint32_t s : again) {
          options.on_retry(AttemptError(client, shard_of_call[s], status[s]),
                           attempt);
        }
      }
      const absl::Time now = absl::Now();
      if (round_end > now) absl::SleepFor(round_end - now);
      backoff = std::min(backoff * 2, options.max_backoff);
      pending = std::move(again);
    }
    // The first error that is not in doubt wins: it is what the caller must
    // act on (e.g. a shard that stayed down), and the push is not "in
    // doubt" then (a part of it certainly failed).
    absl::Status first_clean;
    absl::Status first_in_doubt;
    for (const uint32_t s : calls) {
      if (status[s].ok()) continue;
      if (unsettled != nullptr) {
        unsettled->push_back({s, maybe_applied[s] != 0});
      }
      // Whatever the last attempt's error, an earlier one may have landed.
      const bool in_doubt = push && maybe_applied[s];
      absl::Status& first = in_doubt ? first_in_doubt : first_clean;
      if (first.ok()) {
        first = Described(client, shard_of_call[s], status[s], tries[s],
                          start);
      }
    }
    if (first_in_doubt.ok()) return first_clean;
    if (!first_clean.ok()) {
      // Not in doubt as a whole: this part certainly failed, and the caller
      // must act on that (a trainer that counts in-doubt pushes and goes on
      // would lose it). The other part is named for whoever reads it.
      absl::Status error(
          first_clean.code(),
          absl::StrCat(first_clean.message(),
                       "; another part of the push may or may not have been "
                       "applied: ",
                       first_in_doubt.message()));
      first_clean.ForEachPayload(
          [&error](absl::string_view url, const absl::Cord& payload) {
            error.SetPayload(url, payload);
          });
      return error;
    }
    absl::Status error(
        first_in_doubt.code(),
        absl::StrCat(first_in_doubt.message(),
                     "; the push was sent, so the shard may or may not "
                     "have applied it"));
    error.SetPayload(kPushInDoubtUrl, absl::Cord("1"));
    return error;
  }

  // Whether a call that ended with `code` after it went out may have been
  // applied by its shard: the connection broke (UNAVAILABLE), no answer
  // came in time (DEADLINE_EXCEEDED), gRPC ended the call itself after the
  // handler may have run (CANCELLED at the server's shutdown or by its
  // memory quota, UNKNOWN for a reset stream), or the shard's storage
  // failed in the middle of the write (INTERNAL, DATA_LOSS: a WAL record
  // whose fsync failed is in the log file, and the next open replays it),
  // as does an answer this client could not read. The shard's own refusals
  // (INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION, RESOURCE_EXHAUSTED,
  // ...) change nothing.
  static bool MaybeApplied(grpc::StatusCode code) {
    return code == grpc::StatusCode::UNAVAILABLE ||
           code == grpc::StatusCode::DEADLINE_EXCEEDED ||
           code == grpc::StatusCode::CANCELLED ||
           code == grpc::StatusCode::UNKNOWN ||
           code == grpc::StatusCode::INTERNAL ||
           code == grpc::StatusCode::DATA_LOSS;
  }

  // Sends the calls of `routing` wave by wave (Call each); stops at the
  // first wave that fails.
  template <typename Rpc>
  static absl::Status CallRouted(
      const PsClient& client, const Routing& routing,
      const std::vector<typename Rpc::Request>& requests,
      std::vector<typename Rpc::Response>* responses, Resend resend,
      bool push = false, std::vector<Unsettled>* unsettled = nullptr,
      bool one_push = true) {
    responses->resize(requests.size());
    for (size_t w = 0; w < routing.waves.size(); ++w) {
      absl::Status status =
          Call<Rpc>(client, routing.waves[w], routing.shard_of_call, requests,
                    responses, resend, push, unsettled);
      if (status.ok()) continue;
      if (unsettled != nullptr) {
        for (size_t later = w + 1; later < routing.waves.size(); ++later) {
          for (const uint32_t s : routing.waves[later]) {
            unsettled->push_back({s, false, /*untried=*/true});
          }
        }
      }
      if (push && one_push && w > 0 && !IsPushInDoubt(status)) {
        // The calls of the earlier waves were acknowledged: applied (and
        // perhaps some of this wave's). The caller must not take the whole
        // push for unapplied.
        size_t applied = 0;
        for (size_t earlier = 0; earlier < w; ++earlier) {
          applied += routing.waves[earlier].size();
        }
        absl::Status partial(
            status.code(),
            absl::StrCat(status.message(), "; at least ", applied,
                         " of the push's ", routing.shard_of_call.size(),
                         " calls (those of the earlier waves) were applied, "
                         "so it was applied in part"));
        status.ForEachPayload(
            [&partial](absl::string_view url, const absl::Cord& payload) {
              partial.SetPayload(url, payload);
            });
        return partial;
      }
      return status;
    }
    return absl::OkStatus();
  }

  // Sends `request` to every shard; the responses in shard order.
  template <typename Rpc>
  static absl::StatusOr<std::vector<typename Rpc::Response>> CallAll(
      const PsClient& client, const typename Rpc::Request& request,
      Resend resend) {
    std::vector<uint32_t> all(client.num_shards());
    for (uint32_t s = 0; s < all.size(); ++s) all[s] = s;
    const std::vector<typename Rpc::Request> requests(all.size(), request);
    std::vector<typename Rpc::Response> responses;
    absl::Status status = Call<Rpc>(client, all, all, requests, &responses,
                                    resend);
    if (!status.ok()) return status;
    return responses;
  }

 private:
  // Round-robin over the shard's channels: the index of the next one.
  static size_t ChannelFor(const PsClient& client, uint32_t shard) {
    const size_t n = client.shards_[shard]->stubs.size();
    if (n == 1) return 0;
    return client.next_channel_.fetch_add(1, std::memory_order_relaxed) % n;
  }

  // Whether `channel` gets connected, starting a connection attempt if it
  // is idle. A connection being made is waited for until `timeout_at` (as
  // an RPC would wait); a failed one until `retry_at`, for a reconnection.
  // Sending only over a connected channel is what makes an UNAVAILABLE
  // "never sent": a call on an unconnected channel fails without a trace
  // of whether it went out.
  static bool WaitConnected(grpc::Channel* channel, absl::Time retry_at,
                            absl::Time timeout_at) {
    grpc_connectivity_state state = channel->GetState(true);
    while (state != GRPC_CHANNEL_READY) {
      const bool connecting = state == GRPC_CHANNEL_IDLE ||
                              state == GRPC_CHANNEL_CONNECTING;
      const absl::Time until = connecting ? timeout_at : retry_at;
      if (absl::Now() >= until ||
          !channel->WaitForStateChange(state, absl::ToChronoTime(until))) {
        return false;
      }
      state = channel->GetState(true);
    }
    return true;
  }

  // The error of one attempt of a call to `shard`, naming it; a deadline
  // says what it means (the shard took the call but did not answer).
  // A shard's "busy, retry later" refusal (ps/status_convert.h).
  static bool ShardBusy(const grpc::Status& status) {
    return status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED &&
           !status.error_details().empty() &&
           IsRetryLater(FromGrpcStatus(status));
  }

  static absl::Status AttemptError(const PsClient& client, uint32_t shard,
                                   const grpc::Status& status) {
    absl::Status e = client.ShardError(shard, FromGrpcStatus(status));
    if (e.code() != absl::StatusCode::kDeadlineExceeded) return e;
    absl::Status hung(
        e.code(),
        absl::StrCat(e.message(), " (no answer before the deadline, at most ",
                     absl::FormatDuration(client.options_.timeout),
                     " per attempt: the shard is reachable but not "
                     "answering; hung, stopped or overloaded?)"));
    e.ForEachPayload([&hung](absl::string_view url, const absl::Cord& payload) {
      hung.SetPayload(url, payload);
    });
    return hung;
  }

  // The error of a call to `shard`, naming it, and its retries if any.
  static absl::Status Described(const PsClient& client, uint32_t shard,
                                const grpc::Status& status, int attempts,
                                absl::Time start) {
    absl::Status e = AttemptError(client, shard, status);
    if (attempts == 1) return e;
    const PsClient::Options& o = client.options_;
    absl::Status described(
        e.code(),
        absl::StrCat(e.message(), " (gave up after ", attempts,
                     " attempts over ", absl::FormatDuration(absl::Trunc(
                                            absl::Now() - start,
                                            absl::Milliseconds(1))),
                     o.retry_budget == absl::InfiniteDuration()
                         ? absl::StrCat("; max_attempts ", o.max_attempts)
                         : absl::StrCat("; retry budget ",
                                        absl::FormatDuration(o.retry_budget)),
                     ")"));
    e.ForEachPayload(
        [&described](absl::string_view url, const absl::Cord& payload) {
          described.SetPayload(url, payload);
        });
    return described;
  }
};

// A random nonzero 64-bit id: two clients (or one client restarted) that
// pushed to the same shard must not share one, nor two restores or drops
// (RestoreRequest.request_id).
uint64_t NewRandomId() {
  absl::BitGen gen;
  uint64_t id = 0;
  while (id == 0) id = absl::Uniform<uint64_t>(gen);
  return id;
}

PsClient::PsClient(std::vector<std::string> addresses, const Options& options)
    : addresses_(std::move(addresses)),
      options_(options),
      client_id_(NewRandomId()) {
  for (size_t s = 0; s < addresses_.size(); ++s) {
    auto shard = std::make_unique<Shard>();
    const int channels = std::max(1, options_.channels_per_shard);
    for (int c = 0; c < channels; ++c) {
      grpc::ChannelArguments args;
      args.SetMaxReceiveMessageSize(options_.max_message_bytes);
      args.SetMaxSendMessageSize(options_.max_message_bytes);
      // Without a local pool, channels with equal arguments share one
      // connection; several channels exist precisely to get several.
      args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
      // Reconnect to a restarted shard on the client's own retry schedule,
      // not gRPC's default (1 s growing to 120 s), which would outlast it.
      const int backoff_ms = static_cast<int>(
          absl::ToInt64Milliseconds(options_.initial_backoff));
      args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, backoff_ms);
      // gRPC reads this one as the time one connection attempt may take
      // (TCP, TLS handshake, the server's first SETTINGS frame), not as a
      // backoff: at 50 ms (clamped to 100) a TLS handshake on a loaded
      // machine timed out ("connection attempt timed out before receiving
      // SETTINGS frame") on every attempt. A shard that is down refuses at
      // once whatever this is, so the retry schedule above is unchanged.
      args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS,
                  static_cast<int>(std::clamp<int64_t>(
                      absl::ToInt64Milliseconds(options_.timeout), 1000,
                      20000)));
      args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS,
                  static_cast<int>(
                      absl::ToInt64Milliseconds(options_.max_backoff)));
      auto channel = grpc::CreateCustomChannel(
          addresses_[s],
          options_.credentials != nullptr ? options_.credentials
                                          : grpc::InsecureChannelCredentials(),
          args);
      if (c == 0) shard->health = grpc::health::v1::Health::NewStub(channel);
      shard->stubs.push_back(ParameterServer::NewStub(channel));
      shard->pull_stubs.push_back(std::make_unique<PullStub>(channel));
      shard->channels.push_back(std::move(channel));
    }
    shards_.push_back(std::move(shard));
  }
}

PsClient::~PsClient() = default;

absl::StatusOr<std::unique_ptr<PsClient>> PsClient::Create(
    std::vector<std::string> addresses, const Options& options) {
  if (addresses.empty()) {
    return absl::InvalidArgumentError("no shard addresses given");
  }
  for (size_t s = 0; s < addresses.size(); ++s) {
    if (addresses[s].empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("shard address ", s, " is empty"));
    }
  }
  if (options.max_attempts < 1 || options.timeout <= absl::ZeroDuration() ||
      options.retry_budget < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "max_attempts must be >= 1, timeout positive and retry_budget not "
        "negative");
  }
  if (options.max_message_bytes < (64 << 10) ||
      options.max_keys_per_rpc < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_message_bytes must be >= 64 KiB (got ", options.max_message_bytes,
        ") and max_keys_per_rpc >= 0 (got ", options.max_keys_per_rpc, ")"));
  }
  if (options.pull_keys_per_call < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "pull_keys_per_call must be >= 0 (0 or 1: Pulls are not split; got ",
        options.pull_keys_per_call, ")"));
  }
  return std::unique_ptr<PsClient>(new PsClient(std::move(addresses), options));
}

uint32_t PsClient::num_shards() const {
  return static_cast<uint32_t>(addresses_.size());
}

size_t PsClient::KeysPerCall(size_t fit) const {
  if (options_.max_keys_per_rpc <= 0) return fit;
  return std::min(fit, static_cast<size_t>(options_.max_keys_per_rpc));
}

uint32_t PsClient::KnownDim(absl::string_view table) const {
  absl::MutexLock lock(&dims_mu_);
  auto it = dims_.find(table);
  return it == dims_.end() ? 0 : it->second;
}

void PsClient::SetKnownDim(absl::string_view table, uint32_t dim) const {
  absl::MutexLock lock(&dims_mu_);
  dims_[table] = dim;
}

absl::Status PsClient::ShardError(uint32_t shard,
                                  const absl::Status& s) const {
  absl::Status named(
      s.code(), absl::StrFormat("shard %d/%d (%s): %s", shard, num_shards(),
                                addresses_[shard], s.message()));
  s.ForEachPayload([&named](absl::string_view url, const absl::Cord& payload) {
    named.SetPayload(url, payload);
  });
  named.SetPayload(kFailedShardUrl, absl::Cord(absl::StrCat(shard)));
  return named;
}

absl::Status PsClient::CreateTable(const TableConfig& config,
                                   bool if_not_exists) {
  CreateTableRequest request;
  *request.mutable_config() = config;
  request.set_if_not_exists(if_not_exists);
  // Retrying is safe only when a repeat is not an error.
  return ShardCaller::CallAll<CreateTableRpc>(
             *this, request, if_not_exists ? Resend::kAlways : Resend::kNever)
      .status();
}

absl::StatusOr<std::vector<TableConfig>> PsClient::ListTables() {
  absl::StatusOr<std::vector<ListTablesResponse>> responses =
      ShardCaller::CallAll<ListTablesRpc>(*this, ListTablesRequest(), Resend::kAlways);
  if (!responses.ok()) return responses.status();
  std::vector<TableConfig> tables((*responses)[0].tables().begin(),
                                  (*responses)[0].tables().end());
  for (uint32_t s = 1; s < num_shards(); ++s) {
    for (const TableConfig& t : tables) {
      const auto& other = (*responses)[s].tables();
      const bool same = std::any_of(
          other.begin(), other.end(), [&t](const TableConfig& o) {
            return o.name() == t.name() && o.dim() == t.dim() &&
                   o.kind() == t.kind();
          });
      if (!same) {
        return absl::FailedPreconditionError(absl::StrFormat(
            "table '%s' (dim %d) of shard 0 is missing or different on shard "
            "%d (%s); create it on every shard",
            t.name(), t.dim(), s, addresses_[s]));
      }
    }
  }
  return tables;
}

absl::Status PsClient::PullRows(
    absl::string_view table, absl::Span<const uint64_t> keys,
    const std::function<absl::StatusOr<float*>(uint32_t dim)>& buffer,
    std::vector<uint32_t>* missing) {
  std::vector<grpc::ByteBuffer> requests;
  std::vector<PullReply> responses;
  Routing routing;
  absl::Status status;
  const uint32_t known_dim = KnownDim(table);
  // Calls are sized by the table's dim as last seen; when a shard refuses
  // a call as too large anyway (the table was restored with a larger dim),
  // once more sized by the largest dim.
  for (const uint32_t known : {known_dim, uint32_t{0}}) {
    const uint32_t dim = known > 0 ? known : kMaxRowDim;
    routing = Route(
        keys, num_shards(), PullSplit(options_),
        KeysPerCall(MaxKeysForResponse(MessageBytes(options_), dim,
                                       /*get_rows=*/false)),
        [](uint32_t, uint64_t) {});
    requests.clear();
    requests.reserve(routing.unique_at.size());
    for (const std::vector<uint32_t>& picks : routing.unique_at) {
      requests.push_back(PullRequestBuffer(table, routing.unique, picks));
    }
    status = ShardCaller::CallRouted<PullRpc>(*this, routing, requests,
                                              &responses, Resend::kAlways);
    if (known == 0 || status.code() != absl::StatusCode::kResourceExhausted ||
        IsRetryLater(status)) {
      break;
    }
  }
  if (!status.ok()) return status;
  for (const uint32_t s : routing.calls) {
    if (!responses[s].parse_status().ok()) {
      return absl::InternalError(absl::StrFormat(
          "shard %d (%s) sent a Pull answer that does not parse: %s",
          routing.shard_of_call[s], addresses_[routing.shard_of_call[s]],
          responses[s].parse_status().message()));
    }
  }
  const uint32_t dim = responses[routing.calls[0]].dim();
  for (const uint32_t s : routing.calls) {
    const size_t n = routing.unique_at[s].size();
    if (responses[s].dim() != dim || dim == 0 ||
        responses[s].value_bytes() != size_t{4} * dim * n) {
      return absl::InternalError(absl::StrFormat(
          "shard %d (%s) answered dim %d with %d value bytes for %d keys "
          "(other shards: dim %d)",
          routing.shard_of_call[s], addresses_[routing.shard_of_call[s]],
          responses[s].dim(), responses[s].value_bytes(), n, dim));
    }
  }
  if (dim != known_dim) SetKnownDim(table, dim);
  absl::StatusOr<float*> out = buffer(dim);
  if (!out.ok()) return out.status();
  const size_t row_bytes = sizeof(float) * dim;
  if (routing.unique.size() == keys.size()) {
    // Every key distinct, so key i is distinct key i: a call's rows go to
    // runs of consecutive positions (one run per call with one shard),
    // copied a run at a time rather than a row at a time.
    char* const base = reinterpret_cast<char*>(*out);
    for (const uint32_t c : routing.calls) {
      const std::vector<uint32_t>& at = routing.unique_at[c];
      for (size_t p = 0; p < at.size();) {
        size_t q = p + 1;
        while (q < at.size() && at[q] == at[q - 1] + 1) ++q;
        responses[c].CopyValues(p * row_bytes, (q - p) * row_bytes,
                                base + size_t{at[p]} * row_bytes);
        p = q;
      }
    }
  } else {
    for (size_t i = 0; i < keys.size(); ++i) {
      const uint32_t u = routing.unique_of_key[i];
      responses[routing.call_of_unique[u]].CopyValues(
          routing.pos_of_unique[u] * row_bytes, row_bytes, *out + i * dim);
    }
  }
  if (missing == nullptr) return absl::OkStatus();
  missing->clear();
  const bool any_missing =
      std::any_of(routing.calls.begin(), routing.calls.end(),
                  [&responses](uint32_t c) {
                    return !responses[c].missing().empty();
                  });
  if (!any_missing) return absl::OkStatus();
  const std::vector<char> unique_missing = UniqueMissing(routing, responses);
  for (size_t i = 0; i < keys.size(); ++i) {
    if (unique_missing[routing.unique_of_key[i]]) {
      missing->push_back(static_cast<uint32_t>(i));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<PsClient::PullResult> PsClient::Pull(
    absl::string_view table, absl::Span<const uint64_t> keys) {
  PullResult result;
  if (keys.empty()) return result;
  absl::Status status = PullRows(
      table, keys,
      [&result, n = keys.size()](uint32_t dim) -> absl::StatusOr<float*> {
        result.dim = dim;
        result.values.resize(n * dim);
        return result.values.data();
      },
      &result.missing);
  if (!status.ok()) return status;
  return result;
}

absl::Status PsClient::PullInto(absl::string_view table,
                                absl::Span<const uint64_t> keys,
                                absl::Span<float> out,
                                std::vector<uint32_t>* missing) {
  if (keys.empty()) {  // no RPC, so no dim: only an empty buffer fits
    if (!out.empty()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "output buffer holds %d floats; 0 keys of table '%s' need 0",
          out.size(), table));
    }
    if (missing != nullptr) missing->clear();
    return absl::OkStatus();
  }
  // Rows are copied once, from the slices gRPC received into `out`.
  return PullRows(
      table, keys,
      [&](uint32_t dim) -> absl::StatusOr<float*> {
        if (out.size() != keys.size() * dim) {
          return absl::InvalidArgumentError(absl::StrFormat(
              "output buffer holds %d floats; %d keys of table '%s' need %d "
              "(dim %d)",
              out.size(), keys.size(), table, keys.size() * dim, dim));
        }
        return out.data();
      },
      missing);
}

absl::StatusOr<uint64_t> PsClient::Push(absl::string_view table,
                                        absl::Span<const uint64_t> keys,
                                        absl::Span<const float> gradients) {
  if (keys.empty() && gradients.empty()) return 0;
  if (keys.empty()) {
    return absl::InvalidArgumentError("gradients given without keys");
  }
  absl::StatusOr<size_t> dim = RowDim(keys.size(), gradients.size(),
                                      "gradients");
  if (!dim.ok()) return dim.status();
  // Checked here as well as on the shards: a shard refusing its slice while
  // another applies its own would leave the update half done.
  if (absl::Status s = CheckFinite(keys, gradients, *dim, "gradient");
      !s.ok()) {
    return s;
  }
  std::vector<PushRequest> requests;
  const Routing routing = RouteRequests(
      table, keys, num_shards(), options_,
      KeysPerCall(MaxKeysForRowsRequest(MessageBytes(options_),
                                        static_cast<uint32_t>(*dim))),
      &requests);
  for (const uint32_t s : routing.calls) {
    requests[s].mutable_gradients()->assign(
        sizeof(float) * *dim * requests[s].keys_size(), '\0');
    // Every call its own number; a resend (ShardCaller) sends the same
    // request again, so the shard applies it once.
    requests[s].set_client_id(client_id_);
    requests[s].set_sequence(
        shards_[routing.shard_of_call[s]]->next_sequence.fetch_add(1) + 1);
  }
  // Sum the gradients of repeated keys into their one row, request order.
  for (size_t i = 0; i < keys.size(); ++i) {
    const uint32_t u = routing.unique_of_key[i];
    float* row =
        MutableRowsOf(requests[routing.call_of_unique[u]].mutable_gradients()) +
        size_t{routing.pos_of_unique[u]} * *dim;
    const float* g = gradients.data() + i * *dim;
    for (size_t j = 0; j < *dim; ++j) row[j] += g[j];
  }
  // Finite gradients of a repeated key can sum past float's range; the
  // shard would refuse that row while the others applied their parts.
  if (routing.unique.size() < keys.size()) {
    for (const uint32_t s : routing.calls) {
      const std::string& rows = requests[s].gradients();
      const size_t n = rows.size() / sizeof(float);
      const float* f = RowsOf(rows);
      for (size_t j = 0; j < n; ++j) {
        if (std::isfinite(f[j])) continue;
        const uint32_t u = routing.unique_at[s][j / *dim];
        return absl::InvalidArgumentError(absl::StrCat(
            "gradients of key ", routing.unique[u],
            ", repeated in the push, sum to a value that is not finite at "
            "dimension ", j % *dim, "; nothing was sent"));
      }
    }
  }
  std::vector<PushResponse> responses;
  std::vector<ShardCaller::Unsettled> unsettled;
  absl::Status status = ShardCaller::CallRouted<PushRpc>(
      *this, routing, requests, &responses, PushResend(options_.push_retry),
      /*push=*/true, &unsettled);
  if (!status.ok()) {
    // With resends on (kAlways), parts that may have been applied are kept
    // for ResolvePushesInDoubt, with their sequence numbers: a resend that
    // gets an answer settles each exactly once. When the push as a whole is
    // in doubt (the caller may go on), so are the parts of later waves
    // that were never tried: kept too, or they would be lost. (After a
    // clean failure the caller must act on that failure; only the parts
    // that may have landed are kept.)
    if (options_.push_retry == Options::PushRetry::kAlways) {
      const bool in_doubt = IsPushInDoubt(status);
      std::vector<HeldPush> hold;
      for (const ShardCaller::Unsettled& u : unsettled) {
        if (u.maybe_applied || (in_doubt && u.untried)) {
          hold.push_back(HeldPush{routing.shard_of_call[u.call],
                                  std::move(requests[u.call])});
        }
      }
      Hold(std::move(hold));
    }
    return status;
  }
  uint64_t updated = 0;
  for (const uint32_t s : routing.calls) {
    updated += responses[s].rows_updated();
  }
  return updated;
}

void PsClient::Hold(std::vector<HeldPush> parts) {
  absl::MutexLock lock(&held_mu_);
  for (HeldPush& part : parts) {
    const size_t bytes = part.request.ByteSizeLong();
    // Parts out for resending count too: they may all come back.
    if (held_.size() + held_resending_ >= kMaxHeldPushes ||
        held_bytes_ + held_resending_bytes_ + bytes > kMaxHeldPushBytes) {
      ++held_dropped_;
      continue;
    }
    held_bytes_ += bytes;
    held_.push_back(std::move(part));
  }
}

size_t PsClient::pushes_held_in_doubt() const {
  absl::MutexLock lock(&held_mu_);
  return held_.size() + held_resending_ + held_dropped_;
}

absl::Status PsClient::ResolvePushesInDoubt() {
  // One resolve at a time: a second waits and then sees what the first
  // could not settle.
  absl::MutexLock resolving(&resolve_mu_);
  std::vector<HeldPush> held;
  uint64_t dropped = 0;
  {
    absl::MutexLock lock(&held_mu_);
    held.swap(held_);
    held_resending_bytes_ = held_bytes_;
    held_bytes_ = 0;
    held_resending_ = held.size();
    dropped = held_dropped_;  // sticky: the loss stays reported
  }
  const auto not_kept = [dropped](absl::Status status) {
    if (dropped == 0) return status;
    return absl::Status(
        status.ok() ? absl::StatusCode::kDataLoss : status.code(),
        absl::StrCat(status.message(), status.ok() ? "" : "; ", dropped,
                     " push parts in doubt were not kept for resending (more "
                     "than ", kMaxHeldPushes, " parts or ",
                     kMaxHeldPushBytes >> 20,
                     " MiB were waiting): whether they were applied is "
                     "unknown"));
  };
  if (held.empty()) return not_kept(absl::OkStatus());
  // Resent in waves of at most Options::max_calls_per_shard calls per
  // shard, as a push's own calls go out, oldest first; the shard applies
  // each (client, sequence) once whatever the order.
  std::vector<PushRequest> requests;
  Routing routing;
  for (HeldPush& h : held) {
    routing.shard_of_call.push_back(h.shard);
    requests.push_back(std::move(h.request));
  }
  AssignWaves(num_shards(),
              static_cast<size_t>(std::max(1, options_.max_calls_per_shard)),
              &routing);
  std::vector<PushResponse> responses;
  std::vector<ShardCaller::Unsettled> unsettled;
  // Parts of several pushes: no "applied in part" of one push.
  const absl::Status status = ShardCaller::CallRouted<PushRpc>(
      *this, routing, requests, &responses, PushResend(options_.push_retry),
      /*push=*/true, &unsettled, /*one_push=*/false);
  // Whatever failed now, or was not tried, is still unknown: an earlier
  // attempt may have landed. Kept, to be resent again.
  std::vector<HeldPush> again;
  for (const ShardCaller::Unsettled& u : unsettled) {
    again.push_back(
        HeldPush{routing.shard_of_call[u.call], std::move(requests[u.call])});
  }
  const size_t unsettled_parts = again.size();
  {
    absl::MutexLock lock(&held_mu_);
    held_resending_ = 0;
    held_resending_bytes_ = 0;
  }
  Hold(std::move(again));
  if (status.ok()) return not_kept(status);
  return not_kept(absl::Status(
      status.code(),
      absl::StrCat(unsettled_parts, " of ", held.size(),
                   " push parts in doubt are still unsettled after resending "
                   "them (each is applied at most once, but whether it "
                   "was is unknown): ",
                   status.message())));
}

absl::StatusOr<PsClient::UpsertResult> PsClient::Upsert(
    absl::string_view table, absl::Span<const uint64_t> keys,
    absl::Span<const float> values, uint64_t version) {
  UpsertResult result;
  if (keys.empty() && values.empty()) return result;
  if (keys.empty()) return absl::InvalidArgumentError("values given without keys");
  absl::StatusOr<size_t> dim = RowDim(keys.size(), values.size(), "values");
  if (!dim.ok()) return dim.status();
  if (absl::Status s = CheckFinite(keys, values, *dim, "value"); !s.ok()) {
    return s;
  }
  std::vector<UpsertRequest> requests;
  const Routing routing = RouteRequests(
      table, keys, num_shards(), options_,
      KeysPerCall(MaxKeysForRowsRequest(MessageBytes(options_),
                                        static_cast<uint32_t>(*dim))),
      &requests);
  for (const uint32_t s : routing.calls) {
    requests[s].set_version(version);
    requests[s].mutable_values()->resize(sizeof(float) * *dim *
                                         requests[s].keys_size());
  }
  // A repeated key keeps its last row: later positions overwrite.
  for (size_t i = 0; i < keys.size(); ++i) {
    const uint32_t u = routing.unique_of_key[i];
    float* row =
        MutableRowsOf(requests[routing.call_of_unique[u]].mutable_values()) +
        size_t{routing.pos_of_unique[u]} * *dim;
    std::memcpy(row, values.data() + i * *dim, sizeof(float) * *dim);
  }
  std::vector<UpsertResponse> responses;
  absl::Status status = ShardCaller::CallRouted<UpsertRpc>(
      *this, routing, requests, &responses, Resend::kAlways);
  if (!status.ok()) return status;
  for (const uint32_t s : routing.calls) {
    result.rows_written += responses[s].rows_written();
    result.rows_stale += responses[s].rows_stale();
  }
  return result;
}

absl::StatusOr<PsClient::GetRowsResult> PsClient::GetRows(
    absl::string_view table, absl::Span<const uint64_t> keys) {
  GetRowsResult result;
  if (keys.empty()) return result;
  std::vector<GetRowsRequest> requests;
  std::vector<GetRowsResponse> responses;
  Routing routing;
  absl::Status status;
  // Sized as pulls are (see PullRows).
  for (const uint32_t known : {KnownDim(table), uint32_t{0}}) {
    requests.clear();
    routing = RouteRequests(
        table, keys, num_shards(), options_,
        KeysPerCall(MaxKeysForResponse(MessageBytes(options_),
                                       known > 0 ? known : kMaxRowDim,
                                       /*get_rows=*/true)),
        &requests);
    status = ShardCaller::CallRouted<GetRowsRpc>(*this, routing, requests,
                                                 &responses, Resend::kAlways);
    if (known == 0 || status.code() != absl::StatusCode::kResourceExhausted ||
        IsRetryLater(status)) {
      break;
    }
  }
  if (!status.ok()) return status;
  const uint32_t dim = responses[routing.calls[0]].dim();
  for (const uint32_t s : routing.calls) {
    const auto n = static_cast<size_t>(requests[s].keys_size());
    if (responses[s].dim() != dim || dim == 0 ||
        responses[s].values().size() != size_t{4} * dim * n ||
        static_cast<size_t>(responses[s].meta_size()) != n) {
      return absl::InternalError(absl::StrFormat(
          "shard %d (%s) answered a malformed GetRows (dim %d, %d value "
          "bytes, %d meta) for %d keys",
          routing.shard_of_call[s], addresses_[routing.shard_of_call[s]],
          responses[s].dim(), responses[s].values().size(),
          responses[s].meta_size(), n));
    }
  }
  SetKnownDim(table, dim);
  result.dim = dim;
  result.values.resize(keys.size() * dim);
  result.meta.resize(keys.size());
  const std::vector<char> unique_missing = UniqueMissing(routing, responses);
  for (size_t i = 0; i < keys.size(); ++i) {
    const uint32_t u = routing.unique_of_key[i];
    const GetRowsResponse& r = responses[routing.call_of_unique[u]];
    const uint32_t p = routing.pos_of_unique[u];
    std::memcpy(result.values.data() + i * dim,
                RowsOf(r.values()) + size_t{p} * dim, sizeof(float) * dim);
    result.meta[i] = r.meta(static_cast<int>(p));
    if (unique_missing[u]) result.missing.push_back(static_cast<uint32_t>(i));
  }
  return result;
}

absl::StatusOr<std::vector<PsClient::ShardStats>> PsClient::Stats(
    absl::string_view table) {
  TableStatsRequest request;
  request.set_table(std::string(table));
  absl::StatusOr<std::vector<TableStatsResponse>> responses =
      ShardCaller::CallAll<TableStatsRpc>(*this, request, Resend::kAlways);
  if (!responses.ok()) return responses.status();
  return WithAddresses(addresses_, *std::move(responses), &ShardStats::stats);
}

absl::StatusOr<std::vector<PsClient::ShardCheckpoint>> PsClient::Checkpoint(
    const std::string& name) {
  // One name chosen here so that every shard agrees on it; same form as a
  // shard's own default (EmbeddingStore::Checkpoint). Restore("") does not
  // depend on the form: each shard records its checkpoints' creation order.
  const std::string chosen =
      name.empty() ? absl::FormatTime("ckpt-%Y%m%d-%H%M%E6S", absl::Now(),
                                      absl::UTCTimeZone())
                   : name;
  CheckpointRequest request;
  request.set_name(chosen);
  // Not retried: a repeat of a checkpoint that did land is ALREADY_EXISTS.
  absl::StatusOr<std::vector<CheckpointResponse>> responses =
      ShardCaller::CallAll<CheckpointRpc>(*this, request, Resend::kNever);
  if (!responses.ok()) return responses.status();
  return WithAddresses(addresses_, *std::move(responses),
                       &ShardCheckpoint::checkpoint);
}

absl::StatusOr<std::vector<PsClient::ShardCheckpoints>>
PsClient::ListCheckpoints() {
  absl::StatusOr<std::vector<ListCheckpointsResponse>> responses =
      ShardCaller::CallAll<ListCheckpointsRpc>(
          *this, ListCheckpointsRequest(), Resend::kAlways);
  if (!responses.ok()) return responses.status();
  return WithAddresses(addresses_, *std::move(responses),
                       &ShardCheckpoints::list);
}

absl::StatusOr<std::vector<PsClient::ShardRestore>> PsClient::Restore(
    const std::string& name) {
  // Every shard's checkpoints first, so that nothing is restored unless all
  // shards have the one to restore: shards on different checkpoints would
  // hold parameters of different moments. The shards are then sent the
  // explicit name, never "" (each shard's own newest may differ).
  absl::StatusOr<std::vector<ShardCheckpoints>> lists = ListCheckpoints();
  if (!lists.ok()) return lists.status();
  std::string chosen = name;
  if (chosen.empty()) {
    absl::StatusOr<std::string> newest = NewestCommonCheckpoint(*lists);
    if (!newest.ok()) {
      return absl::Status(newest.status().code(),
                          absl::StrCat("nothing was restored: ",
                                       newest.status().message()));
    }
    chosen = *std::move(newest);
  } else {
    std::string lacking;
    for (size_t s = 0; s < lists->size(); ++s) {
      const ShardCheckpoints& shard = (*lists)[s];
      if (HasCheckpoint(shard.list, chosen)) continue;
      absl::StrAppend(&lacking, lacking.empty() ? "" : "; ", "shard ", s,
                      " (", shard.address, ") has ",
                      CheckpointNames(shard.list));
    }
    if (!lacking.empty()) {
      return absl::NotFoundError(absl::StrCat(
          "checkpoint '", chosen,
          "' is not on every shard, so nothing was restored: ", lacking));
    }
  }
  RestoreRequest request;
  request.set_name(chosen);
  // One id for every resend: a shard restores once, and answers a resend
  // that comes after the first attempt's deadline with that answer.
  request.set_request_id(NewRandomId());
  std::vector<uint32_t> all(num_shards());
  std::iota(all.begin(), all.end(), 0u);
  const std::vector<RestoreRequest> requests(all.size(), request);
  std::vector<RestoreResponse> responses;
  // Retried: the request id makes a resend safe.
  absl::Status status = ShardCaller::Call<RestoreRpc>(
      *this, all, all, requests, &responses, Resend::kAlways);
  if (!status.ok()) {
    std::string restored;
    for (const uint32_t s : all) {
      if (responses[s].name() != chosen) continue;
      absl::StrAppend(&restored, restored.empty() ? "" : ", ", "shard ", s,
                      " (", addresses_[s], ")");
    }
    return absl::Status(
        status.code(),
        restored.empty()
            ? absl::StrCat(status.message(), "; no shard restored '", chosen,
                           "'")
            : absl::StrCat(status.message(), "; ", restored, " did restore '",
                           chosen, "': restore '", chosen,
                           "' again once the cause is fixed"));
  }
  return WithAddresses(addresses_, std::move(responses),
                       &ShardRestore::restore);
}

absl::StatusOr<std::vector<PsClient::ShardDelete>> PsClient::DeleteCheckpoint(
    const std::string& name) {
  DeleteCheckpointRequest request;
  request.set_name(name);
  absl::StatusOr<std::vector<DeleteCheckpointResponse>> responses =
      ShardCaller::CallAll<DeleteCheckpointRpc>(*this, request,
                                                Resend::kAlways);
  if (!responses.ok()) return responses.status();
  const bool any = std::any_of(
      responses->begin(), responses->end(),
      [](const DeleteCheckpointResponse& r) { return r.deleted(); });
  if (!any) {
    absl::StatusOr<std::vector<ShardCheckpoints>> lists = ListCheckpoints();
    return absl::NotFoundError(absl::StrCat(
        "no shard has checkpoint '", name, "'",
        lists.ok() ? absl::StrCat(": ", EveryShardsCheckpoints(*lists)) : ""));
  }
  return WithAddresses(addresses_, *std::move(responses),
                       &ShardDelete::deleted);
}

absl::StatusOr<std::vector<PsClient::ShardDrop>> PsClient::DropTable(
    const std::string& table) {
  // Which shards hold the table, and how many rows: a resend after a lost
  // answer gets the shard's remembered answer, unless the shard restarted
  // meanwhile; it then finds the table gone, and this tells that shard from
  // one that never had it.
  absl::StatusOr<std::vector<ShardStats>> stats = Stats("");
  if (!stats.ok()) return stats.status();
  const TableOnShards before = FindTableOnShards(*stats, table);
  DropTableRequest request;
  request.set_table(table);
  request.set_request_id(NewRandomId());  // as in Restore
  absl::StatusOr<std::vector<DropTableResponse>> responses =
      ShardCaller::CallAll<DropTableRpc>(*this, request, Resend::kAlways);
  {
    absl::MutexLock lock(&dims_mu_);
    dims_.erase(table);
  }
  if (!responses.ok()) return responses.status();
  std::vector<ShardDrop> out =
      WithAddresses(addresses_, *std::move(responses), &ShardDrop::drop);
  bool any = false;
  for (uint32_t s = 0; s < num_shards(); ++s) {
    if (!out[s].drop.dropped() && before.rows[s] >= 0) {
      out[s].answer_lost = true;
      out[s].drop.set_dropped(true);
      out[s].drop.set_rows(static_cast<uint64_t>(before.rows[s]));
    }
    any = any || out[s].drop.dropped();
  }
  if (!any) return before.NotFound(table);
  return out;
}

std::vector<absl::Status> PsClient::Health() {
  const uint32_t n = num_shards();
  std::vector<grpc::Status> status(n);
  std::vector<grpc::health::v1::HealthCheckRequest> requests(n);
  std::vector<grpc::health::v1::HealthCheckResponse> responses(n);
  std::vector<grpc::ClientContext> contexts(n);
  grpc::CompletionQueue cq;
  std::vector<std::unique_ptr<
      grpc::ClientAsyncResponseReader<grpc::health::v1::HealthCheckResponse>>>
      calls;
  for (uint32_t s = 0; s < n; ++s) {
    contexts[s].set_deadline(Deadline(options_.timeout));
    base::AddBearerToken(options_.auth_token, &contexts[s]);
    calls.push_back(
        shards_[s]->health->AsyncCheck(&contexts[s], requests[s], &cq));
    calls.back()->Finish(&responses[s], &status[s],
                         reinterpret_cast<void*>(uintptr_t{s}));
  }
  AwaitAll(&cq, n);
  std::vector<absl::Status> out(n);
  for (uint32_t s = 0; s < n; ++s) {
    if (!status[s].ok()) {
      const absl::Status e = ShardError(s, FromGrpcStatus(status[s]));
      out[s] = absl::UnavailableError(e.message());
    } else if (responses[s].status() !=
               grpc::health::v1::HealthCheckResponse::SERVING) {
      out[s] = absl::UnavailableError(absl::StrFormat(
          "shard %d/%d (%s): not serving (health status %d)", s, n,
          addresses_[s], static_cast<int>(responses[s].status())));
    }
  }
  return out;
}

std::optional<uint32_t> FailedShard(const absl::Status& status) {
  if (status.ok()) return std::nullopt;
  const absl::optional<absl::Cord> payload = status.GetPayload(kFailedShardUrl);
  uint32_t shard = 0;
  if (!payload.has_value() ||
      !absl::SimpleAtoi(std::string(*payload), &shard)) {
    return std::nullopt;
  }
  return shard;
}

bool IsPushInDoubt(const absl::Status& status) {
  return !status.ok() && status.GetPayload(kPushInDoubtUrl).has_value();
}

TableOnShards FindTableOnShards(const std::vector<PsClient::ShardStats>& shards,
                                absl::string_view table) {
  TableOnShards out;
  out.rows.assign(shards.size(), -1);
  out.dims.assign(shards.size(), 0);
  std::set<std::string> names;
  for (size_t s = 0; s < shards.size(); ++s) {
    for (const TableStats& t : shards[s].stats.tables()) {
      names.insert(t.config().name());
      if (t.config().name() == table) {
        out.rows[s] = static_cast<int64_t>(t.rows());
        out.dims[s] = t.config().dim();
      }
    }
  }
  out.names.assign(names.begin(), names.end());
  return out;
}

size_t TableOnShards::shards_with_table() const {
  return static_cast<size_t>(
      std::count_if(rows.begin(), rows.end(), [](int64_t r) { return r >= 0; }));
}

uint64_t TableOnShards::total_rows() const {
  uint64_t total = 0;
  for (int64_t r : rows) total += r > 0 ? static_cast<uint64_t>(r) : 0;
  return total;
}

absl::Status TableOnShards::NotFound(absl::string_view table) const {
  return absl::NotFoundError(absl::StrCat(
      "no shard has table '", table, "'; tables: ",
      names.empty() ? "none" : absl::StrJoin(names, ", ")));
}

std::vector<TableStats> TotalStats(
    const std::vector<PsClient::ShardStats>& shards) {
  std::vector<TableStats> totals;
  absl::flat_hash_map<std::string, size_t> index;
  for (const auto& shard : shards) {
    for (const TableStats& t : shard.stats.tables()) {
      auto [it, inserted] = index.try_emplace(t.config().name(), totals.size());
      if (inserted) {
        totals.push_back(t);
        continue;
      }
      TableStats& sum = totals[it->second];
      sum.set_rows(sum.rows() + t.rows());
      sum.set_bytes(sum.bytes() + t.bytes());
      sum.set_pulls(sum.pulls() + t.pulls());
      sum.set_pushes(sum.pushes() + t.pushes());
      sum.set_max_version(std::max(sum.max_version(), t.max_version()));
    }
  }
  for (TableStats& t : totals) {
    t.set_bytes_per_row(t.rows() == 0 ? 0.0
                                      : static_cast<double>(t.bytes()) /
                                            static_cast<double>(t.rows()));
  }
  return totals;
}

std::vector<std::string> CommonCheckpoints(
    const std::vector<PsClient::ShardCheckpoints>& shards) {
  if (shards.empty()) return {};
  // How many shards hold each name (a name a shard lists twice counts once).
  absl::flat_hash_map<std::string, size_t> holders;
  for (const PsClient::ShardCheckpoints& shard : shards) {
    absl::flat_hash_set<std::string> seen;
    for (const CheckpointEntry& c : shard.list.checkpoints()) {
      if (seen.insert(c.name()).second) ++holders[c.name()];
    }
  }
  // Smallest and largest rank of each common name (see the header).
  struct Ranks {
    size_t min = std::numeric_limits<size_t>::max();
    size_t max = 0;
  };
  absl::flat_hash_map<std::string, Ranks> ranks;
  for (const PsClient::ShardCheckpoints& shard : shards) {
    absl::flat_hash_set<std::string> seen;
    size_t rank = 0;
    for (const CheckpointEntry& c : shard.list.checkpoints()) {
      if (holders[c.name()] != shards.size() || !seen.insert(c.name()).second) {
        continue;
      }
      Ranks& r = ranks[c.name()];
      r.min = std::min(r.min, rank);
      r.max = std::max(r.max, rank);
      ++rank;
    }
  }
  std::vector<std::pair<std::string, Ranks>> sorted(ranks.begin(),
                                                    ranks.end());
  std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) {
    return std::tie(a.second.min, a.second.max, a.first) <
           std::tie(b.second.min, b.second.max, b.first);
  });
  std::vector<std::string> names;
  names.reserve(sorted.size());
  for (auto& [name, unused] : sorted) names.push_back(std::move(name));
  return names;
}

absl::StatusOr<std::string> NewestCommonCheckpoint(
    const std::vector<PsClient::ShardCheckpoints>& shards) {
  std::vector<std::string> common = CommonCheckpoints(shards);
  if (common.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "no checkpoint is on every shard: ", EveryShardsCheckpoints(shards),
        "; take a new checkpoint on every shard (Checkpoint) first"));
  }
  return std::move(common.back());
}

PsClient::ScopedDeadline::ScopedDeadline(absl::Time deadline)
    : previous_(call_deadline) {
  call_deadline = std::min(deadline, previous_);
}

PsClient::ScopedDeadline::~ScopedDeadline() { call_deadline = previous_; }

}  // namespace mim::ps
