#include "ps/table_config_convert.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "ps/status_convert.h"

namespace mim::ps {
namespace {

// Longer than any optimizer or initializer name, so a longer one is quoted
// capped instead of passed to the parser (whose message quotes it whole).
constexpr size_t kMaxKindNameBytes = 32;

absl::Status BadName(const TableConfig& config, absl::string_view field,
                     absl::string_view name, const absl::Status& parse) {
  if (name.size() > kMaxKindNameBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("table '", config.name(), "': ", field, ": '",
                     QuoteInput(name, kMaxKindNameBytes), "' is not a known name"));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("table '", config.name(), "': ", field, ": ",
                   parse.message()));
}

}  // namespace

absl::StatusOr<embedding::TableConfig> FromProto(const TableConfig& config) {
  // Every message below quotes the name, so a name that cannot be valid is
  // refused first, quoted capped.
  if (config.name().size() > embedding::kMaxTableNameLength) {
    return absl::InvalidArgumentError(absl::StrCat(
        "table name '", QuoteInput(config.name()), "' is too long: names are 1..",
        embedding::kMaxTableNameLength, " characters"));
  }
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
  // Unset hyperparameters take the library default (see the header).
  const OptimizerConfig& o = config.optimizer();
  embedding::OptimizerConfig& oo = out.optimizer;
  if (!o.name().empty()) {
    absl::StatusOr<embedding::OptimizerKind> kind =
        embedding::ParseOptimizerKind(o.name());
    if (!kind.ok()) {
      return BadName(config, "optimizer.name", o.name(), kind.status());
    }
    oo.kind = *kind;
  }
  oo.learning_rate =
      o.has_learning_rate() ? o.learning_rate() : d.learning_rate;
  oo.beta1 = o.has_beta1() ? o.beta1() : d.beta1;
  oo.beta2 = o.has_beta2() ? o.beta2() : d.beta2;
  oo.epsilon = o.has_epsilon() ? o.epsilon() : d.epsilon;
  oo.initial_accumulator = o.has_initial_accumulator()
                               ? o.initial_accumulator()
                               : d.initial_accumulator;
  oo.l1 = o.has_l1() ? o.l1() : d.l1;
  oo.l2 = o.has_l2() ? o.l2() : d.l2;
  oo.lr_power = o.has_lr_power() ? o.lr_power() : d.lr_power;

  const embedding::InitializerConfig di;
  const InitializerConfig& i = config.initializer();
  if (!i.name().empty()) {
    absl::StatusOr<embedding::InitializerKind> kind =
        embedding::ParseInitializerKind(i.name());
    if (!kind.ok()) {
      return BadName(config, "initializer.name", i.name(), kind.status());
    }
    out.initializer.kind = *kind;
  }
  out.initializer.scale = i.has_scale() ? i.scale() : di.scale;
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
