// collective.h on NCCL (host code, compiled by nvcc with the CUDA twins'
// build). libnccl.so.2 is opened at the first use rather than linked: it
// is 200+ MB and only --dense_params=nccl needs it, so a trainer built
// with --config=cuda still starts on a GPU machine without NCCL.
#include <dlfcn.h>
#include <nccl.h>

#include <cstring>
#include <mutex>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

#include "kernels/collective.h"
#include "kernels/collective_watchdog.h"
#include "kernels/cuda_util.cuh"

namespace mim::kernels {
namespace {

static_assert(NCCL_UNIQUE_ID_BYTES == kCollectiveIdBytes,
              "collective.h's id size differs from NCCL's");

// The NCCL entry points used here, resolved from libnccl.so.2.
struct NcclApi {
  decltype(&ncclGetUniqueId) get_unique_id = nullptr;
  decltype(&ncclCommInitRankConfig) comm_init_rank_config = nullptr;
  decltype(&ncclCommDestroy) comm_destroy = nullptr;
  decltype(&ncclCommAbort) comm_abort = nullptr;
  decltype(&ncclCommGetAsyncError) comm_get_async_error = nullptr;
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
    api.comm_init_rank_config = reinterpret_cast<decltype(api.comm_init_rank_config)>(
        sym("ncclCommInitRankConfig"));
    api.comm_destroy =
        reinterpret_cast<decltype(api.comm_destroy)>(sym("ncclCommDestroy"));
    api.comm_abort =
        reinterpret_cast<decltype(api.comm_abort)>(sym("ncclCommAbort"));
    api.comm_get_async_error = reinterpret_cast<decltype(api.comm_get_async_error)>(
        sym("ncclCommGetAsyncError"));
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

// The state of a non-blocking communicator's last call: true once done,
// false while NCCL still works on it (ncclInProgress), INTERNAL naming
// `what` and the NCCL error when it failed (asynchronously: a peer died,
// a connection broke).
absl::StatusOr<bool> CommDone(const NcclApi& api, ncclComm_t comm,
                              const std::string& what) {
  ncclResult_t state = ncclSuccess;
  const ncclResult_t r = api.comm_get_async_error(comm, &state);
  if (r != ncclSuccess) state = r;
  if (state == ncclSuccess) return true;
  if (state == ncclInProgress) return false;
  return absl::InternalError(absl::StrFormat(
      "NCCL %s: %s (%d); the communicator was aborted (its later calls "
      "fail)",
      what, api.error_string(state), static_cast<int>(state)));
}

class NcclCollective final : public DeviceCollective {
 public:
  NcclCollective(const NcclApi* api, ncclComm_t comm, cudaEvent_t done,
                 int rank, int num_ranks, absl::Duration timeout)
      : api_(api),
        comm_(comm),
        done_(done),
        rank_(rank),
        num_ranks_(num_ranks),
        timeout_(timeout) {}
  ~NcclCollective() override {
    // An aborted communicator is freed by the abort.
    if (failure_.ok()) api_->comm_destroy(comm_);
    cudaEventDestroy(done_);
  }

  absl::Status AllReduceMean(float* buf, int64_t n) override {
    MIM_RETURN_IF_ERROR(CheckBuffer("AllReduceMean", buf, n));
    MIM_RETURN_IF_ERROR(Usable());
    if (n == 0) return absl::OkStatus();
    const std::string what = absl::StrFormat(
        "ncclAllReduce of %d floats (AllReduceMean, rank %d of %d)", n, rank_,
        num_ranks_);
    const ncclResult_t r =
        api_->all_reduce(buf, buf, static_cast<size_t>(n), ncclFloat, ncclAvg,
                         comm_, /*stream=*/nullptr);
    if (r != ncclSuccess && r != ncclInProgress) {
      return Fail(CheckNccl(*api_, r, what.c_str()));
    }
    // Non-blocking communicator: the call is enqueued once its state leaves
    // ncclInProgress; then the event after it says when the device is done.
    // A peer that died leaves the kernel waiting forever: the watchdog
    // aborts the communicator after timeout_, which releases it.
    bool recorded = false;
    return Fail(AwaitWithWatchdog(
        what, timeout_,
        [&]() -> absl::StatusOr<bool> {
          absl::StatusOr<bool> enqueued = CommDone(*api_, comm_, what);
          if (!enqueued.ok() || !*enqueued) return enqueued;
          if (!recorded) {
            MIM_RETURN_IF_ERROR(cuda::Check(cudaEventRecord(done_, nullptr),
                                            "cudaEventRecord", what));
            recorded = true;
          }
          const cudaError_t q = cudaEventQuery(done_);
          if (q == cudaErrorNotReady) return false;
          MIM_RETURN_IF_ERROR(cuda::Check(q, "cudaEventQuery", what));
          return true;
        },
        [&] { Abort(); }));
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
  absl::Status Usable() const {
    if (failure_.ok()) return absl::OkStatus();
    return absl::FailedPreconditionError(absl::StrFormat(
        "the NCCL communicator of rank %d of %d was aborted after: %s",
        rank_, num_ranks_, failure_.message()));
  }
  void Abort() {
    if (!aborted_) api_->comm_abort(comm_);
    aborted_ = true;
  }
  // Keeps the first failure that aborted the communicator; returns `st`.
  absl::Status Fail(absl::Status st) {
    if (!st.ok() && failure_.ok()) {
      Abort();
      failure_ = st;
    }
    return st;
  }

  const NcclApi* api_;
  ncclComm_t comm_;
  cudaEvent_t done_;
  int rank_, num_ranks_;
  absl::Duration timeout_;
  bool aborted_ = false;
  absl::Status failure_;  // OK until the communicator is aborted
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
    const std::string& id, int rank, int num_ranks, absl::Duration timeout) {
  if (id.size() != NCCL_UNIQUE_ID_BYTES) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "JoinCollective: id of %d bytes, expected %d", id.size(),
        NCCL_UNIQUE_ID_BYTES));
  }
  if (num_ranks < 1 || rank < 0 || rank >= num_ranks) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "JoinCollective: rank %d of %d", rank, num_ranks));
  }
  if (timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "JoinCollective: timeout ", absl::FormatDuration(timeout),
        "; expected > 0"));
  }
  absl::StatusOr<const NcclApi*> api = Nccl();
  if (!api.ok()) return api.status();
  ncclUniqueId uid;
  std::memcpy(uid.internal, id.data(), NCCL_UNIQUE_ID_BYTES);
  cudaEvent_t done = nullptr;
  MIM_RETURN_IF_ERROR(cuda::Check(
      cudaEventCreateWithFlags(&done, cudaEventDisableTiming),
      "cudaEventCreateWithFlags", "collective"));
  // Not blocking, so that a rank that never joins cannot hang this one:
  // the join is polled under the same watchdog as the collectives.
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  ncclComm_t comm = nullptr;
  const std::string what = absl::StrFormat(
      "ncclCommInitRankConfig (rank %d of %d)", rank, num_ranks);
  const ncclResult_t r =
      (*api)->comm_init_rank_config(&comm, num_ranks, uid, rank, &config);
  absl::Status joined;
  if (r != ncclSuccess && r != ncclInProgress) {
    joined = CheckNccl(**api, r, what.c_str());
    if (comm != nullptr) (*api)->comm_abort(comm);
  } else {
    joined = AwaitWithWatchdog(
        what, timeout, [&] { return CommDone(**api, comm, what); },
        [&] { (*api)->comm_abort(comm); });
  }
  if (!joined.ok()) {
    cudaEventDestroy(done);
    return joined;
  }
  return std::unique_ptr<DeviceCollective>(
      new NcclCollective(*api, comm, done, rank, num_ranks, timeout));
}

}  // namespace mim::kernels
