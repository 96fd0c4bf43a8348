// kvhub-codec: generate synthetic KV, encode/decode blocks, measure codec quality.
// Commands and options: kUsage below (`kvhub-codec --help`).

#include <sys/stat.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <new>
#include <optional>
#include <string>
#include <vector>

#include "common/memory_limit.h"
#include "common/output_file.h"
#include "common/version.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "codec/block_format.h"
#include "codec/codec.h"
#include "codec/kvraw.h"
#include "codec/quality.h"
#include "codec/segment_layout.h"
#include "codec/synthetic_kv.h"

namespace kvhub::codec {
namespace {

constexpr char kUsage[] =
    "usage:\n"
    "  kvhub-codec gen [--layers N --kv-heads N --head-dim N --tokens N --base-position P\n"
    "                   --rope-base B --pairing neox|interleaved --seed S --query-outlier F\n"
    "                   --sink-attention F --outlier-pairs N] out.kvraw\n"
    "      writes out.kvraw and its queries sidecar out.kvraw.kvq\n"
    "  kvhub-codec encode --codec C [--group G --sinks N --pre-rope --zstd-level L --scalar\n"
    "                     --spec \"model=NAME,...\"] in.kvraw out.kvb\n"
    "      C: raw, lossless, fp8, int8, kivi4, kivi2\n"
    "  kvhub-codec decode [--target-position P --scalar] in.kvb out.kvraw\n"
    "  kvhub-codec inspect in.kvb                 prints the header as JSON\n"
    "  kvhub-codec eval --codec C|all [--group G --sinks N --pre-rope --queries F --split-kv] in.kvraw\n"
    "      prints ratio and quality figures as JSON (one object per line for \"all\")\n"
    "Exit status: 0 ok, 1 error, 2 usage. Formats: docs/format.md, docs/codecs.md.\n";

// --help / -h: the usage on stdout, exit 0. A usage error: on stderr, exit 2.
int Usage(bool asked = false) {
  std::fputs(kUsage, asked ? stdout : stderr);
  return asked ? 0 : 2;
}

// A flag the command does not take: the message, and exit 2 as Usage().
int FailUsage(const absl::Status& s) {
  std::fprintf(stderr, "kvhub-codec: %s\n", std::string(s.message()).c_str());
  return 2;
}

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "kvhub-codec: %s\n", s.ToString().c_str());
  return 1;
}

struct Args {
  std::map<std::string, std::string> opts;  // --name value (or "1" for flags)
  std::vector<std::string> pos;
};

absl::StatusOr<Args> ParseArgs(int argc, char** argv, int first) {
  static const char* kFlags[] = {"--pre-rope", "--scalar", "--split-kv"};
  Args a;
  for (int i = first; i < argc; ++i) {
    std::string s = argv[i];
    if (s.rfind("--", 0) == 0) {
      // --name=value, as kvhub and kvhubd take them (was "unknown option --codec=kivi4").
      std::optional<std::string> inline_value;
      if (const size_t eq = s.find('='); eq != std::string::npos) {
        inline_value = s.substr(eq + 1);
        s.resize(eq);
      }
      // `--codec kivi4 --codec raw` used to encode raw: one of two settings was dropped.
      if (a.opts.count(s) != 0) return absl::InvalidArgumentError(absl::StrCat(s, " given twice"));
      bool flag = false;
      for (const char* f : kFlags) flag |= s == f;
      if (flag) {
        if (inline_value.has_value()) {
          return absl::InvalidArgumentError(absl::StrCat(s, " takes no value (give it alone)"));
        }
        a.opts[s].assign(1, '1');
      } else if (inline_value.has_value()) {
        a.opts[s] = *inline_value;
      } else {
        if (i + 1 >= argc) return absl::InvalidArgumentError(absl::StrCat(s, " needs a value"));
        a.opts[s] = argv[++i];
      }
    } else {
      a.pos.push_back(s);
    }
  }
  return a;
}

template <typename T>
absl::Status GetNum(const Args& a, const std::string& name, T* out) {
  auto it = a.opts.find(name);
  if (it == a.opts.end()) return absl::OkStatus();
  bool ok;
  if constexpr (std::is_same_v<T, float>) {
    ok = absl::SimpleAtof(it->second, out);
  } else if constexpr (std::is_floating_point_v<T>) {
    ok = absl::SimpleAtod(it->second, out);
  } else {
    ok = absl::SimpleAtoi(it->second, out);
  }
  if (!ok) return absl::InvalidArgumentError(absl::StrCat(name, ": bad number '", it->second, "'"));
  return absl::OkStatus();
}

absl::Status CheckKnown(const Args& a, std::initializer_list<const char*> known) {
  for (const auto& [k, v] : a.opts) {
    bool found = false;
    for (const char* n : known) found |= k == n;
    if (!found) return absl::InvalidArgumentError(absl::StrCat("unknown option ", k));
  }
  return absl::OkStatus();
}

absl::StatusOr<CodecParams> Params(const Args& a, CodecId codec) {
  CodecParams p;
  p.codec = codec;
  if (auto s = GetNum(a, "--group", &p.group_size); !s.ok()) return s;
  if (auto s = GetNum(a, "--sinks", &p.sink_tokens); !s.ok()) return s;
  if (auto s = GetNum(a, "--zstd-level", &p.zstd_level); !s.ok()) return s;
  p.keys_pre_rope = a.opts.count("--pre-rope") > 0;
  if (a.opts.count("--scalar")) p.kernels = KernelChoice::kScalar;
  if (auto s = p.Validate(); !s.ok()) return s;
  return p;
}

int Gen(const Args& a) {
  if (auto s = CheckKnown(a, {"--layers", "--kv-heads", "--head-dim", "--tokens",
                              "--base-position", "--rope-base", "--pairing", "--seed",
                              "--query-outlier", "--sink-attention", "--outlier-pairs"});
      !s.ok()) {
    return FailUsage(s);
  }
  if (a.pos.size() != 1) return Usage();
  SyntheticKvConfig c;
  for (auto s : {GetNum(a, "--layers", &c.layers), GetNum(a, "--kv-heads", &c.kv_heads),
                 GetNum(a, "--head-dim", &c.head_dim), GetNum(a, "--tokens", &c.tokens),
                 GetNum(a, "--base-position", &c.base_position),
                 GetNum(a, "--rope-base", &c.rope_base), GetNum(a, "--seed", &c.seed),
                 GetNum(a, "--query-outlier", &c.query_outlier_frac),
                 GetNum(a, "--sink-attention", &c.sink_attention),
                 GetNum(a, "--outlier-pairs", &c.key_outlier_pairs)}) {
    if (!s.ok()) return FailUsage(s);
  }
  if (auto it = a.opts.find("--pairing"); it != a.opts.end()) {
    auto p = ParseRopePairing(it->second);
    if (!p.ok()) return FailUsage(p.status());
    c.rope_pairing = *p;
  }
  auto g = GenerateSyntheticKv(c);
  if (!g.ok()) return Fail(g.status());
  KvRaw raw;
  raw.shape = g->shape;
  raw.rope_base = c.rope_base;
  raw.rope_pairing = c.rope_pairing;
  raw.base_position = c.base_position;
  raw.data = std::move(g->kv);
  if (auto s = WriteFileBytes(a.pos[0], SerializeKvRaw(raw)); !s.ok()) return Fail(s);
  Queries q{g->queries_per_kv_head, std::move(g->queries)};
  if (auto s = WriteFileBytes(a.pos[0] + ".kvq", SerializeQueries(raw.shape, q)); !s.ok()) {
    // The new data must not stay beside an older sidecar of the same shape: eval
    // would pair them without a word.
    struct stat st;  // a file we wrote, not a link or device written through
    if (lstat(a.pos[0].c_str(), &st) == 0 && S_ISREG(st.st_mode)) std::remove(a.pos[0].c_str());
    return Fail(s);
  }
  return 0;
}

absl::StatusOr<KvRaw> LoadRaw(const std::string& path) {
  auto b = ReadFileBytes(path);
  if (!b.ok()) return b.status();
  return ParseKvRaw(*b);
}

int EncodeCmd(const Args& a) {
  if (auto s = CheckKnown(a, {"--codec", "--group", "--sinks", "--pre-rope", "--zstd-level",
                              "--scalar", "--spec"});
      !s.ok()) {
    return FailUsage(s);
  }
  if (a.pos.size() != 2 || !a.opts.count("--codec")) return Usage();
  auto codec = ParseCodecName(a.opts.at("--codec"));
  if (!codec.ok()) return FailUsage(codec.status());
  auto p = Params(a, *codec);
  if (!p.ok()) return FailUsage(p.status());
  auto raw = LoadRaw(a.pos[0]);
  if (!raw.ok()) return Fail(raw.status());
  KvView view = raw->View();
  if (auto it = a.opts.find("--spec"); it != a.opts.end()) {
    auto spec = ModelSpec::Parse(it->second);
    if (!spec.ok()) return Fail(spec.status());
    const KvShape& sh = raw->shape;
    // Each field that differs, with both values (gen's defaults are easy to miss:
    // rope_base 500000, say).
    std::string differs;
    auto field = [&differs](absl::string_view name, const auto& in_spec, const auto& in_file) {
      if (in_spec == in_file) return;
      absl::StrAppend(&differs, differs.empty() ? "" : ", ", name, " ", in_spec,
                      " in --spec, ", in_file, " in the file");
    };
    field("layers", spec->layers, sh.layers);
    field("kv_heads", spec->kv_heads, sh.kv_heads);
    field("head_dim", spec->head_dim, sh.head_dim);
    field("dtype", DTypeName(spec->dtype), DTypeName(sh.dtype));
    field("block_tokens (= the file's tokens)", spec->block_tokens, sh.tokens);
    field("rope_base", spec->rope_base, raw->rope_base);
    field("rope_pairing", RopePairingName(spec->rope_pairing), RopePairingName(raw->rope_pairing));
    if (!differs.empty()) {
      return Fail(absl::InvalidArgumentError(absl::StrCat("--spec does not match the kvraw file: ", differs)));
    }
    view.fingerprint = spec->Fingerprint();
  }
  std::vector<uint8_t> out;
  if (auto s = Encode(view, *p, &out); !s.ok()) return Fail(s);
  if (auto s = WriteFileBytes(a.pos[1], out); !s.ok()) return Fail(s);
  return 0;
}

int DecodeCmd(const Args& a) {
  if (auto s = CheckKnown(a, {"--target-position", "--scalar"}); !s.ok()) return FailUsage(s);
  if (a.pos.size() != 2) return Usage();
  auto b = ReadFileBytes(a.pos[0]);
  if (!b.ok()) return Fail(b.status());
  auto h = InspectBlock(*b);
  if (!h.ok()) return Fail(h.status());
  // The header says how large the output is (up to 16 GiB): check the body's checksum,
  // and the size against this machine, before allocating it. A forged lossless file
  // of a few hundred KiB can claim that much.
  if (auto segs = ParseBlock(*b, *h); !segs.ok()) return Fail(segs.status());
  if (const MemoryLimit limit = ReadMemoryLimit(); limit.bytes > 0 && h->raw_bytes > limit.bytes / 2) {
    return Fail(absl::ResourceExhaustedError(absl::StrCat("the block decodes to ", HumanBytes(h->raw_bytes),
                                                          ", over half of the memory this process may use (",
                                                          HumanBytes(limit.bytes), ", ", limit.source, ")")));
  }
  DecodeOptions o;
  if (a.opts.count("--target-position")) {
    int64_t t;
    if (auto s = GetNum(a, "--target-position", &t); !s.ok()) return FailUsage(s);
    o.target_position = t;
  }
  if (a.opts.count("--scalar")) o.kernels = KernelChoice::kScalar;
  KvRaw raw;
  raw.shape = h->shape;
  raw.rope_base = h->rope_base;
  raw.rope_pairing = h->rope_pairing;
  raw.base_position = o.target_position.value_or(h->base_position);
  raw.data.resize(h->raw_bytes);
  if (auto s = Decode(*b, KvMutableView{raw.shape, raw.data.data(), raw.data.size()}, o); !s.ok()) {
    return Fail(s);
  }
  if (auto s = WriteFileBytes(a.pos[1], SerializeKvRaw(raw)); !s.ok()) return Fail(s);
  // Keys moved to other positions: a queries sidecar beside the output (from a gen
  // of that path) holds queries for the old ones, and eval would pair them with these.
  if (raw.base_position != h->base_position) {
    const std::string sidecar = a.pos[1] + ".kvq";
    if (std::remove(sidecar.c_str()) == 0) {
      std::fprintf(stderr, "kvhub-codec: removed %s (its queries were for positions %lld.., the keys are now at "
                   "%lld..)\n", sidecar.c_str(), static_cast<long long>(h->base_position),
                   static_cast<long long>(raw.base_position));
    } else if (errno != ENOENT) {
      return Fail(absl::DataLossError(absl::StrCat("cannot remove the stale queries sidecar ", sidecar, ": ",
                                                   std::strerror(errno))));
    }
  }
  return 0;
}

int InspectCmd(const Args& a) {
  if (a.pos.size() != 1 || !a.opts.empty()) return Usage();
  auto b = ReadFileBytes(a.pos[0]);
  if (!b.ok()) return Fail(b.status());
  auto h = InspectBlock(*b);
  if (!h.ok()) return Fail(h.status());
  // The body too: inspect is how an operator checks a block file.
  if (auto segs = ParseBlock(*b, *h, /*verify_checksum=*/true); !segs.ok()) return Fail(segs.status());
  std::printf(
      "{\"codec\":\"%s\",\"layers\":%u,\"kv_heads\":%u,\"head_dim\":%u,\"tokens\":%u,"
      "\"dtype\":\"%s\",\"base_position\":%lld,\"keys_pre_rope\":%s,\"group_size\":%u,"
      "\"sink_tokens\":%u,\"raw_bytes\":%llu,\"block_bytes\":%llu,\"fingerprint\":\"%s\"}\n",
      std::string(CodecName(h->codec)).c_str(), h->shape.layers, h->shape.kv_heads,
      h->shape.head_dim, h->shape.tokens, std::string(DTypeName(h->shape.dtype)).c_str(),
      static_cast<long long>(h->base_position), h->keys_pre_rope() ? "true" : "false",
      h->group_size, h->sink_tokens, static_cast<unsigned long long>(h->raw_bytes),
      static_cast<unsigned long long>(h->total_bytes()), h->fingerprint.Hex().c_str());
  return 0;
}

int EvalCmd(const Args& a) {
  if (auto s = CheckKnown(a, {"--codec", "--group", "--sinks", "--pre-rope", "--queries",
                              "--zstd-level", "--scalar", "--split-kv"});
      !s.ok()) {
    return FailUsage(s);
  }
  if (a.pos.size() != 1 || !a.opts.count("--codec")) return Usage();
  std::vector<std::string> names;
  std::string c = a.opts.at("--codec");
  if (c == "all") {
    names = {"raw", "lossless", "fp8", "int8", "kivi4", "kivi2", "int4-per-token-keys"};
    if (a.opts.count("--pre-rope")) {
      // Pre-RoPE keys are not bit-exact: lossless refuses them (it failed the whole
      // run after raw's line was out).
      std::erase(names, "lossless");
      std::fprintf(stderr, "eval: lossless skipped: --pre-rope keys are not bit-exact\n");
    }
  } else {
    names = {c};
  }
  // Every codec's settings before any work and any output: `--codec all --group 48`
  // printed four JSON lines and then failed at kivi4 (exit 1).
  for (const std::string& name : names) {
    absl::StatusOr<CodecId> id =
        name == "int4-per-token-keys" ? absl::StatusOr<CodecId>(CodecId::kKivi4) : ParseCodecName(name);
    if (!id.ok()) return FailUsage(id.status());
    if (auto pp = Params(a, *id); !pp.ok()) return FailUsage(pp.status());
  }
  auto raw = LoadRaw(a.pos[0]);
  if (!raw.ok()) return Fail(raw.status());
  if (raw->shape.dtype != DType::kBf16) {
    return Fail(absl::InvalidArgumentError("eval: bf16 kvraw files only"));
  }
  std::string qpath = a.opts.count("--queries") ? a.opts.at("--queries") : a.pos[0] + ".kvq";
  Queries q;
  bool proxy = false;
  if (auto qb = ReadFileBytes(qpath); qb.ok()) {
    auto pq = ParseQueries(raw->shape, *qb);
    if (!pq.ok()) return Fail(pq.status());
    q = std::move(*pq);
  } else if (struct stat st; a.opts.count("--queries") || !absl::IsNotFound(qb.status()) ||
                                lstat(qpath.c_str(), &st) == 0) {
    return Fail(qb.status());  // proxy queries only when there is no sidecar at all (not even a dangling link)
  } else {
    q = ProxyQueriesFromKeys(raw->shape, raw->data.data(), 32, 7);
    proxy = true;
  }
  // Attention error over inf or NaN is NaN, which JSON cannot carry: refuse such
  // input instead of printing `"median":nan` with exit 0.
  for (size_t i = 0; i + 1 < raw->data.size(); i += 2) {
    if (((raw->data[i] | (raw->data[i + 1] << 8)) & 0x7f80) == 0x7f80) {
      return Fail(absl::InvalidArgumentError(absl::StrCat("eval: ", a.pos[0], " holds inf or NaN (element ", i / 2, ")")));
    }
  }
  for (size_t i = 0; i < q.data.size(); ++i) {
    if (!std::isfinite(q.data[i])) {
      return Fail(absl::InvalidArgumentError(absl::StrCat("eval: query ", i, " of ", qpath, " is inf or NaN")));
    }
  }
  for (const std::string& name : names) {
    std::vector<uint8_t> recon;
    uint64_t enc_bytes = 0;
    CodecParams p;
    // What the JSON reports: the group only where the codec has one (kivi and the
    // int4 ablation), the sinks the block actually holds (not the setting), and
    // pre_rope only where it was applied (the ablation quantizes the keys as given).
    bool grouped = false, pre_rope = false;
    uint32_t sinks = 0;
    if (name == "int4-per-token-keys") {
      auto pp = Params(a, CodecId::kKivi4);
      if (!pp.ok()) return Fail(pp.status());
      p = *pp;
      grouped = true;
      sinks = SinksInBlock(CodecId::kKivi4, p.sink_tokens, raw->base_position, raw->shape.tokens);
      absl::StatusOr<std::vector<uint8_t>> ablated =
          PerTokenInt4KeyAblation(raw->shape, raw->data.data(), p.group_size, sinks);
      if (!ablated.ok()) return Fail(ablated.status());
      recon = *std::move(ablated);
    } else {
      auto codec = ParseCodecName(name);
      if (!codec.ok()) return Fail(codec.status());
      auto pp = Params(a, *codec);
      if (!pp.ok()) return Fail(pp.status());
      p = *pp;
      grouped = *codec == CodecId::kKivi4 || *codec == CodecId::kKivi2;
      pre_rope = p.keys_pre_rope;
      sinks = SinksInBlock(*codec, p.sink_tokens, raw->base_position, raw->shape.tokens);
      std::vector<uint8_t> block;
      if (auto s = Encode(raw->View(), p, &block); !s.ok()) return Fail(s);
      enc_bytes = block.size();
      recon.resize(raw->data.size());
      if (auto s = Decode(block, KvMutableView{raw->shape, recon.data(), recon.size()},
                          DecodeOptions{std::nullopt, true, p.kernels});
          !s.ok()) {
        return Fail(s);
      }
    }
    auto rep = CompareAttention(raw->shape, raw->data.data(), recon.data(), q);
    if (!rep.ok()) return Fail(rep.status());
    bool exact = recon == raw->data;
    std::string split;
    if (a.opts.count("--split-kv")) {
      // Attention error with only the keys (values exact), then only the values, compressed.
      const size_t sb = raw->shape.SegmentBytes();
      for (int which = 0; which < 2; ++which) {
        std::vector<uint8_t> mix = raw->data;
        for (uint32_t l = 0; l < raw->shape.layers; ++l) {
          std::memcpy(mix.data() + (2 * l + which) * sb, recon.data() + (2 * l + which) * sb, sb);
        }
        auto r = CompareAttention(raw->shape, raw->data.data(), mix.data(), q);
        if (!r.ok()) return Fail(r.status());
        absl::StrAppend(&split, which == 0 ? ",\"keys_only_attn_rel_l2\":" : ",\"values_only_attn_rel_l2\":",
                        absl::StrFormat("{\"median\":%.6g,\"p99\":%.6g}", r->attn_rel_l2.median,
                                        r->attn_rel_l2.p99));
      }
    }
    std::string ratio = enc_bytes ? absl::StrFormat("%.4f", double(raw->data.size()) / enc_bytes)
                                  : std::string("null");
    const std::string group = grouped ? absl::StrCat(p.group_size) : std::string("null");
    std::printf("{\"codec\":\"%s\",\"group\":%s,\"sinks\":%u,\"pre_rope\":%s,\"raw_bytes\":%zu,"
                "\"encoded_bytes\":%llu,\"ratio\":%s,\"bit_exact\":%s,\"proxy_queries\":%s,"
                "\"quality\":%s%s}\n",
                name.c_str(), group.c_str(), sinks, pre_rope ? "true" : "false",
                raw->data.size(), static_cast<unsigned long long>(enc_bytes), ratio.c_str(),
                exact ? "true" : "false", proxy ? "true" : "false", rep->ToJson().c_str(),
                split.c_str());
  }
  return 0;
}

}  // namespace
}  // namespace kvhub::codec

static int RunProgram(int argc, char** argv) {
  using namespace kvhub::codec;
  if (argc < 2) return Usage();
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0) return Usage(/*asked=*/true);
  }
  auto a = ParseArgs(argc, argv, 2);
  if (!a.ok()) return FailUsage(a.status());  // a missing value, an option given twice
  std::string cmd = argv[1];
  if (cmd == "gen") return Gen(*a);
  if (cmd == "encode") return EncodeCmd(*a);
  if (cmd == "decode") return DecodeCmd(*a);
  if (cmd == "inspect") return InspectCmd(*a);
  if (cmd == "eval") return EvalCmd(*a);
  return Usage();
}

// Output lost to a full disk or a closed pipe fails the program.
int main(int argc, char** argv) {
  if (kvhub::PrintVersionIfAsked(argc, argv, "kvhub-codec")) return kvhub::ExitCodeAfterStdout(0, "kvhub-codec");
  int rc;
  try {  // the files' data is held whole in memory: a shape larger than it is an error, not an abort
    rc = RunProgram(argc, argv);
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "kvhub-codec: RESOURCE_EXHAUSTED: out of memory for this shape (the data is held whole)\n");
    rc = 1;
  }
  return kvhub::ExitCodeAfterStdout(rc, "kvhub-codec");
}
