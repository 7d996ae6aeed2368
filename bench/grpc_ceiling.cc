// grpc_ceiling: how many keys/s gRPC itself can carry for a Pull on this
// machine, with the shard's server setup and ps_bench's call pattern, so
// that mim's Pull can be stated as a fraction of it (issue 13: "where
// gRPC itself sets the limit, show the measurement that says so").
//
//   bazel build -c opt //bench:grpc_ceiling
//   bazel-bin/bench/grpc_ceiling                  (~1-2 min)
//   bazel-bin/bench/grpc_ceiling --quick          (smoke, seconds)
//
// The server (this binary with --serve, started by the bench as its own
// process on loopback) is set up as //ps:server is: base::StartServer
// (the connection flags, no SO_REUSEPORT, the shard's default message
// limit and gRPC memory quota), the generated ParameterServer callback
// service with the raw callback Pull the shard registers, on the same
// method name. Its Pull does no work beyond the transport: the answer to
// a request of N keys is one PullResponse (dim 64, N x 256 bytes of rows)
// built at start for each batch size and handed to gRPC by reference
// (a grpc::ByteBuffer copy shares its slice) for every call; the request
// is not parsed, only its length picks the answer. With
// --server_executor_threads=T it first hops to a base::Executor of T
// threads, as the shard does, so the hop's cost can be seen on its own.
//
// The client calls it the way bench/ps_bench measures PsClient::PullInto:
// 1 and 2 client threads (one channel each), one request in flight per
// thread, batches of distinct random keys walked from a fixed pool, a
// warm-up, --reps reps of --rep_seconds per mode, the modes alternating
// within each rep, min/median/max keys/s. Modes:
//   grpc      a generic (ByteBuffer) unary call on a completion queue the
//             thread reuses; the request is a PullRequest written per call
//             into one slice (the keys copied once); the reply's rows are
//             read in place: --sample_rows of them compared with the
//             expected bytes. The cheapest Pull gRPC allows.
//   copy      as grpc, and every row copied into the caller's buffer, as
//             any Pull API that fills a caller buffer must.
//   psclient  PsClient::PullInto against the same server: mim's client
//             cost on top of the transport, with a server that does
//             nothing (--sample_rows of every answer checked).
// Every mode also checks one whole reply before each rep. Printed per mode:
// keys/s, the server process's CPU per key (/proc/<pid>/stat) and this
// process's (getrusage), and the rows' bytes per second at the median.
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "base/executor.h"
#include "base/server_connections.h"
#include "bench/bench_util.h"
#include "gflags/gflags.h"
#include "google/protobuf/io/coded_stream.h"
#include "grpcpp/channel.h"
#include "grpcpp/completion_queue.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/channel_arguments.h"
#include "grpcpp/support/slice.h"
#include "proto/ps.grpc.pb.h"
#include "ps/client.h"
#include "ps/limits.h"

DEFINE_bool(serve, false,
            "Run as the server (the bench starts itself with this).");
DEFINE_string(host, "127.0.0.1", "--serve: address to listen on.");
DEFINE_int32(port, 0, "--serve: TCP port (0: a free one, printed).");
DEFINE_int32(server_executor_threads, 0,
             "Server: hop each call to a base::Executor of this many "
             "threads before answering, as the shard does (0: answer on "
             "gRPC's callback thread).");
DEFINE_string(batches, "256,1024,4096,16384", "Batch sizes (keys per call).");
DEFINE_string(threads, "1,2", "Client thread counts.");
DEFINE_string(modes, "grpc,copy,psclient", "Client modes (see the file).");
DEFINE_uint32(dim, 64, "Floats per row (the answer has batch x dim).");
DEFINE_uint64(pool_keys, 2000000, "Keys in the pool of each batch size.");
DEFINE_int32(reps, 5, "Timed reps per (threads, batch); modes alternate.");
DEFINE_double(rep_seconds, 0.4, "Length of one rep of one mode.");
DEFINE_int32(warmup_calls, 20, "Untimed calls per thread and mode.");
DEFINE_int32(sample_rows, 4, "Rows of every timed reply checked.");
DEFINE_bool(quick, false,
            "Smoke run: batches 256,1024, 1 thread, pool 200k, 2 short reps.");

namespace {

using mim::bench::ExpectedRow;
using mim::bench::Mix;
using mim::bench::ProcUsage;
using mim::bench::SelfUsage;

constexpr char kPullMethod[] = "/mim.ps.ParameterServer/Pull";
constexpr char kTable[] = "bench";

std::vector<pid_t> g_children;

[[noreturn]] void Die(const std::string& message) {
  std::fprintf(stderr, "grpc_ceiling: %s\n", message.c_str());
  for (pid_t pid : g_children) {
    kill(pid, SIGTERM);
    waitpid(pid, nullptr, 0);
  }
  std::exit(1);
}

std::vector<int> ParseList(const std::string& flag, const std::string& text) {
  std::vector<int> out;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    int v = 0;
    if (!absl::SimpleAtoi(part, &v) || v < 1) {
      Die(absl::StrCat("--", flag, " must be positive integers separated by "
                       "commas, got '", text, "'"));
    }
    out.push_back(v);
  }
  if (out.empty()) Die(absl::StrCat("--", flag, " is empty"));
  return out;
}

size_t VarintSize(uint64_t v) {
  return google::protobuf::io::CodedOutputStream::VarintSize64(v);
}

char* PutVarint(uint64_t v, char* p) {
  return reinterpret_cast<char*>(
      google::protobuf::io::CodedOutputStream::WriteVarint64ToArray(
          v, reinterpret_cast<uint8_t*>(p)));
}

// Bytes of the PullRequest {table: kTable, keys: n packed fixed64} that
// both the raw client and PsClient send.
size_t RequestBytes(size_t n) {
  const size_t table = sizeof(kTable) - 1;
  return 1 + VarintSize(table) + table + 1 + VarintSize(8 * n) + 8 * n;
}

// The PullResponse the server answers `n` keys with: dim, then the rows.
// `header` gets the bytes before the rows.
grpc::ByteBuffer BuildAnswer(size_t n, uint32_t dim, size_t* header) {
  const size_t row_bytes = sizeof(float) * dim;
  const size_t values = n * row_bytes;
  *header = 1 + VarintSize(dim) + 1 + VarintSize(values);
  grpc::Slice slice(grpc_slice_malloc_large(*header + values),
                    grpc::Slice::STEAL_REF);
  char* p = reinterpret_cast<char*>(const_cast<uint8_t*>(slice.begin()));
  *p++ = 0x08;  // field 1, varint: dim
  p = PutVarint(dim, p);
  *p++ = 0x12;  // field 2, length-delimited: values
  p = PutVarint(values, p);
  for (size_t i = 0; i < n; ++i) {
    ExpectedRow(i, dim, reinterpret_cast<float*>(p + i * row_bytes));
  }
  return grpc::ByteBuffer(&slice, 1);
}

// ---------------------------------------------------------------- server

// The shard's generated service with its raw callback Pull; every other
// method is the generated UNIMPLEMENTED. Answers are built before the
// server starts and only read after.
//
// Thread-safety: safe for concurrent access.
class CeilingService final
    : public mim::ps::ParameterServer::WithRawCallbackMethod_Pull<
          mim::ps::ParameterServer::CallbackService> {
 public:
  CeilingService(const std::vector<int>& batches, uint32_t dim,
                 mim::base::Executor* executor)
      : executor_(executor) {
    for (int n : batches) {
      size_t header = 0;
      answers_.emplace(RequestBytes(n), BuildAnswer(n, dim, &header));
      expected_.push_back(absl::StrCat(RequestBytes(n), " (", n, " keys)"));
    }
  }

  grpc::ServerUnaryReactor* Pull(grpc::CallbackServerContext* context,
                                 const grpc::ByteBuffer* request,
                                 grpc::ByteBuffer* response) override {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    const size_t length = request->Length();
    auto answer = [this, reactor, response, length] {
      const auto it = answers_.find(length);
      if (it == answers_.end()) {
        reactor->Finish(grpc::Status(
            grpc::StatusCode::INVALID_ARGUMENT,
            absl::StrCat("Pull request of ", length,
                         " bytes matches no batch size of this server; "
                         "expected one of ",
                         absl::StrJoin(expected_, ", "),
                         " bytes (start it with the client's --batches)")));
        return;
      }
      *response = it->second;  // shares the slice: no bytes copied
      reactor->Finish(grpc::Status::OK);
    };
    if (executor_ == nullptr) {
      answer();
      return reactor;
    }
    absl::Status queued = executor_->Submit(
        absl::InfiniteFuture(),
        [answer, reactor](const absl::Status& admitted) {
          if (admitted.ok()) {
            answer();
          } else {
            reactor->Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                                         std::string(admitted.message())));
          }
        });
    if (!queued.ok()) {
      reactor->Finish(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                                   std::string(queued.message())));
    }
    return reactor;
  }

 private:
  mim::base::Executor* const executor_;
  std::map<size_t, grpc::ByteBuffer> answers_;  // by request bytes
  std::vector<std::string> expected_;
};

int Serve(const std::vector<int>& batches) {
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  std::unique_ptr<mim::base::Executor> executor;
  if (FLAGS_server_executor_threads > 0) {
    executor = std::make_unique<mim::base::Executor>(
        FLAGS_server_executor_threads, 4096, "grpc_ceiling");
  }
  CeilingService service(batches, FLAGS_dim, executor.get());
  mim::base::ServerSpec spec;
  spec.address = absl::StrCat(FLAGS_host, ":", FLAGS_port);
  spec.credentials = grpc::InsecureServerCredentials();
  spec.services = {&service};
  spec.max_message_bytes = mim::ps::kDefaultMaxMessageBytes;
  spec.memory_bytes = mim::ps::kDefaultGrpcMemoryBytes;
  spec.quota_name = "grpc_ceiling";
  absl::StatusOr<mim::base::StartedServer> started =
      mim::base::StartServer(std::move(spec));
  if (!started.ok()) Die(started.status().ToString());
  std::printf("grpc_ceiling listening on %s:%d\n", FLAGS_host.c_str(),
              started->port);
  std::fflush(stdout);
  grpc::Server* server = started->server.get();
  std::thread waiter([server, &signals] {
    int signal = 0;
    sigwait(&signals, &signal);
    server->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(2)));
  });
  server->Wait();
  waiter.join();
  started->server.reset();
  executor.reset();
  return 0;
}

// ---------------------------------------------------------------- client

struct Child {
  pid_t pid = 0;
  std::string address;
};

// Starts this binary with --serve and the same batches and dim; returns
// once it prints its address.
Child StartServer() {
  char self[PATH_MAX];
  const ssize_t len = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (len <= 0) Die("cannot read /proc/self/exe");
  self[len] = '\0';
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) Die("pipe failed");
  const std::vector<std::string> argv = {
      self,
      "--serve",
      absl::StrCat("--batches=", FLAGS_batches),
      absl::StrCat("--dim=", FLAGS_dim),
      absl::StrCat("--server_executor_threads=",
                   FLAGS_server_executor_threads)};
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[1], 1);
  Child child;
  const int rc =
      posix_spawn(&child.pid, self, &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  close(fds[1]);
  if (rc != 0) Die(absl::StrCat("cannot start the server: ", strerror(rc)));
  g_children.push_back(child.pid);
  std::string out;
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (out.find('\n') == std::string::npos) {
    pollfd p = {fds[0], POLLIN, 0};
    const int64_t left = absl::ToInt64Milliseconds(deadline - absl::Now());
    char buf[512];
    const ssize_t n = (left > 0 && poll(&p, 1, static_cast<int>(left)) > 0)
                          ? read(fds[0], buf, sizeof(buf))
                          : 0;
    if (n <= 0) Die(absl::StrCat("the server did not start: '", out, "'"));
    out.append(buf, static_cast<size_t>(n));
  }
  close(fds[0]);
  const size_t at = out.find("listening on ");
  if (at == std::string::npos) Die(absl::StrCat("server said: ", out));
  child.address = out.substr(at + 13, out.find('\n') - at - 13);
  return child;
}

ProcUsage UsageOf(pid_t pid) {
  absl::StatusOr<ProcUsage> u = mim::bench::UsageOf(pid);
  if (!u.ok()) Die(std::string(u.status().message()));
  return *u;
}

// The rows of one answer in its received slices, read in place. Not
// thread-safe; one per client thread.
class AnswerReader {
 public:
  // Takes the slices of `reply` (references, no copy) and checks its
  // header: dim `dim` and n rows. Die on anything else.
  void Read(const grpc::ByteBuffer& reply, size_t n, uint32_t dim) {
    if (!reply.Dump(&slices_).ok()) Die("cannot read the reply's slices");
    uint8_t header[16];
    const size_t want = 1 + VarintSize(dim) + 1 +
                        VarintSize(n * sizeof(float) * dim);
    values_offset_ = 0;
    CopyOut(0, want, header);
    uint8_t expected[16];
    char* end = reinterpret_cast<char*>(expected);
    *end++ = 0x08;
    end = PutVarint(dim, end);
    *end++ = 0x12;
    end = PutVarint(n * sizeof(float) * dim, end);
    if (std::memcmp(header, expected, want) != 0 ||
        reply.Length() != want + n * sizeof(float) * dim) {
      Die(absl::StrCat("reply of ", reply.Length(), " bytes is not dim ", dim,
                       " and ", n, " rows"));
    }
    values_offset_ = want;
  }
  // Copies `bytes` bytes from byte `offset` of the rows to `out`.
  void CopyValues(size_t offset, size_t bytes, void* out) const {
    CopyOut(values_offset_ + offset, bytes, out);
  }

 private:
  void CopyOut(size_t offset, size_t bytes, void* out) const {
    char* dst = static_cast<char*>(out);
    for (const grpc::Slice& s : slices_) {
      if (bytes == 0) return;
      if (offset >= s.size()) {
        offset -= s.size();
        continue;
      }
      const size_t take = std::min(bytes, s.size() - offset);
      std::memcpy(dst, s.begin() + offset, take);
      dst += take;
      bytes -= take;
      offset = 0;
    }
    if (bytes != 0) Die("reply shorter than its header says");
  }

  std::vector<grpc::Slice> slices_;
  size_t values_offset_ = 0;
};

// Compares rows `rows` (n x dim, from wherever `row_at` reads row i) with
// ExpectedRow at `sample` positions (all when sample <= 0).
template <typename RowAt>
void CheckRows(const char* mode, size_t n, uint32_t dim, int sample,
               uint64_t salt, const RowAt& row_at) {
  float expected[4096], got[4096];
  const size_t count = sample <= 0 ? n : std::min<size_t>(n, sample);
  for (size_t c = 0; c < count; ++c) {
    const size_t i = sample <= 0 ? c : (salt * 7919 + c * 104729) % n;
    ExpectedRow(i, dim, expected);
    row_at(i, got);
    if (std::memcmp(expected, got, sizeof(float) * dim) != 0) {
      Die(absl::StrCat(mode, ": row ", i, " of ", n, " is wrong: first value ",
                       got[0], ", expected ", expected[0]));
    }
  }
}

// One client thread's raw gRPC connection: a channel with PsClient's
// message limits and its own subchannel, a generic stub, and a completion
// queue reused by every call. Not thread-safe.
class RawClient {
 public:
  explicit RawClient(const std::string& address) {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(
        static_cast<int>(mim::ps::kDefaultMaxMessageBytes));
    args.SetMaxSendMessageSize(
        static_cast<int>(mim::ps::kDefaultMaxMessageBytes));
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    channel_ = grpc::CreateCustomChannel(
        address, grpc::InsecureChannelCredentials(), args);
    stub_ = std::make_unique<grpc::GenericStub>(channel_);
  }

  // One Pull of `keys`: the request written into one slice, the answer
  // left in `reply`.
  void Pull(const uint64_t* keys, size_t n, grpc::ByteBuffer* reply) {
    const size_t table = sizeof(kTable) - 1;
    grpc::Slice slice(grpc_slice_malloc_large(RequestBytes(n)),
                      grpc::Slice::STEAL_REF);
    char* p = reinterpret_cast<char*>(const_cast<uint8_t*>(slice.begin()));
    *p++ = 0x0a;  // field 1: table
    p = PutVarint(table, p);
    std::memcpy(p, kTable, table);
    p += table;
    *p++ = 0x12;  // field 2: packed fixed64 keys (little-endian)
    p = PutVarint(8 * n, p);
    std::memcpy(p, keys, 8 * n);
    grpc::ByteBuffer request(&slice, 1);
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
    grpc::Status status;
    auto call = stub_->PrepareUnaryCall(&context, kPullMethod, request, &cq_);
    call->StartCall();
    call->Finish(reply, &status, this);
    void* tag = nullptr;
    bool ok = false;
    if (!cq_.Next(&tag, &ok) || tag != this || !ok) {
      Die("completion queue failed");
    }
    if (!status.ok()) {
      Die(absl::StrCat("Pull of ", n, " keys: ", status.error_message()));
    }
  }

  ~RawClient() {
    cq_.Shutdown();
    void* tag = nullptr;
    bool ok = false;
    while (cq_.Next(&tag, &ok)) {
    }
  }

 private:
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<grpc::GenericStub> stub_;
  grpc::CompletionQueue cq_;
};

// What one mode did over the timed reps of one (threads, batch).
struct Series {
  std::vector<double> keys_per_second;
  uint64_t keys = 0;
  double server_cpu = 0;
  double client_cpu = 0;
};

template <typename Call>
void Rep(int threads, double seconds, size_t batches, pid_t server,
         std::vector<size_t>* cursor, size_t batch, Series* series,
         const Call& call) {
  std::atomic<bool> stop{false};
  std::vector<uint64_t> calls(threads, 0);
  std::vector<std::thread> workers;
  const ProcUsage server_before = UsageOf(server);
  const ProcUsage client_before = SelfUsage();
  const absl::Time start = absl::Now();
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      size_t b = (*cursor)[t];
      uint64_t n = 0;
      while (!stop.load(std::memory_order_relaxed)) {
        call(t, b, n, FLAGS_sample_rows);
        b = (b + threads) % batches;
        ++n;
      }
      calls[t] = n;
      (*cursor)[t] = b;
    });
  }
  absl::SleepFor(absl::Seconds(seconds));
  stop = true;
  for (auto& w : workers) w.join();
  const double elapsed = absl::ToDoubleSeconds(absl::Now() - start);
  uint64_t total = 0;
  for (uint64_t c : calls) total += c;
  series->keys += total * batch;
  series->keys_per_second.push_back(static_cast<double>(total * batch) /
                                    elapsed);
  series->server_cpu += UsageOf(server).cpu_seconds - server_before.cpu_seconds;
  series->client_cpu += SelfUsage().cpu_seconds - client_before.cpu_seconds;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

int RunClient(const std::vector<int>& batches,
              const std::vector<int>& thread_counts,
              const std::vector<std::string>& modes) {
  const uint32_t dim = FLAGS_dim;
  const size_t row_bytes = sizeof(float) * dim;
  const Child server = StartServer();
  int max_threads = 1;
  for (int t : thread_counts) max_threads = std::max(max_threads, t);

  std::vector<std::unique_ptr<RawClient>> raw;
  for (int t = 0; t < max_threads; ++t) {
    raw.push_back(std::make_unique<RawClient>(server.address));
  }
  mim::ps::PsClient::Options options;
  options.channels_per_shard = max_threads;
  options.timeout = absl::Seconds(30);
  // One call per Pull: the server answers by the request's length, so it
  // knows only whole batches (splitting is measured against a real shard,
  // bench/ps_bench).
  options.pull_keys_per_call = 0;
  auto ps_or = mim::ps::PsClient::Create({server.address}, options);
  if (!ps_or.ok()) Die(ps_or.status().ToString());
  mim::ps::PsClient& ps = **ps_or;

  std::printf(
      "server %s (pid %d): the shard's StartServer setup, Pull answered "
      "with a prebuilt reply%s\n",
      server.address.c_str(), server.pid,
      FLAGS_server_executor_threads > 0
          ? absl::StrCat(" after a hop to an executor of ",
                         FLAGS_server_executor_threads, " threads")
                .c_str()
          : " on gRPC's callback thread");
  std::printf(
      "pool >= %llu keys per batch size; %d reps of %.2f s per mode, modes "
      "alternating; %d rows of every timed reply checked, one whole reply "
      "before each rep; load average at start %s",
      static_cast<unsigned long long>(FLAGS_pool_keys), FLAGS_reps,
      FLAGS_rep_seconds, FLAGS_sample_rows,
      [] {
        std::ifstream in("/proc/loadavg");
        std::string s;
        std::getline(in, s);
        return s + "\n";
      }()
          .c_str());
  std::printf("\n%-8s %3s %6s | %-20s | %-7s %-7s | %s\n", "mode", "thr",
              "batch", "Mkeys/s min med max", "srv us/key", "cli us/key",
              "rows GB/s (med)");

  for (const int threads : thread_counts) {
    for (const int batch : batches) {
      // Whole batches of distinct keys (Mix is a bijection).
      const size_t pool_batches = std::max<size_t>(
          4, (FLAGS_pool_keys + batch - 1) / static_cast<size_t>(batch));
      std::vector<uint64_t> keys(pool_batches * batch);
      const uint64_t base = Mix(batch);
      for (size_t i = 0; i < keys.size(); ++i) keys[i] = Mix(base + i);
      auto batch_keys = [&](size_t b) { return keys.data() + b * batch; };
      std::vector<std::vector<float>> out(
          threads, std::vector<float>(static_cast<size_t>(batch) * dim));
      std::vector<AnswerReader> readers(threads);
      std::vector<grpc::ByteBuffer> replies(threads);

      auto call = [&](const std::string& mode, int t, size_t b, uint64_t n,
                      int sample) {
        if (mode == "psclient") {
          absl::Status s = ps.PullInto(
              kTable, absl::MakeConstSpan(batch_keys(b), batch),
              absl::MakeSpan(out[t]), nullptr);
          if (!s.ok()) Die(absl::StrCat("PsClient::PullInto: ", s.ToString()));
          CheckRows("psclient", batch, dim, sample, n,
                    [&](size_t i, float* row) {
                      std::memcpy(row, out[t].data() + i * dim, row_bytes);
                    });
          return;
        }
        raw[t]->Pull(batch_keys(b), batch, &replies[t]);
        readers[t].Read(replies[t], batch, dim);
        if (mode == "copy") {
          readers[t].CopyValues(0, batch * row_bytes, out[t].data());
          CheckRows("copy", batch, dim, sample, n, [&](size_t i, float* row) {
            std::memcpy(row, out[t].data() + i * dim, row_bytes);
          });
        } else {
          CheckRows("grpc", batch, dim, sample, n, [&](size_t i, float* row) {
            readers[t].CopyValues(i * row_bytes, row_bytes, row);
          });
        }
        replies[t].Clear();
      };

      std::map<std::string, Series> series;
      std::map<std::string, std::vector<size_t>> cursor;
      for (const std::string& mode : modes) {
        cursor[mode].resize(threads);
        for (int t = 0; t < threads; ++t) {
          cursor[mode][t] = t;
          for (int i = 0; i < FLAGS_warmup_calls; ++i) {
            call(mode, t, (pool_batches - 1 - i % pool_batches), i,
                 FLAGS_sample_rows);
          }
        }
      }
      for (int rep = 0; rep < FLAGS_reps; ++rep) {
        for (const std::string& mode : modes) {
          call(mode, 0, cursor[mode][0], rep, 0);  // one whole reply checked
          Rep(threads, FLAGS_rep_seconds, pool_batches, server.pid,
              &cursor[mode], batch, &series[mode],
              [&](int t, size_t b, uint64_t n, int sample) {
                call(mode, t, b, n, sample);
              });
        }
      }
      for (const std::string& mode : modes) {
        const Series& s = series[mode];
        std::vector<double> v = s.keys_per_second;
        std::sort(v.begin(), v.end());
        const double keys = std::max<double>(1, s.keys);
        std::printf("%-8s %3d %6d | %6.2f %6.2f %6.2f | %7.3f %7.3f | %6.2f\n",
                    mode.c_str(), threads, batch, v.front() / 1e6,
                    Median(v) / 1e6, v.back() / 1e6, s.server_cpu * 1e6 / keys,
                    s.client_cpu * 1e6 / keys,
                    Median(v) * row_bytes / 1e9);
      }
      std::fflush(stdout);
    }
  }
  raw.clear();
  ps_or->reset();
  kill(server.pid, SIGTERM);
  int status = 0;
  waitpid(server.pid, &status, 0);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  signal(SIGPIPE, SIG_IGN);
  if (FLAGS_quick) {
    FLAGS_batches = "256,1024";
    FLAGS_threads = "1";
    FLAGS_pool_keys = 200000;
    FLAGS_reps = 2;
    FLAGS_rep_seconds = 0.2;
    FLAGS_warmup_calls = 2;
  }
  if (FLAGS_dim == 0 || FLAGS_dim > 4096) {
    Die(absl::StrCat("--dim must be in [1, 4096], got ", FLAGS_dim));
  }
  if (FLAGS_reps < 1) Die(absl::StrCat("--reps must be >= 1, got ", FLAGS_reps));
  const std::vector<int> batches = ParseList("batches", FLAGS_batches);
  if (FLAGS_serve) return Serve(batches);
  std::vector<std::string> modes =
      absl::StrSplit(FLAGS_modes, ',', absl::SkipEmpty());
  for (const std::string& m : modes) {
    if (m != "grpc" && m != "copy" && m != "psclient") {
      Die(absl::StrCat("--modes: unknown mode '", m,
                       "'; expected grpc, copy or psclient"));
    }
  }
  if (modes.empty()) Die("--modes is empty; expected grpc, copy or psclient");
  return RunClient(batches, ParseList("threads", FLAGS_threads), modes);
}
