// Builds small fastText 0.9.2 binary models (FastText::saveModel's format)
// byte by byte, for the content_encoder fuzz target and its seeds. The
// layout is the one serving/content_encoder.cc's ScanModelFile checks.
#ifndef MIM_TESTS_FUZZ_FASTTEXT_BIN_H_
#define MIM_TESTS_FUZZ_FASTTEXT_BIN_H_

#include <cstdint>
#include <string>
#include <vector>

namespace mim::fuzz {

// Plain value type.
struct FastTextBinSpec {
  int32_t dim = 2;
  int32_t loss = 1;   // fasttext::loss_name: 1 hs, 2 ns, 3 softmax, 4 ova
  int32_t model = 2;  // fasttext::model_name: 1 cbow, 2 skipgram
  int32_t bucket = 0;
  int32_t minn = 0;
  int32_t maxn = 0;
  std::vector<std::string> words = {"hello", "world"};
  int64_t count = 3;  // per word
};

template <typename T>
void AppendFastTextPod(std::string* out, T v) {
  out->append(reinterpret_cast<const char*>(&v), sizeof(T));
}

// The model file for `spec`; matrix values are small deterministic floats.
inline std::string FastTextBin(const FastTextBinSpec& spec) {
  std::string out;
  AppendFastTextPod<int32_t>(&out, 793712314);  // magic
  AppendFastTextPod<int32_t>(&out, 12);         // version
  // Args: dim ws epoch minCount neg wordNgrams loss model bucket minn maxn
  // lrUpdateRate, then t.
  for (int32_t v : {spec.dim, 5, 1, 1, 5, 1, spec.loss, spec.model, spec.bucket,
                    spec.minn, spec.maxn, 100}) {
    AppendFastTextPod<int32_t>(&out, v);
  }
  AppendFastTextPod<double>(&out, 1e-4);
  // Dictionary: size nwords nlabels ntokens pruneidx_size, then entries.
  const int32_t n = static_cast<int32_t>(spec.words.size());
  AppendFastTextPod<int32_t>(&out, n);
  AppendFastTextPod<int32_t>(&out, n);
  AppendFastTextPod<int32_t>(&out, 0);
  AppendFastTextPod<int64_t>(&out, spec.count * n);
  AppendFastTextPod<int64_t>(&out, -1);
  for (const std::string& w : spec.words) {
    out.append(w);
    out.push_back('\0');
    AppendFastTextPod<int64_t>(&out, spec.count);
    AppendFastTextPod<int8_t>(&out, 0);  // word
  }
  auto matrix = [&](int64_t rows) {
    AppendFastTextPod<uint8_t>(&out, 0);  // not quantised
    AppendFastTextPod<int64_t>(&out, rows);
    AppendFastTextPod<int64_t>(&out, spec.dim);
    for (int64_t i = 0; i < rows * spec.dim; ++i) {
      AppendFastTextPod<float>(&out, 0.125f * static_cast<float>(i % 7) - 0.3f);
    }
  };
  matrix(int64_t{n} + spec.bucket);
  matrix(n);
  return out;
}

}  // namespace mim::fuzz

#endif  // MIM_TESTS_FUZZ_FASTTEXT_BIN_H_
