// Embedding store micro-benchmarks (timings live here, never in tests):
//  1. Pull of --batch random keys x --dim from a --rows-row content table
//     (EmbeddingTable directly): thread CPU time and wall time per pull.
//  2. bytes_per_row of that table and of a 64-d SGD table.
//  3. EmbeddingStore Push throughput (keys/s) into RocksDB, with and without
//     sync_writes (one WAL append per request; with sync, one fsync).
//
//   bazel run -c opt //bench:embedding_bench -- --rows=1000000
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <random>
#include <vector>

#include "embedding/embedding_store.h"
#include "embedding/embedding_table.h"
#include "gflags/gflags.h"

DEFINE_uint64(rows, 1000000, "rows in the pull table");
DEFINE_uint32(dim, 64, "embedding dimension");
DEFINE_uint32(batch, 1024, "keys per request");
DEFINE_uint32(pulls, 2000, "timed pull requests");
DEFINE_uint32(pushes, 300, "timed push requests per durability mode");
DEFINE_string(dir, "/tmp/mim_embedding_bench", "scratch directory for RocksDB");

namespace mim::embedding {
namespace {

double ThreadCpuSeconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

double WallSeconds() {
  return std::chrono::duration<double>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

int Run() {
  const uint32_t dim = FLAGS_dim, batch = FLAGS_batch;
  std::mt19937_64 rng(1);
  TableConfig content;
  content.name = "content";
  content.kind = TableKind::kContent;
  content.dim = dim;
  auto table = EmbeddingTable::Create(content);
  if (!table.ok()) {
    std::fprintf(stderr, "%s\n", table.status().ToString().c_str());
    return 1;
  }
  std::vector<uint64_t> all(FLAGS_rows);
  for (auto& k : all) k = rng();
  std::vector<float> values(size_t{batch} * dim, 0.5f);
  for (size_t off = 0; off < all.size(); off += batch) {
    const size_t n = std::min<size_t>(batch, all.size() - off);
    auto r = (*table)->Upsert(absl::MakeConstSpan(all.data() + off, n),
                              absl::MakeConstSpan(values.data(), n * dim), 1,
                              0, nullptr);
    if (!r.ok()) return 1;
  }
  std::printf("content table: rows=%llu bytes_per_row=%.1f (raw %u)\n",
              static_cast<unsigned long long>((*table)->Stats().rows),
              (*table)->Stats().bytes_per_row, 4 * dim);

  std::vector<uint64_t> keys(batch);
  std::vector<float> out(size_t{batch} * dim);
  std::vector<uint32_t> missing;
  double cpu = 0, wall = 0;
  for (uint32_t p = 0; p < FLAGS_pulls; ++p) {
    for (auto& k : keys) k = all[rng() % all.size()];
    missing.clear();
    const double c0 = ThreadCpuSeconds(), w0 = WallSeconds();
    if (!(*table)->Pull(keys, out.data(), &missing).ok()) return 1;
    cpu += ThreadCpuSeconds() - c0;
    wall += WallSeconds() - w0;
  }
  std::printf("pull %u keys x %u-d from %llu rows: %.1f us CPU, %.1f us wall "
              "per request (%.1f M keys/s)\n",
              batch, dim, static_cast<unsigned long long>(all.size()),
              1e6 * cpu / FLAGS_pulls, 1e6 * wall / FLAGS_pulls,
              1e-6 * batch * FLAGS_pulls / wall);
  table->reset();

  for (bool sync : {false, true}) {
    std::filesystem::remove_all(FLAGS_dir);
    EmbeddingStore::Options options;
    options.data_dir = FLAGS_dir;
    options.sync_writes = sync;
    auto store = EmbeddingStore::Open(options);
    if (!store.ok()) {
      std::fprintf(stderr, "%s\n", store.status().ToString().c_str());
      return 1;
    }
    TableConfig ids;
    ids.name = "ids";
    ids.dim = dim;
    ids.optimizer.kind = OptimizerKind::kAdagrad;
    if (!(*store)->CreateTable(ids, false).ok()) return 1;
    std::vector<float> grads(size_t{batch} * dim, 0.01f);
    const double w0 = WallSeconds();
    for (uint32_t p = 0; p < FLAGS_pushes; ++p) {
      for (auto& k : keys) k = rng() % (FLAGS_rows * 4);
      auto r = (*store)->Push("ids", keys, grads);
      if (!r.ok()) {
        std::fprintf(stderr, "%s\n", r.status().ToString().c_str());
        return 1;
      }
    }
    const double secs = WallSeconds() - w0;
    std::printf("push %u keys x %u-d adagrad, sync_writes=%d: %.0f keys/s "
                "(%.2f ms per request)\n",
                batch, dim, sync, batch * FLAGS_pushes / secs,
                1e3 * secs / FLAGS_pushes);
  }
  std::filesystem::remove_all(FLAGS_dir);
  return 0;
}

}  // namespace
}  // namespace mim::embedding

int main(int argc, char** argv) {
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  return mim::embedding::Run();
}
