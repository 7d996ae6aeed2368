// The trainer's metrics file (--metrics_out): one JSON object with the model
// name, every flag, training throughput and loss curve, and the evaluation
// metrics. Top-level keys:
//   model, flags{name: value}, worker{index, num_workers}, dense_params,
//   tables{id, content, content_version, dense},
//   train_samples, train_batches, pushes_in_doubt (gradient pushes that got
//   no answer in time after sending, each resent later and applied once),
//   train_seconds, train_samples_per_sec,
//   train_items, validation_cutoff, loss_curve[{epoch, batch, samples, loss}],
//   eval_source, eval_path, eval_n, eval_positives, eval_seconds,
//   auc, gauc, gauc_users, logloss,
//   cold_auc (AUC over test samples whose item has no training sample),
//   cold{n, positives, min_count, max_count, auc},
//   auc_by_item_frequency[{group, min_count, max_count, n, positives, auc}],
//   model_files[].
// Metrics that could not be computed (a class missing, or a worker other
// than 0, which does not evaluate) are null.
#ifndef MIM_WORKER_TRAINER_REPORT_H_
#define MIM_WORKER_TRAINER_REPORT_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "worker/trainer.h"

namespace mim::worker {

// Returns the JSON text (pretty-printed). Pure; safe for concurrent use.
std::string MetricsJson(
    const TrainReport& report, const TrainerOptions& options,
    const std::vector<std::pair<std::string, std::string>>& flags);

// Writes MetricsJson and a newline to `path` with base::WriteFileAtomically:
// on success `path` holds all of it; on failure `path` is unchanged and the
// status is INTERNAL naming the step and the OS error.
absl::Status WriteMetricsJson(
    const std::string& path, const TrainReport& report,
    const TrainerOptions& options,
    const std::vector<std::pair<std::string, std::string>>& flags);

}  // namespace mim::worker

#endif  // MIM_WORKER_TRAINER_REPORT_H_
