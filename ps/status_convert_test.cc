#include "ps/status_convert.h"

#include "gtest/gtest.h"

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

}  // namespace
}  // namespace mim::ps
