// ps_memory: how much memory a shard takes under the largest calls it
// accepts, and under calls it refuses (not in CI; memory, not time).
//
//   bazel run //bench:ps_memory                 (~1 min)
//   bazel run //bench:ps_memory -- --concurrency=1,4,16 --rounds=3
//
// For each scenario and each concurrency level it starts a fresh
// //ps:server with its default limits (64 MiB messages, 65,536 keys per
// call, 512 MiB in flight, 1 GiB gRPC quota), notes its RSS, then has N
// client threads send --rounds calls each at once, and reports the shard's
// peak RSS (VmHWM of /proc/PID/status), its RSS after the calls, and how
// the calls ended:
//   push-64MiB   Push of 65,536 distinct keys x 240 floats (62.9 MB, just
//                under the message limit; PsClient sends it as one call)
//   pull-64MiB   Pull of 65,536 keys x 240 floats (62.9 MB answers)
//   push-200MiB  a raw 200 MiB PushRequest (over the limit: refused by
//                gRPC before any handler runs)
// The figure to compare: before the limits (issue 10), four concurrent
// near-limit requests took a shard from 28 MB to 1.9 GB.
#include <sys/types.h>

#include <atomic>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gflags/gflags.h"
#include "grpcpp/grpcpp.h"
#include "proto/ps.grpc.pb.h"
#include "ps/client.h"
#include "tests/process.h"

DEFINE_string(concurrency, "1,4,16", "Client threads sending at once.");
DEFINE_int32(rounds, 2, "Calls per thread per scenario.");
DEFINE_string(scenarios, "push-64MiB,pull-64MiB,push-200MiB",
              "Which scenarios to run.");
DEFINE_string(ps, "",
              "An existing shard (HOST:PORT) instead of a fresh one per case, "
              "e.g. one started under heaptrack; pass --shard_pid for RSS.");
DEFINE_int32(shard_pid, 0, "With --ps: the shard's pid.");
DEFINE_double(idle_seconds, 12,
              "How long after the calls the 'idle' RSS is read (allocators "
              "return freed memory lazily: jemalloc after ~10 s).");
DEFINE_int32(client_max_message_mb, 0,
             "PsClient's max_message_bytes in MiB (0: its default); set it "
             "with a shard's --max_message_mb.");
DEFINE_string(shard_flags, "",
              "More flags for the started shards, space-separated, e.g. "
              "'--max_message_mb=16 --grpc_memory_mb=256'.");

namespace {

using ::mim::testing::ProcStatusMiB;

constexpr uint32_t kDim = 240;
constexpr size_t kKeys = 65536;

[[noreturn]] void Die(const std::string& message) {
  std::fprintf(stderr, "ps_memory: %s\n", message.c_str());
  std::exit(2);
}

std::vector<int> ParseInts(const std::string& flag) {
  std::vector<int> out;
  for (absl::string_view part : absl::StrSplit(flag, ',')) {
    int v;
    if (!absl::SimpleAtoi(part, &v) || v < 1) {
      Die(absl::StrCat("not a positive number: '", part, "'"));
    }
    out.push_back(v);
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  if (std::getenv("TEST_SRCDIR") == nullptr) {
    setenv("TEST_SRCDIR", absl::StrCat(argv[0], ".runfiles").c_str(), 1);
  }
  char tmpl[] = "/tmp/ps_memory.XXXXXX";
  if (mkdtemp(tmpl) == nullptr) Die("mkdtemp failed");
  const std::string root = tmpl;

  std::printf("%-12s %5s | %9s %9s %9s %9s | %s\n", "scenario", "calls",
              "start MB", "peak MB", "after MB", "idle MB", "outcomes");
  int run = 0;
  for (absl::string_view scenario : absl::StrSplit(FLAGS_scenarios, ',')) {
    for (int threads : ParseInts(FLAGS_concurrency)) {
      std::unique_ptr<mim::testing::ShardProcess> started;
      std::string address = FLAGS_ps;
      pid_t pid = FLAGS_shard_pid;
      if (address.empty()) {
        mim::testing::ShardProcess::Flags flags;
        flags.data_dir = absl::StrCat(root, "/run", run++);
        flags.extra = {"--threads=16"};
        for (absl::string_view f :
             absl::StrSplit(FLAGS_shard_flags, ' ', absl::SkipEmpty())) {
          flags.extra.emplace_back(f);
        }
        auto shard = mim::testing::ShardProcess::Start(flags);
        if (!shard.ok()) Die(shard.status().ToString());
        started = std::move(*shard);
        address = started->address();
        pid = started->pid();
      }

      mim::ps::PsClient::Options options;
      options.timeout = absl::Seconds(120);
      options.max_attempts = 1;  // count refusals, do not hide them
      if (FLAGS_client_max_message_mb > 0) {
        options.max_message_bytes = FLAGS_client_max_message_mb << 20;
      }
      auto client = mim::ps::PsClient::Create({address}, options);
      if (!client.ok()) Die(client.status().ToString());
      mim::ps::TableConfig table;
      table.set_name("t");
      table.set_kind(mim::ps::ID);
      table.set_dim(kDim);
      table.mutable_optimizer()->set_name("sgd");
      table.mutable_initializer()->set_name("zeros");
      if (absl::Status s = (*client)->CreateTable(table, true); !s.ok()) {
        Die(s.ToString());
      }
      const double start_mb = ProcStatusMiB(pid, "VmRSS");

      std::mutex mu;
      std::map<std::string, int> outcomes;
      auto count = [&](const std::string& what) {
        std::lock_guard<std::mutex> lock(mu);
        ++outcomes[what];
      };
      std::vector<std::thread> workers;
      for (int t = 0; t < threads; ++t) {
        workers.emplace_back([&, t] {
          std::vector<uint64_t> keys(kKeys);
          for (size_t i = 0; i < kKeys; ++i) keys[i] = t * kKeys + i + 1;
          std::vector<float> rows(kKeys * kDim, 1e-3f);
          // One channel per thread, as separate clients would have.
          grpc::ChannelArguments args;
          args.SetMaxSendMessageSize(-1);
          args.SetMaxReceiveMessageSize(-1);
          args.SetInt("mim.bench.thread", t);  // no channel sharing
          auto stub = mim::ps::ParameterServer::NewStub(
              grpc::CreateCustomChannel(address,
                                        grpc::InsecureChannelCredentials(),
                                        args));
          for (int r = 0; r < FLAGS_rounds; ++r) {
            absl::Status s;
            if (scenario == "push-64MiB") {
              s = (*client)->Push("t", keys, rows).status();
            } else if (scenario == "pull-64MiB") {
              s = (*client)->PullInto("t", keys, absl::MakeSpan(rows),
                                      nullptr);
            } else if (scenario == "push-200MiB") {
              mim::ps::PushRequest req;
              req.set_table("t");
              req.mutable_gradients()->assign(size_t{200} << 20, '\0');
              mim::ps::PushResponse resp;
              grpc::ClientContext context;
              grpc::Status g = stub->Push(&context, req, &resp);
              s = absl::Status(static_cast<absl::StatusCode>(g.error_code()),
                               g.error_message());
            } else {
              Die(absl::StrCat("unknown scenario '", scenario, "'"));
            }
            count(s.ok() ? "OK" : absl::StatusCodeToString(s.code()));
          }
        });
      }
      for (std::thread& w : workers) w.join();
      std::string outcome_text;
      for (const auto& [what, n] : outcomes) {
        absl::StrAppend(&outcome_text, outcome_text.empty() ? "" : ", ", what,
                        " x", n);
      }
      const double peak_mb = ProcStatusMiB(pid, "VmHWM");
      const double after_mb = ProcStatusMiB(pid, "VmRSS");
      absl::SleepFor(absl::Seconds(FLAGS_idle_seconds));
      std::printf("%-12s %2dx%-2d | %9.1f %9.1f %9.1f %9.1f | %s\n",
                  std::string(scenario).c_str(), threads, FLAGS_rounds,
                  start_mb, peak_mb, after_mb, ProcStatusMiB(pid, "VmRSS"),
                  outcome_text.c_str());
      std::fflush(stdout);
    }
  }
  const std::string cmd = absl::StrCat("rm -rf '", root, "'");
  if (std::system(cmd.c_str()) != 0) Die("could not remove " + root);
  return 0;
}
