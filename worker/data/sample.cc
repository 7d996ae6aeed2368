#include "worker/data/sample.h"

#include <algorithm>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace mim::data {
namespace {

constexpr const char* kFieldNames[] = {"ts",     "user",       "item",
                                       "label",  "age",        "gender",
                                       "occupation", "genres", "behavior"};
constexpr int kNumColumns = 9;

absl::Status FieldError(int column, absl::string_view text,
                        absl::string_view expected) {
  return absl::InvalidArgumentError(
      absl::StrCat("field '", kFieldNames[column], "' (column ", column + 1,
                   "): got '", text, "', expected ", expected));
}

absl::Status ParseNonNegative(int column, absl::string_view text,
                              int64_t max_value, int64_t* out) {
  int64_t v;
  if (!absl::SimpleAtoi(text, &v) || v < 0 || v > max_value) {
    return FieldError(column, text,
                      absl::StrCat("an integer in [0, ", max_value, "]"));
  }
  *out = v;
  return absl::OkStatus();
}

template <typename T>
absl::Status ParseList(int column, absl::string_view text, size_t max_len,
                       std::vector<T>* out) {
  out->clear();
  if (text.empty()) return absl::OkStatus();
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    int64_t v;
    if (!absl::SimpleAtoi(part, &v) || v < 0 ||
        v > std::numeric_limits<T>::max()) {
      return FieldError(column, text,
                        "a comma-separated list of non-negative integers");
    }
    out->push_back(static_cast<T>(v));
  }
  if (out->size() > max_len) {
    return FieldError(column, text,
                      absl::StrCat("at most ", max_len, " entries"));
  }
  return absl::OkStatus();
}

}  // namespace

bool operator==(const Sample& a, const Sample& b) {
  return a.timestamp == b.timestamp && a.user_id == b.user_id &&
         a.item_id == b.item_id && a.label == b.label &&
         a.age_bucket == b.age_bucket && a.gender == b.gender &&
         a.occupation == b.occupation && a.genres == b.genres &&
         a.behavior == b.behavior;
}

std::string FormatSample(const Sample& s) {
  return absl::StrCat(s.timestamp, "\t", s.user_id, "\t", s.item_id, "\t",
                      s.label, "\t", s.age_bucket, "\t", s.gender, "\t",
                      s.occupation, "\t", absl::StrJoin(s.genres, ","), "\t",
                      absl::StrJoin(s.behavior, ","));
}

absl::Status ParseSample(absl::string_view line, Sample* out) {
  std::vector<absl::string_view> cols = absl::StrSplit(line, '\t');
  if (cols.size() != kNumColumns) {
    return absl::InvalidArgumentError(
        absl::StrCat("got ", cols.size(), " tab-separated columns, expected ",
                     kNumColumns, " (ts user item label age gender occupation "
                     "genres behavior)"));
  }
  constexpr int64_t kMax64 = std::numeric_limits<int64_t>::max();
  constexpr int64_t kMax32 = std::numeric_limits<int32_t>::max();
  int64_t v;
  absl::Status st;
  if (!(st = ParseNonNegative(0, cols[0], kMax64, &out->timestamp)).ok())
    return st;
  if (!(st = ParseNonNegative(1, cols[1], kMax64, &out->user_id)).ok())
    return st;
  if (!(st = ParseNonNegative(2, cols[2], kMax64, &out->item_id)).ok())
    return st;
  if (!(st = ParseNonNegative(3, cols[3], 1, &v)).ok()) return st;
  out->label = static_cast<int32_t>(v);
  if (!(st = ParseNonNegative(4, cols[4], kMax32, &v)).ok()) return st;
  out->age_bucket = static_cast<int32_t>(v);
  if (!(st = ParseNonNegative(5, cols[5], kMax32, &v)).ok()) return st;
  out->gender = static_cast<int32_t>(v);
  if (!(st = ParseNonNegative(6, cols[6], kMax32, &v)).ok()) return st;
  out->occupation = static_cast<int32_t>(v);
  if (!(st = ParseList(7, cols[7], std::numeric_limits<size_t>::max(),
                       &out->genres))
           .ok())
    return st;
  // A set, as Predict and UpsertItem take it: a repeat would weigh the
  // genre twice in the model's mean over the item's genres (and in C-SFT's
  // encoder), where serving refuses it.
  if (out->genres.size() > 1) {
    std::vector<int32_t> sorted = out->genres;
    std::sort(sorted.begin(), sorted.end());
    const auto repeat = std::adjacent_find(sorted.begin(), sorted.end());
    if (repeat != sorted.end()) {
      return FieldError(7, cols[7],
                        absl::StrCat("distinct genre ids (", *repeat,
                                     " appears twice)"));
    }
  }
  return ParseList(8, cols[8], kMaxBehaviorLength, &out->behavior);
}

}  // namespace mim::data
