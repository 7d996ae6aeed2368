// Conversion between absl::Status and grpc::Status, used only at the RPC edge
// (the service handlers and the client adapter). The canonical codes are the
// same numbers in both libraries, so the code and message travel unchanged.
#ifndef MIM_PS_STATUS_CONVERT_H_
#define MIM_PS_STATUS_CONVERT_H_

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace mim::ps {

grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace mim::ps

#endif  // MIM_PS_STATUS_CONVERT_H_
