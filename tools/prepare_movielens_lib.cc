#include "tools/prepare_movielens_lib.h"

#include <algorithm>
#include <cmath>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <tuple>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/types/span.h"
#include "base/status_macros.h"
#include "worker/data/sample.h"
#include "worker/data/sample_io.h"
#include "worker/data/text_lines.h"

namespace mim::tools {
namespace {

using ::mim::data::Sample;
using ::mim::data::SampleWriter;

// Fixed vocabularies so ids are stable when more rows arrive; 0 = unknown.
constexpr const char* kOccupations[] = {
    "administrator", "artist",     "doctor",     "educator",  "engineer",
    "entertainment", "executive",  "healthcare", "homemaker", "lawyer",
    "librarian",     "marketing",  "none",       "other",     "programmer",
    "retired",       "salesman",   "scientist",  "student",   "technician",
    "writer"};
constexpr const char* kGenres[] = {
    "unknown", "Action",   "Adventure", "Animation", "Children's",
    "Comedy",  "Crime",    "Documentary", "Drama",   "Fantasy",
    "Film-Noir", "Horror", "Musical",   "Mystery",   "Romance",
    "Sci-Fi",  "Thriller", "War",       "Western"};

int32_t VocabId(absl::string_view word, absl::Span<const char* const> vocab) {
  for (size_t i = 0; i < vocab.size(); ++i) {
    if (absl::EqualsIgnoreCase(word, vocab[i])) return static_cast<int32_t>(i) + 1;
  }
  return 0;
}

// Streams a RecBole atomic file: header "name:type<TAB>...", then rows.
class AtomicFile {
 public:
  static absl::StatusOr<AtomicFile> Open(const std::string& path,
                                         std::vector<std::string> needed) {
    AtomicFile f;
    f.path_ = path;
    f.in_.open(path);
    if (!f.in_.is_open()) {
      return absl::NotFoundError(absl::StrCat("cannot open ", path));
    }
    std::string header;
    if (data::ReadLine(f.in_, &header) == data::LineRead::kTooLong) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ":1: ", data::LineTooLong()));
    }
    if (!header.empty() && header.back() == '\r') header.pop_back();
    std::vector<std::string> names;
    for (absl::string_view col : absl::StrSplit(header, '\t')) {
      names.push_back(std::string(col.substr(0, col.find(':'))));
    }
    for (const std::string& want : needed) {
      auto it = std::find(names.begin(), names.end(), want);
      if (it == names.end()) {
        return absl::InvalidArgumentError(absl::StrCat(
            path, ":1: header '", header, "' has no column '", want, "'"));
      }
      f.index_.push_back(static_cast<int>(it - names.begin()));
    }
    f.num_cols_ = static_cast<int>(names.size());
    f.names_ = std::move(needed);
    return f;
  }

  // Reads the next non-empty row; false at end of file.
  absl::StatusOr<bool> Next() {
    for (;;) {
      const data::LineRead read = data::ReadLine(in_, &line_);
      if (read == data::LineRead::kEnd) break;
      ++line_number_;
      if (read == data::LineRead::kTooLong) return Error(data::LineTooLong());
      if (!line_.empty() && line_.back() == '\r') line_.pop_back();
      if (line_.empty()) continue;
      cols_ = absl::StrSplit(line_, '\t');
      if (static_cast<int>(cols_.size()) != num_cols_) {
        return Error(absl::StrCat("got ", cols_.size(), " columns, expected ",
                                  num_cols_));
      }
      return true;
    }
    if (in_.bad()) return absl::DataLossError(absl::StrCat(path_, ": read error"));
    return false;
  }

  // i-th needed column of the current row.
  absl::string_view Col(int i) const { return cols_[index_[i]]; }

  absl::Status Int(int i, int64_t* out) const {
    double d;
    // Ratings and timestamps are declared ":float" by RecBole.
    if (absl::SimpleAtoi(Col(i), out)) return absl::OkStatus();
    if (absl::SimpleAtod(Col(i), &d) && std::isfinite(d) &&
        d == std::floor(d) && std::fabs(d) < 9e15) {
      *out = static_cast<int64_t>(d);
      return absl::OkStatus();
    }
    return Error(absl::StrCat("column '", names_[i], "': got '", Col(i),
                              "', expected an integer"));
  }

  absl::Status Error(absl::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrCat(path_, ":", line_number_, ": ", what));
  }

 private:
  std::string path_;
  std::ifstream in_;
  std::string line_;
  std::vector<absl::string_view> cols_;
  std::vector<int> index_;
  std::vector<std::string> names_;
  int num_cols_ = 0;
  int64_t line_number_ = 1;
};

struct UserInfo {
  int32_t age_bucket = 0, gender = 0, occupation = 0;
};

struct ItemInfo {
  std::string title, year, genre_names;
  std::vector<int32_t> genres;
};

struct Interaction {
  int64_t ts, user, item;
  int32_t label;
};

std::string Clean(absl::string_view text) {
  // Tabs and newlines would break the one-row-per-item text format.
  std::string s = absl::StrReplaceAll(text, {{"\t", " "}, {"\r", " "}, {"\n", " "}});
  return std::string(absl::StripAsciiWhitespace(s));
}

std::string StripParenthetical(absl::string_view title) {
  // "Seven (Se7en)" -> "Seven"; only a trailing group.
  title = absl::StripAsciiWhitespace(title);
  if (absl::EndsWith(title, ")")) {
    size_t open = title.rfind(" (");
    if (open != absl::string_view::npos && open > 0) return std::string(title.substr(0, open));
  }
  return std::string(title);
}

}  // namespace

std::string NormalizeTitle(absl::string_view title) {
  std::string t = absl::AsciiStrToLower(absl::StripAsciiWhitespace(title));
  for (const char* article : {"the", "a", "an"}) {
    const std::string suffix = absl::StrCat(", ", article);
    if (absl::EndsWith(t, suffix)) {
      t = absl::StrCat(article, " ", t.substr(0, t.size() - suffix.size()));
      break;
    }
  }
  return t;
}

int32_t AgeBucket(int64_t age) {
  if (age < 1) return 0;
  if (age < 18) return 1;
  if (age < 25) return 2;
  if (age < 35) return 3;
  if (age < 45) return 4;
  if (age < 50) return 5;
  if (age < 56) return 6;
  return 7;
}

absl::StatusOr<MovieLensPrepStats> PrepareMovieLens(
    const MovieLensPrepOptions& options) {
  const std::string base = absl::StrCat(options.input_dir, "/", options.prefix);
  MovieLensPrepStats stats;

  // Users.
  absl::flat_hash_map<int64_t, UserInfo> users;
  {
    auto f = AtomicFile::Open(base + ".user",
                              {"user_id", "age", "gender", "occupation"});
    if (!f.ok()) return f.status();
    while (true) {
      absl::StatusOr<bool> more = f->Next();
      if (!more.ok()) return more.status();
      if (!*more) break;
      int64_t id, age;
      absl::Status st = f->Int(0, &id);
      if (st.ok()) st = f->Int(1, &age);
      if (!st.ok()) return st;
      UserInfo u;
      u.age_bucket = AgeBucket(age);
      absl::string_view g = f->Col(2);
      u.gender = g == "M" ? 1 : g == "F" ? 2 : 0;
      u.occupation = VocabId(f->Col(3), kOccupations);
      users[id] = u;
    }
  }

  // Items, in file order (kept for the item text file).
  absl::flat_hash_map<int64_t, ItemInfo> items;
  std::vector<int64_t> item_order;
  {
    auto f = AtomicFile::Open(base + ".item",
                              {"item_id", "movie_title", "release_year", "class"});
    if (!f.ok()) return f.status();
    while (true) {
      absl::StatusOr<bool> more = f->Next();
      if (!more.ok()) return more.status();
      if (!*more) break;
      int64_t id;
      if (absl::Status st = f->Int(0, &id); !st.ok()) return st;
      ItemInfo info;
      info.title = Clean(f->Col(1));
      info.year = Clean(f->Col(2));
      info.genre_names = Clean(f->Col(3));
      for (absl::string_view g :
           absl::StrSplit(f->Col(3), ' ', absl::SkipEmpty())) {
        int32_t gid = VocabId(g, kGenres);
        if (gid > 0) info.genres.push_back(gid);
      }
      std::sort(info.genres.begin(), info.genres.end());
      info.genres.erase(std::unique(info.genres.begin(), info.genres.end()),
                        info.genres.end());
      if (items.emplace(id, std::move(info)).second) item_order.push_back(id);
    }
    stats.catalogue_items = static_cast<int64_t>(item_order.size());
  }

  // Interactions. These fit in memory for MovieLens-sized inputs (24 bytes
  // each); the global sort needs them all.
  std::vector<Interaction> inters;
  {
    auto f = AtomicFile::Open(base + ".inter",
                              {"user_id", "item_id", "rating", "timestamp"});
    if (!f.ok()) return f.status();
    while (true) {
      absl::StatusOr<bool> more = f->Next();
      if (!more.ok()) return more.status();
      if (!*more) break;
      Interaction x;
      double rating;
      absl::Status st = f->Int(0, &x.user);
      if (st.ok()) st = f->Int(1, &x.item);
      if (st.ok()) st = f->Int(3, &x.ts);
      if (!st.ok()) return st;
      if (!absl::SimpleAtod(f->Col(2), &rating) || !std::isfinite(rating)) {
        return f->Error(absl::StrCat("column 'rating': got '", f->Col(2),
                                     "', expected a number"));
      }
      if (x.user < 0 || x.item < 0 || x.ts < 0) {
        return f->Error("user_id, item_id and timestamp must be >= 0");
      }
      x.label = rating >= 4 ? 1 : 0;
      inters.push_back(x);
    }
  }
  std::sort(inters.begin(), inters.end(),
            [](const Interaction& a, const Interaction& b) {
              return std::tie(a.ts, a.user, a.item) <
                     std::tie(b.ts, b.user, b.item);
            });

  // Read before anything is written, so that a bad plot file leaves the
  // outputs of an earlier run as they were.
  // Plots, joined on (normalised title, year); see NormalizeTitle. Key 1 is
  // the whole title; key 2 drops a trailing "(...)" alternative title on the
  // MovieLens side. Duplicates in the plot file: the first wins.
  absl::flat_hash_map<std::string, std::string> plots;
  {
    const std::string path = options.input_dir + "/movies_extrainfos.dat";
    std::ifstream in(path);
    std::error_code ec;
    if (!in.is_open() && std::filesystem::exists(path, ec)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "cannot open ", path, " (it exists; without it, items get no plot)"));
    }
    std::string line;
    int64_t line_number = 0;
    data::LineRead read = data::LineRead::kEnd;
    while (in.is_open() &&
           (read = data::ReadLine(in, &line)) != data::LineRead::kEnd) {
      ++line_number;
      if (read == data::LineRead::kTooLong) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ":", line_number, ": ", data::LineTooLong()));
      }
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.empty()) continue;
      std::vector<absl::string_view> f = absl::StrSplit(line, "::");
      if (f.size() < 10) {
        return absl::InvalidArgumentError(absl::StrCat(
            options.input_dir, "/movies_extrainfos.dat:", line_number, ": got ",
            f.size(), " '::'-separated fields, expected at least 10"));
      }
      const std::string key =
          absl::StrCat(NormalizeTitle(f[1]), "|", absl::StripAsciiWhitespace(f[2]));
      plots.emplace(key, Clean(f[9]));
    }
  }
  auto train = SampleWriter::Open(options.output_dir + "/train.tsv");
  if (!train.ok()) return train.status();
  auto test = SampleWriter::Open(options.output_dir + "/test.tsv");
  if (!test.ok()) return test.status();

  // Per user, the last kMaxBehaviorLength positives committed so far. A
  // group of interactions sharing one timestamp is emitted before any of its
  // positives are committed, so same-second items never see each other.
  absl::flat_hash_map<int64_t, std::deque<int64_t>> history;
  absl::flat_hash_set<int64_t> train_items, test_items, all_items, all_users;
  std::vector<int64_t> cold_candidates;
  Sample s;
  for (size_t begin = 0; begin < inters.size();) {
    size_t end = begin;
    while (end < inters.size() && inters[end].ts == inters[begin].ts) ++end;
    for (size_t i = begin; i < end; ++i) {
      const Interaction& x = inters[i];
      s.timestamp = x.ts;
      s.user_id = x.user;
      s.item_id = x.item;
      s.label = x.label;
      auto u = users.find(x.user);
      const UserInfo ui = u == users.end() ? UserInfo{} : u->second;
      s.age_bucket = ui.age_bucket;
      s.gender = ui.gender;
      s.occupation = ui.occupation;
      auto it = items.find(x.item);
      s.genres = it == items.end() ? std::vector<int32_t>{} : it->second.genres;
      const auto h = history.find(x.user);
      s.behavior.clear();
      if (h != history.end()) s.behavior.assign(h->second.begin(), h->second.end());
      const bool is_test = x.ts >= options.test_start;
      absl::Status st = (is_test ? *test : *train)->Write(s);
      if (!st.ok()) return st;
      (is_test ? test_items : train_items).insert(x.item);
      all_items.insert(x.item);
      all_users.insert(x.user);
      ++stats.samples;
      stats.positives += x.label;
      if (is_test) {
        ++stats.test_samples;
        cold_candidates.push_back(x.item);
      } else {
        ++stats.train_samples;
      }
    }
    for (size_t i = begin; i < end; ++i) {
      if (inters[i].label != 1) continue;
      std::deque<int64_t>& q = history[inters[i].user];
      q.push_back(inters[i].item);
      if (q.size() > static_cast<size_t>(data::kMaxBehaviorLength)) q.pop_front();
    }
    begin = end;
  }
  // Finished here, put in place with item_text.tsv at the end.
  if (absl::Status st = (*train)->Finish(); !st.ok()) return st;
  if (absl::Status st = (*test)->Finish(); !st.ok()) return st;
  stats.users = static_cast<int64_t>(all_users.size());
  stats.items = static_cast<int64_t>(all_items.size());
  stats.test_items = static_cast<int64_t>(test_items.size());
  for (int64_t item : test_items) {
    if (!train_items.contains(item)) ++stats.cold_test_items;
  }
  for (int64_t item : cold_candidates) {
    if (!train_items.contains(item)) ++stats.cold_test_samples;
  }

  {
    data::TempFile text(options.output_dir + "/item_text.tsv", "item text");
    MIM_RETURN_IF_ERROR(text.Opened());
    std::ofstream& out = text.out();
    out << "#mim-item-text v1\titem\ttitle\tyear\tgenres\tplot\n";
    for (int64_t id : item_order) {
      const ItemInfo& info = items[id];
      std::string plot;
      auto p = plots.find(absl::StrCat(NormalizeTitle(info.title), "|", info.year));
      if (p != plots.end()) {
        ++stats.plot_matches_exact;
      } else {
        p = plots.find(absl::StrCat(NormalizeTitle(StripParenthetical(info.title)),
                                    "|", info.year));
      }
      if (p != plots.end()) {
        plot = p->second;
        ++stats.plot_matches;
      }
      out << id << '\t' << info.title << '\t' << info.year << '\t'
          << info.genre_names << '\t' << plot << '\n';
    }
    MIM_RETURN_IF_ERROR(text.Finish());
    // Every output is whole: put them in place together.
    MIM_RETURN_IF_ERROR((*train)->Commit());
    MIM_RETURN_IF_ERROR((*test)->Commit());
    MIM_RETURN_IF_ERROR(text.Commit());
  }
  return stats;
}

}  // namespace mim::tools
