#include "embedding/table_config.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace mim::embedding {
namespace {

bool NameCharOk(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
}

absl::Status Invalid(absl::string_view table, absl::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat("table '", table, "': ", what));
}

}  // namespace

absl::Status ValidateTableConfig(const TableConfig& c) {
  if (c.name.empty() || c.name.size() > kMaxTableNameLength) {
    return absl::InvalidArgumentError(
        absl::StrCat("table name must be 1..", kMaxTableNameLength,
                     " characters, got ", c.name.size()));
  }
  for (char ch : c.name) {
    if (!NameCharOk(ch)) {
      return Invalid(c.name, "name may only contain [A-Za-z0-9_.-]");
    }
  }
  if (c.name == "." || c.name == "..") {
    return Invalid(c.name, "name may not be '.' or '..'");
  }
  if (c.dim < 1 || c.dim > kMaxDim) {
    return Invalid(c.name, absl::StrCat("dim must be in [1, ", kMaxDim,
                                        "], got ", c.dim));
  }
  if (c.kind != TableKind::kId && c.kind != TableKind::kContent) {
    return Invalid(c.name, "unknown table kind");
  }
  if (c.kind == TableKind::kContent) return absl::OkStatus();

  const OptimizerConfig& o = c.optimizer;
  switch (o.kind) {
    case OptimizerKind::kSgd:
    case OptimizerKind::kAdagrad:
    case OptimizerKind::kAdam:
    case OptimizerKind::kFtrl:
      break;
    default:
      return Invalid(c.name, "unknown optimizer kind");
  }
  // Each message names the field as on the wire (proto/ps.proto) and the
  // value received.
  auto bad = [&](absl::string_view field, absl::string_view rule, float got) {
    return Invalid(c.name, absl::StrCat(field, " must be ", rule, ", got ",
                                        got));
  };
  if (!std::isfinite(o.learning_rate) || o.learning_rate <= 0 ||
      o.learning_rate > kMaxLearningRate) {
    return bad("optimizer.learning_rate",
               absl::StrCat("in (0, ", kMaxLearningRate, "]"),
               o.learning_rate);
  }
  if (!std::isfinite(o.beta1) || o.beta1 < 0 || o.beta1 >= 1) {
    return bad("optimizer.beta1", "in [0, 1)", o.beta1);
  }
  if (!std::isfinite(o.beta2) || o.beta2 < 0 || o.beta2 >= 1) {
    return bad("optimizer.beta2", "in [0, 1)", o.beta2);
  }
  if (!std::isfinite(o.epsilon) || o.epsilon < 0) {
    return bad("optimizer.epsilon", "finite and >= 0", o.epsilon);
  }
  // Adam divides m by sqrt(v) + epsilon, both 0 for a row's first zero
  // gradient: 0/0 would make the push fail as non-finite.
  if (o.kind == OptimizerKind::kAdam && o.epsilon == 0) {
    return bad("optimizer.epsilon", "> 0 for adam", o.epsilon);
  }
  if (!std::isfinite(o.initial_accumulator) || o.initial_accumulator < 0) {
    return bad("optimizer.initial_accumulator", "finite and >= 0",
               o.initial_accumulator);
  }
  if (o.kind == OptimizerKind::kAdagrad && o.initial_accumulator == 0 &&
      o.epsilon == 0) {
    return Invalid(c.name,
                   "adagrad needs optimizer.initial_accumulator > 0 or "
                   "optimizer.epsilon > 0, got both 0");
  }
  if (!std::isfinite(o.l1) || o.l1 < 0) {
    return bad("optimizer.l1", "finite and >= 0", o.l1);
  }
  if (!std::isfinite(o.l2) || o.l2 < 0) {
    return bad("optimizer.l2", "finite and >= 0", o.l2);
  }
  if (!std::isfinite(o.lr_power) || o.lr_power > 0) {
    return bad("optimizer.lr_power", "finite and <= 0", o.lr_power);
  }

  const InitializerConfig& i = c.initializer;
  switch (i.kind) {
    case InitializerKind::kZeros:
    case InitializerKind::kUniform:
    case InitializerKind::kNormal:
      break;
    default:
      return Invalid(c.name, "unknown initializer kind");
  }
  if (!std::isfinite(i.scale) || i.scale < 0 || i.scale > kMaxInitializerScale) {
    return Invalid(c.name, absl::StrCat("initializer.scale must be in [0, ",
                                        kMaxInitializerScale, "], got ",
                                        i.scale));
  }
  return absl::OkStatus();
}

absl::string_view TableKindName(TableKind kind) {
  switch (kind) {
    case TableKind::kId:
      return "id";
    case TableKind::kContent:
      return "content";
  }
  return "unknown";
}

absl::string_view OptimizerName(OptimizerKind kind) {
  switch (kind) {
    case OptimizerKind::kSgd:
      return "sgd";
    case OptimizerKind::kAdagrad:
      return "adagrad";
    case OptimizerKind::kAdam:
      return "adam";
    case OptimizerKind::kFtrl:
      return "ftrl";
  }
  return "unknown";
}

absl::string_view InitializerName(InitializerKind kind) {
  switch (kind) {
    case InitializerKind::kZeros:
      return "zeros";
    case InitializerKind::kUniform:
      return "uniform";
    case InitializerKind::kNormal:
      return "normal";
  }
  return "unknown";
}

absl::StatusOr<TableKind> ParseTableKind(absl::string_view name) {
  if (name == "id") return TableKind::kId;
  if (name == "content") return TableKind::kContent;
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown table kind '", name, "'; expected one of: id, content"));
}

absl::StatusOr<OptimizerKind> ParseOptimizerKind(absl::string_view name) {
  if (name == "sgd") return OptimizerKind::kSgd;
  if (name == "adagrad") return OptimizerKind::kAdagrad;
  if (name == "adam") return OptimizerKind::kAdam;
  if (name == "ftrl") return OptimizerKind::kFtrl;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown optimizer '", name,
                   "'; expected one of: sgd, adagrad, adam, ftrl"));
}

absl::StatusOr<InitializerKind> ParseInitializerKind(absl::string_view name) {
  if (name == "zeros") return InitializerKind::kZeros;
  if (name == "uniform") return InitializerKind::kUniform;
  if (name == "normal") return InitializerKind::kNormal;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown initializer '", name,
                   "'; expected one of: zeros, uniform, normal"));
}

uint32_t StateFloatsPerDim(const TableConfig& config) {
  if (config.kind == TableKind::kContent) return 0;
  switch (config.optimizer.kind) {
    case OptimizerKind::kSgd:
      return 0;
    case OptimizerKind::kAdagrad:
      return 1;
    case OptimizerKind::kAdam:
    case OptimizerKind::kFtrl:
      return 2;
  }
  return 0;
}

namespace {
bool SameOptimizer(const OptimizerConfig& a, const OptimizerConfig& b) {
  return a.kind == b.kind && a.learning_rate == b.learning_rate &&
         a.beta1 == b.beta1 && a.beta2 == b.beta2 && a.epsilon == b.epsilon &&
         a.initial_accumulator == b.initial_accumulator && a.l1 == b.l1 &&
         a.l2 == b.l2 && a.lr_power == b.lr_power;
}
}  // namespace

bool operator==(const TableConfig& a, const TableConfig& b) {
  if (a.name != b.name || a.kind != b.kind || a.dim != b.dim) return false;
  // Optimizer and initializer are ignored for content tables.
  if (a.kind == TableKind::kContent) return true;
  return SameOptimizer(a.optimizer, b.optimizer) &&
         a.initializer.kind == b.initializer.kind &&
         a.initializer.scale == b.initializer.scale &&
         a.initializer.seed == b.initializer.seed;
}

}  // namespace mim::embedding
