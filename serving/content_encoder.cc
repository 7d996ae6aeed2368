#include "serving/content_encoder.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <limits>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/memory/memory.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "base/atomic_file.h"
#include "base/fnv1a.h"
#include "base/status_macros.h"
#include "fasttext/args.h"
#include "fasttext/fasttext.h"
#include "fasttext/vector.h"

// Thread safety of the model (the class comment's promise). In fastText
// 0.9.2 (Debian's libfasttext0), getSentenceVector on a skipgram/cbow model
// reads args_, dict_ (Dictionary::getId / getSubwords / computeSubwords, all
// const) and input_ (DenseMatrix::addRowToVector, const) and writes only
// its local Vector, its istringstream and the caller's output; nothing is
// cached lazily. It is not declared const only because the supervised
// branch shares the function. saveModel likewise only reads. So concurrent
// Encode (and Save) calls need no lock, as long as nothing mutates the
// model, which this class never does after construction. Supervised and
// quantised models, whose paths were not checked, are rejected.

namespace mim::serving {
namespace {

constexpr absl::string_view kDescriptorMagic = "#mim-content-encoder v1";
constexpr absl::string_view kMeanMagic = "#mim-encoder-mean v1";
constexpr absl::string_view kKind = "fasttext";

// fastText 0.9.2's binary model format (FastText::saveModel).
constexpr int32_t kFastTextMagic = 793712314;
constexpr int32_t kFastTextVersion = 12;
constexpr int32_t kModelCbow = 1;  // fasttext::model_name
constexpr int32_t kModelSkipgram = 2;
constexpr int32_t kMaxVocabulary = 30000000;  // Dictionary::MAX_VOCAB_SIZE
constexpr int32_t kMaxDim = 1 << 16;
// Below the count fastText's hierarchical-softmax tree gives a node not
// built yet (1e15; see ScanModelFile).
constexpr int64_t kMaxWordCount = 999999999999999;

std::string IdString(uint64_t h) { return absl::StrFormat("%016x", h); }

std::string JoinPath(const std::string& dir, absl::string_view name) {
  return absl::StrCat(dir, "/", name);
}

// Sequential reader over a file that hashes every byte it consumes.
// Not thread-safe.
class HashingReader {
 public:
  explicit HashingReader(std::FILE* f) : f_(f) {}

  // Reads exactly `n` bytes into `dst`; false at end of file or on error.
  bool Read(void* dst, size_t n) {
    const size_t got = std::fread(dst, 1, n, f_);
    hash_ = base::Fnv1a64(dst, got, hash_);
    offset_ += got;
    return got == n;
  }

  template <typename T>
  bool ReadValue(T* v) {
    return Read(v, sizeof(T));
  }

  // Consumes `n` bytes.
  bool Skip(uint64_t n) {
    while (n > 0) {
      const size_t chunk = n < sizeof(buf_) ? static_cast<size_t>(n) : sizeof(buf_);
      if (!Read(buf_, chunk)) return false;
      n -= chunk;
    }
    return true;
  }

  // Consumes bytes up to and including the next '\0'.
  bool SkipCString() {
    int c;
    while ((c = std::getc(f_)) != EOF) {
      const unsigned char b = static_cast<unsigned char>(c);
      hash_ = base::Fnv1a64(&b, 1, hash_);
      ++offset_;
      if (b == 0) return true;
    }
    return false;
  }

  // True when no byte is left (consumes one byte otherwise).
  bool AtEnd() {
    unsigned char b;
    return !Read(&b, 1) && !std::ferror(f_);
  }

  bool error() const { return std::ferror(f_) != 0; }
  uint64_t hash() const { return hash_; }
  uint64_t offset() const { return offset_; }

 private:
  std::FILE* f_;
  uint64_t hash_ = base::kFnv1a64Basis;
  uint64_t offset_ = 0;
  char buf_[1 << 16];
};

// What ScanModelFile learnt from model.bin.
struct ModelFileInfo {
  int dim = 0;
  uint64_t hash = 0;  // FNV-1a 64 of the whole file.
  dev_t device = 0;
  ino_t inode = 0;
};

// Walks model.bin's structure (without handing it to fastText, whose
// loader reads past the end of a truncated file, loops forever on some and
// allocates whatever a garbage header says) and hashes it. OK only for an
// unquantised, unpruned skipgram/cbow fastText 0.9 model without labels
// whose matrices have the shapes the header implies and which ends right
// after them; then fastText's loadModel reads only what is there and every
// row index it computes is in range. NOT_FOUND / DATA_LOSS naming `path`.
absl::StatusOr<ModelFileInfo> ScanModelFile(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) {
    return absl::NotFoundError(absl::StrCat("cannot open fastText model ",
                                            path, ": ", std::strerror(errno)));
  }
  struct Closer {
    std::FILE* f;
    ~Closer() { std::fclose(f); }
  } closer{f};
  std::setvbuf(f, nullptr, _IOFBF, 1 << 20);
  ModelFileInfo info;
  struct stat st;
  if (::fstat(::fileno(f), &st) != 0) {
    return absl::InternalError(
        absl::StrCat("fstat ", path, ": ", std::strerror(errno)));
  }
  info.device = st.st_dev;
  info.inode = st.st_ino;

  HashingReader in(f);
  auto bad = [&](absl::string_view what) {
    return absl::DataLossError(absl::StrCat(
        path, ": not a fastText model as content_vectors saves it: ", what,
        " (at byte ", in.offset(), ")"));
  };
  auto truncated = [&](absl::string_view while_reading) {
    if (in.error()) {
      return absl::DataLossError(
          absl::StrCat(path, ": read error at byte ", in.offset()));
    }
    return absl::DataLossError(absl::StrCat(path, ": truncated at byte ",
                                            in.offset(), " while reading ",
                                            while_reading));
  };

  int32_t magic = 0, version = 0;
  if (!in.ReadValue(&magic) || !in.ReadValue(&version)) {
    return truncated("the fastText signature");
  }
  if (magic != kFastTextMagic) return bad("no fastText signature");
  if (version != kFastTextVersion) {
    return bad(absl::StrCat("fastText file version ", version, ", expected ",
                            kFastTextVersion, " (fastText 0.9)"));
  }
  // Args::save: dim ws epoch minCount neg wordNgrams loss model bucket minn
  // maxn lrUpdateRate (int32 each; the enums are int-sized), then t (double).
  int32_t args[12];
  double sampling_threshold;
  if (!in.Read(args, sizeof(args)) || !in.ReadValue(&sampling_threshold)) {
    return truncated("the training arguments");
  }
  const int32_t dim = args[0], loss = args[6], model = args[7],
                bucket = args[8], minn = args[9], maxn = args[10];
  if (dim < 1 || dim > kMaxDim) {
    return bad(absl::StrCat("dim ", dim, " is not in [1, ", kMaxDim, "]"));
  }
  if (model != kModelCbow && model != kModelSkipgram) {
    return bad(absl::StrCat("model type ", model,
                            ", expected 1 (cbow) or 2 (skipgram)"));
  }
  if (loss < 1 || loss > 4) return bad(absl::StrCat("loss type ", loss));
  if (bucket < 0 || minn < 0 || maxn < 0 || (maxn > 0 && bucket == 0)) {
    return bad(absl::StrCat("subword settings bucket=", bucket, " minn=",
                            minn, " maxn=", maxn));
  }
  // Dictionary::save.
  int32_t size = 0, nwords = 0, nlabels = 0;
  int64_t ntokens = 0, pruneidx_size = 0;
  if (!in.ReadValue(&size) || !in.ReadValue(&nwords) ||
      !in.ReadValue(&nlabels) || !in.ReadValue(&ntokens) ||
      !in.ReadValue(&pruneidx_size)) {
    return truncated("the dictionary header");
  }
  // No word at all loads, and then fastText divides by its empty hash
  // table's size on the first word it looks up (SIGFPE).
  if (nwords < 1 || nwords > kMaxVocabulary || nlabels != 0 ||
      size != nwords) {
    return bad(absl::StrCat("dictionary of ", size, " entries, ", nwords,
                            " words and ", nlabels,
                            " labels; expected only words, 1 to ",
                            kMaxVocabulary));
  }
  if (pruneidx_size != -1) return bad("pruned dictionary");
  // fastText's hierarchical softmax builds its tree from the word counts,
  // with 1e15 standing for "no node yet": a count at or above it makes
  // loadModel read and write past the tree (heap corruption), and counts
  // whose sum passes int64 overflow its node counts. A saved dictionary
  // counts every word at least once (minCount).
  int64_t total_count = 0;
  for (int32_t i = 0; i < size; ++i) {
    int64_t count;
    int8_t type;
    if (!in.SkipCString() || !in.ReadValue(&count) || !in.ReadValue(&type)) {
      return truncated(absl::StrCat("dictionary entry ", i, " of ", size));
    }
    if (type != 0) {
      return bad(absl::StrCat("dictionary entry ", i, " has type ", type,
                              ", expected 0 (word)"));
    }
    if (count < 1 || count > kMaxWordCount) {
      return bad(absl::StrCat("dictionary entry ", i, " has count ", count,
                              ", expected 1..", kMaxWordCount));
    }
    if (count > std::numeric_limits<int64_t>::max() - total_count) {
      return bad("dictionary counts sum past 2^63");
    }
    total_count += count;
  }
  // The input matrix (words, then subword buckets) and the output matrix.
  auto matrix = [&](absl::string_view name, int64_t rows) -> absl::Status {
    // fastText writes a bool: byte 0 or 1. Read as a byte, since loading
    // any other value into a bool is undefined, and fastText (which reads
    // it into a bool) must never see one.
    uint8_t quantised = 0;
    int64_t m = 0, n = 0;
    if (!in.ReadValue(&quantised)) return truncated(name);
    if (quantised == 1) return bad(absl::StrCat("quantised ", name));
    if (quantised != 0) {
      return bad(absl::StrCat(name, " has quantisation flag byte ",
                              static_cast<int>(quantised),
                              ", expected 0 or 1"));
    }
    if (!in.ReadValue(&m) || !in.ReadValue(&n)) return truncated(name);
    if (m != rows || n != dim) {
      return bad(absl::StrCat(name, " is ", m, " x ", n, ", expected ", rows,
                              " x ", dim));
    }
    if (!in.Skip(static_cast<uint64_t>(m) * n * sizeof(float))) {
      return truncated(name);
    }
    return absl::OkStatus();
  };
  MIM_RETURN_IF_ERROR(
      matrix("input matrix", static_cast<int64_t>(nwords) + bucket));
  MIM_RETURN_IF_ERROR(matrix("output matrix", nwords));
  if (!in.AtEnd()) {
    if (in.error()) return truncated("the end of the file");
    return bad("bytes after the output matrix");
  }
  info.dim = dim;
  info.hash = in.hash();
  return info;
}

struct Descriptor {
  int dim = 0;
  std::string id;
};

std::string FormatDescriptor(int dim, const std::string& id) {
  return absl::StrCat(kDescriptorMagic, "\nkind=", kKind, "\ndim=", dim,
                      "\nid=", id, "\n");
}

absl::StatusOr<Descriptor> ParseDescriptor(const std::string& path,
                                           absl::string_view text) {
  std::vector<absl::string_view> lines = absl::StrSplit(text, '\n');
  auto bad = [&](int line, absl::string_view what) {
    return absl::DataLossError(absl::StrCat(path, ":", line, ": ", what));
  };
  if (lines.empty() || lines[0] != kDescriptorMagic) {
    return bad(1, absl::StrCat("header is '", lines[0].substr(0, 80),
                               "', expected '", kDescriptorMagic, "'"));
  }
  Descriptor d;
  bool has_kind = false, has_dim = false, has_id = false;
  for (size_t i = 1; i < lines.size(); ++i) {
    const int line = static_cast<int>(i) + 1;
    if (lines[i].empty()) continue;
    const size_t eq = lines[i].find('=');
    if (eq == absl::string_view::npos) {
      return bad(line, absl::StrCat("'", lines[i].substr(0, 80),
                                    "' is not key=value"));
    }
    const absl::string_view key = lines[i].substr(0, eq);
    const absl::string_view value = lines[i].substr(eq + 1);
    bool* seen;
    if (key == "kind") {
      seen = &has_kind;
      if (value != kKind) {
        return bad(line, absl::StrCat("kind '", value, "', expected '", kKind,
                                      "'"));
      }
    } else if (key == "dim") {
      seen = &has_dim;
      if (!absl::SimpleAtoi(value, &d.dim) || d.dim < 1) {
        return bad(line, absl::StrCat("dim '", value,
                                      "' is not a positive integer"));
      }
    } else if (key == "id") {
      seen = &has_id;
      bool hex = value.size() == 16;
      for (char c : value) {
        hex = hex && ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'));
      }
      if (!hex) {
        return bad(line, absl::StrCat("id '", value.substr(0, 80),
                                      "' is not 16 lower-case hex digits"));
      }
      d.id = std::string(value);
    } else {
      return bad(line, absl::StrCat("unknown key '", key.substr(0, 80),
                                    "'; expected kind, dim, id"));
    }
    if (*seen) return bad(line, absl::StrCat("key '", key, "' repeated"));
    *seen = true;
  }
  if (!has_kind || !has_dim || !has_id) {
    return absl::DataLossError(
        absl::StrCat(path, ": missing key ",
                     !has_kind ? "kind" : (!has_dim ? "dim" : "id"),
                     "; expected kind, dim and id"));
  }
  return d;
}

std::string FormatMean(const std::vector<double>& mean) {
  std::string out = absl::StrCat(kMeanMagic, "\tdim=", mean.size(), "\n");
  for (double m : mean) {
    // 17 significant digits: SimpleAtod reads back the same double.
    absl::StrAppend(&out, absl::StrFormat("%.17g", m), "\n");
  }
  return out;
}

absl::StatusOr<std::vector<double>> ParseMean(const std::string& path,
                                              absl::string_view text) {
  std::vector<absl::string_view> lines = absl::StrSplit(text, '\n');
  if (!lines.empty() && lines.back().empty()) lines.pop_back();
  const std::string expected_header =
      absl::StrCat("'", kMeanMagic, "<TAB>dim=<D>'");
  std::vector<absl::string_view> cols;
  if (!lines.empty()) cols = absl::StrSplit(lines[0], '\t');
  int dim = 0;
  if (cols.size() != 2 || cols[0] != kMeanMagic ||
      !absl::ConsumePrefix(&cols[1], "dim=") ||
      !absl::SimpleAtoi(cols[1], &dim) || dim < 1) {
    return absl::DataLossError(absl::StrCat(
        path, ":1: header is '", lines.empty() ? "" : lines[0].substr(0, 80),
        "', expected ", expected_header));
  }
  if (static_cast<int>(lines.size()) - 1 != dim) {
    return absl::DataLossError(absl::StrCat(path, ": ", lines.size() - 1,
                                            " values, header says dim=", dim));
  }
  std::vector<double> mean(dim);
  for (int d = 0; d < dim; ++d) {
    if (!absl::SimpleAtod(lines[d + 1], &mean[d]) || !std::isfinite(mean[d])) {
      return absl::DataLossError(
          absl::StrCat(path, ":", d + 2, ": '", lines[d + 1].substr(0, 80),
                       "' is not a finite number"));
    }
  }
  return mean;
}

absl::Status CheckTrainedModel(const fasttext::FastText* model) {
  if (model == nullptr) {
    return absl::InvalidArgumentError("ContentEncoder: model is null");
  }
  if (model->getDictionary() == nullptr) {
    return absl::InvalidArgumentError(
        "ContentEncoder: the fastText model was never trained or loaded");
  }
  const fasttext::Args args = model->getArgs();
  if (args.model != fasttext::model_name::sg &&
      args.model != fasttext::model_name::cbow) {
    return absl::InvalidArgumentError(
        "ContentEncoder: the fastText model is supervised; expected skipgram "
        "or cbow");
  }
  if (model->isQuant()) {
    return absl::InvalidArgumentError(
        "ContentEncoder: the fastText model is quantised; expected a plain "
        "one");
  }
  return absl::OkStatus();
}

// fastText's sentence vector of `normalized` into `*vec`. False when no word
// had a vector (then `*vec` is zero).
absl::StatusOr<bool> SentenceVector(fasttext::FastText& model,
                                    const std::string& normalized,
                                    fasttext::Vector* vec) {
  try {
    // getSentenceVector reads one line; it wants the newline.
    std::istringstream sentence(normalized + "\n");
    model.getSentenceVector(sentence, *vec);
  } catch (const std::exception& e) {
    return absl::InternalError(
        absl::StrCat("fastText getSentenceVector failed: ", e.what()));
  }
  for (int64_t d = 0; d < vec->size(); ++d) {
    if ((*vec)[d] != 0) return true;
  }
  return false;
}

absl::Status FsyncFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::InternalError(
        absl::StrCat("open ", path, ": ", std::strerror(errno)));
  }
  const bool synced = ::fsync(fd) == 0;
  const int err = errno;
  ::close(fd);
  if (!synced) {
    return absl::InternalError(
        absl::StrCat("fsync ", path, ": ", std::strerror(err)));
  }
  return absl::OkStatus();
}

}  // namespace

std::string NormalizeTextForFastText(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  bool pending_space = false;
  for (char c : text) {
    const unsigned char u = static_cast<unsigned char>(c);
    const bool keep = u >= 0x80 || (u >= '0' && u <= '9') ||
                      (u >= 'a' && u <= 'z') || (u >= 'A' && u <= 'Z');
    if (!keep) {
      pending_space = !out.empty();
      continue;
    }
    if (pending_space) out.push_back(' ');
    pending_space = false;
    out.push_back(u >= 'A' && u <= 'Z' ? static_cast<char>(u - 'A' + 'a') : c);
  }
  return out;
}

ContentEncoder::ContentEncoder(std::unique_ptr<fasttext::FastText> model,
                               std::vector<double> mean, std::string id)
    : model_(std::move(model)),
      dim_(model_->getDimension()),
      mean_(std::move(mean)),
      id_(std::move(id)) {}

ContentEncoder::~ContentEncoder() = default;

absl::StatusOr<std::unique_ptr<ContentEncoder>> ContentEncoder::Load(
    const std::string& dir) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) {
    return absl::NotFoundError(absl::StrCat(
        "content encoder directory ", dir,
        " does not exist; write one with content_vectors --encoder_out"));
  }
  const std::string descriptor_path = JoinPath(dir, kEncoderDescriptorFileName);
  const std::string mean_path = JoinPath(dir, kEncoderMeanFileName);
  const std::string model_path = JoinPath(dir, kEncoderModelFileName);

  std::string text;
  MIM_RETURN_IF_ERROR(base::ReadFileToString(descriptor_path, &text));
  MIM_ASSIGN_OR_RETURN(const Descriptor descriptor,
                       ParseDescriptor(descriptor_path, text));
  std::string mean_text;
  MIM_RETURN_IF_ERROR(base::ReadFileToString(mean_path, &mean_text));
  MIM_ASSIGN_OR_RETURN(std::vector<double> mean,
                       ParseMean(mean_path, mean_text));
  MIM_ASSIGN_OR_RETURN(const ModelFileInfo model_info,
                       ScanModelFile(model_path));

  if (model_info.dim != descriptor.dim ||
      static_cast<int>(mean.size()) != descriptor.dim) {
    return absl::DataLossError(absl::StrCat(
        dir, ": the encoder's files disagree on dim: ",
        kEncoderDescriptorFileName, " says ", descriptor.dim, ", ",
        kEncoderModelFileName, " has ", model_info.dim, ", ",
        kEncoderMeanFileName, " has ", mean.size(),
        "; the three files must come from one save"));
  }
  const std::string id = IdString(
      base::Fnv1a64(mean_text.data(), mean_text.size(), model_info.hash));
  if (id != descriptor.id) {
    return absl::DataLossError(absl::StrCat(
        dir, ": ", kEncoderModelFileName, " and ", kEncoderMeanFileName,
        " hash to id ", id, " but ", kEncoderDescriptorFileName, " says ",
        descriptor.id, "; the files are not the ones saved together (a "
        "partial copy, or a save in progress)"));
  }

  auto model = std::make_unique<fasttext::FastText>();
  try {
    model->loadModel(model_path);
  } catch (const std::exception& e) {
    return absl::DataLossError(absl::StrCat(
        "fastText could not load ", model_path, ": ", e.what()));
  }
  // ScanModelFile hashed one file; fastText opened the path again. Save
  // replaces model.bin by rename, so the same inode means the same bytes.
  struct stat st;
  if (::stat(model_path.c_str(), &st) != 0 || st.st_dev != model_info.device ||
      st.st_ino != model_info.inode) {
    return absl::AbortedError(absl::StrCat(
        model_path, " was replaced while it was loading (a concurrent save "
        "to ", dir, "?); load again"));
  }
  MIM_RETURN_IF_ERROR(CheckTrainedModel(model.get()));
  if (model->getDimension() != descriptor.dim) {
    return absl::DataLossError(absl::StrCat(
        "fastText loaded ", model_path, " with dim ", model->getDimension(),
        ", expected ", descriptor.dim));
  }
  return absl::WrapUnique(
      new ContentEncoder(std::move(model), std::move(mean), id));
}

absl::StatusOr<std::unique_ptr<ContentEncoder>>
ContentEncoder::FromTrainedModel(std::unique_ptr<fasttext::FastText> model,
                                 absl::Span<const std::string> item_texts,
                                 bool center) {
  MIM_RETURN_IF_ERROR(CheckTrainedModel(model.get()));
  const int dim = model->getDimension();
  std::vector<double> mean(dim, 0.0);
  if (center) {
    // Averaged word vectors share a large common direction (frequent words,
    // shared subwords) that makes every pair look alike; subtracting the
    // mean item vector keeps what distinguishes items.
    fasttext::Vector vec(dim);
    int64_t counted = 0;
    for (const std::string& text : item_texts) {
      const std::string normalized = NormalizeTextForFastText(text);
      if (normalized.empty()) continue;
      MIM_ASSIGN_OR_RETURN(const bool has_word,
                           SentenceVector(*model, normalized, &vec));
      if (!has_word) continue;
      for (int d = 0; d < dim; ++d) mean[d] += vec[d];
      ++counted;
    }
    for (double& m : mean) m /= std::max<int64_t>(1, counted);
    for (double m : mean) {
      if (!std::isfinite(m)) {
        return absl::InvalidArgumentError(
            "ContentEncoder: the model's sentence vectors are not finite");
      }
    }
  }
  return absl::WrapUnique(
      new ContentEncoder(std::move(model), std::move(mean), ""));
}

absl::StatusOr<EncodeOutcome> ContentEncoder::EncodeCentred(
    absl::string_view text, std::vector<float>* out) const {
  out->assign(dim_, 0.0f);
  const std::string normalized = NormalizeTextForFastText(text);
  if (normalized.empty()) return EncodeOutcome::kNoKnownWord;
  fasttext::Vector vec(dim_);
  MIM_ASSIGN_OR_RETURN(const bool has_word,
                       SentenceVector(*model_, normalized, &vec));
  if (!has_word) return EncodeOutcome::kNoKnownWord;
  bool nonzero = false;
  for (int d = 0; d < dim_; ++d) {
    // Float minus double, rounded to float: the arithmetic content_vectors
    // has always used, kept so that its files do not change.
    const float c = static_cast<float>(vec[d] - mean_[d]);
    if (!std::isfinite(c)) {
      out->assign(dim_, 0.0f);
      return absl::DataLossError(absl::StrCat(
          "content encoder ", id_.empty() ? "(unsaved)" : id_,
          " produced a non-finite value in dimension ", d,
          "; its model or mean is corrupt"));
    }
    (*out)[d] = c;
    nonzero = nonzero || c != 0;
  }
  if (!nonzero) {
    out->assign(dim_, 0.0f);  // No -0.0f.
    return EncodeOutcome::kZeroVector;
  }
  return EncodeOutcome::kEncoded;
}

absl::StatusOr<EncodeOutcome> ContentEncoder::Encode(
    absl::string_view text, std::vector<float>* out) const {
  MIM_ASSIGN_OR_RETURN(const EncodeOutcome outcome, EncodeCentred(text, out));
  if (outcome != EncodeOutcome::kEncoded) return outcome;
  // The same arithmetic as data::L2Normalize (worker/data/content_vectors),
  // which ContentVectorWriter applies to EncodeCentred's output in
  // content_vectors; serving may not depend on worker/, and
  // content_vectors_test pins that the two agree bit for bit. The values
  // are finite and not all zero, so 0 < norm < inf.
  double sq = 0;
  for (float x : *out) sq += static_cast<double>(x) * x;
  const double norm = std::sqrt(sq);
  for (float& x : *out) x = static_cast<float>(x / norm);
  return outcome;
}

absl::StatusOr<std::string> ContentEncoder::Save(const std::string& dir) const {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("cannot create encoder directory ", dir, ": ",
                     ec.message()));
  }
  // fastText writes a model only to a path of its own opening, so
  // base::WriteFileAtomically (which takes the bytes) does not fit; the
  // same temp-fsync-rename steps are done here.
  const std::string model_path = JoinPath(dir, kEncoderModelFileName);
  const std::string tmp = base::TempPathFor(model_path);
  try {
    model_->saveModel(tmp);
  } catch (const std::exception& e) {
    std::remove(tmp.c_str());
    return absl::InternalError(
        absl::StrCat("fastText could not save ", tmp, ": ", e.what()));
  }
  // saveModel does not check its writes (a full disk leaves a short file):
  // read the file back the way Load will; this also gives its hash.
  absl::StatusOr<ModelFileInfo> info = ScanModelFile(tmp);
  if (info.ok() && info->dim != dim_) {
    info = absl::DataLossError(absl::StrCat("dim ", info->dim, ", expected ", dim_));
  }
  if (!info.ok()) {
    std::remove(tmp.c_str());
    return absl::InternalError(absl::StrCat(
        "fastText wrote an unreadable model to ", tmp, ": ",
        info.status().message()));
  }
  if (absl::Status st = FsyncFile(tmp); !st.ok()) {
    std::remove(tmp.c_str());
    return st;
  }
  if (std::rename(tmp.c_str(), model_path.c_str()) != 0) {
    const int err = errno;
    std::remove(tmp.c_str());
    return absl::InternalError(absl::StrCat("rename ", tmp, " to ", model_path,
                                            ": ", std::strerror(err)));
  }
  // The directory fsyncs of the atomic writes below also persist the rename.
  const std::string mean_text = FormatMean(mean_);
  MIM_RETURN_IF_ERROR(base::WriteFileAtomically(
      JoinPath(dir, kEncoderMeanFileName), mean_text));
  const std::string id =
      IdString(base::Fnv1a64(mean_text.data(), mean_text.size(), info->hash));
  MIM_RETURN_IF_ERROR(base::WriteFileAtomically(
      JoinPath(dir, kEncoderDescriptorFileName), FormatDescriptor(dim_, id)));
  return id;
}

}  // namespace mim::serving
