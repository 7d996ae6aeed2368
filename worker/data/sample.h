// One training/evaluation example for the CiUBM CTR models, and its text
// encoding (format "mim-samples v1", see docs/DATA_FORMAT.md).
//
// A sample file is UTF-8 text: one header line (kSampleHeader) followed by
// one tab-separated row per sample:
//
//   ts  user  item  label  age  gender  occupation  genres  behavior
//
// `genres` and `behavior` are comma-separated integer lists and may be empty.
// Rows are written in (ts, user, item) order by the tools in tools/, so a
// single pass over a file also yields each item's first-seen timestamp.
#ifndef MIM_WORKER_DATA_SAMPLE_H_
#define MIM_WORKER_DATA_SAMPLE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace mim::data {

// First line of every sample file; names the format version and the columns.
inline constexpr absl::string_view kSampleHeader =
    "#mim-samples v1\tts\tuser\titem\tlabel\tage\tgender\toccupation\tgenres"
    "\tbehavior";

// Longest behaviour sequence a sample carries (the most recent items win).
inline constexpr int kMaxBehaviorLength = 50;

// Plain value type; not thread-safe (no shared state, copy freely).
struct Sample {
  int64_t timestamp = 0;  // Unix seconds.
  int64_t user_id = 0;
  int64_t item_id = 0;    // The target item.
  int32_t label = 0;      // 1 = positive (click / rating >= 4), else 0.
  // User side features as small non-negative ints; 0 means unknown.
  int32_t age_bucket = 0;
  int32_t gender = 0;
  int32_t occupation = 0;
  std::vector<int32_t> genres;    // Target item's genres (multi-hot as ids).
  std::vector<int64_t> behavior;  // Earlier positive items, most recent last,
                                  // at most kMaxBehaviorLength.

  friend bool operator==(const Sample& a, const Sample& b);
};

// Returns the row for `s` without a trailing newline.
std::string FormatSample(const Sample& s);

// Parses one row (no trailing newline) into `*out`.
// On failure returns INVALID_ARGUMENT whose message names the field and the
// offending text; `*out` is then unspecified. Checks: exactly 9 columns,
// integers in range, label in {0,1}, ids/features non-negative, behaviour no
// longer than kMaxBehaviorLength.
absl::Status ParseSample(absl::string_view line, Sample* out);

}  // namespace mim::data

#endif  // MIM_WORKER_DATA_SAMPLE_H_
