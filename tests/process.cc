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
#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
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

// Sends `signal` to *pid (if still ours), reaps it, closes `fd`; returns
// the wait status. Sets *pid to 0.
int KillAndReap(pid_t* pid, int fd, int signal) {
  if (*pid <= 0) return 0;
  kill(*pid, signal);
  int status = 0;
  waitpid(*pid, &status, 0);
  *pid = 0;
  close(fd);
  return status;
}

// A server child process whose first `lines` stdout lines were read.
struct Launched {
  pid_t pid = 0;
  int stdout_fd = -1;
  std::vector<std::string> lines;
};

// Spawns argv with stdout on a pipe and reads until `lines` complete lines
// are out, bounded by 60 s. Fails (killing the child) with its output and
// exit status if it ended or stayed silent; `what` names it.
absl::StatusOr<Launched> LaunchAndAwaitLines(
    const std::vector<std::string>& argv, size_t lines,
    const std::string& what) {
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
  while (static_cast<size_t>(std::count(out.begin(), out.end(), '\n')) <
         lines) {
    const int64_t left = absl::ToInt64Milliseconds(deadline - absl::Now());
    pollfd p = {fds[0], POLLIN, 0};
    const int ready = left > 0 ? poll(&p, 1, static_cast<int>(left)) : 0;
    char buf[512];
    const ssize_t n = ready > 0 ? read(fds[0], buf, sizeof(buf)) : 0;
    if (n <= 0) {
      pid_t child = *pid;
      const int status = KillAndReap(&child, fds[0], SIGKILL);
      return absl::UnavailableError(absl::StrCat(
          what, " did not report listening (",
          ready == 0 ? "timeout" : "stdout closed", "; ", DescribeWait(status),
          "); output: ", out));
    }
    out.append(buf, static_cast<size_t>(n));
  }
  Launched launched{*pid, fds[0], {}};
  for (absl::string_view line : absl::StrSplit(out, '\n')) {
    if (launched.lines.size() == lines) break;
    launched.lines.emplace_back(line);
  }
  return launched;
}

// The port of a line "<prefix>... listening on HOST:PORT" (only that line:
// a later line's address is never taken for it).
bool ListeningPort(const std::string& line, absl::string_view prefix,
                   int* port) {
  const size_t colon = line.rfind(':');
  return absl::StartsWith(line, prefix) &&
         absl::StrContains(line, "listening on") &&
         colon != std::string::npos &&
         absl::SimpleAtoi(line.substr(colon + 1), port);
}

}  // namespace

double ProcStatusMiB(pid_t pid, const std::string& name) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.size() > name.size() && line.compare(0, name.size(), name) == 0 &&
        line[name.size()] == ':') {
      return std::strtod(line.c_str() + name.size() + 1, nullptr) / 1024.0;
    }
  }
  return -1;
}

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
  absl::StatusOr<Launched> launched = LaunchAndAwaitLines(
      argv, 1, absl::StrCat("shard ", flags.shard_index));
  if (!launched.ok()) return launched.status();
  // "ps shard I/N listening on HOST:PORT"
  int port = 0;
  if (!ListeningPort(launched->lines[0], "ps shard ", &port)) {
    KillAndReap(&launched->pid, launched->stdout_fd, SIGKILL);
    return absl::InternalError("unexpected server output: " +
                               launched->lines[0]);
  }
  return std::unique_ptr<ShardProcess>(
      new ShardProcess(flags, launched->pid, launched->stdout_fd, port));
}

std::string ShardProcess::address() const {
  return absl::StrCat("127.0.0.1:", port_);
}

int ShardProcess::Kill(int signal) {
  return KillAndReap(&pid_, stdout_fd_, signal);
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

std::vector<std::string> ShardProcess::Addresses(
    const std::vector<std::unique_ptr<ShardProcess>>& shards) {
  std::vector<std::string> out;
  for (const auto& shard : shards) out.push_back(shard->address());
  return out;
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
  absl::StatusOr<Launched> launched =
      LaunchAndAwaitLines(argv, expect_metrics ? 2 : 1, argv[0]);
  if (!launched.ok()) return launched.status();
  int port = 0;
  int metrics_port = -1;
  if (!ListeningPort(launched->lines[0], "", &port) ||
      (expect_metrics &&
       !ListeningPort(launched->lines[1], "metrics listening on ",
                      &metrics_port))) {
    KillAndReap(&launched->pid, launched->stdout_fd, SIGKILL);
    return absl::InternalError(
        "unexpected server output: " +
        absl::StrJoin(launched->lines, "\n"));
  }
  auto server = std::unique_ptr<ServerProcess>(new ServerProcess(
      argv, launched->pid, launched->stdout_fd, port));
  server->metrics_port_ = metrics_port;
  return server;
}

std::string ServerProcess::address() const {
  return absl::StrCat("127.0.0.1:", port_);
}

int ServerProcess::Kill(int signal) {
  return KillAndReap(&pid_, stdout_fd_, signal);
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
