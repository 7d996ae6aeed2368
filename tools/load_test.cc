// load_test: open-loop Predict load against one serving target
// (//serving:server, proto/serving.proto).
//
//   load_test --target=HOST:PORT --qps=Q --duration=S --candidates=C
//             --behaviors=B [--users=LO-HI] [--items=LO-HI] [--genres=G]
//             [--deadline_ms=D] [--channels=N] [--seed=S] [--json_out=F]
//
// Requests leave on a fixed schedule (request i at start + i/Q) whatever the
// replies do: they are asynchronous (gRPC's callback API over a few
// channels), so a slow reply never delays the next send. Latency is measured
// from each request's *scheduled* send time, so time a request spent waiting
// behind a stalled sender counts too (no coordinated omission). Users and
// items are drawn uniformly and seeded from the id ranges; the defaults are
// those of tools/gen_synthetic's default dataset.
//
// Reports requests sent, achieved QPS, p50/p99/p999/max latency of the OK
// replies in ms, errors by gRPC status code, the rows the replies read from
// the cache or pulled, and the server's GetStatus counters before and after.
// Progress goes to stderr once per second (one overwritten line on a
// terminal, plain lines otherwise). Exit status: 0 the run completed (even
// with failed requests: they are reported), 1 the target could not be
// reached or --json_out not written, 2 bad usage. TLS and token:
// --tls_ca, --tls_client_cert, --tls_client_key, --auth_token_file
// (base/client_security.h; UpsertItem needs an admin token).
//
// --mode=upsert_visible measures how long a new item takes to be scored
// with its content (upsert-to-visible):
//
//   load_test --target=HOST:PORT --mode=upsert_visible --upserts=N
//             --upsert_texts=item_text.tsv [--background_qps=Q] ...
//
// For each of N new item ids (from --upsert_item_base up, ids no dataset
// uses): one Predict with the new item as candidate 0 gives its score s0
// (no ID row, no content yet); then the clock starts, UpsertItem writes the
// item with a text from --upsert_texts (mim-item-text v1, used in turn),
// and Predicts of the same request follow back to back until one scores
// candidate 0 differently from s0; the time from before UpsertItem to that
// reply is the item's upsert-to-visible time. Calls are synchronous, one
// item at a time, over the first channel. With --background_qps > 0, an
// open-loop Predict load at that rate (the other flags as in the default
// mode) runs over the other channels meanwhile. Reports p50/p99/max of
// upsert-to-visible and of the UpsertItem call alone, how many Predicts it
// took, items never seen changed within --visible_timeout_ms, errors, and
// the background load's own latencies.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/random/random.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/ascii.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "base/atomic_file.h"
#include "base/client_security.h"
#include "base/grpc_auth.h"
#include "gflags/gflags.h"
#include "grpcpp/channel.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"
#include "nlohmann/json.hpp"
#include "proto/serving.grpc.pb.h"
#include "tools/gen_synthetic_lib.h"

namespace {

// Channel credentials and token of every call; set once in main() before
// any call, read-only afterwards.
mim::base::ClientSecurity& Security() {
  static auto* security = new mim::base::ClientSecurity;
  return *security;
}

// gen_synthetic's default dataset numbers users and items from 1.
const std::string kDefaultUsers =
    absl::StrCat("1-", mim::tools::SyntheticOptions().num_users);
const std::string kDefaultItems =
    absl::StrCat("1-", mim::tools::SyntheticOptions().num_items);

}  // namespace

DEFINE_string(target, "", "Serving address HOST:PORT.");
DEFINE_double(qps, 100, "Requests per second, sent on a fixed schedule.");
DEFINE_double(duration, 10, "Seconds of sending.");
DEFINE_int32(candidates, 100, "Candidate items per request.");
DEFINE_int32(behaviors, 50, "Behaviour items per request.");
DEFINE_string(users, kDefaultUsers.c_str(),
              "User ids to draw from: LO-HI (inclusive) or N (= 1-N). "
              "Default: tools/gen_synthetic's default dataset.");
DEFINE_string(items, kDefaultItems.c_str(),
              "Item ids to draw behaviours and candidates from: LO-HI or N. "
              "Default: tools/gen_synthetic's default dataset.");
DEFINE_int32(genres, 0,
             "If > 0, each candidate gets one genre id drawn from 1-G; 0 "
             "sends no candidate_features.");
DEFINE_int32(deadline_ms, 1000, "Deadline of each Predict, from its send.");
DEFINE_int32(channels, 4, "gRPC channels (separate connections), used in turn.");
DEFINE_uint64(seed, 1, "Seed of the user and item draws.");
DEFINE_int32(connect_timeout_ms, 10000,
             "How long to wait for every channel to connect before starting.");
DEFINE_bool(status, true, "Call GetStatus before and after the run.");
DEFINE_string(json_out, "", "If set, also write the report as JSON here.");
DEFINE_string(mode, "load",
              "load: open-loop Predict load; upsert_visible: time from "
              "UpsertItem of a new item to the first Predict that scores it "
              "differently (see the file's comment).");
DEFINE_int32(upserts, 200, "upsert_visible: new items to upsert.");
DEFINE_string(upsert_texts, "",
              "upsert_visible: item text file (mim-item-text v1, e.g. "
              "tools/gen_synthetic's item_text.tsv); its texts are used in "
              "turn for the new items.");
DEFINE_int64(upsert_item_base, 2000000000,
             "upsert_visible: first new item id (ids upsert_item_base + i).");
DEFINE_int32(visible_timeout_ms, 5000,
             "upsert_visible: give up on an item not seen changed this long "
             "after its UpsertItem started.");
DEFINE_double(background_qps, 0,
              "upsert_visible: open-loop Predict load meanwhile, requests per "
              "second (0: none).");

namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using mim::serving::GetStatusRequest;
using mim::serving::GetStatusResponse;
using mim::serving::PredictionService;
using mim::serving::PredictRequest;
using mim::serving::PredictResponse;

constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;

// The user-feature categories of MovieLens-1M, which gen_synthetic copies:
// age bucket 1-7, gender 1-2, occupation 1-21.
constexpr int kAgeBuckets = 7;
constexpr int kGenders = 2;
constexpr int kOccupations = 21;

double Ms(Clock::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

struct IdRange {
  int64_t lo = 1;
  int64_t hi = 1;  // inclusive
};

// "LO-HI" (inclusive) or "N" (= 1-N).
absl::StatusOr<IdRange> ParseRange(const std::string& flag,
                                   const std::string& text) {
  IdRange r;
  const std::vector<std::string> parts = absl::StrSplit(text, '-');
  bool ok = false;
  if (parts.size() == 1) {
    ok = absl::SimpleAtoi(parts[0], &r.hi);
  } else if (parts.size() == 2) {
    ok = absl::SimpleAtoi(parts[0], &r.lo) && absl::SimpleAtoi(parts[1], &r.hi);
  }
  if (!ok || r.lo < 0 || r.hi < r.lo) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--", flag, "='", text,
        "' is not an id range; expected LO-HI with 0 <= LO <= HI, or N for "
        "1-N"));
  }
  return r;
}

std::string RangeText(const IdRange& r) { return absl::StrCat(r.lo, "-", r.hi); }

// Seeded request contents. Not thread-safe.
class RequestGenerator {
 public:
  RequestGenerator(uint64_t seed, IdRange users, IdRange items, int behaviors,
                   int candidates, int genres)
      : rng_(seed), seed_(seed), users_(users), items_(items),
        behaviors_(behaviors), candidates_(candidates), genres_(genres) {}

  void Fill(PredictRequest* request) {
    const int64_t user = Draw(users_);
    request->set_user_id(user);
    // A user keeps the same side features for the whole run.
    uint64_t h = static_cast<uint64_t>(user) * 0x9E3779B97F4A7C15ULL ^ seed_;
    h ^= h >> 29;
    auto& features = *request->mutable_user_features();
    features["age_bucket"] = 1 + static_cast<int64_t>(h % kAgeBuckets);
    features["gender"] = 1 + static_cast<int64_t>((h >> 8) % kGenders);
    features["occupation"] = 1 + static_cast<int64_t>((h >> 16) % kOccupations);
    for (int i = 0; i < behaviors_; ++i) {
      request->add_behavior_item_ids(Draw(items_));
    }
    // Distinct candidates while the range has enough items.
    const bool distinct = items_.hi - items_.lo + 1 >= candidates_;
    seen_.clear();
    for (int i = 0; i < candidates_; ++i) {
      int64_t item = Draw(items_);
      while (distinct && !seen_.insert(item).second) item = Draw(items_);
      request->add_candidate_item_ids(item);
      if (genres_ > 0) {
        request->add_candidate_features()->add_genres(
            absl::Uniform<int32_t>(absl::IntervalClosed, rng_, 1, genres_));
      }
    }
  }

 private:
  int64_t Draw(const IdRange& r) {
    return absl::Uniform<int64_t>(absl::IntervalClosed, rng_, r.lo, r.hi);
  }

  std::mt19937_64 rng_;
  const uint64_t seed_;
  const IdRange users_;
  const IdRange items_;
  const int behaviors_;
  const int candidates_;
  const int genres_;
  absl::flat_hash_set<int64_t> seen_;
};

// Nearest-rank percentile of sorted values (0 when empty).
double Percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  const size_t rank = static_cast<size_t>(std::ceil(p * sorted.size()));
  return sorted[std::min(sorted.size() - 1, rank == 0 ? 0 : rank - 1)];
}

struct LatencySummary {
  size_t count = 0;
  double p50 = 0, p99 = 0, p999 = 0, max = 0, mean = 0;
};

LatencySummary Summarize(std::vector<double> ms) {
  LatencySummary s;
  s.count = ms.size();
  if (ms.empty()) return s;
  std::sort(ms.begin(), ms.end());
  s.p50 = Percentile(ms, 0.50);
  s.p99 = Percentile(ms, 0.99);
  s.p999 = Percentile(ms, 0.999);
  s.max = ms.back();
  double sum = 0;
  for (double v : ms) sum += v;
  s.mean = sum / ms.size();
  return s;
}

// Outcomes of finished calls. Safe for concurrent access.
class Recorder {
 public:
  void Record(const grpc::Status& status, const PredictResponse& response,
              double latency_ms) {
    absl::MutexLock lock(&mu_);
    --in_flight_;
    last_reply_ = Clock::now();
    if (!status.ok()) {
      ++errors_[status.error_code()];
      ++interval_errors_;
      if (first_error_.empty()) {
        first_error_ = absl::StrCat(
            absl::StatusCodeToString(
                static_cast<absl::StatusCode>(status.error_code())),
            ": ", status.error_message());
      }
      return;
    }
    latencies_ms_.push_back(latency_ms);
    interval_ms_.push_back(latency_ms);
    cache_hits_ += response.cache_hits();
    rows_pulled_ += response.rows_pulled();
    if (response.stale()) ++stale_;
    ++versions_[response.model_version()];
  }

  void Sent() {
    absl::MutexLock lock(&mu_);
    ++in_flight_;
    ++sent_;
  }

  // Returns once every sent call has finished (each has a deadline).
  void AwaitIdle() {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(
        +[](int64_t* n) { return *n == 0; }, &in_flight_));
  }

  // One progress line covering the calls finished since the last one.
  std::string ProgressLine(double elapsed_s) {
    absl::MutexLock lock(&mu_);
    const LatencySummary s = Summarize(std::move(interval_ms_));
    interval_ms_.clear();
    const int64_t errors = interval_errors_;
    interval_errors_ = 0;
    return absl::StrFormat(
        "%5.0fs sent %-8d ok %-8d errors %-6d in flight %-5d | last second: "
        "%d ok, %d errors, p50 %.2f ms, p99 %.2f ms",
        elapsed_s, sent_, latencies_ms_.size(), TotalErrors(), in_flight_,
        s.count, errors, s.p50, s.p99);
  }

  struct Totals {
    int64_t sent = 0;
    std::vector<double> latencies_ms;
    std::map<grpc::StatusCode, int64_t> errors;
    std::string first_error;
    int64_t cache_hits = 0, rows_pulled = 0, stale = 0;
    std::map<std::string, int64_t> versions;
    Clock::time_point last_reply;
  };
  Totals Take() {
    absl::MutexLock lock(&mu_);
    Totals t;
    t.sent = sent_;
    t.latencies_ms = std::move(latencies_ms_);
    t.errors = errors_;
    t.first_error = first_error_;
    t.cache_hits = cache_hits_;
    t.rows_pulled = rows_pulled_;
    t.stale = stale_;
    t.versions = std::map<std::string, int64_t>(versions_.begin(),
                                                versions_.end());
    t.last_reply = last_reply_;
    return t;
  }

 private:
  int64_t TotalErrors() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    int64_t n = 0;
    for (const auto& [code, count] : errors_) n += count;
    return n;
  }

  absl::Mutex mu_;
  int64_t sent_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<double> latencies_ms_ ABSL_GUARDED_BY(mu_);
  std::vector<double> interval_ms_ ABSL_GUARDED_BY(mu_);
  int64_t interval_errors_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<grpc::StatusCode, int64_t> errors_ ABSL_GUARDED_BY(mu_);
  std::string first_error_ ABSL_GUARDED_BY(mu_);
  int64_t cache_hits_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t rows_pulled_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t stale_ ABSL_GUARDED_BY(mu_) = 0;
  absl::flat_hash_map<std::string, int64_t> versions_ ABSL_GUARDED_BY(mu_);
  Clock::time_point last_reply_ ABSL_GUARDED_BY(mu_);
};

// One Predict in flight; deletes itself when its reply (or error) arrives.
struct Call {
  grpc::ClientContext context;
  PredictRequest request;
  PredictResponse response;
  Clock::time_point scheduled;
};

std::string CodeName(grpc::StatusCode code) {
  return absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
}

absl::StatusOr<GetStatusResponse> GetStatus(PredictionService::Stub& stub) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::milliseconds(FLAGS_deadline_ms));
  mim::base::AddBearerToken(Security().auth_token, &context);
  GetStatusResponse response;
  const grpc::Status status =
      stub.GetStatus(&context, GetStatusRequest(), &response);
  if (!status.ok()) {
    return absl::UnavailableError(absl::StrCat(
        "GetStatus on ", FLAGS_target, " failed: ", CodeName(status.error_code()),
        ": ", status.error_message()));
  }
  return response;
}

absl::StatusOr<std::vector<std::unique_ptr<PredictionService::Stub>>>
ConnectChannels() {
  std::vector<std::unique_ptr<PredictionService::Stub>> stubs;
  const auto deadline = std::chrono::system_clock::now() +
                        std::chrono::milliseconds(FLAGS_connect_timeout_ms);
  for (int i = 0; i < FLAGS_channels; ++i) {
    grpc::ChannelArguments args;
    // Without this, channels to one target share a single connection.
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    std::shared_ptr<grpc::Channel> channel =
        grpc::CreateCustomChannel(FLAGS_target, Security().credentials, args);
    if (!channel->WaitForConnected(deadline)) {
      return absl::UnavailableError(absl::StrCat(
          "could not connect to ", FLAGS_target, " within ",
          FLAGS_connect_timeout_ms,
          " ms (--connect_timeout_ms); is //serving:server running there?"));
    }
    stubs.push_back(PredictionService::NewStub(channel));
  }
  return stubs;
}

// Prints progress to stderr once per second until `done` is notified.
void ReportProgress(Recorder& recorder, Clock::time_point start,
                    absl::Notification& done) {
  const bool tty = isatty(STDERR_FILENO) == 1;
  while (!done.WaitForNotificationWithTimeout(absl::Seconds(1))) {
    const std::string line =
        recorder.ProgressLine(Ms(Clock::now() - start) / 1000);
    if (tty) {
      std::fprintf(stderr, "\r%s\033[K", line.c_str());
    } else {
      std::fprintf(stderr, "%s\n", line.c_str());
    }
    std::fflush(stderr);
  }
  if (tty) std::fprintf(stderr, "\n");
}

struct SendResult {
  Clock::time_point start;
  Clock::time_point end;  // when the last request left
  double max_lag_ms = 0;  // worst delay of a send behind its schedule
};

// Sends `total` requests at `qps` on their schedule, over stubs[first..] in
// turn; stops early once `stop` (if given) is set.
SendResult SendOnSchedule(
    const std::vector<std::unique_ptr<PredictionService::Stub>>& stubs,
    RequestGenerator& generator, Recorder& recorder, int64_t total,
    double qps, size_t first = 0,
    const std::atomic<bool>* stop = nullptr) {
  SendResult r;
  const std::chrono::duration<double> interval(1.0 / qps);
  const size_t n_stubs = stubs.size() - first;
  r.start = Clock::now();
  for (int64_t i = 0; i < total; ++i) {
    if (stop != nullptr && stop->load()) break;
    auto* call = new Call;
    generator.Fill(&call->request);
    call->scheduled =
        r.start + std::chrono::duration_cast<Clock::duration>(interval * i);
    std::this_thread::sleep_until(call->scheduled);
    const Clock::time_point now = Clock::now();
    r.max_lag_ms = std::max(r.max_lag_ms, Ms(now - call->scheduled));
    call->context.set_deadline(std::chrono::system_clock::now() +
                               std::chrono::milliseconds(FLAGS_deadline_ms));
    mim::base::AddBearerToken(Security().auth_token, &call->context);
    recorder.Sent();
    stubs[first + i % n_stubs]->async()->Predict(
        &call->context, &call->request, &call->response,
        [call, &recorder](grpc::Status status) {
          recorder.Record(status, call->response,
                          Ms(Clock::now() - call->scheduled));
          delete call;
        });
  }
  r.end = Clock::now();
  return r;
}

json StatusJson(const GetStatusResponse& s) {
  return {{"model_version", s.model_version()},
          {"model_name", s.model_name()},
          {"requests", s.requests()},
          {"cache_hits", s.cache_hits()},
          {"cache_misses", s.cache_misses()},
          {"cache_bytes", s.cache_bytes()},
          {"model_reloads", s.model_reloads()}};
}

double Ratio(double num, double den) { return den > 0 ? num / den : 0; }

// The whole report as JSON: the one place its figures are computed.
json Report(const Recorder::Totals& t, const SendResult& send,
            const IdRange& users, const IdRange& items,
            const std::optional<GetStatusResponse>& before,
            const std::optional<GetStatusResponse>& after,
            const std::string& after_error) {
  const LatencySummary lat = Summarize(t.latencies_ms);
  const double send_s =
      std::max(Ms(send.end - send.start) / 1000, FLAGS_duration);
  json errors = json::object();
  int64_t error_total = 0;
  for (const auto& [code, n] : t.errors) {
    errors[CodeName(code)] = n;
    error_total += n;
  }
  json j = {
      {"target", FLAGS_target},
      {"config",
       {{"qps", FLAGS_qps}, {"duration_s", FLAGS_duration},
        {"candidates", FLAGS_candidates}, {"behaviors", FLAGS_behaviors},
        {"users", RangeText(users)}, {"items", RangeText(items)},
        {"genres", FLAGS_genres}, {"deadline_ms", FLAGS_deadline_ms},
        {"channels", FLAGS_channels}, {"seed", FLAGS_seed}}},
      {"latency_from", "scheduled send time (open loop, no coordinated "
                       "omission); OK replies only"},
      {"sent", t.sent},
      {"achieved_qps", Ratio(t.sent, send_s)},
      {"ok", static_cast<int64_t>(t.latencies_ms.size())},
      {"errors", errors},
      {"error_total", error_total},
      {"first_error", t.first_error},
      {"latency_ms",
       {{"p50", lat.p50}, {"p99", lat.p99}, {"p999", lat.p999},
        {"max", lat.max}, {"mean", lat.mean}}},
      {"max_send_lag_ms", send.max_lag_ms},
      {"replies",
       {{"cache_hits", t.cache_hits}, {"rows_pulled", t.rows_pulled},
        {"row_hit_rate", Ratio(t.cache_hits, t.cache_hits + t.rows_pulled)},
        {"stale", t.stale}, {"model_versions", t.versions}}}};
  if (before.has_value() && after.has_value()) {
    const int64_t hits = after->cache_hits() - before->cache_hits();
    const int64_t misses = after->cache_misses() - before->cache_misses();
    j["server_status"] = {
        {"before", StatusJson(*before)},
        {"after", StatusJson(*after)},
        {"delta",
         {{"requests", after->requests() - before->requests()},
          {"cache_hits", hits},
          {"cache_misses", misses},
          {"cache_hit_rate", Ratio(hits, hits + misses)},
          {"model_reloads", after->model_reloads() - before->model_reloads()}}}};
  } else if (!after_error.empty()) {
    j["server_status_error"] = after_error;
  }
  return j;
}

// The report for people, on stdout.
void PrintReport(const json& j) {
  const json& c = j["config"];
  std::printf("load_test %s: %g qps for %g s, %d candidates, %d behaviors, "
              "users %s, items %s, %d channels, deadline %d ms, seed %" PRIu64
              "\n",
              j["target"].get<std::string>().c_str(), c["qps"].get<double>(),
              c["duration_s"].get<double>(), c["candidates"].get<int>(),
              c["behaviors"].get<int>(), c["users"].get<std::string>().c_str(),
              c["items"].get<std::string>().c_str(), c["channels"].get<int>(),
              c["deadline_ms"].get<int>(), c["seed"].get<uint64_t>());
  std::printf("open loop: requests leave on a fixed schedule; latency runs "
              "from each request's scheduled send time (no coordinated "
              "omission)\n");
  std::printf("  requests sent     %" PRId64 "\n", j["sent"].get<int64_t>());
  std::printf("  achieved qps      %.1f (target %g)\n",
              j["achieved_qps"].get<double>(), c["qps"].get<double>());
  std::printf("  ok replies        %" PRId64 "\n", j["ok"].get<int64_t>());
  std::string errors;
  if (j["error_total"].get<int64_t>() > 0) {
    std::vector<std::string> parts;
    for (const auto& [code, n] : j["errors"].items()) {
      parts.push_back(absl::StrCat(code, " ", n.get<int64_t>()));
    }
    errors = absl::StrCat(" (", absl::StrJoin(parts, ", "), "); first: ",
                          j["first_error"].get<std::string>());
  }
  std::printf("  errors            %" PRId64 "%s\n",
              j["error_total"].get<int64_t>(), errors.c_str());
  const json& lat = j["latency_ms"];
  std::printf("  latency ms (ok)   p50 %.3f  p99 %.3f  p999 %.3f  max %.3f  "
              "mean %.3f\n",
              lat["p50"].get<double>(), lat["p99"].get<double>(),
              lat["p999"].get<double>(), lat["max"].get<double>(),
              lat["mean"].get<double>());
  const double lag = j["max_send_lag_ms"].get<double>();
  // Behind by more than one send interval: the generator, not the server,
  // set the pace for a while (the latencies include that wait).
  std::printf("  max send lag ms   %.3f%s\n", lag,
              lag > 1000 / c["qps"].get<double>() && lag > 1
                  ? "  (the sender fell behind its schedule; latencies "
                    "include the wait)"
                  : "");
  const json& r = j["replies"];
  std::printf("  rows (replies)    %" PRId64 " from cache, %" PRId64
              " pulled, hit rate %.4f, %" PRId64 " stale replies\n",
              r["cache_hits"].get<int64_t>(), r["rows_pulled"].get<int64_t>(),
              r["row_hit_rate"].get<double>(), r["stale"].get<int64_t>());
  std::vector<std::string> versions;
  for (const auto& [v, n] : r["model_versions"].items()) {
    versions.push_back(absl::StrCat(v.empty() ? "(empty)" : v, " x",
                                    n.get<int64_t>()));
  }
  std::printf("  model versions    %s\n",
              versions.empty() ? "(no reply)"
                               : absl::StrJoin(versions, ", ").c_str());
  if (j.contains("server_status")) {
    const json& d = j["server_status"]["delta"];
    std::printf("  server GetStatus  requests +%" PRId64 ", cache hits +%" PRId64
                ", misses +%" PRId64 ", hit rate %.4f, cache bytes %" PRId64
                ", model reloads +%" PRId64 " (server-wide: includes any "
                "other traffic)\n",
                d["requests"].get<int64_t>(), d["cache_hits"].get<int64_t>(),
                d["cache_misses"].get<int64_t>(),
                d["cache_hit_rate"].get<double>(),
                j["server_status"]["after"]["cache_bytes"].get<int64_t>(),
                d["model_reloads"].get<int64_t>());
  } else if (j.contains("server_status_error")) {
    std::printf("  server GetStatus  %s\n",
                j["server_status_error"].get<std::string>().c_str());
  }
}

int Usage(const std::string& message) {
  std::fprintf(stderr, "load_test: %s\n", message.c_str());
  return kExitUsage;
}

// --- upsert_visible mode ---------------------------------------------------

// The texts of an item text file ("<id>\t<text>[\t<text>...]", '#' lines
// skipped), each with its text columns joined by spaces.
absl::StatusOr<std::vector<std::string>> ReadTexts(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat("--upsert_texts: cannot open '", path, "'"));
  }
  std::vector<std::string> texts;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::vector<absl::string_view> cols = absl::StrSplit(line, '\t');
    if (cols.size() < 2) continue;
    std::string text = absl::StrJoin(cols.begin() + 1, cols.end(), " ");
    if (!absl::StripAsciiWhitespace(text).empty()) texts.push_back(text);
  }
  if (texts.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--upsert_texts: '", path,
        "' has no line '<item_id>\\t<text>' with a non-empty text"));
  }
  return texts;
}

grpc::Status CallPredict(PredictionService::Stub& stub,
                         const PredictRequest& request,
                         PredictResponse* response) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::milliseconds(FLAGS_deadline_ms));
  mim::base::AddBearerToken(Security().auth_token, &context);
  return stub.Predict(&context, request, response);
}

// One new item's measurement; `visible_ms` < 0 when it never became visible.
struct UpsertTiming {
  double upsert_ms = 0;
  double visible_ms = -1;
  int predicts = 0;  // Predicts after UpsertItem, the visible one included
};

// Upserts item `item` and times it to visibility (see the file's comment).
// Errors: the first failed call, as "<what>: CODE: message".
absl::StatusOr<UpsertTiming> TimeOneUpsert(PredictionService::Stub& stub,
                                           PredictRequest request,
                                           int64_t item,
                                           const std::string& text) {
  request.set_candidate_item_ids(0, item);
  PredictResponse before;
  grpc::Status st = CallPredict(stub, request, &before);
  if (!st.ok() || before.scores_size() < 1) {
    return absl::UnavailableError(absl::StrCat(
        "Predict before UpsertItem: ", CodeName(st.error_code()), ": ",
        st.error_message()));
  }
  const float s0 = before.scores(0);
  mim::serving::UpsertItemRequest up;
  up.set_item_id(item);
  up.set_text(text);
  mim::serving::UpsertItemResponse up_response;
  UpsertTiming t;
  const Clock::time_point start = Clock::now();
  {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::milliseconds(FLAGS_deadline_ms));
    mim::base::AddBearerToken(Security().auth_token, &context);
    st = stub.UpsertItem(&context, up, &up_response);
  }
  t.upsert_ms = Ms(Clock::now() - start);
  if (!st.ok()) {
    return absl::UnavailableError(absl::StrCat(
        "UpsertItem: ", CodeName(st.error_code()), ": ", st.error_message()));
  }
  const auto give_up =
      start + std::chrono::milliseconds(FLAGS_visible_timeout_ms);
  while (Clock::now() < give_up) {
    PredictResponse after;
    st = CallPredict(stub, request, &after);
    ++t.predicts;
    if (!st.ok() || after.scores_size() < 1) {
      return absl::UnavailableError(absl::StrCat(
          "Predict after UpsertItem: ", CodeName(st.error_code()), ": ",
          st.error_message()));
    }
    if (after.scores(0) != s0) {
      t.visible_ms = Ms(Clock::now() - start);
      break;
    }
  }
  return t;
}

json SummaryJson(const LatencySummary& s) {
  return {{"count", s.count}, {"p50", s.p50}, {"p99", s.p99},
          {"p999", s.p999},   {"max", s.max}, {"mean", s.mean}};
}

int RunUpsertVisible(
    const std::vector<std::unique_ptr<PredictionService::Stub>>& stubs,
    const IdRange& users, const IdRange& items) {
  absl::StatusOr<std::vector<std::string>> texts =
      ReadTexts(FLAGS_upsert_texts);
  if (!texts.ok()) return Usage(std::string(texts.status().message()));

  // Background load over the other channels (all of them if only one).
  Recorder recorder;
  std::atomic<bool> stop{false};
  std::optional<SendResult> background;
  std::thread sender;
  if (FLAGS_background_qps > 0) {
    sender = std::thread([&] {
      RequestGenerator generator(FLAGS_seed, users, items, FLAGS_behaviors,
                                 FLAGS_candidates, FLAGS_genres);
      const int64_t most = static_cast<int64_t>(FLAGS_background_qps * 86400);
      background = SendOnSchedule(stubs, generator, recorder, most,
                                  FLAGS_background_qps,
                                  stubs.size() > 1 ? 1 : 0, &stop);
    });
    // Let the load reach its rate before the first item.
    std::this_thread::sleep_for(std::chrono::seconds(1));
  }

  RequestGenerator probes(FLAGS_seed + 1, users, items, FLAGS_behaviors,
                          FLAGS_candidates, FLAGS_genres);
  std::vector<double> visible_ms, upsert_ms;
  int64_t not_visible = 0, failed = 0, predicts = 0;
  int max_predicts = 0;
  std::string first_error;
  const Clock::time_point start = Clock::now();
  for (int i = 0; i < FLAGS_upserts; ++i) {
    PredictRequest request;
    probes.Fill(&request);
    const int64_t item = FLAGS_upsert_item_base + i;
    absl::StatusOr<UpsertTiming> t = TimeOneUpsert(
        *stubs[0], request, item, (*texts)[i % texts->size()]);
    if (!t.ok()) {
      ++failed;
      if (first_error.empty()) first_error = std::string(t.status().message());
      continue;
    }
    upsert_ms.push_back(t->upsert_ms);
    predicts += t->predicts;
    max_predicts = std::max(max_predicts, t->predicts);
    if (t->visible_ms < 0) {
      ++not_visible;
    } else {
      visible_ms.push_back(t->visible_ms);
    }
    if ((i + 1) % 50 == 0) {
      std::fprintf(stderr, "%5.0fs upserts %d, visible %zu, not visible %" PRId64
                   ", failed %" PRId64 "\n",
                   Ms(Clock::now() - start) / 1000, i + 1, visible_ms.size(),
                   not_visible, failed);
    }
  }
  stop.store(true);
  if (sender.joinable()) sender.join();
  recorder.AwaitIdle();

  const LatencySummary vis = Summarize(visible_ms);
  const LatencySummary ups = Summarize(upsert_ms);
  json j = {
      {"target", FLAGS_target},
      {"mode", "upsert_visible"},
      {"config",
       {{"upserts", FLAGS_upserts}, {"upsert_item_base", FLAGS_upsert_item_base},
        {"upsert_texts", FLAGS_upsert_texts}, {"texts", texts->size()},
        {"candidates", FLAGS_candidates}, {"behaviors", FLAGS_behaviors},
        {"users", RangeText(users)}, {"items", RangeText(items)},
        {"deadline_ms", FLAGS_deadline_ms},
        {"visible_timeout_ms", FLAGS_visible_timeout_ms},
        {"background_qps", FLAGS_background_qps},
        {"channels", FLAGS_channels}, {"seed", FLAGS_seed}}},
      {"measured_from", "just before UpsertItem is sent, to the reply of the "
                        "first Predict that scores the new item differently"},
      {"visible_ms", SummaryJson(vis)},
      {"upsert_rpc_ms", SummaryJson(ups)},
      {"predicts_after_upsert",
       {{"mean", Ratio(predicts, upsert_ms.size())}, {"max", max_predicts}}},
      {"not_visible", not_visible},
      {"failed", failed},
      {"first_error", first_error}};
  if (background.has_value()) {
    Recorder::Totals t = recorder.Take();
    const LatencySummary lat = Summarize(t.latencies_ms);
    int64_t errors = 0;
    for (const auto& [code, n] : t.errors) errors += n;
    j["background"] = {
        {"sent", t.sent},
        {"achieved_qps",
         Ratio(t.sent, Ms(background->end - background->start) / 1000)},
        {"error_total", errors},
        {"first_error", t.first_error},
        {"latency_ms", SummaryJson(lat)}};
  }

  std::printf("load_test %s upsert_visible: %d new items (ids from %" PRId64
              "), %d candidates, %d behaviors, background %g qps\n",
              FLAGS_target.c_str(), FLAGS_upserts, FLAGS_upsert_item_base,
              FLAGS_candidates, FLAGS_behaviors, FLAGS_background_qps);
  std::printf("  upsert-to-visible ms  p50 %.3f  p99 %.3f  max %.3f  mean %.3f"
              "  (%zu items)\n",
              vis.p50, vis.p99, vis.max, vis.mean, vis.count);
  std::printf("  UpsertItem call ms    p50 %.3f  p99 %.3f  max %.3f\n",
              ups.p50, ups.p99, ups.max);
  std::printf("  Predicts after upsert mean %.2f, max %d; not visible within "
              "%d ms: %" PRId64 "; failed: %" PRId64 "%s\n",
              Ratio(predicts, upsert_ms.size()), max_predicts,
              FLAGS_visible_timeout_ms, not_visible, failed,
              first_error.empty() ? ""
                                  : absl::StrCat(" (first: ", first_error, ")")
                                        .c_str());
  if (j.contains("background")) {
    const json& b = j["background"];
    const json& l = b["latency_ms"];
    std::printf("  background load       %" PRId64 " sent, %.1f qps, p50 %.3f"
                "  p99 %.3f  max %.3f ms, %" PRId64 " errors\n",
                b["sent"].get<int64_t>(), b["achieved_qps"].get<double>(),
                l["p50"].get<double>(), l["p99"].get<double>(),
                l["max"].get<double>(), b["error_total"].get<int64_t>());
  }
  if (!FLAGS_json_out.empty()) {
    const absl::Status written =
        mim::base::WriteFileAtomically(FLAGS_json_out, j.dump(2) + "\n");
    if (!written.ok()) {
      std::fprintf(stderr, "load_test: --json_out: %s\n",
                   written.ToString().c_str());
      return kExitFailed;
    }
  }
  return failed > 0 && visible_ms.empty() ? kExitFailed : 0;
}

int Run() {
  if (FLAGS_target.empty()) return Usage("--target=HOST:PORT is required");
  const bool upsert_mode = FLAGS_mode == "upsert_visible";
  if (!upsert_mode && FLAGS_mode != "load") {
    return Usage(absl::StrCat("--mode='", FLAGS_mode,
                              "': expected load or upsert_visible"));
  }
  if (upsert_mode) {
    if (FLAGS_upserts < 1) return Usage("--upserts must be >= 1");
    if (FLAGS_upsert_texts.empty()) {
      return Usage("--mode=upsert_visible needs --upsert_texts=FILE");
    }
    if (FLAGS_upsert_item_base < 0) {
      return Usage("--upsert_item_base must be >= 0");
    }
    if (FLAGS_visible_timeout_ms < 1) {
      return Usage("--visible_timeout_ms must be >= 1");
    }
    if (!(FLAGS_background_qps >= 0)) {
      return Usage("--background_qps must be >= 0");
    }
  }
  if (!(FLAGS_qps > 0)) return Usage("--qps must be > 0");
  if (!(FLAGS_duration > 0)) return Usage("--duration must be > 0 seconds");
  if (FLAGS_candidates < 1) return Usage("--candidates must be >= 1");
  if (FLAGS_behaviors < 0) return Usage("--behaviors must be >= 0");
  if (FLAGS_genres < 0) return Usage("--genres must be >= 0");
  if (FLAGS_deadline_ms < 1) return Usage("--deadline_ms must be >= 1");
  if (FLAGS_channels < 1) return Usage("--channels must be >= 1");
  const double total_d = std::round(FLAGS_qps * FLAGS_duration);
  if (total_d < 1 || total_d > 1e9) {
    return Usage(absl::StrCat("--qps x --duration gives ", total_d,
                              " requests; expected 1 to 1e9"));
  }
  absl::StatusOr<IdRange> users = ParseRange("users", FLAGS_users);
  if (!users.ok()) return Usage(std::string(users.status().message()));
  absl::StatusOr<IdRange> items = ParseRange("items", FLAGS_items);
  if (!items.ok()) return Usage(std::string(items.status().message()));

  auto stubs = ConnectChannels();
  if (!stubs.ok()) {
    std::fprintf(stderr, "load_test: %s\n", stubs.status().ToString().c_str());
    return kExitFailed;
  }
  if (upsert_mode) return RunUpsertVisible(*stubs, *users, *items);
  std::optional<GetStatusResponse> before;
  if (FLAGS_status) {
    absl::StatusOr<GetStatusResponse> s = GetStatus(*(*stubs)[0]);
    if (!s.ok()) {
      std::fprintf(stderr, "load_test: %s (--status=false skips it)\n",
                   s.status().ToString().c_str());
      return kExitFailed;
    }
    before = *s;
  }

  RequestGenerator generator(FLAGS_seed, *users, *items, FLAGS_behaviors,
                             FLAGS_candidates, FLAGS_genres);
  Recorder recorder;
  absl::Notification sending_done;
  const Clock::time_point progress_start = Clock::now();
  std::thread progress([&] {
    ReportProgress(recorder, progress_start, sending_done);
  });
  const SendResult send = SendOnSchedule(
      *stubs, generator, recorder, static_cast<int64_t>(total_d), FLAGS_qps);
  recorder.AwaitIdle();
  sending_done.Notify();
  progress.join();

  std::optional<GetStatusResponse> after;
  std::string after_error;
  if (FLAGS_status) {
    absl::StatusOr<GetStatusResponse> s = GetStatus(*(*stubs)[0]);
    if (s.ok()) {
      after = *s;
    } else {
      after_error = std::string(s.status().message());
    }
  }
  const json report = Report(recorder.Take(), send, *users, *items, before,
                             after, after_error);
  PrintReport(report);
  if (!FLAGS_json_out.empty()) {
    const absl::Status written =
        mim::base::WriteFileAtomically(FLAGS_json_out, report.dump(2) + "\n");
    if (!written.ok()) {
      std::fprintf(stderr, "load_test: --json_out: %s\n",
                   written.ToString().c_str());
      return kExitFailed;
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  gflags::SetUsageMessage(
      "load_test --target=HOST:PORT --qps=Q --duration=S --candidates=C "
      "--behaviors=B [--users=LO-HI] [--items=LO-HI] [--deadline_ms=D] "
      "[--seed=S] [--json_out=F]\n  or  load_test --target=HOST:PORT "
      "--mode=upsert_visible --upserts=N --upsert_texts=FILE "
      "[--background_qps=Q]\nOpen-loop Predict load against "
      "//serving:server; see the comment at the top of tools/load_test.cc.");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  if (argc > 1) return Usage(absl::StrCat("unexpected argument '", argv[1], "'"));
  absl::StatusOr<mim::base::ClientSecurity> security =
      mim::base::ClientSecurityFromFlags();
  if (!security.ok()) return Usage(security.status().ToString());
  Security() = *std::move(security);
  return Run();
}
