// Conversion between the wire TableConfig/TableStats/RowMeta (proto/ps.proto)
// and the embedding library's structs, at the RPC edge of the shard.
//
// Hyperparameters have explicit presence on the wire (proto/ps.proto): an
// unset field (or an empty optimizer/initializer name) takes the library
// default (embedding/table_config.h); a set field is taken as given, 0
// included, and left to embedding::ValidateTableConfig. Outgoing configs
// carry every field explicitly, so a config read back with ListTables
// converts to the same embedding::TableConfig.
#ifndef MIM_PS_TABLE_CONFIG_CONVERT_H_
#define MIM_PS_TABLE_CONFIG_CONVERT_H_

#include "absl/status/statusor.h"
#include "embedding/embedding_store.h"
#include "embedding/table_config.h"
#include "proto/ps.pb.h"

namespace mim::ps {

// INVALID_ARGUMENT naming the table and field for an unknown kind,
// optimizer or initializer name. Range checks are left to
// embedding::ValidateTableConfig (the store runs it).
absl::StatusOr<embedding::TableConfig> FromProto(const TableConfig& config);

TableConfig ToProto(const embedding::TableConfig& config);
TableStats ToProto(const embedding::TableStats& stats);
RowMeta ToProto(const embedding::RowMeta& meta);

}  // namespace mim::ps

#endif  // MIM_PS_TABLE_CONFIG_CONVERT_H_
