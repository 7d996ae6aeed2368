#include "ps/status_convert.h"

#include "absl/strings/cord.h"
#include "gtest/gtest.h"
#include "proto/ps.pb.h"

namespace mim::ps {
namespace {

TEST(StatusConvertTest, RoundTripsEveryCanonicalCode) {
  for (int code = 0; code <= 16; ++code) {
    const absl::Status in(static_cast<absl::StatusCode>(code),
                          code == 0 ? "" : "message " + std::to_string(code));
    const grpc::Status wire = ToGrpcStatus(in);
    EXPECT_EQ(static_cast<int>(wire.error_code()), code);
    EXPECT_EQ(FromGrpcStatus(wire), in);
  }
}

TEST(StatusConvertTest, KeepsMessage) {
  const grpc::Status wire =
      ToGrpcStatus(absl::NotFoundError("table 'x' not found"));
  EXPECT_EQ(wire.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(wire.error_message(), "table 'x' not found");
}

TEST(StatusConvertTest, CapsLongMessages) {
  const std::string exact(kMaxErrorMessageBytes, 'm');
  EXPECT_EQ(ToGrpcStatus(absl::InternalError(exact)).error_message(), exact);
  const grpc::Status wire = ToGrpcStatus(absl::NotFoundError(
      "no table named '" + std::string(1 << 20, 'x') + "'"));
  EXPECT_EQ(wire.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(wire.error_message().size(), kMaxErrorMessageBytes);
  EXPECT_EQ(wire.error_message().substr(0, 16), "no table named '");
  EXPECT_EQ(wire.error_message().substr(kMaxErrorMessageBytes - 4), "x...");
}

TEST(StatusConvertTest, QuoteInputCapsClientInput) {
  EXPECT_EQ(QuoteInput("user"), "user");
  EXPECT_EQ(QuoteInput(std::string(kMaxQuotedInputBytes, 'a')),
            std::string(kMaxQuotedInputBytes, 'a'));
  EXPECT_EQ(QuoteInput(std::string(1 << 20, 'a'), 4), "aaaa... (1048576 bytes)");
}

TEST(StatusConvertTest, OutOfRangeCodeIsUnknown) {
  const absl::Status s =
      FromGrpcStatus(grpc::Status(static_cast<grpc::StatusCode>(99), "odd"));
  EXPECT_EQ(s.code(), absl::StatusCode::kUnknown);
  EXPECT_EQ(s.message(), "odd");
}

TEST(StatusConvertTest, RetryLaterTravels) {
  const absl::Status busy =
      MarkRetryLater(absl::ResourceExhaustedError("shard 0/1 is busy"));
  EXPECT_TRUE(IsRetryLater(busy));
  const grpc::Status wire = ToGrpcStatus(busy);
  EXPECT_EQ(wire.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(wire.error_message(), "shard 0/1 is busy");
  // The details are a google.rpc.Status in layout.
  WireStatus details;
  ASSERT_TRUE(details.ParseFromString(wire.error_details()));
  EXPECT_EQ(details.code(), 8);
  EXPECT_EQ(details.message(), "shard 0/1 is busy");
  ASSERT_EQ(details.details_size(), 1);
  EXPECT_EQ(details.details(0).type_url(), kRetryLaterUrl);
  const absl::Status back = FromGrpcStatus(wire);
  EXPECT_TRUE(IsRetryLater(back));
  EXPECT_EQ(back, busy);
}

TEST(StatusConvertTest, OtherPayloadsTravelAndPlainErrorsHaveNoDetails) {
  absl::Status s = absl::InternalError("x");
  EXPECT_TRUE(ToGrpcStatus(s).error_details().empty());
  EXPECT_FALSE(IsRetryLater(FromGrpcStatus(ToGrpcStatus(s))));
  s.SetPayload("type.example/a", absl::Cord(absl::string_view("bytes\0in", 8)));
  EXPECT_EQ(FromGrpcStatus(ToGrpcStatus(s)), s);
}

TEST(StatusConvertTest, PayloadsBeyondTheCapStayHere) {
  absl::Status s = MarkRetryLater(absl::UnavailableError("x"));
  s.SetPayload("type.example/big", absl::Cord(std::string(2000, 'b')));
  const absl::Status back = FromGrpcStatus(ToGrpcStatus(s));
  EXPECT_TRUE(IsRetryLater(back));
  EXPECT_FALSE(back.GetPayload("type.example/big").has_value());
  EXPECT_LE(ToGrpcStatus(s).error_details().size(), kMaxErrorDetailBytes + 64);
}

TEST(StatusConvertTest, DetailsThatDoNotParseAreIgnored) {
  const absl::Status s = FromGrpcStatus(
      grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "m", "\xff\xff\xff"));
  EXPECT_EQ(s, absl::ResourceExhaustedError("m"));
}

TEST(StatusConvertTest, ReplacePathOnlyReplacesWholePaths) {
  std::string text =
      "cannot open /srv/data/db/LOCK (from '/srv/data'), dir=/srv/data; "
      "not /srv/database or /srv/data-old or x/srv/data";
  EXPECT_EQ(ReplacePath("/srv/data", "<data_dir>", &text), 3u);
  EXPECT_EQ(text,
            "cannot open <data_dir>/db/LOCK (from '<data_dir>'), "
            "dir=<data_dir>; not /srv/database or /srv/data-old or "
            "x/srv/data");
  // A data dir that is a common word: only where it stands as a path.
  std::string busy = "shard 0/1 is busy: data holds 3 calls; see data/x";
  EXPECT_EQ(ReplacePath("data", "<data_dir>", &busy), 1u);
  EXPECT_EQ(busy, "shard 0/1 is busy: data holds 3 calls; see <data_dir>/x");
  std::string none = "nothing here";
  EXPECT_EQ(ReplacePath("", "x", &none), 0u);
  EXPECT_EQ(none, "nothing here");
}

}  // namespace
}  // namespace mim::ps
