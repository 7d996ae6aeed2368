// collective.h on NCCL (host code; compiled by nvcc with the CUDA twins'
// build, linked with -lnccl).
#include <nccl.h>

#include <cstring>

#include "kernels/collective.h"
#include "kernels/cuda_util.cuh"

namespace mim::kernels {
namespace {

static_assert(NCCL_UNIQUE_ID_BYTES == kCollectiveIdBytes,
              "collective.h's id size differs from NCCL's");

absl::Status CheckNccl(ncclResult_t r, const char* what) {
  if (r == ncclSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrFormat("NCCL %s: %s (%d)", what,
                                             ncclGetErrorString(r),
                                             static_cast<int>(r)));
}

class NcclCollective final : public DeviceCollective {
 public:
  NcclCollective(ncclComm_t comm, int rank, int num_ranks)
      : comm_(comm), rank_(rank), num_ranks_(num_ranks) {}
  ~NcclCollective() override { ncclCommDestroy(comm_); }

  absl::Status AllReduceMean(float* buf, int64_t n) override {
    MIM_RETURN_IF_ERROR(CheckBuffer("AllReduceMean", buf, n));
    if (n == 0) return absl::OkStatus();
    return CheckNccl(ncclAllReduce(buf, buf, static_cast<size_t>(n), ncclFloat,
                                   ncclAvg, comm_, /*stream=*/nullptr),
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

  ncclComm_t comm_;
  int rank_, num_ranks_;
};

}  // namespace

absl::StatusOr<std::string> NewCollectiveId() {
  ncclUniqueId id;
  MIM_RETURN_IF_ERROR(CheckNccl(ncclGetUniqueId(&id), "ncclGetUniqueId"));
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
  ncclUniqueId uid;
  std::memcpy(uid.internal, id.data(), NCCL_UNIQUE_ID_BYTES);
  ncclComm_t comm = nullptr;
  MIM_RETURN_IF_ERROR(CheckNccl(ncclCommInitRank(&comm, num_ranks, uid, rank),
                                "ncclCommInitRank"));
  return std::unique_ptr<DeviceCollective>(
      new NcclCollective(comm, rank, num_ranks));
}

}  // namespace mim::kernels
