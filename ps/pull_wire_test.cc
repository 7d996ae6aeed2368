#include "ps/pull_wire.h"

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/slice.h"
#include "gtest/gtest.h"
#include "proto/ps.pb.h"

namespace mim::ps {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;

std::string Bytes(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  EXPECT_TRUE(buffer.Dump(&slices).ok());
  std::string out;
  for (const grpc::Slice& s : slices) {
    out.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  return out;
}

// `bytes` as a message received in slices of `piece` bytes (the last one
// shorter), as gRPC hands a message over in the pieces it read.
grpc::ByteBuffer Received(const std::string& bytes, size_t piece) {
  std::vector<grpc::Slice> slices;
  for (size_t at = 0; at < bytes.size(); at += piece) {
    slices.emplace_back(bytes.data() + at, std::min(piece, bytes.size() - at));
  }
  return grpc::ByteBuffer(slices.data(), slices.size());
}

std::string Deterministic(const PullResponse& response) {
  std::string out;
  google::protobuf::io::StringOutputStream stream(&out);
  google::protobuf::io::CodedOutputStream coded(&stream);
  coded.SetSerializationDeterministic(true);
  response.SerializeToCodedStream(&coded);
  coded.Trim();
  return out;
}

std::vector<float> Rows(uint32_t dim, size_t keys) {
  std::vector<float> rows(size_t{dim} * keys);
  for (size_t i = 0; i < rows.size(); ++i) rows[i] = 0.25f * i - 3.0f;
  return rows;
}

std::vector<float> ReadAll(const PullReply& reply, size_t keys) {
  std::vector<float> rows(size_t{reply.dim()} * keys);
  const size_t row_bytes = sizeof(float) * reply.dim();
  for (size_t i = 0; i < keys; ++i) {
    reply.CopyValues(i * row_bytes, row_bytes, rows.data() + i * reply.dim());
  }
  return rows;
}

struct Case {
  uint32_t dim;
  size_t keys;
  std::vector<uint32_t> missing;
};

const Case kCases[] = {
    {64, 1024, {}},
    {64, 16384, {0, 5, 16383}},
    {1, 1, {0}},           // shorter than a slice keeps inline
    {3, 0, {}},            // no keys: dim only
    {0, 0, {}},            // nothing at all
    {4096, 3, {1, 300}},   // multi-byte varints in the header
};

TEST(PullRequestBuffer, WritesWhatTheGeneratedSerializerWrites) {
  const std::vector<uint64_t> keys = {0, 1, ~uint64_t{0}, uint64_t{1} << 63,
                                      0x0102030405060708};
  const std::string long_table(200, 't');  // a two-byte length varint
  const std::vector<std::vector<uint32_t>> picks = {
      {}, {0}, {4, 2, 2, 0}, {1, 2, 3, 4, 0}};
  for (const std::string& table : {std::string(), std::string("user"),
                                    long_table}) {
    for (const std::vector<uint32_t>& p : picks) {
      SCOPED_TRACE(testing::Message() << "table '" << table << "', "
                                      << p.size() << " keys");
      PullRequest expected;
      expected.set_table(table);
      for (const uint32_t i : p) expected.add_keys(keys[i]);
      std::string want;
      ASSERT_TRUE(expected.SerializeToString(&want));
      const std::string wire = Bytes(PullRequestBuffer(table, keys, p));
      EXPECT_EQ(wire, want);
      PullRequest parsed;
      ASSERT_TRUE(parsed.ParseFromString(wire));
      EXPECT_EQ(parsed.table(), table);
      ASSERT_EQ(parsed.keys_size(), static_cast<int>(p.size()));
      for (size_t j = 0; j < p.size(); ++j) {
        EXPECT_EQ(parsed.keys(static_cast<int>(j)), keys[p[j]]);
      }
    }
  }
}

TEST(PullResponseWriter, WritesWhatTheGeneratedSerializerWrites) {
  for (const Case& c : kCases) {
    SCOPED_TRACE(testing::Message() << "dim " << c.dim << " keys " << c.keys);
    const std::vector<float> rows = Rows(c.dim, c.keys);
    PullResponseWriter writer;
    float* out = writer.Start(c.dim, c.keys);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(out) % 16, 0u);
    if (!rows.empty()) std::memcpy(out, rows.data(), rows.size() * 4);
    const std::string wire = Bytes(writer.Finish(c.missing));

    PullResponse expected;
    expected.set_dim(c.dim);
    expected.set_values(std::string(reinterpret_cast<const char*>(rows.data()),
                                    rows.size() * sizeof(float)));
    expected.mutable_missing()->Add(c.missing.begin(), c.missing.end());
    EXPECT_EQ(wire, Deterministic(expected));

    PullResponse parsed;
    ASSERT_TRUE(parsed.ParseFromString(wire));
    EXPECT_EQ(parsed.dim(), c.dim);
    EXPECT_EQ(parsed.values(), expected.values());
    EXPECT_THAT(parsed.missing(), ElementsAreArray(c.missing));
  }
}

TEST(PullReply, ReadsTheGeneratedSerializationInAnySlicing) {
  for (const Case& c : kCases) {
    const std::vector<float> rows = Rows(c.dim, c.keys);
    PullResponse response;
    response.set_dim(c.dim);
    response.set_values(std::string(reinterpret_cast<const char*>(rows.data()),
                                    rows.size() * sizeof(float)));
    response.mutable_missing()->Add(c.missing.begin(), c.missing.end());
    const std::string wire = response.SerializeAsString();
    for (const size_t piece : {size_t{1}, size_t{7}, size_t{4096},
                               wire.size() + 1}) {
      SCOPED_TRACE(testing::Message() << "dim " << c.dim << " keys " << c.keys
                                      << " piece " << piece);
      PullReply reply;
      ASSERT_TRUE(reply.Parse(Received(wire, piece)).ok());
      EXPECT_EQ(reply.dim(), c.dim);
      EXPECT_EQ(reply.value_bytes(), rows.size() * sizeof(float));
      EXPECT_THAT(reply.missing(), ElementsAreArray(c.missing));
      EXPECT_EQ(ReadAll(reply, c.keys), rows);
    }
  }
}

TEST(PullReply, CopiesRowsInAnyOrderAcrossSlices) {
  const uint32_t dim = 5;
  const size_t keys = 40;
  const std::vector<float> rows = Rows(dim, keys);
  PullResponse response;
  response.set_dim(dim);
  response.set_values(std::string(reinterpret_cast<const char*>(rows.data()),
                                  rows.size() * sizeof(float)));
  PullReply reply;
  ASSERT_TRUE(reply.Parse(Received(response.SerializeAsString(), 13)).ok());
  for (const size_t i : {39, 0, 17, 18, 3, 39, 1}) {
    float row[dim];
    reply.CopyValues(i * sizeof(row), sizeof(row), row);
    EXPECT_EQ(std::vector<float>(row, row + dim),
              std::vector<float>(rows.begin() + i * dim,
                                 rows.begin() + (i + 1) * dim))
        << "row " << i;
  }
}

TEST(PullReply, RoundTripsTheWriter) {
  const std::vector<float> rows = Rows(8, 100);
  PullResponseWriter writer;
  std::memcpy(writer.Start(8, 100), rows.data(), rows.size() * 4);
  PullReply reply;
  ASSERT_TRUE(reply.Parse(writer.Finish({2, 99})).ok());
  EXPECT_EQ(reply.dim(), 8u);
  EXPECT_THAT(reply.missing(), ElementsAre(2, 99));
  EXPECT_EQ(ReadAll(reply, 100), rows);
}

TEST(PullReply, AcceptsEveryValidEncoding) {
  // Unknown fields of every wire type, missing unpacked and packed, fields
  // out of order and repeated (the last values and dim win).
  const char kWire[] =
      "\x1a\x02\x07\x08"                      // missing packed [7, 8]
      "\x12\x04\x01\x02\x03\x04"              // values, replaced below
      "\x18\x09"                              // missing 9, unpacked
      "\x08\x05"                              // dim 5
      "\x20\x80\x01"                          // field 4 varint (unknown)
      "\x29\x01\x02\x03\x04\x05\x06\x07\x08"  // field 5 fixed64
      "\x35\x01\x02\x03\x04"                  // field 6 fixed32
      "\x3a\x01\x00"                          // field 7 length-delimited
      "\x12\x04\xaa\xbb\xcc\xdd"              // values
      "\x08\x01";                             // dim 1: the last one wins
  const std::string wire(kWire, sizeof(kWire) - 1);
  PullReply reply;
  ASSERT_TRUE(reply.Parse(Received(wire, 3)).ok());
  EXPECT_EQ(reply.dim(), 1u);
  EXPECT_THAT(reply.missing(), ElementsAre(7, 8, 9));
  ASSERT_EQ(reply.value_bytes(), 4u);
  uint8_t values[4];
  reply.CopyValues(0, 4, values);
  EXPECT_THAT(values, ElementsAre(0xaa, 0xbb, 0xcc, 0xdd));
  // The generated parser agrees.
  PullResponse parsed;
  ASSERT_TRUE(parsed.ParseFromString(wire));
  EXPECT_EQ(parsed.dim(), 1u);
  EXPECT_THAT(parsed.missing(), ElementsAre(7, 8, 9));
  EXPECT_EQ(parsed.values(), "\xaa\xbb\xcc\xdd");
}

// Found by tests/fuzz/pull_reply: a 5-byte tag whose bits past 32 are set
// is a valid tag to protobuf (they are dropped), here field 1 as fixed64.
TEST(PullReply, ReadsTagsAsProtobufDoesPast32Bits) {
  const std::string wire("\x89\x80\x80\x80\x10\x01\x02\x03\x04\x05\x06\x07\x08"
                         "\x08\x03",
                         15);
  PullResponse parsed;
  ASSERT_TRUE(parsed.ParseFromString(wire));
  PullReply reply;
  ASSERT_TRUE(reply.Parse(Received(wire, 2)).ok());
  EXPECT_EQ(reply.dim(), parsed.dim());
  EXPECT_EQ(reply.dim(), 3u);
}

TEST(PullReply, EmptyMessageIsAnEmptyReply) {
  PullReply reply;
  ASSERT_TRUE(reply.Parse(grpc::ByteBuffer()).ok());
  EXPECT_EQ(reply.dim(), 0u);
  EXPECT_EQ(reply.value_bytes(), 0u);
  EXPECT_TRUE(reply.missing().empty());
}

TEST(PullReply, RefusesMalformedInputNamingTheByte) {
  const struct {
    std::string wire;
    std::string error;
  } kMalformed[] = {
      {std::string("\x08", 1),
       "PullResponse ends inside the varint that starts at byte 1 of 1"},
      {std::string("\x08\x02\x92", 3),
       "PullResponse ends inside the field tag that starts at byte 2 of 3"},
      {std::string("\x12\x05\x01", 3),
       "PullResponse field 2 at byte 0 declares 5 bytes but 1 of 3 remain"},
      {std::string("\x12\x80", 2),
       "PullResponse ends inside the length that starts at byte 1 of 2"},
      {std::string("\x1b", 1),
       "PullResponse has wire type 3 (field 3) at byte 0 of 1; PullResponse "
       "uses varint, fixed and length-delimited fields only"},
      {std::string("\x0f", 1),
       "PullResponse has wire type 7 (field 1) at byte 0 of 1; PullResponse "
       "uses varint, fixed and length-delimited fields only"},
      {std::string("\x00", 1),
       "PullResponse has field number 0 at byte 0 of 1; field numbers are "
       "1..536870911"},
      {std::string("\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 12),
       "PullResponse has a varint longer than 10 bytes at byte 1 of 12"},
      {std::string("\x88\x80\x80\x80\x80\x00\x01", 7),
       "PullResponse has a field tag longer than 5 bytes at byte 0 of 7"},
      {std::string("\x12\x81\x80\x80\x80\x80\x00\x01", 8),
       "PullResponse has a length longer than 5 bytes at byte 1 of 8"},
      {std::string("\x1a\x01\x80\x01", 4),
       "PullResponse field 3 at byte 0 (packed, 1 bytes) ends inside a "
       "varint"},
      {std::string("\x29\x01\x02", 3),
       "PullResponse ends inside the 8-byte field 5 that starts at byte 0 "
       "of 3"},
  };
  for (const auto& m : kMalformed) {
    for (const size_t piece : {size_t{1}, m.wire.size()}) {
      PullReply reply;
      const absl::Status s = reply.Parse(Received(m.wire, piece));
      EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
      EXPECT_EQ(s.message(), m.error);
      EXPECT_EQ(reply.parse_status(), s);
      EXPECT_EQ(reply.dim(), 0u);
      EXPECT_EQ(reply.value_bytes(), 0u);
    }
  }
}

TEST(PullReply, GrpcDeserializationKeepsTheParseError) {
  grpc::ByteBuffer bad = Received(std::string("\x12\x05\x01", 3), 3);
  PullReply reply;
  const grpc::Status s =
      grpc::SerializationTraits<PullReply>::Deserialize(&bad, &reply);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INTERNAL);
  EXPECT_EQ(s.error_message(),
            "PullResponse field 2 at byte 0 declares 5 bytes but 1 of 3 "
            "remain");
  EXPECT_EQ(reply.parse_status().message(), s.error_message());
  // A good message after a bad one clears the error.
  grpc::ByteBuffer good = Received(std::string("\x08\x02", 2), 2);
  EXPECT_TRUE(
      grpc::SerializationTraits<PullReply>::Deserialize(&good, &reply).ok());
  EXPECT_TRUE(reply.parse_status().ok());
  EXPECT_EQ(reply.dim(), 2u);
}

}  // namespace
}  // namespace mim::ps
