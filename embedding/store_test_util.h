// Helpers of the EmbeddingStore tests: fresh data dirs, the two tables they
// use, value ramps and a bit-exact dump of a table's rows.
#ifndef MIM_EMBEDDING_STORE_TEST_UTIL_H_
#define MIM_EMBEDDING_STORE_TEST_UTIL_H_

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "embedding/embedding_store.h"
#include "embedding/table_config.h"
#include "gtest/gtest.h"

namespace mim::embedding::testing {

// TEST_TMPDIR/<tag><n>, removed if it exists; n counts calls.
inline std::string FreshDir(const std::string& tag) {
  static int counter = 0;
  const std::string dir = std::string(std::getenv("TEST_TMPDIR")) + "/" + tag +
                          std::to_string(counter++);
  std::filesystem::remove_all(dir);
  return dir;
}

// "user_id": an ID table of dim 8, Adam 0.01, initializer seed 5.
inline TableConfig AdamTable() {
  TableConfig c;
  c.name = "user_id";
  c.kind = TableKind::kId;
  c.dim = 8;
  c.optimizer.kind = OptimizerKind::kAdam;
  c.optimizer.learning_rate = 0.01f;
  c.initializer.seed = 5;
  return c;
}

// "item_mm": a content table of dim 4.
inline TableConfig ContentTable() {
  TableConfig c;
  c.name = "item_mm";
  c.kind = TableKind::kContent;
  c.dim = 4;
  return c;
}

// start, start + 0.01, ... (n values).
inline std::vector<float> Ramp(size_t n, float start) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = start + 0.01f * static_cast<float>(i);
  return v;
}

// Every row of a table as raw bytes of meta, values and state.
using Dump = std::map<uint64_t, std::string>;
inline Dump DumpTable(const EmbeddingStore& store, const std::string& table) {
  Dump out;
  absl::Status st = store.ExportRows(
      table, [&](uint64_t key, const RowMeta& m, absl::Span<const float> v,
                 absl::Span<const float> s) {
        std::string b;
        b.append(reinterpret_cast<const char*>(&m.last_update_micros), 8);
        b.append(reinterpret_cast<const char*>(&m.update_count), 4);
        b.append(reinterpret_cast<const char*>(&m.version), 8);
        b.append(reinterpret_cast<const char*>(v.data()), v.size() * 4);
        b.append(reinterpret_cast<const char*>(s.data()), s.size() * 4);
        out[key] = b;
      });
  EXPECT_TRUE(st.ok()) << st;
  return out;
}

}  // namespace mim::embedding::testing

#endif  // MIM_EMBEDDING_STORE_TEST_UTIL_H_
