// Opens an EmbeddingStore over a given Storage backend (the memory backend,
// or a fault-injecting wrapper in tests). EmbeddingStore::Open is this with
// the RocksDB backend under options.data_dir.
#ifndef MIM_EMBEDDING_STORE_WITH_STORAGE_H_
#define MIM_EMBEDDING_STORE_WITH_STORAGE_H_

#include <memory>

#include "absl/status/statusor.h"
#include "embedding/embedding_store.h"
#include "embedding/storage/storage.h"

namespace mim::embedding {

// Loads every table from `storage`; DATA_LOSS naming the record for anything
// undecodable. `options.data_dir` and `sync_writes` are not used.
absl::StatusOr<std::unique_ptr<EmbeddingStore>> OpenEmbeddingStoreWithStorage(
    std::unique_ptr<Storage> storage, const EmbeddingStore::Options& options);

}  // namespace mim::embedding

#endif  // MIM_EMBEDDING_STORE_WITH_STORAGE_H_
