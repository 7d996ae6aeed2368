// Operations surface of a real //ps:server shard (a child process on
// loopback): Prometheus metrics on --metrics_port (counters moved by exactly
// the keys sent, text accepted by `promtool check metrics`), gRPC server
// reflection and grpc.health.v1.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "google/protobuf/descriptor.pb.h"
#include "grpcpp/client_context.h"
#include "grpcpp/completion_queue.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/impl/codegen/proto_utils.h"  // protobuf messages on streams
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "proto/ps.pb.h"
#include "ps/client.h"
#include "tests/process.h"
#include "tests/ps_tables.h"
#include "tests/ops_util.h"
#include "tests/reflection.pb.h"

namespace mim::ps {
namespace {

using ::mim::testing::CommandResult;
using ::mim::testing::ContentTable;
using ::mim::testing::IdTable;
using ::mim::testing::HttpGet;
using ::mim::testing::MetricSample;
using ::mim::testing::ReflectionStream;
using ::mim::testing::RunCommand;
using ::mim::testing::ServerProcess;
using ::mim::testing::Runfile;
using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr char kPromtool[] = "/usr/bin/promtool";

// A shard started with --metrics_port=0: ServerProcess waits for both
// "listening on" lines (gRPC, then /metrics).
absl::StatusOr<std::unique_ptr<ServerProcess>> StartMetricsShard(
    const std::string& data_dir) {
  return ServerProcess::Start(
      {Runfile("ps/server"), "--host=127.0.0.1", "--port=0",
       "--data_dir=" + data_dir, "--threads=4", "--metrics_port=0"},
      /*expect_metrics=*/true);
}

std::string ByMethod(const std::string& name, const std::string& method) {
  return absl::StrCat(name, "{method=\"", method, "\"}");
}

class ShardMetricsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    data_dir_ = absl::StrCat(std::getenv("TEST_TMPDIR"), "/", info->name());
    auto shard = StartMetricsShard(data_dir_);
    ASSERT_TRUE(shard.ok()) << shard.status();
    shard_ = std::move(*shard);
    PsClient::Options options;
    options.timeout = absl::Seconds(20);
    auto client = PsClient::Create({shard_->address()}, options);
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = std::move(*client);
  }

  std::string Scrape() {
    absl::StatusOr<std::string> text =
        HttpGet(shard_->metrics_port(), "/metrics");
    EXPECT_TRUE(text.ok()) << text.status();
    return text.ok() ? *text : "";
  }

  std::string data_dir_;
  std::unique_ptr<ServerProcess> shard_;
  std::unique_ptr<PsClient> client_;
};

TEST_F(ShardMetricsTest, CountersMoveByTheKeysSent) {
  ASSERT_TRUE(client_->CreateTable(IdTable("ids", 4), false).ok());
  ASSERT_TRUE(client_->CreateTable(ContentTable("content", 3), false).ok());
  const std::string before = Scrape();
  for (const char* method : {"Pull", "Push", "Upsert"}) {
    EXPECT_EQ(MetricSample(before, ByMethod("mim_ps_requests_total", method)), 0)
        << method;
    EXPECT_EQ(MetricSample(before, ByMethod("mim_ps_keys_total", method)), 0)
        << method;
  }
  EXPECT_EQ(MetricSample(before, ByMethod("mim_ps_requests_total", "CreateTable")),
            2);

  const std::vector<uint64_t> pulled = {11, 12, 13, 14, 15};
  ASSERT_TRUE(client_->Pull("ids", pulled).ok());
  const std::vector<uint64_t> pushed = {11, 13, 15};
  ASSERT_TRUE(
      client_->Push("ids", pushed, std::vector<float>(pushed.size() * 4, 0.5f))
          .ok());
  const std::vector<uint64_t> upserted = {101, 102};
  ASSERT_TRUE(client_
                  ->Upsert("content", upserted,
                           std::vector<float>(upserted.size() * 3, 1.0f), 7)
                  .ok());
  // A failed call counts as a request and an error, not as keys.
  const std::vector<uint64_t> unknown_table_keys = {1, 2};
  EXPECT_EQ(client_->Pull("no_such_table", unknown_table_keys).status().code(),
            absl::StatusCode::kNotFound);

  const std::string after = Scrape();
  EXPECT_EQ(MetricSample(after, ByMethod("mim_ps_requests_total", "Pull")), 2);
  EXPECT_EQ(MetricSample(after, ByMethod("mim_ps_requests_total", "Push")), 1);
  EXPECT_EQ(MetricSample(after, ByMethod("mim_ps_requests_total", "Upsert")), 1);
  EXPECT_EQ(MetricSample(after, ByMethod("mim_ps_keys_total", "Pull")),
            pulled.size());
  EXPECT_EQ(MetricSample(after, ByMethod("mim_ps_keys_total", "Push")),
            pushed.size());
  EXPECT_EQ(MetricSample(after, ByMethod("mim_ps_keys_total", "Upsert")),
            upserted.size());
  EXPECT_EQ(MetricSample(after,
                   "mim_ps_request_errors_total{code=\"NOT_FOUND\","
                   "method=\"Pull\"}"),
            1);
  EXPECT_EQ(MetricSample(before,
                   "mim_ps_request_errors_total{code=\"NOT_FOUND\","
                   "method=\"Pull\"}"),
            std::nullopt);
  EXPECT_EQ(
      MetricSample(after, ByMethod("mim_ps_request_duration_seconds_count", "Pull")),
      2);
  EXPECT_EQ(MetricSample(after,
                   "mim_ps_request_duration_seconds_bucket{method="
                   "\"Pull\",le=\"+Inf\"}"),
            2);
  // Rows are created by pushes only (a pull of an unseen key stores none).
  EXPECT_EQ(MetricSample(after, "mim_ps_table_rows{table=\"ids\"}"), pushed.size());
  EXPECT_EQ(MetricSample(after, "mim_ps_table_rows{table=\"content\"}"),
            upserted.size());
  EXPECT_GT(MetricSample(after, "mim_ps_table_bytes{table=\"ids\"}").value_or(0), 0);

  // The exposition text passes Prometheus' own checker (format and naming
  // conventions).
  if (access(kPromtool, X_OK) != 0) {
    GTEST_SKIP() << kPromtool << " is not installed (tools/setup.sh installs "
                 << "the prometheus package); the format check is skipped";
  }
  const std::string file = data_dir_ + "/metrics.txt";
  std::ofstream(file) << after;
  absl::StatusOr<CommandResult> check = RunCommand(
      {"/bin/sh", "-c", absl::StrCat(kPromtool, " check metrics < ", file)});
  ASSERT_TRUE(check.ok()) << check.status();
  EXPECT_EQ(check->exit_code, 0) << check->out << check->err;
  EXPECT_THAT(check->out + check->err, IsEmpty());
}

TEST_F(ShardMetricsTest, ReflectionListsServicesAndDescribesTheirFiles) {
  ReflectionStream stream(shard_->address());
  ReflectionStream::Request list;
  list.set_list_services("");
  ReflectionStream::Response listed;
  ASSERT_TRUE(stream.Ask(list, &listed));
  ASSERT_TRUE(listed.has_list_services_response())
      << listed.error_response().error_message();
  std::vector<std::string> services;
  for (const auto& s : listed.list_services_response().service()) {
    services.push_back(s.name());
  }
  EXPECT_THAT(services, Contains("mim.ps.ParameterServer"));
  EXPECT_THAT(services, Contains("grpc.health.v1.Health"));
  EXPECT_THAT(services, Contains("grpc.reflection.v1alpha.ServerReflection"));

  // Enough for grpcurl / grpc_cli to build requests: the file declaring the
  // service, with its methods.
  ReflectionStream::Request describe;
  describe.set_file_containing_symbol("mim.ps.ParameterServer");
  ReflectionStream::Response described;
  ASSERT_TRUE(stream.Ask(describe, &described));
  ASSERT_TRUE(described.has_file_descriptor_response())
      << described.error_response().error_message();
  ASSERT_GE(described.file_descriptor_response().file_descriptor_proto_size(),
            1);
  google::protobuf::FileDescriptorProto file;
  ASSERT_TRUE(file.ParseFromString(
      described.file_descriptor_response().file_descriptor_proto(0)));
  EXPECT_EQ(file.package(), "mim.ps");
  ASSERT_EQ(file.service_size(), 1);
  EXPECT_EQ(file.service(0).name(), "ParameterServer");
  std::vector<std::string> methods;
  for (const auto& m : file.service(0).method()) methods.push_back(m.name());
  EXPECT_THAT(methods, Contains("Pull"));

  const grpc::Status finished = stream.Finish();
  EXPECT_TRUE(finished.ok()) << finished.error_message();
}

TEST_F(ShardMetricsTest, HealthIsServing) {
  const std::vector<absl::Status> health = client_->Health();
  ASSERT_EQ(health.size(), 1u);
  EXPECT_TRUE(health[0].ok()) << health[0];
}

TEST_F(ShardMetricsTest, MetricsPortInUseFailsNamingTheAddress) {
  const std::string taken = absl::StrCat("127.0.0.1:", shard_->metrics_port());
  absl::StatusOr<CommandResult> second =
      RunCommand({Runfile("ps/server"), "--host=127.0.0.1", "--port=0",
                  "--data_dir=" + data_dir_ + "_second", "--threads=4",
                  absl::StrCat("--metrics_port=", shard_->metrics_port())});
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->exit_code, 2);
  EXPECT_THAT(second->err, HasSubstr("FAILED_PRECONDITION: cannot serve "
                                     "metrics on " +
                                     taken));
  EXPECT_THAT(second->out, IsEmpty());
}

}  // namespace
}  // namespace mim::ps
