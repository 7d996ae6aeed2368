#include "worker/model/manifest.h"

#include <cinttypes>
#include <cstdio>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "base/atomic_file.h"
#include "base/fnv1a.h"
#include "base/status_macros.h"
#include "nlohmann/json.hpp"

namespace mim::model {
namespace {

using Json = nlohmann::json;

constexpr char kFormatV1[] = "mim-model-manifest v1";
constexpr char kFormatV2[] = "mim-model-manifest v2";

absl::Status Bad(absl::string_view field, absl::string_view why) {
  return absl::InvalidArgumentError(
      absl::StrCat("manifest: ", field, " ", why));
}

// Typed field readers: a missing field is an error unless `optional`.
class Fields {
 public:
  Fields(const Json& j, std::string prefix)
      : j_(j), prefix_(std::move(prefix)) {}

  absl::Status String(const char* key, std::string* out, bool optional = false) {
    const Json* v = Find(key);
    if (v == nullptr || v->is_null()) return Missing(key, optional);
    if (!v->is_string()) return Bad(Name(key), "must be a string");
    *out = v->get<std::string>();
    return absl::OkStatus();
  }
  template <typename T>
  absl::Status Int(const char* key, T* out, bool optional = false) {
    const Json* v = Find(key);
    if (v == nullptr || v->is_null()) return Missing(key, optional);
    if (!v->is_number_integer()) return Bad(Name(key), "must be an integer");
    if (v->is_number_unsigned()) {
      *out = static_cast<T>(v->get<uint64_t>());
    } else {
      const int64_t x = v->get<int64_t>();
      if (x < 0 && !std::is_signed<T>::value) {
        return Bad(Name(key), "must not be negative");
      }
      *out = static_cast<T>(x);
    }
    return absl::OkStatus();
  }
  absl::Status Double(const char* key, double* out, bool optional = false) {
    const Json* v = Find(key);
    if (v == nullptr || v->is_null()) return Missing(key, optional);
    if (!v->is_number()) return Bad(Name(key), "must be a number");
    *out = v->get<double>();
    return absl::OkStatus();
  }
  absl::Status Bool(const char* key, bool* out, bool optional = false) {
    const Json* v = Find(key);
    if (v == nullptr || v->is_null()) return Missing(key, optional);
    if (!v->is_boolean()) return Bad(Name(key), "must be true or false");
    *out = v->get<bool>();
    return absl::OkStatus();
  }
  const Json* Find(const char* key) const {
    auto it = j_.find(key);
    return it == j_.end() ? nullptr : &*it;
  }
  std::string Name(const char* key) const { return prefix_ + key; }

 private:
  absl::Status Missing(const char* key, bool optional) const {
    return optional ? absl::OkStatus() : Bad(Name(key), "is missing");
  }
  const Json& j_;
  std::string prefix_;
};

std::string Hex64(uint64_t v) { return absl::StrFormat("%016x", v); }

}  // namespace

absl::Status ValidateManifest(const ModelManifest& m) {
  if (m.format_version < 1 || m.format_version > ModelManifest::kFormatVersion) {
    return Bad("format", absl::StrCat("version ", m.format_version,
                                      " is not supported (1 to ",
                                      ModelManifest::kFormatVersion, ")"));
  }
  if (m.format_version >= 2 && m.model_version.empty()) {
    return Bad("model_version", "is empty");
  }
  if (m.model_name.empty()) return Bad("model", "is empty");
  if (m.model_file.empty() || m.model_file.find('/') != std::string::npos) {
    return Bad("model_file",
               absl::StrCat("'", m.model_file,
                            "' must be a file name inside the model dir"));
  }
  if (m.id_dim <= 0) return Bad("model_config.id_dim", "must be positive");
  if (m.id_table.name.empty()) return Bad("id_table.name", "is empty");
  if (m.id_table.dim != m.id_dim) {
    return Bad("id_table.dim",
               absl::StrCat(m.id_table.dim, " differs from model_config.id_dim ",
                            m.id_dim));
  }
  if (m.num_shards < 1) return Bad("num_shards", "must be at least 1");
  if (m.uses_content != m.content_table.has_value()) {
    return Bad("content_table",
               m.uses_content ? "is missing for a model that reads content"
                              : "is set for a model that reads no content");
  }
  if (m.content_table.has_value()) {
    if (m.content_table->name.empty()) {
      return Bad("content_table.name", "is empty");
    }
    if (m.content_dim <= 0 || m.content_table->dim != m.content_dim) {
      return Bad("content_table.dim",
                 absl::StrCat(m.content_table->dim,
                              " differs from model_config.content_dim ",
                              m.content_dim, " or is not positive"));
    }
    const ContentEncoderInfo& e = m.content_table->encoder;
    if (!e.kind.empty() && e.kind != "fasttext" && e.kind != "csft" &&
        e.kind != "external") {
      return Bad("content_table.encoder.kind",
                 absl::StrCat("'", e.kind,
                              "' is not fasttext, csft or external"));
    }
    if (e.kind == "csft" && (e.path.empty() || e.text_path.empty())) {
      return Bad("content_table.encoder",
                 "of kind csft needs path (the C-SFT encoder file) and "
                 "text_encoder.path (the fastText encoder of its input)");
    }
  }
  if (m.dense_params != "local" && m.dense_params != "ps" &&
      m.dense_params != "nccl") {
    return Bad("dense_params", absl::StrCat("'", m.dense_params,
                                            "' is not local, ps or nccl"));
  }
  return absl::OkStatus();
}

std::string FormatManifest(const ModelManifest& m) {
  Json j;
  // The struct's own format: a format 1 manifest read and written back
  // stays format 1 (format 2 would demand fields it never had).
  j["format"] = m.format_version == 1 ? kFormatV1 : kFormatV2;
  j["model_version"] = m.model_version;
  j["model"] = m.model_name;
  j["model_file"] = m.model_file;
  j["model_file_fnv64"] = Hex64(m.model_file_checksum);
  j["model_config"] = {{"name", m.model_name},
                       {"id_dim", m.id_dim},
                       {"content_dim", m.content_dim},
                       {"uses_content", m.uses_content},
                       {"use_id_interest", m.use_id_interest},
                       {"use_content_interest", m.use_content_interest},
                       {"use_fusion", m.use_fusion},
                       {"seed", m.seed}};
  j["num_shards"] = m.num_shards;
  j["id_table"] = {{"name", m.id_table.name},
                   {"dim", m.id_table.dim},
                   {"optimizer", m.id_table.optimizer},
                   {"learning_rate", m.id_table.learning_rate},
                   {"rows", m.id_table.rows},
                   {"pushes", m.id_table.pushes}};
  if (m.content_table.has_value()) {
    const ModelManifest::ContentTable& c = *m.content_table;
    Json encoder = {{"kind", c.encoder.kind},
                    {"path", c.encoder.path},
                    {"id", c.encoder.id}};
    if (c.encoder.kind == "csft") {
      encoder["text_encoder"] = {{"path", c.encoder.text_path},
                                 {"id", c.encoder.text_id}};
    }
    j["content_table"] = {{"name", c.name},
                          {"dim", c.dim},
                          {"version", c.version},
                          {"encoder", std::move(encoder)}};
  } else {
    j["content_table"] = nullptr;
  }
  j["dense_params"] = m.dense_params;
  j["dense_table"] =
      m.dense_table.empty() ? Json(nullptr) : Json(m.dense_table);
  j["train_samples"] = m.train_samples;
  j["init_model"] = m.init_model.empty() ? Json(nullptr) : Json(m.init_model);
  j["created_unix"] = m.created_unix;
  return j.dump(2) + "\n";
}

absl::StatusOr<ModelManifest> ParseManifest(absl::string_view text) {
  const Json j = Json::parse(text.begin(), text.end(), nullptr,
                             /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError("manifest: not a JSON object");
  }
  ModelManifest m;
  Fields top(j, "");
  std::string format;
  MIM_RETURN_IF_ERROR(top.String("format", &format));
  if (format == kFormatV1) {
    m.format_version = 1;
  } else if (format == kFormatV2) {
    m.format_version = 2;
  } else {
    return Bad("format", absl::StrCat("'", format.substr(0, 64),
                                      "' is not a mim model manifest (",
                                      kFormatV1, " or ", kFormatV2, ")"));
  }
  const bool v2 = m.format_version >= 2;
  MIM_RETURN_IF_ERROR(top.String("model_version", &m.model_version, !v2));
  MIM_RETURN_IF_ERROR(top.String("model", &m.model_name));
  MIM_RETURN_IF_ERROR(top.String("model_file", &m.model_file));
  std::string checksum;
  MIM_RETURN_IF_ERROR(top.String("model_file_fnv64", &checksum, !v2));
  if (!checksum.empty()) {
    char* end = nullptr;
    m.model_file_checksum = std::strtoull(checksum.c_str(), &end, 16);
    if (checksum.size() != 16 || end != checksum.c_str() + 16) {
      return Bad("model_file_fnv64", "must be 16 hex digits");
    }
  }
  const Json* config = top.Find("model_config");
  if (config == nullptr || !config->is_object()) {
    return Bad("model_config", "is missing or not an object");
  }
  Fields cf(*config, "model_config.");
  MIM_RETURN_IF_ERROR(cf.Int("id_dim", &m.id_dim));
  MIM_RETURN_IF_ERROR(cf.Int("content_dim", &m.content_dim));
  MIM_RETURN_IF_ERROR(cf.Bool("uses_content", &m.uses_content));
  MIM_RETURN_IF_ERROR(cf.Int("seed", &m.seed, /*optional=*/true));
  MIM_RETURN_IF_ERROR(cf.Bool("use_id_interest", &m.use_id_interest, true));
  MIM_RETURN_IF_ERROR(
      cf.Bool("use_content_interest", &m.use_content_interest, true));
  MIM_RETURN_IF_ERROR(cf.Bool("use_fusion", &m.use_fusion, true));
  MIM_RETURN_IF_ERROR(top.Int("num_shards", &m.num_shards));
  const Json* id = top.Find("id_table");
  if (id == nullptr || !id->is_object()) {
    return Bad("id_table", "is missing or not an object");
  }
  Fields idf(*id, "id_table.");
  MIM_RETURN_IF_ERROR(idf.String("name", &m.id_table.name));
  MIM_RETURN_IF_ERROR(idf.Int("dim", &m.id_table.dim));
  MIM_RETURN_IF_ERROR(idf.String("optimizer", &m.id_table.optimizer, true));
  MIM_RETURN_IF_ERROR(
      idf.Double("learning_rate", &m.id_table.learning_rate, true));
  MIM_RETURN_IF_ERROR(idf.Int("rows", &m.id_table.rows, !v2));
  MIM_RETURN_IF_ERROR(idf.Int("pushes", &m.id_table.pushes, !v2));
  const Json* content = top.Find("content_table");
  if (content != nullptr && !content->is_null()) {
    if (!content->is_object()) return Bad("content_table", "is not an object");
    Fields ctf(*content, "content_table.");
    ModelManifest::ContentTable c;
    MIM_RETURN_IF_ERROR(ctf.String("name", &c.name));
    MIM_RETURN_IF_ERROR(ctf.Int("dim", &c.dim));
    MIM_RETURN_IF_ERROR(ctf.Int("version", &c.version));
    const Json* enc = ctf.Find("encoder");
    if (enc != nullptr && !enc->is_null()) {
      if (!enc->is_object()) {
        return Bad("content_table.encoder", "is not an object");
      }
      Fields ef(*enc, "content_table.encoder.");
      MIM_RETURN_IF_ERROR(ef.String("kind", &c.encoder.kind));
      MIM_RETURN_IF_ERROR(ef.String("path", &c.encoder.path, true));
      MIM_RETURN_IF_ERROR(ef.String("id", &c.encoder.id, true));
      if (c.encoder.kind == "csft") {
        const Json* text = ef.Find("text_encoder");
        if (text == nullptr || !text->is_object()) {
          return Bad("content_table.encoder.text_encoder",
                     "must be an object for an encoder of kind csft");
        }
        Fields tf(*text, "content_table.encoder.text_encoder.");
        MIM_RETURN_IF_ERROR(tf.String("path", &c.encoder.text_path));
        MIM_RETURN_IF_ERROR(tf.String("id", &c.encoder.text_id, true));
      }
    } else if (v2) {
      return Bad("content_table.encoder", "is missing");
    }
    m.content_table = std::move(c);
  }
  MIM_RETURN_IF_ERROR(top.String("dense_params", &m.dense_params));
  MIM_RETURN_IF_ERROR(top.String("dense_table", &m.dense_table, true));
  MIM_RETURN_IF_ERROR(top.Int("train_samples", &m.train_samples, true));
  MIM_RETURN_IF_ERROR(top.String("init_model", &m.init_model, true));
  MIM_RETURN_IF_ERROR(top.Int("created_unix", &m.created_unix, true));
  MIM_RETURN_IF_ERROR(ValidateManifest(m));
  return m;
}

absl::StatusOr<ModelManifest> ReadManifest(const std::string& dir) {
  const std::string path = dir + "/" + kManifestFileName;
  std::string text;
  MIM_RETURN_IF_ERROR(base::ReadFileToString(path, &text));
  absl::StatusOr<ModelManifest> m = ParseManifest(text);
  if (!m.ok()) {
    return absl::Status(m.status().code(),
                        absl::StrCat(path, ": ", m.status().message()));
  }
  return m;
}

absl::Status WriteManifest(const std::string& dir, const ModelManifest& m) {
  MIM_RETURN_IF_ERROR(ValidateManifest(m));
  return base::WriteFileAtomically(dir + "/" + kManifestFileName,
                                   FormatManifest(m));
}

absl::StatusOr<uint64_t> FileChecksum(const std::string& path) {
  std::string bytes;
  MIM_RETURN_IF_ERROR(base::ReadFileToString(path, &bytes));
  return base::Fnv1a64(bytes.data(), bytes.size());
}

absl::Status CheckModelFile(const std::string& path,
                            const ModelManifest& manifest,
                            absl::string_view context) {
  if (manifest.model_file_checksum == 0) return absl::OkStatus();
  MIM_ASSIGN_OR_RETURN(const uint64_t sum, FileChecksum(path));
  if (sum == manifest.model_file_checksum) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrFormat(
      "%s%s: checksum %016x differs from its manifest's %016x (a save in "
      "progress, or files of two saves)",
      context, path, sum, manifest.model_file_checksum));
}

std::string NewModelVersion(absl::string_view model_name) {
  return absl::StrCat(
      absl::FormatTime("%Y%m%dT%H%M%E6SZ", absl::Now(), absl::UTCTimeZone()),
      "-", model_name);
}

}  // namespace mim::model
