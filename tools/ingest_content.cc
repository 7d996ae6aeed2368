// ingest_content: streams a content-vector file (docs/DATA_FORMAT.md,
// "#mim-vectors v1") into a content (MM) table on the parameter-server shards
// through Upsert, with a version. This is the representation center's write
// path: once a row is acknowledged, a brand-new item is served with content.
//
//   bazel run //tools:ingest_content -- --ps=H:P,H:P --vectors=FILE
//       --table=item_content [--content_version=N]
//
// The content key of an item is its raw item id (the models look content up
// by item id). The table is created (if missing) with the file's dimension.
// TLS and token flags: base/client_security.h (Upsert and CreateTable need
// an admin token on shards with --auth_tokens).
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <ctime>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "base/client_security.h"
#include "gflags/gflags.h"
#include "proto/ps.pb.h"
#include "ps/client.h"
#include "worker/data/content_vectors.h"

DEFINE_string(ps, "", "comma-separated shard addresses, shard order");
DEFINE_string(vectors, "", "content-vector file to ingest");
DEFINE_string(table, "item_content", "content table name");
DEFINE_uint64(content_version, 0, "version of these rows (0: current Unix time)");
DEFINE_int32(batch, 4096, "rows per Upsert call");

namespace {

// Rows per Upsert call at most (the client splits calls further by the
// shards' limits; this bounds the read buffer).
constexpr int kMaxBatch = 1 << 20;

int Fail(const std::string& what, const absl::Status& status) {
  std::fprintf(
      stderr, "ingest_content: %s: %s\n", what.c_str(),
      status.ToString(absl::StatusToStringMode::kWithNoExtraData).c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  gflags::SetUsageMessage("ingest content vectors into a PS content table");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  if (FLAGS_ps.empty() || FLAGS_vectors.empty()) {
    std::fprintf(stderr, "ingest_content: --ps and --vectors are required\n");
    return 2;
  }
  if (FLAGS_batch <= 0 || FLAGS_batch > kMaxBatch) {
    std::fprintf(stderr, "ingest_content: --batch must be in 1..%d\n",
                 kMaxBatch);
    return 2;
  }
  const uint64_t version = FLAGS_content_version != 0
                               ? FLAGS_content_version
                               : static_cast<uint64_t>(std::time(nullptr));

  // The whole file is checked before the table is created or a row is
  // written: a bad row (a non-finite value, a wrong count, a repeated item)
  // halfway through must not leave the table half-ingested at the new
  // version. One pass to check (every row parsed, ids remembered), one to
  // write.
  int dim = 0;
  // The file's identity when checked; the write pass refuses another file
  // (replaced by a rename, or changed in place) rather than write rows
  // that were never checked.
  struct stat checked_stat {};
  if (::stat(FLAGS_vectors.c_str(), &checked_stat) != 0) {
    return Fail("open " + FLAGS_vectors,
                absl::NotFoundError(absl::StrCat("cannot stat ", FLAGS_vectors)));
  }
  {
    auto check = mim::data::ContentVectorReader::Open(FLAGS_vectors);
    if (!check.ok()) return Fail("open " + FLAGS_vectors, check.status());
    dim = (*check)->dim();
    absl::flat_hash_set<int64_t> seen;
    std::vector<mim::data::ItemVector> rows;
    uint64_t row = 0;
    while (true) {
      auto n = (*check)->ReadBatch(FLAGS_batch, &rows);
      if (!n.ok()) return Fail("read (nothing written)", n.status());
      if (*n == 0) break;
      for (const auto& item : rows) {
        ++row;
        if (!seen.insert(item.item_id).second) {
          return Fail("read (nothing written)",
                      absl::InvalidArgumentError(absl::StrCat(
                          FLAGS_vectors, ": item ", item.item_id,
                          " appears again in data row ", row,
                          "; expected one row per item")));
        }
      }
    }
  }
  auto reader = mim::data::ContentVectorReader::Open(FLAGS_vectors, dim);
  if (!reader.ok()) return Fail("open " + FLAGS_vectors, reader.status());
  struct stat write_stat {};
  if (::stat(FLAGS_vectors.c_str(), &write_stat) != 0 ||
      write_stat.st_dev != checked_stat.st_dev ||
      write_stat.st_ino != checked_stat.st_ino ||
      write_stat.st_size != checked_stat.st_size ||
      write_stat.st_mtim.tv_sec != checked_stat.st_mtim.tv_sec ||
      write_stat.st_mtim.tv_nsec != checked_stat.st_mtim.tv_nsec) {
    return Fail("read (nothing written)",
                absl::AbortedError(absl::StrCat(
                    FLAGS_vectors, " changed while it was being checked; run "
                    "again once it is complete")));
  }

  std::vector<std::string> addresses =
      absl::StrSplit(FLAGS_ps, ',', absl::SkipEmpty());
  absl::StatusOr<mim::base::ClientSecurity> security =
      mim::base::ClientSecurityFromFlags();
  if (!security.ok()) {
    std::fprintf(stderr, "ingest_content: %s\n",
                 security.status().ToString().c_str());
    return 2;
  }
  mim::ps::PsClient::Options client_options;
  client_options.credentials = security->credentials;
  client_options.auth_token = security->auth_token;
  auto client = mim::ps::PsClient::Create(addresses, client_options);
  if (!client.ok()) return Fail("connect", client.status());

  mim::ps::TableConfig config;
  config.set_name(FLAGS_table);
  config.set_kind(mim::ps::CONTENT);
  config.set_dim(dim);
  absl::Status created = (*client)->CreateTable(config, /*if_not_exists=*/true);
  if (!created.ok()) return Fail("create table " + FLAGS_table, created);

  std::vector<mim::data::ItemVector> batch;
  std::vector<uint64_t> keys;
  std::vector<float> values;
  uint64_t written = 0, stale = 0, rows = 0;
  const absl::Time start = absl::Now();
  // Progress is redrawn in place on a terminal only; logs get the summary.
  const bool tty = isatty(STDERR_FILENO) == 1;
  while (true) {
    auto n = (*reader)->ReadBatch(FLAGS_batch, &batch);
    if (!n.ok()) return Fail("read", n.status());
    if (*n == 0) break;
    keys.clear();
    values.clear();
    for (const auto& item : batch) {
      keys.push_back(static_cast<uint64_t>(item.item_id));
      values.insert(values.end(), item.values.begin(), item.values.end());
    }
    auto result = (*client)->Upsert(FLAGS_table, keys, values, version);
    if (!result.ok()) {
      return Fail("upsert after " + std::to_string(rows) + " rows",
                  result.status());
    }
    written += result->rows_written;
    stale += result->rows_stale;
    rows += keys.size();
    if (tty) {
      std::fprintf(stderr, "\ringest_content: %llu rows",
                   static_cast<unsigned long long>(rows));
    }
  }
  const double secs = absl::ToDoubleSeconds(absl::Now() - start);
  std::fprintf(stderr,
               "%singest_content: %llu rows (%llu written, %llu stale) of "
               "dim %d into '%s' version %llu in %.2fs (%.0f rows/s)\n",
               tty ? "\r" : "", static_cast<unsigned long long>(rows),
               static_cast<unsigned long long>(written),
               static_cast<unsigned long long>(stale), dim,
               FLAGS_table.c_str(), static_cast<unsigned long long>(version),
               secs, secs > 0 ? rows / secs : 0.0);
  return 0;
}
