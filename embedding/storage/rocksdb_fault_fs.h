// A rocksdb::FileSystem that asks a StorageFaultInjector before every write,
// sync and rename (the test-only seam of RocksDbStorageOptions). Private to
// the storage target: only it includes RocksDB headers.
#ifndef MIM_EMBEDDING_STORAGE_ROCKSDB_FAULT_FS_H_
#define MIM_EMBEDDING_STORAGE_ROCKSDB_FAULT_FS_H_

#include <memory>

#include "embedding/storage/storage.h"
#include "rocksdb/file_system.h"

namespace mim::embedding {

// Wraps `base`; each write (Append, PositionedAppend), sync (Sync, Fsync,
// directory Fsync) and rename first calls injector->Check and, when it says
// no, returns an IOError with its message (after writing the prefix the
// injector asked for, for a torn write). Safe for concurrent access when the
// injector is.
std::shared_ptr<rocksdb::FileSystem> NewFaultInjectingFileSystem(
    std::shared_ptr<rocksdb::FileSystem> base,
    std::shared_ptr<StorageFaultInjector> injector);

// The injector's answer for one of the backend's own file operations (not
// RocksDB's): OK when `injector` is null.
absl::Status CheckFault(StorageFaultInjector* injector,
                        StorageFaultInjector::Op op, absl::string_view path);

}  // namespace mim::embedding

#endif  // MIM_EMBEDDING_STORAGE_ROCKSDB_FAULT_FS_H_
