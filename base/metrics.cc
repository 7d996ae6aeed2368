#include "base/metrics.h"

#include <arpa/inet.h>

#include <cstdlib>
#include <exception>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "glog/logging.h"
#include "prometheus/collectable.h"
#include "prometheus/exposer.h"
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

Metrics::Metrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      collector_(std::make_shared<Collector>(this)) {}

Metrics::~Metrics() {
  // Stops the HTTP server threads (waiting for a scrape in progress) while
  // the callbacks and the registry still exist.
  exposer_.reset();
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

  // civetweb parses addresses leniently ("999.1.1.1" binds 231.1.1.1), so
  // only a well-formed numeric IPv4 address is passed on.
  in_addr parsed;
  if (inet_pton(AF_INET, options.address.c_str(), &parsed) != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "metrics address '", options.address,
        "' is not a numeric IPv4 address; use e.g. 127.0.0.1 or 0.0.0.0"));
  }
  const std::string bind = absl::StrCat(options.address, ":", options.port);
  try {
    metrics->exposer_ = std::make_unique<prometheus::Exposer>(bind);
  } catch (const std::exception& e) {
    // civetweb's CivetException: "null context when constructing
    // CivetServer. Possible problem binding to port."
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot serve metrics on ", bind,
        " (port in use, not permitted or address not local): ", e.what()));
  }
  const std::vector<int> ports = metrics->exposer_->GetListeningPorts();
  if (ports.size() != 1 || ports[0] <= 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot serve metrics on ", bind, ": the HTTP server reports ",
        ports.size(), " listening ports"));
  }
  metrics->exposer_->RegisterCollectable(metrics->collector_);
  metrics->address_ = options.address;
  metrics->port_ = ports[0];
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
