#include "tools/content_vectors_lib.h"

#include <cstdio>
#include <exception>
#include <fstream>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "base/atomic_file.h"
#include "fasttext/args.h"
#include "fasttext/fasttext.h"
#include "serving/content_encoder.h"
#include "worker/data/content_vectors.h"
#include "worker/data/text_lines.h"

namespace mim::tools {

absl::StatusOr<ContentVectorStats> BuildContentVectors(
    const ContentVectorOptions& o) {
  if (o.dim < 2 || o.epoch < 1 || o.min_count < 1 || o.threads < 1 ||
      (o.model != "skipgram" && o.model != "cbow")) {
    return absl::InvalidArgumentError(
        "content_vectors: need dim >= 2, epoch >= 1, min_count >= 1, "
        "threads >= 1, model skipgram or cbow");
  }
  // The output is opened (as a temp file; Close puts it in place) before
  // anything is trained or saved: a bad --modality or --dim fails here,
  // not after the encoder was replaced.
  auto writer = data::ContentVectorWriter::Open(o.output, o.dim, o.modality);
  if (!writer.ok()) return writer.status();
  std::ifstream in(o.item_text);
  if (!in.is_open()) {
    return absl::NotFoundError(absl::StrCat("cannot open item text ", o.item_text));
  }
  // Normalised text per item, also the fastText training corpus.
  std::vector<int64_t> ids;
  std::vector<std::string> texts;
  absl::flat_hash_set<int64_t> seen;
  std::string line;
  int64_t line_number = 0;
  for (;;) {
    const data::LineRead read = data::ReadLine(in, &line);
    if (read == data::LineRead::kEnd) break;
    ++line_number;
    if (read == data::LineRead::kTooLong) {
      return absl::InvalidArgumentError(absl::StrCat(
          o.item_text, ":", line_number, ": ", data::LineTooLong()));
    }
    if (in.eof() && !line.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          o.item_text, ":", line_number, ": ", data::UnterminatedLine()));
    }
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
    ids.push_back(id);
    texts.push_back(serving::NormalizeTextForFastText(
        absl::string_view(line).substr(tab + 1)));
  }
  if (in.bad()) return absl::DataLossError(absl::StrCat(o.item_text, ": read error"));
  ContentVectorStats stats;
  stats.items = static_cast<int64_t>(texts.size());

  // This run's own (two runs writing one output each train on theirs).
  const std::string corpus = base::TempPathFor(o.output + ".corpus");
  {
    std::ofstream out(corpus);
    for (const std::string& text : texts) {
      if (!text.empty()) out << text << '\n';
    }
    out.flush();
    if (!out) return absl::InternalError(absl::StrCat("cannot write ", corpus));
  }

  auto ft = std::make_unique<fasttext::FastText>();
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
    ft->train(args);
  } catch (const std::exception& e) {
    std::remove(corpus.c_str());
    return absl::InternalError(
        absl::StrCat("fastText training on ", o.item_text, " failed: ", e.what()));
  }
  std::remove(corpus.c_str());
  stats.vocabulary = ft->getDictionary()->nwords();

  // The encoder computes the centring mean over the item texts (one pass,
  // so memory stays O(dim)) and every item's vector, exactly as the serving
  // tier will for new items.
  auto encoder =
      serving::ContentEncoder::FromTrainedModel(std::move(ft), texts, o.center);
  if (!encoder.ok()) return encoder.status();
  // EncodeCentred, not Encode: the writer L2-normalises with the same
  // arithmetic as Encode's last step, and normalising twice could move a
  // last bit.
  std::vector<float> values;
  for (size_t i = 0; i < texts.size(); ++i) {
    absl::StatusOr<serving::EncodeOutcome> outcome =
        (*encoder)->EncodeCentred(texts[i], &values);
    if (!outcome.ok()) return outcome.status();
    if (*outcome != serving::EncodeOutcome::kEncoded) {
      ++stats.skipped_empty;  // No word, or zero (e.g. the only item).
      continue;
    }
    if (absl::Status st = (*writer)->Write(ids[i], values); !st.ok()) return st;
    ++stats.written;
  }
  // The encoder is saved once every vector is written and flushed, and the
  // vectors are put in place (a rename) after it: a failure before leaves
  // the old pair as it was.
  if (absl::Status st = (*writer)->Finish(); !st.ok()) return st;
  if (!o.encoder_out.empty()) {
    absl::StatusOr<std::string> id = (*encoder)->Save(o.encoder_out);
    if (!id.ok()) return id.status();
    stats.encoder_id = *id;
  }
  if (absl::Status st = (*writer)->Commit(); !st.ok()) return st;
  return stats;
}

}  // namespace mim::tools
