// kvhub-demo: a multi-turn chat workload against a running kvhub cluster, the
// way a serving fleet uses it. Every turn of every conversation is a prefill:
// LookupPrefix for the prompt, Fetch the cached prefix (every byte verified
// against what the prefill that published it computed), "recompute" the rest,
// Publish the new full blocks. Prints what an operator cares about: the
// token-weighted prefix hit rate, bandwidth, latency percentiles, shard state.
//
// Block payloads are real encoded KV blocks (codec/, default kivi4) of
// synthetic KV with the structure of real keys and values; each block's tensor
// is a deterministic function of its key, so a fetch is checked byte for byte
// against what the prefill published (not only by checksum), then decoded into
// a bf16 KV buffer as a decode worker would.

#include <algorithm>
#include <atomic>
#include <cinttypes>
#include <cstdio>
#include <random>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "client/client.h"
#include "codec/codec.h"
#include "codec/synthetic_kv.h"
#include "common/clock.h"
#include "common/flags.h"
#include "common/keys.h"
#include "common/log.h"
#include "common/malloc_tuning.h"
#include "common/mutex_checks.h"
#include "common/model_spec.h"
#include "common/output_file.h"

ABSL_FLAG(std::string, members, "", "comma-separated host:port of the kvhubd shards");
ABSL_FLAG(std::string, spec,
          "model=demo-8b,layers=8,kv_heads=8,head_dim=128,dtype=bf16,rope_base=500000,block_tokens=64",
          "model spec of the published blocks (its raw block size is the payload size)");
ABSL_FLAG(std::string, ns, "demo", "namespace");
ABSL_FLAG(int, conversations, 48, "conversations");
ABSL_FLAG(int, turns, 4, "turns per conversation");
ABSL_FLAG(int, system_prompts, 3, "distinct shared system prompts");
ABSL_FLAG(int, system_prompt_tokens, 512, "tokens of each system prompt");
ABSL_FLAG(int, clients, 4, "concurrent client threads (one conversation each at a time)");
ABSL_FLAG(uint64_t, seed, 42, "workload seed");
ABSL_FLAG(std::string, codec, "kivi4", "block codec: raw, lossless, fp8, int8, kivi4, kivi2");
ABSL_FLAG(std::string, log_level, "error", "client log level: trace|debug|info|warn|error|off");
ABSL_FLAG(std::string, ucx_tls, "",
          "the client's UCX transports (the shards' --ucx_tls); empty: UCX's choice, where the "
          "client keeps gRPC for shards it reaches only over tcp");

namespace kvhub {
namespace {

uint64_t SplitMix(uint64_t& s) {
  uint64_t z = (s += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// What a prefill computes and publishes for a block: synthetic KV (one of a few
// templates with real K/V structure, its low mantissa bits stirred by the
// block key so every block differs) encoded with the chosen codec.
class Payloads {
 public:
  absl::Status Init(const ModelSpec& spec, codec::CodecId codec_id) {
    spec_ = spec;
    params_.codec = codec_id;
    for (int t = 0; t < kTemplates; ++t) {
      codec::SyntheticKvConfig c;
      c.layers = spec.layers;
      c.kv_heads = spec.kv_heads;
      c.head_dim = spec.head_dim;
      c.tokens = spec.block_tokens;
      c.rope_base = spec.rope_base;
      c.rope_pairing = spec.rope_pairing;
      c.base_position = t == 0 ? 0 : int64_t{t} * spec.block_tokens;  // template 0 holds the sink
      c.seed = 1000 + t;
      auto kv = codec::GenerateSyntheticKv(c);
      if (!kv.ok()) return kv.status();
      templates_[t] = std::move(kv->kv);
      shape_ = kv->shape;
    }
    return absl::OkStatus();
  }

  uint64_t RawBytes() const { return shape_.RawBytes(); }

  // Encoded block `index` (position index * block_tokens) of the chain whose key is `key`.
  absl::Status Make(const BlockKey& key, size_t index, std::vector<uint8_t>* raw,
                    std::vector<uint8_t>* out) const {
    const std::vector<uint8_t>& tpl = templates_[index == 0 ? 0 : 1 + index % (kTemplates - 1)];
    raw->resize(tpl.size());
    uint64_t s = key.lo ^ (key.hi * 0x9e3779b97f4a7c15ULL);
    size_t i = 0;
    for (; i + 8 <= tpl.size(); i += 8) {
      uint64_t v;
      std::memcpy(&v, tpl.data() + i, 8);
      v ^= SplitMix(s) & 0x0001000100010001ULL;  // lowest mantissa bit of each bf16
      std::memcpy(raw->data() + i, &v, 8);
    }
    std::memcpy(raw->data() + i, tpl.data() + i, tpl.size() - i);
    codec::KvView view;
    view.shape = shape_;
    view.data = raw->data();
    view.size = raw->size();
    view.base_position = static_cast<int64_t>(index) * spec_.block_tokens;
    view.rope_base = spec_.rope_base;
    view.rope_pairing = spec_.rope_pairing;
    view.fingerprint = spec_.Fingerprint();
    return codec::Encode(view, params_, out);
  }

  // Decodes a fetched block into a bf16 KV buffer of RawBytes() bytes.
  absl::Status DecodeInto(std::span<const uint8_t> block, std::vector<uint8_t>* kv) const {
    kv->resize(shape_.RawBytes());
    codec::KvMutableView out{shape_, kv->data(), kv->size()};
    return codec::Decode(absl::MakeConstSpan(block.data(), block.size()), out);
  }

 private:
  static constexpr int kTemplates = 4;
  ModelSpec spec_;
  codec::CodecParams params_;
  codec::KvShape shape_;
  std::vector<uint8_t> templates_[kTemplates];
};

// [start, end) of one transfer, in nanoseconds since the run began.
using Interval = std::pair<int64_t, int64_t>;

struct Latencies {
  absl::Mutex mu;
  std::vector<double> lookup_ms ABSL_GUARDED_BY(mu), fetch_ms ABSL_GUARDED_BY(mu),
      publish_ms ABSL_GUARDED_BY(mu);
  // When fetches and publishes were on the wire, from every client thread: the
  // aggregate bandwidth is bytes over the time at least one was.
  std::vector<Interval> fetching ABSL_GUARDED_BY(mu), publishing ABSL_GUARDED_BY(mu);
};

struct Totals {
  std::atomic<uint64_t> prompt_tokens{0}, hit_tokens{0}, fetched_blocks{0}, fetched_bytes{0},
      published_blocks{0}, published_bytes{0}, skipped_blocks{0}, mismatches{0}, fetch_short{0},
      errors{0}, unanswered_keys{0};
  // The first error of the run, printed with the totals (a count alone says not what).
  absl::Mutex mu;
  absl::Status first_error ABSL_GUARDED_BY(mu);
  void Error(const absl::Status& s) {
    ++errors;
    absl::MutexLock l(&mu);
    if (first_error.ok()) first_error = s;
  }
};

// The length of the union of `v` (sorted in place).
int64_t UnionNanos(std::vector<Interval>& v) {
  std::sort(v.begin(), v.end());
  int64_t total = 0, start = 0, end = -1;
  for (const auto& [s, e] : v) {
    if (s > end) {
      if (end > start) total += end - start;
      start = s;
      end = e;
    } else {
      end = std::max(end, e);
    }
  }
  if (end > start) total += end - start;
  return total;
}

double Pct(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * (v.size() - 1) + 0.5))];
}

int Run() {
  auto members = ClientConfig::ParseMembers(absl::GetFlag(FLAGS_members));
  if (!members.ok()) {
    std::fprintf(stderr, "kvhub-demo: --members: %s\n", members.status().ToString().c_str());
    return 2;
  }
  struct Bound {
    const char* flag;
    int value, lo, hi;
  };
  for (const Bound& b : {Bound{"conversations", absl::GetFlag(FLAGS_conversations), 1, 100000},
                         Bound{"turns", absl::GetFlag(FLAGS_turns), 1, 1000},
                         Bound{"system_prompts", absl::GetFlag(FLAGS_system_prompts), 1, 10000},
                         Bound{"system_prompt_tokens", absl::GetFlag(FLAGS_system_prompt_tokens), 0, 1 << 20},
                         Bound{"clients", absl::GetFlag(FLAGS_clients), 1, 256}}) {
    if (b.value < b.lo || b.value > b.hi) {
      std::fprintf(stderr, "kvhub-demo: --%s must be %d..%d, got %d\n", b.flag, b.lo, b.hi, b.value);
      return 2;
    }
  }
  auto spec = ModelSpec::Parse(absl::GetFlag(FLAGS_spec));
  if (!spec.ok()) {
    std::fprintf(stderr, "kvhub-demo: --spec: %s\n", spec.status().ToString().c_str());
    return 2;
  }
  if (absl::Status s = SetLogLevel(absl::GetFlag(FLAGS_log_level)); !s.ok()) {
    std::fprintf(stderr, "kvhub-demo: --log_level: %s\n", std::string(s.message()).c_str());
    return 2;
  }
  ClientConfig config;
  config.members = *members;
  config.ucx_tls = absl::GetFlag(FLAGS_ucx_tls);
  config.ApplySecurityEnvironment();
  auto client_or = Client::Create(config);
  if (!client_or.ok()) {
    std::fprintf(stderr, "kvhub-demo: %s\n", client_or.status().ToString().c_str());
    return 2;
  }
  Client& client = **client_or;
  if (absl::Status up = client.CheckMembersAnswer(); !up.ok()) {  // before the workload
    std::fprintf(stderr, "kvhub-demo: %s\n", up.ToString().c_str());
    return 1;
  }
  const std::string ns = absl::GetFlag(FLAGS_ns);
  const uint32_t bt = spec->block_tokens;
  auto codec_id = codec::ParseCodecName(absl::GetFlag(FLAGS_codec));
  if (!codec_id.ok()) {
    std::fprintf(stderr, "kvhub-demo: --codec: %s\n", codec_id.status().ToString().c_str());
    return 2;
  }
  Payloads payloads;
  if (absl::Status s = payloads.Init(*spec, *codec_id); !s.ok()) {
    std::fprintf(stderr, "kvhub-demo: synthetic KV for --spec: %s\n", s.ToString().c_str());
    return 2;
  }
  const uint64_t raw_bytes = payloads.RawBytes();
  uint64_t encoded_bytes = 0;
  {
    std::vector<uint8_t> raw, enc;
    if (absl::Status s = payloads.Make(BlockKey{1, 2}, 1, &raw, &enc); !s.ok()) {
      std::fprintf(stderr, "kvhub-demo: encode: %s\n", s.ToString().c_str());
      return 2;
    }
    encoded_bytes = enc.size();
  }
  const int conversations = absl::GetFlag(FLAGS_conversations);
  const int turns = absl::GetFlag(FLAGS_turns);
  const int n_sys = std::max(1, absl::GetFlag(FLAGS_system_prompts));
  const uint64_t seed = absl::GetFlag(FLAGS_seed);

  std::vector<std::vector<int32_t>> system_prompts(n_sys);
  for (int i = 0; i < n_sys; ++i) {
    uint64_t s = seed * 1000 + i;
    for (int t = 0; t < absl::GetFlag(FLAGS_system_prompt_tokens); ++t) {
      system_prompts[i].push_back(static_cast<int32_t>(SplitMix(s) % 128000));
    }
  }

  std::printf("kvhub demo: %zu shards, %d conversations x %d turns, %d clients\n"
              "  %u-token blocks of %s: %.2f MiB bf16 -> %.2f MiB %s (%.2fx)\n",
              client.member_count(), conversations, turns, absl::GetFlag(FLAGS_clients), bt,
              spec->model.c_str(), raw_bytes / 1048576.0, encoded_bytes / 1048576.0,
              absl::GetFlag(FLAGS_codec).c_str(), static_cast<double>(raw_bytes) / encoded_bytes);
  std::fflush(stdout);

  Totals tot;
  Latencies lat;
  std::atomic<int> next_conv{0};
  std::atomic<int64_t> decode_nanos{0};
  std::atomic<uint64_t> decoded_bytes{0};
  const absl::Time start = Clock::Real()->Now();
  auto worker = [&]() {
    std::vector<uint8_t> raw, expected, kv;
    std::vector<std::vector<uint8_t>> fetch_bufs;
    // Fetch buffers hold an encoded block; its size is bounded by the raw size plus header slack.
    const uint64_t buf_bytes = std::max(raw_bytes, encoded_bytes) + (1 << 20);
    for (int c; (c = next_conv.fetch_add(1)) < conversations;) {
      std::mt19937_64 rng(seed ^ (0x51ed27ULL * (c + 1)));
      std::vector<int32_t> prompt = system_prompts[c % n_sys];
      for (int turn = 0; turn < turns; ++turn) {
        // The user's new message.
        int user = 64 + static_cast<int>(rng() % 448);
        for (int i = 0; i < user; ++i) prompt.push_back(static_cast<int32_t>(rng() % 128000));
        tot.prompt_tokens += prompt.size();

        absl::Time t0 = Clock::Real()->Now();
        auto lookup = client.LookupPrefix(ns, *spec, prompt);
        absl::Time t1 = Clock::Real()->Now();
        if (!lookup.ok()) {
          tot.Error(lookup.status());
          continue;
        }
        // A shard that did not answer makes its keys look absent: an error, not misses.
        if (lookup->unreachable_keys > 0 || !lookup->first_error.ok()) {
          tot.unanswered_keys += lookup->unreachable_keys;
          tot.Error(lookup->first_error.ok() ? absl::UnavailableError("lookup: a shard did not answer")
                                             : lookup->first_error);
        }
        size_t hit = lookup->hit_blocks;
        // Fetch the cached prefix, check it byte for byte, decode it into the KV buffer.
        size_t valid = 0;
        int64_t decode_ns = 0;
        int64_t transfer_ns = 0;
        Interval fetch_span{0, 0};
        std::vector<uint64_t> fetched_sizes;
        if (hit > 0) {
          if (fetch_bufs.size() < hit) fetch_bufs.resize(hit, std::vector<uint8_t>(buf_bytes));
          std::vector<std::span<uint8_t>> spans;
          for (size_t i = 0; i < hit; ++i) spans.emplace_back(fetch_bufs[i]);
          absl::Time f0 = Clock::Real()->Now();
          auto fetched = client.Fetch(ns, *spec, prompt, hit, spans);
          transfer_ns = absl::ToInt64Nanoseconds(Clock::Real()->Now() - f0);
          fetch_span = {absl::ToInt64Nanoseconds(f0 - start), absl::ToInt64Nanoseconds(f0 - start) + transfer_ns};
          if (fetched.ok()) {
            valid = fetched->valid_blocks;
            fetched_sizes = fetched->sizes;
            for (size_t i = 0; i < valid; ++i) {
              std::span<const uint8_t> got(fetch_bufs[i].data(), fetched->sizes[i]);
              absl::Time d0 = Clock::Real()->Now();
              absl::Status ds = payloads.DecodeInto(got, &kv);
              decode_ns += absl::ToInt64Nanoseconds(Clock::Real()->Now() - d0);
              bool same = payloads.Make(lookup->keys[i], i, &raw, &expected).ok() &&
                          expected.size() == got.size() &&
                          std::memcmp(expected.data(), got.data(), got.size()) == 0;
              if (!ds.ok() || !same) {
                ++tot.mismatches;
                valid = i;
                break;
              }
              decoded_bytes += kv.size();
              tot.fetched_bytes += got.size();
            }
            tot.fetched_blocks += valid;
            // The block that ended the run: absent (evicted since the lookup) is the
            // cache working; anything else (a checksum, a dead shard) is an error.
            const size_t cut = fetched->valid_blocks;
            if (cut < hit && cut < fetched->status.size() && !fetched->status[cut].ok() &&
                !absl::IsNotFound(fetched->status[cut])) {
              tot.Error(fetched->status[cut]);
            }
          } else {
            tot.Error(fetched.status());
          }
          if (valid < hit) ++tot.fetch_short;  // cut short: recomputed
        }
        tot.hit_tokens += valid * bt;
        decode_nanos += decode_ns;

        // Prefill computed the rest; publish every full block (present ones are skipped).
        const size_t full = prompt.size() / bt;
        std::vector<std::vector<uint8_t>> encoded(full);
        std::vector<std::span<const uint8_t>> blocks(full);
        bool encode_ok = true;
        for (size_t i = 0; i < full; ++i) {
          if (i < valid) {  // fetched and verified: publish skips it anyway
            blocks[i] = std::span<const uint8_t>(fetch_bufs[i].data(), fetched_sizes[i]);
            continue;
          }
          encode_ok = encode_ok && payloads.Make(lookup->keys[i], i, &raw, &encoded[i]).ok();
          blocks[i] = encoded[i];
        }
        if (!encode_ok) {
          tot.Error(absl::InternalError("encoding a block to publish failed"));
          continue;
        }
        absl::Time t3 = Clock::Real()->Now();
        auto pub = client.Publish(ns, *spec, prompt, blocks);
        absl::Time t4 = Clock::Real()->Now();
        if (pub.ok()) {
          tot.published_blocks += pub->stored;
          tot.published_bytes += pub->bytes_uploaded;
          tot.skipped_blocks += pub->skipped;
          if (pub->failed) {
            absl::Status why = absl::UnknownError("publish: a block was not stored");
            for (const absl::Status& e : pub->errors) {
              if (!e.ok()) {
                why = e;
                break;
              }
            }
            tot.Error(why);
          }
        } else {
          tot.Error(pub.status());
        }
        // Fetch bandwidth counts the transfer only, its latency the transfer and the
        // decode (our byte check, which a real client does not run, is excluded).
        {
          absl::MutexLock l(&lat.mu);
          lat.lookup_ms.push_back(absl::ToDoubleMilliseconds(t1 - t0));
          if (hit > 0) {
            lat.fetch_ms.push_back(static_cast<double>(transfer_ns + decode_ns) / 1e6);
            lat.fetching.push_back(fetch_span);
          }
          lat.publish_ms.push_back(absl::ToDoubleMilliseconds(t4 - t3));
          lat.publishing.push_back({absl::ToInt64Nanoseconds(t3 - start), absl::ToInt64Nanoseconds(t4 - start)});
        }
        // The model's answer becomes part of the next turn's prompt.
        int answer = 64 + static_cast<int>(rng() % 320);
        for (int i = 0; i < answer; ++i) prompt.push_back(static_cast<int32_t>(rng() % 128000));
      }
    }
  };
  std::vector<std::thread> threads;
  for (int i = 0; i < std::max(1, absl::GetFlag(FLAGS_clients)); ++i) threads.emplace_back(worker);
  for (auto& t : threads) t.join();
  const double secs = absl::ToDoubleSeconds(Clock::Real()->Now() - start);

  const double hit_rate = tot.prompt_tokens ? 100.0 * tot.hit_tokens / tot.prompt_tokens : 0;
  // Aggregate bandwidth: bytes over the wall time during which at least one
  // transfer of that kind was on the wire, from any client thread.
  auto gbps = [&](uint64_t bytes, std::vector<Interval>* on_wire) {
    absl::MutexLock l(&lat.mu);
    const int64_t nanos = UnionNanos(*on_wire);
    return nanos > 0 ? static_cast<double>(bytes) / static_cast<double>(nanos) : 0.0;
  };
  std::printf("\n== results (%.1f s) ==\n", secs);
  std::printf("prefix hit rate      %5.1f%% of prompt tokens (%" PRIu64 " of %" PRIu64 ") served from cache\n",
              hit_rate, tot.hit_tokens.load(), tot.prompt_tokens.load());
  std::printf("fetched              %" PRIu64 " blocks, %.2f GiB on the wire, %.2f GB/s aggregate; every byte verified: %" PRIu64 " mismatches\n",
              tot.fetched_blocks.load(), tot.fetched_bytes / 1073741824.0,
              gbps(tot.fetched_bytes, &lat.fetching), tot.mismatches.load());
  std::printf("decoded              %.2f GiB of bf16 KV at %.2f GB/s per client thread (%s)\n",
              decoded_bytes / 1073741824.0,
              decode_nanos > 0 ? static_cast<double>(decoded_bytes) / decode_nanos : 0.0,
              absl::GetFlag(FLAGS_codec).c_str());
  std::printf("published            %" PRIu64 " blocks, %.2f GiB, %.2f GB/s aggregate; %" PRIu64 " already present (skipped)\n",
              tot.published_blocks.load(), tot.published_bytes / 1073741824.0,
              gbps(tot.published_bytes, &lat.publishing), tot.skipped_blocks.load());
  std::printf("fetches cut short    %" PRIu64 " (a block evicted between lookup and fetch, or an error: recomputed, never served wrong)\n",
              tot.fetch_short.load());
  {
    absl::MutexLock l(&tot.mu);
    std::printf("errors               %" PRIu64 "%s%s\n", tot.errors.load(),
                tot.unanswered_keys > 0 ? absl::StrCat(" (", tot.unanswered_keys.load(), " lookup keys unanswered)").c_str()
                                        : "",
                tot.first_error.ok() ? "" : absl::StrCat("; first: ", tot.first_error.ToString()).c_str());
  }
  {
    absl::MutexLock l(&lat.mu);
    std::printf("\nlatency per request (ms)     p50      p95      p99      max   (fetch includes decode)\n");
    for (auto [name, v] : {std::pair{"lookup prefix", &lat.lookup_ms}, std::pair{"fetch prefix", &lat.fetch_ms},
                           std::pair{"publish", &lat.publish_ms}}) {
      std::printf("  %-24s %7.2f  %7.2f  %7.2f  %7.2f\n", name, Pct(*v, 0.5), Pct(*v, 0.95),
                  Pct(*v, 0.99), Pct(*v, 1.0));
    }
  }
  std::printf("\nshard                   transport\n");
  for (const ShardTransportStats& t : client.TransportStats()) {
    std::printf("  %-20s  %s\n", t.address.c_str(), t.transport.c_str());
  }
  // The shards' own token hit rate (what /metrics and the dashboard show): prefill
  // lookups only, full blocks only (a prompt's partial last block is never a key).
  std::printf("\nshard                   blocks    used MiB / capacity MiB   evictions   token hit rate\n");
  for (const auto& m : client.Stats()) {
    if (!m.stats.ok()) {
      std::printf("  %-20s unreachable: %s\n", m.address.c_str(), m.stats.status().ToString().c_str());
      continue;
    }
    const uint64_t req = m.stats->lookup_requested_tokens();
    const double rate = req > 0 ? 100.0 * static_cast<double>(m.stats->lookup_hit_tokens()) / req : 0.0;
    for (const auto& t : m.stats->tiers()) {
      std::printf("  %-20s %7" PRIu64 "   %8.1f / %-8.1f        %-9" PRIu64 "   %5.1f%%\n", m.address.c_str(),
                  t.blocks(), t.used_bytes() / 1048576.0, t.capacity_bytes() / 1048576.0, t.evictions(), rate);
    }
  }
  return (tot.mismatches == 0 && tot.errors == 0) ? 0 : 1;
}

}  // namespace
}  // namespace kvhub

int main(int argc, char** argv) {
  kvhub::LogToStderr("kvhub-demo");  // stdout carries only the program's output
  kvhub::TuneMallocForLargeBuffers();
  kvhub::TurnOffMutexDeadlockChecks();  // tests keep them; see common/mutex_checks.h
  std::vector<char*> rest =
      kvhub::ParseFlagsOrExit(argc, argv, "a multi-turn chat workload.\n  kvhub-demo --members=HOST:PORT,...");
  if (rest.size() > 1) {
    std::fprintf(stderr, "kvhub-demo: unexpected argument '%s' (flags are --key=value)\n", rest[1]);
    return 2;
  }
  return kvhub::ExitCodeAfterStdout(kvhub::Run(), "kvhub-demo");
}
