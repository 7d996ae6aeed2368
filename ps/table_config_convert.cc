#include "ps/table_config_convert.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace mim::ps {
namespace {

// 0 on the wire means "default" (see the header).
float OrDefault(float wire, float fallback) {
  return wire == 0.0f ? fallback : wire;
}

}  // namespace

absl::StatusOr<embedding::TableConfig> FromProto(const TableConfig& config) {
  embedding::TableConfig out;
  out.name = config.name();
  out.dim = config.dim();
  switch (config.kind()) {
    case ID:
      out.kind = embedding::TableKind::kId;
      break;
    case CONTENT:
      out.kind = embedding::TableKind::kContent;
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          "table '", config.name(), "': kind must be ID or CONTENT, got ",
          static_cast<int>(config.kind())));
  }
  const embedding::OptimizerConfig d;
  const OptimizerConfig& o = config.optimizer();
  if (!o.name().empty()) {
    absl::StatusOr<embedding::OptimizerKind> kind =
        embedding::ParseOptimizerKind(o.name());
    if (!kind.ok()) return kind.status();
    out.optimizer.kind = *kind;
  }
  out.optimizer.learning_rate = OrDefault(o.learning_rate(), d.learning_rate);
  out.optimizer.beta1 = OrDefault(o.beta1(), d.beta1);
  out.optimizer.beta2 = OrDefault(o.beta2(), d.beta2);
  out.optimizer.epsilon = OrDefault(o.epsilon(), d.epsilon);
  out.optimizer.initial_accumulator =
      OrDefault(o.initial_accumulator(), d.initial_accumulator);
  out.optimizer.l1 = o.l1();
  out.optimizer.l2 = o.l2();
  out.optimizer.lr_power = OrDefault(o.lr_power(), d.lr_power);

  const embedding::InitializerConfig di;
  const InitializerConfig& i = config.initializer();
  if (!i.name().empty()) {
    absl::StatusOr<embedding::InitializerKind> kind =
        embedding::ParseInitializerKind(i.name());
    if (!kind.ok()) return kind.status();
    out.initializer.kind = *kind;
  }
  out.initializer.scale = OrDefault(i.scale(), di.scale);
  out.initializer.seed = i.seed();
  return out;
}

TableConfig ToProto(const embedding::TableConfig& config) {
  TableConfig out;
  out.set_name(config.name);
  out.set_kind(config.kind == embedding::TableKind::kId ? ID : CONTENT);
  out.set_dim(config.dim);
  OptimizerConfig* o = out.mutable_optimizer();
  o->set_name(std::string(embedding::OptimizerName(config.optimizer.kind)));
  o->set_learning_rate(config.optimizer.learning_rate);
  o->set_beta1(config.optimizer.beta1);
  o->set_beta2(config.optimizer.beta2);
  o->set_epsilon(config.optimizer.epsilon);
  o->set_initial_accumulator(config.optimizer.initial_accumulator);
  o->set_l1(config.optimizer.l1);
  o->set_l2(config.optimizer.l2);
  o->set_lr_power(config.optimizer.lr_power);
  InitializerConfig* i = out.mutable_initializer();
  i->set_name(std::string(embedding::InitializerName(config.initializer.kind)));
  i->set_scale(config.initializer.scale);
  i->set_seed(config.initializer.seed);
  return out;
}

TableStats ToProto(const embedding::TableStats& stats) {
  TableStats out;
  *out.mutable_config() = ToProto(stats.config);
  out.set_rows(stats.rows);
  out.set_bytes(stats.bytes);
  out.set_bytes_per_row(stats.bytes_per_row);
  out.set_pulls(stats.keys_pulled);
  out.set_pushes(stats.keys_pushed);
  out.set_max_version(stats.max_version);
  return out;
}

RowMeta ToProto(const embedding::RowMeta& meta) {
  RowMeta out;
  out.set_last_update_micros(meta.last_update_micros);
  out.set_update_count(meta.update_count);
  out.set_version(meta.version);
  return out;
}

}  // namespace mim::ps
