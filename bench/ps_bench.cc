// ps_bench: parameter-server Pull/Push throughput against a real shard, side
// by side with Redis MGET of the same rows, measured the way a fair peer
// comparison needs (issue 13):
//
//   bazel run //bench:ps_bench                     (~2 min)
//   bazel run //bench:ps_bench -- --quick          (smoke, seconds)
//   bazel run //bench:ps_bench -- --ps=HOST:PORT   (an existing shard)
//   ... --ps=HOST:PORT --noload --noredis --nopull (Push only, as
//   bench/ps_push_ab.sh runs it)
//
// Setup. The bench starts //ps:server (one shard, --port=0, a fresh
// data_dir under /tmp) and redis-server (free port, no persistence), and
// writes --rows rows of --dim float32 with random 64-bit keys into both: on
// the shard an ID table (sgd, learning rate 1, zeros initializer) gets one
// Push of -value per row, so each row holds exactly `value`; Redis gets the
// same bytes with MSET (one 4*dim-byte string per key). Every row's value
// is a pure function of its key (ExpectedRow), so every answer can be
// checked without trusting either server.
//
// Keys. For each batch size, a fixed pool of at least --pool_keys keys
// drawn at random from the rows, cut into batches of distinct keys (a
// partial Fisher-Yates shuffle per batch); PS and Redis walk the same
// batches in the same order, each thread its own stride through them.
//
// Measurement. For each client thread count (--threads) and batch size:
// a warm-up pass (--warmup_calls per thread, untimed), then --reps reps;
// in each rep PS Pull and Redis MGET run --rep_seconds each, alternately
// (robust to other load on a shared machine), and min/median/max keys/s
// over the reps are printed. Before each rep one whole reply of each is
// compared with the expected rows; inside the timed loop every call
// compares --sample_rows rows. Then Push of zero gradients (rows stay as
// they are, so later checks hold; sgd does the same work for any
// gradient) in --reps reps. Each op also reports the CPU of the server
// process per key and its minor page faults per call, read from
// /proc/<pid>/stat around the timed intervals (only for servers this bench
// started), and the bench process's own CPU per key and page faults per
// call (getrusage). Redis replies are parsed fully and copied into the
// caller's row buffer, as PsClient does.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "bench/bench_util.h"
#include "gflags/gflags.h"
#include "ps/client.h"

DEFINE_string(ps, "", "Existing shard address; empty: start ps/server.");
DEFINE_string(server, "", "Path of the ps server binary (default: runfiles).");
DEFINE_string(redis_server, "redis-server", "redis-server binary.");
DEFINE_bool(redis, true, "Also start Redis and measure MGET.");
DEFINE_uint64(rows, 1000000, "Rows in the table (and in Redis).");
DEFINE_uint64(pool_keys, 2000000,
              "Keys in the fixed pool of each batch size (at least; whole "
              "batches of distinct keys).");
DEFINE_uint32(dim, 64, "Floats per row.");
DEFINE_string(batches, "256,1024,4096,16384", "Batch sizes (keys per call).");
DEFINE_string(threads, "1,2", "Client thread counts.");
DEFINE_int32(reps, 5, "Timed reps per (op, threads, batch).");
DEFINE_double(rep_seconds, 0.4, "Length of one rep of one system.");
DEFINE_int32(warmup_calls, 20, "Untimed calls per thread before the reps.");
DEFINE_int32(sample_rows, 4, "Rows of every timed reply checked.");
DEFINE_int32(server_threads, 0,
             "--threads of the started ps server (0: its default).");
DEFINE_bool(quick, false,
            "Smoke run: 100k rows, pool 200k, batches 256,1024, 1 thread, "
            "2 short reps.");
DEFINE_bool(pull, true,
            "Measure Pull (and Redis MGET); --nopull measures only Push and "
            "needs --noredis.");
DEFINE_bool(push, true, "Also measure Push.");
DEFINE_bool(load, true,
            "Write the rows first. --noload measures a shard (--ps) that an "
            "earlier run with the same --rows and --dim filled; needs "
            "--noredis (a started Redis is empty).");
DEFINE_int32(max_keys_per_call, 0,
             "PsClient::Options::max_keys_per_call (0: one call per shard).");
DEFINE_int32(pull_keys_per_call, -1,
             "PsClient::Options::pull_keys_per_call (-1: its default; 0: "
             "Pulls not split).");
DEFINE_int32(max_calls_per_shard, -1,
             "PsClient::Options::max_calls_per_shard (-1: its default).");
DEFINE_bool(mutex_deadlock_detection, true,
            "Leave Abseil's Mutex deadlock detection as the library was "
            "built (Debian: on, as in the trainer and serving); false turns "
            "it off, as //ps:server does.");

namespace {

using mim::bench::ExpectedRow;
using mim::bench::Mix;
using mim::bench::ProcUsage;
using mim::bench::SelfUsage;
using mim::ps::PsClient;

// Children to stop when the bench ends early.
std::vector<pid_t> g_children;

[[noreturn]] void Die(const std::string& message) {
  std::fprintf(stderr, "ps_bench: %s\n", message.c_str());
  for (pid_t pid : g_children) {
    kill(pid, SIGTERM);
    waitpid(pid, nullptr, 0);
  }
  std::exit(1);
}

// A child process whose stdout we read until a readiness line appears.
struct Child {
  pid_t pid = 0;
  int out_fd = -1;
  std::string first_output;
};

Child SpawnUntil(const std::vector<std::string>& argv,
                 const std::string& ready) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) Die("pipe failed");
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[1], 1);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  Child child;
  const int rc = posix_spawnp(&child.pid, args[0], &actions, nullptr,
                              args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  close(fds[1]);
  if (rc != 0) Die(absl::StrCat("cannot start ", argv[0], ": ", strerror(rc)));
  g_children.push_back(child.pid);
  child.out_fd = fds[0];
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (child.first_output.find(ready) == std::string::npos) {
    pollfd p = {fds[0], POLLIN, 0};
    const int64_t left = absl::ToInt64Milliseconds(deadline - absl::Now());
    char buf[4096];
    const ssize_t n = (left > 0 && poll(&p, 1, static_cast<int>(left)) > 0)
                          ? read(fds[0], buf, sizeof(buf))
                          : 0;
    if (n <= 0) {
      kill(child.pid, SIGKILL);
      Die(absl::StrCat(argv[0], " did not become ready: ", child.first_output));
    }
    child.first_output.append(buf, static_cast<size_t>(n));
  }
  // Keep draining its stdout so that it never blocks on a full pipe.
  std::thread([fd = fds[0]] {
    char buf[4096];
    while (read(fd, buf, sizeof(buf)) > 0) {
    }
  }).detach();
  return child;
}

void Stop(const Child& child) {
  if (child.pid <= 0) return;
  kill(child.pid, SIGTERM);
  waitpid(child.pid, nullptr, 0);
}

int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

// Of process `pid` (zeros when pid is 0: a server this bench did not
// start).
ProcUsage UsageOf(pid_t pid) {
  absl::StatusOr<ProcUsage> u = mim::bench::UsageOf(pid);
  if (!u.ok()) Die(std::string(u.status().message()));
  return *u;
}

uint64_t KeyOfRow(uint64_t row) { return Mix(row + 1); }

// Whether `rows` (batch x dim) hold the expected rows of `keys` at the
// positions `check` (all when empty); Die naming the first wrong one.
void CheckRows(const char* who, const uint64_t* keys, size_t n, uint32_t dim,
               const float* rows, int sample, uint64_t salt) {
  float expected[4096];
  const size_t count = sample <= 0 ? n : std::min<size_t>(n, sample);
  for (size_t c = 0; c < count; ++c) {
    const size_t i = sample <= 0 ? c : (salt * 7919 + c * 104729) % n;
    ExpectedRow(keys[i], dim, expected);
    if (std::memcmp(expected, rows + i * dim, sizeof(float) * dim) != 0) {
      Die(absl::StrCat(who, " answered a wrong row for key ", keys[i],
                       " (index ", i, " of ", n, "): first value ",
                       rows[i * dim], ", expected ", expected[0]));
    }
  }
}

// Minimal RESP2 client: one command in flight, replies parsed in full.
// Not thread-safe; one per bench thread.
class RedisConnection {
 public:
  static std::unique_ptr<RedisConnection> Connect(int port) {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      Die(absl::StrCat("connect to redis port ", port, ": ", strerror(errno)));
    }
    const int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return std::unique_ptr<RedisConnection>(new RedisConnection(fd));
  }
  ~RedisConnection() { close(fd_); }

  // Sends one command (array of bulk strings).
  void Send(const std::vector<std::string>& args) {
    std::string out;
    absl::StrAppend(&out, "*", args.size(), "\r\n");
    for (const auto& a : args) absl::StrAppend(&out, "$", a.size(), "\r\n", a, "\r\n");
    WriteAll(out.data(), out.size());
  }

  // Sends `command` (a ready MGET of n keys) and copies every value, which
  // must be a bulk string of row_bytes, into out (n * row_bytes).
  void MGet(absl::string_view command, size_t n, size_t row_bytes,
            char* out) {
    WriteAll(command.data(), command.size());
    const int64_t count = ReadHeader('*');
    if (count != static_cast<int64_t>(n)) {
      Die(absl::StrCat("MGET of ", n, " keys answered ", count, " values"));
    }
    for (size_t i = 0; i < n; ++i) {
      const int64_t len = ReadHeader('$');
      if (len != static_cast<int64_t>(row_bytes)) {
        Die(absl::StrCat("MGET value ", i, " has ", len, " bytes, expected ",
                         row_bytes, " (-1: the key is missing)"));
      }
      ReadExact(out + i * row_bytes, row_bytes);
      char crlf[2];
      ReadExact(crlf, 2);
    }
  }

  // Reads one simple/bulk/integer/error reply as text.
  std::string ReadReply() {
    const std::string line = ReadLine();
    if (line.empty()) Die("empty reply");
    if (line[0] == '$') {
      int64_t len = 0;
      absl::SimpleAtoi(line.substr(1), &len);
      if (len < 0) return "";
      std::string s(static_cast<size_t>(len) + 2, '\0');
      ReadExact(s.data(), s.size());
      s.resize(static_cast<size_t>(len));
      return s;
    }
    if (line[0] == '-') Die("redis error: " + line);
    return line.substr(1);
  }

 private:
  explicit RedisConnection(int fd) : fd_(fd) { in_.resize(1 << 20); }

  void WriteAll(const char* data, size_t size) {
    size_t done = 0;
    while (done < size) {
      const ssize_t n = write(fd_, data + done, size - done);
      if (n <= 0) Die("redis write failed");
      done += static_cast<size_t>(n);
    }
  }
  void Fill() {
    if (begin_ == end_) begin_ = end_ = 0;
    if (end_ == in_.size()) {
      std::memmove(in_.data(), in_.data() + begin_, end_ - begin_);
      end_ -= begin_;
      begin_ = 0;
    }
    const ssize_t n = read(fd_, in_.data() + end_, in_.size() - end_);
    if (n <= 0) Die("redis connection closed");
    end_ += static_cast<size_t>(n);
  }
  // "<type><integer>\r\n" without a string allocation.
  int64_t ReadHeader(char type) {
    for (;;) {
      const char* start = in_.data() + begin_;
      const void* nl = std::memchr(start, '\n', end_ - begin_);
      if (nl != nullptr) {
        const size_t len = static_cast<const char*>(nl) - start;
        int64_t value = 0;
        if (len < 3 || start[0] != type || start[len - 1] != '\r' ||
            !absl::SimpleAtoi(absl::string_view(start + 1, len - 2), &value)) {
          Die(absl::StrCat("bad redis reply header: ",
                           absl::string_view(start, len)));
        }
        begin_ += len + 1;
        return value;
      }
      Fill();
    }
  }
  std::string ReadLine() {
    for (;;) {
      const char* start = in_.data() + begin_;
      const void* nl = std::memchr(start, '\n', end_ - begin_);
      if (nl != nullptr) {
        const size_t len = static_cast<const char*>(nl) - start;
        std::string line(start, len > 0 && start[len - 1] == '\r' ? len - 1 : len);
        begin_ += len + 1;
        return line;
      }
      Fill();
    }
  }
  void ReadExact(char* dst, size_t n) {
    while (n > 0) {
      if (begin_ == end_) Fill();
      const size_t take = std::min(n, end_ - begin_);
      std::memcpy(dst, in_.data() + begin_, take);
      begin_ += take;
      dst += take;
      n -= take;
    }
  }

  int fd_;
  std::vector<char> in_;
  size_t begin_ = 0, end_ = 0;
};

uint64_t InfoField(RedisConnection& redis, const std::string& field) {
  redis.Send({"INFO", "stats"});
  const std::string info = redis.ReadReply();
  for (absl::string_view line : absl::StrSplit(info, "\r\n")) {
    if (absl::ConsumePrefix(&line, field + ":")) {
      uint64_t v = 0;
      if (absl::SimpleAtoi(line, &v)) return v;
    }
  }
  Die("INFO stats has no " + field);
}

std::vector<int> ParseList(const std::string& list) {
  std::vector<int> out;
  for (absl::string_view s : absl::StrSplit(list, ',', absl::SkipEmpty())) {
    int v = 0;
    if (!absl::SimpleAtoi(s, &v) || v <= 0) Die("bad list: " + list);
    out.push_back(v);
  }
  return out;
}

// The fixed key pool of one batch size: `batches` batches of `batch`
// distinct keys each, and (with Redis) each batch's MGET command.
struct Pool {
  int batch = 0;
  size_t batches = 0;
  std::vector<uint64_t> keys;  // batches * batch
  std::string redis_commands;
  std::vector<size_t> command_offset;  // batches + 1

  const uint64_t* Batch(size_t b) const { return keys.data() + b * batch; }
  absl::string_view Command(size_t b) const {
    return absl::string_view(redis_commands)
        .substr(command_offset[b], command_offset[b + 1] - command_offset[b]);
  }
};

Pool MakePool(int batch, uint64_t rows, uint64_t pool_keys, bool redis,
              std::mt19937_64* rng) {
  Pool pool;
  pool.batch = batch;
  pool.batches = (pool_keys + batch - 1) / batch;
  pool.keys.reserve(pool.batches * batch);
  // Partial Fisher-Yates over a permutation of the rows: the first `batch`
  // entries after each pass are a uniform sample without replacement.
  std::vector<uint64_t> perm(rows);
  for (uint64_t r = 0; r < rows; ++r) perm[r] = r;
  for (size_t b = 0; b < pool.batches; ++b) {
    for (int i = 0; i < batch; ++i) {
      std::uniform_int_distribution<uint64_t> pick(i, rows - 1);
      std::swap(perm[i], perm[pick(*rng)]);
      pool.keys.push_back(KeyOfRow(perm[i]));
    }
  }
  if (redis) {
    pool.command_offset.push_back(0);
    for (size_t b = 0; b < pool.batches; ++b) {
      absl::StrAppend(&pool.redis_commands, "*", batch + 1,
                      "\r\n$4\r\nMGET\r\n");
      for (int i = 0; i < batch; ++i) {
        const std::string k = absl::StrCat(pool.Batch(b)[i]);
        absl::StrAppend(&pool.redis_commands, "$", k.size(), "\r\n", k,
                        "\r\n");
      }
      pool.command_offset.push_back(pool.redis_commands.size());
    }
  }
  return pool;
}

// What one system did over the timed reps of one (op, threads, batch).
struct Series {
  std::vector<double> keys_per_second;  // one per rep
  uint64_t keys = 0;
  uint64_t calls = 0;
  ProcUsage server;  // summed over the timed intervals
  ProcUsage client;
};

// One timed rep: `call(thread, batch_index)` on `threads` threads for
// `seconds`, each thread walking its own stride of the pool from
// cursor[thread]. Adds to `series`.
template <typename Call>
void Rep(int threads, double seconds, const Pool& pool, pid_t server_pid,
         std::vector<size_t>* cursor, Series* series, const Call& call) {
  std::atomic<bool> stop{false};
  std::vector<uint64_t> calls(threads, 0);
  std::vector<std::thread> pool_threads;
  const ProcUsage server_before = UsageOf(server_pid);
  const ProcUsage client_before = SelfUsage();
  const absl::Time start = absl::Now();
  for (int t = 0; t < threads; ++t) {
    pool_threads.emplace_back([&, t] {
      size_t b = (*cursor)[t];
      uint64_t n = 0;
      while (!stop.load(std::memory_order_relaxed)) {
        call(t, b, n);
        b = (b + threads) % pool.batches;
        ++n;
      }
      calls[t] = n;
      (*cursor)[t] = b;
    });
  }
  absl::SleepFor(absl::Seconds(seconds));
  stop = true;
  for (auto& th : pool_threads) th.join();
  const double elapsed = absl::ToDoubleSeconds(absl::Now() - start);
  const ProcUsage server_after = UsageOf(server_pid);
  const ProcUsage client_after = SelfUsage();
  uint64_t total = 0;
  for (uint64_t c : calls) total += c;
  series->calls += total;
  series->keys += total * pool.batch;
  series->keys_per_second.push_back(static_cast<double>(total) * pool.batch /
                                    elapsed);
  series->server.cpu_seconds +=
      server_after.cpu_seconds - server_before.cpu_seconds;
  series->server.minflt += server_after.minflt - server_before.minflt;
  series->client.cpu_seconds +=
      client_after.cpu_seconds - client_before.cpu_seconds;
  series->client.minflt += client_after.minflt - client_before.minflt;
}

std::string Summary(const Series& s, bool server_known) {
  std::vector<double> v = s.keys_per_second;
  std::sort(v.begin(), v.end());
  const double keys = std::max<double>(1, s.keys);
  const double calls = std::max<double>(1, s.calls);
  std::string server =
      server_known
          ? absl::StrFormat("%6.3f %7.0f", s.server.cpu_seconds * 1e6 / keys,
                            s.server.minflt / calls)
          : absl::StrFormat("%6s %7s", "-", "-");
  return absl::StrFormat("%6.2f %6.2f %6.2f | %s | %6.3f %7.0f",
                         v.front() / 1e6, v[v.size() / 2] / 1e6,
                         v.back() / 1e6, server,
                         s.client.cpu_seconds * 1e6 / keys,
                         s.client.minflt / calls);
}

double MedianOf(const Series& s) {
  std::vector<double> v = s.keys_per_second;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

std::string DefaultServerPath(const char* argv0) {
  struct stat st;
  for (const std::string& p :
       {std::string("ps/server"), absl::StrCat(argv0, ".runfiles/mim/ps/server"),
        std::string("bazel-bin/ps/server")}) {
    if (stat(p.c_str(), &st) == 0) return p;
  }
  Die("cannot find ps/server; pass --server=PATH or --ps=HOST:PORT");
}

}  // namespace

int main(int argc, char** argv) {
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  if (!FLAGS_mutex_deadlock_detection) {
    absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  }
  signal(SIGPIPE, SIG_IGN);
  if (FLAGS_quick) {
    FLAGS_rows = 100000;
    FLAGS_pool_keys = 200000;
    FLAGS_batches = "256,1024";
    FLAGS_threads = "1";
    FLAGS_reps = 2;
    FLAGS_rep_seconds = 0.2;
    FLAGS_warmup_calls = 2;
  }
  const std::vector<int> batches = ParseList(FLAGS_batches);
  const std::vector<int> thread_counts = ParseList(FLAGS_threads);
  const uint32_t dim = FLAGS_dim;
  const size_t row_bytes = sizeof(float) * dim;
  if (dim == 0 || dim > 4096) Die("--dim must be in [1, 4096]");
  if (FLAGS_reps < 1) Die("--reps must be >= 1");
  int max_threads = 1;
  for (int t : thread_counts) max_threads = std::max(max_threads, t);
  if (!FLAGS_pull && FLAGS_redis) Die("--nopull needs --noredis");
  if (!FLAGS_pull && !FLAGS_push) Die("--nopull needs --push");
  if (!FLAGS_load && (FLAGS_ps.empty() || FLAGS_redis)) {
    Die("--noload needs --ps (a filled shard) and --noredis");
  }
  for (int b : batches) {
    if (static_cast<uint64_t>(b) > FLAGS_rows) {
      Die("a batch of distinct keys cannot exceed --rows");
    }
  }

  Child ps_child;
  std::string ps_address = FLAGS_ps;
  std::string ps_data_dir;  // removed at the end when the bench made it
  if (ps_address.empty()) {
    char dir_template[] = "/tmp/ps_bench.XXXXXX";
    if (mkdtemp(dir_template) == nullptr) Die("mkdtemp failed");
    ps_data_dir = dir_template;
    const std::string server =
        FLAGS_server.empty() ? DefaultServerPath(argv[0]) : FLAGS_server;
    std::vector<std::string> args = {
        server, "--host=127.0.0.1", "--port=0", "--metrics_port=-1",
        absl::StrCat("--data_dir=", dir_template),
        "--max_keys_per_request=65536"};
    if (FLAGS_server_threads > 0) {
      args.push_back(absl::StrCat("--threads=", FLAGS_server_threads));
    }
    ps_child = SpawnUntil(args, "listening on");
    const std::string& out = ps_child.first_output;
    const size_t line = out.find("listening on");
    const size_t colon = out.find(':', line);
    const size_t end = out.find_first_of(" \n", colon);
    ps_address = absl::StrCat("127.0.0.1:", out.substr(colon + 1, end - colon - 1));
  }
  Child redis_child;
  int redis_port = 0;
  if (FLAGS_redis) {
    redis_port = FreePort();
    redis_child = SpawnUntil(
        {FLAGS_redis_server, "--port", absl::StrCat(redis_port), "--bind",
         "127.0.0.1", "--save", "", "--appendonly", "no", "--protected-mode",
         "no", "--loglevel", "notice"},
        "Ready to accept connections");
  }

  PsClient::Options options;
  options.channels_per_shard = max_threads;
  options.max_keys_per_call = FLAGS_max_keys_per_call;
  if (FLAGS_pull_keys_per_call >= 0) {
    options.pull_keys_per_call = FLAGS_pull_keys_per_call;
  }
  if (FLAGS_max_calls_per_shard >= 0) {
    options.max_calls_per_shard = FLAGS_max_calls_per_shard;
  }
  options.timeout = absl::Seconds(30);
  auto client_or = PsClient::Create({ps_address}, options);
  if (!client_or.ok()) Die(client_or.status().ToString());
  PsClient& client = **client_or;

  mim::ps::TableConfig config;
  const std::string table = "bench";
  config.set_name(table);
  config.set_kind(mim::ps::ID);
  config.set_dim(dim);
  config.mutable_optimizer()->set_name("sgd");
  config.mutable_optimizer()->set_learning_rate(1.0f);
  config.mutable_initializer()->set_name("zeros");
  if (absl::Status s = client.CreateTable(config, true); !s.ok()) {
    Die(s.ToString());
  }

  // Load: Push of -value onto the zeros initializer stores value exactly
  // (sgd, learning rate 1); Redis gets the same bytes with MSET.
  const absl::Time load_start = absl::Now();
  std::unique_ptr<RedisConnection> redis_load;
  if (FLAGS_redis) redis_load = RedisConnection::Connect(redis_port);
  constexpr uint64_t kLoadBatch = 16384;
  for (uint64_t first = 0; FLAGS_load && first < FLAGS_rows;
       first += kLoadBatch) {
    const uint64_t n = std::min<uint64_t>(FLAGS_rows, first + kLoadBatch) - first;
    std::vector<uint64_t> keys(n);
    std::vector<float> values(n * dim);
    for (uint64_t i = 0; i < n; ++i) {
      keys[i] = KeyOfRow(first + i);
      ExpectedRow(keys[i], dim, values.data() + i * dim);
    }
    std::vector<float> negated(values.size());
    for (size_t i = 0; i < values.size(); ++i) negated[i] = -values[i];
    if (auto pushed = client.Push(table, keys, negated); !pushed.ok()) {
      Die(pushed.status().ToString());
    }
    if (!redis_load) continue;
    std::vector<std::string> mset = {"MSET"};
    for (uint64_t i = 0; i < n; ++i) {
      mset.push_back(absl::StrCat(keys[i]));
      mset.emplace_back(reinterpret_cast<const char*>(values.data() + i * dim),
                        row_bytes);
    }
    redis_load->Send(mset);
    if (redis_load->ReadReply() != "OK") Die("MSET failed");
  }
  std::printf("%s %llu rows of %u floats into ps (%s) and %s in %.1f s\n",
              FLAGS_load ? "loaded" : "did not load (--noload)",
              static_cast<unsigned long long>(FLAGS_rows), dim,
              ps_address.c_str(),
              FLAGS_redis ? absl::StrCat("redis (port ", redis_port, ")").c_str()
                          : "no redis",
              absl::ToDoubleSeconds(absl::Now() - load_start));
  std::printf(
      "pool >= %llu keys per batch size (distinct within a batch); %d reps "
      "of %.2f s per system, alternating; %d rows of every timed reply "
      "checked, one whole reply before each rep\n",
      static_cast<unsigned long long>(FLAGS_pool_keys), FLAGS_reps,
      FLAGS_rep_seconds, FLAGS_sample_rows);
  std::printf(
      "columns: Mkeys/s min med max | server CPU us/key, server minor "
      "faults/call | client (this process) CPU us/key, faults/call\n");
  std::printf("\n%-4s %3s %6s | %-48s | %-48s | %5s\n", "op", "thr", "batch",
              "ps: Mkeys/s min med max | srv us/key flt | cli us/key flt",
              "redis MGET: same columns", "ps/rd");

  std::mt19937_64 rng(42);
  uint64_t redis_keys_fetched = 0;
  const uint64_t hits_before =
      FLAGS_redis ? InfoField(*redis_load, "keyspace_hits") : 0;
  const uint64_t misses_before =
      FLAGS_redis ? InfoField(*redis_load, "keyspace_misses") : 0;
  for (const int threads : thread_counts) {
    std::vector<std::unique_ptr<RedisConnection>> redis;
    for (int t = 0; FLAGS_redis && t < threads; ++t) {
      redis.push_back(RedisConnection::Connect(redis_port));
    }
    for (const int batch : batches) {
      const Pool pool =
          MakePool(batch, FLAGS_rows, FLAGS_pool_keys, FLAGS_redis, &rng);
      std::vector<std::vector<float>> out(
          threads, std::vector<float>(static_cast<size_t>(batch) * dim));
      auto ps_pull = [&](int t, size_t b, uint64_t n, int sample) {
        absl::Status s = client.PullInto(
            table, absl::MakeConstSpan(pool.Batch(b), batch),
            absl::MakeSpan(out[t]), nullptr);
        if (!s.ok()) Die(absl::StrCat("ps pull: ", s.ToString()));
        CheckRows("ps", pool.Batch(b), batch, dim, out[t].data(), sample, n);
      };
      auto redis_mget = [&](int t, size_t b, uint64_t n, int sample) {
        redis[t]->MGet(pool.Command(b), batch, row_bytes,
                       reinterpret_cast<char*>(out[t].data()));
        CheckRows("redis", pool.Batch(b), batch, dim, out[t].data(), sample,
                  n);
      };
      std::vector<size_t> ps_cursor(threads), redis_cursor(threads);
      for (int t = 0; t < threads; ++t) ps_cursor[t] = redis_cursor[t] = t;
      // Warm-up, untimed: connections, the shard's threads, both caches of
      // the code paths (not of these keys: the pool is larger than a rep).
      for (int t = 0; FLAGS_pull && t < threads; ++t) {
        for (int i = 0; i < FLAGS_warmup_calls; ++i) {
          const size_t b = (pool.batches - 1 - i) % pool.batches;
          ps_pull(t, b, i, FLAGS_sample_rows);
          if (FLAGS_redis) redis_mget(t, b, i, FLAGS_sample_rows);
        }
      }
      Series ps, rd;
      for (int rep = 0; FLAGS_pull && rep < FLAGS_reps; ++rep) {
        // One whole reply of each checked before the rep.
        ps_pull(0, ps_cursor[0], rep, 0);
        Rep(threads, FLAGS_rep_seconds, pool, ps_child.pid, &ps_cursor, &ps,
            [&](int t, size_t b, uint64_t n) {
              ps_pull(t, b, n, FLAGS_sample_rows);
            });
        if (!FLAGS_redis) continue;
        redis_mget(0, redis_cursor[0], rep, 0);
        redis_keys_fetched += batch;
        Rep(threads, FLAGS_rep_seconds, pool, redis_child.pid, &redis_cursor,
            &rd, [&](int t, size_t b, uint64_t n) {
              redis_mget(t, b, n, FLAGS_sample_rows);
            });
      }
      if (FLAGS_redis) {
        redis_keys_fetched +=
            rd.keys + static_cast<uint64_t>(threads) * FLAGS_warmup_calls * batch;
      }
      if (FLAGS_pull) {
        std::printf("%-4s %3d %6d | %s | %s | %5.2f\n", "pull", threads,
                    batch, Summary(ps, ps_child.pid > 0).c_str(),
                    FLAGS_redis ? Summary(rd, true).c_str() : "-",
                    FLAGS_redis ? MedianOf(ps) / MedianOf(rd) : 0.0);
        std::fflush(stdout);
      }
      if (!FLAGS_push) continue;
      // Zero gradients: rows keep their values (see the file comment).
      const std::vector<float> grads(static_cast<size_t>(batch) * dim, 0.0f);
      auto ps_push = [&](size_t b) {
        absl::StatusOr<uint64_t> pushed = client.Push(
            table, absl::MakeConstSpan(pool.Batch(b), batch), grads);
        if (!pushed.ok()) Die(absl::StrCat("ps push: ", pushed.status().ToString()));
        if (*pushed != static_cast<uint64_t>(batch)) {
          Die(absl::StrCat("push of ", batch, " distinct keys updated ",
                           *pushed, " rows"));
        }
      };
      for (int t = 0; t < threads; ++t) ps_push(t);
      Series push;
      std::vector<size_t> push_cursor(threads);
      for (int t = 0; t < threads; ++t) push_cursor[t] = t;
      for (int rep = 0; rep < FLAGS_reps; ++rep) {
        Rep(threads, FLAGS_rep_seconds, pool, ps_child.pid, &push_cursor,
            &push, [&](int, size_t b, uint64_t) { ps_push(b); });
      }
      std::printf("%-4s %3d %6d | %s | %-48s | %5s\n", "push", threads, batch,
                  Summary(push, ps_child.pid > 0).c_str(), "-", "-");
      std::fflush(stdout);
    }
  }
  int rc = 0;
  if (FLAGS_redis) {
    const uint64_t hits = InfoField(*redis_load, "keyspace_hits") - hits_before;
    const uint64_t misses =
        InfoField(*redis_load, "keyspace_misses") - misses_before;
    std::printf("\nredis INFO stats during the run: keyspace_hits +%llu, "
                "keyspace_misses +%llu; keys fetched with MGET: %llu\n",
                static_cast<unsigned long long>(hits),
                static_cast<unsigned long long>(misses),
                static_cast<unsigned long long>(redis_keys_fetched));
    rc = misses == 0 && hits == redis_keys_fetched ? 0 : 1;
  }
  redis_load.reset();
  Stop(redis_child);
  Stop(ps_child);
  if (!ps_data_dir.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(ps_data_dir, ec);
  }
  return rc;
}
