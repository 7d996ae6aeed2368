// The manifest of a saved model: the typed contract between the trainer,
// which writes it next to the dense model file, and the serving tier (and a
// warm-started trainer), which read it. JSON on disk ("manifest.json"),
// a struct everywhere else.
//
// A model directory holds manifest.json and the file it names
// (model.mimmodel). The manifest pins what the dense parameters were
// trained with: the ID table (name, dim, and its row count and push count
// when the model was saved), the content table with its version and the
// encoder that filled it, and a model version unique to this save.
#ifndef MIM_WORKER_MODEL_MANIFEST_H_
#define MIM_WORKER_MODEL_MANIFEST_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace mim::model {

inline constexpr char kManifestFileName[] = "manifest.json";
inline constexpr char kModelFileName[] = "model.mimmodel";

// The encoder that turned item content into the content table's vectors.
// Plain value type.
struct ContentEncoderInfo {
  // "fasttext" (tools/content_vectors), "csft" (//worker/csft:csft on top
  // of a fastText encoder's vectors) or "external".
  std::string kind;
  // For "fasttext": the saved encoder (fastText .bin plus its centring
  // mean), as written by tools/content_vectors --encoder_out. For "csft":
  // the C-SFT encoder file (csft --encoder_out). May be relative to the
  // manifest's directory. Empty for "external".
  std::string path;
  std::string id;  // content hash of the encoder files; "" when unknown
  // For "csft" only (both required): the fastText encoder directory whose
  // vectors are the C-SFT encoder's plain input, and its id.
  std::string text_path;
  std::string text_id;
};

// Plain value type.
struct ModelManifest {
  // Format 1 (mim-model-manifest v1) had no model_version, checksum, ID
  // table pin or encoder; it still parses, with those left empty.
  static constexpr int kFormatVersion = 2;
  int format_version = kFormatVersion;

  // Unique per save (UTC time to the microsecond plus the model name), so a
  // serving tier can tell a new model from the one it holds.
  std::string model_version;
  std::string model_name;  // e.g. "din_mim"
  std::string model_file = kModelFileName;
  // FNV-1a 64 of model_file's bytes; a reader that finds another file
  // (a save in progress) must not use it. 0: unknown (format 1).
  uint64_t model_file_checksum = 0;
  int id_dim = 0;
  int content_dim = 0;
  bool uses_content = false;
  // Ablation switches of the model (informational; the model file holds
  // the architecture).
  bool use_id_interest = true;
  bool use_content_interest = true;
  bool use_fusion = true;
  uint64_t seed = 0;
  int num_shards = 0;

  struct IdTable {
    std::string name;
    int dim = 0;
    std::string optimizer;
    double learning_rate = 0;
    // The table as this model last saw it: rows and keys pushed, summed
    // over shards. A table trained further afterwards shows larger counts.
    uint64_t rows = 0;
    uint64_t pushes = 0;
  } id_table;

  struct ContentTable {
    std::string name;
    int dim = 0;
    uint64_t version = 0;  // newest row version when training started
    ContentEncoderInfo encoder;
  };
  std::optional<ContentTable> content_table;  // models without content: none

  std::string dense_params = "local";  // "local", "ps" or "nccl"
  std::string dense_table;             // set for "ps"
  int64_t train_samples = 0;
  std::string init_model;  // warm start source, or empty
  int64_t created_unix = 0;
};

// OK when the manifest is consistent: known format version, non-empty model
// version / name / file / ID table name, positive dims, id_table.dim ==
// id_dim, a content table exactly when uses_content, with dim ==
// content_dim; an encoder kind of "", fasttext, csft or external, and for
// csft a path and a text_path. Else INVALID_ARGUMENT naming the field.
absl::Status ValidateManifest(const ModelManifest& m);

// JSON text (2-space indented, trailing newline).
std::string FormatManifest(const ModelManifest& m);

// Parses and validates. INVALID_ARGUMENT naming the field that is missing,
// has the wrong type or fails ValidateManifest.
absl::StatusOr<ModelManifest> ParseManifest(absl::string_view json);

// ReadManifest: `dir`/manifest.json, parsed (NOT_FOUND if missing; parse
// errors name the path). WriteManifest: atomically (base/atomic_file.h).
absl::StatusOr<ModelManifest> ReadManifest(const std::string& dir);
absl::Status WriteManifest(const std::string& dir, const ModelManifest& m);

// FNV-1a 64 of a file's bytes (ModelManifest::model_file_checksum).
// NOT_FOUND if it cannot be read.
absl::StatusOr<uint64_t> FileChecksum(const std::string& path);

// OK when the model file at `path` is the one `manifest` was written with
// (or the manifest has no checksum, format 1); else FAILED_PRECONDITION
// naming the path and both checksums (a save in progress, or files of two
// saves), its message after `context`. Errors of FileChecksum otherwise.
absl::Status CheckModelFile(const std::string& path,
                            const ModelManifest& manifest,
                            absl::string_view context = "");

// A new model version string: "<UTC yyyymmddThhmmss.ffffffZ>-<name>".
std::string NewModelVersion(absl::string_view model_name);

}  // namespace mim::model

#endif  // MIM_WORKER_MODEL_MANIFEST_H_
