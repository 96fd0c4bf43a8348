// kvhub: the operators' CLI (docs/client.md).
//
//   kvhub keys   --ns NS --spec SPEC (--tokens 1,2,3 | --tokens-file PATH)
//   kvhub stats  (--addr HOST:PORT | --members A,B,C)
//   kvhub put    ... --ns NS --key HEX --file PATH|- [--parent HEX] [--pin]
//   kvhub get    ... --ns NS --key HEX [--out PATH|-] [--max-bytes N]
//   kvhub lookup ... --ns NS (--key HEX[,HEX..] | --spec SPEC --tokens ..)
//   kvhub rm     ... --ns NS (--key HEX[,HEX..] | --spec SPEC --tokens ..)
//
// Exit codes: 0 success, 1 failure (message on stderr), 2 usage error.

#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <iterator>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "common/input_file.h"
#include "common/log.h"
#include "common/malloc_tuning.h"
#include "common/mutex_checks.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "client/client.h"
#include "common/hash.h"
#include "common/keys.h"
#include "common/model_spec.h"
#include "common/output_file.h"
#include "common/version.h"
#include "tools/kvhub/cli_args.h"

namespace kvhub::cli {
namespace {

constexpr char kUsage[] = R"(usage: kvhub <command> [flags]

commands:
  keys    print the spec fingerprint and the block keys (DESIGN §2) of a token list
            --ns NS --spec SPEC (--tokens 1,2,3 | --tokens-file PATH)
  stats   print every member's Stats
  put     store one block      --ns NS --key HEX --file PATH|- [--parent HEX] [--pin]
  get     fetch one block      --ns NS --key HEX [--out PATH|- (default -; not to a terminal)]
                               [--max-bytes N|NKiB|NMiB (64MiB)]
  lookup  which blocks exist   --ns NS (--key HEX[,HEX...] | --spec SPEC --tokens ...)
  rm      delete blocks        --ns NS (--key HEX[,HEX...] | --spec SPEC --tokens ...)

cluster (stats, put, get, lookup, rm):
  --addr HOST:PORT             one shard
  --members A,B,C              a static member list (HOST:PORT[@WEIGHT], rendezvous placement)
  --deadline-ms N              deadline of each call, retries included (default 5000; 30000 for
                               block transfers)
  --token-file PATH            bearer token for shards with auth_tokens_file (else $KVHUB_TOKEN)
  --tls-ca PATH                PEM CA of the shards' certificates: connect over TLS
  --tls-cert PATH --tls-key PATH   client certificate and key (shards requiring mTLS)
  --tls-server-name NAME       check the shards' certificates against NAME, not the address
  --transport auto|grpc|ucx    data plane for block bytes (default auto: UCX over RDMA or
                               shared memory, else gRPC); --ucx-tls LIST sets UCX_TLS

SPEC is ModelSpec's compact form, e.g.
  model=llama3-8b,layers=32,kv_heads=8,head_dim=128,dtype=bf16,rope_base=500000,block_tokens=256
Tokens are comma- or whitespace-separated int32 values (a file may span lines).
Logs go to stderr at level warn; KVHUB_LOG_LEVEL=info (or debug, trace) shows more.
Exit codes: 0 ok, 1 failure, 2 usage.
)";


absl::Status Usage(absl::string_view msg) {
  return absl::InvalidArgumentError(absl::StrCat("usage: ", msg));
}
bool IsUsage(const absl::Status& s) {
  return s.code() == absl::StatusCode::kInvalidArgument &&
         absl::StartsWith(s.message(), "usage: ");
}

absl::StatusOr<std::string> Required(Args& a, const std::string& name) {
  std::optional<std::string> v = a.Get(name);
  if (!v.has_value() || v->empty()) return Usage(absl::StrCat("--", name, " is required"));
  return *v;
}

// Ids separated by commas and/or whitespace. Two commas with no id between them are
// refused (a stray ",," from a script would otherwise silently drop an id and hash
// another prompt); one trailing comma is allowed.
absl::StatusOr<std::vector<int32_t>> ParseTokens(absl::string_view text, absl::string_view origin) {
  std::vector<int32_t> out;
  const std::vector<absl::string_view> fields = absl::StrSplit(text, ',');
  for (size_t f = 0; f < fields.size(); ++f) {
    size_t ids = 0;
    for (absl::string_view t : absl::StrSplit(fields[f], absl::ByAnyChar(" \t\r\n"), absl::SkipEmpty())) {
      int32_t v;
      if (!absl::SimpleAtoi(t, &v)) {
        return absl::InvalidArgumentError(
            absl::StrCat(origin, ": token '", t, "' is not an int32"));
      }
      out.push_back(v);
      ++ids;
    }
    if (ids == 0 && fields.size() > 1 && f + 1 < fields.size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          origin, ": no token id before comma ", f + 1, " (after ", out.size(), " ids)"));
    }
  }
  return out;
}

absl::StatusOr<std::vector<int32_t>> TokensArg(Args& a) {
  std::optional<std::string> inline_tokens = a.Get("tokens");
  std::optional<std::string> file = a.Get("tokens-file");
  if (inline_tokens.has_value() == file.has_value()) {
    return Usage("give exactly one of --tokens and --tokens-file");
  }
  if (inline_tokens.has_value()) {
    absl::StatusOr<std::vector<int32_t>> tokens = ParseTokens(*inline_tokens, "--tokens");
    if (!tokens.ok()) return Usage(tokens.status().message());
    return tokens;
  }
  // A prompt of millions of tokens fits; /dev/zero or an endless pipe is refused
  // instead of growing until the process is killed.
  constexpr size_t kMaxTokensFileBytes = size_t{16} << 20;
  absl::StatusOr<std::string> text = ReadInput(*file, kMaxTokensFileBytes);
  if (absl::IsResourceExhausted(text.status())) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tokens-file: ", text.status().message(), " (at most 16 MiB of token ids)"));
  }
  if (!text.ok()) return text.status();
  return ParseTokens(*text, *file);  // the file's content: a failure (exit 1), not usage
}

absl::StatusOr<ModelSpec> SpecArg(Args& a) {
  absl::StatusOr<std::string> s = Required(a, "spec");
  if (!s.ok()) return s.status();
  absl::StatusOr<ModelSpec> spec = ModelSpec::Parse(*s);
  if (!spec.ok()) return Usage(absl::StrCat("--spec: ", spec.status().message()));
  return spec;
}

// The keys a command names: --key HEX[,HEX...], or the full blocks of --spec and
// --tokens/--tokens-file (then *spec_tokens, when given, receives both: a token file
// is read once, so "-" works).
struct SpecTokens {
  ModelSpec spec;
  std::vector<int32_t> tokens;
};
absl::StatusOr<std::vector<BlockKey>> KeysArg(Args& a, const std::string& ns,
                                              std::optional<SpecTokens>* spec_tokens = nullptr) {
  std::optional<std::string> keys = a.Get("key");
  if (keys.has_value()) {
    // They were left unread, so the error was "unknown flag --spec".
    for (const char* other : {"spec", "tokens", "tokens-file"}) {
      if (a.Peek(other).has_value()) {  // given at all (Has takes "--tokens 0" for not given)
        return Usage(absl::StrCat("--key and --", other, " are alternatives: give one"));
      }
    }
    std::vector<BlockKey> out;
    for (absl::string_view h : absl::StrSplit(*keys, ',', absl::SkipEmpty())) {
      absl::StatusOr<U128> k = U128::FromHex(absl::StripAsciiWhitespace(h));
      if (!k.ok()) {
        return Usage(absl::StrCat("--key '", h, "': ", k.status().message()));
      }
      out.push_back(*k);
    }
    if (out.empty()) return Usage("--key is empty");
    return out;
  }
  if (!a.Has("spec")) return Usage("give --key HEX[,HEX...] or --spec and --tokens");
  absl::StatusOr<ModelSpec> spec = SpecArg(a);  // a bad --spec says what is wrong with it
  if (!spec.ok()) return spec.status();
  absl::StatusOr<std::vector<int32_t>> tokens = TokensArg(a);
  if (!tokens.ok()) return tokens.status();
  std::vector<BlockKey> out = BlockKeys(ns, *spec, *tokens);
  if (out.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(tokens->size(), " tokens make no full block of ",
                                                   spec->block_tokens, " tokens"));
  }
  if (spec_tokens != nullptr) *spec_tokens = SpecTokens{*std::move(spec), *std::move(tokens)};
  return out;
}

absl::StatusOr<std::unique_ptr<Client>> ClientArg(Args& a) {
  std::optional<std::string> addr = a.Get("addr");
  std::optional<std::string> members = a.Get("members");
  if (addr.has_value() == members.has_value()) return Usage("give exactly one of --addr and --members");
  ClientConfig cfg;
  absl::StatusOr<std::vector<MemberConfig>> m = ClientConfig::ParseMembers(addr ? *addr : *members);
  if (!m.ok()) return Usage(absl::StrCat(addr ? "--addr: " : "--members: ", m.status().message()));  // exit 2
  if (addr.has_value() && (m->size() != 1 || absl::StrContains(*addr, '@'))) {
    return Usage("--addr takes one HOST:PORT (a weight means something only in --members)");
  }
  cfg.members = *std::move(m);
  cfg.concurrency = 4;
  cfg.channels_per_member = 1;
  if (std::optional<std::string> d = a.Get("deadline-ms"); d.has_value()) {
    int64_t ms;
    if (!absl::SimpleAtoi(*d, &ms) || ms <= 0) return Usage("--deadline-ms must be a positive integer");
    cfg.control_deadline = cfg.data_deadline = absl::Milliseconds(ms);
  } else {
    cfg.control_deadline = absl::Seconds(5);
  }
  if (std::optional<std::string> tf = a.Get("token-file"); tf.has_value()) {
    if (tf->empty()) return Usage("--token-file is empty");
    absl::StatusOr<std::string> token = ReadInput(*tf, 4096);
    if (!token.ok()) return absl::Status(token.status().code(), absl::StrCat("--token-file: ", token.status().message()));
    absl::string_view t = *token;
    absl::ConsumePrefix(&t, "\xEF\xBB\xBF");  // a UTF-8 byte order mark
    cfg.auth_token = std::string(absl::StripAsciiWhitespace(t));
    if (cfg.auth_token.empty()) return Usage(absl::StrCat("--token-file ", *tf, " holds no token"));
  }
  // An empty value (--tls-ca "$UNSET") must not pass for "no TLS": the token would
  // then go out in plaintext.
  for (const auto& [flag, field] : {std::pair{"tls-ca", &cfg.tls_ca_file}, std::pair{"tls-cert", &cfg.tls_cert_file},
                                    std::pair{"tls-key", &cfg.tls_key_file},
                                    std::pair{"tls-server-name", &cfg.tls_server_name}}) {
    std::optional<std::string> v = a.Get(flag);
    if (v.has_value() && v->empty()) return Usage(absl::StrCat("--", flag, " is empty"));
    *field = v.value_or("");
  }
  if (std::optional<std::string> t = a.Get("transport"); t.has_value()) {
    absl::StatusOr<TransportMode> mode = ParseTransportMode(*t);
    if (!mode.ok()) return Usage(absl::StrCat("--transport: ", mode.status().message()));
    cfg.transport = *mode;
  }
  cfg.ucx_tls = a.Get("ucx-tls").value_or("");
  cfg.ApplySecurityEnvironment();  // $KVHUB_TOKEN, $KVHUB_TLS_*: for what the flags left empty
  // The config's own check (no file read) refuses bad flag values: a member listed
  // twice, --tls-cert without --tls-key, a short token: usage errors (exit 2). What
  // Create finds in the files themselves (a CA that holds no PEM) stays exit 1.
  if (absl::Status s = cfg.Validate(); !s.ok()) return Usage(s.message());
  return Client::Create(std::move(cfg));
}

absl::StatusOr<std::string> NamespaceArg(Args& a) {
  absl::StatusOr<std::string> ns = Required(a, "ns");
  if (!ns.ok()) return ns;
  if (absl::Status s = ValidateNamespace(*ns); !s.ok()) return Usage(absl::StrCat("--ns: ", s.message()));
  return ns;
}

// ---------------------------------------------------------------- commands

absl::Status CmdKeys(Args& a) {
  absl::StatusOr<std::string> ns = NamespaceArg(a);
  if (!ns.ok()) return ns.status();
  absl::StatusOr<ModelSpec> spec = SpecArg(a);
  if (!spec.ok()) return spec.status();
  absl::StatusOr<std::vector<int32_t>> tokens = TokensArg(a);
  if (!tokens.ok()) return tokens.status();
  if (absl::Status s = a.CheckAllUsed(); !s.ok()) return s;
  const U128 fp = spec->Fingerprint();
  std::cout << "canonical " << spec->CanonicalText() << "\n";
  std::cout << "fingerprint " << fp.Hex() << "\n";
  std::vector<BlockKey> keys = BlockKeys(*ns, *spec, *tokens);
  for (size_t i = 0; i < keys.size(); ++i) std::cout << "block " << i << " " << keys[i].Hex() << "\n";
  std::cout << "chunk " << ChunkKey(*ns, fp, *tokens).Hex() << "\n";
  if (keys.empty()) {
    // Still useful (the fingerprint, the chunk key), but a hash-drift hunt needs blocks.
    std::cerr << "kvhub keys: note: " << tokens->size() << " tokens make no full block of "
              << spec->block_tokens << " (block_tokens): no block keys\n";
  }
  return absl::OkStatus();
}

absl::Status CmdStats(Args& a) {
  absl::StatusOr<std::unique_ptr<Client>> c = ClientArg(a);
  if (!c.ok()) return c.status();
  if (absl::Status s = a.CheckAllUsed(); !s.ok()) return s;
  int failed = 0;
  absl::Status first_error;
  uint64_t requested_tokens = 0, hit_tokens = 0;
  // "12.3% (h of r tokens)", or "-" before any token-weighted Lookup.
  const auto hit_rate = [](uint64_t hit, uint64_t requested) {
    if (requested == 0) return std::string("-");
    return absl::StrFormat("%.1f%% (%d of %d tokens)", 100.0 * static_cast<double>(hit) / requested, hit,
                           requested);
  };
  for (const MemberStats& m : (*c)->Stats()) {
    if (!m.stats.ok()) {
      std::cout << "member " << m.address << " ERROR " << m.stats.status().message() << "\n";
      if (first_error.ok()) first_error = m.stats.status();
      ++failed;
      continue;
    }
    const v1::StatsResponse& s = *m.stats;
    std::cout << "member " << m.address << " node=" << s.node_id() << " version=" << s.version()
              << " uptime_ms=" << s.uptime_ms() << " eviction=" << s.eviction_policy();
    if (s.eviction_active_policy() != s.eviction_policy()) {
      std::cout << " (following " << s.eviction_active_policy() << ", "
                << s.eviction_policy_switches() << " switches)";
    }
    std::cout << "\n";
    std::cout << "  lookup_requested_keys=" << s.lookup_requested_keys()
              << " lookup_hit_keys=" << s.lookup_hit_keys() << " get_bytes=" << s.get_bytes()
              << " put_bytes=" << s.put_bytes() << " checksum_failures=" << s.checksum_failures()
              << " reservations_expired=" << s.reservations_expired()
              << " leases_expired=" << s.leases_expired() << "\n";
    std::cout << "  token_hit_rate " << hit_rate(s.lookup_hit_tokens(), s.lookup_requested_tokens()) << "\n";
    std::cout << "  ucx " << s.ucx_status() << "; connections=" << s.ucx_connections()
              << " sessions=" << s.ucx_sessions() << " worker_resets=" << s.ucx_worker_resets() << "\n";
    requested_tokens += s.lookup_requested_tokens();
    hit_tokens += s.lookup_hit_tokens();
    for (const v1::TierStats& t : s.tiers()) {
      std::cout << "  tier " << t.tier() << " capacity_bytes=" << t.capacity_bytes()
                << " used_bytes=" << t.used_bytes() << " blocks=" << t.blocks()
                << " evictions=" << t.evictions() << " pinned_blocks=" << t.pinned_blocks()
                << " leased_blocks=" << t.leased_blocks() << " reserved_bytes=" << t.reserved_bytes()
                << "\n";
    }
  }
  std::cout << "cluster token_hit_rate " << hit_rate(hit_tokens, requested_tokens)
            << (failed > 0 ? " (members that answered)" : "") << "\n";
  if (failed > 0) {  // with the first member's own code: a refused token is not a network fault
    return absl::Status(first_error.code(), absl::StrCat(failed, " member(s) failed; the first: ", first_error.message()));
  }
  return absl::OkStatus();
}

absl::Status CmdPut(Args& a) {
  absl::StatusOr<std::string> ns = NamespaceArg(a);
  if (!ns.ok()) return ns.status();
  absl::StatusOr<std::string> key_hex = Required(a, "key");
  if (!key_hex.ok()) return key_hex.status();
  absl::StatusOr<U128> key = U128::FromHex(*key_hex);
  if (!key.ok()) return Usage(absl::StrCat("--key: ", key.status().message()));
  BlockPut put;
  put.key = *key;
  if (std::optional<std::string> p = a.Get("parent"); p.has_value()) {
    absl::StatusOr<U128> parent = U128::FromHex(*p);
    if (!parent.ok()) {
      return Usage(absl::StrCat("--parent: ", parent.status().message()));
    }
    put.parent = *parent;
  }
  put.pin = a.Has("pin");
  absl::StatusOr<std::string> file = Required(a, "file");
  if (!file.ok()) return file.status();
  absl::StatusOr<std::unique_ptr<Client>> c = ClientArg(a);
  if (!c.ok()) return c.status();
  if (absl::Status s = a.CheckAllUsed(); !s.ok()) return s;
  // At most one byte more than a block may hold: a larger file or an endless
  // stream is refused without reading it all into memory.
  absl::StatusOr<std::string> data = ReadInput(*file, (size_t{256} << 20) + 1);
  if (!data.ok()) {
    if (absl::IsResourceExhausted(data.status())) {
      return absl::InvalidArgumentError(absl::StrCat("--file: ", data.status().message(),
                                                     "; blocks must be 1 byte .. 256 MiB"));
    }
    return data.status();
  }
  put.data = std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(data->data()), data->size());
  absl::StatusOr<PutResult> r = (*c)->Put(*ns, std::span<const BlockPut>(&put, 1));
  if (!r.ok()) return r.status();
  switch (r->outcome[0]) {
    case PutOutcome::kStored:
      std::cout << "stored " << key->Hex() << " " << data->size() << " bytes on "
                << (*c)->MemberAddress((*c)->OwnerOf(*key)) << "\n";
      return absl::OkStatus();
    case PutOutcome::kSkipped: {
      // Skipped is also "being stored by another publisher right now": only a
      // block the shard has is "exists".
      absl::StatusOr<LookupResult> look = (*c)->Lookup(*ns, std::span<const BlockKey>(&*key, 1));
      if (!look.ok()) return look.status();
      if (!look->first_error.ok()) return look->first_error;
      if (!look->present[0]) {
        return absl::AbortedError(absl::StrCat("another publisher is storing block ", key->Hex(),
                                               " right now; it is not stored yet (run the put again to store it "
                                               "if that publisher gives up)"));
      }
      if (!put.pin) {
        std::cout << "exists " << key->Hex() << " (already stored; unchanged)\n";
        return absl::OkStatus();
      }
      // --pin asks for the block pinned, stored before or not.
      absl::StatusOr<std::vector<absl::Status>> pinned = (*c)->Pin(*ns, std::span<const BlockKey>(&*key, 1), true);
      if (!pinned.ok()) return pinned.status();
      if (!(*pinned)[0].ok()) return (*pinned)[0];
      std::cout << "exists " << key->Hex() << " (already stored; now pinned)\n";
      return absl::OkStatus();
    }
    case PutOutcome::kFailed: break;
  }
  return r->errors[0];
}

absl::Status CmdGet(Args& a) {
  absl::StatusOr<std::string> ns = NamespaceArg(a);
  if (!ns.ok()) return ns.status();
  absl::StatusOr<std::string> key_hex = Required(a, "key");
  if (!key_hex.ok()) return key_hex.status();
  absl::StatusOr<U128> key = U128::FromHex(*key_hex);
  if (!key.ok()) return Usage(absl::StrCat("--key: ", key.status().message()));
  uint64_t max_bytes = 64ull << 20;
  if (std::optional<std::string> m = a.Get("max-bytes"); m.has_value()) {
    absl::string_view v = *m;
    uint64_t unit = 1;
    if (absl::ConsumeSuffix(&v, "KiB")) unit = 1ull << 10;
    else if (absl::ConsumeSuffix(&v, "MiB")) unit = 1ull << 20;
    if (!absl::SimpleAtoi(v, &max_bytes) || max_bytes == 0 || max_bytes > (256ull << 20) / unit) {
      return Usage("--max-bytes must be 1..268435456 bytes (suffixes KiB, MiB: 1..256MiB)");
    }
    max_bytes *= unit;
  }
  const std::optional<std::string> out_flag = a.Get("out");
  std::string out_path = out_flag.value_or("-");
  if (!out_flag.has_value() && isatty(STDOUT_FILENO)) {  // as curl does: a block's bytes would garble the terminal
    return Usage("stdout is a terminal: give --out PATH, or --out - to write the block's bytes there anyway");
  }
  if (out_path.empty()) return Usage("--out is empty (a PATH, or - for stdout)");
  // Before the transfer (up to 256 MiB), not after it.
  if (absl::Status s = CheckOutputPath(out_path); !s.ok()) return Usage(absl::StrCat("--out: ", s.message()));
  absl::StatusOr<std::unique_ptr<Client>> c = ClientArg(a);
  if (!c.ok()) return c.status();
  if (absl::Status s = a.CheckAllUsed(); !s.ok()) return s;
  std::unique_ptr<uint8_t[]> buf(new uint8_t[max_bytes]);
  std::span<uint8_t> dest(buf.get(), max_bytes);
  absl::StatusOr<FetchResult> r =
      (*c)->Get(*ns, std::span<const BlockKey>(&*key, 1), std::span<const std::span<uint8_t>>(&dest, 1));
  if (!r.ok()) return r.status();
  if (!r->status[0].ok()) {
    // "caller buffer holds N" means nothing to a CLI user: name the flag.
    if (absl::IsResourceExhausted(r->status[0]) && !a.Has("max-bytes") &&
        absl::StrContains(r->status[0].message(), "caller buffer holds")) {
      return absl::ResourceExhaustedError(absl::StrCat(
          r->status[0].message(), " (get reads up to --max-bytes, 64MiB by default: give --max-bytes 256MiB)"));
    }
    return r->status[0];
  }
  const size_t n = r->sizes[0];
  if (absl::Status s = WriteOutput(out_path, absl::string_view(reinterpret_cast<const char*>(buf.get()), n));
      !s.ok()) {
    return s;
  }
  if (out_path != "-") {
    std::cerr << "got " << key->Hex() << " " << n << " bytes (checksum verified) -> " << out_path
              << "\n";
  }
  return absl::OkStatus();
}

absl::Status CmdLookup(Args& a) {
  absl::StatusOr<std::string> ns = NamespaceArg(a);
  if (!ns.ok()) return ns.status();
  // With --spec and --tokens this is the prefix lookup an engine makes (token-weighted
  // on the shards: their stats show it in the token hit rate); with --key, by key.
  std::optional<SpecTokens> spec;
  absl::StatusOr<std::vector<BlockKey>> keys = KeysArg(a, *ns, &spec);
  if (!keys.ok()) return keys.status();
  absl::StatusOr<std::unique_ptr<Client>> c = ClientArg(a);
  if (!c.ok()) return c.status();
  if (absl::Status s = a.CheckAllUsed(); !s.ok()) return s;
  absl::StatusOr<LookupResult> r =
      spec.has_value() ? (*c)->LookupPrefix(*ns, spec->spec, spec->tokens) : (*c)->Lookup(*ns, *keys);
  if (!r.ok()) return r.status();
  for (size_t i = 0; i < keys->size(); ++i) {
    // A prefix lookup lets a shard stop at its first miss (kvhub.proto): past the
    // prefix's first miss, "not present" is no answer.
    const char* state = !r->answered[i]                          ? "unknown (its shard's lookup failed)"
                        : r->present[i]                          ? "present"
                        : spec.has_value() && i > r->hit_blocks ? "unknown (after the prefix's first miss)"
                                                                 : "absent";
    std::cout << (*keys)[i].Hex() << " " << state << " "
              << (*c)->MemberAddress((*c)->OwnerOf((*keys)[i])) << "\n";
  }
  std::cout << "prefix_hits " << r->hit_blocks << " of " << keys->size() << "\n";
  if (!r->first_error.ok()) {
    return absl::Status(r->first_error.code(),
                        absl::StrCat(r->unreachable_keys, " key(s) unanswered: ",
                                     r->first_error.message()));
  }
  return absl::OkStatus();
}

absl::Status CmdRm(Args& a) {
  absl::StatusOr<std::string> ns = NamespaceArg(a);
  if (!ns.ok()) return ns.status();
  absl::StatusOr<std::vector<BlockKey>> keys = KeysArg(a, *ns);
  if (!keys.ok()) return keys.status();
  absl::StatusOr<std::unique_ptr<Client>> c = ClientArg(a);
  if (!c.ok()) return c.status();
  if (absl::Status s = a.CheckAllUsed(); !s.ok()) return s;
  absl::StatusOr<std::vector<absl::Status>> r = (*c)->Delete(*ns, *keys);
  if (!r.ok()) return r.status();
  absl::Status first;
  for (size_t i = 0; i < keys->size(); ++i) {
    const absl::Status& s = (*r)[i];
    if (s.ok()) {
      std::cout << (*keys)[i].Hex() << " deleted\n";
    } else if (s.code() == absl::StatusCode::kNotFound) {
      std::cout << (*keys)[i].Hex() << " absent\n";
    } else {
      std::cout << (*keys)[i].Hex() << " ERROR " << s.message() << "\n";
      if (first.ok()) first = s;
    }
  }
  return first;
}

int Main(int argc, char** argv) {
  absl::StatusOr<Args> args = Args::Parse(argc, argv, {"pin", "help"});
  if (!args.ok()) {
    std::cerr << "kvhub: " << args.status().message() << "\n" << kUsage;
    return 2;
  }
  if (args->Has("help")) {  // asked for: to stdout, so `kvhub --help | less` works
    std::cout << kUsage;
    return 0;
  }
  if (args->positional().empty()) {
    std::cerr << kUsage;
    return 2;
  }
  if (args->positional().size() != 1) {
    std::cerr << "kvhub: expected one command, got '" << args->positional()[1] << "' too\n";
    return 2;
  }
  const std::string cmd = args->positional()[0];
  // A known flag without its value is a usage error before any command runs (`--addr`
  // last used to end as "member list is empty", exit 1).
  static const std::set<std::string> kValueFlags = {
      "addr", "members", "ns", "key", "file", "parent", "out", "max-bytes", "spec", "tokens", "tokens-file",
      "deadline-ms", "token-file", "tls-ca", "tls-cert", "tls-key", "tls-server-name", "transport", "ucx-tls"};
  if (kValueFlags.count(args->missing_value()) > 0) {
    std::cerr << "kvhub " << cmd << ": flag --" << args->missing_value() << " needs a value\n(kvhub --help for usage)\n";
    return 2;
  }
  if (!args->repeated().empty()) {  // `rm --key A --key B` used to delete B alone, exit 0
    std::cerr << "kvhub " << cmd << ": flag --" << args->repeated()
              << " given twice (several keys go in one: --key A,B)\n(kvhub --help for usage)\n";
    return 2;
  }
  // Standard input can be read once: the first reader took it all and the second
  // got nothing, or the block's bytes became the auth token.
  std::vector<std::string> stdin_readers;
  for (const char* flag : {"file", "tokens-file", "token-file"}) {
    if (args->Peek(flag) == "-") stdin_readers.push_back(absl::StrCat("--", flag));
  }
  if (stdin_readers.size() > 1) {
    std::cerr << "kvhub " << cmd << ": " << absl::StrJoin(stdin_readers, " and ")
              << " both read standard input ('-'): give one of them a file\n";
    return 2;
  }
  absl::Status s;
  if (cmd == "keys") {
    s = CmdKeys(*args);
  } else if (cmd == "stats") {
    s = CmdStats(*args);
  } else if (cmd == "put") {
    s = CmdPut(*args);
  } else if (cmd == "get") {
    s = CmdGet(*args);
  } else if (cmd == "lookup") {
    s = CmdLookup(*args);
  } else if (cmd == "rm") {
    s = CmdRm(*args);
  } else {
    std::cerr << "kvhub: unknown command '" << cmd << "'\n" << kUsage;
    return 2;
  }
  if (s.ok()) return 0;
  if (IsUsage(s) || absl::StartsWith(s.message(), "unknown flag")) {
    std::cerr << "kvhub " << cmd << ": " << s.message().substr(IsUsage(s) ? 7 : 0)
              << "\n(kvhub --help for usage)\n";
    return 2;
  }
  std::cerr << "kvhub " << cmd << ": " << absl::StatusCodeToString(s.code()) << ": " << s.message()
            << "\n";
  // What to do about the two errors a first connection to a secured cluster gives.
  if (absl::IsUnauthenticated(s) && !args->Get("token-file").has_value() && std::getenv("KVHUB_TOKEN") == nullptr) {
    std::cerr << "(the shard wants a token: --token-file PATH, or the token in $KVHUB_TOKEN)\n";
  } else if (absl::IsUnavailable(s) && !args->Get("tls-ca").has_value() &&
             absl::StrContains(s.message(), "Socket closed")) {
    std::cerr << "(a shard that serves TLS closes plaintext connections: give its CA with --tls-ca PATH)\n";
  }
  return 1;
}

}  // namespace
}  // namespace kvhub::cli

int main(int argc, char** argv) {
  // A reader that closed the pipe (`kvhub get --out - | head -c 10`) is a write
  // error (EPIPE: DATA_LOSS, exit 1), not a kill by SIGPIPE.
  std::signal(SIGPIPE, SIG_IGN);
  kvhub::LogToStderr("kvhub");  // stdout carries only the program's output
  if (kvhub::PrintVersionIfAsked(argc, argv, "kvhub")) return kvhub::ExitCodeAfterStdout(0, "kvhub");
  // An operator's one-shot command: the client's connection chatter only when asked for.
  const char* level = std::getenv("KVHUB_LOG_LEVEL");
  if (absl::Status s = kvhub::SetLogLevel(level != nullptr ? level : "warn"); !s.ok()) {
    std::fprintf(stderr, "kvhub: KVHUB_LOG_LEVEL: %s\n", std::string(s.message()).c_str());
  }
  kvhub::TuneMallocForLargeBuffers();
  kvhub::TurnOffMutexDeadlockChecks();  // tests keep them; see common/mutex_checks.h
  return kvhub::ExitCodeAfterStdout(kvhub::cli::Main(argc, argv), "kvhub");
}
