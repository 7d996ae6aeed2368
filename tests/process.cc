#include "tests/process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

extern char** environ;

namespace mim::testing {
namespace {

absl::Status Errno(const std::string& what) {
  return absl::InternalError(absl::StrCat(what, ": ", std::strerror(errno)));
}

// Spawns argv with stdout to `out_fd` and stderr to `err_fd` (-1: inherit).
absl::StatusOr<pid_t> Spawn(const std::vector<std::string>& argv, int out_fd,
                            int err_fd, const std::vector<int>& close_fds) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (out_fd >= 0) posix_spawn_file_actions_adddup2(&actions, out_fd, 1);
  if (err_fd >= 0) posix_spawn_file_actions_adddup2(&actions, err_fd, 2);
  for (int fd : close_fds) posix_spawn_file_actions_addclose(&actions, fd);
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, args[0], &actions, nullptr, args.data(),
                             environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    return absl::InternalError(
        absl::StrCat("posix_spawn ", argv[0], ": ", std::strerror(rc)));
  }
  return pid;
}

std::string DescribeWait(int status) {
  if (WIFEXITED(status)) return absl::StrCat("exit ", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return absl::StrCat("signal ", WTERMSIG(status));
  return absl::StrCat("wait status ", status);
}

}  // namespace

std::string Runfile(const std::string& path) {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  return absl::StrCat(srcdir == nullptr ? "." : srcdir, "/mim/", path);
}

absl::StatusOr<std::unique_ptr<ShardProcess>> ShardProcess::Start(
    const Flags& flags) {
  std::vector<std::string> argv = {
      Runfile("ps/server"),
      "--host=127.0.0.1",
      absl::StrCat("--port=", flags.port),
      absl::StrCat("--shard_index=", flags.shard_index),
      absl::StrCat("--num_shards=", flags.num_shards),
      absl::StrCat("--data_dir=", flags.data_dir),
      "--threads=4"};
  argv.insert(argv.end(), flags.extra.begin(), flags.extra.end());
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return Errno("pipe");
  absl::StatusOr<pid_t> pid = Spawn(argv, fds[1], -1, {fds[0]});
  close(fds[1]);
  if (!pid.ok()) {
    close(fds[0]);
    return pid.status();
  }
  // Read until the readiness line, bounded by a deadline.
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  std::string out;
  while (out.find('\n') == std::string::npos) {
    const int64_t left = absl::ToInt64Milliseconds(deadline - absl::Now());
    pollfd p = {fds[0], POLLIN, 0};
    const int ready = left > 0 ? poll(&p, 1, static_cast<int>(left)) : 0;
    char buf[512];
    const ssize_t n = ready > 0 ? read(fds[0], buf, sizeof(buf)) : 0;
    if (n <= 0) {
      kill(*pid, SIGKILL);
      int status = 0;
      waitpid(*pid, &status, 0);
      close(fds[0]);
      return absl::UnavailableError(absl::StrCat(
          "shard ", flags.shard_index, " did not report listening (",
          ready == 0 ? "timeout" : "stdout closed", "; ", DescribeWait(status),
          "); output: ", out));
    }
    out.append(buf, static_cast<size_t>(n));
  }
  // "ps shard I/N listening on HOST:PORT"
  const size_t colon = out.rfind(':');
  int port = 0;
  if (!absl::StrContains(out, "listening on") || colon == std::string::npos ||
      !absl::SimpleAtoi(out.substr(colon + 1, out.find('\n') - colon - 1),
                        &port)) {
    kill(*pid, SIGKILL);
    waitpid(*pid, nullptr, 0);
    close(fds[0]);
    return absl::InternalError("unexpected server output: " + out);
  }
  return std::unique_ptr<ShardProcess>(
      new ShardProcess(flags, *pid, fds[0], port));
}

std::string ShardProcess::address() const {
  return absl::StrCat("127.0.0.1:", port_);
}

int ShardProcess::Kill(int signal) {
  if (pid_ <= 0) return 0;
  kill(pid_, signal);
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = 0;
  close(stdout_fd_);
  return status;
}

ShardProcess::~ShardProcess() { Kill(SIGTERM); }

absl::StatusOr<std::vector<std::unique_ptr<ShardProcess>>>
ShardProcess::StartCluster(const std::string& dir, uint32_t num_shards,
                           const std::vector<std::string>& extra) {
  std::vector<std::unique_ptr<ShardProcess>> shards;
  for (uint32_t s = 0; s < num_shards; ++s) {
    Flags flags;
    flags.shard_index = s;
    flags.num_shards = num_shards;
    flags.data_dir = absl::StrCat(dir, "/shard", s);
    flags.extra = extra;
    absl::StatusOr<std::unique_ptr<ShardProcess>> shard = Start(flags);
    if (!shard.ok()) return shard.status();
    shards.push_back(std::move(*shard));
  }
  return shards;
}

absl::Status ShardProcess::Restart(std::unique_ptr<ShardProcess>* shard) {
  Flags flags = (*shard)->flags();
  flags.port = (*shard)->port();
  shard->reset();
  absl::StatusOr<std::unique_ptr<ShardProcess>> fresh = Start(flags);
  if (!fresh.ok()) return fresh.status();
  *shard = std::move(*fresh);
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<ServerProcess>> ServerProcess::Start(
    const std::vector<std::string>& argv, bool expect_metrics) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return Errno("pipe");
  absl::StatusOr<pid_t> pid = Spawn(argv, fds[1], -1, {fds[0]});
  close(fds[1]);
  if (!pid.ok()) {
    close(fds[0]);
    return pid.status();
  }
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  std::string out;
  const size_t lines = expect_metrics ? 2 : 1;
  while (static_cast<size_t>(std::count(out.begin(), out.end(), '\n')) <
         lines) {
    const int64_t left = absl::ToInt64Milliseconds(deadline - absl::Now());
    pollfd p = {fds[0], POLLIN, 0};
    const int ready = left > 0 ? poll(&p, 1, static_cast<int>(left)) : 0;
    char buf[512];
    const ssize_t n = ready > 0 ? read(fds[0], buf, sizeof(buf)) : 0;
    if (n <= 0) {
      kill(*pid, SIGKILL);
      int status = 0;
      waitpid(*pid, &status, 0);
      close(fds[0]);
      return absl::UnavailableError(absl::StrCat(
          argv[0], " did not report listening (",
          ready == 0 ? "timeout" : "stdout closed", "; ", DescribeWait(status),
          "); output: ", out));
    }
    out.append(buf, static_cast<size_t>(n));
  }
  const std::string line = out.substr(0, out.find('\n'));
  const size_t colon = line.rfind(':');
  int port = 0;
  if (!absl::StrContains(line, "listening on") || colon == std::string::npos ||
      !absl::SimpleAtoi(line.substr(colon + 1), &port)) {
    kill(*pid, SIGKILL);
    waitpid(*pid, nullptr, 0);
    close(fds[0]);
    return absl::InternalError("unexpected server output: " + out);
  }
  auto server = std::unique_ptr<ServerProcess>(
      new ServerProcess(argv, *pid, fds[0], port));
  if (expect_metrics) {
    const size_t start = out.find('\n') + 1;
    const std::string second = out.substr(start, out.find('\n', start) - start);
    const size_t c = second.rfind(':');
    if (!absl::StartsWith(second, "metrics listening on ") ||
        c == std::string::npos ||
        !absl::SimpleAtoi(second.substr(c + 1), &server->metrics_port_)) {
      return absl::InternalError("unexpected metrics line: " + out);
    }
  }
  return server;
}

std::string ServerProcess::address() const {
  return absl::StrCat("127.0.0.1:", port_);
}

int ServerProcess::Kill(int signal) {
  if (pid_ <= 0) return 0;
  kill(pid_, signal);
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = 0;
  close(stdout_fd_);
  return status;
}

ServerProcess::~ServerProcess() { Kill(SIGTERM); }

absl::StatusOr<CommandResult> RunCommand(const std::vector<std::string>& argv) {
  int out_pipe[2];
  int err_pipe[2];
  if (pipe2(out_pipe, O_CLOEXEC) != 0) return Errno("pipe");
  if (pipe2(err_pipe, O_CLOEXEC) != 0) return Errno("pipe");
  absl::StatusOr<pid_t> pid =
      Spawn(argv, out_pipe[1], err_pipe[1], {out_pipe[0], err_pipe[0]});
  close(out_pipe[1]);
  close(err_pipe[1]);
  CommandResult result;
  if (pid.ok()) {
    // Drain both pipes until both reach EOF (the command has exited or
    // closed them), so neither can fill up and block the child.
    pollfd p[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
    std::string* sinks[2] = {&result.out, &result.err};
    int open_fds = 2;
    while (open_fds > 0) {
      if (poll(p, 2, -1) < 0 && errno != EINTR) break;
      for (int i = 0; i < 2; ++i) {
        if (p[i].fd < 0 || p[i].revents == 0) continue;
        char buf[4096];
        const ssize_t n = read(p[i].fd, buf, sizeof(buf));
        if (n > 0) {
          sinks[i]->append(buf, static_cast<size_t>(n));
        } else {
          p[i].fd = -1;
          --open_fds;
        }
      }
    }
    int status = 0;
    waitpid(*pid, &status, 0);
    result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }
  close(out_pipe[0]);
  close(err_pipe[0]);
  if (!pid.ok()) return pid.status();
  return result;
}

}  // namespace mim::testing
