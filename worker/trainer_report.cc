#include "worker/trainer_report.h"

#include "base/atomic_file.h"
#include "nlohmann/json.hpp"

namespace mim::worker {
namespace {

using Json = nlohmann::json;

Json OrNull(const std::optional<double>& v) {
  return v.has_value() ? Json(*v) : Json(nullptr);
}

Json GroupJson(const eval::GroupAuc& g) {
  return Json{{"min_count", g.min_count},
              {"max_count", g.max_count},
              {"n", g.n},
              {"positives", g.positives},
              {"auc", OrNull(g.auc)}};
}

}  // namespace

std::string MetricsJson(
    const TrainReport& r, const TrainerOptions& o,
    const std::vector<std::pair<std::string, std::string>>& flags) {
  Json j;
  j["model"] = r.config.name;
  Json flag_json = Json::object();
  for (const auto& [name, value] : flags) flag_json[name] = value;
  j["flags"] = flag_json;
  j["worker"] = {{"index", o.worker_index}, {"num_workers", o.num_workers}};
  j["dense_params"] = r.dense_mode;
  j["device"] = o.device;
  j["tables"] = {
      {"id", r.id_table},
      {"content", r.content_table.empty() ? Json(nullptr) : Json(r.content_table)},
      {"content_version", r.content_version},
      {"dense", r.dense_table.empty() ? Json(nullptr) : Json(r.dense_table)}};
  j["train_samples"] = r.train_samples;
  j["train_batches"] = r.train_batches;
  j["pushes_in_doubt"] = r.pushes_in_doubt;
  j["train_seconds"] = r.train_seconds;
  j["train_samples_per_sec"] = r.train_samples_per_sec;
  j["train_items"] = r.train_items;
  j["validation_cutoff"] = r.validation_cutoff;
  Json curve = Json::array();
  for (const LossPoint& p : r.loss_curve) {
    curve.push_back({{"epoch", p.epoch},
                     {"batch", p.batch},
                     {"samples", p.samples},
                     {"loss", p.loss}});
  }
  j["loss_curve"] = curve;
  if (r.eval.has_value()) {
    const EvalReport& e = *r.eval;
    j["eval_source"] = e.source;
    j["eval_path"] = e.path;
    j["eval_n"] = e.n;
    j["eval_positives"] = e.positives;
    j["eval_seconds"] = e.seconds;
    j["auc"] = OrNull(e.auc);
    j["gauc"] = e.gauc.has_value() ? Json(e.gauc->gauc) : Json(nullptr);
    j["gauc_users"] = e.gauc.has_value() ? e.gauc->users : 0;
    j["logloss"] = OrNull(e.logloss);
    j["cold_auc"] = OrNull(e.cold.auc);
    j["cold"] = GroupJson(e.cold);
    Json groups = Json::array();
    for (size_t g = 0; g < e.by_item_frequency.size(); ++g) {
      Json one = GroupJson(e.by_item_frequency[g]);
      one["group"] = g;
      groups.push_back(one);
    }
    j["auc_by_item_frequency"] = groups;
  } else {
    for (const char* key : {"eval_source", "eval_path", "auc", "gauc",
                            "logloss", "cold_auc", "cold"}) {
      j[key] = nullptr;
    }
    j["eval_n"] = 0;
    j["auc_by_item_frequency"] = Json::array();
  }
  j["model_files"] = r.model_files;
  j["init_model"] =
      r.init_model.empty() ? nlohmann::json(nullptr) : nlohmann::json(r.init_model);
  j["init_adam_step"] = r.init_adam_step;
  return j.dump(2);
}

absl::Status WriteMetricsJson(
    const std::string& path, const TrainReport& report,
    const TrainerOptions& options,
    const std::vector<std::pair<std::string, std::string>>& flags) {
  return base::WriteFileAtomically(
      path, MetricsJson(report, options, flags) + "\n");
}

}  // namespace mim::worker
