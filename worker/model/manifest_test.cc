#include "worker/model/manifest.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "gtest/gtest.h"

namespace mim::model {
namespace {

ModelManifest Sample() {
  ModelManifest m;
  m.model_version = NewModelVersion("din_mim");
  m.model_name = "din_mim";
  m.model_file_checksum = 0x0123456789abcdefULL;
  m.id_dim = 32;
  m.content_dim = 64;
  m.uses_content = true;
  m.seed = 7;
  m.num_shards = 2;
  m.id_table = {"din_mim_s7_id", 32, "adagrad", 0.05, 1234, 99999};
  ModelManifest::ContentTable c;
  c.name = "item_content";
  c.dim = 64;
  c.version = 3;
  c.encoder = {"fasttext", "../encoder", "abcd"};
  m.content_table = c;
  m.train_samples = 100;
  m.created_unix = 1700000000;
  return m;
}

TEST(ManifestTest, RoundTripsEveryField) {
  const ModelManifest m = Sample();
  absl::StatusOr<ModelManifest> back = ParseManifest(FormatManifest(m));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->model_version, m.model_version);
  EXPECT_EQ(back->model_file_checksum, m.model_file_checksum);
  EXPECT_EQ(back->id_table.name, "din_mim_s7_id");
  EXPECT_EQ(back->id_table.rows, 1234u);
  EXPECT_EQ(back->id_table.pushes, 99999u);
  ASSERT_TRUE(back->content_table.has_value());
  EXPECT_EQ(back->content_table->version, 3u);
  EXPECT_EQ(back->content_table->encoder.kind, "fasttext");
  EXPECT_EQ(back->content_table->encoder.path, "../encoder");
  EXPECT_EQ(back->seed, 7u);
  EXPECT_EQ(FormatManifest(*back), FormatManifest(m));
}

TEST(ManifestTest, RejectsInconsistentManifestsNamingTheField) {
  ModelManifest m = Sample();
  m.id_table.dim = 16;
  EXPECT_NE(ValidateManifest(m).message().find("id_table.dim"),
            std::string::npos);
  m = Sample();
  m.content_table.reset();
  EXPECT_NE(ValidateManifest(m).message().find("content_table"),
            std::string::npos);
  m = Sample();
  m.model_file = "../x";
  EXPECT_EQ(ValidateManifest(m).code(), absl::StatusCode::kInvalidArgument);
}

TEST(ManifestTest, CsftEncoderRoundTripsWithItsTextEncoder) {
  ModelManifest m = Sample();
  m.content_table->encoder = {"csft", "/models/csft.encoder",
                              "00112233aabbccdd", "/models/text_encoder",
                              "abcd"};
  absl::StatusOr<ModelManifest> back = ParseManifest(FormatManifest(m));
  ASSERT_TRUE(back.ok()) << back.status();
  const ContentEncoderInfo& e = back->content_table->encoder;
  EXPECT_EQ(e.kind, "csft");
  EXPECT_EQ(e.path, "/models/csft.encoder");
  EXPECT_EQ(e.id, "00112233aabbccdd");
  EXPECT_EQ(e.text_path, "/models/text_encoder");
  EXPECT_EQ(e.text_id, "abcd");
  EXPECT_EQ(FormatManifest(*back), FormatManifest(m));

  m.content_table->encoder.text_path.clear();
  absl::Status s = ValidateManifest(m);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(),
            "manifest: content_table.encoder of kind csft needs path "
            "(the C-SFT encoder file) and text_encoder.path (the fastText "
            "encoder of its input)");
  m.content_table->encoder.kind = "word2vec";
  s = ValidateManifest(m);
  EXPECT_EQ(s.message(),
            "manifest: content_table.encoder.kind 'word2vec' is not "
            "fasttext, csft or external");
}

TEST(ManifestTest, ParseErrorsNameTheField) {
  EXPECT_EQ(ParseManifest("not json").status().code(),
            absl::StatusCode::kInvalidArgument);
  std::string text = FormatManifest(Sample());
  const std::string key = "\"num_shards\": 2";
  text.replace(text.find(key), key.size(), "\"num_shards\": \"two\"");
  const absl::Status st = ParseManifest(text).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("num_shards must be an integer"),
            std::string::npos)
      << st;
}

TEST(ManifestTest, ReadsFormatOneManifests) {
  const char* v1 = R"({"format": "mim-model-manifest v1", "model": "din",
    "model_file": "model.mimmodel",
    "model_config": {"name": "din", "id_dim": 32, "content_dim": 64,
                     "uses_content": false, "seed": 1},
    "num_shards": 2,
    "id_table": {"name": "din_s1_id", "dim": 32, "optimizer": "adagrad",
                 "learning_rate": 0.05},
    "content_table": null, "dense_params": "local", "dense_table": null,
    "train_samples": 10, "init_model": null, "created_unix": 1})";
  absl::StatusOr<ModelManifest> m = ParseManifest(v1);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->format_version, 1);
  EXPECT_TRUE(m->model_version.empty());
  EXPECT_EQ(m->model_file_checksum, 0u);
  // Written back, it stays a format 1 manifest that parses (found by
  // tests/fuzz manifest: it came back as format 2 without the fields
  // format 2 requires).
  absl::StatusOr<ModelManifest> again = ParseManifest(FormatManifest(*m));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->format_version, 1);
  EXPECT_EQ(FormatManifest(*again), FormatManifest(*m));
}

TEST(ManifestTest, WriteThenReadFromDirectory) {
  const std::string dir = std::string(std::getenv("TEST_TMPDIR")) + "/m";
  std::filesystem::create_directories(dir);
  ASSERT_TRUE(WriteManifest(dir, Sample()).ok());
  absl::StatusOr<ModelManifest> m = ReadManifest(dir);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->model_name, "din_mim");
  EXPECT_EQ(ReadManifest(dir + "/none").status().code(),
            absl::StatusCode::kNotFound);
  std::ofstream(dir + "/f.bin") << "abc";
  // FNV-1a 64 of "abc".
  EXPECT_EQ(*FileChecksum(dir + "/f.bin"), 0xe71fa2190541574bULL);
}

}  // namespace
}  // namespace mim::model
