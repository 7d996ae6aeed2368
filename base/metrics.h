// Metrics: Prometheus metrics of one process, and optionally the HTTP
// endpoint that serves them (GET /metrics, text exposition format).
//
// A thin layer over prometheus-cpp: it owns the prometheus::Registry, turns
// the exposer's exceptions into absl::Status at construction (the only place
// prometheus-cpp throws for a bad bind), and gives one set of conventions to
// every binary: families registered once by name, latency histograms in
// seconds with the same buckets (LatencyBuckets()), gauges that are cheaper
// to compute when scraped than to track on every write (AddScrapeCallback).
//
// Hot paths should resolve their metric objects once (the returned
// references stay valid for the life of this object) and then only call
// Increment / Observe / Set on them, which are lock-free for counters and
// gauges and take a per-histogram mutex for histograms.
//
// Thread-safety: safe for concurrent access.
#ifndef MIM_BASE_METRICS_H_
#define MIM_BASE_METRICS_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/labels.h"
#include "prometheus/registry.h"


namespace mim::base {

class Metrics {
 public:
  struct Options {
    // IPv4 address the HTTP endpoint binds to (numeric, e.g. "127.0.0.1" or
    // "0.0.0.0"). Loopback by default: metrics are for a local scraper or a
    // sidecar unless an operator opens them up.
    std::string address = "127.0.0.1";
    // -1: no HTTP endpoint (metrics are still recorded, see Scrape()).
    // 0: a free port picked by the OS (read it from port()). 1..65535: that
    // port.
    int port = -1;
  };

  // Creates the registry and, when options.port >= 0, starts serving
  // GET /metrics on options.address:options.port before returning.
  // INVALID_ARGUMENT for a port outside -1..65535 or an address that is not
  // a numeric IPv4 address; FAILED_PRECONDITION naming the address when the
  // endpoint cannot bind (port in use, not permitted, address not local).
  static absl::StatusOr<std::unique_ptr<Metrics>> Create(
      const Options& options);

  // Stops the HTTP endpoint (waiting for scrapes in progress) before the
  // registry goes away.
  ~Metrics();
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  // The bound port, or -1 when there is no HTTP endpoint.
  int port() const { return port_; }
  // "ADDRESS:PORT" of the HTTP endpoint; empty when there is none.
  std::string endpoint() const;

  // The family named `name`, created on first use; later calls with the
  // same name return the same family (the help text of the first call is
  // kept). Names follow Prometheus conventions: `_total` for counters, a
  // unit suffix such as `_seconds` or `_bytes`. A name reused for a
  // different metric type is a programmer error (CHECK-fails).
  prometheus::Family<prometheus::Counter>& CounterFamily(
      const std::string& name, const std::string& help);
  prometheus::Family<prometheus::Gauge>& GaugeFamily(const std::string& name,
                                                     const std::string& help);
  prometheus::Family<prometheus::Histogram>& HistogramFamily(
      const std::string& name, const std::string& help);

  // One metric of the family `name` with these label values (created at 0
  // on first use). The reference stays valid for the life of this object.
  prometheus::Counter& Counter(const std::string& name, const std::string& help,
                               const prometheus::Labels& labels = {});
  prometheus::Gauge& Gauge(const std::string& name, const std::string& help,
                           const prometheus::Labels& labels = {});
  // A histogram of durations in seconds with LatencyBuckets(); `name`
  // should end in `_seconds`.
  prometheus::Histogram& LatencyHistogram(
      const std::string& name, const std::string& help,
      const prometheus::Labels& labels = {});

  // Upper bounds from 50 us to 5 s, roughly 1-2.5-5 per decade: fine enough
  // for an in-memory lookup, wide enough for a slow disk or a stalled peer.
  static const prometheus::Histogram::BucketBoundaries& LatencyBuckets();

  // Runs `refresh` at the start of every scrape (HTTP or Scrape()), before
  // the registry is read, e.g. to set gauges from state that is cheap to
  // read but not worth updating on every write. Callbacks run one at a
  // time, under the lock that AddScrapeCallback and RemoveScrapeCallback
  // take, so a callback must not call those two (everything else here is
  // fine). Returns an id for RemoveScrapeCallback.
  int64_t AddScrapeCallback(std::function<void()> refresh);
  // After this returns, callback `id` is not running and never runs again
  // (so whatever it reads may be destroyed). Unknown ids are ignored.
  void RemoveScrapeCallback(int64_t id);

  // The text exposition format, exactly what GET /metrics returns.
  std::string Scrape() const;

 private:
  class Collector;
  Metrics();
  void RunScrapeCallbacks() const;

  std::shared_ptr<prometheus::Registry> registry_;
  // What the exposer serves: the scrape callbacks, then registry_.
  std::shared_ptr<Collector> collector_;
  // The HTTP endpoint (a small server of our own: see the .cc for why not
  // prometheus-cpp's civetweb exposer). Stopped first in the destructor,
  // so no scrape outlives the members below.
  class HttpEndpoint;
  std::unique_ptr<HttpEndpoint> http_;
  std::string address_;
  int port_ = -1;

  mutable absl::Mutex mu_;
  int64_t next_callback_id_ ABSL_GUARDED_BY(mu_) = 1;
  std::map<int64_t, std::function<void()>> callbacks_ ABSL_GUARDED_BY(mu_);
};

}  // namespace mim::base

#endif  // MIM_BASE_METRICS_H_
