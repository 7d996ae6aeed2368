#include "ps/pull_wire.h"

#include <algorithm>
#include <cstring>
#include <new>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "google/protobuf/io/coded_stream.h"
#include "grpc/slice.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "keys and rows travel as little-endian fixed64 and float32");

namespace mim::ps {
namespace {

// Tags of PullResponse's fields (field number << 3 | wire type).
constexpr uint8_t kDimTag = (1 << 3) | 0;      // uint32 dim = 1
constexpr uint8_t kValuesTag = (2 << 3) | 2;   // bytes values = 2
constexpr uint8_t kMissingTag = (3 << 3) | 2;  // packed uint32 missing = 3

// Where the rows start in the slice: float rows, and room for SIMD loads.
constexpr size_t kRowAlignment = 16;

size_t VarintSize(uint64_t v) {
  return google::protobuf::io::CodedOutputStream::VarintSize64(v);
}

uint8_t* PutVarint(uint64_t v, uint8_t* p) {
  return google::protobuf::io::CodedOutputStream::WriteVarint64ToArray(v, p);
}

// A forward reader over a message's slices. Not thread-safe.
class SliceReader {
 public:
  SliceReader(const std::vector<grpc::Slice>& slices, size_t length)
      : slices_(slices), length_(length) {
    SkipEmpty();
  }

  size_t position() const { return position_; }
  size_t remaining() const { return length_ - position_; }
  bool AtEnd() const { return position_ == length_; }

  // Protobuf's base-128 varint of at most `max_bytes` bytes (10 for
  // values, 5 for tags and lengths, as protobuf reads them), bits past 64
  // dropped as protobuf does. `what` names it in the error.
  absl::Status ReadVarint(const char* what, uint64_t* value,
                          int max_bytes = 10) {
    const size_t start = position_;
    uint64_t v = 0;
    for (int shift = 0; shift < 7 * max_bytes; shift += 7) {
      if (AtEnd()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "PullResponse ends inside the ", what, " that starts at byte ",
            start, " of ", length_));
      }
      const uint8_t b = slices_[index_].begin()[offset_];
      Advance(1);
      if (shift < 64) v |= static_cast<uint64_t>(b & 0x7F) << shift;
      if ((b & 0x80) == 0) {
        *value = v;
        return absl::OkStatus();
      }
    }
    return absl::InvalidArgumentError(
        absl::StrCat("PullResponse has a ", what, " longer than ", max_bytes,
                     " bytes at byte ", start, " of ", length_));
  }

  // Passes the next `n` bytes (n <= remaining()) to `piece(data, size)` as
  // they lie in the slices, in order, never empty.
  template <typename Piece>
  void Take(size_t n, const Piece& piece) {
    while (n > 0) {
      const grpc::Slice& s = slices_[index_];
      const size_t take = std::min(n, s.size() - offset_);
      piece(s.begin() + offset_, take);
      Advance(take);
      n -= take;
    }
  }

 private:
  void Advance(size_t n) {
    offset_ += n;
    position_ += n;
    SkipEmpty();
  }
  void SkipEmpty() {
    while (index_ < slices_.size() && offset_ == slices_[index_].size()) {
      ++index_;
      offset_ = 0;
    }
  }

  const std::vector<grpc::Slice>& slices_;
  const size_t length_;
  size_t index_ = 0;
  size_t offset_ = 0;
  size_t position_ = 0;
};

}  // namespace

grpc::ByteBuffer PullRequestBuffer(absl::string_view table,
                                   absl::Span<const uint64_t> keys,
                                   absl::Span<const uint32_t> picks) {
  constexpr uint8_t kTableTag = (1 << 3) | 2;  // string table = 1
  constexpr uint8_t kKeysTag = (2 << 3) | 2;   // packed fixed64 keys = 2
  const size_t key_bytes = sizeof(uint64_t) * picks.size();
  size_t size = 0;
  if (!table.empty()) size += 1 + VarintSize(table.size()) + table.size();
  if (key_bytes != 0) size += 1 + VarintSize(key_bytes) + key_bytes;
  grpc::Slice slice(grpc_slice_malloc_large(size), grpc::Slice::STEAL_REF);
  uint8_t* p = const_cast<uint8_t*>(slice.begin());
  if (!table.empty()) {
    *p++ = kTableTag;
    p = PutVarint(table.size(), p);
    std::memcpy(p, table.data(), table.size());
    p += table.size();
  }
  if (key_bytes != 0) {
    *p++ = kKeysTag;
    p = PutVarint(key_bytes, p);
    for (const uint32_t i : picks) {  // little-endian, as fixed64 travels
      std::memcpy(p, &keys[i], sizeof(uint64_t));
      p += sizeof(uint64_t);
    }
  }
  return grpc::ByteBuffer(&slice, 1);
}

namespace {

// The memory of a message with an on_release callback: the callback, then
// the message's bytes, in one allocation that gRPC frees through
// FreeReleasingBuffer when the slice's last reference goes.
struct ReleasingBuffer {
  absl::AnyInvocable<void()> on_release;
};

void FreeReleasingBuffer(void* p) {
  auto* buffer = static_cast<ReleasingBuffer*>(p);
  absl::AnyInvocable<void()> on_release = std::move(buffer->on_release);
  buffer->~ReleasingBuffer();
  ::operator delete(p);
  if (on_release) on_release();
}

// A refcounted slice of `size` bytes; with `on_release`, called once the
// slice's memory is freed.
grpc::Slice NewSlice(size_t size, absl::AnyInvocable<void()> on_release) {
  if (!on_release) {
    return grpc::Slice(grpc_slice_malloc_large(size), grpc::Slice::STEAL_REF);
  }
  void* memory = ::operator new(sizeof(ReleasingBuffer) + size);
  auto* buffer = new (memory) ReleasingBuffer{std::move(on_release)};
  return grpc::Slice(
      grpc_slice_new_with_user_data(static_cast<char*>(memory) +
                                        sizeof(ReleasingBuffer),
                                    size, &FreeReleasingBuffer, buffer),
      grpc::Slice::STEAL_REF);
}

}  // namespace

float* PullResponseWriter::Start(uint32_t dim, size_t keys,
                                 absl::AnyInvocable<void()> on_release) {
  const size_t value_bytes = sizeof(float) * size_t{dim} * keys;
  // proto3 leaves out fields that hold their default (0, empty).
  size_t header = 0;
  if (dim != 0) header += 1 + VarintSize(dim);
  if (value_bytes != 0) header += 1 + VarintSize(value_bytes);
  // Always refcounted (never inlined in the slice object), so the pointer
  // handed out stays valid as the slice is moved.
  grpc::Slice whole = NewSlice(header + value_bytes + kRowAlignment - 1,
                               std::move(on_release));
  uint8_t* base = const_cast<uint8_t*>(whole.begin());
  const size_t pad =
      (kRowAlignment -
       (reinterpret_cast<uintptr_t>(base) + header) % kRowAlignment) %
      kRowAlignment;
  uint8_t* p = base + pad;
  if (dim != 0) {
    *p++ = kDimTag;
    p = PutVarint(dim, p);
  }
  if (value_bytes != 0) {
    *p++ = kValuesTag;
    p = PutVarint(value_bytes, p);
  }
  buffer_ = std::move(whole);
  begin_ = pad;
  end_ = pad + header + value_bytes;
  return reinterpret_cast<float*>(p);
}

grpc::ByteBuffer PullResponseWriter::Finish(
    absl::Span<const uint32_t> missing) {
  // The sub-slice is taken only now: a short one is copied out of the
  // buffer, so it must see the rows.
  grpc::Slice slices[2] = {buffer_.sub(begin_, end_), grpc::Slice()};
  size_t count = 1;
  if (!missing.empty()) {
    size_t payload = 0;
    for (const uint32_t m : missing) payload += VarintSize(m);
    grpc::Slice tail(grpc_slice_malloc_large(1 + VarintSize(payload) + payload),
                     grpc::Slice::STEAL_REF);
    uint8_t* p = const_cast<uint8_t*>(tail.begin());
    *p++ = kMissingTag;
    p = PutVarint(payload, p);
    for (const uint32_t m : missing) p = PutVarint(m, p);
    slices[1] = std::move(tail);
    count = 2;
  }
  buffer_ = grpc::Slice();
  return grpc::ByteBuffer(slices, count);
}

void PullReply::Clear() {
  slices_.clear();
  pieces_.clear();
  dim_ = 0;
  value_bytes_ = 0;
  missing_.clear();
  parse_status_ = absl::OkStatus();
  hint_ = 0;
}

absl::Status PullReply::Parse(const grpc::ByteBuffer& buffer) {
  Clear();
  parse_status_ = ParseSlices(buffer);
  if (!parse_status_.ok()) {
    absl::Status error = std::move(parse_status_);
    Clear();
    parse_status_ = error;
  }
  return parse_status_;
}

absl::Status PullReply::ParseSlices(const grpc::ByteBuffer& buffer) {
  if (!buffer.Valid()) return absl::OkStatus();  // no bytes: the empty message
  if (grpc::Status s = buffer.Dump(&slices_); !s.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("PullResponse cannot be read: ", s.error_message()));
  }
  size_t length = 0;
  for (const grpc::Slice& s : slices_) length += s.size();
  SliceReader in(slices_, length);
  while (!in.AtEnd()) {
    const size_t at = in.position();
    // Tags are 32-bit, read from at most 5 bytes with the bits past 32
    // dropped, as protobuf reads them (so a field number never exceeds
    // 2^29 - 1).
    uint64_t tag64 = 0;
    if (absl::Status s = in.ReadVarint("field tag", &tag64, 5); !s.ok()) {
      return s;
    }
    const uint32_t tag = static_cast<uint32_t>(tag64);
    const uint32_t field = tag >> 3;
    const int wire_type = static_cast<int>(tag & 7);
    if (field == 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "PullResponse has field number 0 at byte ", at, " of ", length,
          "; field numbers are 1..536870911"));
    }
    uint64_t value = 0;
    switch (wire_type) {
      case 0: {  // varint
        if (absl::Status s = in.ReadVarint("varint", &value); !s.ok()) return s;
        // A field of another wire type than its declared one is an unknown
        // field to protobuf, and skipped as one.
        if (field == 1) dim_ = static_cast<uint32_t>(value);
        if (field == 3) missing_.push_back(static_cast<uint32_t>(value));
        break;
      }
      case 1:  // fixed64
      case 5: {  // fixed32
        const size_t n = wire_type == 1 ? 8 : 4;
        if (in.remaining() < n) {
          return absl::InvalidArgumentError(absl::StrCat(
              "PullResponse ends inside the ", n, "-byte field ", field,
              " that starts at byte ", at, " of ", length));
        }
        in.Take(n, [](const uint8_t*, size_t) {});
        break;
      }
      case 2: {  // length-delimited
        // At most 5 bytes, as protobuf reads a length (and below 2 GiB,
        // which the check against what remains implies).
        if (absl::Status s = in.ReadVarint("length", &value, 5); !s.ok()) {
          return s;
        }
        if (value > in.remaining()) {
          return absl::InvalidArgumentError(absl::StrCat(
              "PullResponse field ", field, " at byte ", at, " declares ",
              value, " bytes but ", in.remaining(), " of ", length,
              " remain"));
        }
        if (field == 2) {  // values: the last occurrence wins
          pieces_.clear();
          value_bytes_ = static_cast<size_t>(value);
          size_t offset = 0;
          in.Take(value_bytes_, [&](const uint8_t* data, size_t size) {
            pieces_.push_back(Piece{data, size, offset});
            offset += size;
          });
        } else if (field == 3) {  // packed missing
          const size_t end = in.position() + static_cast<size_t>(value);
          while (in.position() < end) {
            uint64_t m = 0;
            if (absl::Status s = in.ReadVarint("missing index", &m); !s.ok()) {
              return s;
            }
            if (in.position() > end) {
              return absl::InvalidArgumentError(absl::StrCat(
                  "PullResponse field 3 at byte ", at, " (packed, ", value,
                  " bytes) ends inside a varint"));
            }
            missing_.push_back(static_cast<uint32_t>(m));
          }
        } else {
          in.Take(static_cast<size_t>(value), [](const uint8_t*, size_t) {});
        }
        break;
      }
      default:
        return absl::InvalidArgumentError(absl::StrCat(
            "PullResponse has wire type ", wire_type, " (field ", field,
            ") at byte ", at, " of ", length,
            "; PullResponse uses varint, fixed and length-delimited fields "
            "only"));
    }
  }
  return absl::OkStatus();
}

void PullReply::CopyValues(size_t offset, size_t bytes, void* out) const {
  size_t i = hint_ < pieces_.size() && pieces_[hint_].offset <= offset ? hint_
                                                                       : 0;
  while (pieces_[i].offset + pieces_[i].size <= offset) ++i;
  char* dst = static_cast<char*>(out);
  while (bytes > 0) {
    const Piece& p = pieces_[i];
    const size_t in = offset - p.offset;
    const size_t take = std::min(bytes, p.size - in);
    std::memcpy(dst, p.data + in, take);
    dst += take;
    offset += take;
    bytes -= take;
    if (bytes > 0) ++i;
  }
  hint_ = i;
}

}  // namespace mim::ps

namespace grpc {

Status SerializationTraits<mim::ps::PullReply, void>::Deserialize(
    ByteBuffer* buffer, mim::ps::PullReply* reply) {
  const absl::Status parsed = reply->Parse(*buffer);
  buffer->Clear();
  if (parsed.ok()) return Status::OK;
  return Status(StatusCode::INTERNAL, std::string(parsed.message()));
}

}  // namespace grpc
