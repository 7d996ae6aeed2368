// collective.h without NCCL (the default build and the grid emulator).
#include "kernels/collective.h"

namespace mim::kernels {
namespace {
absl::Status NoNccl() {
  return absl::UnimplementedError(
      "built without NCCL (use --config=cuda on a GPU machine)");
}
}  // namespace

absl::StatusOr<std::string> NewCollectiveId() { return NoNccl(); }

absl::StatusOr<std::unique_ptr<DeviceCollective>> JoinCollective(
    const std::string&, int, int, absl::Duration) {
  return NoNccl();
}

}  // namespace mim::kernels
