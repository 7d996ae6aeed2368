#include "worker/trainer_progress.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"

namespace mim::worker {
namespace {

constexpr int kBarWidth = 20;

std::string Clock(double seconds) {
  const int64_t s = static_cast<int64_t>(std::max(0.0, seconds) + 0.5);
  if (s >= 3600) {
    return absl::StrFormat("%d:%02d:%02d", s / 3600, (s / 60) % 60, s % 60);
  }
  return absl::StrFormat("%d:%02d", s / 60, s % 60);
}

}  // namespace

ProgressStyle ProgressStyleFor(const std::ostream* out) {
  if ((out == &std::cerr || out == &std::clog) && isatty(STDERR_FILENO) == 1) {
    return ProgressStyle::kInPlace;
  }
  if (out == &std::cout && isatty(STDOUT_FILENO) == 1) {
    return ProgressStyle::kInPlace;
  }
  return ProgressStyle::kLines;
}

ProgressBar::ProgressBar(std::ostream* out, int epoch, int num_epochs,
                         int64_t total_samples)
    : ProgressBar(out, epoch, num_epochs, total_samples,
                  ProgressStyleFor(out)) {}

ProgressBar::ProgressBar(std::ostream* out, int epoch, int num_epochs,
                         int64_t total_samples, ProgressStyle style)
    : out_(out),
      style_(style),
      epoch_(epoch),
      num_epochs_(num_epochs),
      total_(total_samples),
      start_(absl::Now()),
      last_draw_(absl::InfinitePast()) {}

std::string ProgressBar::Format(int epoch, int num_epochs, int64_t done,
                                int64_t total, double samples_per_sec,
                                double loss, bool finished) {
  std::string line = absl::StrFormat("epoch %d/%d ", epoch, num_epochs);
  if (total > 0) {
    const double fraction =
        std::clamp(static_cast<double>(done) / total, 0.0, 1.0);
    const int filled = static_cast<int>(fraction * kBarWidth);
    std::string bar(kBarWidth, ' ');
    for (int i = 0; i < filled; ++i) bar[i] = '=';
    if (filled < kBarWidth) bar[filled] = '>';
    absl::StrAppendFormat(&line, "[%s] %5.1f%%  %d/%d", bar, 100 * fraction,
                          done, total);
  } else {
    absl::StrAppendFormat(&line, "%d", done);
  }
  absl::StrAppendFormat(&line, "  %.0f samples/s  loss %.4f", samples_per_sec,
                        loss);
  if (finished) {
    absl::StrAppend(&line, "  done");
  } else if (total > 0 && samples_per_sec > 0) {
    absl::StrAppend(&line, "  ETA ",
                    Clock(std::max<int64_t>(0, total - done) / samples_per_sec));
  }
  return line;
}

void ProgressBar::Update(int64_t samples_done, double loss) {
  const absl::Time now = absl::Now();
  const absl::Duration every = style_ == ProgressStyle::kInPlace
                                   ? absl::Milliseconds(200)
                                   : kLinesInterval;
  if (now - last_draw_ < every) return;
  last_draw_ = now;
  Draw(samples_done, loss, false);
}

void ProgressBar::Finish(int64_t samples_done, double loss) {
  Draw(samples_done, loss, true);
  if (out_ != nullptr && style_ == ProgressStyle::kInPlace) {
    *out_ << "\n" << std::flush;
  }
}

void ProgressBar::Draw(int64_t samples_done, double loss, bool finished) {
  if (out_ == nullptr) return;
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start_);
  const double rate = seconds > 0 ? samples_done / seconds : 0.0;
  const std::string line =
      Format(epoch_, num_epochs_, samples_done, total_, rate, loss, finished);
  if (style_ == ProgressStyle::kLines) {
    *out_ << line << "\n" << std::flush;
    return;
  }
  // Trailing blanks clear the tail of a longer previous line.
  *out_ << "\r" << line << "    " << std::flush;
}

}  // namespace mim::worker
