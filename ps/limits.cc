#include "ps/limits.h"

#include <algorithm>

namespace mim::ps {
namespace {

// A missing index is a uint32 varint: at most 5 bytes.
constexpr size_t kMissingBytes = 5;
// RowMeta: three tagged varints (at most 1 + 10 each) inside a
// length-delimited entry (1 tag + 1 length).
constexpr size_t kMetaBytes = 2 + 3 * 11;
// A packed fixed64 key.
constexpr size_t kKeyBytes = 8;

size_t MaxKeys(size_t max_message_bytes, size_t per_key) {
  if (max_message_bytes <= kMessageOverheadBytes) return 1;
  return std::max<size_t>(1, (max_message_bytes - kMessageOverheadBytes) /
                                 per_key);
}

}  // namespace

size_t PullResponseBytes(size_t keys, uint32_t dim) {
  return kMessageOverheadBytes + keys * (sizeof(float) * dim + kMissingBytes);
}

size_t GetRowsResponseBytes(size_t keys, uint32_t dim) {
  return kMessageOverheadBytes +
         keys * (sizeof(float) * dim + kMissingBytes + kMetaBytes);
}

size_t RowsRequestBytes(size_t keys, uint32_t dim) {
  return kMessageOverheadBytes + keys * (sizeof(float) * dim + kKeyBytes);
}

size_t MaxKeysForResponse(size_t max_message_bytes, uint32_t dim,
                          bool get_rows) {
  return MaxKeys(max_message_bytes,
                 sizeof(float) * dim + kMissingBytes +
                     (get_rows ? kMetaBytes : 0));
}

size_t MaxKeysForRowsRequest(size_t max_message_bytes, uint32_t dim) {
  return MaxKeys(max_message_bytes, sizeof(float) * dim + kKeyBytes);
}

size_t WriteReservationBytes(size_t request_bytes,
                             uint32_t state_floats_per_dim) {
  return request_bytes + (kWriteMemoryFactor - 1) *
                             (size_t{1} + state_floats_per_dim) *
                             request_bytes;
}

bool InflightBytes::TryAcquire(size_t bytes) {
  size_t now = in_flight_.load(std::memory_order_relaxed);
  while (true) {
    if (limit_ != 0 && now != 0 && now + bytes > limit_) return false;
    if (in_flight_.compare_exchange_weak(now, now + bytes,
                                         std::memory_order_relaxed)) {
      return true;
    }
  }
}

void InflightBytes::Release(size_t bytes) {
  in_flight_.fetch_sub(bytes, std::memory_order_relaxed);
}

size_t InflightBytes::in_flight() const {
  return in_flight_.load(std::memory_order_relaxed);
}

}  // namespace mim::ps
