// kvhub-ucx-bench: UCX data-plane throughput between two processes, the way
// kvhubd and a client use it (a served, registered region; 1 MiB blocks;
// N concurrent callers), plus the serving process's CPU seconds per GiB moved.
//
//   kvhub-ucx-bench --tls=tcp --path=am --op=get --block=1048576 --concurrency=4 --seconds=3
//
// Prints one JSON object per run. The serving process is this binary re-executed
// with --serve; it registers a region and serves AM requests from its progress
// thread (RMA needs no serving CPU where the transport is one-sided).
// --server-workers=K runs K serving workers (K progress threads and K
// connections); the client connects to each and caller t uses worker t mod K.

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/log.h"
#include "common/mutex_checks.h"
#include "transport/ucx_context.h"
#include "common/fd_messages.h"
#include "common/output_file.h"
#include "transport/ucx_worker.h"

namespace kvhub::transport {
namespace {

struct Args {
  std::string tls = "tcp";
  std::string path = "auto";
  std::string op = "get";
  uint64_t block = 1 << 20;
  int concurrency = 4;
  double seconds = 3;
  uint64_t region = 256ull << 20;
  uint32_t batch = 1;  // transfers per Execute
  bool alloc = false;  // the served region is allocated by UCX (UcxContext::Allocate)
  bool serve = false;
  bool poll = false;
  // Workers (each with its own progress thread) serving the region; the client
  // connects to every one and spreads its callers over them.
  int server_workers = 1;
  int in = -1, out = -1;
};


UcxConfig MakeConfig(const Args& a) {
  UcxConfig c;
  c.tls = a.tls;
  c.require_peer_failure_detection = a.tls.find("tcp") != std::string::npos || a.tls.find("rc") != std::string::npos;
  c.get_path = a.path == "rma" ? UcxPath::kRma : a.path == "am" ? UcxPath::kAm : UcxPath::kAuto;
  c.put_path = c.get_path;
  c.progress_mode = a.poll ? UcxProgressMode::kPoll : UcxProgressMode::kSleep;
  return c;
}

// CPU seconds (user + system) of a process from /proc/<pid>/stat.
double CpuSeconds(pid_t pid) {
  std::ifstream f(absl::StrCat("/proc/", pid, "/stat"));
  std::string line;
  std::getline(f, line);
  const size_t rp = line.rfind(')');
  if (rp == std::string::npos) return -1;
  std::vector<std::string> fields = absl::StrSplit(line.substr(rp + 2), ' ');
  uint64_t ut = 0, st = 0;
  if (fields.size() < 13 || !absl::SimpleAtoi(fields[11], &ut) || !absl::SimpleAtoi(fields[12], &st)) return -1;
  return static_cast<double>(ut + st) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

int Serve(const Args& a) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  auto ctx = UcxContext::Create(MakeConfig(a));
  if (!ctx.ok()) {
    std::fprintf(stderr, "serve: %s\n", ctx.status().ToString().c_str());
    return 1;
  }
  std::vector<uint8_t> region;
  absl::StatusOr<std::unique_ptr<UcxMemory>> mem;
  if (a.alloc) {
    mem = (*ctx)->Allocate(a.region);
    if (mem.ok()) std::memset((*mem)->base(), 0x5a, a.region);
  } else {
    region.assign(a.region, 0x5a);
    mem = (*ctx)->Register(region.data(), region.size());
  }
  if (!mem.ok()) {
    std::fprintf(stderr, "serve: %s\n", mem.status().ToString().c_str());
    return 2;
  }
  UcxWorker::Options o;
  o.served = {mem->get()};
  std::vector<std::unique_ptr<UcxWorker>> workers;
  for (int i = 0; i < a.server_workers; ++i) {
    auto w = UcxWorker::Create(ctx->get(), o);
    if (!w.ok()) return 3;
    workers.push_back(std::move(*w));
  }
  const RemoteRegionInfo r = workers[0]->ServedRegions()[0];
  for (const auto& w : workers) {
    if (!SendMessage(a.out, w->address())) return 4;
  }
  std::string client;
  if (!SendMessage(a.out, r.packed_rkey) || !SendMessage(a.out, absl::StrCat(r.base)) ||
      !RecvMessage(a.in, &client)) {
    return 4;
  }
  for (const auto& w : workers) {
    auto conn = w->Accept(client);
    if (!conn.ok() || !SendMessage(a.out, FormatAcceptedConn(*conn))) return 5;
  }
  std::string cmd;
  RecvMessage(a.in, &cmd);
  for (const auto& w : workers) {
    const UcxWorkerStats s = w->Stats();
    std::fprintf(stderr, "serve: wakeups=%lu arm_busy=%lu served_get_bytes=%lu served_put_bytes=%lu\n",
                 static_cast<unsigned long>(s.wakeups), static_cast<unsigned long>(s.arm_busy),
                 static_cast<unsigned long>(s.served_get_bytes), static_cast<unsigned long>(s.served_put_bytes));
  }
  return 0;
}

int Run(const Args& a, char** argv) {
  int down[2], up[2];
  if (pipe(down) != 0 || pipe(up) != 0) return 1;
  const pid_t pid = fork();
  if (pid == 0) {
    close(down[1]);
    close(up[0]);
    const std::string fds = absl::StrCat("--fds=", down[0], ",", up[1]);
    std::vector<std::string> args = {argv[0], "--serve", fds, "--tls=" + a.tls,
                                     "--region=" + std::to_string(a.region), a.poll ? "--poll" : "--sleep",
                                     a.alloc ? "--alloc" : "--register",
                                     "--server-workers=" + std::to_string(a.server_workers)};
    std::vector<char*> cargs;
    for (auto& s : args) cargs.push_back(s.data());
    cargs.push_back(nullptr);
    execv("/proc/self/exe", cargs.data());
    _exit(9);
  }
  close(down[0]);
  close(up[1]);
  auto ctx = UcxContext::Create(MakeConfig(a));
  if (!ctx.ok()) {
    std::fprintf(stderr, "%s\n", ctx.status().ToString().c_str());
    return 1;
  }
  auto w = UcxWorker::Create(ctx->get(), {});
  if (!w.ok()) return 1;
  std::vector<std::string> addresses(a.server_workers);
  std::string rkey, base;
  RemoteRegionInfo r;
  bool ok = true;
  for (std::string& addr : addresses) ok = ok && RecvMessage(up[0], &addr);
  ok = ok && RecvMessage(up[0], &rkey) && RecvMessage(up[0], &base) && SendMessage(down[1], (*w)->address()) &&
       absl::SimpleAtoi(base, &r.base);
  r.size = a.region;
  r.packed_rkey = rkey;
  std::vector<PeerId> peers;
  for (int i = 0; ok && i < a.server_workers; ++i) {
    PeerInfo info;
    std::string conn;
    ok = RecvMessage(up[0], &conn) && ParseAcceptedConn(conn, &info.conn);
    if (!ok) break;
    info.worker_address = addresses[i];
    info.regions = {r};
    // A region UCX allocated is shared memory peers on this host map (as kvhubd's
    // Connect says with one_sided_shm): gets from it are mapped copies.
    info.one_sided_shm = a.alloc;
    auto peer = (*w)->Connect(info);
    if (!peer.ok()) {
      std::fprintf(stderr, "%s\n", peer.status().ToString().c_str());
      return 1;
    }
    peers.push_back(*peer);
  }
  if (!ok) {
    std::fprintf(stderr, "handshake with the serving process failed\n");
    return 1;
  }
  const PeerId* peer = &peers[0];
  const std::string transports = (*w)->PeerTransports(*peer).value_or("?");
  const UcxPath path = *(*w)->ResolvedPath(*peer, a.op == "get" ? TransferKind::kGet : TransferKind::kPut);
  const uint64_t blocks = a.region / a.block;
  const TransferKind kind = a.op == "get" ? TransferKind::kGet : TransferKind::kPut;

  auto worker_loop = [&](int t, absl::Time until, std::atomic<uint64_t>* bytes, std::atomic<uint64_t>* errors) {
    std::vector<uint8_t> buf(a.block * a.batch, 0x11);
    (void)(*w)->registrations().Register(buf.data(), buf.size());
    std::vector<Transfer> trs(a.batch);
    std::vector<absl::Status> sts(a.batch);
    for (uint64_t i = t * a.batch; absl::Now() < until; i += a.concurrency * a.batch) {
      for (uint32_t k = 0; k < a.batch; ++k) {
        trs[k] = Transfer{kind, UcxPath::kAuto, 0, ((i + k) % blocks) * a.block, a.block, buf.data() + k * a.block};
      }
      if (!(*w)->Execute(peers[t % peers.size()], trs, std::span<absl::Status>(sts)).ok()) {
        errors->fetch_add(a.batch);
        continue;
      }
      for (const absl::Status& st : sts) {
        if (st.ok()) {
          bytes->fetch_add(a.block);
        } else {
          errors->fetch_add(1);
        }
      }
    }
    (void)(*w)->registrations().Unregister(buf.data());
  };
  // Warm-up, then the measured run.
  for (int phase = 0; phase < 2; ++phase) {
    std::atomic<uint64_t> bytes{0}, errors{0};
    const double server_cpu0 = CpuSeconds(pid);
    const absl::Time start = absl::Now();
    const absl::Time until = start + (phase == 0 ? absl::Milliseconds(300) : absl::Seconds(a.seconds));
    std::vector<std::thread> threads;
    for (int t = 0; t < a.concurrency; ++t) threads.emplace_back(worker_loop, t, until, &bytes, &errors);
    for (auto& th : threads) th.join();
    const double secs = absl::ToDoubleSeconds(absl::Now() - start);
    const double server_cpu = CpuSeconds(pid) - server_cpu0;
    if (phase == 0) continue;
    const double gib = static_cast<double>(bytes.load()) / static_cast<double>(1ull << 30);
    std::printf(
        "{\"tool\":\"kvhub-ucx-bench\",\"tls\":\"%s\",\"transports\":\"%s\",\"op\":\"%s\",\"path\":\"%s\","
        "\"block\":%lu,\"batch\":%u,\"concurrency\":%d,\"seconds\":%.2f,\"GBps\":%.3f,\"errors\":%lu,"
        "\"server_cpu_s\":%.3f,\"server_cpu_s_per_GiB\":%.4f}\n",
        a.tls.c_str(), transports.c_str(), a.op.c_str(), std::string(UcxPathName(path)).c_str(),
        static_cast<unsigned long>(a.block), a.batch, a.concurrency, secs, static_cast<double>(bytes.load()) / secs / 1e9,
        static_cast<unsigned long>(errors.load()), server_cpu, gib > 0 ? server_cpu / gib : -1.0);
    std::fflush(stdout);
  }
  SendMessage(down[1], "stop");
  close(down[1]);
  close(up[0]);
  waitpid(pid, nullptr, 0);
  return 0;
}

bool ParseArgs(int argc, char** argv, Args* a) {
  for (int i = 1; i < argc; ++i) {
    const std::string s = argv[i];
    auto val = [&](const char* name, std::string* out) {
      const std::string p = absl::StrCat("--", name, "=");
      if (s.rfind(p, 0) != 0) return false;
      *out = s.substr(p.size());
      return true;
    };
    std::string v;
    if (s == "--serve") {
      a->serve = true;
    } else if (s == "--poll") {
      a->poll = true;
    } else if (s == "--sleep") {
      a->poll = false;
    } else if (s == "--alloc") {
      a->alloc = true;
    } else if (s == "--register") {
      a->alloc = false;
    } else if (val("tls", &a->tls) || val("path", &a->path) || val("op", &a->op)) {
    } else if (val("block", &v)) {
      if (!absl::SimpleAtoi(v, &a->block) || a->block == 0) return false;
    } else if (val("concurrency", &v)) {
      if (!absl::SimpleAtoi(v, &a->concurrency) || a->concurrency < 1) return false;
    } else if (val("seconds", &v)) {
      if (!absl::SimpleAtod(v, &a->seconds) || a->seconds <= 0) return false;
    } else if (val("batch", &v)) {
      if (!absl::SimpleAtoi(v, &a->batch) || a->batch < 1 || a->batch > 1024) return false;
    } else if (val("region", &v)) {
      if (!absl::SimpleAtoi(v, &a->region)) return false;
    } else if (val("server-workers", &v)) {
      if (!absl::SimpleAtoi(v, &a->server_workers) || a->server_workers < 1 || a->server_workers > 64) return false;
    } else if (val("fds", &v)) {
      if (std::sscanf(v.c_str(), "%d,%d", &a->in, &a->out) != 2) return false;
    } else {
      std::fprintf(stderr, "unknown argument %s\n", s.c_str());
      return false;
    }
  }
  if (a->op != "get" && a->op != "put") return false;
  if (a->path != "auto" && a->path != "am" && a->path != "rma") return false;
  if (a->block > a->region || a->block * a->batch > a->region) return false;
  return true;
}

}  // namespace
}  // namespace kvhub::transport

static int RunProgram(int argc, char** argv) {
  kvhub::LogToStderr("kvhub-ucx-bench");  // stdout carries only the program's output
  kvhub::TurnOffMutexDeadlockChecks();  // tests keep them; see common/mutex_checks.h
  kvhub::transport::Args a;
  if (!kvhub::transport::ParseArgs(argc, argv, &a)) {
    std::fprintf(stderr,
                 "usage: kvhub-ucx-bench [--tls=tcp] [--path=auto|am|rma] [--op=get|put] [--block=BYTES]"
                 " [--concurrency=N] [--batch=B (transfers per Execute)]"
                 " [--seconds=S] [--region=BYTES] [--poll]"
                 " [--alloc (served region allocated by UCX)] [--server-workers=K]\n");
    return 2;
  }
  return a.serve ? kvhub::transport::Serve(a) : kvhub::transport::Run(a, argv);
}

// Output lost to a full disk or a closed pipe fails the program.
int main(int argc, char** argv) { return kvhub::ExitCodeAfterStdout(RunProgram(argc, argv), "kvhub-ucx-bench"); }
