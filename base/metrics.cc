#include "base/metrics.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "glog/logging.h"
#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"
#include "prometheus/text_serializer.h"

namespace mim::base {

// What the HTTP endpoint collects: the scrape callbacks first, so that the
// gauges they set are current, then the registry.
class Metrics::Collector : public prometheus::Collectable {
 public:
  explicit Collector(const Metrics* metrics) : metrics_(metrics) {}

  std::vector<prometheus::MetricFamily> Collect() const override {
    metrics_->RunScrapeCallbacks();
    return metrics_->registry_->Collect();
  }

 private:
  const Metrics* const metrics_;
};

namespace {

// prometheus-cpp throws std::invalid_argument for a malformed metric or
// label name and for a name registered twice with different types; both are
// mistakes in our code, not in input, so they end the process with the
// reason rather than escaping as exceptions.
template <typename F>
auto OrDie(const std::string& name, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const std::exception& e) {
    LOG(FATAL) << "metric " << name << ": " << e.what();
  }
  std::abort();  // not reached: LOG(FATAL) aborts
}

}  // namespace

// GET /metrics over HTTP/1.x, one connection at a time on one thread.
//
// Why not prometheus-cpp's Exposer: it runs civetweb, whose Debian build
// gives its threads 100 KiB stacks. Processes that link OpenBLAS also load
// libquadmath, which registers a printf type at start-up; from then on
// glibc formats every printf through its positional path, which needs more
// stack than that, and civetweb's first thread-name printf overflowed it
// (SIGSEGV at start-up of the serving tier). A scrape every few seconds
// needs no thread pool: one thread, a poll() loop, bounded reads and
// writes, and "Connection: close".
class Metrics::HttpEndpoint {
 public:
  static absl::StatusOr<std::unique_ptr<HttpEndpoint>> Start(
      const Metrics* metrics, const in_addr& address, int port,
      const std::string& bind) {
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      return absl::InternalError(
          absl::StrCat("metrics socket: ", std::strerror(errno)));
    }
    const int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sockaddr_in addr = {};
    addr.sin_family = AF_INET;
    addr.sin_addr = address;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    if (bind_socket(fd, addr) != 0 || listen(fd, 16) != 0) {
      const int err = errno;
      close(fd);
      return absl::FailedPreconditionError(absl::StrCat(
          "cannot serve metrics on ", bind,
          " (port in use, not permitted or address not local): ",
          std::strerror(err)));
    }
    socklen_t len = sizeof(addr);
    getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
    int wake[2];
    if (pipe2(wake, O_CLOEXEC | O_NONBLOCK) != 0) {
      close(fd);
      return absl::InternalError(
          absl::StrCat("metrics pipe: ", std::strerror(errno)));
    }
    std::unique_ptr<HttpEndpoint> h(
        new HttpEndpoint(metrics, fd, wake, ntohs(addr.sin_port)));
    h->thread_ = std::thread([p = h.get()] { p->Loop(); });
    return h;
  }

  ~HttpEndpoint() {
    const char c = 0;
    (void)!write(wake_[1], &c, 1);
    if (thread_.joinable()) thread_.join();
    close(listen_fd_);
    close(wake_[0]);
    close(wake_[1]);
  }

  int port() const { return port_; }

 private:
  static int bind_socket(int fd, const sockaddr_in& addr) {
    return ::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
  }

  HttpEndpoint(const Metrics* metrics, int fd, const int wake[2], int port)
      : metrics_(metrics), listen_fd_(fd), wake_{wake[0], wake[1]},
        port_(port) {}

  void Loop() {
    while (true) {
      pollfd p[2] = {{listen_fd_, POLLIN, 0}, {wake_[0], POLLIN, 0}};
      if (poll(p, 2, -1) < 0) {
        if (errno == EINTR) continue;
        LOG(ERROR) << "metrics endpoint: poll: " << std::strerror(errno);
        return;
      }
      if (p[1].revents != 0) return;  // stopping
      if ((p[0].revents & POLLIN) == 0) continue;
      const int conn = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (conn < 0) continue;
      Serve(conn);
      close(conn);
    }
  }

  // Waits up to the connection's deadline for `events` on `fd`.
  static bool Wait(int fd, short events, absl::Time deadline) {
    while (true) {
      const int64_t left = absl::ToInt64Milliseconds(deadline - absl::Now());
      if (left <= 0) return false;
      pollfd p = {fd, events, 0};
      const int r = poll(&p, 1, static_cast<int>(left));
      if (r > 0) return true;
      if (r == 0 || errno != EINTR) return false;
    }
  }

  void Serve(int conn) {
    // A scraper that stalls holds the endpoint for at most this long.
    const absl::Time deadline = absl::Now() + absl::Seconds(5);
    std::string request;
    while (request.find("\r\n\r\n") == std::string::npos &&
           request.find("\n\n") == std::string::npos) {
      if (request.size() > 8192 || !Wait(conn, POLLIN, deadline)) return;
      char buf[1024];
      const ssize_t n = read(conn, buf, sizeof(buf));
      if (n <= 0) return;
      request.append(buf, static_cast<size_t>(n));
    }
    std::string response;
    if (absl::StartsWith(request, "GET /metrics ") ||
        absl::StartsWith(request, "GET /metrics?")) {
      const std::string body = metrics_->Scrape();
      response = absl::StrCat(
          "HTTP/1.1 200 OK\r\n"
          "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
          "Content-Length: ", body.size(), "\r\nConnection: close\r\n\r\n",
          body);
    } else if (absl::StartsWith(request, "GET ")) {
      response = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n"
                 "Connection: close\r\n\r\n";
    } else {
      response = "HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n"
                 "Connection: close\r\n\r\n";
    }
    size_t done = 0;
    while (done < response.size()) {
      if (!Wait(conn, POLLOUT, deadline)) return;
      const ssize_t n = send(conn, response.data() + done,
                             response.size() - done, MSG_NOSIGNAL);
      if (n <= 0) return;
      done += static_cast<size_t>(n);
    }
  }

  const Metrics* const metrics_;
  const int listen_fd_;
  const int wake_[2];
  const int port_;
  std::thread thread_;
};

Metrics::Metrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      collector_(std::make_shared<Collector>(this)) {}

Metrics::~Metrics() {
  // Stops the HTTP endpoint (after a scrape in progress) while the
  // callbacks and the registry still exist.
  http_.reset();
}

absl::StatusOr<std::unique_ptr<Metrics>> Metrics::Create(
    const Options& options) {
  if (options.port < -1 || options.port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(
        "metrics port ", options.port,
        " is out of range; use -1 (off), 0 (any free port) or 1..65535"));
  }
  std::unique_ptr<Metrics> metrics(new Metrics());
  if (options.port < 0) return metrics;

  in_addr parsed;
  if (inet_pton(AF_INET, options.address.c_str(), &parsed) != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "metrics address '", options.address,
        "' is not a numeric IPv4 address; use e.g. 127.0.0.1 or 0.0.0.0"));
  }
  const std::string bind = absl::StrCat(options.address, ":", options.port);
  absl::StatusOr<std::unique_ptr<HttpEndpoint>> http =
      HttpEndpoint::Start(metrics.get(), parsed, options.port, bind);
  if (!http.ok()) return http.status();
  metrics->http_ = std::move(*http);
  metrics->address_ = options.address;
  metrics->port_ = metrics->http_->port();
  return metrics;
}

std::string Metrics::endpoint() const {
  if (port_ < 0) return "";
  return absl::StrCat(address_, ":", port_);
}

prometheus::Family<prometheus::Counter>& Metrics::CounterFamily(
    const std::string& name, const std::string& help) {
  return OrDie(name, [&]() -> prometheus::Family<prometheus::Counter>& {
    return prometheus::BuildCounter().Name(name).Help(help).Register(
        *registry_);
  });
}

prometheus::Family<prometheus::Gauge>& Metrics::GaugeFamily(
    const std::string& name, const std::string& help) {
  return OrDie(name, [&]() -> prometheus::Family<prometheus::Gauge>& {
    return prometheus::BuildGauge().Name(name).Help(help).Register(*registry_);
  });
}

prometheus::Family<prometheus::Histogram>& Metrics::HistogramFamily(
    const std::string& name, const std::string& help) {
  return OrDie(name, [&]() -> prometheus::Family<prometheus::Histogram>& {
    return prometheus::BuildHistogram().Name(name).Help(help).Register(
        *registry_);
  });
}

prometheus::Counter& Metrics::Counter(const std::string& name,
                                      const std::string& help,
                                      const prometheus::Labels& labels) {
  prometheus::Family<prometheus::Counter>& family = CounterFamily(name, help);
  return OrDie(name,
               [&]() -> prometheus::Counter& { return family.Add(labels); });
}

prometheus::Gauge& Metrics::Gauge(const std::string& name,
                                  const std::string& help,
                                  const prometheus::Labels& labels) {
  prometheus::Family<prometheus::Gauge>& family = GaugeFamily(name, help);
  return OrDie(name,
               [&]() -> prometheus::Gauge& { return family.Add(labels); });
}

prometheus::Histogram& Metrics::LatencyHistogram(
    const std::string& name, const std::string& help,
    const prometheus::Labels& labels) {
  prometheus::Family<prometheus::Histogram>& family =
      HistogramFamily(name, help);
  return OrDie(name, [&]() -> prometheus::Histogram& {
    return family.Add(labels, LatencyBuckets());
  });
}

const prometheus::Histogram::BucketBoundaries& Metrics::LatencyBuckets() {
  static const auto* const kBuckets =
      new prometheus::Histogram::BucketBoundaries{
          50e-6, 100e-6, 250e-6, 500e-6, 1e-3,   2.5e-3, 5e-3, 10e-3,
          25e-3, 50e-3,  100e-3, 250e-3, 500e-3, 1.0,    2.5,  5.0};
  return *kBuckets;
}

int64_t Metrics::AddScrapeCallback(std::function<void()> refresh) {
  absl::MutexLock lock(&mu_);
  const int64_t id = next_callback_id_++;
  callbacks_.emplace(id, std::move(refresh));
  return id;
}

void Metrics::RemoveScrapeCallback(int64_t id) {
  absl::MutexLock lock(&mu_);
  callbacks_.erase(id);
}

void Metrics::RunScrapeCallbacks() const {
  absl::MutexLock lock(&mu_);
  for (const auto& [id, refresh] : callbacks_) refresh();
}

std::string Metrics::Scrape() const {
  return prometheus::TextSerializer().Serialize(collector_->Collect());
}

}  // namespace mim::base
