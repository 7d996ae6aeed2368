// PullResponse (proto/ps.proto) on the wire without a PullResponse object,
// for the hot RPC: the shard writes rows straight into the gRPC slice it
// sends (PullResponseWriter), and the client copies them from the slices
// it received straight into the caller's buffer (PullReply). The bytes are
// exactly what the generated serializer writes (fields 1, 2, 3 in order,
// packed `missing`), so any PullResponse parser reads them, and PullReply
// reads any valid PullResponse encoding (fields in any order or repeated,
// `missing` packed or not, unknown fields skipped).
#ifndef MIM_PS_PULL_WIRE_H_
#define MIM_PS_PULL_WIRE_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/impl/serialization_traits.h"
#include "grpcpp/support/slice.h"
#include "grpcpp/support/status.h"

namespace mim::ps {

// The PullRequest {table, keys[picks[0]], keys[picks[1]], ...} as one
// slice, byte for byte what the generated serializer writes (field 1 left
// out when `table` is empty, packed fixed64 keys), written without a
// PullRequest object: the client's request in one pass over its keys.
// Every index in `picks` must be below keys.size().
grpc::ByteBuffer PullRequestBuffer(absl::string_view table,
                                   absl::Span<const uint64_t> keys,
                                   absl::Span<const uint32_t> picks);

// Builds one PullResponse message: Start sizes it and hands out the row
// memory (16-byte aligned, uninitialised: the caller writes every row),
// Finish appends the missing indices and returns the message. Nothing is
// copied: the rows go out from where the caller wrote them.
//
// Thread-safety: not thread-safe.
class PullResponseWriter {
 public:
  // Room for `keys` rows of `dim` floats, in a new message (a second Start
  // discards the first). `on_release`, when given, runs once the memory is
  // freed: when gRPC has let go of the message (the call finished and its
  // bytes written to the connection, or the call dropped) or the writer
  // discarded it, on whichever thread drops it last.
  float* Start(uint32_t dim, size_t keys,
               absl::AnyInvocable<void()> on_release = nullptr);
  // The message: dim, the rows written since Start, `missing` (indices
  // into the request's keys). Start must have been called.
  grpc::ByteBuffer Finish(absl::Span<const uint32_t> missing);

 private:
  grpc::Slice buffer_;  // the header and the rows, after alignment padding
  size_t begin_ = 0;    // of the message within buffer_
  size_t end_ = 0;
};

// A PullResponse as received, read in place: the rows stay in gRPC's
// slices until CopyRow copies them out.
//
// Thread-safety: const methods are safe; others need external
// synchronization (CopyRow, though const, moves a private read position:
// one reader at a time).
class PullReply {
 public:
  PullReply() = default;
  PullReply(PullReply&&) = default;
  PullReply& operator=(PullReply&&) = default;

  // Reads `buffer` (its slices are kept, not copied). On failure
  // INVALID_ARGUMENT naming what is malformed and at which byte; the reply
  // is then empty (dim 0, no values). Groups (wire types 3 and 4, which
  // PullResponse never has) are refused rather than skipped.
  absl::Status Parse(const grpc::ByteBuffer& buffer);
  // Back to the empty reply.
  void Clear();

  // The result of the last Parse (OK for an empty reply). A reply filled
  // by gRPC (SerializationTraits below) keeps a parse error here, since
  // gRPC drops its message and reports the call OK.
  const absl::Status& parse_status() const { return parse_status_; }

  uint32_t dim() const { return dim_; }
  size_t value_bytes() const { return value_bytes_; }
  const std::vector<uint32_t>& missing() const { return missing_; }

  // Copies `bytes` bytes from byte `offset` of `values` to `out`; the
  // range must lie within value_bytes(). Fastest when calls go forward.
  void CopyValues(size_t offset, size_t bytes, void* out) const;

 private:
  absl::Status ParseSlices(const grpc::ByteBuffer& buffer);

  struct Piece {
    const uint8_t* data;
    size_t size;
    size_t offset;  // of data[0] within `values`
  };

  std::vector<grpc::Slice> slices_;  // keep the pieces alive
  std::vector<Piece> pieces_;        // `values`, in order
  uint32_t dim_ = 0;
  size_t value_bytes_ = 0;
  std::vector<uint32_t> missing_;
  absl::Status parse_status_;
  mutable size_t hint_ = 0;  // the piece the last copy ended in
};

}  // namespace mim::ps

namespace grpc {

// Lets gRPC deliver a Pull answer as a PullReply (client side only).
template <>
class SerializationTraits<mim::ps::PullReply, void> {
 public:
  static Status Deserialize(ByteBuffer* buffer, mim::ps::PullReply* reply);
};

}  // namespace grpc

#endif  // MIM_PS_PULL_WIRE_H_
