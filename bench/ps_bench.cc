// ps_bench: parameter-server Pull/Push throughput against a real shard, side
// by side with Redis MGET of the same rows.
//
//   bazel run -c opt //bench:ps_bench              (~1-2 min)
//   bazel run //bench:ps_bench -- --quick          (smoke, seconds)
//   bazel run //bench:ps_bench -- --ps=HOST:PORT   (an existing shard)
//
// The bench starts //ps:server (one shard, --port=0, a fresh data_dir under
// /tmp) and redis-server (free port, no RDB/AOF persistence), loads the same
// --keys rows of --dim float32 into both (Redis: one 4*dim-byte string per
// key), then for each client thread count and batch size measures, for
// --seconds each: PS Pull and Redis MGET (alternating in --rounds slices,
// median slice reported), then PS Push. Batches are uniform random
// keys, the same sequence for PS and Redis. Redis replies are parsed fully
// (every bulk string copied into the caller's row buffer, as PsClient does),
// and INFO keyspace_hits/keyspace_misses are printed to show every key hit.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
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
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "gflags/gflags.h"
#include "ps/client.h"

DEFINE_string(ps, "", "Existing shard address; empty: start ps/server.");
DEFINE_string(server, "", "Path of the ps server binary (default: runfiles).");
DEFINE_string(redis_server, "redis-server", "redis-server binary.");
DEFINE_uint64(keys, 1000000, "Rows in the table (and in Redis).");
DEFINE_uint32(dim, 64, "Floats per row.");
DEFINE_string(batches, "256,1024,4096,16384", "Batch sizes (keys per call).");
DEFINE_string(threads, "1,2", "Client thread counts.");
DEFINE_double(seconds, 1.5, "Measuring time per (op, threads, batch).");
DEFINE_int32(rounds, 3,
             "PS and Redis are measured alternately in this many rounds of "
             "seconds/rounds each; the median round is reported (robust to "
             "other load on a shared machine).");
DEFINE_int32(server_threads, 64, "--threads of the started ps server.");
DEFINE_bool(quick, false, "Smoke run: 100k keys, batches 256,1024, 1 thread.");
DEFINE_bool(push, true, "Also measure Push.");
DEFINE_int32(max_keys_per_call, 0,
             "PsClient::Options::max_keys_per_call (0: one call per shard).");

namespace {

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
    out_.clear();
    absl::StrAppend(&out_, "*", args.size(), "\r\n");
    for (const auto& a : args) absl::StrAppend(&out_, "$", a.size(), "\r\n", a, "\r\n");
    WriteAll();
  }

  // MGET of `keys` (decimal strings of the row keys); every value must be a
  // bulk string of row_bytes, copied into out (keys.size() * row_bytes).
  // Returns the number of nil replies.
  size_t MGet(const std::vector<std::string>& keys, size_t row_bytes,
              char* out) {
    out_.clear();
    absl::StrAppend(&out_, "*", keys.size() + 1, "\r\n$4\r\nMGET\r\n");
    for (const auto& k : keys) absl::StrAppend(&out_, "$", k.size(), "\r\n", k, "\r\n");
    WriteAll();
    const std::string header = ReadLine();
    int64_t n = 0;
    if (header.empty() || header[0] != '*' ||
        !absl::SimpleAtoi(header.substr(1), &n) ||
        n != static_cast<int64_t>(keys.size())) {
      Die("bad MGET reply header: " + header);
    }
    size_t nils = 0;
    for (int64_t i = 0; i < n; ++i) {
      const std::string bulk = ReadLine();
      int64_t len = 0;
      if (bulk.empty() || bulk[0] != '$' || !absl::SimpleAtoi(bulk.substr(1), &len)) {
        Die("bad bulk header: " + bulk);
      }
      if (len < 0) {
        ++nils;
        std::memset(out + i * row_bytes, 0, row_bytes);
        continue;
      }
      if (static_cast<size_t>(len) != row_bytes) Die("unexpected value length");
      ReadExact(out + i * row_bytes, row_bytes);
      char crlf[2];
      ReadExact(crlf, 2);
    }
    return nils;
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

  void WriteAll() {
    size_t done = 0;
    while (done < out_.size()) {
      const ssize_t n = write(fd_, out_.data() + done, out_.size() - done);
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
  std::string out_;
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

// Runs `step(thread, iteration)` on `threads` threads for `seconds`; returns
// completed calls per second (all threads).
template <typename Step>
double Measure(int threads, double seconds, const Step& step) {
  std::atomic<bool> stop{false};
  std::vector<uint64_t> calls(threads, 0);
  std::vector<std::thread> pool;
  const absl::Time start = absl::Now();
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      uint64_t i = 0;
      while (!stop.load(std::memory_order_relaxed)) step(t, i++);
      calls[t] = i;
    });
  }
  absl::SleepFor(absl::Seconds(seconds));
  stop = true;
  for (auto& th : pool) th.join();
  const double elapsed = absl::ToDoubleSeconds(absl::Now() - start);
  uint64_t total = 0;
  for (uint64_t c : calls) total += c;
  return static_cast<double>(total) / elapsed;
}

double Median(std::vector<double> v) {
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
  signal(SIGPIPE, SIG_IGN);
  if (FLAGS_quick) {
    FLAGS_keys = 100000;
    FLAGS_batches = "256,1024";
    FLAGS_threads = "1";
    FLAGS_seconds = 0.3;
    FLAGS_rounds = 1;
  }
  const std::vector<int> batches = ParseList(FLAGS_batches);
  const std::vector<int> thread_counts = ParseList(FLAGS_threads);
  const uint32_t dim = FLAGS_dim;
  const size_t row_bytes = sizeof(float) * dim;
  int max_threads = 1;
  for (int t : thread_counts) max_threads = std::max(max_threads, t);

  Child ps_child;
  std::string ps_address = FLAGS_ps;
  std::string ps_data_dir;  // removed at the end when the bench made it
  if (ps_address.empty()) {
    char dir_template[] = "/tmp/ps_bench.XXXXXX";
    if (mkdtemp(dir_template) == nullptr) Die("mkdtemp failed");
    ps_data_dir = dir_template;
    const std::string server =
        FLAGS_server.empty() ? DefaultServerPath(argv[0]) : FLAGS_server;
    ps_child = SpawnUntil({server, "--host=127.0.0.1", "--port=0",
                           absl::StrCat("--data_dir=", dir_template),
                           absl::StrCat("--threads=", FLAGS_server_threads),
                           "--max_keys_per_request=65536"},
                          "listening on");
    ps_address = absl::StrCat(
        "127.0.0.1:", ps_child.first_output.substr(
                          ps_child.first_output.rfind(':') + 1));
    while (!ps_address.empty() && (ps_address.back() == '\n')) ps_address.pop_back();
  }
  const int redis_port = FreePort();
  const Child redis_child = SpawnUntil(
      {FLAGS_redis_server, "--port", absl::StrCat(redis_port), "--bind",
       "127.0.0.1", "--save", "", "--appendonly", "no", "--protected-mode",
       "no", "--loglevel", "notice"},
      "Ready to accept connections");

  PsClient::Options options;
  options.channels_per_shard = max_threads;
  options.max_keys_per_call = FLAGS_max_keys_per_call;
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
  config.mutable_optimizer()->set_learning_rate(0.01f);
  config.mutable_initializer()->set_name("uniform");
  config.mutable_initializer()->set_scale(0.1f);
  if (absl::Status s = client.CreateTable(config, true); !s.ok()) {
    Die(s.ToString());
  }

  // Preload: a push of zero gradients creates every row on the shard with
  // its initial value (a pull alone stores nothing); the same bytes, read
  // back by a pull, go to Redis with MSET.
  const absl::Time load_start = absl::Now();
  auto redis_load = RedisConnection::Connect(redis_port);
  constexpr uint64_t kLoadBatch = 16384;
  for (uint64_t first = 0; first < FLAGS_keys; first += kLoadBatch) {
    std::vector<uint64_t> keys;
    for (uint64_t k = first; k < std::min<uint64_t>(FLAGS_keys, first + kLoadBatch); ++k) {
      keys.push_back(k);
    }
    const std::vector<float> zeros(keys.size() * dim, 0.0f);
    if (auto pushed = client.Push(table, keys, zeros); !pushed.ok()) {
      Die(pushed.status().ToString());
    }
    auto rows = client.Pull(table, keys);
    if (!rows.ok()) Die(rows.status().ToString());
    std::vector<std::string> mset = {"MSET"};
    for (size_t i = 0; i < keys.size(); ++i) {
      mset.push_back(absl::StrCat(keys[i]));
      mset.emplace_back(reinterpret_cast<const char*>(rows->values.data() + i * dim),
                        row_bytes);
    }
    redis_load->Send(mset);
    if (redis_load->ReadReply() != "OK") Die("MSET failed");
  }
  std::printf("loaded %llu rows of %u floats into ps (%s) and redis (port %d) "
              "in %.1f s\n",
              static_cast<unsigned long long>(FLAGS_keys), dim,
              ps_address.c_str(), redis_port,
              absl::ToDoubleSeconds(absl::Now() - load_start));

  // Pre-generated random batches, shared by PS and Redis.
  constexpr int kBatchesPerSize = 64;
  std::mt19937_64 rng(42);
  std::uniform_int_distribution<uint64_t> pick(0, FLAGS_keys - 1);

  std::printf("\n%-5s %7s %6s | %12s %9s | %12s %9s | %6s\n", "op", "threads",
              "batch", "ps keys/s", "ps MB/s", "redis keys/s", "redis MB/s",
              "ratio");
  uint64_t redis_keys_fetched = 0;
  const uint64_t hits_before = InfoField(*redis_load, "keyspace_hits");
  const uint64_t misses_before = InfoField(*redis_load, "keyspace_misses");
  for (const int threads : thread_counts) {
    std::vector<std::unique_ptr<RedisConnection>> redis;
    for (int t = 0; t < threads; ++t) {
      redis.push_back(RedisConnection::Connect(redis_port));
    }
    for (const int batch : batches) {
      std::vector<std::vector<uint64_t>> keys(kBatchesPerSize);
      std::vector<std::vector<std::string>> redis_keys(kBatchesPerSize);
      for (int b = 0; b < kBatchesPerSize; ++b) {
        for (int i = 0; i < batch; ++i) {
          keys[b].push_back(pick(rng));
          redis_keys[b].push_back(absl::StrCat(keys[b].back()));
        }
      }
      std::vector<std::vector<float>> out(threads,
                                          std::vector<float>(batch * dim));
      std::atomic<uint64_t> errors{0};
      const double slice = FLAGS_seconds / std::max(1, FLAGS_rounds);
      std::vector<double> ps_rounds, redis_rounds;
      std::atomic<uint64_t> nils{0};
      std::atomic<uint64_t> fetched{0};
      for (int round = 0; round < std::max(1, FLAGS_rounds); ++round) {
        ps_rounds.push_back(Measure(threads, slice, [&](int t, uint64_t i) {
          if (!client.PullInto(table, keys[(i * threads + t) % kBatchesPerSize],
                               absl::MakeSpan(out[t]), nullptr).ok()) {
            errors++;
          }
        }));
        redis_rounds.push_back(Measure(threads, slice, [&](int t, uint64_t i) {
          fetched += static_cast<uint64_t>(batch);
          nils += redis[t]->MGet(redis_keys[(i * threads + t) % kBatchesPerSize],
                                 row_bytes,
                                 reinterpret_cast<char*>(out[t].data()));
        }));
      }
      redis_keys_fetched += fetched.load();
      const double ps_calls = Median(ps_rounds);
      const double redis_calls = Median(redis_rounds);
      if (errors > 0 || nils > 0) {
        Die(absl::StrCat(errors.load(), " ps errors, ", nils.load(), " redis nils"));
      }
      const double ps_keys = ps_calls * batch, redis_keys_s = redis_calls * batch;
      std::printf("%-5s %7d %6d | %12.0f %9.1f | %12.0f %9.1f | %6.2f\n", "pull",
                  threads, batch, ps_keys, ps_keys * row_bytes / 1e6,
                  redis_keys_s, redis_keys_s * row_bytes / 1e6,
                  ps_keys / redis_keys_s);
      std::fflush(stdout);
      if (!FLAGS_push) continue;
      std::vector<float> grads(static_cast<size_t>(batch) * dim, 1e-3f);
      const double push_calls = Measure(threads, FLAGS_seconds, [&](int t, uint64_t i) {
        if (!client.Push(table, keys[(i * threads + t) % kBatchesPerSize], grads).ok()) {
          errors++;
        }
      });
      if (errors > 0) Die("push errors");
      const double push_keys = push_calls * batch;
      std::printf("%-5s %7d %6d | %12.0f %9.1f | %12s %9s | %6s\n", "push",
                  threads, batch, push_keys, push_keys * row_bytes / 1e6, "-",
                  "-", "-");
      std::fflush(stdout);
    }
  }
  const uint64_t hits = InfoField(*redis_load, "keyspace_hits") - hits_before;
  const uint64_t misses = InfoField(*redis_load, "keyspace_misses") - misses_before;
  std::printf("\nredis INFO stats during the run: keyspace_hits +%llu, "
              "keyspace_misses +%llu; keys fetched with MGET: %llu\n",
              static_cast<unsigned long long>(hits),
              static_cast<unsigned long long>(misses),
              static_cast<unsigned long long>(redis_keys_fetched));
  redis_load.reset();
  Stop(redis_child);
  Stop(ps_child);
  if (!ps_data_dir.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(ps_data_dir, ec);
  }
  return misses == 0 && hits == redis_keys_fetched ? 0 : 1;
}
