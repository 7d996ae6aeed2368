// Child processes for integration tests: parameter-server shards started
// from the real //ps:server binary, and one-shot commands (ps_admin) with
// their output captured.
//
// Thread-safety: not thread-safe; each object belongs to one test thread.
#ifndef MIM_TESTS_PROCESS_H_
#define MIM_TESTS_PROCESS_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace mim::testing {

// Path of a binary in the test's runfiles, e.g. Runfile("ps/server").
std::string Runfile(const std::string& path);

// Field `name` of /proc/PID/status ("VmRSS", "VmHWM": a process's resident
// and peak resident memory) in MiB; -1 when the process or field is gone.
double ProcStatusMiB(pid_t pid, const std::string& name);

// A running shard. The destructor sends SIGTERM and reaps it.
class ShardProcess {
 public:
  struct Flags {
    uint32_t shard_index = 0;
    uint32_t num_shards = 1;
    std::string data_dir;
    int port = 0;  // 0: the shard picks one; read it from port()
    std::vector<std::string> extra;  // more --flag=value
  };

  // Starts the server and returns once it has printed its "listening on"
  // line (it accepts calls from then on), or fails with the reason and the
  // exit status if it ended first or printed nothing within 60 s.
  static absl::StatusOr<std::unique_ptr<ShardProcess>> Start(
      const Flags& flags);

  // Starts shards 0..num_shards-1 of one cluster, shard i keeping its data
  // in dir/shard<i>, each with the `extra` flags.
  static absl::StatusOr<std::vector<std::unique_ptr<ShardProcess>>>
  StartCluster(const std::string& dir, uint32_t num_shards,
               const std::vector<std::string>& extra = {});

  // Replaces *shard (still running or already killed; a running one gets
  // SIGTERM) by a new process with the same flags on the same port and
  // data_dir, as a restart after a crash would.
  static absl::Status Restart(std::unique_ptr<ShardProcess>* shard);

  // The shards' "host:port" addresses, in shard order (PsClient::Create's
  // argument; joined with ',' for a --ps flag).
  static std::vector<std::string> Addresses(
      const std::vector<std::unique_ptr<ShardProcess>>& shards);

  ~ShardProcess();

  int port() const { return port_; }
  std::string address() const;
  const Flags& flags() const { return flags_; }
  pid_t pid() const { return pid_; }

  // Sends `signal` and waits for the exit; returns the wait status.
  int Kill(int signal);
  // Waits for the process to end by itself (e.g. a fault injected with a
  // test-only flag); returns the wait status.
  int Wait() { return Kill(0); }

 private:
  ShardProcess(const Flags& flags, pid_t pid, int stdout_fd, int port)
      : flags_(flags), pid_(pid), stdout_fd_(stdout_fd), port_(port) {}

  Flags flags_;
  pid_t pid_;
  int stdout_fd_;
  int port_;
};

// A long-running server started from a binary that prints one line
// "... listening on HOST:PORT" on stdout when it accepts calls (the
// serving tier). The destructor sends SIGTERM and reaps it.
class ServerProcess {
 public:
  // Starts argv and waits up to 60 s for the line (and, with
  // `expect_metrics`, for the next one, "metrics listening on ADDR:PORT");
  // fails with the output and exit status if the process ended first.
  static absl::StatusOr<std::unique_ptr<ServerProcess>> Start(
      const std::vector<std::string>& argv, bool expect_metrics = false);
  ~ServerProcess();
  int port() const { return port_; }
  int metrics_port() const { return metrics_port_; }  // -1: none
  std::string address() const;
  pid_t pid() const { return pid_; }
  const std::vector<std::string>& argv() const { return argv_; }
  // Sends `signal` and waits for the exit; returns the wait status.
  int Kill(int signal);

 private:
  ServerProcess(std::vector<std::string> argv, pid_t pid, int stdout_fd,
                int port)
      : argv_(std::move(argv)), pid_(pid), stdout_fd_(stdout_fd), port_(port) {}
  std::vector<std::string> argv_;
  pid_t pid_;
  int stdout_fd_;
  int port_;
  int metrics_port_ = -1;
};

struct CommandResult {
  int exit_code = -1;  // -1 when killed by a signal
  std::string out;
  std::string err;
};

// Runs argv[0] with arguments to completion, capturing stdout and stderr.
absl::StatusOr<CommandResult> RunCommand(const std::vector<std::string>& argv);

}  // namespace mim::testing

#endif  // MIM_TESTS_PROCESS_H_
