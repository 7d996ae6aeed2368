#include "tools/content_vectors_lib.h"

#include <algorithm>
#include <cstdio>
#include <exception>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "fasttext/args.h"
#include "fasttext/fasttext.h"
#include "fasttext/vector.h"
#include "worker/data/content_vectors.h"

namespace mim::tools {

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

absl::StatusOr<ContentVectorStats> BuildContentVectors(
    const ContentVectorOptions& o) {
  if (o.dim < 2 || o.epoch < 1 || o.min_count < 1 || o.threads < 1 ||
      (o.model != "skipgram" && o.model != "cbow")) {
    return absl::InvalidArgumentError(
        "content_vectors: need dim >= 2, epoch >= 1, min_count >= 1, "
        "threads >= 1, model skipgram or cbow");
  }
  std::ifstream in(o.item_text);
  if (!in.is_open()) {
    return absl::NotFoundError(absl::StrCat("cannot open item text ", o.item_text));
  }
  // Pass 1: normalised text per item, also the fastText training corpus.
  std::vector<std::pair<int64_t, std::string>> texts;
  absl::flat_hash_set<int64_t> seen;
  std::string line;
  int64_t line_number = 0;
  while (std::getline(in, line)) {
    ++line_number;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || (line_number == 1 && line[0] == '#')) continue;
    const size_t tab = line.find('\t');
    int64_t id;
    if (tab == std::string::npos ||
        !absl::SimpleAtoi(absl::string_view(line.data(), tab), &id) || id < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          o.item_text, ":", line_number,
          ": expected '<item_id><TAB><text>' with a non-negative integer id"));
    }
    if (!seen.insert(id).second) {
      return absl::InvalidArgumentError(absl::StrCat(
          o.item_text, ":", line_number, ": item id ", id, " appears twice"));
    }
    texts.emplace_back(id, NormalizeTextForFastText(
                               absl::string_view(line).substr(tab + 1)));
  }
  if (in.bad()) return absl::DataLossError(absl::StrCat(o.item_text, ": read error"));
  ContentVectorStats stats;
  stats.items = static_cast<int64_t>(texts.size());

  const std::string corpus = o.output + ".corpus.tmp";
  {
    std::ofstream out(corpus);
    for (const auto& [id, text] : texts) {
      if (!text.empty()) out << text << '\n';
    }
    out.flush();
    if (!out) return absl::InternalError(absl::StrCat("cannot write ", corpus));
  }

  fasttext::FastText ft;
  fasttext::Args args;
  args.input = corpus;
  args.model = o.model == "cbow" ? fasttext::model_name::cbow
                                 : fasttext::model_name::sg;
  args.dim = o.dim;
  args.epoch = o.epoch;
  args.minCount = o.min_count;
  args.thread = o.threads;
  args.seed = o.seed;
  args.verbose = 0;
  // fastText reports errors by exception; convert them here, at the edge.
  try {
    ft.train(args);
  } catch (const std::exception& e) {
    std::remove(corpus.c_str());
    return absl::InternalError(
        absl::StrCat("fastText training on ", o.item_text, " failed: ", e.what()));
  }
  std::remove(corpus.c_str());
  stats.vocabulary = ft.getDictionary()->nwords();

  // getSentenceVector averages the L2-normalised word vectors (with
  // subwords) of an unsupervised model; it wants a trailing newline.
  fasttext::Vector vec(o.dim);
  auto sentence_vector = [&](const std::string& text) {
    std::istringstream sentence(text + "\n");
    ft.getSentenceVector(sentence, vec);
  };
  // Averaged word vectors share a large common direction (frequent words,
  // shared subwords) that makes every pair look alike; subtracting the mean
  // item vector before normalising keeps what distinguishes items. Two
  // passes instead of storing all vectors, so memory stays O(dim).
  std::vector<double> mean(o.dim, 0.0);
  int64_t non_empty = 0;
  if (o.center) {
    for (const auto& [id, text] : texts) {
      if (text.empty()) continue;
      sentence_vector(text);
      for (int d = 0; d < o.dim; ++d) mean[d] += vec[d];
      ++non_empty;
    }
    for (double& m : mean) m /= std::max<int64_t>(1, non_empty);
  }
  auto writer = data::ContentVectorWriter::Open(o.output, o.dim, o.modality);
  if (!writer.ok()) return writer.status();
  std::vector<float> values(o.dim);
  for (const auto& [id, text] : texts) {
    if (text.empty()) {
      ++stats.skipped_empty;
      continue;
    }
    sentence_vector(text);
    for (int d = 0; d < o.dim; ++d) {
      values[d] = static_cast<float>(vec[d] - mean[d]);
    }
    absl::Status st = (*writer)->Write(id, values);
    if (absl::IsInvalidArgument(st)) {  // Zero vector (e.g. the only item).
      ++stats.skipped_empty;
      continue;
    }
    if (!st.ok()) return st;
    ++stats.written;
  }
  if (absl::Status st = (*writer)->Close(); !st.ok()) return st;
  return stats;
}

}  // namespace mim::tools
