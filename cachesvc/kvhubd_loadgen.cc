// kvhubd_loadgen: a small closed-loop load generator for kvhubd (ghz-like), used to
// measure the daemon's own gRPC data path (docs/results-cachesvc.md).
//
//   kvhubd_loadgen --target=127.0.0.1:7480 --mode=get --block_bytes=1MiB --blocks=64
//                  --concurrency=4 --seconds=10
//   kvhubd_loadgen --mode=lookup --batch=256 --concurrency=2 --seconds=10
//   kvhubd_loadgen --mode=health --requests=1
//
// get: first Puts `blocks` blocks (inline), then each worker loops unary inline Gets of
// one block, verifying size (and, with --verify, the XXH3-64 checksum).
// lookup: Lookup of `batch` keys per call (half present). Prints one summary line.

#include <atomic>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "cachesvc/kvhubd_config.h"
#include "common/flags.h"
#include "common/hash.h"
#include "common/log.h"
#include "common/mutex_checks.h"
#include "common/output_file.h"
#include "common/u128.h"
#include "grpcpp/grpcpp.h"
#include "kvhub/v1/kvhub.grpc.pb.h"

ABSL_FLAG(std::string, target, "127.0.0.1:7480", "kvhubd gRPC address");
ABSL_FLAG(std::string, mode, "get", "get | getstream | lookup | health");
ABSL_FLAG(std::string, block_bytes, "1MiB", "block size for get");
ABSL_FLAG(int, blocks, 64, "distinct blocks put before a get run");
ABSL_FLAG(int, batch, 256, "keys per Lookup");
ABSL_FLAG(int, concurrency, 4, "concurrent closed-loop workers (one channel each)");
ABSL_FLAG(double, seconds, 5, "measurement time");
ABSL_FLAG(int, requests, 0, "stop after this many requests in total (0: run for --seconds)");
ABSL_FLAG(bool, verify, false, "verify the checksum of every block received");
ABSL_FLAG(int, max_frame_bytes, 0, "client HTTP/2 max frame size to advertise (0: grpc default)");
ABSL_FLAG(std::string, ns, "", "namespace (default: loadgen-<mode>)");
ABSL_FLAG(int, deadline_ms, 30000, "deadline of every call, so a server that stops answering ends the run");

namespace {

std::string Key(uint64_t i) {
  kvhub::U128 k{i * 0x9e3779b97f4a7c15ull + 77, i ^ 0x5555};
  auto b = k.Bytes();
  return std::string(b.begin(), b.end());
}

std::unique_ptr<kvhub::v1::KvHub::Stub> Stub(const std::string& target, int id) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kvhub::cachesvc::kMaxGrpcMessageBytes);
  args.SetMaxSendMessageSize(kvhub::cachesvc::kMaxGrpcMessageBytes);
  args.SetInt("kvhub.loadgen.channel", id);
  if (int f = absl::GetFlag(FLAGS_max_frame_bytes); f > 0) args.SetInt(GRPC_ARG_HTTP2_MAX_FRAME_SIZE, f);  // a distinct channel (connection) per worker
  return kvhub::v1::KvHub::NewStub(grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args));
}

}  // namespace

static int RunProgram(int argc, char** argv) {
  kvhub::LogToStderr("kvhubd_loadgen");  // stdout carries only the program's output
  kvhub::TurnOffMutexDeadlockChecks();  // tests keep them; see common/mutex_checks.h
  std::vector<char*> rest = kvhub::ParseFlagsOrExit(
      argc, argv, "gRPC load against one kvhubd, for profiling it (cachesvc/kvhubd_loadgen.cc).");
  if (rest.size() > 1) {
    std::fprintf(stderr, "kvhubd_loadgen: unexpected argument '%s' (flags are --key=value)\n", rest[1]);
    return 2;
  }
  const std::string target = absl::GetFlag(FLAGS_target);
  const std::string mode = absl::GetFlag(FLAGS_mode);
  const std::string ns = absl::GetFlag(FLAGS_ns).empty() ? "loadgen-" + mode : absl::GetFlag(FLAGS_ns);
  auto block_bytes = kvhub::cachesvc::ParseByteSize(absl::GetFlag(FLAGS_block_bytes));
  if (!block_bytes.ok()) {
    std::fprintf(stderr, "--block_bytes: %s\n", std::string(block_bytes.status().message()).c_str());
    return 2;
  }
  const int blocks = absl::GetFlag(FLAGS_blocks);
  const int batch = absl::GetFlag(FLAGS_batch);
  const int conc = absl::GetFlag(FLAGS_concurrency);
  const bool verify = absl::GetFlag(FLAGS_verify);
  const int max_requests = absl::GetFlag(FLAGS_requests);
  const double seconds = absl::GetFlag(FLAGS_seconds);
  const int deadline_ms = absl::GetFlag(FLAGS_deadline_ms);
  // Values that would run forever (negative --requests), divide by zero (--blocks=0)
  // or run another mode than asked (a misspelled --mode ran health) are refused.
  const auto usage = [](const std::string& msg) {
    std::fprintf(stderr, "kvhubd_loadgen: %s\n", msg.c_str());
    return 2;
  };
  if (mode != "get" && mode != "getstream" && mode != "lookup" && mode != "health") {
    return usage("--mode is get, getstream, lookup or health, not '" + mode + "'");
  }
  if (conc < 1 || conc > 1024) return usage("--concurrency must be 1..1024");
  if (max_requests < 0) return usage("--requests must be >= 0 (0: run for --seconds)");
  if (max_requests == 0 && !(seconds > 0 && seconds <= 86400)) return usage("--seconds must be in (0, 86400]");
  if (blocks < 1) return usage("--blocks must be >= 1");
  if (batch < 1 || batch > 4096) return usage("--batch must be 1..4096");
  if (*block_bytes == 0 || *block_bytes > kvhub::cachesvc::kMaxGrpcMessageBytes / 2) {
    return usage("--block_bytes must be > 0 and fit a gRPC message");
  }
  if (deadline_ms < 1) return usage("--deadline_ms must be >= 1");
  const auto set_deadline = [deadline_ms](grpc::ClientContext* ctx) {
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(deadline_ms));
  };

  auto setup = Stub(target, -1);
  if (mode == "get" || mode == "getstream" || mode == "lookup") {
    // Lookup stores 4 KiB blocks whatever --block_bytes says.
    std::string data(mode == "lookup" ? 4096 : *block_bytes, '\0');
    for (size_t j = 0; j < data.size(); ++j) data[j] = static_cast<char>(j * 131 + 7);
    const int n = mode == "lookup" ? batch / 2 : blocks;
    const size_t size = data.size();
    for (int i = 0; i < n; ++i) {
      kvhub::v1::PutRequest req;
      req.set_namespace_(ns);
      auto* it = req.add_items();
      it->set_key(Key(i));
      data[0] = static_cast<char>(i);
      it->set_data(data.data(), size);
      it->set_checksum(kvhub::Xxh3_64(data.data(), size));
      kvhub::v1::PutResponse resp;
      grpc::ClientContext ctx;
      set_deadline(&ctx);
      grpc::Status s = setup->Put(&ctx, req, &resp);
      if (!s.ok() || (resp.items(0).code() != 0 && resp.items(0).code() != 6)) {
        std::fprintf(stderr, "put %d failed: %s %s\n", i, s.error_message().c_str(),
                     resp.items_size() ? resp.items(0).message().c_str() : "");
        return 1;
      }
    }
  }

  std::atomic<bool> stop{false};
  std::atomic<int64_t> total_requests{0}, total_bytes{0}, total_keys{0}, errors{0};
  std::vector<std::thread> workers;
  const absl::Time start = absl::Now();
  for (int w = 0; w < conc; ++w) {
    workers.emplace_back([&, w] {
      auto stub = Stub(target, w);
      uint64_t i = static_cast<uint64_t>(w);
      kvhub::v1::GetRequest greq;
      greq.set_namespace_(ns);
      greq.set_inline_data(true);
      kvhub::v1::GetResponse gresp;
      kvhub::v1::LookupRequest lreq;
      lreq.set_namespace_(ns);
      lreq.set_block_tokens(256);
      for (int k = 0; k < batch; ++k) *lreq.mutable_keys() += Key(k);
      kvhub::v1::LookupResponse lresp;
      while (!stop.load(std::memory_order_relaxed)) {
        if (max_requests > 0 && total_requests.fetch_add(1) >= max_requests) break;
        grpc::ClientContext ctx;
        set_deadline(&ctx);
        grpc::Status s;
        if (mode == "get") {
          greq.set_keys(Key(i % blocks));
          s = stub->Get(&ctx, greq, &gresp);
          if (s.ok() && gresp.blocks(0).status().code() == 0 && gresp.blocks(0).data().size() == *block_bytes &&
              (!verify || kvhub::Xxh3_64(gresp.blocks(0).data().data(), gresp.blocks(0).data().size()) ==
                              gresp.blocks(0).checksum())) {
            total_bytes.fetch_add(static_cast<int64_t>(gresp.blocks(0).data().size()), std::memory_order_relaxed);
          } else {
            if (errors.fetch_add(1) == 0) {
              std::fprintf(stderr, "first get error: %s / item %d %s, %zu bytes\n", s.error_message().c_str(),
                           gresp.blocks_size() ? gresp.blocks(0).status().code() : -1,
                           gresp.blocks_size() ? gresp.blocks(0).status().message().c_str() : "",
                           gresp.blocks_size() ? gresp.blocks(0).data().size() : 0);
            }
          }
        } else if (mode == "getstream") {
          greq.set_keys(Key(i % blocks));
          auto reader = stub->GetStream(&ctx, greq);
          kvhub::v1::GetChunk chunk;
          int64_t got = 0;
          while (reader->Read(&chunk)) got += static_cast<int64_t>(chunk.data().size());
          s = reader->Finish();
          if (s.ok() && got == static_cast<int64_t>(*block_bytes)) {
            total_bytes.fetch_add(got, std::memory_order_relaxed);
          } else {
            errors.fetch_add(1);
          }
        } else if (mode == "lookup") {
          s = stub->Lookup(&ctx, lreq, &lresp);
          if (s.ok() && lresp.present().size() == static_cast<size_t>(batch)) {
            total_keys.fetch_add(batch, std::memory_order_relaxed);
          } else {
            errors.fetch_add(1);
          }
        } else {
          kvhub::v1::HealthResponse h;
          s = stub->Health(&ctx, kvhub::v1::HealthRequest(), &h);
          if (!s.ok()) errors.fetch_add(1);
        }
        if (max_requests == 0) total_requests.fetch_add(1, std::memory_order_relaxed);
        ++i;
      }
    });
  }
  if (max_requests == 0) {
    absl::SleepFor(absl::Seconds(seconds));
    stop.store(true);
  }
  for (auto& t : workers) t.join();
  const double secs = absl::ToDoubleSeconds(absl::Now() - start);
  const int64_t reqs = std::min<int64_t>(total_requests.load(), max_requests > 0 ? max_requests : INT64_MAX);
  std::printf("mode=%s concurrency=%d seconds=%.2f requests=%lld rps=%.0f MiB/s=%.1f keys/s=%.0f errors=%lld\n",
              mode.c_str(), conc, secs, static_cast<long long>(reqs), reqs / secs,
              total_bytes.load() / secs / (1 << 20), total_keys.load() / secs,
              static_cast<long long>(errors.load()));
  return errors.load() == 0 ? 0 : 1;
}

// Output lost to a full disk or a closed pipe fails the program.
int main(int argc, char** argv) { return kvhub::ExitCodeAfterStdout(RunProgram(argc, argv), "kvhubd_loadgen"); }
