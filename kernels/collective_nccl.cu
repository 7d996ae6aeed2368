// collective.h on NCCL (host code, compiled by nvcc with the CUDA twins'
// build). libnccl.so.2 is opened at the first use rather than linked: it
// is 200+ MB and only --dense_params=nccl needs it, so a trainer built
// with --config=cuda still starts on a GPU machine without NCCL.
#include <dlfcn.h>
#include <nccl.h>

#include <cstring>
#include <mutex>

#include "kernels/collective.h"
#include "kernels/cuda_util.cuh"

namespace mim::kernels {
namespace {

static_assert(NCCL_UNIQUE_ID_BYTES == kCollectiveIdBytes,
              "collective.h's id size differs from NCCL's");

// The NCCL entry points used here, resolved from libnccl.so.2.
struct NcclApi {
  decltype(&ncclGetUniqueId) get_unique_id = nullptr;
  decltype(&ncclCommInitRank) comm_init_rank = nullptr;
  decltype(&ncclCommDestroy) comm_destroy = nullptr;
  decltype(&ncclAllReduce) all_reduce = nullptr;
  decltype(&ncclGetErrorString) error_string = nullptr;
};

// The API, or UNAVAILABLE naming what could not be loaded. Loaded once per
// process; safe for concurrent callers.
absl::StatusOr<const NcclApi*> Nccl() {
  static NcclApi api;
  static std::string error;
  static std::once_flag once;
  std::call_once(once, [] {
    void* lib = dlopen("libnccl.so.2", RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr) {
      error = absl::StrFormat(
          "cannot load NCCL (libnccl.so.2: %s); install NCCL or put it on "
          "LD_LIBRARY_PATH",
          dlerror());
      return;
    }
    auto sym = [&](const char* name) {
      void* f = dlsym(lib, name);
      if (f == nullptr && error.empty()) {
        error = absl::StrFormat("libnccl.so.2 lacks %s", name);
      }
      return f;
    };
    api.get_unique_id =
        reinterpret_cast<decltype(api.get_unique_id)>(sym("ncclGetUniqueId"));
    api.comm_init_rank =
        reinterpret_cast<decltype(api.comm_init_rank)>(sym("ncclCommInitRank"));
    api.comm_destroy =
        reinterpret_cast<decltype(api.comm_destroy)>(sym("ncclCommDestroy"));
    api.all_reduce =
        reinterpret_cast<decltype(api.all_reduce)>(sym("ncclAllReduce"));
    api.error_string =
        reinterpret_cast<decltype(api.error_string)>(sym("ncclGetErrorString"));
  });
  if (!error.empty()) return absl::UnavailableError(error);
  return &api;
}

absl::Status CheckNccl(const NcclApi& api, ncclResult_t r, const char* what) {
  if (r == ncclSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrFormat("NCCL %s: %s (%d)", what,
                                             api.error_string(r),
                                             static_cast<int>(r)));
}

class NcclCollective final : public DeviceCollective {
 public:
  NcclCollective(const NcclApi* api, ncclComm_t comm, int rank,
                 int num_ranks)
      : api_(api), comm_(comm), rank_(rank), num_ranks_(num_ranks) {}
  ~NcclCollective() override { api_->comm_destroy(comm_); }

  absl::Status AllReduceMean(float* buf, int64_t n) override {
    MIM_RETURN_IF_ERROR(CheckBuffer("AllReduceMean", buf, n));
    if (n == 0) return absl::OkStatus();
    return CheckNccl(*api_,
                     api_->all_reduce(buf, buf, static_cast<size_t>(n),
                                      ncclFloat, ncclAvg, comm_,
                                      /*stream=*/nullptr),
                     "ncclAllReduce");
  }
  int rank() const override { return rank_; }
  int num_ranks() const override { return num_ranks_; }

 private:
  static absl::Status CheckBuffer(const char* op, const float* buf, int64_t n) {
    if (n < 0) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: negative n=%d", op, n));
    }
    if (n > 0 && buf == nullptr) return cuda::NullArg(op, "buf");
    return absl::OkStatus();
  }

  const NcclApi* api_;
  ncclComm_t comm_;
  int rank_, num_ranks_;
};

}  // namespace

absl::StatusOr<std::string> NewCollectiveId() {
  absl::StatusOr<const NcclApi*> api = Nccl();
  if (!api.ok()) return api.status();
  ncclUniqueId id;
  MIM_RETURN_IF_ERROR(
      CheckNccl(**api, (*api)->get_unique_id(&id), "ncclGetUniqueId"));
  return std::string(id.internal, NCCL_UNIQUE_ID_BYTES);
}

absl::StatusOr<std::unique_ptr<DeviceCollective>> JoinCollective(
    const std::string& id, int rank, int num_ranks) {
  if (id.size() != NCCL_UNIQUE_ID_BYTES) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "JoinCollective: id of %d bytes, expected %d", id.size(),
        NCCL_UNIQUE_ID_BYTES));
  }
  if (num_ranks < 1 || rank < 0 || rank >= num_ranks) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "JoinCollective: rank %d of %d", rank, num_ranks));
  }
  absl::StatusOr<const NcclApi*> api = Nccl();
  if (!api.ok()) return api.status();
  ncclUniqueId uid;
  std::memcpy(uid.internal, id.data(), NCCL_UNIQUE_ID_BYTES);
  ncclComm_t comm = nullptr;
  MIM_RETURN_IF_ERROR(
      CheckNccl(**api, (*api)->comm_init_rank(&comm, num_ranks, uid, rank),
                "ncclCommInitRank"));
  return std::unique_ptr<DeviceCollective>(
      new NcclCollective(*api, comm, rank, num_ranks));
}

}  // namespace mim::kernels
