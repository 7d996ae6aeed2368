#include "worker/trainer_pipeline.h"

#include <atomic>
#include <deque>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "base/status_macros.h"
#include "glog/logging.h"
#include "worker/data/feature_key.h"
#include "worker/data/sample_io.h"

namespace mim::worker {
namespace {

// Samples read from the file per ReadBatch call.
constexpr size_t kReadChunk = 4096;

}  // namespace

// Reads, filters, strides and prepares batches; optionally on its own
// thread. The producer state (reader, builder, buffers) is touched by one
// thread only: the prefetch thread when there is one, else the consumer.
class BatchPipeline::Impl {
 public:
  Impl(ps::PsClient* client, const Options& options,
       std::unique_ptr<data::SampleReader> reader)
      : client_(client), options_(options), reader_(std::move(reader)) {}

  ~Impl() {
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;
    }
    if (thread_.joinable()) thread_.join();
  }

  void StartThread() {
    thread_ = std::thread([this] { ProducerLoop(); });
  }

  absl::StatusOr<bool> Next(PreparedBatch* out) {
    if (!options_.prefetch) return NextSynchronous(out);
    std::deque<PendingPush> leftover;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](Impl* impl) ABSL_EXCLUSIVE_LOCKS_REQUIRED(impl->mu_) {
            return !impl->queue_.empty() || impl->producer_done_;
          },
          this));
      if (!queue_.empty()) {
        *out = std::move(queue_.front());
        queue_.pop_front();
        MarkTaken();
        return true;
      }
      if (!producer_status_.ok()) return producer_status_;
      // The producer has stopped for good: the pushes it did not take are
      // this thread's to do, so that the pass ends with every push applied.
      leftover.swap(pushes_);
    }
    absl::Status pushed = DoPushes(&leftover);
    if (!pushed.ok()) {
      absl::MutexLock lock(&mu_);
      producer_status_ = pushed;
      return pushed;
    }
    return false;
  }

  int64_t pushes_in_doubt() const {
    return pushes_in_doubt_.load(std::memory_order_relaxed);
  }

  // Queued in both modes: a push is due only once the consumer has taken
  // the batch after the one it belongs to (see TakeDuePushes).
  void PushAfter(std::vector<uint64_t> keys, std::vector<float> gradients) {
    absl::MutexLock lock(&mu_);
    pushes_.push_back(PendingPush{std::move(keys), std::move(gradients)});
    ++pushes_submitted_;
  }

 private:
  struct PendingPush {
    std::vector<uint64_t> keys;
    std::vector<float> gradients;
  };

  // The consumer has just taken a batch: every push handed over before now
  // becomes due before the next pull.
  void MarkTaken() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    pushes_due_ = pushes_submitted_;
  }

  // Removes the due pushes from the front of pushes_, in submission order.
  std::deque<PendingPush> TakeDuePushes() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    std::deque<PendingPush> due;
    while (pushes_taken_ < pushes_due_) {
      due.push_back(std::move(pushes_.front()));
      pushes_.pop_front();
      ++pushes_taken_;
    }
    return due;
  }

  // Without prefetch: the same sequence of shard calls as the prefetch
  // thread makes (due pushes, pull; at the end every push), on this thread.
  absl::StatusOr<bool> NextSynchronous(PreparedBatch* out) {
    if (!final_status_.ok()) return final_status_;
    std::deque<PendingPush> pushes;
    {
      absl::MutexLock lock(&mu_);
      pushes = TakeDuePushes();
    }
    absl::Status pushed = DoPushes(&pushes);
    if (!pushed.ok()) {
      final_status_ = pushed;
      return pushed;
    }
    absl::StatusOr<bool> got = Produce(out, /*pull=*/true);
    if (!got.ok()) {
      final_status_ = got.status();
      return got;
    }
    if (*got) {
      absl::MutexLock lock(&mu_);
      MarkTaken();
      return true;
    }
    {
      absl::MutexLock lock(&mu_);
      pushes.swap(pushes_);
    }
    pushed = DoPushes(&pushes);
    if (!pushed.ok()) {
      final_status_ = pushed;
      return pushed;
    }
    return false;
  }

  // Reads and builds batch k+1 while the consumer works on batch k, but
  // pulls its rows only once the consumer has taken batch k from the queue,
  // after the pushes due then (those of batches up to k-1): exactly the
  // shard calls NextSynchronous makes, in the same order.
  void ProducerLoop() {
    while (true) {
      PreparedBatch batch;
      absl::StatusOr<bool> got = Produce(&batch, /*pull=*/false);
      if (got.ok() && *got) {
        absl::MutexLock lock(&mu_);
        mu_.Await(absl::Condition(
            +[](Impl* impl) ABSL_EXCLUSIVE_LOCKS_REQUIRED(impl->mu_) {
              return impl->queue_.empty() || impl->stopping_;
            },
            this));
        if (stopping_) {
          producer_done_ = true;
          return;
        }
      }
      if (got.ok() && *got) {
        // The pushes due before this pull (and only those: a push handed
        // over while this thread was reading must wait for the next pull,
        // or the rows would depend on timing).
        std::deque<PendingPush> pushes;
        {
          absl::MutexLock lock(&mu_);
          pushes = TakeDuePushes();
        }
        absl::Status pushed = DoPushes(&pushes);
        if (!pushed.ok()) got = pushed;
      }
      if (got.ok() && *got) {
        absl::Status pulled = PullRows(&batch);
        if (!pulled.ok()) got = pulled;
      }
      if (got.ok() && *got) {
        absl::Status staged = Stage(&batch);
        if (!staged.ok()) got = staged;
      }
      absl::MutexLock lock(&mu_);
      if (!got.ok() || !*got) {
        producer_status_ = got.ok() ? absl::OkStatus() : got.status();
        producer_done_ = true;
        return;
      }
      queue_.push_back(std::move(batch));
    }
  }

  // Next accepted sample into *out; false at the end of the pass.
  absl::StatusOr<bool> NextSample(data::Sample* out) {
    while (true) {
      if (options_.filter.max_samples > 0 &&
          accepted_ >= options_.filter.max_samples) {
        return false;
      }
      if (read_pos_ == read_buffer_.size()) {
        if (end_of_file_) return false;
        absl::StatusOr<size_t> n = reader_->ReadBatch(kReadChunk, &read_buffer_);
        if (!n.ok()) return n.status();
        read_pos_ = 0;
        if (*n == 0) {
          end_of_file_ = true;
          return false;
        }
      }
      data::Sample& s = read_buffer_[read_pos_++];
      if (!options_.filter.Accepts(s)) continue;
      ++accepted_;
      *out = std::move(s);
      return true;
    }
  }

  // Fills *out with this worker's next batch; with `pull`, its rows too.
  absl::StatusOr<bool> Produce(PreparedBatch* out, bool pull) {
    while (true) {
      out->samples.clear();
      out->samples.reserve(options_.batch_size);
      data::Sample sample;
      while (static_cast<int>(out->samples.size()) < options_.batch_size) {
        absl::StatusOr<bool> got = NextSample(&sample);
        if (!got.ok()) return got.status();
        if (!*got) break;
        out->samples.push_back(std::move(sample));
      }
      if (out->samples.empty()) return false;
      out->index = next_index_++;
      if (out->index % options_.num_workers != options_.worker_index) continue;
      absl::Status built =
          builder_.Build(out->samples, options_.id_dim, options_.content_dim,
                         &out->batch, &out->id_keys, &out->content_keys);
      if (!built.ok()) return built;
      if (options_.target_id_dropout > 0) {
        DropTargetIds(options_.target_id_dropout, options_.dropout_seed,
                      out->index, &out->batch);
        DropUnreferencedIdRows(&out->batch, &out->id_keys);
      }
      if (pull) {
        absl::Status pulled = PullRows(out);
        if (!pulled.ok()) return pulled;
        MIM_RETURN_IF_ERROR(Stage(out));
      }
      return true;
    }
  }

  absl::Status DoPush(const PendingPush& p) {
    absl::Status s =
        client_->Push(options_.id_table, p.keys, p.gradients).status();
    if (ps::IsPushInDoubt(s)) {
      LOG(WARNING) << "push of " << p.keys.size() << " ID-row gradients in "
                   << "doubt; resent before the next pull: " << s;
      pushes_in_doubt_.fetch_add(1, std::memory_order_relaxed);
      return absl::OkStatus();
    }
    return s;
  }

  // Pushes in submission order; stops at the first error. Then resends
  // every push in doubt (this pipeline's or the dense sync's, one client):
  // each is settled, applied exactly once, before the next pull, or the
  // pass fails.
  absl::Status DoPushes(std::deque<PendingPush>* pushes) {
    for (const PendingPush& p : *pushes) {
      if (absl::Status s = DoPush(p); !s.ok()) return s;
    }
    pushes->clear();
    if (client_->pushes_held_in_doubt() > 0) {
      MIM_RETURN_IF_ERROR(client_->ResolvePushesInDoubt());
    }
    return absl::OkStatus();
  }

  // The batch's inputs into the model's backend (Options::stager).
  absl::Status Stage(PreparedBatch* out) {
    if (options_.stager == nullptr) return absl::OkStatus();
    return options_.stager->Stage(&out->batch);
  }

  absl::Status PullRows(PreparedBatch* out) {
    absl::Status status;
    if (options_.create_id_rows) {
      status = client_->PullInto(options_.id_table, out->id_keys,
                                 absl::MakeSpan(out->batch.id_rows), nullptr);
      if (!status.ok()) return status;
    } else {
      absl::StatusOr<ps::PsClient::GetRowsResult> rows =
          client_->GetRows(options_.id_table, out->id_keys);
      if (!rows.ok()) return rows.status();
      if (rows->values.size() != out->batch.id_rows.size()) {
        return absl::FailedPreconditionError(absl::StrCat(
            "table ", options_.id_table, " returned ", rows->values.size(),
            " floats for ", out->id_keys.size(), " keys; expected dim ",
            options_.id_dim));
      }
      out->batch.id_rows = std::move(rows->values);
    }
    if (!options_.content_table.empty() && !out->content_keys.empty()) {
      // Missing content rows come back as zeros, which the model reads as
      // "no content" (cosine similarity 0).
      status = client_->PullInto(options_.content_table, out->content_keys,
                                 absl::MakeSpan(out->batch.content_rows),
                                 nullptr);
      if (!status.ok()) return status;
    }
    return absl::OkStatus();
  }

  ps::PsClient* const client_;
  const Options options_;

  // Producer state.
  std::unique_ptr<data::SampleReader> reader_;
  model::BatchBuilder builder_;
  std::vector<data::Sample> read_buffer_;
  size_t read_pos_ = 0;
  bool end_of_file_ = false;
  int64_t accepted_ = 0;
  int64_t next_index_ = 0;
  absl::Status final_status_;  // Without prefetch: the error that ended it.
  std::atomic<int64_t> pushes_in_doubt_{0};

  std::thread thread_;
  absl::Mutex mu_;
  std::deque<PreparedBatch> queue_ ABSL_GUARDED_BY(mu_);
  // Gradients handed over by PushAfter, not yet pushed, and the counts
  // that say which are due: the first pushes_due_ ever handed over.
  std::deque<PendingPush> pushes_ ABSL_GUARDED_BY(mu_);
  int64_t pushes_submitted_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t pushes_due_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t pushes_taken_ ABSL_GUARDED_BY(mu_) = 0;
  bool producer_done_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status producer_status_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
};

void DropTargetIds(double probability, uint64_t seed, int64_t batch_index,
                   model::Batch* batch) {
  if (!(probability > 0)) return;
  // splitmix64 of (seed, batch, row): 53 uniform bits per row.
  const uint64_t batch_seed = data::MixFeatureValue(
      seed ^ data::MixFeatureValue(static_cast<uint64_t>(batch_index)));
  for (size_t b = 0; b < batch->target_idx.size(); ++b) {
    const uint64_t h = data::MixFeatureValue(batch_seed + b);
    const double u = static_cast<double>(h >> 11) * 0x1.0p-53;
    if (u < probability) batch->target_idx[b] = -1;
  }
}

void DropUnreferencedIdRows(model::Batch* batch,
                            std::vector<uint64_t>* id_keys) {
  const size_t rows = id_keys->size();
  // The fields that hold ID-row indices (model::Batch); -1 is "none".
  std::vector<int32_t>* const fields[] = {
      &batch->user_idx,   &batch->age_idx,    &batch->gender_idx,
      &batch->occ_idx,    &batch->target_idx, &batch->genre_rows,
      &batch->behavior_idx};
  std::vector<int32_t> renumber(rows, -1);
  for (const std::vector<int32_t>* f : fields) {
    for (int32_t r : *f) {
      if (r >= 0 && static_cast<size_t>(r) < rows) renumber[r] = 0;
    }
  }
  int32_t kept = 0;
  for (size_t r = 0; r < rows; ++r) {
    if (renumber[r] == 0) {
      (*id_keys)[kept] = (*id_keys)[r];
      renumber[r] = kept++;
    }
  }
  if (static_cast<size_t>(kept) == rows) return;
  for (std::vector<int32_t>* f : fields) {
    for (int32_t& r : *f) {
      if (r >= 0 && static_cast<size_t>(r) < rows) r = renumber[r];
    }
  }
  id_keys->resize(kept);
  const size_t dim =
      rows == 0 ? 0 : batch->id_rows.size() / static_cast<size_t>(rows);
  batch->num_id_rows = kept;
  batch->id_rows.assign(static_cast<size_t>(kept) * dim, 0.0f);
}

absl::StatusOr<std::unique_ptr<BatchPipeline>> BatchPipeline::Start(
    ps::PsClient* client, const Options& options) {
  if (options.batch_size < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "batch_size = ", options.batch_size, "; expected >= 1"));
  }
  if (options.num_workers < 1 || options.worker_index < 0 ||
      options.worker_index >= options.num_workers) {
    return absl::InvalidArgumentError(absl::StrCat(
        "worker_index = ", options.worker_index, ", num_workers = ",
        options.num_workers, "; expected 0 <= worker_index < num_workers"));
  }
  absl::StatusOr<std::unique_ptr<data::SampleReader>> reader =
      data::SampleReader::Open(options.path);
  if (!reader.ok()) return reader.status();
  auto impl = std::make_unique<Impl>(client, options, std::move(*reader));
  if (options.prefetch) impl->StartThread();
  return std::unique_ptr<BatchPipeline>(new BatchPipeline(std::move(impl)));
}

BatchPipeline::BatchPipeline(std::unique_ptr<Impl> impl)
    : impl_(std::move(impl)) {}

BatchPipeline::~BatchPipeline() = default;

absl::StatusOr<bool> BatchPipeline::Next(PreparedBatch* out) {
  return impl_->Next(out);
}

int64_t BatchPipeline::pushes_in_doubt() const {
  return impl_->pushes_in_doubt();
}

void BatchPipeline::PushAfter(std::vector<uint64_t> keys,
                              std::vector<float> gradients) {
  impl_->PushAfter(std::move(keys), std::move(gradients));
}

}  // namespace mim::worker
