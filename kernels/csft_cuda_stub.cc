// The C-SFT kernels have no CUDA twin yet (C-SFT runs offline on the CPU);
// every build links these, so callers get UNIMPLEMENTED, never a link error.
#include <string>

#include "absl/status/status.h"
#include "kernels/csft_ops.h"

namespace mim::kernels {
namespace {
absl::Status NoCudaTwin(const char* op) {
  return absl::UnimplementedError(
      std::string(op) +
      ": no CUDA twin of the C-SFT kernels yet; call the *Cpu twin");
}
}  // namespace

absl::Status TensorFusionForwardCuda(const TensorFusionShape&, const float*,
                                     const float*, float*) {
  return NoCudaTwin("TensorFusionForwardCuda");
}
absl::Status TensorFusionBackwardCuda(const TensorFusionShape&, const float*,
                                      const float*, const float*, float*,
                                      float*) {
  return NoCudaTwin("TensorFusionBackwardCuda");
}
absl::Status L2NormalizeForwardCuda(int64_t, int64_t, const float*, float*) {
  return NoCudaTwin("L2NormalizeForwardCuda");
}
absl::Status L2NormalizeBackwardCuda(int64_t, int64_t, const float*,
                                     const float*, float*) {
  return NoCudaTwin("L2NormalizeBackwardCuda");
}
absl::Status InfoNceForwardCuda(const InfoNceShape&, float, const float*,
                                const float*, const int64_t*, const int64_t*,
                                float*, float*, int32_t*) {
  return NoCudaTwin("InfoNceForwardCuda");
}
absl::Status InfoNceBackwardCuda(const InfoNceShape&, float, const float*,
                                 const float*, const float*, float, float*,
                                 float*) {
  return NoCudaTwin("InfoNceBackwardCuda");
}

}  // namespace mim::kernels
