// Fuzz target: loading a C-SFT encoder file (worker/csft/encoder.h), as the
// trainer (--csft_encoder) and the serving tier (a manifest of encoder kind
// csft) do, and encoding one item with it, as UpsertItem does.
//
// Two kinds of input:
//  - One that starts with '#': the whole file as given (header parsing;
//    most fail the checksum).
//  - Anything else: the first 7 bytes pick a small config (dim 1..8,
//    input_dim dim..dim+3, num_genres 1..4, genre_dim 1..4, hidden 1..8,
//    fusion, residual gate 0..15) and the rest are the parameter bytes,
//    cut or zero-padded to the config's count; the harness writes the
//    header with the right count and checksum, so inputs reach the
//    parameter checks and the encoder.
//
// Invariants: a refusal is NOT_FOUND or DATA_LOSS; a loaded encoder has
// finite parameters, and encoding a unit plain vector with every genre
// either gives dim finite values of unit norm (or all zeros when the
// residual cancels the vector exactly) or is refused with DATA_LOSS.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "tests/fuzz/fuzz_util.h"
#include "worker/csft/encoder.h"

namespace {

using mim::csft::CsftEncoder;
using mim::csft::EncoderConfig;
using mim::fuzz::Require;

uint64_t Fnv1a64(const std::string& bytes) {
  uint64_t h = 14695981039346656037ull;
  for (char c : bytes) {
    h ^= static_cast<unsigned char>(c);
    h *= 1099511628211ull;
  }
  return h;
}

// The parameter count of `c` (encoder.cc's layout).
int64_t NumParams(const EncoderConfig& c) {
  const int64_t f = c.fusion_dim();
  return int64_t(c.num_genres) * c.genre_dim + f * c.hidden + c.hidden +
         int64_t(c.hidden) * c.dim + c.dim + int64_t(c.dim) * c.dim + c.dim +
         int64_t(c.num_genres) * c.dim;
}

std::string FileFromConfigBytes(const uint8_t* data, size_t size) {
  EncoderConfig c;
  c.dim = 1 + data[0] % 8;
  c.input_dim = c.dim + data[1] % 4;
  c.num_genres = 1 + data[2] % 4;
  c.genre_dim = 1 + data[3] % 4;
  c.hidden = 1 + data[4] % 8;
  c.tensor_fusion = data[5] % 2 == 0;
  const int gate = data[6] % 16;
  const int64_t n = NumParams(c);
  std::string params(size_t(n) * sizeof(float), '\0');
  std::memcpy(params.data(), data + 7, std::min(params.size(), size - 7));
  const std::string gate_field =
      gate > 0 ? absl::StrFormat("\tresidual_gate=%d", gate) : "";
  return absl::StrFormat(
             "#mim-csft-encoder v1\tdim=%d\tinput_dim=%d\tnum_genres=%d\t"
             "genre_dim=%d\thidden=%d\tfusion=%s%s\tparams=%d\t"
             "fnv1a64=%016x\n",
             c.dim, c.input_dim, c.num_genres, c.genre_dim, c.hidden,
             c.tensor_fusion ? "tensor" : "concat", gate_field, n,
             Fnv1a64(params)) +
         params;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string file;
  if (size > 0 && data[0] == '#') {
    file.assign(reinterpret_cast<const char*>(data), size);
  } else if (size >= 7) {
    file = FileFromConfigBytes(data, size);
  } else {
    return 0;
  }
  const std::string path = mim::fuzz::WriteScratchFile("csft.encoder", file);
  absl::StatusOr<std::unique_ptr<CsftEncoder>> e = CsftEncoder::Load(path);
  if (!e.ok()) {
    Require(e.status().code() == absl::StatusCode::kNotFound ||
                e.status().code() == absl::StatusCode::kDataLoss,
            "Load refused with a code other than NOT_FOUND / DATA_LOSS");
    return 0;
  }
  const EncoderConfig& c = (*e)->config();
  Require(c.dim >= 1 && c.input_dim >= c.dim && c.num_genres >= 1,
          "Load accepted a config Create refuses");
  for (float p : (*e)->params()) Require(std::isfinite(p), "non-finite parameter loaded");

  std::vector<float> plain(c.input_dim, 0.0f);
  plain[0] = 1.0f;
  std::vector<int32_t> genres;
  for (int g = 0; g < c.num_genres; ++g) genres.push_back(g);
  std::vector<float> out(c.dim, 7.0f);
  for (int64_t interactions : {int64_t{0}, int64_t{5}}) {
    absl::Status s = (*e)->Encode({{plain.data(), &genres, interactions}},
                                  out.data());
    if (!s.ok()) {
      Require(s.code() == absl::StatusCode::kDataLoss,
              "Encode of a valid input refused with a code other than DATA_LOSS");
      continue;
    }
    double sq = 0;
    for (float x : out) {
      Require(std::isfinite(x), "Encode gave a non-finite value");
      sq += double(x) * x;
    }
    Require(sq == 0 || std::abs(sq - 1.0) < 1e-3, "Encode output not unit norm");
  }
  return 0;
}
