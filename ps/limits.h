// Size limits of the parameter-server protocol, in one place for the shard
// (its flags' defaults and checks) and PsClient (how it splits calls), so
// that a client with default options never sends what a shard with default
// flags refuses.
//
// Thread-safety: constants and pure functions are reentrant; InflightBytes
// states its own.
#ifndef MIM_PS_LIMITS_H_
#define MIM_PS_LIMITS_H_

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace mim::ps {

// Largest gRPC message a shard receives or sends (--max_message_mb) and
// PsClient accepts (Options::max_message_bytes).
inline constexpr size_t kDefaultMaxMessageBytes = size_t{64} << 20;

// Most keys in one call to a shard (--max_keys_per_request) and in one
// call PsClient sends (Options::max_keys_per_rpc).
inline constexpr size_t kDefaultMaxKeysPerRequest = size_t{1} << 16;

// Largest dim of a table (embedding::kMaxDim; the shard checks they agree).
// PsClient sizes pulls of a table by it until it has learned the dim.
inline constexpr uint32_t kMaxRowDim = 4096;

// Bytes of requests and answers a shard works on at once
// (--max_inflight_mb): a call that would take it past this is refused
// RESOURCE_EXHAUSTED while others are in progress.
inline constexpr size_t kDefaultMaxInflightBytes = size_t{512} << 20;

// A Push or Upsert holds about this many times its request's bytes while
// it is applied: the request, the rows encoded for the store, RocksDB's
// write batch and its memtable copy (heaptrack of a 64k-row SGD push,
// bench/ps_memory). Its --max_inflight_mb reservation is this multiple;
// for a Push to a table whose optimizer keeps state (Adagrad: dim floats
// a row, Adam and FTRL: 2 dim), the three copies after the request hold
// the state too, so they count 1 + `state_floats_per_dim` times
// (WriteReservationBytes).
inline constexpr size_t kWriteMemoryFactor = 4;

// The --max_inflight_mb reservation of a write of `request_bytes` to rows
// whose optimizer keeps `state_floats_per_dim` state floats per value (see
// above).
size_t WriteReservationBytes(size_t request_bytes,
                             uint32_t state_floats_per_dim);

// Memory gRPC itself may use for a shard's connections and buffers
// (--grpc_memory_mb, a grpc::ResourceQuota; at least twice the message
// limit). gRPC reads a request whole before refusing it as too large, so
// this is what bounds a flood of oversized requests: 16 concurrent 200 MiB
// pushes peaked at 1143 MB with 1 GiB, 348 MB with 256 MiB
// (bench/ps_memory), while 16 concurrent 64 MiB pulls all still passed.
inline constexpr size_t kDefaultGrpcMemoryBytes = size_t{256} << 20;

// Room left in a message for everything but the rows: the table name (at
// most 128 bytes), field tags and lengths, the version.
inline constexpr size_t kMessageOverheadBytes = 1024;

// Upper bounds of the encoded size of a call's messages for `keys` keys of
// `dim` floats. Pull: rows plus, for a content table, a varint index per
// missing key; GetRows: rows, missing indices and a RowMeta per key; Push
// and Upsert requests: the packed keys plus the rows.
size_t PullResponseBytes(size_t keys, uint32_t dim);
size_t GetRowsResponseBytes(size_t keys, uint32_t dim);
size_t RowsRequestBytes(size_t keys, uint32_t dim);

// Most keys of `dim` floats whose call fits `max_message_bytes` (at least
// 1), for a Pull response (`get_rows` false) or a GetRows response.
size_t MaxKeysForResponse(size_t max_message_bytes, uint32_t dim,
                          bool get_rows);
// Most keys of `dim` floats whose Push or Upsert request fits (at least 1).
size_t MaxKeysForRowsRequest(size_t max_message_bytes, uint32_t dim);

// A budget of bytes shared by concurrent calls. Safe for concurrent access.
class InflightBytes {
 public:
  // `limit` 0: unlimited.
  explicit InflightBytes(size_t limit) : limit_(limit) {}

  // Reserves `bytes`: true when nothing is reserved (so any one call can
  // run, whatever its size) or the reserved total stays within the limit;
  // false (nothing reserved) otherwise.
  bool TryAcquire(size_t bytes);
  void Release(size_t bytes);
  size_t in_flight() const;
  size_t limit() const { return limit_; }

 private:
  const size_t limit_;
  std::atomic<size_t> in_flight_{0};
};

}  // namespace mim::ps

#endif  // MIM_PS_LIMITS_H_
