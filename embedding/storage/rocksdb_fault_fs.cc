#include "embedding/storage/rocksdb_fault_fs.h"

#include <memory>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"

namespace mim::embedding {
namespace {

using Op = StorageFaultInjector::Op;

rocksdb::IOStatus ToIoError(const absl::Status& s) {
  return rocksdb::IOStatus::IOError("injected fault", std::string(s.message()));
}

// Safe for concurrent access when the injector is (RocksDB does not call one
// file from two threads at once).
class FaultInjectingFile : public rocksdb::FSWritableFileOwnerWrapper {
 public:
  FaultInjectingFile(std::unique_ptr<rocksdb::FSWritableFile> file,
                     std::string path, StorageFaultInjector* injector)
      : FSWritableFileOwnerWrapper(std::move(file)),
        path_(std::move(path)),
        injector_(injector) {}

  rocksdb::IOStatus Append(const rocksdb::Slice& data,
                           const rocksdb::IOOptions& options,
                           rocksdb::IODebugContext* dbg) override {
    return Write(data, [&](const rocksdb::Slice& d) {
      return target()->Append(d, options, dbg);
    });
  }
  rocksdb::IOStatus Append(const rocksdb::Slice& data,
                           const rocksdb::IOOptions& options,
                           const rocksdb::DataVerificationInfo& info,
                           rocksdb::IODebugContext* dbg) override {
    return Write(data, [&](const rocksdb::Slice& d) {
      return d.size() == data.size() ? target()->Append(d, options, info, dbg)
                                     : target()->Append(d, options, dbg);
    });
  }
  rocksdb::IOStatus PositionedAppend(const rocksdb::Slice& data,
                                     uint64_t offset,
                                     const rocksdb::IOOptions& options,
                                     rocksdb::IODebugContext* dbg) override {
    return Write(data, [&](const rocksdb::Slice& d) {
      return target()->PositionedAppend(d, offset, options, dbg);
    });
  }
  rocksdb::IOStatus PositionedAppend(const rocksdb::Slice& data,
                                     uint64_t offset,
                                     const rocksdb::IOOptions& options,
                                     const rocksdb::DataVerificationInfo& info,
                                     rocksdb::IODebugContext* dbg) override {
    return Write(data, [&](const rocksdb::Slice& d) {
      return d.size() == data.size()
                 ? target()->PositionedAppend(d, offset, options, info, dbg)
                 : target()->PositionedAppend(d, offset, options, dbg);
    });
  }
  rocksdb::IOStatus Sync(const rocksdb::IOOptions& options,
                         rocksdb::IODebugContext* dbg) override {
    absl::Status st = injector_->Check(Op::kSync, path_, nullptr);
    if (!st.ok()) return ToIoError(st);
    return target()->Sync(options, dbg);
  }
  rocksdb::IOStatus Fsync(const rocksdb::IOOptions& options,
                          rocksdb::IODebugContext* dbg) override {
    absl::Status st = injector_->Check(Op::kSync, path_, nullptr);
    if (!st.ok()) return ToIoError(st);
    return target()->Fsync(options, dbg);
  }

 private:
  template <typename AppendFn>
  rocksdb::IOStatus Write(const rocksdb::Slice& data, AppendFn append) {
    size_t prefix = data.size();
    absl::Status st = injector_->Check(Op::kWrite, path_, &prefix);
    if (st.ok()) return append(data);
    if (prefix > 0 && prefix < data.size()) {
      append(rocksdb::Slice(data.data(), prefix));
    }
    return ToIoError(st);
  }

  const std::string path_;
  StorageFaultInjector* const injector_;
};

// Safe for concurrent access when the injector is.
class FaultInjectingDirectory : public rocksdb::FSDirectoryWrapper {
 public:
  FaultInjectingDirectory(std::unique_ptr<rocksdb::FSDirectory> dir,
                          std::string path, StorageFaultInjector* injector)
      : FSDirectoryWrapper(std::move(dir)),
        path_(std::move(path)),
        injector_(injector) {}

  rocksdb::IOStatus Fsync(const rocksdb::IOOptions& options,
                          rocksdb::IODebugContext* dbg) override {
    absl::Status st = injector_->Check(Op::kSync, path_, nullptr);
    if (!st.ok()) return ToIoError(st);
    return FSDirectoryWrapper::Fsync(options, dbg);
  }
  rocksdb::IOStatus FsyncWithDirOptions(
      const rocksdb::IOOptions& options, rocksdb::IODebugContext* dbg,
      const rocksdb::DirFsyncOptions& dir_options) override {
    absl::Status st = injector_->Check(Op::kSync, path_, nullptr);
    if (!st.ok()) return ToIoError(st);
    return FSDirectoryWrapper::FsyncWithDirOptions(options, dbg, dir_options);
  }

 private:
  const std::string path_;
  StorageFaultInjector* const injector_;
};

// Safe for concurrent access when the injector is.
class FaultInjectingFileSystem : public rocksdb::FileSystemWrapper {
 public:
  FaultInjectingFileSystem(std::shared_ptr<rocksdb::FileSystem> base,
                           std::shared_ptr<StorageFaultInjector> injector)
      : FileSystemWrapper(std::move(base)), injector_(std::move(injector)) {}

  const char* Name() const override { return "MimFaultInjectingFileSystem"; }

  rocksdb::IOStatus NewWritableFile(
      const std::string& path, const rocksdb::FileOptions& options,
      std::unique_ptr<rocksdb::FSWritableFile>* result,
      rocksdb::IODebugContext* dbg) override {
    return Wrap(path, target()->NewWritableFile(path, options, result, dbg),
                result);
  }
  rocksdb::IOStatus ReopenWritableFile(
      const std::string& path, const rocksdb::FileOptions& options,
      std::unique_ptr<rocksdb::FSWritableFile>* result,
      rocksdb::IODebugContext* dbg) override {
    return Wrap(path, target()->ReopenWritableFile(path, options, result, dbg),
                result);
  }
  rocksdb::IOStatus ReuseWritableFile(
      const std::string& path, const std::string& old_path,
      const rocksdb::FileOptions& options,
      std::unique_ptr<rocksdb::FSWritableFile>* result,
      rocksdb::IODebugContext* dbg) override {
    return Wrap(path,
                target()->ReuseWritableFile(path, old_path, options, result,
                                            dbg),
                result);
  }
  rocksdb::IOStatus NewDirectory(
      const std::string& path, const rocksdb::IOOptions& options,
      std::unique_ptr<rocksdb::FSDirectory>* result,
      rocksdb::IODebugContext* dbg) override {
    rocksdb::IOStatus s = target()->NewDirectory(path, options, result, dbg);
    if (s.ok()) {
      *result = std::make_unique<FaultInjectingDirectory>(
          std::move(*result), path, injector_.get());
    }
    return s;
  }
  rocksdb::IOStatus RenameFile(const std::string& from, const std::string& to,
                               const rocksdb::IOOptions& options,
                               rocksdb::IODebugContext* dbg) override {
    absl::Status st = injector_->Check(Op::kRename, to, nullptr);
    if (!st.ok()) return ToIoError(st);
    return target()->RenameFile(from, to, options, dbg);
  }

 private:
  rocksdb::IOStatus Wrap(const std::string& path, rocksdb::IOStatus s,
                         std::unique_ptr<rocksdb::FSWritableFile>* result) {
    if (s.ok()) {
      *result = std::make_unique<FaultInjectingFile>(std::move(*result), path,
                                                     injector_.get());
    }
    return s;
  }

  const std::shared_ptr<StorageFaultInjector> injector_;
};

}  // namespace

std::shared_ptr<rocksdb::FileSystem> NewFaultInjectingFileSystem(
    std::shared_ptr<rocksdb::FileSystem> base,
    std::shared_ptr<StorageFaultInjector> injector) {
  return std::make_shared<FaultInjectingFileSystem>(std::move(base),
                                                    std::move(injector));
}

absl::Status CheckFault(StorageFaultInjector* injector,
                        StorageFaultInjector::Op op, absl::string_view path) {
  if (injector == nullptr) return absl::OkStatus();
  absl::Status st = injector->Check(op, path, nullptr);
  if (st.ok()) return st;
  return absl::InternalError(absl::StrCat("injected fault on ", path, ": ",
                                          st.message()));
}

}  // namespace mim::embedding
