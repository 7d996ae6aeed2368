#include "base/metrics.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace mim::base {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// GET http://127.0.0.1:port/path over a plain socket (HTTP/1.0: the server
// closes the connection after the response). Returns the whole response,
// status line and headers included; empty on a socket error.
std::string HttpGet(int port, const std::string& path) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return "";
  sockaddr_in addr = {};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string response;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    const std::string request =
        absl::StrCat("GET ", path, " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    if (write(fd, request.data(), request.size()) ==
        static_cast<ssize_t>(request.size())) {
      char buf[4096];
      ssize_t n;
      while ((n = read(fd, buf, sizeof(buf))) > 0) response.append(buf, n);
    }
  }
  close(fd);
  return response;
}

TEST(MetricsTest, DisabledEndpointStillRecords) {
  auto metrics = Metrics::Create({});
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  EXPECT_EQ((*metrics)->port(), -1);
  EXPECT_EQ((*metrics)->endpoint(), "");
  (*metrics)
      ->Counter("mim_test_events_total", "Events.", {{"kind", "a"}})
      .Increment(3);
  EXPECT_THAT((*metrics)->Scrape(),
              HasSubstr("mim_test_events_total{kind=\"a\"} 3\n"));
}

TEST(MetricsTest, RejectsBadOptions) {
  Metrics::Options options;
  options.port = 65536;
  EXPECT_EQ(Metrics::Create(options).status().code(),
            absl::StatusCode::kInvalidArgument);
  options.port = -2;
  EXPECT_EQ(Metrics::Create(options).status().code(),
            absl::StatusCode::kInvalidArgument);
  options.port = 0;
  options.address = "999.1.1.1";
  const absl::Status bad_address = Metrics::Create(options).status();
  EXPECT_EQ(bad_address.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad_address.message(), HasSubstr("'999.1.1.1'"));
}

TEST(MetricsTest, ServesMetricsOverHttp) {
  Metrics::Options options;
  options.port = 0;
  auto metrics = Metrics::Create(options);
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  const int port = (*metrics)->port();
  ASSERT_GT(port, 0);
  EXPECT_EQ((*metrics)->endpoint(), absl::StrCat("127.0.0.1:", port));
  (*metrics)->Counter("mim_test_events_total", "Events.").Increment(2);

  const std::string response = HttpGet(port, "/metrics");
  EXPECT_TRUE(absl::StartsWith(response, "HTTP/1.1 200") ||
              absl::StartsWith(response, "HTTP/1.0 200"))
      << response;
  EXPECT_THAT(response, HasSubstr("# TYPE mim_test_events_total counter\n"));
  EXPECT_THAT(response, HasSubstr("\nmim_test_events_total 2\n"));
}

TEST(MetricsTest, BindFailureNamesTheAddress) {
  Metrics::Options options;
  options.port = 0;
  auto first = Metrics::Create(options);
  ASSERT_TRUE(first.ok()) << first.status();
  options.port = (*first)->port();
  const absl::Status second = Metrics::Create(options).status();
  EXPECT_EQ(second.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(second.message(),
              HasSubstr(absl::StrCat("127.0.0.1:", options.port)));
}

TEST(MetricsTest, SameNameAndLabelsGiveTheSameMetric) {
  auto metrics = Metrics::Create({});
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  Metrics& m = **metrics;
  EXPECT_EQ(&m.Counter("mim_test_total", "T.", {{"k", "1"}}),
            &m.Counter("mim_test_total", "T.", {{"k", "1"}}));
  EXPECT_NE(&m.Counter("mim_test_total", "T.", {{"k", "1"}}),
            &m.Counter("mim_test_total", "T.", {{"k", "2"}}));
  EXPECT_EQ(&m.LatencyHistogram("mim_test_seconds", "S."),
            &m.LatencyHistogram("mim_test_seconds", "S."));
}

TEST(MetricsTest, LatencyHistogramUsesSharedBuckets) {
  auto metrics = Metrics::Create({});
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  const auto& buckets = Metrics::LatencyBuckets();
  ASSERT_EQ(buckets.size(), 16u);
  EXPECT_DOUBLE_EQ(buckets.front(), 50e-6);
  EXPECT_DOUBLE_EQ(buckets.back(), 5.0);
  prometheus::Histogram& h = (*metrics)->LatencyHistogram(
      "mim_test_duration_seconds", "Durations.", {{"method", "Pull"}});
  h.Observe(0.0003);  // in (250us, 500us]
  h.Observe(7.0);     // above the last bound: +Inf only
  const std::string text = (*metrics)->Scrape();
  EXPECT_THAT(
      text, HasSubstr("mim_test_duration_seconds_count{method=\"Pull\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("mim_test_duration_seconds_bucket{method="
                              "\"Pull\",le=\"0.00025\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("mim_test_duration_seconds_bucket{method="
                              "\"Pull\",le=\"0.0005\"} 1\n"));
  EXPECT_THAT(
      text,
      HasSubstr(
          "mim_test_duration_seconds_bucket{method=\"Pull\",le=\"5\"} 1\n"));
  EXPECT_THAT(
      text,
      HasSubstr(
          "mim_test_duration_seconds_bucket{method=\"Pull\",le=\"+Inf\"} 2\n"));
}

TEST(MetricsTest, ScrapeCallbacksRunBeforeEachScrapeUntilRemoved) {
  auto metrics = Metrics::Create({});
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  prometheus::Gauge& rows = (*metrics)->Gauge("mim_test_rows", "Rows.");
  int calls = 0;
  const int64_t id = (*metrics)->AddScrapeCallback([&] {
    ++calls;
    rows.Set(10 * calls);
  });
  EXPECT_THAT((*metrics)->Scrape(), HasSubstr("\nmim_test_rows 10\n"));
  EXPECT_THAT((*metrics)->Scrape(), HasSubstr("\nmim_test_rows 20\n"));
  (*metrics)->RemoveScrapeCallback(id);
  EXPECT_THAT((*metrics)->Scrape(), HasSubstr("\nmim_test_rows 20\n"));
  EXPECT_EQ(calls, 2);
  (*metrics)->RemoveScrapeCallback(id);  // unknown now: ignored
}

}  // namespace
}  // namespace mim::base
