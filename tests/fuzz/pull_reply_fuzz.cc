// Fuzz target: PsClient's reader of Pull answers (ps/pull_wire.h,
// PullReply), differentially against the generated PullResponse parser.
//
// The input's first byte picks the slice size (1..256) the message is cut
// into, as gRPC hands over a message in the pieces it read; the rest is the
// message. Invariants: Parse answers OK or INVALID_ARGUMENT, never
// crashes; when both parsers accept the bytes they agree on dim, missing
// and every value byte (read back with CopyValues, forwards and one row
// out of order); when only the generated parser accepts them, the bytes
// hold a group (wire type 3 or 4), which PullReply refuses by design.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/slice.h"
#include "proto/ps.pb.h"
#include "ps/pull_wire.h"
#include "tests/fuzz/fuzz_util.h"

using mim::fuzz::Require;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const size_t piece = size_t{data[0]} + 1;
  const std::string wire(reinterpret_cast<const char*>(data + 1), size - 1);
  std::vector<grpc::Slice> slices;
  for (size_t at = 0; at < wire.size(); at += piece) {
    slices.emplace_back(wire.data() + at, std::min(piece, wire.size() - at));
  }
  const grpc::ByteBuffer buffer(slices.data(), slices.size());

  mim::ps::PullReply reply;
  const absl::Status parsed = reply.Parse(buffer);
  Require(parsed.ok() || parsed.code() == absl::StatusCode::kInvalidArgument,
          "Parse answered a code other than OK or INVALID_ARGUMENT");
  Require(reply.parse_status() == parsed, "parse_status differs from Parse");

  mim::ps::PullResponse expected;
  const bool generated_ok = expected.ParseFromString(wire);
  if (!parsed.ok()) {
    Require(reply.dim() == 0 && reply.value_bytes() == 0 &&
                reply.missing().empty(),
            "a refused message left content in the reply");
    if (generated_ok) {
      const std::string message(parsed.message());
      Require(message.find("wire type 3") != std::string::npos ||
                  message.find("wire type 4") != std::string::npos,
              "PullReply refused bytes the generated parser accepts");
    }
    return 0;
  }
  if (!generated_ok) return 0;
  Require(reply.dim() == expected.dim(), "dim differs");
  Require(reply.value_bytes() == expected.values().size(),
          "value byte count differs");
  Require(std::vector<uint32_t>(expected.missing().begin(),
                                expected.missing().end()) == reply.missing(),
          "missing differs");
  std::string values(reply.value_bytes(), '\0');
  if (!values.empty()) reply.CopyValues(0, values.size(), values.data());
  Require(values == expected.values(), "values differ");
  // Back to the start after reading to the end: the read position resets.
  if (values.size() >= 2) {
    char first[2];
    reply.CopyValues(0, 2, first);
    Require(std::string(first, 2) == values.substr(0, 2),
            "an out-of-order read differs");
  }
  return 0;
}
