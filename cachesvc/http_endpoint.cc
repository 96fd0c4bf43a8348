#include "cachesvc/http_endpoint.h"

#include <map>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"

namespace kvhub::cachesvc {

absl::StatusOr<std::unique_ptr<HttpEndpoint>> HttpEndpoint::Start(const std::string& address,
                                                                  const HttpServerConfig& config,
                                                                  Callbacks callbacks) {
  std::unique_ptr<HttpEndpoint> ep(new HttpEndpoint());
  ep->callbacks_ = std::move(callbacks);
  const HttpEndpoint* self = ep.get();
  auto text = [](int status, const char* body) {
    HttpResponse r;
    r.status = status;
    r.body = body;
    return r;
  };
  std::map<std::string, HttpHandler> routes;
  auto broken = [self]() -> std::optional<HttpResponse> {
    std::string why = self->callbacks_.broken ? self->callbacks_.broken() : "";
    if (why.empty()) return std::nullopt;
    HttpResponse r;
    r.status = 503;
    r.body = absl::StrCat(why, "\n");
    return r;
  };
  routes["/healthz"] = [text, broken](const HttpRequest&) { return broken().value_or(text(200, "ok\n")); };
  routes["/readyz"] = [self, text, broken](const HttpRequest&) {
    if (std::optional<HttpResponse> r = broken()) return *std::move(r);
    return self->callbacks_.serving() ? text(200, "ready\n") : text(503, "draining\n");
  };
  routes["/metrics"] = [self](const HttpRequest&) {
    HttpResponse r;
    r.content_type = "text/plain; version=0.0.4; charset=utf-8";
    r.body = self->callbacks_.metrics();
    return r;
  };
  routes["/dashboard"] = [](const HttpRequest&) {
    HttpResponse r;
    r.content_type = "text/html; charset=utf-8";
    r.body = DashboardHtml();
    return r;
  };
  routes["/"] = [](const HttpRequest&) {
    HttpResponse r;
    r.status = 302;
    r.headers.emplace_back("Location", "/dashboard");
    return r;
  };
  absl::StatusOr<std::unique_ptr<HttpServer>> server = HttpServer::Start(address, std::move(routes), config);
  if (!server.ok()) return server.status();
  ep->server_ = std::move(*server);
  ep->address_ = ep->server_->address();
  return ep;
}

HttpEndpoint::~HttpEndpoint() { Stop(); }

void HttpEndpoint::Stop() {
  if (server_) server_->Stop();
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
    // [^]: any character, U+2028/U+2029 in a label value included ('.' skips them).
    const m=line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^]*)\})?\s+(\S+)$/);
    if(!m)continue;
    const labels={};
    if(m[3]) for(const kv of m[3].matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[kv[1]]=kv[2].replace(/\\(.)/g,(m,c)=>c==='n'?'\n':c);
    out.push({name:m[1],labels,value:parseFloat(m[4])});
  }
  return out;
}
function sum(ms,name,f){return ms.filter(m=>m.name===name&&(!f||f(m.labels))).reduce((a,m)=>a+m.value,0);}
function fmtB(b){const u=['B','KiB','MiB','GiB','TiB'];let i=0;while(b>=1024&&i<4){b/=1024;i++;}return b.toFixed(1)+' '+u[i];}
// Label values come from clients (namespaces, model names): every cell is text,
// escaped, unless built here as {html: ...}.
function esc(s){return String(s).replace(/[&<>"']/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;',"'":'&#39;'}[c]));}
function row(cells,h){return '<tr>'+cells.map(c=>(h?'<th>':'<td>')+(c!==null&&typeof c==='object'?c.html:esc(c))+(h?'</th>':'</td>')).join('')+'</tr>';}
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
    // Rates over the last tick; '-' when a counter went down (the process restarted).
    let bw='-',bwp='-',hrNow='-';
    if(prev){
      const dt=t-prevT, rate=(a,b)=>a>=b?fmtB((a-b)/dt)+'/s':'-';
      bw=rate(cur.get,prev.get);bwp=rate(cur.put,prev.put);
      const dreq=cur.req-prev.req, dhit=cur.hit-prev.hit;
      if(dreq>0&&dhit>=0)hrNow=(100*dhit/dreq).toFixed(1)+'%';
    }
    prev=cur;prevT=t;
    const hr=cur.req>0?(100*cur.hit/cur.req).toFixed(1)+'%':(cur.rk>0?(100*cur.hk/cur.rk).toFixed(1)+'% (keys)':'-');
    document.getElementById('summary').innerHTML=
      row(['hit rate (since start)','hit rate (last 2 s)','get bandwidth','put bandwidth','get total','put total'],true)+
      row([hr,hrNow,bw,bwp,fmtB(cur.get),fmtB(cur.put)]);
    let tiers=row(['tier','occupancy','used','capacity','blocks','evictions'],true);
    for(const c of ms.filter(m=>m.name==='kvhub_tier_capacity_bytes')){
      const tier=c.labels.tier, f=l=>l.tier===tier;
      const used=sum(ms,'kvhub_tier_used_bytes',f), pct=c.value>0?100*used/c.value:0;
      tiers+=row([tier,{html:'<span class="bar"><div style="width:'+pct.toFixed(1)+'%"></div></span> '+pct.toFixed(1)+'%'},
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
