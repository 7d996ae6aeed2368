// ps_admin: inspect and operate a running parameter-server cluster.
//
//   ps_admin --ps=HOST:PORT[,HOST:PORT...] [--json] COMMAND [ARGS]
//
// Commands:
//   tables                          tables with kind, dim, optimizer, init
//   stats TABLE                     rows, dim, bytes, bytes/row, optimizer,
//                                   per shard and total; and what a shard
//                                   dropped if it started with
//                                   --accept_data_loss
//   get TABLE KEY...                values and metadata (creates no rows)
//   create-table NAME --kind=id|content --dim=D [--optimizer=adagrad]
//                [--lr=0.05] [--init=normal] [--init_scale=0.01] [--seed=0]
//                [--beta1 --beta2 --epsilon --initial_accumulator --l1 --l2
//                 --lr_power: sent only when given]
//   checkpoint [NAME]               on every shard (default: timestamp);
//                                   names the older ones a shard deleted to
//                                   keep its --keep_checkpoints
//   checkpoints                     each shard's checkpoints, oldest first,
//                                   '*' marking those on every shard
//   delete-checkpoint NAME          on every shard that has it (NOT_FOUND,
//                                   exit 1, when none has)
//   drop-table NAME --yes           drops the table (config, rows, optimizer
//                                   state) on every shard that has it;
//                                   without --yes only says what it would
//                                   drop (exit 2); NOT_FOUND, exit 1, when
//                                   no shard has it. Checkpoints keep it.
//   restore [NAME]                  on every shard, only if every shard has
//                                   it (default: the newest checkpoint on
//                                   every shard)
//   health                          grpc.health.v1 of every shard
//
// Security: --tls_ca (+ --tls_client_cert/--tls_client_key) and
// --auth_token_file (base/client_security.h); create-table, drop-table,
// checkpoint, restore and delete-checkpoint need an admin token on a shard
// with --auth_tokens.
//
// Exit status: 0 success, 1 an RPC failed (the message names the shard and
// its address), 2 bad usage. Output is for people unless --json is given, in
// which case stdout is one JSON document, failures and bad usage included
// ({"ok": false, "code": ..., "error": ...}, with "usage": true for the
// latter).
#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "base/client_security.h"
#include "gflags/gflags.h"
#include "nlohmann/json.hpp"
#include "proto/ps.pb.h"
#include "ps/client.h"

DEFINE_string(ps, "", "Comma-separated shard addresses, in shard order.");
DEFINE_bool(json, false, "Print one JSON document instead of text.");
DEFINE_int32(timeout_ms, 5000, "Deadline of each RPC.");
DEFINE_int32(attempts, 2, "Attempts per shard when it answers UNAVAILABLE.");
DEFINE_string(kind, "id", "create-table: id or content.");
DEFINE_uint32(dim, 0, "create-table: embedding dimension.");
DEFINE_string(optimizer, "adagrad", "create-table: sgd|adagrad|adam|ftrl.");
DEFINE_double(lr, 0.05, "create-table: learning rate.");
DEFINE_double(beta1, 0.9, "create-table: adam beta1 (sent only when given).");
DEFINE_double(beta2, 0.999, "create-table: adam beta2 (sent only when given).");
DEFINE_double(epsilon, 1e-8,
              "create-table: adam/adagrad epsilon (sent only when given).");
DEFINE_double(initial_accumulator, 0.1,
              "create-table: adagrad initial accumulator (sent only when given).");
DEFINE_double(l1, 0, "create-table: ftrl l1 (sent only when given).");
DEFINE_double(l2, 0, "create-table: ftrl l2 (sent only when given).");
DEFINE_double(lr_power, -0.5, "create-table: ftrl lr_power (sent only when given).");
DEFINE_string(init, "normal", "create-table: zeros|uniform|normal.");
DEFINE_double(init_scale, 0.01, "create-table: initializer scale.");
DEFINE_uint64(seed, 0, "create-table: initializer seed.");
DEFINE_bool(if_not_exists, false,
            "create-table: succeed if the same table exists.");
DEFINE_bool(yes, false,
            "drop-table: drop it (without: say what would be dropped).");

namespace {

using json = nlohmann::json;
using mim::ps::PsClient;

constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;

int Usage(const std::string& message) {
  if (FLAGS_json) {
    std::cout << json{{"ok", false},
                      {"code", "INVALID_ARGUMENT"},
                      {"usage", true},
                      {"error", message}}
                     .dump(2)
              << "\n";
  }
  std::fprintf(stderr, "ps_admin: %s\n%s\n", message.c_str(),
               gflags::ProgramUsage());
  return kExitUsage;
}

int Failed(const absl::Status& status) {
  if (FLAGS_json) {
    std::cout << json{{"ok", false},
                      {"code", absl::StatusCodeToString(status.code())},
                      {"error", std::string(status.message())}}
                     .dump(2)
              << "\n";
  }
  std::fprintf(
      stderr, "ps_admin: %s\n",
      status.ToString(absl::StatusToStringMode::kWithNoExtraData).c_str());
  return kExitFailed;
}

std::string KindName(mim::ps::TableKind kind) {
  return kind == mim::ps::ID ? "id" : kind == mim::ps::CONTENT ? "content"
                                                                 : "unknown";
}

json ConfigJson(const mim::ps::TableConfig& c) {
  json j = {{"name", c.name()}, {"kind", KindName(c.kind())}, {"dim", c.dim()}};
  if (c.kind() == mim::ps::ID) {
    j["optimizer"] = c.optimizer().name();
    j["lr"] = c.optimizer().learning_rate();
    j["init"] = c.initializer().name();
    j["init_scale"] = c.initializer().scale();
    j["seed"] = c.initializer().seed();
  }
  return j;
}

std::string ConfigText(const mim::ps::TableConfig& c) {
  if (c.kind() != mim::ps::ID) {
    return absl::StrFormat("%-24s content dim=%d", c.name(), c.dim());
  }
  return absl::StrFormat("%-24s id      dim=%d optimizer=%s lr=%g init=%s(%g)",
                         c.name(), c.dim(), c.optimizer().name(),
                         c.optimizer().learning_rate(), c.initializer().name(),
                         c.initializer().scale());
}

json StatsJson(const mim::ps::TableStats& t) {
  return {{"rows", t.rows()},
          {"dim", t.config().dim()},
          {"bytes", t.bytes()},
          {"bytes_per_row", t.bytes_per_row()},
          {"optimizer", t.config().kind() == mim::ps::ID
                            ? t.config().optimizer().name()
                            : "none"},
          {"pulls", t.pulls()},
          {"pushes", t.pushes()},
          {"max_version", t.max_version()}};
}

std::string StatsText(const std::string& who, const mim::ps::TableStats& t) {
  return absl::StrFormat(
      "%-28s rows=%-10d dim=%-4d bytes=%-12d bytes/row=%-8.1f optimizer=%s "
      "pulls=%d pushes=%d max_version=%d",
      who, t.rows(), t.config().dim(), t.bytes(), t.bytes_per_row(),
      t.config().kind() == mim::ps::ID ? t.config().optimizer().name()
                                       : "none",
      t.pulls(), t.pushes(), t.max_version());
}

int Tables(PsClient& client) {
  auto tables = client.ListTables();
  if (!tables.ok()) return Failed(tables.status());
  if (FLAGS_json) {
    json j = json::array();
    for (const auto& t : *tables) j.push_back(ConfigJson(t));
    std::cout << json{{"ok", true}, {"tables", j}}.dump(2) << "\n";
  } else {
    if (tables->empty()) std::cout << "(no tables)\n";
    for (const auto& t : *tables) std::cout << ConfigText(t) << "\n";
  }
  return 0;
}

int Stats(PsClient& client, const std::string& table) {
  auto shards = client.Stats(table);
  if (!shards.ok()) return Failed(shards.status());
  const std::vector<mim::ps::TableStats> totals = mim::ps::TotalStats(*shards);
  if (FLAGS_json) {
    json per_shard = json::array();
    for (size_t s = 0; s < shards->size(); ++s) {
      const auto& shard = (*shards)[s];
      for (const auto& t : shard.stats.tables()) {
        json j = StatsJson(t);
        j["shard"] = s;
        j["address"] = shard.address;
        per_shard.push_back(j);
      }
    }
    json total = totals.empty() ? json() : StatsJson(totals[0]);
    // Shards that started by accepting data loss (--accept_data_loss).
    json recovered = json::array();
    for (size_t s = 0; s < shards->size(); ++s) {
      const mim::ps::StartupRecovery& r = (*shards)[s].stats.recovery();
      if (!r.data_loss_accepted()) continue;
      recovered.push_back(
          {{"shard", s},
           {"address", (*shards)[s].address},
           {"started_empty", r.started_empty()},
           {"wal_records_dropped", r.wal_records_dropped()},
           {"wal_writes_dropped", r.wal_writes_dropped()},
           {"wal_bytes_dropped", r.wal_bytes_dropped()},
           {"files", std::vector<std::string>(r.files().begin(),
                                              r.files().end())},
           {"salvage_dir", r.salvage_dir()},
           {"detail", r.detail()}});
    }
    std::cout << json{{"ok", true},
                      {"table", table},
                      {"shards", per_shard},
                      {"total", total},
                      {"data_loss_accepted_at_start", recovered}}
                     .dump(2)
              << "\n";
    return 0;
  }
  std::cout << "table " << table << "\n";
  for (size_t s = 0; s < shards->size(); ++s) {
    const auto& shard = (*shards)[s];
    for (const auto& t : shard.stats.tables()) {
      std::cout << StatsText(absl::StrFormat("  shard %d (%s)", s,
                                             shard.address),
                             t)
                << "\n";
    }
  }
  for (const auto& t : totals) std::cout << StatsText("  total", t) << "\n";
  for (size_t s = 0; s < shards->size(); ++s) {
    const mim::ps::StartupRecovery& r = (*shards)[s].stats.recovery();
    if (!r.data_loss_accepted()) continue;
    std::cout << absl::StrFormat(
        "  shard %d (%s) started with --accept_data_loss: %d writes, %d log "
        "records, %d log bytes dropped; %s\n",
        s, (*shards)[s].address, r.wal_writes_dropped(),
        r.wal_records_dropped(), r.wal_bytes_dropped(), r.detail());
  }
  return 0;
}

int Get(PsClient& client, const std::string& table,
        const std::vector<std::string>& key_args) {
  std::vector<uint64_t> keys;
  for (const std::string& k : key_args) {
    uint64_t key = 0;
    if (!absl::SimpleAtoi(k, &key)) {
      return Usage("key '" + k + "' is not an unsigned 64-bit integer");
    }
    keys.push_back(key);
  }
  if (keys.empty()) return Usage("get needs TABLE KEY...");
  auto rows = client.GetRows(table, keys);
  if (!rows.ok()) return Failed(rows.status());
  std::vector<bool> missing(keys.size(), false);
  for (uint32_t i : rows->missing) missing[i] = true;
  json out = json::array();
  for (size_t i = 0; i < keys.size(); ++i) {
    std::vector<float> row(rows->values.begin() + i * rows->dim,
                           rows->values.begin() + (i + 1) * rows->dim);
    const mim::ps::RowMeta& m = rows->meta[i];
    if (FLAGS_json) {
      out.push_back({{"key", keys[i]},
                     {"missing", bool(missing[i])},
                     {"values", row},
                     {"update_count", m.update_count()},
                     {"version", m.version()},
                     {"last_update_micros", m.last_update_micros()}});
      continue;
    }
    if (missing[i]) {
      std::cout << "key " << keys[i] << ": missing\n";
      continue;
    }
    std::cout << absl::StrFormat(
        "key %d: updates=%d version=%d last_update=%s\n  [%s]\n", keys[i],
        m.update_count(), m.version(),
        m.last_update_micros() == 0
            ? std::string("never")
            : absl::FormatTime(absl::FromUnixMicros(m.last_update_micros()),
                               absl::UTCTimeZone()),
        absl::StrJoin(row, ", "));
  }
  if (FLAGS_json) {
    std::cout << json{{"ok", true}, {"table", table}, {"dim", rows->dim},
                      {"rows", out}}
                     .dump(2)
              << "\n";
  }
  return 0;
}

int CreateTable(PsClient& client, const std::string& name) {
  mim::ps::TableConfig config;
  config.set_name(name);
  if (FLAGS_kind == "id") {
    config.set_kind(mim::ps::ID);
  } else if (FLAGS_kind == "content") {
    config.set_kind(mim::ps::CONTENT);
  } else {
    return Usage("--kind must be id or content, got '" + FLAGS_kind + "'");
  }
  if (FLAGS_dim == 0) return Usage("create-table needs --dim=D (D >= 1)");
  config.set_dim(FLAGS_dim);
  // A finite double beyond float's range has no float (the cast would be
  // undefined and the shard would report "inf" for what was typed).
  const auto out_of_float_range = [](double v) {
    return std::isfinite(v) &&
           std::fabs(v) > double(std::numeric_limits<float>::max());
  };
  if (out_of_float_range(FLAGS_lr) || out_of_float_range(FLAGS_init_scale)) {
    return Usage(absl::StrCat("--lr=", FLAGS_lr, " / --init_scale=",
                              FLAGS_init_scale,
                              ": outside float's range (|x| <= 3.4e38)"));
  }
  config.mutable_optimizer()->set_name(FLAGS_optimizer);
  config.mutable_optimizer()->set_learning_rate(
      static_cast<float>(FLAGS_lr));
  // The other hyperparameters go out only when given, so the shard applies
  // its documented defaults otherwise (proto3 presence).
  mim::ps::OptimizerConfig* opt = config.mutable_optimizer();
  const std::pair<const char*, void (mim::ps::OptimizerConfig::*)(float)>
      optional_flags[] = {
          {"beta1", &mim::ps::OptimizerConfig::set_beta1},
          {"beta2", &mim::ps::OptimizerConfig::set_beta2},
          {"epsilon", &mim::ps::OptimizerConfig::set_epsilon},
          {"initial_accumulator",
           &mim::ps::OptimizerConfig::set_initial_accumulator},
          {"l1", &mim::ps::OptimizerConfig::set_l1},
          {"l2", &mim::ps::OptimizerConfig::set_l2},
          {"lr_power", &mim::ps::OptimizerConfig::set_lr_power},
      };
  for (const auto& [flag, setter] : optional_flags) {
    const gflags::CommandLineFlagInfo info =
        gflags::GetCommandLineFlagInfoOrDie(flag);
    if (!info.is_default) {
      const double v = std::stod(info.current_value);
      if (out_of_float_range(v)) {
        return Usage(absl::StrCat("--", flag, "=", info.current_value,
                                  ": outside float's range (|x| <= 3.4e38)"));
      }
      (opt->*setter)(static_cast<float>(v));
    }
  }
  config.mutable_initializer()->set_name(FLAGS_init);
  config.mutable_initializer()->set_scale(static_cast<float>(FLAGS_init_scale));
  config.mutable_initializer()->set_seed(FLAGS_seed);
  absl::Status status = client.CreateTable(config, FLAGS_if_not_exists);
  if (!status.ok()) return Failed(status);
  if (FLAGS_json) {
    std::cout << json{{"ok", true}, {"created", ConfigJson(config)}}.dump(2)
              << "\n";
  } else {
    std::cout << "created table " << name << " on " << client.num_shards()
              << " shards\n";
  }
  return 0;
}

int Checkpoint(PsClient& client, const std::string& name) {
  auto shards = client.Checkpoint(name);
  if (!shards.ok()) return Failed(shards.status());
  json j = json::array();
  for (size_t s = 0; s < shards->size(); ++s) {
    const auto& c = (*shards)[s];
    const std::vector<std::string> deleted(c.checkpoint.deleted().begin(),
                                           c.checkpoint.deleted().end());
    j.push_back({{"shard", s},
                 {"address", c.address},
                 {"name", c.checkpoint.name()},
                 {"path", c.checkpoint.path()},
                 {"rows", c.checkpoint.rows()},
                 {"deleted", deleted}});
    if (!FLAGS_json) {
      std::cout << absl::StrFormat("shard %d (%s): checkpoint %s rows=%d at %s\n",
                                   s, c.address, c.checkpoint.name(),
                                   c.checkpoint.rows(), c.checkpoint.path());
      if (!deleted.empty()) {
        std::cout << absl::StrFormat(
            "shard %d (%s): deleted older %s (--keep_checkpoints)\n", s,
            c.address, absl::StrJoin(deleted, ", "));
      }
    }
  }
  if (FLAGS_json) std::cout << json{{"ok", true}, {"shards", j}}.dump(2) << "\n";
  return 0;
}

std::string CreatedText(int64_t micros) {
  if (micros == 0) return "unknown";
  return absl::FormatTime("%Y-%m-%d %H:%M:%E6S UTC",
                          absl::FromUnixMicros(micros), absl::UTCTimeZone());
}

int Checkpoints(PsClient& client) {
  auto shards = client.ListCheckpoints();
  if (!shards.ok()) return Failed(shards.status());
  const std::vector<std::string> common = mim::ps::CommonCheckpoints(*shards);
  auto on_every_shard = [&common](const std::string& name) {
    return std::find(common.begin(), common.end(), name) != common.end();
  };
  if (FLAGS_json) {
    json per_shard = json::array();
    for (size_t s = 0; s < shards->size(); ++s) {
      json list = json::array();
      for (const auto& c : (*shards)[s].list.checkpoints()) {
        list.push_back({{"name", c.name()},
                        {"path", c.path()},
                        {"sequence", c.sequence()},
                        {"created_micros", c.created_micros()},
                        {"on_every_shard", on_every_shard(c.name())}});
      }
      per_shard.push_back({{"shard", s},
                           {"address", (*shards)[s].address},
                           {"checkpoints", list}});
    }
    std::cout << json{{"ok", true},
                      {"shards", per_shard},
                      {"on_every_shard", common},
                      {"restore_default",
                       common.empty() ? json() : json(common.back())}}
                     .dump(2)
              << "\n";
    return 0;
  }
  for (size_t s = 0; s < shards->size(); ++s) {
    const auto& shard = (*shards)[s];
    if (shard.list.checkpoints().empty()) {
      std::cout << absl::StrFormat("shard %d (%s): no checkpoints\n", s,
                                   shard.address);
      continue;
    }
    const int n = shard.list.checkpoints_size();
    std::cout << absl::StrFormat(
        "shard %d (%s): %d checkpoint%s, oldest first\n", s, shard.address, n,
        n == 1 ? "" : "s");
    for (const auto& c : shard.list.checkpoints()) {
      std::cout << absl::StrFormat(
          "  %s %-28s seq=%-4s created=%s  %s\n",
          on_every_shard(c.name()) ? "*" : " ", c.name(),
          c.sequence() == 0 ? std::string("-") : absl::StrCat(c.sequence()),
          CreatedText(c.created_micros()), c.path());
    }
  }
  if (common.empty()) {
    std::cout << "no checkpoint is on every shard: restore without a name "
                 "would restore nothing\n";
  } else {
    std::cout << "* = on every shard; restore without a name takes "
              << common.back() << "\n";
  }
  return 0;
}

int Restore(PsClient& client, const std::string& name) {
  auto shards = client.Restore(name);
  if (!shards.ok()) return Failed(shards.status());
  json j = json::array();
  for (size_t s = 0; s < shards->size(); ++s) {
    const auto& r = (*shards)[s];
    j.push_back({{"shard", s},
                 {"address", r.address},
                 {"name", r.restore.name()},
                 {"rows", r.restore.rows()}});
    if (!FLAGS_json) {
      std::cout << absl::StrFormat("shard %d (%s): restored %s rows=%d\n", s,
                                   r.address, r.restore.name(),
                                   r.restore.rows());
    }
  }
  if (FLAGS_json) std::cout << json{{"ok", true}, {"shards", j}}.dump(2) << "\n";
  return 0;
}

int DeleteCheckpoint(PsClient& client, const std::string& name) {
  auto shards = client.DeleteCheckpoint(name);
  if (!shards.ok()) return Failed(shards.status());
  json j = json::array();
  for (size_t s = 0; s < shards->size(); ++s) {
    const auto& d = (*shards)[s];
    j.push_back({{"shard", s},
                 {"address", d.address},
                 {"deleted", d.deleted.deleted()}});
    if (!FLAGS_json) {
      std::cout << absl::StrFormat(
          "shard %d (%s): %s\n", s, d.address,
          d.deleted.deleted() ? absl::StrCat("deleted ", name)
                              : absl::StrCat("had no ", name));
    }
  }
  if (FLAGS_json) {
    std::cout << json{{"ok", true}, {"name", name}, {"shards", j}}.dump(2)
              << "\n";
  }
  return 0;
}

int DropTable(PsClient& client, const std::string& table) {
  if (!FLAGS_yes) {
    // Every shard's tables: the table may be on some shards only (a drop
    // that failed part way).
    auto shards = client.Stats("");
    if (!shards.ok()) return Failed(shards.status());
    const mim::ps::TableOnShards found =
        mim::ps::FindTableOnShards(*shards, table);
    if (found.shards_with_table() == 0) return Failed(found.NotFound(table));
    const uint64_t rows = found.total_rows();
    const size_t holding = found.shards_with_table();
    if (FLAGS_json) {
      json per_shard = json::array();
      for (size_t s = 0; s < shards->size(); ++s) {
        per_shard.push_back({{"shard", s},
                             {"address", (*shards)[s].address},
                             {"has_table", found.rows[s] >= 0},
                             {"rows", std::max<int64_t>(found.rows[s], 0)}});
      }
      // "ok": false because nothing was dropped (exit 2).
      std::cout << json{{"ok", false},
                        {"dry_run", true},
                        {"table", table},
                        {"rows", rows},
                        {"shards_with_table", holding},
                        {"shards", per_shard}}
                       .dump(2)
                << "\n";
    }
    std::fprintf(stderr,
                 "ps_admin: would drop table '%s' (%" PRIu64
                 " rows on %zu of %zu shards, optimizer state included; "
                 "checkpoints keep it): repeat with --yes to drop it\n",
                 table.c_str(), rows, holding, shards->size());
    return kExitUsage;
  }
  auto shards = client.DropTable(table);
  if (!shards.ok()) return Failed(shards.status());
  json j = json::array();
  for (size_t s = 0; s < shards->size(); ++s) {
    const auto& d = (*shards)[s];
    j.push_back({{"shard", s},
                 {"address", d.address},
                 {"dropped", d.drop.dropped()},
                 {"rows", d.drop.rows()},
                 {"answer_lost", d.answer_lost}});
    if (!FLAGS_json) {
      std::cout << absl::StrFormat(
          "shard %d (%s): %s\n", s, d.address,
          d.drop.dropped()
              ? absl::StrCat("dropped ", table, " (", d.drop.rows(), " rows",
                             d.answer_lost
                                 ? "; its answer was lost, the retry found "
                                   "the table gone"
                                 : "",
                             ")")
              : absl::StrCat("had no ", table));
    }
  }
  if (FLAGS_json) {
    std::cout << json{{"ok", true}, {"table", table}, {"shards", j}}.dump(2)
              << "\n";
  }
  return 0;
}

int Health(PsClient& client) {
  const std::vector<absl::Status> health = client.Health();
  bool all_ok = true;
  json j = json::array();
  for (size_t s = 0; s < health.size(); ++s) {
    all_ok = all_ok && health[s].ok();
    j.push_back({{"shard", s},
                 {"address", client.addresses()[s]},
                 {"serving", health[s].ok()},
                 {"error", std::string(health[s].message())}});
    if (!FLAGS_json) {
      std::cout << absl::StrFormat(
          "shard %d (%s): %s\n", s, client.addresses()[s],
          health[s].ok()
              ? "SERVING"
              : health[s].ToString(absl::StatusToStringMode::kWithNoExtraData));
    }
    if (!health[s].ok()) {
      std::fprintf(stderr, "ps_admin: shard %zu (%s) is down: %s\n", s,
                   client.addresses()[s].c_str(),
                   health[s]
                       .ToString(absl::StatusToStringMode::kWithNoExtraData)
                       .c_str());
    }
  }
  if (FLAGS_json) {
    std::cout << json{{"ok", all_ok}, {"shards", j}}.dump(2) << "\n";
  }
  return all_ok ? 0 : kExitFailed;
}

}  // namespace

int main(int argc, char** argv) {
  gflags::SetUsageMessage(
      "ps_admin --ps=HOST:PORT[,HOST:PORT...] [--json] COMMAND [ARGS]\n"
      "commands: tables | stats TABLE | get TABLE KEY... | create-table NAME "
      "--kind=id|content --dim=D [--optimizer=...] [--lr=...] [--init=...] "
      "[--init_scale=...] | drop-table NAME --yes | checkpoint [NAME] | "
      "checkpoints | restore [NAME] | delete-checkpoint NAME | health");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty()) return Usage("no command given");
  if (FLAGS_ps.empty()) return Usage("--ps=HOST:PORT[,...] is required");

  absl::StatusOr<mim::base::ClientSecurity> security =
      mim::base::ClientSecurityFromFlags();
  if (!security.ok()) return Usage(security.status().ToString());
  PsClient::Options options;
  options.timeout = absl::Milliseconds(FLAGS_timeout_ms);
  options.max_attempts = FLAGS_attempts;
  options.initial_backoff = absl::Milliseconds(100);
  options.credentials = security->credentials;
  options.auth_token = security->auth_token;
  auto client = PsClient::Create(
      absl::StrSplit(FLAGS_ps, ',', absl::SkipEmpty()), options);
  if (!client.ok()) return Usage(std::string(client.status().message()));

  const std::string& command = args[0];
  const std::vector<std::string> rest(args.begin() + 1, args.end());
  if (command == "tables" && rest.empty()) return Tables(**client);
  if (command == "stats" && rest.size() == 1) return Stats(**client, rest[0]);
  if (command == "get" && rest.size() >= 2) {
    return Get(**client, rest[0],
               std::vector<std::string>(rest.begin() + 1, rest.end()));
  }
  if (command == "create-table" && rest.size() == 1) {
    return CreateTable(**client, rest[0]);
  }
  if (command == "drop-table" && rest.size() == 1) {
    return DropTable(**client, rest[0]);
  }
  if (command == "checkpoint" && rest.size() <= 1) {
    return Checkpoint(**client, rest.empty() ? "" : rest[0]);
  }
  if (command == "checkpoints" && rest.empty()) return Checkpoints(**client);
  if (command == "restore" && rest.size() <= 1) {
    return Restore(**client, rest.empty() ? "" : rest[0]);
  }
  if (command == "delete-checkpoint" && rest.size() == 1) {
    return DeleteCheckpoint(**client, rest[0]);
  }
  if (command == "health" && rest.empty()) return Health(**client);
  return Usage("unknown command or wrong arguments: " +
               absl::StrJoin(args, " "));
}
