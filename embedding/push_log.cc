#include "embedding/push_log.h"

#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "base/big_endian.h"

namespace mim::embedding {
namespace {

constexpr uint8_t kFormat = 1;

uint32_t Fnv1a(const char* data, size_t n) {
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < n; ++i) {
    h ^= static_cast<uint8_t>(data[i]);
    h *= 16777619u;
  }
  return h;
}

template <typename T>
void Put(std::string* out, T v) {
  char buf[sizeof(T)];
  std::memcpy(buf, &v, sizeof(T));
  out->append(buf, sizeof(T));
}

template <typename T>
T Get(const char* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

}  // namespace

ClientWindow::Seen ClientWindow::Check(uint64_t sequence) const {
  if (sequence > highest_) return Seen::kNew;
  const uint64_t back = highest_ - sequence;
  if (back >= kWindow) return Seen::kTooOld;
  return (bits_[back / 64] >> (back % 64)) & 1 ? Seen::kApplied : Seen::kNew;
}

void ClientWindow::Mark(uint64_t sequence) {
  if (sequence > highest_) {
    const uint64_t shift = sequence - highest_;
    highest_ = sequence;
    if (shift >= kWindow) {
      bits_.fill(0);
    } else {
      // Shift the whole bit array up by `shift` (bit i -> bit i + shift).
      const size_t words = shift / 64, bits = shift % 64;
      for (size_t w = bits_.size(); w-- > 0;) {
        uint64_t v = w >= words ? bits_[w - words] << bits : 0;
        if (bits != 0 && w >= words + 1) v |= bits_[w - words - 1] >> (64 - bits);
        bits_[w] = v;
      }
    }
  }
  const uint64_t back = highest_ - sequence;
  bits_[back / 64] |= uint64_t{1} << (back % 64);
}

std::string ClientWindow::Encode(int64_t last_used_micros) const {
  std::string out;
  out.reserve(1 + 8 + 8 * bits_.size() + 8 + 4);
  Put<uint8_t>(&out, kFormat);
  Put<uint64_t>(&out, highest_);
  for (uint64_t w : bits_) Put<uint64_t>(&out, w);
  Put<int64_t>(&out, last_used_micros);
  Put<uint32_t>(&out, Fnv1a(out.data(), out.size()));
  return out;
}

absl::StatusOr<ClientWindow> ClientWindow::Decode(uint64_t client_id,
                                                  absl::string_view value,
                                                  int64_t* last_used_micros) {
  constexpr size_t kSize = 1 + 8 + 8 * (kWindow / 64) + 8 + 4;
  auto bad = [client_id](absl::string_view why) {
    return absl::DataLossError(absl::StrCat(
        "stored push log of client ", client_id, " is corrupt: ", why));
  };
  if (value.size() != kSize) {
    return bad(absl::StrCat(value.size(), " bytes, expected ", kSize));
  }
  const char* p = value.data();
  if (Get<uint32_t>(p + kSize - 4) != Fnv1a(p, kSize - 4)) {
    return bad("checksum mismatch");
  }
  if (Get<uint8_t>(p) != kFormat) return bad("unknown format");
  ClientWindow w;
  w.highest_ = Get<uint64_t>(p + 1);
  for (size_t i = 0; i < w.bits_.size(); ++i) {
    w.bits_[i] = Get<uint64_t>(p + 9 + 8 * i);
  }
  *last_used_micros = Get<int64_t>(p + 9 + 8 * w.bits_.size());
  return w;
}

std::string PushLogKey(uint64_t client_id) {
  std::string key(kPushLogPrefix);
  key.resize(kPushLogPrefix.size() + 8);
  base::StoreBigEndian64(client_id, key.data() + kPushLogPrefix.size());
  return key;
}

bool ParsePushLogKey(absl::string_view key, uint64_t* client_id) {
  if (key.size() != kPushLogPrefix.size() + 8 ||
      key.substr(0, kPushLogPrefix.size()) != kPushLogPrefix) {
    return false;
  }
  *client_id = base::LoadBigEndian64(key.data() + kPushLogPrefix.size());
  return true;
}

PushLog::Pinned::~Pinned() {
  if (entry_ != nullptr) log_->Unpin(entry_.get());
}

void PushLog::Unpin(Entry* entry) {
  absl::MutexLock lock(&mu_);
  --entry->pins;
}

absl::StatusOr<PushLog::Pinned> PushLog::Get(uint64_t client_id,
                                             int64_t now_micros,
                                             std::vector<Evicted>* evicted) {
  absl::MutexLock lock(&mu_);
  if (evicting_.contains(client_id)) {
    return absl::AbortedError(absl::StrCat(
        "the record of client ", client_id,
        " is being evicted from the push log by another client's push; "
        "nothing was applied, send the push again"));
  }
  auto [it, inserted] = entries_.try_emplace(client_id);
  if (!inserted) {
    ++it->second->pins;
    return Pinned(this, it->second);
  }
  it->second = std::make_shared<Entry>();
  std::shared_ptr<Entry> entry = it->second;
  ++entry->pins;
  {
    absl::MutexLock entry_lock(&entry->mu);
    entry->last_used_micros = now_micros;
  }
  while (entries_.size() > max_clients_) {
    // The least recently used client that no push holds right now. An
    // unpinned entry's mutex is free (only a pinned holder takes it).
    uint64_t victim = 0;
    int64_t oldest = std::numeric_limits<int64_t>::max();
    bool found = false;
    for (auto& [id, e] : entries_) {
      if (e->pins > 0 || !e->mu.TryLock()) continue;
      const int64_t used = e->last_used_micros;
      e->mu.Unlock();
      if (!found || used < oldest) {
        victim = id;
        oldest = used;
        found = true;
      }
    }
    if (!found) break;  // every other client is mid-push: over by a few
    auto gone = entries_.find(victim);
    evicted->push_back(Evicted{victim, std::move(gone->second)});
    entries_.erase(gone);
    evicting_.insert(victim);
  }
  return Pinned(this, std::move(entry));
}

void PushLog::EvictionsWritten(const std::vector<Evicted>& evicted) {
  absl::MutexLock lock(&mu_);
  for (const Evicted& e : evicted) evicting_.erase(e.client_id);
}

void PushLog::Reinstate(std::vector<Evicted> evicted) {
  absl::MutexLock lock(&mu_);
  for (Evicted& e : evicted) {
    evicting_.erase(e.client_id);
    entries_.try_emplace(e.client_id, std::move(e.entry));
  }
}

void PushLog::Load(uint64_t client_id, const ClientWindow& window,
                   int64_t last_used_micros) {
  auto entry = std::make_shared<Entry>();
  {
    absl::MutexLock entry_lock(&entry->mu);
    entry->window = window;
    entry->last_used_micros = last_used_micros;
  }
  absl::MutexLock lock(&mu_);
  entries_[client_id] = std::move(entry);
}

size_t PushLog::size() const {
  absl::MutexLock lock(&mu_);
  return entries_.size();
}

void PushLog::Swap(PushLog* other) {
  absl::MutexLock a(&mu_);
  absl::MutexLock b(&other->mu_);
  entries_.swap(other->entries_);
}

}  // namespace mim::embedding
