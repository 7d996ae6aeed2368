#include "serving/content_encoder.h"

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/atomic_file.h"
#include "fasttext/args.h"
#include "fasttext/fasttext.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace mim::serving {
namespace {

using ::testing::HasSubstr;

std::string TempPath(const std::string& name) {
  return std::string(std::getenv("TEST_TMPDIR")) + "/" + name;
}

std::string ReadFile(const std::string& path) {
  std::string s;
  EXPECT_TRUE(base::ReadFileToString(path, &s).ok()) << path;
  return s;
}

void WriteFile(const std::string& path, const std::string& contents) {
  ASSERT_TRUE(base::WriteFileAtomically(path, contents).ok()) << path;
}

// The id as docs/DATA_FORMAT.md defines it, computed independently.
std::string Fnv1a64Hex(const std::string& bytes) {
  uint64_t h = 14695981039346656037ull;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return absl::StrFormat("%016x", h);
}

// Fixed synthetic item texts: two topics plus filler, some punctuation and
// capitals (so normalisation matters), one text with no word at all.
std::vector<std::string> ItemTexts() {
  const std::vector<std::string> space = {"space", "alien", "rocket",
                                          "galaxy", "planet", "robot"};
  const std::vector<std::string> love = {"love", "wedding", "romance",
                                         "kiss", "heart", "bride"};
  const std::vector<std::string> filler = {"The", "a", "story", "of", "city"};
  std::mt19937 rng(7);
  std::vector<std::string> texts;
  for (int i = 0; i < 50; ++i) {
    const auto& pool = i % 2 == 0 ? space : love;
    std::string t = absl::StrCat("Item-", i, "\t");
    for (int w = 0; w < 8; ++w) {
      absl::StrAppend(&t, rng() % 3 == 0 ? filler[rng() % filler.size()]
                                         : pool[rng() % pool.size()],
                      w % 3 == 2 ? ", " : " ");
    }
    texts.push_back(t);
  }
  texts.push_back("...!");
  return texts;
}

// Trains a small deterministic model (a 1000-row bucket keeps the file
// small; content_vectors uses fastText's default).
std::unique_ptr<fasttext::FastText> TrainModel(const std::string& name,
                                               int maxn = 6) {
  const std::string corpus = TempPath(name + ".corpus");
  {
    std::ofstream out(corpus);
    for (const std::string& t : ItemTexts()) {
      const std::string n = NormalizeTextForFastText(t);
      if (!n.empty()) out << n << '\n';
    }
  }
  fasttext::Args args;
  args.input = corpus;
  args.model = fasttext::model_name::sg;
  args.dim = 8;
  args.epoch = 5;
  args.minCount = 1;
  args.thread = 1;
  args.seed = 3;
  args.bucket = maxn > 0 ? 1000 : 0;
  args.minn = maxn > 0 ? 3 : 0;
  args.maxn = maxn;
  args.verbose = 0;
  auto model = std::make_unique<fasttext::FastText>();
  model->train(args);
  return model;
}

void ExpectBitEqual(const std::vector<float>& a, const std::vector<float>& b,
                    const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (size_t d = 0; d < a.size(); ++d) {
    EXPECT_EQ(a[d], b[d]) << what << " dim " << d;
  }
}

// One trained and saved encoder shared by the tests; each test that damages
// files works on its own copy of the directory.
class ContentEncoderTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(TempPath("encoder"));
    auto encoder =
        ContentEncoder::FromTrainedModel(TrainModel("main"), ItemTexts(), true);
    ASSERT_TRUE(encoder.ok()) << encoder.status();
    auto id = (*encoder)->Save(*dir_);
    ASSERT_TRUE(id.ok()) << id.status();
    saved_id_ = new std::string(*id);
    trained_ = encoder->release();
  }
  static void TearDownTestSuite() {
    delete trained_;
    delete dir_;
    delete saved_id_;
  }

  // A copy of the saved directory to damage.
  static std::string CopyDir(const std::string& name) {
    const std::string copy = TempPath(name);
    std::filesystem::remove_all(copy);
    std::filesystem::copy(*dir_, copy);
    return copy;
  }

  static ContentEncoder* trained_;
  static std::string* dir_;
  static std::string* saved_id_;
};

ContentEncoder* ContentEncoderTest::trained_ = nullptr;
std::string* ContentEncoderTest::dir_ = nullptr;
std::string* ContentEncoderTest::saved_id_ = nullptr;

TEST(NormalizeTextForFastText, Normalisation) {
  EXPECT_EQ(NormalizeTextForFastText("  Children's Sci-Fi\t1995 "),
            "children s sci fi 1995");
  EXPECT_EQ(NormalizeTextForFastText("Amélie!"), "amélie");
  EXPECT_EQ(NormalizeTextForFastText("..."), "");
  const std::string once = NormalizeTextForFastText("A--b  C\td");
  EXPECT_EQ(once, "a b c d");
  EXPECT_EQ(NormalizeTextForFastText(once), once);
}

TEST_F(ContentEncoderTest, SaveWritesTheDocumentedFiles) {
  EXPECT_EQ(trained_->id(), "");  // FromTrainedModel: unsaved.
  const std::string bin = ReadFile(*dir_ + "/model.bin");
  const std::string mean = ReadFile(*dir_ + "/mean.txt");
  EXPECT_EQ(*saved_id_, Fnv1a64Hex(bin + mean));
  EXPECT_EQ(ReadFile(*dir_ + "/encoder.txt"),
            absl::StrCat("#mim-content-encoder v1\nkind=fasttext\ndim=8\nid=",
                         *saved_id_, "\n"));
  EXPECT_EQ(mean.substr(0, mean.find('\n')), "#mim-encoder-mean v1\tdim=8");
  EXPECT_FALSE(
      std::filesystem::exists(base::TempPathFor(*dir_ + "/model.bin")));
}

TEST_F(ContentEncoderTest, LoadedEncoderEqualsTrainedOneBitForBit) {
  auto loaded = ContentEncoder::Load(*dir_);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ((*loaded)->dim(), 8);
  EXPECT_EQ((*loaded)->id(), *saved_id_);
  ASSERT_EQ((*loaded)->mean().size(), 8u);
  for (int d = 0; d < 8; ++d) {
    EXPECT_EQ((*loaded)->mean()[d], trained_->mean()[d]) << d;  // %.17g
  }
  int encoded = 0;
  for (const std::string& text : ItemTexts()) {
    std::vector<float> a, b;
    auto oa = trained_->Encode(text, &a);
    auto ob = (*loaded)->Encode(text, &b);
    ASSERT_TRUE(oa.ok() && ob.ok()) << oa.status() << ob.status();
    EXPECT_EQ(*oa, *ob) << text;
    ExpectBitEqual(a, b, text);
    if (*oa == EncodeOutcome::kEncoded) {
      ++encoded;
      double norm = 0;
      for (float x : a) norm += static_cast<double>(x) * x;
      EXPECT_NEAR(norm, 1.0, 1e-6) << text;
    }
  }
  EXPECT_EQ(encoded, 50);

  // Saving the loaded encoder again gives the same bytes, hence the same id.
  auto resaved = (*loaded)->Save(TempPath("resaved"));
  ASSERT_TRUE(resaved.ok()) << resaved.status();
  EXPECT_EQ(*resaved, *saved_id_);
  EXPECT_EQ(ReadFile(TempPath("resaved") + "/model.bin"),
            ReadFile(*dir_ + "/model.bin"));
}

TEST_F(ContentEncoderTest, EncodeIsNormalisedCentredSentenceVector) {
  // Independently: fastText's sentence vector minus the mean, normalised.
  const std::string text = "Rocket, GALAXY & planet!";
  auto model = std::make_unique<fasttext::FastText>();
  model->loadModel(*dir_ + "/model.bin");
  fasttext::Vector vec(8);
  std::istringstream in("rocket galaxy planet\n");
  model->getSentenceVector(in, vec);
  std::vector<float> expected(8);
  double sq = 0;
  for (int d = 0; d < 8; ++d) {
    expected[d] = static_cast<float>(vec[d] - trained_->mean()[d]);
    sq += static_cast<double>(expected[d]) * expected[d];
  }
  for (float& x : expected) x = static_cast<float>(x / std::sqrt(sq));
  std::vector<float> got;
  auto outcome = trained_->Encode(text, &got);
  ASSERT_TRUE(outcome.ok()) << outcome.status();
  EXPECT_EQ(*outcome, EncodeOutcome::kEncoded);
  ExpectBitEqual(got, expected, text);

  // EncodeCentred is Encode before the normalisation.
  std::vector<float> centred;
  outcome = trained_->EncodeCentred(text, &centred);
  ASSERT_TRUE(outcome.ok()) << outcome.status();
  EXPECT_EQ(*outcome, EncodeOutcome::kEncoded);
  for (int d = 0; d < 8; ++d) {
    EXPECT_EQ(centred[d], static_cast<float>(vec[d] - trained_->mean()[d]));
  }
}

TEST_F(ContentEncoderTest, MeanIsTheAverageItemSentenceVector) {
  // The centred vectors of the training items sum to (about) zero.
  std::vector<double> sum(8, 0.0);
  for (const std::string& text : ItemTexts()) {
    std::vector<float> c;
    auto outcome = trained_->EncodeCentred(text, &c);
    ASSERT_TRUE(outcome.ok()) << outcome.status();
    for (int d = 0; d < 8; ++d) sum[d] += c[d];
  }
  for (int d = 0; d < 8; ++d) EXPECT_NEAR(sum[d], 0.0, 1e-5) << d;

  auto uncentred = ContentEncoder::FromTrainedModel(TrainModel("uncentred"),
                                                    ItemTexts(), false);
  ASSERT_TRUE(uncentred.ok()) << uncentred.status();
  EXPECT_EQ((*uncentred)->mean(), std::vector<double>(8, 0.0));
}

TEST_F(ContentEncoderTest, TextsWithoutAVectorGiveZeros) {
  std::vector<float> out = {1, 2, 3};
  auto outcome = trained_->Encode(" ...!? ", &out);
  ASSERT_TRUE(outcome.ok()) << outcome.status();
  EXPECT_EQ(*outcome, EncodeOutcome::kNoKnownWord);
  EXPECT_EQ(out, std::vector<float>(8, 0.0f));

  // With subwords an unseen word still has a vector.
  outcome = trained_->Encode("spaceships", &out);
  ASSERT_TRUE(outcome.ok()) << outcome.status();
  EXPECT_EQ(*outcome, EncodeOutcome::kEncoded);

  // Without subwords it has none.
  auto no_subwords = ContentEncoder::FromTrainedModel(
      TrainModel("no_subwords", /*maxn=*/0), ItemTexts(), true);
  ASSERT_TRUE(no_subwords.ok()) << no_subwords.status();
  outcome = (*no_subwords)->Encode("spaceships zzz", &out);
  ASSERT_TRUE(outcome.ok()) << outcome.status();
  EXPECT_EQ(*outcome, EncodeOutcome::kNoKnownWord);
  EXPECT_EQ(out, std::vector<float>(8, 0.0f));

  // The only training item is the mean: its centred vector is zero.
  auto single = ContentEncoder::FromTrainedModel(
      TrainModel("single"), {std::string("Rocket galaxy")}, true);
  ASSERT_TRUE(single.ok()) << single.status();
  outcome = (*single)->Encode("rocket, galaxy", &out);
  ASSERT_TRUE(outcome.ok()) << outcome.status();
  EXPECT_EQ(*outcome, EncodeOutcome::kZeroVector);
  EXPECT_EQ(out, std::vector<float>(8, 0.0f));
}

TEST_F(ContentEncoderTest, ConcurrentEncodesMatchSerialOnes) {
  auto loaded = ContentEncoder::Load(*dir_);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const ContentEncoder& encoder = **loaded;
  const std::vector<std::string> texts = ItemTexts();
  std::vector<std::vector<float>> serial(texts.size());
  for (size_t i = 0; i < texts.size(); ++i) {
    ASSERT_TRUE(encoder.Encode(texts[i], &serial[i]).ok());
  }
  constexpr int kThreads = 8;
  std::vector<int> mismatches(kThreads, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::vector<float> v;
      for (int round = 0; round < 20; ++round) {
        for (size_t i = 0; i < texts.size(); ++i) {
          const size_t k = (i + t * 7) % texts.size();
          if (!encoder.Encode(texts[k], &v).ok() || v != serial[k]) {
            ++mismatches[t];
          }
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches, std::vector<int>(kThreads, 0));
}

TEST_F(ContentEncoderTest, MissingDirectoryOrFile) {
  const std::string missing = TempPath("no_such_encoder");
  auto loaded = ContentEncoder::Load(missing);
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(loaded.status().message()),
              HasSubstr("content encoder directory " + missing +
                        " does not exist"));

  struct Case {
    std::string file;
    std::string message_prefix;  // Before "<dir>/<file>".
  };
  for (const Case& c : {Case{"encoder.txt", "cannot open "},
                        Case{"mean.txt", "cannot open "},
                        Case{"model.bin", "cannot open fastText model "}}) {
    const std::string dir = CopyDir("missing_" + c.file);
    std::filesystem::remove(dir + "/" + c.file);
    loaded = ContentEncoder::Load(dir);
    EXPECT_EQ(loaded.status().code(), absl::StatusCode::kNotFound) << c.file;
    EXPECT_THAT(std::string(loaded.status().message()),
                HasSubstr(c.message_prefix + dir + "/" + c.file + ": "));
  }
}

TEST_F(ContentEncoderTest, TruncatedModel) {
  const std::string dir = CopyDir("truncated");
  const std::string bin = ReadFile(dir + "/model.bin");
  for (size_t keep : {size_t{0}, size_t{6}, size_t{40}, size_t{100},
                      bin.size() / 2, bin.size() - 1}) {
    WriteFile(dir + "/model.bin", bin.substr(0, keep));
    auto loaded = ContentEncoder::Load(dir);
    EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss) << keep;
    EXPECT_THAT(std::string(loaded.status().message()),
                HasSubstr(absl::StrCat(dir, "/model.bin: truncated at byte ",
                                       keep, " while reading ")))
        << keep;
  }
}

TEST_F(ContentEncoderTest, GarbageModel) {
  const std::string dir = CopyDir("garbage");
  const std::string bin = ReadFile(dir + "/model.bin");
  struct Case {
    std::string bytes;
    std::string message;
  };
  std::string wrong_version = bin;
  wrong_version[4] = 11;
  std::string supervised = bin;
  supervised[8 + 7 * 4] = 3;  // Args: the 8th int32 is the model type.
  const std::vector<Case> cases = {
      {std::string(4096, 'x'), "no fastText signature (at byte 8)"},
      {wrong_version, "fastText file version 11, expected 12"},
      {supervised, "model type 3, expected 1 (cbow) or 2 (skipgram)"},
      {bin + "x", "bytes after the output matrix"},
  };
  for (const Case& c : cases) {
    WriteFile(dir + "/model.bin", c.bytes);
    auto loaded = ContentEncoder::Load(dir);
    EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss)
        << c.message;
    EXPECT_THAT(std::string(loaded.status().message()),
                HasSubstr(dir + "/model.bin: not a fastText model as "
                                "content_vectors saves it: " +
                          c.message));
  }

  // Same structure, one weight changed: only the id tells.
  std::string flipped = bin;
  flipped[bin.size() - 3] ^= 0x40;
  WriteFile(dir + "/model.bin", flipped);
  auto loaded = ContentEncoder::Load(dir);
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(loaded.status().message()),
              HasSubstr(absl::StrCat(dir,
                                     ": model.bin and mean.txt hash to id ",
                                     Fnv1a64Hex(flipped +
                                                ReadFile(dir + "/mean.txt")),
                                     " but encoder.txt says ", *saved_id_)));
}

// Offset of the input matrix's quantisation flag in a fastText 0.9 model
// file: after the signature and Args (64 bytes), the dictionary header
// (28 bytes) and its entries (word, NUL, int64 count, int8 type).
size_t InputMatrixFlagOffset(const std::string& bin) {
  int32_t entries = 0;
  std::memcpy(&entries, bin.data() + 64, sizeof(entries));
  size_t at = 64 + 28;
  for (int32_t i = 0; i < entries; ++i) at = bin.find('\0', at) + 1 + 8 + 1;
  return at;
}

// fastText stores the flag as a bool; any byte but 0 and 1 is refused
// before fastText would read it into a bool (found by tests/fuzz
// content_encoder: reading such a byte into a bool is undefined).
TEST_F(ContentEncoderTest, QuantisationFlagOtherThanZeroOrOne) {
  const std::string dir = CopyDir("quantisation_flag");
  const std::string bin = ReadFile(dir + "/model.bin");
  const size_t flag = InputMatrixFlagOffset(bin);
  ASSERT_EQ(bin[flag], 0);
  for (const auto& [byte, message] :
       std::vector<std::pair<char, std::string>>{
           {1, "quantised input matrix"},
           {2, "input matrix has quantisation flag byte 2, expected 0 or 1"},
           {static_cast<char>(0x99),
            "input matrix has quantisation flag byte 153, expected 0 or 1"}}) {
    std::string damaged = bin;
    damaged[flag] = byte;
    WriteFile(dir + "/model.bin", damaged);
    auto loaded = ContentEncoder::Load(dir);
    EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss) << message;
    EXPECT_THAT(std::string(loaded.status().message()),
                HasSubstr(absl::StrCat(
                    dir, "/model.bin: not a fastText model as content_vectors "
                         "saves it: ",
                    message, " (at byte ", flag + 1, ")")));
  }
}

// fastText's hierarchical-softmax tree takes 1e15 for "no node yet"; a
// word count that large made loadModel read and write past the tree (heap
// corruption, found by tests/fuzz content_encoder and confirmed under
// valgrind). Counts are refused before fastText sees them.
TEST_F(ContentEncoderTest, DictionaryCountsOutOfRange) {
  const std::string dir = CopyDir("dictionary_counts");
  const std::string bin = ReadFile(dir + "/model.bin");
  const size_t count_at = bin.find('\0', 64 + 28) + 1;  // entry 0's count
  for (const int64_t count : {int64_t{1000000000000000}, int64_t{0},
                              int64_t{-5}}) {
    std::string damaged = bin;
    std::memcpy(&damaged[count_at], &count, sizeof(count));
    WriteFile(dir + "/model.bin", damaged);
    auto loaded = ContentEncoder::Load(dir);
    EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss) << count;
    EXPECT_THAT(std::string(loaded.status().message()),
                HasSubstr(absl::StrCat(
                    dir, "/model.bin: not a fastText model as content_vectors "
                         "saves it: dictionary entry 0 has count ",
                    count, ", expected 1..999999999999999 (at byte ",
                    count_at + 9, ")")))
        << count;
  }
}

// A dictionary without words loaded, and fastText then divided by zero on
// the first word it looked up (SIGFPE in Encode; found while checking the
// fuzz target's finding above).
TEST_F(ContentEncoderTest, EmptyDictionary) {
  const std::string dir = CopyDir("empty_dictionary");
  std::string bin = ReadFile(dir + "/model.bin");
  // Args: dim is the 1st int32 after the signature, bucket the 9th.
  int32_t dim = 0, bucket = 0;
  std::memcpy(&dim, bin.data() + 8, sizeof(dim));
  std::memcpy(&bucket, bin.data() + 8 + 8 * 4, sizeof(bucket));
  // Header with 0 entries, then an input matrix of `bucket` rows and an
  // empty output matrix.
  std::string empty = bin.substr(0, 64);
  const int32_t no_words[3] = {0, 0, 0};
  const int64_t tokens_pruneidx[2] = {0, -1};
  empty.append(reinterpret_cast<const char*>(no_words), sizeof(no_words));
  empty.append(reinterpret_cast<const char*>(tokens_pruneidx),
               sizeof(tokens_pruneidx));
  for (const int64_t rows : {int64_t{bucket}, int64_t{0}}) {
    empty.push_back('\0');  // not quantised
    const int64_t shape[2] = {rows, dim};
    empty.append(reinterpret_cast<const char*>(shape), sizeof(shape));
    empty.append(static_cast<size_t>(rows) * dim * sizeof(float), '\0');
  }
  WriteFile(dir + "/model.bin", empty);
  auto loaded = ContentEncoder::Load(dir);
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(loaded.status().message()),
              HasSubstr(absl::StrCat(
                  dir, "/model.bin: not a fastText model as content_vectors "
                       "saves it: dictionary of 0 entries, 0 words and 0 "
                       "labels; expected only words, 1 to 30000000")));
}

TEST_F(ContentEncoderTest, MeanFileWithWrongDim) {
  const std::string dir = CopyDir("wrong_dim_mean");
  WriteFile(dir + "/mean.txt",
            "#mim-encoder-mean v1\tdim=7\n0\n0\n0\n0\n0\n0\n0\n");
  auto loaded = ContentEncoder::Load(dir);
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(loaded.status().message(),
            absl::StrCat(dir,
                         ": the encoder's files disagree on dim: encoder.txt "
                         "says 8, model.bin has 8, mean.txt has 7; the three "
                         "files must come from one save"));

  WriteFile(dir + "/mean.txt", "#mim-encoder-mean v1\tdim=8\n0\n0\n0\n");
  loaded = ContentEncoder::Load(dir);
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(loaded.status().message(),
            absl::StrCat(dir, "/mean.txt: 3 values, header says dim=8"));

  WriteFile(dir + "/mean.txt",
            "#mim-encoder-mean v1\tdim=8\n0\n0\nnan\n0\n0\n0\n0\n0\n");
  loaded = ContentEncoder::Load(dir);
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(loaded.status().message(),
            absl::StrCat(dir, "/mean.txt:4: 'nan' is not a finite number"));

  WriteFile(dir + "/mean.txt", "0.5\n");
  loaded = ContentEncoder::Load(dir);
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(loaded.status().message(),
            absl::StrCat(dir,
                         "/mean.txt:1: header is '0.5', expected "
                         "'#mim-encoder-mean v1<TAB>dim=<D>'"));
}

TEST_F(ContentEncoderTest, BadDescriptor) {
  const std::string dir = CopyDir("bad_descriptor");
  const std::string path = dir + "/encoder.txt";
  struct Case {
    std::string text;
    std::string message;
  };
  const std::string id = *saved_id_;
  const std::vector<Case> cases = {
      {"{}\n", ":1: header is '{}', expected '#mim-content-encoder v1'"},
      {"#mim-content-encoder v1\nkind=bert\ndim=8\nid=" + id + "\n",
       ":2: kind 'bert', expected 'fasttext'"},
      {"#mim-content-encoder v1\nkind=fasttext\ndim=x\nid=" + id + "\n",
       ":3: dim 'x' is not a positive integer"},
      {"#mim-content-encoder v1\nkind=fasttext\ndim=8\nid=ABC\n",
       ":4: id 'ABC' is not 16 lower-case hex digits"},
      {"#mim-content-encoder v1\nkind=fasttext\ndim=8\n",
       ": missing key id; expected kind, dim and id"},
      {"#mim-content-encoder v1\nkind=fasttext\ndim=8\ndim=8\nid=" + id,
       ":4: key 'dim' repeated"},
      {"#mim-content-encoder v1\nkind=fasttext\nsize=8\n",
       ":3: unknown key 'size'; expected kind, dim, id"},
      {"#mim-content-encoder v1\nkind=fasttext\ndim=9\nid=" + id + "\n",
       ": the encoder's files disagree on dim: encoder.txt says 9"},
      {"#mim-content-encoder v1\nkind=fasttext\ndim=8\nid=0123456789abcdef\n",
       " but encoder.txt says 0123456789abcdef"},
  };
  for (const Case& c : cases) {
    WriteFile(path, c.text);
    auto loaded = ContentEncoder::Load(dir);
    EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss)
        << c.message;
    EXPECT_THAT(std::string(loaded.status().message()), HasSubstr(c.message));
  }
}

TEST(ContentEncoder, FromTrainedModelRejectsUnusableModels) {
  auto encoder = ContentEncoder::FromTrainedModel(nullptr, {}, true);
  EXPECT_EQ(encoder.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(encoder.status().message(), "ContentEncoder: model is null");
  encoder = ContentEncoder::FromTrainedModel(
      std::make_unique<fasttext::FastText>(), {}, true);
  EXPECT_EQ(encoder.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(encoder.status().message(),
            "ContentEncoder: the fastText model was never trained or loaded");
}

TEST_F(ContentEncoderTest, SaveIntoAFileFails) {
  const std::string file = TempPath("plain_file");
  WriteFile(file, "x");
  auto id = trained_->Save(file + "/encoder");
  EXPECT_EQ(id.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(std::string(id.status().message()),
              HasSubstr("cannot create encoder directory " + file +
                        "/encoder: "));
}

}  // namespace
}  // namespace mim::serving

// Debian's libfasttext.so exports its CLI's `main`, which would win over
// gtest_main's when both are shared libraries; so this test has its own.
int main(int argc, char** argv) {
  ::testing::InitGoogleMock(&argc, argv);
  return RUN_ALL_TESTS();
}
