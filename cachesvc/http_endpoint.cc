#include "cachesvc/http_endpoint.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <httplib.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "cachesvc/http_task_queue.h"
#include "common/fd_limit.h"

namespace kvhub::cachesvc {
namespace {

// Debian's compiled cpp-httplib listens with a backlog of 5: past 5 connections
// not yet accepted (a burst of scrapes, probes or a scanner) the kernel drops
// SYNs, and a probe then waits a 1 s retransmit or more. Linux lets listen() be
// called again on a listening socket to enlarge its backlog; httplib does not
// expose its socket, so this finds it among our descriptors by its port.
void EnlargeListenBacklog(int port) {
  for (int fd : OpenFileDescriptors()) {
    int listening = 0;
    socklen_t len = sizeof(listening);
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0 || listening == 0) continue;
    sockaddr_storage addr{};
    socklen_t alen = sizeof(addr);
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &alen) != 0) continue;
    int bound = -1;
    if (addr.ss_family == AF_INET) bound = ntohs(reinterpret_cast<const sockaddr_in*>(&addr)->sin_port);
    if (addr.ss_family == AF_INET6) bound = ntohs(reinterpret_cast<const sockaddr_in6*>(&addr)->sin6_port);
    if (bound == port) ::listen(fd, SOMAXCONN);
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<HttpEndpoint>> HttpEndpoint::Start(const std::string& address, int max_threads,
                                                                  Callbacks callbacks) {
  size_t colon = address.rfind(':');
  int port = -1;
  if (colon == std::string::npos || !absl::SimpleAtoi(address.substr(colon + 1), &port) || port < 0 ||
      port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("http_address '", address, "' is not HOST:PORT"));
  }
  std::string host = address.substr(0, colon);
  std::string bind_host = host;
  if (bind_host.size() >= 2 && bind_host.front() == '[' && bind_host.back() == ']') {
    bind_host = bind_host.substr(1, bind_host.size() - 2);
  }

  std::unique_ptr<HttpEndpoint> ep(new HttpEndpoint());
  ep->callbacks_ = std::move(callbacks);
  ep->server_ = std::make_unique<httplib::Server>();
  httplib::Server& srv = *ep->server_;
  const size_t n = static_cast<size_t>(std::max(max_threads, 1));
  srv.new_task_queue = [n] { return new HttpTaskQueue(n); };
  // A connection holds its thread while it waits for a request: 2 s, not httplib's 5
  // (scrapers come back every 10-60 s and reconnect; probes connect anew each time).
  srv.set_keep_alive_timeout(2);
  HttpEndpoint* self = ep.get();
  srv.Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("ok\n", "text/plain");
  });
  srv.Get("/readyz", [self](const httplib::Request&, httplib::Response& res) {
    if (self->callbacks_.serving()) {
      res.set_content("ready\n", "text/plain");
    } else {
      res.status = 503;
      res.set_content("draining\n", "text/plain");
    }
  });
  srv.Get("/metrics", [self](const httplib::Request&, httplib::Response& res) {
    res.set_content(self->callbacks_.metrics(), "text/plain; version=0.0.4; charset=utf-8");
  });
  srv.Get("/dashboard", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(DashboardHtml(), "text/html; charset=utf-8");
  });
  srv.Get("/", [](const httplib::Request&, httplib::Response& res) { res.set_redirect("/dashboard"); });
  // The endpoints are read-only: other methods on them get 405 and the methods that work.
  const auto not_allowed = [](const httplib::Request&, httplib::Response& res) {
    res.status = 405;
    res.set_header("Allow", "GET, HEAD");
    res.set_content("method not allowed: use GET\n", "text/plain");
  };
  const char* kPaths = "/(healthz|readyz|metrics|dashboard)?";
  srv.Post(kPaths, not_allowed);
  srv.Put(kPaths, not_allowed);
  srv.Patch(kPaths, not_allowed);
  srv.Delete(kPaths, not_allowed);

  // cpp-httplib's default sets SO_REUSEPORT, which let a second kvhubd bind a
  // port this one listens on and take half its probes and scrapes. SO_REUSEADDR
  // only: a restart may rebind while old connections sit in TIME_WAIT.
  srv.set_socket_options([](int fd) {
    int yes = 1;
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  int bound = port;
  if (port == 0) {
    bound = srv.bind_to_any_port(bind_host);
    if (bound <= 0) return absl::UnavailableError(absl::StrCat("cannot bind http_address ", address));
  } else if (!srv.bind_to_port(bind_host, port)) {
    return absl::UnavailableError(absl::StrCat("cannot bind http_address ", address, " (in use?)"));
  }
  EnlargeListenBacklog(bound);
  ep->address_ = absl::StrCat(host, ":", bound);
  ep->thread_ = std::thread([self] { self->server_->listen_after_bind(); });
  return ep;
}

HttpEndpoint::~HttpEndpoint() { Stop(); }

void HttpEndpoint::Stop() {
  if (server_) server_->stop();
  if (thread_.joinable()) thread_.join();
}

const char* DashboardHtml() {
  return R"HTML(<!doctype html>
<html><head><meta charset="utf-8"><title>kvhubd</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em;background:#fafafa;color:#222}
h1{font-size:1.3em} table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:4px 10px;text-align:right} th{background:#eee}
.bar{background:#ddd;width:300px;height:14px;display:inline-block}
.bar>div{background:#4a8;height:14px}
</style></head><body>
<h1>kvhubd <span id="node"></span> <span id="state"></span></h1>
<table id="summary"></table>
<h2>Tiers</h2><table id="tiers"></table>
<h2>Lookup hit rate (token-weighted) by namespace / model</h2><table id="hits"></table>
<p><small>Refreshes every 2 s from <a href="/metrics">/metrics</a>.</small></p>
<script>
let prev=null, prevT=0;
function parse(text){
  const out=[];
  for(const line of text.split('\n')){
    if(!line||line[0]==='#')continue;
    const m=line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)$/);
    if(!m)continue;
    const labels={};
    if(m[3]) for(const kv of m[3].matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[kv[1]]=kv[2];
    out.push({name:m[1],labels,value:parseFloat(m[4])});
  }
  return out;
}
function sum(ms,name,f){return ms.filter(m=>m.name===name&&(!f||f(m.labels))).reduce((a,m)=>a+m.value,0);}
function fmtB(b){const u=['B','KiB','MiB','GiB','TiB'];let i=0;while(b>=1024&&i<4){b/=1024;i++;}return b.toFixed(1)+' '+u[i];}
function row(cells,h){return '<tr>'+cells.map(c=>(h?'<th>':'<td>')+c+(h?'</th>':'</td>')).join('')+'</tr>';}
async function tick(){
  try{
    const t=performance.now()/1000;
    const ms=parse(await (await fetch('/metrics')).text());
    const up=ms.find(m=>m.name==='kvhub_up');
    document.getElementById('node').textContent=up?up.labels.node:'';
    document.getElementById('state').textContent=up&&up.value===1?'(serving)':'(draining)';
    const cur={get:sum(ms,'kvhub_get_bytes_total'),put:sum(ms,'kvhub_put_bytes_total'),
      req:sum(ms,'kvhub_lookup_requested_tokens_total'),hit:sum(ms,'kvhub_lookup_hit_tokens_total'),
      rk:sum(ms,'kvhub_lookup_requested_keys_total'),hk:sum(ms,'kvhub_lookup_hit_keys_total')};
    let bw='-',bwp='-';
    if(prev){const dt=t-prevT;bw=fmtB((cur.get-prev.get)/dt)+'/s';bwp=fmtB((cur.put-prev.put)/dt)+'/s';}
    prev=cur;prevT=t;
    const hr=cur.req>0?(100*cur.hit/cur.req).toFixed(1)+'%':(cur.rk>0?(100*cur.hk/cur.rk).toFixed(1)+'% (keys)':'-');
    document.getElementById('summary').innerHTML=row(['hit rate','get bandwidth','put bandwidth','get total','put total'],true)+
      row([hr,bw,bwp,fmtB(cur.get),fmtB(cur.put)]);
    let tiers=row(['tier','occupancy','used','capacity','blocks','evictions'],true);
    for(const c of ms.filter(m=>m.name==='kvhub_tier_capacity_bytes')){
      const tier=c.labels.tier, f=l=>l.tier===tier;
      const used=sum(ms,'kvhub_tier_used_bytes',f), pct=c.value>0?100*used/c.value:0;
      tiers+=row([tier,'<span class="bar"><div style="width:'+pct.toFixed(1)+'%"></div></span> '+pct.toFixed(1)+'%',
        fmtB(used),fmtB(c.value),sum(ms,'kvhub_tier_blocks',f),sum(ms,'kvhub_tier_evictions_total',f)]);
    }
    document.getElementById('tiers').innerHTML=tiers;
    let hits=row(['namespace','model','requested tokens','hit tokens','hit rate'],true);
    for(const r of ms.filter(m=>m.name==='kvhub_lookup_requested_tokens_total')){
      const f=l=>l.namespace===r.labels.namespace&&l.model===r.labels.model;
      const h=sum(ms,'kvhub_lookup_hit_tokens_total',f);
      hits+=row([r.labels.namespace,r.labels.model,r.value,h,r.value>0?(100*h/r.value).toFixed(1)+'%':'-']);
    }
    document.getElementById('hits').innerHTML=hits;
  }catch(e){document.getElementById('state').textContent='(unreachable)';}
}
tick();setInterval(tick,2000);
</script></body></html>
)HTML";
}

}  // namespace kvhub::cachesvc
