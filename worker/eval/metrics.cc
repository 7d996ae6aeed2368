#include "worker/eval/metrics.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace mim::eval {
namespace {

// AUC of (score, label) pairs with labels already validated; nullopt when a
// class is absent. Sorts a copy of the indices by score and gives each run
// of tied scores its average rank.
std::optional<double> AucOf(const std::vector<double>& scores,
                            const std::vector<int>& labels) {
  const size_t n = scores.size();
  int64_t positives = 0;
  for (int l : labels) positives += l;
  const int64_t negatives = static_cast<int64_t>(n) - positives;
  if (positives == 0 || negatives == 0) return std::nullopt;
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return scores[a] < scores[b]; });
  // Sum of the (1-based, tie-averaged) ranks of the positives.
  double positive_rank_sum = 0.0;
  size_t i = 0;
  while (i < n) {
    size_t j = i;
    int64_t run_positives = 0;
    while (j < n && scores[order[j]] == scores[order[i]]) {
      run_positives += labels[order[j]];
      ++j;
    }
    const double average_rank = (static_cast<double>(i + 1) + j) / 2.0;
    positive_rank_sum += average_rank * run_positives;
    i = j;
  }
  const double u = positive_rank_sum -
                   static_cast<double>(positives) * (positives + 1) / 2.0;
  return u / (static_cast<double>(positives) * negatives);
}

GroupAuc GroupOf(absl::Span<const Prediction> predictions,
                 const std::vector<size_t>& members,
                 const std::vector<int64_t>& counts) {
  GroupAuc group;
  group.n = static_cast<int64_t>(members.size());
  if (members.empty()) return group;
  std::vector<double> scores;
  std::vector<int> labels;
  scores.reserve(members.size());
  labels.reserve(members.size());
  group.min_count = counts[members.front()];
  group.max_count = counts[members.front()];
  for (size_t m : members) {
    scores.push_back(predictions[m].prob);
    labels.push_back(predictions[m].label);
    group.positives += predictions[m].label;
    group.min_count = std::min(group.min_count, counts[m]);
    group.max_count = std::max(group.max_count, counts[m]);
  }
  group.auc = AucOf(scores, labels);
  return group;
}

std::vector<int64_t> TrainCounts(
    absl::Span<const Prediction> predictions,
    const absl::flat_hash_map<int64_t, int64_t>& train_item_counts) {
  std::vector<int64_t> counts(predictions.size(), 0);
  for (size_t i = 0; i < predictions.size(); ++i) {
    auto it = train_item_counts.find(predictions[i].item_id);
    if (it != train_item_counts.end()) counts[i] = it->second;
  }
  return counts;
}

}  // namespace

absl::StatusOr<double> Auc(absl::Span<const double> scores,
                           absl::Span<const int> labels) {
  if (scores.size() != labels.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("Auc: ", scores.size(), " scores but ", labels.size(),
                     " labels; expected equal sizes"));
  }
  for (size_t i = 0; i < labels.size(); ++i) {
    if (labels[i] != 0 && labels[i] != 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "Auc: label[", i, "] = ", labels[i], "; expected 0 or 1"));
    }
  }
  std::optional<double> auc =
      AucOf(std::vector<double>(scores.begin(), scores.end()),
            std::vector<int>(labels.begin(), labels.end()));
  if (!auc.has_value()) {
    return absl::FailedPreconditionError(
        "Auc: needs at least one positive and one negative label");
  }
  return *auc;
}

absl::StatusOr<GaucResult> Gauc(absl::Span<const Prediction> predictions) {
  absl::flat_hash_map<int64_t, std::vector<size_t>> by_user;
  for (size_t i = 0; i < predictions.size(); ++i) {
    by_user[predictions[i].user_id].push_back(i);
  }
  // Sorted users, so that floating-point summation order is deterministic.
  std::vector<int64_t> users;
  users.reserve(by_user.size());
  for (const auto& [user, unused] : by_user) users.push_back(user);
  std::sort(users.begin(), users.end());
  GaucResult result;
  double weighted = 0.0;
  std::vector<double> scores;
  std::vector<int> labels;
  for (int64_t user : users) {
    const std::vector<size_t>& rows = by_user[user];
    scores.clear();
    labels.clear();
    for (size_t r : rows) {
      scores.push_back(predictions[r].prob);
      labels.push_back(predictions[r].label);
    }
    std::optional<double> auc = AucOf(scores, labels);
    if (!auc.has_value()) continue;
    weighted += *auc * static_cast<double>(rows.size());
    result.samples += static_cast<int64_t>(rows.size());
    ++result.users;
  }
  if (result.users == 0) {
    return absl::FailedPreconditionError(
        "Gauc: no user has both a positive and a negative sample");
  }
  result.gauc = weighted / static_cast<double>(result.samples);
  return result;
}

absl::StatusOr<double> LogLoss(absl::Span<const Prediction> predictions) {
  if (predictions.empty()) {
    return absl::InvalidArgumentError("LogLoss: no predictions");
  }
  constexpr double kEps = 1e-7;
  double sum = 0.0;
  for (const Prediction& p : predictions) {
    const double q = std::clamp(p.prob, kEps, 1.0 - kEps);
    sum -= p.label == 1 ? std::log(q) : std::log(1.0 - q);
  }
  return sum / static_cast<double>(predictions.size());
}

GroupAuc ColdAuc(
    absl::Span<const Prediction> predictions,
    const absl::flat_hash_map<int64_t, int64_t>& train_item_counts) {
  const std::vector<int64_t> counts =
      TrainCounts(predictions, train_item_counts);
  std::vector<size_t> members;
  for (size_t i = 0; i < predictions.size(); ++i) {
    if (counts[i] == 0) members.push_back(i);
  }
  return GroupOf(predictions, members, counts);
}

absl::StatusOr<std::vector<GroupAuc>> AucByItemFrequency(
    absl::Span<const Prediction> predictions,
    const absl::flat_hash_map<int64_t, int64_t>& train_item_counts,
    int num_groups) {
  if (num_groups < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "AucByItemFrequency: num_groups = ", num_groups, "; expected >= 1"));
  }
  const std::vector<int64_t> counts =
      TrainCounts(predictions, train_item_counts);
  std::vector<size_t> order(predictions.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return counts[a] < counts[b];
  });
  const size_t n = order.size();
  std::vector<GroupAuc> groups;
  groups.reserve(num_groups);
  for (int g = 0; g < num_groups; ++g) {
    const size_t begin = n * g / num_groups;
    const size_t end = n * (g + 1) / num_groups;
    std::vector<size_t> members(order.begin() + begin, order.begin() + end);
    groups.push_back(GroupOf(predictions, members, counts));
  }
  return groups;
}

}  // namespace mim::eval
