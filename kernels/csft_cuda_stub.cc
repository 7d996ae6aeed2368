// Default build (no --config=cuda): the C-SFT CUDA twins (csft_cuda.cu)
// report UNIMPLEMENTED, as every other CUDA twin does (cuda_stub.cc).
#include <string>

#include "absl/status/status.h"
#include "kernels/csft_ops.h"

namespace mim::kernels {
namespace {
absl::Status NoCudaTwin(const char* op) {
  return absl::UnimplementedError(
      std::string(op) + ": built without CUDA (use --config=cuda)");
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
