// csft: contrastive fine-tuning of item content embeddings (C-SFT, the MIM
// paradigm's second stage) on interest pairs mined from training samples.
//
//   bazel run //worker/csft:csft -- --train=train.tsv --vectors=text.vec
//       [--genres_from=test.tsv] [--eval_samples=test.tsv]
//       --out_vectors=csft.vec --encoder_out=csft.encoder
//       [--ps=H:P,H:P --table=item_content_csft --content_version=N]
//       [--metrics_out=csft.json]
//
// Writes every catalogue item's tuned vector (mim-vectors, modality=csft),
// the selected encoder (encoder.h for the format), and, with --ps, upserts
// the vectors into a content table on the shards, which the trainer reads
// with --content_table. TLS and token flags: base/client_security.h
// (CreateTable and Upsert need the admin role).
//
// Data parallelism: N processes with the same inputs and flags, --ps, and
// --num_workers=N --worker_index=0..N-1 train one encoder through the
// shards (csft_workers.h): each takes every N-th batch, and the other
// workers' positives are negatives too (--worker_negatives). Worker 0
// evaluates, selects and writes every output; the others write none.
// docs/ARCHITECTURE.md (C-SFT) explains the choices.
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "base/atomic_file.h"
#include "base/client_security.h"
#include "gflags/gflags.h"
#include "glog/logging.h"
#include "proto/ps.pb.h"
#include "ps/client.h"
#include "worker/csft/csft_trainer.h"
#include "worker/csft/csft_workers.h"
#include "worker/csft/pairs.h"
#include "worker/data/content_vectors.h"

namespace {
const mim::csft::CsftOptions kDefaults;
const mim::csft::PairOptions kPairDefaults;
}  // namespace

DEFINE_string(train, "", "training samples (mim-samples v1): pairs come from here only");
DEFINE_string(vectors, "",
              "comma-separated mim-vectors files: the first holds the plain "
              "vectors (and defines the catalogue), others are extra "
              "modalities fused with it");
DEFINE_string(genres_from, "",
              "extra sample files read for item genres only (e.g. the test "
              "file, so items new in it get their genres)");
DEFINE_string(eval_samples, "",
              "samples whose pairs are evaluated at the end (recall, warm vs "
              "new positive items, plain vs C-SFT); never used for choices");
DEFINE_int32(pair_window, kPairDefaults.window,
             "a positive on item p pairs with the user's last N earlier positives");
DEFINE_double(holdout_items, 0.1,
              "fraction of items held out of training; pairs whose positive "
              "is one of them select the epoch");
DEFINE_double(valid_warm_fraction, 0.05, "fraction of warm pairs held out (reported)");
DEFINE_int32(epochs, kDefaults.epochs, "maximum epochs");
DEFINE_int32(patience, kDefaults.patience, "epochs without a better held-out new-item recall@50");
DEFINE_int32(batch_size, kDefaults.batch_size, "pairs per step");
DEFINE_double(lr, kDefaults.learning_rate, "Adam learning rate");
DEFINE_double(temperature, kDefaults.temperature, "InfoNCE temperature");
DEFINE_double(alpha, kDefaults.alpha, "weight of L_q2txt (0: off)");
DEFINE_double(beta, kDefaults.beta, "weight of L_q2cat (0: off)");
DEFINE_double(residual_penalty, kDefaults.residual_penalty,
              "lambda of lambda * mean |r|^2 keeping h_MM near the plain vector");
DEFINE_bool(in_batch_negatives, kDefaults.in_batch_negatives, "other pairs' items as negatives");
DEFINE_bool(hard_negatives, kDefaults.hard_negatives, "one same-category negative per pair");
DEFINE_int32(queue_batches, kDefaults.queue_batches, "queue of the last k batches' items (0: off)");
DEFINE_int32(genre_dim, kDefaults.genre_dim, "fusion genre embedding dim");
DEFINE_int32(hidden, kDefaults.hidden, "MLP hidden width");
DEFINE_string(fusion, "tensor", "tensor ([a;1] outer [b;1]) or concat ([a;b], ablation)");
DEFINE_double(residual_gate, kDefaults.residual_gate,
              "K > 0: an item in n training pairs gets its residual scaled by "
              "n / (n + K), so items training never saw (and new items "
              "upserted later) keep their plain vector; 0: off");
DEFINE_double(modality_dropout, kDefaults.modality_dropout,
              "probability that a training row's modality vectors are hidden "
              "from the fusion (its residual then comes from the genres); "
              "in [0, 1), 0: off");
DEFINE_bool(select_last_epoch, kDefaults.select_last_epoch,
            "keep the last epoch's encoder instead of the best on held-out "
            "items (tests)");
DEFINE_int32(max_train_pairs, 0,
             "if > 0, an evenly spaced subsample of the training pairs "
             "(quick runs: the demo, the bench)");
DEFINE_int32(max_eval_pairs, kDefaults.max_eval_pairs, "cap per validation set");
DEFINE_uint64(seed, kDefaults.seed, "seed");
DEFINE_string(out_vectors, "", "output mim-vectors file of every item's h_MM");
DEFINE_string(encoder_out, "", "output encoder file");
DEFINE_string(metrics_out, "",
              "output metrics JSON (a worker other than 0: its steps, pairs/s "
              "and peer rows only)");
DEFINE_string(ps, "", "shard addresses; with it, the vectors are upserted");
DEFINE_string(table, "item_content_csft", "content table to upsert into");
DEFINE_uint64(content_version, 0, "version of the upserted rows (0: Unix time)");
DEFINE_int32(num_workers, 1,
             "data-parallel csft processes (> 1 needs --ps; each takes every "
             "N-th batch)");
DEFINE_int32(worker_index, 0, "this process's index, 0 .. num_workers - 1");
DEFINE_string(worker_prefix, "csft_workers",
              "prefix of the tables the workers share (csft_workers.h)");
DEFINE_bool(worker_negatives, true,
            "with several workers, the other workers' latest positives are "
            "q2item negatives too");
DEFINE_int32(worker_staleness, 32,
             "other workers' positives are taken from steps at most this far "
             "from this worker's (steps are numbered per epoch alike on "
             "every worker; they drift apart within an epoch)");
DEFINE_int32(worker_timeout_s, 600,
             "how long a worker waits for the others at an epoch's end");

namespace {

int Fail(const std::string& what, const absl::Status& s) {
  std::fprintf(stderr, "csft: %s: %s\n", what.c_str(),
               s.ToString(absl::StatusToStringMode::kWithNoExtraData).c_str());
  return 1;
}

std::string RecallJson(const mim::csft::Recall& r) {
  return absl::StrFormat(
      "{\"recall_at_10\": %.6f, \"recall_at_50\": %.6f, \"pairs\": %d}",
      r.at10, r.at50, r.pairs);
}

}  // namespace

int main(int argc, char** argv) {
  gflags::SetUsageMessage("C-SFT: contrastive fine-tuning of item content vectors");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  google::InitGoogleLogging(argv[0]);
  FLAGS_logtostderr = true;
  const bool chief = FLAGS_worker_index == 0;
  if (FLAGS_train.empty() || FLAGS_vectors.empty() ||
      (chief && FLAGS_out_vectors.empty())) {
    std::fprintf(stderr,
                 "csft: --train, --vectors and (on worker 0) --out_vectors "
                 "are required\n");
    return 2;
  }
  if (FLAGS_num_workers < 1 || FLAGS_worker_index < 0 ||
      FLAGS_worker_index >= FLAGS_num_workers) {
    std::fprintf(stderr,
                 "csft: --worker_index=%d of --num_workers=%d; expected 0 <= "
                 "worker_index < num_workers\n",
                 FLAGS_worker_index, FLAGS_num_workers);
    return 2;
  }
  if (FLAGS_num_workers > 1 && FLAGS_ps.empty()) {
    std::fprintf(stderr,
                 "csft: --num_workers=%d needs --ps: the workers share the "
                 "encoder through the shards\n",
                 FLAGS_num_workers);
    return 2;
  }
  if (FLAGS_worker_staleness < 0 || FLAGS_worker_timeout_s < 1) {
    std::fprintf(stderr,
                 "csft: --worker_staleness=%d, --worker_timeout_s=%d; "
                 "expected >= 0 and >= 1\n",
                 FLAGS_worker_staleness, FLAGS_worker_timeout_s);
    return 2;
  }
  if (FLAGS_fusion != "tensor" && FLAGS_fusion != "concat") {
    std::fprintf(stderr, "csft: --fusion=%s; expected tensor or concat\n",
                 FLAGS_fusion.c_str());
    return 2;
  }
  auto train = mim::csft::ReadSamples(FLAGS_train);
  if (!train.ok()) return Fail("read " + FLAGS_train, train.status());
  absl::flat_hash_map<int64_t, std::vector<int32_t>> genres;
  mim::csft::CollectGenres(*train, &genres);
  std::vector<mim::data::Sample> eval;
  if (!FLAGS_eval_samples.empty()) {
    auto e = mim::csft::ReadSamples(FLAGS_eval_samples);
    if (!e.ok()) return Fail("read " + FLAGS_eval_samples, e.status());
    eval = std::move(*e);
  }
  for (const std::string& f : std::vector<std::string>(
           absl::StrSplit(FLAGS_genres_from, ',', absl::SkipEmpty()))) {
    auto s = mim::csft::ReadSamples(f);
    if (!s.ok()) return Fail("read " + f, s.status());
    mim::csft::CollectGenres(*s, &genres);
  }
  auto catalog = mim::csft::BuildCatalog(
      std::vector<std::string>(
          absl::StrSplit(FLAGS_vectors, ',', absl::SkipEmpty())),
      genres);
  if (!catalog.ok()) return Fail("vectors", catalog.status());

  mim::csft::PairOptions pair_options;
  pair_options.window = FLAGS_pair_window;
  auto pairs = mim::csft::MinePairs(*train, pair_options);
  if (!pairs.ok()) return Fail("pairs", pairs.status());
  auto split = mim::csft::SplitPairs(*pairs, FLAGS_holdout_items,
                                     FLAGS_valid_warm_fraction, FLAGS_seed);
  if (!split.ok()) return Fail("split", split.status());
  if (FLAGS_max_train_pairs > 0 &&
      split->train.size() > size_t(FLAGS_max_train_pairs)) {
    std::vector<mim::csft::InterestPair> kept;
    for (int i = 0; i < FLAGS_max_train_pairs; ++i) {
      kept.push_back(split->train[size_t(double(i) * split->train.size() /
                                         FLAGS_max_train_pairs)]);
    }
    split->train = std::move(kept);
  }
  mim::csft::CountInteractions(split->train, &*catalog);
  LOG(INFO) << "csft: " << catalog->ids.size() << " items (dim "
            << catalog->dim << ", input " << catalog->input_dim << ", "
            << catalog->num_genres << " genre ids), " << pairs->size()
            << " pairs: " << split->train.size() << " train, "
            << split->valid_new.size() << " valid (new positive, "
            << split->held_out_items.size() << " items held out), "
            << split->valid_warm.size() << " valid (warm)";

  mim::csft::CsftOptions o;
  o.epochs = FLAGS_epochs;
  o.patience = FLAGS_patience;
  o.batch_size = FLAGS_batch_size;
  o.learning_rate = FLAGS_lr;
  o.temperature = FLAGS_temperature;
  o.alpha = FLAGS_alpha;
  o.beta = FLAGS_beta;
  o.residual_penalty = FLAGS_residual_penalty;
  o.in_batch_negatives = FLAGS_in_batch_negatives;
  o.hard_negatives = FLAGS_hard_negatives;
  o.queue_batches = FLAGS_queue_batches;
  o.genre_dim = FLAGS_genre_dim;
  o.hidden = FLAGS_hidden;
  o.tensor_fusion = FLAGS_fusion == "tensor";
  o.residual_gate = FLAGS_residual_gate;
  o.modality_dropout = FLAGS_modality_dropout;
  o.select_last_epoch = FLAGS_select_last_epoch;
  o.max_eval_pairs = FLAGS_max_eval_pairs;
  o.seed = FLAGS_seed;
  o.worker_negatives = FLAGS_worker_negatives;

  // One client for the worker group and the upsert.
  std::unique_ptr<mim::ps::PsClient> client;
  if (!FLAGS_ps.empty()) {
    std::vector<std::string> addresses =
        absl::StrSplit(FLAGS_ps, ',', absl::SkipEmpty());
    absl::StatusOr<mim::base::ClientSecurity> security =
        mim::base::ClientSecurityFromFlags();
    if (!security.ok()) return Fail("security flags", security.status());
    mim::ps::PsClient::Options client_options;
    client_options.credentials = security->credentials;
    client_options.auth_token = security->auth_token;
    auto c = mim::ps::PsClient::Create(addresses, client_options);
    if (!c.ok()) return Fail("connect", c.status());
    client = std::move(*c);
  }
  std::unique_ptr<mim::csft::PsWorkerGroup> group;
  if (FLAGS_num_workers > 1) {
    auto initial = mim::csft::InitialEncoderParams(*catalog, o);
    if (!initial.ok()) return Fail("encoder", initial.status());
    mim::csft::PsWorkerGroupOptions go;
    go.num_workers = FLAGS_num_workers;
    go.worker_index = FLAGS_worker_index;
    go.prefix = FLAGS_worker_prefix;
    go.dim = catalog->dim;
    go.max_positives = o.batch_size;
    go.staleness = FLAGS_worker_staleness;
    go.learning_rate = static_cast<float>(o.learning_rate);
    go.timeout = absl::Seconds(FLAGS_worker_timeout_s);
    go.fingerprint =
        mim::csft::WorkerInputsFingerprint(*catalog, split->train, o);
    auto g = mim::csft::PsWorkerGroup::Create(client.get(), go,
                                              std::move(*initial), o.seed);
    if (!g.ok()) return Fail("worker group", g.status());
    group = std::move(*g);
    LOG(INFO) << "csft: worker " << FLAGS_worker_index << " of "
              << FLAGS_num_workers << ", generation " << group->generation()
              << " (tables " << group->exchange_table() << ", "
              << group->dense_table() << ")";
  }
  auto result = mim::csft::TrainCsft(*catalog, *split, o, group.get());
  if (!result.ok()) return Fail("train", result.status());
  if (group != nullptr) {
    LOG(INFO) << "csft: worker " << FLAGS_worker_index << " took "
              << result->steps << " steps, " << result->peer_rows
              << " rows of other workers' batches as negatives ("
              << group->rows_too_old() << " older and "
              << group->rows_too_new() << " newer than --worker_staleness="
              << FLAGS_worker_staleness << " steps left out)";
  }
  if (!result->chief) {
    // Worker 0 writes the outputs; another worker only its own figures.
    if (!FLAGS_metrics_out.empty()) {
      std::vector<std::string> epochs;
      for (size_t e = 1; e < result->log.size(); ++e) {
        epochs.push_back(absl::StrFormat(
            "{\"epoch\": %d, \"loss\": %.6f, \"pairs_per_second\": %.1f}",
            result->log[e].epoch, result->log[e].loss,
            result->log[e].pairs_per_second));
      }
      const std::string json = absl::StrFormat(
          "{\"worker_index\": %d, \"num_workers\": %d, \"steps\": %d, "
          "\"pairs_per_second\": %.1f, \"peer_rows\": %d, \"epochs\": "
          "[%s]}\n",
          FLAGS_worker_index, FLAGS_num_workers, result->steps,
          result->pairs_per_second, result->peer_rows,
          absl::StrJoin(epochs, ", "));
      absl::Status s = mim::base::WriteFileAtomically(FLAGS_metrics_out, json);
      if (!s.ok()) return Fail("write " + FLAGS_metrics_out, s);
    }
    return 0;
  }

  const int n = static_cast<int>(catalog->ids.size());
  const int d = catalog->dim;
  std::vector<float> tuned(int64_t(n) * d), plain(int64_t(n) * d);
  {
    std::vector<mim::csft::ItemInput> inputs;
    for (int i = 0; i < n; ++i) {
      inputs.push_back(catalog->Input(i));
      std::copy_n(catalog->features.begin() + int64_t(i) * catalog->input_dim,
                  d, plain.begin() + int64_t(i) * d);
    }
    absl::Status s = result->encoder->Encode(inputs, tuned.data());
    if (!s.ok()) return Fail("encode", s);
  }
  auto writer =
      mim::data::ContentVectorWriter::Open(FLAGS_out_vectors, d, "csft");
  if (!writer.ok()) return Fail("open " + FLAGS_out_vectors, writer.status());
  // The table gets what the file holds (the writer's normalised floats),
  // so that the shards and the file agree bit for bit.
  std::vector<float> written;
  for (int i = 0; i < n; ++i) {
    float* row = tuned.data() + int64_t(i) * d;
    absl::Status s = (*writer)->Write(
        catalog->ids[i], absl::MakeConstSpan(row, d), &written);
    if (!s.ok()) return Fail("write", s);
    std::copy(written.begin(), written.end(), row);
  }
  absl::Status closed = (*writer)->Close();
  if (!closed.ok()) return Fail("close " + FLAGS_out_vectors, closed);
  if (!FLAGS_encoder_out.empty()) {
    absl::Status s = result->encoder->Save(FLAGS_encoder_out);
    if (!s.ok()) return Fail("save encoder", s);
  }

  // Final retrieval on --eval_samples: warm vs new positive items.
  std::string test_json = "null";
  if (!eval.empty()) {
    auto eval_pairs = mim::csft::MinePairs(eval, pair_options);
    if (!eval_pairs.ok()) return Fail("eval pairs", eval_pairs.status());
    const auto seen = mim::csft::ItemsSeen(*train);
    std::vector<mim::csft::InterestPair> warm, fresh;
    for (const auto& p : *eval_pairs) {
      (seen.contains(p.item) ? warm : fresh).push_back(p);
    }
    const auto pw = mim::csft::EvaluateRecall(*catalog, plain, warm);
    const auto cw = mim::csft::EvaluateRecall(*catalog, tuned, warm);
    const auto pn = mim::csft::EvaluateRecall(*catalog, plain, fresh);
    const auto cn = mim::csft::EvaluateRecall(*catalog, tuned, fresh);
    LOG(INFO) << "csft eval: warm recall@50 plain " << pw.at50 << " csft "
              << cw.at50 << " (" << pw.pairs << " pairs); new recall@50 plain "
              << pn.at50 << " csft " << cn.at50 << " (" << pn.pairs
              << " pairs)";
    test_json = absl::StrCat("{\"warm\": {\"plain\": ", RecallJson(pw),
                             ", \"csft\": ", RecallJson(cw),
                             "}, \"new\": {\"plain\": ", RecallJson(pn),
                             ", \"csft\": ", RecallJson(cn), "}}");
  }

  if (client != nullptr) {
    const uint64_t version = FLAGS_content_version != 0
                                 ? FLAGS_content_version
                                 : static_cast<uint64_t>(std::time(nullptr));
    mim::ps::TableConfig config;
    config.set_name(FLAGS_table);
    config.set_kind(mim::ps::CONTENT);
    config.set_dim(d);
    absl::Status created = client->CreateTable(config, true);
    if (!created.ok()) return Fail("create table " + FLAGS_table, created);
    std::vector<uint64_t> keys(catalog->ids.begin(), catalog->ids.end());
    for (int start = 0; start < n; start += 4096) {
      const int end = std::min(n, start + 4096);
      auto up = client->Upsert(
          FLAGS_table,
          absl::MakeConstSpan(keys.data() + start, end - start),
          absl::MakeConstSpan(tuned.data() + int64_t(start) * d,
                              int64_t(end - start) * d),
          version);
      if (!up.ok()) return Fail("upsert into " + FLAGS_table, up.status());
    }
    LOG(INFO) << "csft: upserted " << n << " rows into '" << FLAGS_table
              << "' version " << version;
  }

  if (!FLAGS_metrics_out.empty()) {
    std::vector<std::string> epochs;
    for (const auto& e : result->log) {
      epochs.push_back(absl::StrFormat(
          "{\"epoch\": %d, \"loss\": %.6f, \"pairs_per_second\": %.1f, "
          "\"valid_new\": %s, \"valid_warm\": %s}",
          e.epoch, e.loss, e.pairs_per_second, RecallJson(e.valid_new),
          RecallJson(e.valid_warm)));
    }
    const std::string json = absl::StrFormat(
        "{\"best_epoch\": %d, \"train_pairs\": %d, \"valid_new_pairs\": %d, "
        "\"valid_warm_pairs\": %d, \"held_out_items\": %d, "
        "\"pairs_per_second\": %.1f, \"num_workers\": %d, "
        "\"peer_rows\": %d, \"epochs\": [%s], \"test\": %s}\n",
        result->best_epoch, result->train_pairs, split->valid_new.size(),
        split->valid_warm.size(), split->held_out_items.size(),
        result->pairs_per_second, FLAGS_num_workers, result->peer_rows,
        absl::StrJoin(epochs, ", "), test_json);
    absl::Status s = mim::base::WriteFileAtomically(FLAGS_metrics_out, json);
    if (!s.ok()) return Fail("write " + FLAGS_metrics_out, s);
  }
  if (group != nullptr) {
    // The outputs hold the parameters; once every worker has taken them
    // the run's table has served its purpose. Failing to drop it leaves a
    // table behind, not a bad result.
    auto dropped = group->DropRunTable();
    if (dropped.ok()) {
      LOG(INFO) << "csft: dropped the run's parameter table "
                << group->dense_table() << " (" << *dropped << " rows)";
    } else {
      LOG(WARNING) << "csft: could not drop the run's parameter table "
                   << group->dense_table() << " (" << dropped.status()
                   << "); drop it with ps_admin drop-table "
                   << group->dense_table() << " --yes";
    }
  }
  return 0;
}
