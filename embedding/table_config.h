// Configuration of one embedding table, shared by the in-memory tables, the
// storage layer and (after conversion at the RPC edge) the wire protocol.
#ifndef MIM_EMBEDDING_TABLE_CONFIG_H_
#define MIM_EMBEDDING_TABLE_CONFIG_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace mim::embedding {

enum class TableKind {
  // Trainable ID embeddings: a row is created by its key's first push (from
  // the deterministic initial value, which a pull of an unseen key returns
  // without storing it) and updated by pushed gradients through the table's
  // optimizer.
  kId,
  // Content (multi-modal) embeddings: rows written by Upsert with a version,
  // never changed by gradients; unknown keys are reported missing on pull.
  kContent,
};

enum class OptimizerKind { kSgd, kAdagrad, kAdam, kFtrl };

struct OptimizerConfig {
  OptimizerKind kind = OptimizerKind::kAdagrad;
  float learning_rate = 0.05f;
  float beta1 = 0.9f;               // adam
  float beta2 = 0.999f;             // adam
  float epsilon = 1e-8f;            // adam, adagrad
  float initial_accumulator = 0.1f; // adagrad
  float l1 = 0.0f;                  // ftrl
  float l2 = 0.0f;                  // ftrl
  float lr_power = -0.5f;           // ftrl
};

enum class InitializerKind { kZeros, kUniform, kNormal };

struct InitializerConfig {
  InitializerKind kind = InitializerKind::kNormal;
  // Half-width for uniform, standard deviation for normal.
  float scale = 0.01f;
  // Mixed with the key: a key's initial row is the same on every shard and
  // after every restart.
  uint64_t seed = 0;
};

struct TableConfig {
  std::string name;
  TableKind kind = TableKind::kId;
  uint32_t dim = 0;
  OptimizerConfig optimizer;      // ignored for content tables
  InitializerConfig initializer;  // ignored for content tables
};

// Limits enforced by ValidateTableConfig.
inline constexpr uint32_t kMaxDim = 4096;
inline constexpr size_t kMaxTableNameLength = 128;
// Far above any useful value, and small enough that rows stay finite: an
// initializer scale of 3e38 gave non-finite rows that no push could train,
// a learning rate of 3e38 overflowed the first step.
inline constexpr float kMaxInitializerScale = 1000.0f;
inline constexpr float kMaxLearningRate = 1000.0f;
// Largest content version an Upsert may write (2^53: every version is exact
// as a double in JSON clients; microsecond timestamps fit for centuries).
// A row written with 2^64-1 could never be updated again.
inline constexpr uint64_t kMaxContentVersion = uint64_t{1} << 53;

// OK when the name is 1..128 characters of [A-Za-z0-9_.-], 1 <= dim <= 4096,
// and every optimizer/initializer number is finite and in range (learning
// rate in (0, 1000], beta in [0,1), epsilon > 0 for adam, initializer scale
// in [0, 1000], ...). Otherwise
// INVALID_ARGUMENT naming the table, the field (as on the wire, e.g.
// "optimizer.beta1") and the value. Content tables ignore the optimizer
// and initializer.
absl::Status ValidateTableConfig(const TableConfig& config);

// Names used by flags, the CLI and the wire protocol: "id"/"content",
// "sgd"/"adagrad"/"adam"/"ftrl", "zeros"/"uniform"/"normal". Parse* return
// INVALID_ARGUMENT listing the accepted names for anything else.
absl::string_view TableKindName(TableKind kind);
absl::string_view OptimizerName(OptimizerKind kind);
absl::string_view InitializerName(InitializerKind kind);
absl::StatusOr<TableKind> ParseTableKind(absl::string_view name);
absl::StatusOr<OptimizerKind> ParseOptimizerKind(absl::string_view name);
absl::StatusOr<InitializerKind> ParseInitializerKind(absl::string_view name);

// Number of floats of optimizer state kept beside each row, per dimension
// (sgd 0, adagrad 1, adam 2, ftrl 2); 0 for content tables.
uint32_t StateFloatsPerDim(const TableConfig& config);

bool operator==(const TableConfig& a, const TableConfig& b);

}  // namespace mim::embedding

#endif  // MIM_EMBEDDING_TABLE_CONFIG_H_
