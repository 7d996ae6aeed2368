// A one-line training progress bar: on a terminal rewritten in place with
// '\r' (at most a few times per second) and ended with '\n' once per epoch;
// elsewhere (a log file, a pipe, CI) one plain line every few seconds.
//
//   epoch 1/2 [=========>          ]  48.2%  24576/51000  9120 samples/s
//   loss 0.5231  ETA 0:03
#ifndef MIM_WORKER_TRAINER_PROGRESS_H_
#define MIM_WORKER_TRAINER_PROGRESS_H_

#include <cstdint>
#include <ostream>
#include <string>

#include "absl/time/time.h"

namespace mim::worker {

enum class ProgressStyle {
  kInPlace,  // '\r' redraws, for a terminal
  kLines,    // a full line every kLinesInterval, for logs and pipes
};

// kInPlace when `out` is std::cerr / std::clog and stderr is a terminal (or
// std::cout and stdout is one); kLines otherwise.
ProgressStyle ProgressStyleFor(const std::ostream* out);

// Not thread-safe: owned by the training loop.
class ProgressBar {
 public:
  static constexpr absl::Duration kLinesInterval = absl::Seconds(5);

  // `out` may be null (no output). `total_samples` is this worker's
  // expected sample count for the epoch (0 if unknown: no percentage/ETA).
  // The style is ProgressStyleFor(out) unless given.
  ProgressBar(std::ostream* out, int epoch, int num_epochs,
              int64_t total_samples);
  ProgressBar(std::ostream* out, int epoch, int num_epochs,
              int64_t total_samples, ProgressStyle style);

  // Reports `samples_done` so far this epoch and a smoothed loss; redraws
  // when at least 200 ms passed since the last draw.
  void Update(int64_t samples_done, double loss);

  // Draws the final state and ends the line.
  void Finish(int64_t samples_done, double loss);

  // The line for the given state (exposed for tests).
  static std::string Format(int epoch, int num_epochs, int64_t done,
                            int64_t total, double samples_per_sec,
                            double loss, bool finished);

 private:
  void Draw(int64_t samples_done, double loss, bool finished);

  std::ostream* out_;
  ProgressStyle style_;
  int epoch_;
  int num_epochs_;
  int64_t total_;
  absl::Time start_;
  absl::Time last_draw_;
};

}  // namespace mim::worker

#endif  // MIM_WORKER_TRAINER_PROGRESS_H_
