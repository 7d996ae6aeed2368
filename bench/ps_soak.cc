// ps_soak: a shard under a steady mixed load for a long time (not in CI).
//
//   bench/ps_soak.sh                       (30 min, writes CSV + PNG)
//   bazel run //bench:ps_soak -- --minutes=1 --rate=200   (a short run)
//
// Starts one //ps:server (fresh data_dir under /tmp; or --ps=HOST:PORT with
// --shard_pid for its RSS), creates an ID table (SGD) and a content table,
// then issues Pull, Push and Upsert calls at a fixed total rate (open loop:
// call i of an op is due at start + i / (that op's rate) whatever the
// earlier ones took, so a stall shows as latency instead of hiding as a
// lower rate). Each op has its own --client_threads threads, so a stall of
// one op (pushes waiting on the disk) does not delay the others' calls in
// the client. Latency is measured from the due time (queueing in the client
// included) to the answer. Every --sample_seconds it prints
// one line and appends one CSV row: the shard's RSS (VmRSS of
// /proc/PID/status), calls and errors per op, p50/p99/max latency per op in
// that interval.
//
// At the end: overall p50/p99/p99.9 per op, errors by code, RSS first /
// last / max and its slope over the second half (MB per 10 minutes: a leak
// shows there), and a check of every content row written: each key must
// read back as the row of the highest version the shard acknowledged for
// it (any lost or torn upsert is an error). Exit status 1 if any call
// failed or any row was wrong.
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gflags/gflags.h"
#include "ps/client.h"
#include "tests/process.h"

DEFINE_string(ps, "", "Existing shard address; empty: start //ps:server.");
DEFINE_int32(shard_pid, 0, "With --ps: the shard's pid, for its RSS.");
DEFINE_double(minutes, 30, "How long to run.");
DEFINE_double(rate, 300, "Calls per second, all ops together.");
DEFINE_string(mix, "pull:60,push:30,upsert:10",
              "Share of each op (pull, push, upsert) in the calls.");
DEFINE_int32(batch, 256, "Keys per call.");
DEFINE_uint64(id_keys, 500000, "Key space of the ID table.");
DEFINE_uint64(content_keys, 50000, "Key space of the content table.");
DEFINE_uint32(dim, 64, "Floats per row (both tables).");
DEFINE_int32(client_threads, 4, "Threads issuing the calls, per op.");
DEFINE_double(sample_seconds, 10, "Seconds between RSS/latency samples.");
DEFINE_string(csv, "", "Write the samples here (CSV); empty: none.");
DEFINE_uint64(seed, 1, "Seed of the key and op sequences.");

namespace {

using ::mim::testing::ProcStatusMiB;

using mim::ps::PsClient;

enum Op { kPull = 0, kPush = 1, kUpsert = 2, kNumOps = 3 };
const char* const kOpNames[kNumOps] = {"pull", "push", "upsert"};

[[noreturn]] void Die(const std::string& message) {
  std::fprintf(stderr, "ps_soak: %s\n", message.c_str());
  std::exit(2);
}

// Latencies (microseconds) and error counts of one op in one interval.
struct OpWindow {
  std::vector<double> latencies_us;
  uint64_t errors = 0;
};

// Collects what the client threads measured. Thread-safe.
class Recorder {
 public:
  void Record(Op op, double latency_us, const absl::Status& status) {
    std::lock_guard<std::mutex> lock(mu_);
    window_[op].latencies_us.push_back(latency_us);
    all_[op].push_back(latency_us);
    if (!status.ok()) {
      ++window_[op].errors;
      std::string key = absl::StrCat(
          kOpNames[op], " ", absl::StatusCodeToString(status.code()));
      if (++errors_[key] <= 3) {
        std::fprintf(stderr, "ps_soak: %s failed: %s\n", kOpNames[op],
                     status.ToString().c_str());
      }
    }
  }
  // The interval's windows, and (reset) a fresh start for the next one.
  std::vector<OpWindow> TakeWindow(bool reset = true) {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<OpWindow> out(window_, window_ + kNumOps);
    if (reset) {
      for (OpWindow& w : window_) w = OpWindow();
    }
    return out;
  }
  std::vector<std::vector<double>> All() {
    std::lock_guard<std::mutex> lock(mu_);
    return std::vector<std::vector<double>>(all_, all_ + kNumOps);
  }
  std::map<std::string, uint64_t> Errors() {
    std::lock_guard<std::mutex> lock(mu_);
    return errors_;
  }

 private:
  std::mutex mu_;
  OpWindow window_[kNumOps];
  std::vector<double> all_[kNumOps];
  std::map<std::string, uint64_t> errors_;
};

double Quantile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  size_t i = static_cast<size_t>(q * (v.size() - 1) + 0.5);
  std::nth_element(v.begin(), v.begin() + i, v.end());
  return v[i];
}

// Content row of `key` at `version`: element 0 holds the version (exact in
// a float below 2^24), the rest a pattern of key and version, so a row from
// another key or a torn write shows.
void ContentRow(uint64_t key, uint64_t version, float* row) {
  row[0] = static_cast<float>(version);
  for (uint32_t j = 1; j < FLAGS_dim; ++j) {
    row[j] = static_cast<float>((key * 31 + version * 7 + j) % 1000) / 1000.f;
  }
}

// Integer shares of FLAGS_mix, one per op.
std::vector<int> ParseMix() {
  std::vector<int> share(kNumOps, 0);
  for (absl::string_view part : absl::StrSplit(FLAGS_mix, ',')) {
    std::vector<std::string> kv = absl::StrSplit(part, ':');
    int op = -1;
    for (int i = 0; i < kNumOps; ++i) {
      if (kv.size() == 2 && kv[0] == kOpNames[i]) op = i;
    }
    if (op < 0 || std::atoi(kv[1].c_str()) < 0) {
      Die(absl::StrCat("--mix: '", part,
                       "' is not OP:SHARE with OP pull, push or upsert"));
    }
    share[op] = std::atoi(kv[1].c_str());
  }
  if (share[0] + share[1] + share[2] == 0) Die("--mix: all shares are 0");
  return share;
}

}  // namespace

int main(int argc, char** argv) {
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  if (FLAGS_rate <= 0 || FLAGS_minutes <= 0 || FLAGS_batch <= 0 ||
      FLAGS_client_threads <= 0 || FLAGS_dim < 2 ||
      FLAGS_content_keys < static_cast<uint64_t>(FLAGS_batch) ||
      FLAGS_id_keys < static_cast<uint64_t>(FLAGS_batch)) {
    Die("--rate, --minutes, --batch, --client_threads must be > 0, --dim "
        ">= 2, and both key spaces at least --batch");
  }
  const std::vector<int> share = ParseMix();

  std::unique_ptr<mim::testing::ShardProcess> shard;
  std::string address = FLAGS_ps;
  pid_t pid = FLAGS_shard_pid;
  std::string data_dir;
  if (address.empty()) {
    // Under `bazel run` the server sits in this binary's runfiles.
    const std::string runfiles = absl::StrCat(argv[0], ".runfiles");
    if (std::getenv("TEST_SRCDIR") == nullptr) {
      setenv("TEST_SRCDIR", runfiles.c_str(), 1);
    }
    char tmpl[] = "/tmp/ps_soak.XXXXXX";
    if (mkdtemp(tmpl) == nullptr) Die("mkdtemp failed");
    data_dir = tmpl;
    mim::testing::ShardProcess::Flags flags;
    flags.data_dir = data_dir + "/shard";
    flags.extra = {"--threads=8"};
    auto started = mim::testing::ShardProcess::Start(flags);
    if (!started.ok()) Die(started.status().ToString());
    shard = std::move(*started);
    address = shard->address();
    pid = shard->pid();
  }

  PsClient::Options options;
  options.timeout = absl::Seconds(5);
  options.channels_per_shard = 2;
  auto client = PsClient::Create({address}, options);
  if (!client.ok()) Die(client.status().ToString());

  mim::ps::TableConfig id;
  id.set_name("soak_id");
  id.set_kind(mim::ps::ID);
  id.set_dim(FLAGS_dim);
  id.mutable_optimizer()->set_name("sgd");
  id.mutable_optimizer()->set_learning_rate(0.01f);
  id.mutable_initializer()->set_name("uniform");
  id.mutable_initializer()->set_scale(0.01f);
  mim::ps::TableConfig content;
  content.set_name("soak_content");
  content.set_kind(mim::ps::CONTENT);
  content.set_dim(FLAGS_dim);
  for (const auto* config : {&id, &content}) {
    absl::Status s = (*client)->CreateTable(*config, /*if_not_exists=*/true);
    if (!s.ok()) Die(s.ToString());
  }

  std::printf(
      "ps_soak: shard %s (pid %d), %.0f calls/s (%s) of %d keys x %u floats, "
      "%d client threads per op, %.1f min\n",
      address.c_str(), static_cast<int>(pid), FLAGS_rate, FLAGS_mix.c_str(),
      FLAGS_batch, FLAGS_dim, FLAGS_client_threads, FLAGS_minutes);
  std::fflush(stdout);

  std::FILE* csv = nullptr;
  if (!FLAGS_csv.empty()) {
    csv = std::fopen(FLAGS_csv.c_str(), "w");
    if (csv == nullptr) Die(absl::StrCat("cannot write --csv ", FLAGS_csv));
    std::fprintf(csv, "seconds,rss_mb");
    for (const char* op : kOpNames) {
      std::fprintf(csv, ",%s_calls,%s_errors,%s_p50_ms,%s_p99_ms,%s_max_ms",
                   op, op, op, op, op);
    }
    std::fprintf(csv, "\n");
  }

  // Highest acknowledged version per content key (0: never written).
  std::vector<std::atomic<uint64_t>> acked(FLAGS_content_keys);
  for (auto& a : acked) a.store(0);
  std::atomic<uint64_t> next_version{1};

  Recorder recorder;
  const absl::Time start = absl::Now();
  const int share_sum = share[0] + share[1] + share[2];
  uint64_t total[kNumOps];
  absl::Duration period[kNumOps];
  std::atomic<uint64_t> next_call[kNumOps];
  for (int op = 0; op < kNumOps; ++op) {
    const double rate = FLAGS_rate * share[op] / share_sum;
    total[op] = static_cast<uint64_t>(FLAGS_minutes * 60.0 * rate);
    period[op] = rate > 0 ? absl::Seconds(1.0 / rate) : absl::ZeroDuration();
    next_call[op].store(0);
  }
  std::atomic<int> running{0};

  auto worker = [&](Op op, int thread) {
    std::mt19937_64 rng(FLAGS_seed * 1000003 + thread);
    std::vector<uint64_t> keys(FLAGS_batch);
    std::vector<float> values(static_cast<size_t>(FLAGS_batch) * FLAGS_dim);
    for (;;) {
      const uint64_t i = next_call[op].fetch_add(1);
      if (i >= total[op]) {
        --running;
        return;
      }
      const absl::Time due = start + period[op] * static_cast<double>(i);
      absl::SleepFor(due - absl::Now());
      absl::Status status;
      if (op == kUpsert) {
        // Distinct keys, so one call's rows all carry its version.
        std::uniform_int_distribution<uint64_t> pick_key(
            0, FLAGS_content_keys - 1);
        for (int k = 0; k < FLAGS_batch; ++k) {
          uint64_t key;
          do {
            key = pick_key(rng);
          } while (std::find(keys.begin(), keys.begin() + k, key) !=
                   keys.begin() + k);
          keys[k] = key;
        }
        const uint64_t version = next_version.fetch_add(1);
        for (int k = 0; k < FLAGS_batch; ++k) {
          ContentRow(keys[k], version, &values[k * FLAGS_dim]);
        }
        auto r = (*client)->Upsert("soak_content", keys, values, version);
        status = r.status();
        if (r.ok()) {
          for (uint64_t key : keys) {
            uint64_t seen = acked[key].load();
            while (seen < version &&
                   !acked[key].compare_exchange_weak(seen, version)) {
            }
          }
        }
      } else {
        std::uniform_int_distribution<uint64_t> pick_key(0, FLAGS_id_keys - 1);
        for (uint64_t& key : keys) key = pick_key(rng);
        if (op == kPull) {
          status = (*client)->PullInto("soak_id", keys, absl::MakeSpan(values),
                                       nullptr);
        } else {
          std::uniform_real_distribution<float> grad(-1e-3f, 1e-3f);
          for (float& g : values) g = grad(rng);
          status = (*client)->Push("soak_id", keys, values).status();
        }
      }
      recorder.Record(op, absl::ToDoubleMicroseconds(absl::Now() - due),
                      status);
    }
  };
  std::vector<std::thread> threads;
  for (int op = 0; op < kNumOps; ++op) {
    if (total[op] == 0) continue;
    for (int t = 0; t < FLAGS_client_threads; ++t) {
      ++running;
      threads.emplace_back(worker, static_cast<Op>(op),
                           op * FLAGS_client_threads + t);
    }
  }

  // Sampling on this thread until the calls are done.
  struct Sample {
    double seconds, rss_mb;
  };
  std::vector<Sample> samples;
  auto take_sample = [&](double seconds) {
    const double rss = ProcStatusMiB(pid, "VmRSS");
    samples.push_back({seconds, rss});
    std::vector<OpWindow> w = recorder.TakeWindow();
    std::string line = absl::StrFormat("t=%6.0fs rss=%7.1f MB", seconds, rss);
    if (csv != nullptr) std::fprintf(csv, "%.1f,%.2f", seconds, rss);
    for (int op = 0; op < kNumOps; ++op) {
      const double p50 = Quantile(w[op].latencies_us, 0.5) / 1000;
      const double p99 = Quantile(w[op].latencies_us, 0.99) / 1000;
      const double max = Quantile(w[op].latencies_us, 1.0) / 1000;
      absl::StrAppendFormat(&line, " | %s %5zu calls %3" PRIu64
                            " err p50 %6.2f p99 %7.2f ms",
                            kOpNames[op], w[op].latencies_us.size(),
                            w[op].errors, p50, p99);
      if (csv != nullptr) {
        std::fprintf(csv, ",%zu,%" PRIu64 ",%.3f,%.3f,%.3f",
                     w[op].latencies_us.size(), w[op].errors, p50, p99, max);
      }
    }
    if (csv != nullptr) {
      std::fprintf(csv, "\n");
      std::fflush(csv);
    }
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
  };
  const absl::Duration every = absl::Seconds(FLAGS_sample_seconds);
  for (int n = 1;; ++n) {
    const absl::Time at = start + every * n;
    bool done = false;
    while (absl::Now() < at) {
      if (running.load() == 0) {
        done = true;
        break;
      }
      absl::SleepFor(std::min(absl::Milliseconds(200), at - absl::Now()));
    }
    if (done) break;
    take_sample(absl::ToDoubleSeconds(absl::Now() - start));
  }
  for (std::thread& t : threads) t.join();
  // The calls answered since the last sample, if any.
  bool pending = false;
  for (const OpWindow& w : recorder.TakeWindow(/*reset=*/false)) {
    pending = pending || !w.latencies_us.empty();
  }
  if (pending) take_sample(absl::ToDoubleSeconds(absl::Now() - start));
  const double elapsed = absl::ToDoubleSeconds(absl::Now() - start);

  // Every content row must read back at its highest acknowledged version.
  uint64_t checked = 0, wrong = 0;
  std::vector<float> expect(FLAGS_dim);
  for (uint64_t first = 0; first < FLAGS_content_keys; first += 4096) {
    std::vector<uint64_t> keys;
    for (uint64_t k = first; k < std::min<uint64_t>(first + 4096,
                                                    FLAGS_content_keys);
         ++k) {
      if (acked[k].load() > 0) keys.push_back(k);
    }
    if (keys.empty()) continue;
    auto r = (*client)->Pull("soak_content", keys);
    if (!r.ok()) Die(absl::StrCat("final check: ", r.status().ToString()));
    for (size_t i = 0; i < keys.size(); ++i) {
      ContentRow(keys[i], acked[keys[i]].load(), expect.data());
      ++checked;
      if (!std::equal(expect.begin(), expect.end(),
                      r->values.begin() + i * FLAGS_dim)) {
        if (++wrong <= 3) {
          std::fprintf(stderr,
                       "ps_soak: content key %" PRIu64
                       " reads version %.0f, acknowledged %" PRIu64 "\n",
                       keys[i], r->values[i * FLAGS_dim],
                       acked[keys[i]].load());
        }
      }
    }
  }

  uint64_t done = 0;
  for (int op = 0; op < kNumOps; ++op) {
    done += std::min(next_call[op].load(), total[op]);
  }
  std::printf("\nsummary after %.1f s (%.0f calls/s asked, %.0f done):\n",
              elapsed, FLAGS_rate, static_cast<double>(done) / elapsed);
  const auto all = recorder.All();
  uint64_t errors = 0;
  for (int op = 0; op < kNumOps; ++op) {
    std::printf("  %-6s %8zu calls  p50 %7.2f ms  p99 %7.2f ms  p99.9 %7.2f "
                "ms  max %8.2f ms\n",
                kOpNames[op], all[op].size(), Quantile(all[op], 0.5) / 1000,
                Quantile(all[op], 0.99) / 1000,
                Quantile(all[op], 0.999) / 1000,
                Quantile(all[op], 1.0) / 1000);
  }
  for (const auto& [what, count] : recorder.Errors()) {
    std::printf("  errors: %s x %" PRIu64 "\n", what.c_str(), count);
    errors += count;
  }
  if (errors == 0) std::printf("  errors: none\n");
  double max_rss = 0;
  for (const Sample& s : samples) max_rss = std::max(max_rss, s.rss_mb);
  // Least-squares slope of RSS over the second half of the run.
  double sx = 0, sy = 0, sxx = 0, sxy = 0;
  int n = 0;
  for (const Sample& s : samples) {
    if (s.seconds < elapsed / 2) continue;
    sx += s.seconds, sy += s.rss_mb, sxx += s.seconds * s.seconds,
        sxy += s.seconds * s.rss_mb, ++n;
  }
  const double denominator = n * sxx - sx * sx;
  const double slope =
      n >= 2 && denominator > 0 ? (n * sxy - sx * sy) / denominator : 0;
  std::printf("  shard RSS: first %.1f MB, last %.1f MB, max %.1f MB; "
              "second-half slope %+.2f MB per 10 min\n",
              samples.empty() ? 0 : samples.front().rss_mb,
              samples.empty() ? 0 : samples.back().rss_mb, max_rss,
              slope * 600);
  std::printf("  content rows checked: %" PRIu64 ", wrong: %" PRIu64 "\n",
              checked, wrong);
  if (csv != nullptr) std::fclose(csv);
  shard.reset();
  if (!data_dir.empty()) {
    std::string cmd = absl::StrCat("rm -rf '", data_dir, "'");
    if (std::system(cmd.c_str()) != 0) {
      std::fprintf(stderr, "ps_soak: could not remove %s\n", data_dir.c_str());
    }
  }
  return errors == 0 && wrong == 0 ? 0 : 1;
}
