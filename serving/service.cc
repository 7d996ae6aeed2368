#include "serving/service.h"

#include <algorithm>
#include <limits>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "glog/logging.h"
#include "ps/status_convert.h"

namespace mim::serving {
namespace {

constexpr const char* kMethodNames[] = {"Predict", "UpsertItem", "GetStatus"};
// UpsertItem writes to the content table; the others only read.
constexpr base::Role kMethodRoles[] = {base::Role::kRead, base::Role::kAdmin,
                                       base::Role::kRead};

// The caller's deadline, capped: a call without one (or with a very
// distant one) ends within kMaxRequestTime, so a dead shard cannot keep a
// queued request, or the server's shutdown, waiting for ever.
constexpr absl::Duration kMaxRequestTime = absl::Seconds(30);

absl::Time DeadlineOf(const grpc::CallbackServerContext& context) {
  const auto d = context.deadline();
  const absl::Time cap = absl::Now() + kMaxRequestTime;
  if (d == std::chrono::system_clock::time_point::max()) return cap;
  return std::min(absl::FromChrono(d), cap);
}

}  // namespace

absl::StatusOr<PredictInput> PredictInputFromProto(const PredictRequest& r) {
  PredictInput in;
  in.user_id = r.user_id();
  for (const auto& [name, value] : r.user_features()) {
    int32_t* field = nullptr;
    if (name == "age_bucket") {
      field = &in.age_bucket;
    } else if (name == "gender") {
      field = &in.gender;
    } else if (name == "occupation") {
      field = &in.occupation;
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "user_features: unknown feature '", ps::QuoteInput(name),
          "'; known: age_bucket, gender, occupation"));
    }
    if (value < 0 || value > std::numeric_limits<int32_t>::max()) {
      return absl::InvalidArgumentError(
          absl::StrCat("user_features[\"", name, "\"]: ", value,
                       " is out of range [0, 2^31)"));
    }
    *field = static_cast<int32_t>(value);
  }
  in.behaviors.assign(r.behavior_item_ids().begin(),
                      r.behavior_item_ids().end());
  in.candidates.assign(r.candidate_item_ids().begin(),
                       r.candidate_item_ids().end());
  in.candidate_genres.reserve(r.candidate_features_size());
  for (const ItemFeatures& f : r.candidate_features()) {
    in.candidate_genres.emplace_back(f.genres().begin(), f.genres().end());
  }
  return in;
}

PredictionServiceImpl::PredictionServiceImpl(Predictor* predictor,
                                             ModelManager* models,
                                             RowCache* cache,
                                             base::Executor* executor,
                                             base::Metrics* metrics,
                                             const base::Authorizer* authorizer)
    : predictor_(predictor),
      models_(models),
      cache_(cache),
      executor_(executor),
      metrics_(metrics),
      authorizer_(authorizer) {
  if (metrics_ == nullptr) return;
  for (int m = 0; m < kNumMethods; ++m) {
    seconds_[m] = &metrics_->LatencyHistogram(
        "mim_serving_request_seconds",
        "Time from receiving a call to its answer, by method",
        {{"method", kMethodNames[m]}});
    // Created up front so that every method shows at 0 before its first call.
    metrics_->Counter("mim_serving_requests_total",
                      "Calls answered, by method and gRPC status code",
                      {{"method", kMethodNames[m]}, {"code", "OK"}});
  }
  scrape_callback_ = metrics_->AddScrapeCallback([this] {
    const RowCache::Stats st = cache_->stats();
    const char* help_rows = "Row cache lookups by result";
    metrics_->Gauge("mim_serving_cache_lookups", help_rows, {{"result", "hit"}})
        .Set(static_cast<double>(st.hits));
    metrics_->Gauge("mim_serving_cache_lookups", help_rows,
                    {{"result", "stale"}})
        .Set(static_cast<double>(st.stale_hits));
    metrics_->Gauge("mim_serving_cache_lookups", help_rows,
                    {{"result", "miss"}})
        .Set(static_cast<double>(st.misses));
    const double lookups =
        static_cast<double>(st.hits + st.stale_hits + st.misses);
    metrics_->Gauge("mim_serving_cache_hit_ratio",
                    "Fresh cache hits over all lookups since start")
        .Set(lookups > 0 ? st.hits / lookups : 0.0);
    metrics_->Gauge("mim_serving_cache_bytes", "Bytes held by the row cache")
        .Set(static_cast<double>(st.bytes));
    metrics_->Gauge("mim_serving_cache_entries", "Rows held by the row cache")
        .Set(static_cast<double>(st.entries));
    metrics_->Gauge("mim_serving_queue_length",
                    "Requests waiting for a serving thread")
        .Set(static_cast<double>(executor_->queued()));
    metrics_->Gauge("mim_serving_model_reloads",
                    "Model versions installed since start (hot reloads)")
        .Set(static_cast<double>(models_->reloads()));
    metrics_->Gauge("mim_serving_model_reload_failures",
                    "Attempts since start to load a new model version that "
                    "failed (the current version kept serving)")
        .Set(static_cast<double>(models_->failed_reloads()));
  });
}

PredictionServiceImpl::~PredictionServiceImpl() {
  if (metrics_ != nullptr && scrape_callback_ >= 0) {
    metrics_->RemoveScrapeCallback(scrape_callback_);
  }
}

absl::Status PredictionServiceImpl::Authorize(
    Method method, const grpc::CallbackServerContext& context) const {
  if (authorizer_ == nullptr) return absl::OkStatus();
  return authorizer_->Check(context, kMethodRoles[method],
                            kMethodNames[method]);
}

void PredictionServiceImpl::Finish(Method method, absl::Time start,
                                   grpc::ServerUnaryReactor* reactor,
                                   const absl::Status& status) {
  if (metrics_ != nullptr) {
    seconds_[method]->Observe(absl::ToDoubleSeconds(absl::Now() - start));
    metrics_
        ->Counter("mim_serving_requests_total",
                  "Calls answered, by method and gRPC status code",
                  {{"method", kMethodNames[method]},
                   {"code", absl::StatusCodeToString(status.code())}})
        .Increment();
  }
  switch (status.code()) {
    case absl::StatusCode::kInternal:
    case absl::StatusCode::kDataLoss:
    case absl::StatusCode::kUnknown:
      // May name files of this server; the client gets the code only.
      LOG(ERROR) << kMethodNames[method] << " failed: " << status;
      reactor->Finish(grpc::Status(
          static_cast<grpc::StatusCode>(status.code()),
          absl::StrCat(kMethodNames[method], " failed: ",
                       absl::StatusCodeToString(status.code()),
                       " error in the serving tier; its log has the details")));
      return;
    default:
      reactor->Finish(ps::ToGrpcStatus(status));
  }
}

grpc::ServerUnaryReactor* PredictionServiceImpl::Dispatch(
    Method method, grpc::CallbackServerContext* context,
    std::function<absl::Status()> work) {
  const absl::Time start = absl::Now();
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (absl::Status s = Authorize(method, *context); !s.ok()) {
    Finish(method, start, reactor, s);
    return reactor;
  }
  absl::Status queued = executor_->Submit(
      DeadlineOf(*context),
      [this, method, start, reactor, context, work = std::move(work)](
          const absl::Status& admitted) {
        if (admitted.ok() && context->IsCancelled()) {
          // The caller gave up while the call waited: do not pull or score.
          Finish(method, start, reactor,
                 absl::CancelledError("cancelled by the caller"));
          return;
        }
        Finish(method, start, reactor, admitted.ok() ? work() : admitted);
      });
  // A full queue ran nothing: marked so that a client may send it again.
  if (!queued.ok()) {
    Finish(method, start, reactor,
           absl::IsResourceExhausted(queued) ? ps::MarkRetryLater(queued)
                                             : queued);
  }
  return reactor;
}

grpc::ServerUnaryReactor* PredictionServiceImpl::Predict(
    grpc::CallbackServerContext* context, const PredictRequest* request,
    PredictResponse* response) {
  ++requests_;
  const absl::Time deadline = DeadlineOf(*context);
  return Dispatch(kPredict, context, [this, request, response, deadline] {
    absl::StatusOr<PredictInput> input = PredictInputFromProto(*request);
    if (!input.ok()) return input.status();
    absl::StatusOr<PredictOutput> out = predictor_->Predict(*input, deadline);
    if (!out.ok()) return out.status();
    response->mutable_scores()->Assign(out->scores.begin(), out->scores.end());
    response->set_model_version(out->model_version);
    response->set_stale(out->stale);
    response->set_cache_hits(out->cache_hits);
    response->set_rows_pulled(out->rows_pulled);
    response->set_rows_unavailable(out->rows_unavailable);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* PredictionServiceImpl::UpsertItem(
    grpc::CallbackServerContext* context, const UpsertItemRequest* request,
    UpsertItemResponse* response) {
  const absl::Time deadline = DeadlineOf(*context);
  return Dispatch(kUpsertItem, context, [this, request, response, deadline] {
    absl::StatusOr<UpsertItemOutput> out = predictor_->UpsertItem(
        request->item_id(), request->text(),
        absl::MakeConstSpan(request->vector().data(), request->vector_size()),
        absl::MakeConstSpan(request->genres().data(), request->genres_size()),
        deadline);
    if (!out.ok()) return out.status();
    response->set_content_version(out->content_version);
    response->set_encoder(out->encoder);
    response->set_norm(out->norm);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* PredictionServiceImpl::GetStatus(
    grpc::CallbackServerContext* context, const GetStatusRequest* request,
    GetStatusResponse* response) {
  (void)request;
  // Cheap and non-blocking: answered on the gRPC thread.
  const absl::Time start = absl::Now();
  if (absl::Status s = Authorize(kGetStatus, *context); !s.ok()) {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    Finish(kGetStatus, start, reactor, s);
    return reactor;
  }
  const std::shared_ptr<const ServableModel> servable = models_->Current();
  const model::ModelManifest& m = servable->manifest();
  response->set_model_version(m.model_version);
  response->set_model_name(m.model_name);
  response->set_id_table(m.id_table.name);
  if (m.content_table.has_value()) {
    response->set_content_table(m.content_table->name);
  }
  response->set_content_version(predictor_->content_version());
  response->set_requests(requests_.load());
  const RowCache::Stats st = cache_->stats();
  response->set_cache_hits(st.hits);
  response->set_cache_misses(st.misses + st.stale_hits);
  response->set_cache_bytes(st.bytes);
  response->set_model_reloads(models_->reloads());
  response->set_model_reload_failures(models_->failed_reloads());
  response->set_last_reload_error(models_->last_reload_error());
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  Finish(kGetStatus, start, reactor, absl::OkStatus());
  return reactor;
}

}  // namespace mim::serving
