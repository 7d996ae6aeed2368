// Writes the generated seed inputs of every fuzz target:
// CORPUS_DIR/<target>/seed-<name> (tools/fuzz.sh --make-seeds runs it on
// tests/fuzz/corpus). Seeds are small valid inputs and near misses, made
// with the project's own writers so that they follow the formats as they
// are; reproducers of findings (regress-*) are kept beside them by hand.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/protobuf/message.h"
#include "proto/ps.pb.h"
#include "proto/serving.pb.h"
#include "tests/fuzz/fasttext_bin.h"
#include "tests/fuzz/ps_session.pb.h"
#include "worker/csft/encoder.h"
#include "worker/data/sample.h"
#include "worker/model/ciubm_model.h"
#include "worker/model/manifest.h"

namespace {

std::string g_dir;

void Write(const std::string& target, const std::string& name,
           const std::string& bytes) {
  const std::string dir = absl::StrCat(g_dir, "/", target);
  std::filesystem::create_directories(dir);
  const std::string path = absl::StrCat(dir, "/seed-", name);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) {
    std::fprintf(stderr, "make_seeds: cannot write %s\n", path.c_str());
    std::exit(1);
  }
}

// Map fields (user_features) in a fixed order, so that seeds do not change
// from one generation to the next.
std::string Serialize(const google::protobuf::Message& m) {
  std::string out;
  {
    google::protobuf::io::StringOutputStream stream(&out);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    m.SerializeToCodedStream(&coded);
  }
  return out;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in),
                     std::istreambuf_iterator<char>());
}

std::string Floats(std::initializer_list<float> v) {
  return std::string(reinterpret_cast<const char*>(v.begin()),
                     v.size() * sizeof(float));
}

// --- sample_reader ---------------------------------------------------------

void SampleSeeds() {
  using mim::data::Sample;
  Sample a;
  a.timestamp = 978300760;
  a.user_id = 1;
  a.item_id = 1193;
  a.label = 1;
  a.age_bucket = 1;
  a.gender = 2;
  a.occupation = 10;
  a.genres = {8};
  Sample b = a;
  b.timestamp = 978300761;
  b.item_id = 661;
  b.label = 0;
  b.genres = {3, 4, 5};
  b.behavior = {1193};
  Sample c = b;
  c.item_id = 914;
  c.genres = {};
  c.behavior.assign(mim::data::kMaxBehaviorLength, 7);
  const std::string header = std::string(mim::data::kSampleHeader);
  const std::string rows =
      absl::StrCat(mim::data::FormatSample(a), "\n", mim::data::FormatSample(b),
                   "\n", mim::data::FormatSample(c), "\n");
  Write("sample_reader", "valid", absl::StrCat(header, "\n", rows));
  Write("sample_reader", "crlf",
        absl::StrCat(header, "\r\n", mim::data::FormatSample(a), "\r\n\n"));
  Write("sample_reader", "no-final-newline",
        absl::StrCat(header, "\n", mim::data::FormatSample(b)));
  Write("sample_reader", "header-only", absl::StrCat(header, "\n"));
  Write("sample_reader", "bad-label",
        absl::StrCat(header, "\n1\t2\t3\t2\t0\t0\t0\t\t\n"));
  Write("sample_reader", "long-number",
        absl::StrCat(header,
                     "\n99999999999999999999\t2\t3\t1\t0\t0\t0\t1,2\t3\n"));
}

// --- content_vectors -------------------------------------------------------

void VectorSeeds() {
  const std::string header = "#mim-vectors v1\tdim=3\tmodality=text\n";
  Write("content_vectors", "valid",
        header + "1\t0.5 -0.25 1e-3\n7\t0 0 1\n42\t-1 2.5 3\n");
  Write("content_vectors", "dim1",
        "#mim-vectors v1\tdim=1\tmodality=image\r\n0\t1\r\n\n3\t-0.5\r\n");
  Write("content_vectors", "duplicate", header + "1\t1 2 3\n1\t1 2 3\n");
  Write("content_vectors", "nan", header + "1\tnan 0 0\n");
  Write("content_vectors", "short-row", header + "1\t1 2\n");
  Write("content_vectors", "no-final-newline", header + "5\t1 2 3");
  Write("content_vectors", "zero-norm", header + "5\t0 0 0\n");
}

// --- manifest --------------------------------------------------------------

void ManifestSeeds() {
  mim::model::ModelManifest m;
  m.model_version = "20261204T101010.123456Z-din_mim";
  m.model_name = "din_mim";
  m.model_file_checksum = 0x0123456789abcdefULL;
  m.id_dim = 32;
  m.content_dim = 64;
  m.uses_content = true;
  m.seed = 7;
  m.num_shards = 2;
  m.id_table = {"ids", 32, "adagrad", 0.05, 1000, 5000};
  mim::model::ModelManifest::ContentTable ct;
  ct.name = "item_content";
  ct.dim = 64;
  ct.version = 3;
  ct.encoder = {"fasttext", "encoder", "00112233aabbccdd"};
  m.content_table = ct;
  m.train_samples = 12345;
  m.created_unix = 1764842400;
  Write("manifest", "din_mim", mim::model::FormatManifest(m));

  mim::model::ModelManifest d = m;
  d.model_name = "din";
  d.uses_content = false;
  d.content_table.reset();
  d.dense_params = "ps";
  d.dense_table = "dense";
  d.init_model = "runs/earlier";
  Write("manifest", "din_ps_dense", mim::model::FormatManifest(d));

  Write("manifest", "v1",
        R"({"format": "mim-model-manifest v1", "model": "din",)"
        R"( "model_file": "model.mimmodel", "num_shards": 1,)"
        R"( "model_config": {"name": "din", "id_dim": 8, "content_dim": 4,)"
        R"( "uses_content": false, "seed": 3},)"
        R"( "id_table": {"name": "ids", "dim": 8}, "dense_params": "local"})");
  Write("manifest", "not-object", "[1, 2, {\"format\": null}]");
}

// --- model_file ------------------------------------------------------------

void ModelSeeds(const std::string& scratch) {
  struct Variant {
    const char* name;
    const char* model;
  };
  for (const Variant& v :
       {Variant{"din", "din"}, Variant{"din_mim", "din_mim"},
        Variant{"sim_ct", "sim_ct"}, Variant{"avgpool_mim", "avgpool_mim"}}) {
    absl::StatusOr<mim::model::ModelConfig> c =
        mim::model::ModelConfigFromName(v.model);
    c->id_dim = 2;
    c->content_dim = 2;
    c->sim_k = 2;
    c->mlp_hidden = {3};
    c->att_hidden = {2, 2};
    auto model = mim::model::CiubmModel::Create(*c).value();
    const std::string path = scratch + "/seed.mimmodel";
    if (!model->Save(path).ok()) {
      std::fprintf(stderr, "make_seeds: cannot save a model\n");
      std::exit(1);
    }
    const std::string file = ReadFile(path);
    // As it is ('M...'), and framed by the harness: version byte + payload
    // (the file without magic, version, length and checksum).
    Write("model_file", absl::StrCat(v.name, "-file"), file);
    const std::string payload = file.substr(20, file.size() - 28);
    Write("model_file", absl::StrCat(v.name, "-payload-v2"),
          std::string(1, '\1') + payload);
  }
}

// --- ps_service ------------------------------------------------------------

mim::fuzz::PsCall Pull(const std::string& table,
                       std::initializer_list<uint64_t> keys) {
  mim::fuzz::PsCall c;
  c.mutable_pull()->set_table(table);
  for (uint64_t k : keys) c.mutable_pull()->add_keys(k);
  return c;
}

mim::fuzz::PsCall Push(const std::string& table,
                       std::initializer_list<uint64_t> keys,
                       const std::string& gradients) {
  mim::fuzz::PsCall c;
  c.mutable_push()->set_table(table);
  for (uint64_t k : keys) c.mutable_push()->add_keys(k);
  c.mutable_push()->set_gradients(gradients);
  return c;
}

mim::fuzz::PsCall Upsert(const std::string& table,
                         std::initializer_list<uint64_t> keys,
                         const std::string& values, uint64_t version) {
  mim::fuzz::PsCall c;
  c.mutable_upsert()->set_table(table);
  for (uint64_t k : keys) c.mutable_upsert()->add_keys(k);
  c.mutable_upsert()->set_values(values);
  c.mutable_upsert()->set_version(version);
  return c;
}

mim::fuzz::PsCall GetRows(const std::string& table,
                          std::initializer_list<uint64_t> keys) {
  mim::fuzz::PsCall c;
  c.mutable_get_rows()->set_table(table);
  for (uint64_t k : keys) c.mutable_get_rows()->add_keys(k);
  return c;
}

void PsSeeds() {
  using mim::fuzz::PsSession;
  auto add = [](PsSession* s, mim::fuzz::PsCall c) { *s->add_calls() = c; };
  {
    PsSession s;
    add(&s, Pull("ids", {1, 2, 3, 1}));
    add(&s,
        Push("ids", {1, 2}, Floats({0.1f, 0.2f, 0.3f, 0.4f, -1, -2, -3, -4})));
    add(&s, Push("adam", {5, 5}, Floats({1, 2, 3, 4})));
    add(&s, Push("ftrl", {9}, Floats({0.5f, -0.5f, 2})));
    add(&s, GetRows("ids", {1, 2, 77}));
    mim::fuzz::PsCall stats;
    stats.mutable_table_stats()->set_table("ids");
    add(&s, stats);
    Write("ps_service", "push-pull", Serialize(s));
  }
  {
    PsSession s;
    add(&s, Upsert("content", {10, 11}, Floats({1, 0, 0, 0, 1, 0}), 5));
    add(&s, Upsert("content", {10}, Floats({0, 0, 1}), 4));  // stale
    add(&s, Pull("content", {10, 12, 11}));
    add(&s, GetRows("content", {12}));
    add(&s, Push("content", {10}, Floats({1, 1, 1})));  // refused
    Write("ps_service", "upsert-content", Serialize(s));
  }
  {
    PsSession s;
    mim::fuzz::PsCall create;
    mim::ps::TableConfig* c = create.mutable_create_table()->mutable_config();
    c->set_name("new_table");
    c->set_kind(mim::ps::ID);
    c->set_dim(2);
    c->mutable_optimizer()->set_name("sgd");
    c->mutable_optimizer()->set_learning_rate(0.5f);
    c->mutable_initializer()->set_name("uniform");
    c->mutable_initializer()->set_scale(0.1f);
    add(&s, create);
    create.mutable_create_table()->set_if_not_exists(true);
    add(&s, create);
    c->set_dim(3);  // same name, other config: ALREADY_EXISTS
    add(&s, create);
    mim::fuzz::PsCall list;
    list.mutable_list_tables();
    add(&s, list);
    add(&s, Push("new_table", {4}, Floats({1, 2})));
    mim::fuzz::PsCall all_stats;
    all_stats.mutable_table_stats();
    add(&s, all_stats);
    Write("ps_service", "create-table", Serialize(s));
  }
  for (bool on_disk : {false, true}) {
    PsSession s;
    s.set_on_disk(on_disk);
    add(&s, Push("ids", {3}, Floats({1, 1, 1, 1})));
    add(&s, Upsert("content", {8}, Floats({0, 1, 0}), 1));
    mim::fuzz::PsCall cp;
    cp.mutable_checkpoint()->set_name("before");
    add(&s, cp);
    add(&s, cp);  // ALREADY_EXISTS
    cp.mutable_checkpoint()->set_name("../escape");
    add(&s, cp);
    cp.mutable_checkpoint()->set_name("");
    add(&s, cp);
    add(&s, Push("ids", {3}, Floats({1, 1, 1, 1})));
    mim::fuzz::PsCall restore;
    restore.mutable_restore()->set_name("before");
    add(&s, restore);
    restore.mutable_restore()->set_name("missing");
    add(&s, restore);
    mim::fuzz::PsCall list;
    list.mutable_list_checkpoints();
    add(&s, list);
    add(&s, GetRows("ids", {3}));
    mim::fuzz::PsCall del;
    del.mutable_delete_checkpoint()->set_name("before");
    add(&s, del);
    add(&s, del);  // gone: deleted = false
    del.mutable_delete_checkpoint()->set_name("a/b");
    add(&s, del);
    add(&s, list);
    Write("ps_service", on_disk ? "checkpoint-on-disk" : "checkpoint",
          Serialize(s));
  }
  for (const bool on_disk : {false, true}) {
    // A table dropped, dropped again (absent: dropped = false), created
    // with another dim and written; a checkpoint from before restores it.
    PsSession s;
    s.set_on_disk(on_disk);
    add(&s, Push("ids", {3, 4}, Floats({1, 1, 1, 1, 2, 2, 2, 2})));
    mim::fuzz::PsCall cp;
    cp.mutable_checkpoint()->set_name("before");
    add(&s, cp);
    mim::fuzz::PsCall drop;
    drop.mutable_drop_table()->set_table("ids");
    add(&s, drop);
    add(&s, drop);
    add(&s, Pull("ids", {3}));
    drop.mutable_drop_table()->set_table(std::string(200, 'x'));
    add(&s, drop);
    mim::fuzz::PsCall create;
    mim::ps::TableConfig* c = create.mutable_create_table()->mutable_config();
    c->set_name("ids");
    c->set_kind(mim::ps::ID);
    c->set_dim(2);
    c->mutable_optimizer()->set_name("sgd");
    c->mutable_optimizer()->set_learning_rate(0.1f);
    c->mutable_initializer()->set_name("zeros");
    add(&s, create);
    add(&s, Push("ids", {5}, Floats({1, 1})));
    add(&s, Upsert("content", {8}, Floats({0, 1, 0}), 1));
    drop.mutable_drop_table()->set_table("content");
    add(&s, drop);
    mim::fuzz::PsCall restore;
    restore.mutable_restore()->set_name("before");
    add(&s, restore);
    add(&s, Pull("ids", {3, 4}));
    Write("ps_service", on_disk ? "drop-table-on-disk" : "drop-table",
          Serialize(s));
  }
  {
    PsSession s;
    s.set_num_shards(2);
    s.set_shard_index(1);
    add(&s, Pull("ids", {0, 1, 2, 3, 4, 5, 6, 7}));
    add(&s, Pull("nope", {1}));
    add(&s, Pull(std::string(200, 'x'), {1}));
    add(&s, Push("ids", {1}, Floats({1, 2, 3})));  // wrong length
    add(&s, Push("ids", {1},
                 Floats({1, 2, 3, std::numeric_limits<float>::infinity()})));
    add(&s, Upsert("ids", {1}, Floats({1, 2, 3, 4}), 1));
    Write("ps_service", "refusals", Serialize(s));
  }
}

// --- serving_request -------------------------------------------------------

void ServingSeeds() {
  mim::serving::PredictRequest r;
  r.set_user_id(12);
  (*r.mutable_user_features())["age_bucket"] = 3;
  (*r.mutable_user_features())["gender"] = 1;
  (*r.mutable_user_features())["occupation"] = 7;
  for (int64_t b : {5, 6, 7, 5}) r.add_behavior_item_ids(b);
  for (int64_t c : {100, 101, 5}) {
    r.add_candidate_item_ids(c);
    r.add_candidate_features()->add_genres(static_cast<int32_t>(c % 4));
  }
  Write("serving_request", "valid", Serialize(r));
  mim::serving::PredictRequest plain;
  plain.set_user_id(1);
  plain.add_candidate_item_ids(9);
  Write("serving_request", "minimal", Serialize(plain));
  mim::serving::PredictRequest bad = r;
  (*bad.mutable_user_features())["height"] = 180;
  Write("serving_request", "unknown-feature", Serialize(bad));
  bad = r;
  bad.add_candidate_features();  // one too many
  Write("serving_request", "features-mismatch", Serialize(bad));
  bad = r;
  bad.set_user_id(-4);
  Write("serving_request", "negative-user", Serialize(bad));
}

// --- content_encoder -------------------------------------------------------

void EncoderSeeds() {
  using mim::fuzz::FastTextBin;
  using mim::fuzz::FastTextBinSpec;
  FastTextBinSpec hs;  // skipgram, hierarchical softmax, no subwords
  Write("content_encoder", "skipgram-hs", FastTextBin(hs));
  FastTextBinSpec cbow;
  cbow.model = 1;
  cbow.loss = 3;  // softmax
  cbow.dim = 3;
  cbow.bucket = 4;
  cbow.minn = 2;
  cbow.maxn = 3;
  cbow.words = {"hello", "world", "caf\xc3\xa9"};
  Write("content_encoder", "cbow-softmax-subwords", FastTextBin(cbow));
  FastTextBinSpec ns;
  ns.loss = 2;  // negative sampling
  ns.count = 1;
  Write("content_encoder", "skipgram-ns", FastTextBin(ns));
  // The '#' form: encoder.txt NUL mean.txt beside the harness's model.
  const std::string model = FastTextBin(FastTextBinSpec());
  const std::string mean = "#mim-encoder-mean v1\tdim=2\n0.25\n-0.125\n";
  uint64_t h = 14695981039346656037ull;
  for (const std::string* part : {&model, &mean}) {
    for (char c : *part) {
      h ^= static_cast<unsigned char>(c);
      h *= 1099511628211ull;
    }
  }
  Write("content_encoder", "descriptor-and-mean",
        absl::StrCat("#mim-content-encoder v1\nkind=fasttext\ndim=2\nid=",
                     absl::StrFormat("%016x", h), "\n", std::string(1, '\0'),
                     mean));
}

// --- csft_encoder ----------------------------------------------------------

void CsftSeeds(const std::string& scratch) {
  // Files CsftEncoder::Save writes (the '#' form), with and without a gate.
  for (float gate : {0.0f, 20.0f}) {
    mim::csft::EncoderConfig c{3, 4, 3, 2, 4, true};
    c.residual_gate = gate;
    auto e = mim::csft::CsftEncoder::Create(c, 5).value();
    for (float& p : *e->mutable_params()) p += 0.125f;
    const std::string path = scratch + "/csft.encoder";
    if (!e->Save(path).ok()) {
      std::fprintf(stderr, "make_seeds: cannot save a C-SFT encoder\n");
      std::exit(1);
    }
    Write("csft_encoder", gate > 0 ? "saved-gate20" : "saved",
          ReadFile(path));
  }
  // The config-bytes form: dim 2, input 2, 1 genre, genre_dim 1, hidden 2,
  // tensor fusion, gate 3, then parameters (1.0f each, the rest zeros).
  std::string bytes = {1, 0, 0, 0, 1, 0, 3};
  const float one = 1.0f;
  for (int i = 0; i < 8; ++i) {
    bytes.append(reinterpret_cast<const char*>(&one), sizeof(one));
  }
  Write("csft_encoder", "config-bytes", bytes);
}

// --- auth_tokens -----------------------------------------------------------

void AuthSeeds() {
  Write("auth_tokens", "two-roles",
        "# role token\nread  0123456789abcdef0123456789abcdef\n"
        "admin\tZmFrZS10b2tlbi1mb3ItZnV6emluZw==\n\n");
  Write("auth_tokens", "swapped", "0123456789abcdef0123 read\n");
  Write("auth_tokens", "repeated",
        "read aaaaaaaaaaaaaaaaaaaa\nadmin aaaaaaaaaaaaaaaaaaaa\n");
}

// --- pull_reply ------------------------------------------------------------

// First byte: the slice size - 1; then a PullResponse as the shard sends it.
void PullReplySeeds() {
  mim::ps::PullResponse response;
  response.set_dim(4);
  std::string values;
  for (int i = 0; i < 16; ++i) {
    const float v = 0.5f * static_cast<float>(i);
    values.append(reinterpret_cast<const char*>(&v), sizeof(v));
  }
  response.set_values(values);
  response.add_missing(1);
  response.add_missing(300);
  Write("pull_reply", "four-rows", std::string(1, '\x06') +
                                       response.SerializeAsString());
  response.clear_missing();
  Write("pull_reply", "one-slice", std::string(1, '\xff') +
                                       response.SerializeAsString());
  // Unpacked missing and an unknown field, as another encoder may send.
  Write("pull_reply", "unpacked",
        std::string("\x00\x08\x01\x18\x07\x20\x01\x12\x04\x00\x00\x80\x3f",
                    13));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_seeds CORPUS_DIR\n");
    return 2;
  }
  g_dir = argv[1];
  const std::string scratch = g_dir + "/.make_seeds_tmp";
  std::filesystem::create_directories(scratch);
  SampleSeeds();
  VectorSeeds();
  ManifestSeeds();
  ModelSeeds(scratch);
  PsSeeds();
  ServingSeeds();
  EncoderSeeds();
  CsftSeeds(scratch);
  AuthSeeds();
  PullReplySeeds();
  std::filesystem::remove_all(scratch);
  std::printf("make_seeds: wrote the seeds under %s\n", g_dir.c_str());
  return 0;
}
