#!/usr/bin/python3
"""Checks deploy/ against the kvhubd it deploys (ctest deploy_test; docs/deploy.md).

- Kubernetes manifests: every config key and flag the StatefulSet gives kvhubd is
  accepted by the real binary (kvhubd --print_config); ports, probes, the grace
  period, the memory limit and the tokens secret agree with that config.
- Prometheus rules and the Grafana dashboard: every kvhub metric they name is one
  a live kvhubd exports (labels included), every recording rule the dashboard uses
  is defined, and the alert's job is the scrape config's. With promtool installed
  (Debian package prometheus) the rules and the config also pass promtool.
- Container image: its runtime packages hold every shared library kvhubd and the
  kvhub CLI link (ldd, dpkg -S), and nothing else.

Usage: deploy_test.py --source REPO --bin BUILD/bin [--sanitized]
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

import yaml

FAILURES = []


def check(cond, what):
    if not cond:
        FAILURES.append(what)
        print("FAIL:", what)


def parse_size(text):
    m = re.fullmatch(r"(\d+)\s*(Ki|Mi|Gi|Ti|KiB|MiB|GiB|TiB)?", text.strip())
    assert m, text
    shift = {"Ki": 10, "KiB": 10, "Mi": 20, "MiB": 20, "Gi": 30, "GiB": 30, "Ti": 40, "TiB": 40}.get(m.group(2), 0)
    return int(m.group(1)) << shift


def load_manifests(source):
    with open(os.path.join(source, "deploy/kubernetes/kvhubd.yaml")) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    return {d["kind"]: d for d in docs}


def print_config(kvhubd, conf_text, args):
    """Runs kvhubd --print_config with the manifest's config file and flags."""
    with tempfile.TemporaryDirectory() as tmp:
        conf = os.path.join(tmp, "kvhubd.conf")
        with open(conf, "w") as f:
            f.write(conf_text)
        argv = [kvhubd]
        for a in args:
            argv.append("--config=" + conf if a.startswith("--config=") else a.replace("$(POD_NAME)", "kvhubd-0"))
        r = subprocess.run(argv + ["--print_config"], capture_output=True, text=True, timeout=30)
    check(r.returncode == 0, "kvhubd refuses the manifest's config: %s" % (r.stderr.strip() or r.stdout.strip()))
    config = {}
    for line in r.stdout.splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            k, v = line.split("=", 1)
            config[k.strip()] = v.strip()
    return config


def check_manifests(source, kvhubd):
    m = load_manifests(source)
    for kind in ("ConfigMap", "Service", "StatefulSet", "PodDisruptionBudget", "NetworkPolicy"):
        check(kind in m, "deploy/kubernetes/kvhubd.yaml has no " + kind)
    sts = m["StatefulSet"]
    pod = sts["spec"]["template"]
    c = pod["spec"]["containers"][0]
    config = print_config(kvhubd, m["ConfigMap"]["data"]["kvhubd.conf"], c["args"])
    if not config:
        return
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    check(config["grpc_address"].endswith(":%d" % ports["grpc"]), "grpc containerPort is not grpc_address's port")
    check(config["http_address"].endswith(":%d" % ports["http"]), "http containerPort is not http_address's port")
    check(not config["grpc_address"].startswith("127.") and not config["http_address"].startswith("127."),
          "kvhubd listens on loopback only inside the pod")
    svc_targets = {p["targetPort"] for p in m["Service"]["spec"]["ports"]}
    check(svc_targets <= set(ports), "the Service targets a port the container does not name")
    check(m["Service"]["spec"].get("clusterIP") == "None", "the Service is not headless (clients need each shard)")
    check(c["readinessProbe"]["httpGet"]["path"] == "/readyz", "readiness is not /readyz (503 while draining)")
    check(c["livenessProbe"]["httpGet"]["path"] == "/healthz", "liveness is not /healthz")
    for probe in ("readinessProbe", "livenessProbe"):
        check(c[probe]["httpGet"]["port"] in ("http", ports["http"]), probe + " is not on the HTTP port")
    drain_ms = int(config["drain_grace_ms"]) + int(config["shutdown_timeout_ms"])
    check(pod["spec"]["terminationGracePeriodSeconds"] * 1000 > drain_ms,
          "terminationGracePeriodSeconds does not cover drain_grace_ms + shutdown_timeout_ms (%d ms)" % drain_ms)
    limit = parse_size(c["resources"]["limits"]["memory"])
    capacity = int(config["capacity_bytes"])
    check(limit >= capacity * 1.1, "the memory limit (%d) leaves under 10%% above capacity_bytes (%d)" % (limit, capacity))
    check(c["resources"]["requests"]["memory"] == c["resources"]["limits"]["memory"],
          "memory request != limit (a cache shard should not be evicted for memory)")
    check(c["resources"]["requests"].get("cpu") is not None and
          c["resources"]["requests"].get("cpu") == c["resources"]["limits"].get("cpu"),
          "cpu request != limit: the pod is not Guaranteed QoS (a node out of memory kills the cache first)")
    check(pod["spec"]["securityContext"].get("seccompProfile", {}).get("type") == "RuntimeDefault",
          "no RuntimeDefault seccomp profile (Pod Security 'restricted' refuses the pods)")
    if config.get("eviction_policy") == "duel":
        # kvhubd warns past 2% of capacity (KvhubdConfig::PolicyMemoryWarning, ~370 B a slot).
        slots = int(config["max_blocks"]) or min(capacity // int(config["min_block_bytes"]), 1 << 22)
        check(slots * 370 * 50 <= capacity,
              "duel's per-slot state for %d slots is over 2%% of capacity_bytes: set max_blocks" % slots)
    # UCX's tcp port takes bytes from anyone who reaches it (docs/transport.md, "Security").
    np = m["NetworkPolicy"]["spec"]
    check(np["podSelector"]["matchLabels"] == sts["spec"]["selector"]["matchLabels"],
          "the NetworkPolicy does not select the shards' pods")
    check("Ingress" in np.get("policyTypes", []), "the NetworkPolicy does not restrict ingress")
    scrape = [r for r in np["ingress"] if any(p.get("port") in ("http", ports["http"]) for p in r.get("ports", []))]
    check(scrape and all(p["port"] in ("http", ports["http"]) for r in scrape for p in r["ports"]),
          "the NetworkPolicy lets no scrape reach the HTTP port, or lets it reach other ports")
    clients = [r for r in np["ingress"] if "ports" not in r]
    check(len(clients) == 1 and all(f.get("podSelector", {}).get("matchLabels") for f in clients[0]["from"]),
          "the NetworkPolicy's client rule (all ports: UCX's is not fixed) does not select labelled pods")
    # A pod label is set by whoever creates the pod: every rule must also name the
    # namespaces (labels only a cluster admin sets), never all of them ({}).
    check(all(f.get("namespaceSelector", {}).get("matchLabels") for r in np["ingress"] for f in r["from"]),
          "a NetworkPolicy rule admits pods of every namespace (namespaceSelector {}): a pod label alone is no boundary")
    check(sts["spec"].get("minReadySeconds", 0) >= 30,
          "no minReadySeconds: a rolling restart takes every shard's slice of the cache within seconds")
    ann = pod["metadata"]["annotations"]
    check(ann.get("prometheus.io/port") == str(ports["http"]), "the scrape annotation is not the HTTP port")
    tokens = config.get("auth_tokens_file", "")
    if tokens:
        mounts = [v for v in c["volumeMounts"] if tokens.startswith(v["mountPath"].rstrip("/") + "/")]
        check(len(mounts) == 1 and "subPath" not in mounts[0],
              "auth_tokens_file is not in a mounted directory (subPath mounts never see a rotated secret)")
        vols = {v["name"]: v for v in pod["spec"]["volumes"]}
        check(mounts and "secret" in vols.get(mounts[0]["name"], {}), "auth_tokens_file does not come from a Secret")
        check(pod["spec"]["securityContext"].get("fsGroup") is not None or
              pod["spec"]["securityContext"].get("runAsUser", 0) == 0,
              "a non-root kvhubd cannot read the tokens secret without fsGroup")
    print("manifests: kvhubd accepts the config (%d keys), ports/probes/grace/memory/secret agree" % len(config))


def start_kvhubd(kvhubd, tmp):
    tokens = os.path.join(tmp, "tokens")
    with open(tokens, "w") as f:
        f.write("deploy-test-ops-token-0123456789 *\n")
    # TLS too, so its metrics are exported (a self-signed certificate for 127.0.0.1).
    cert, key = os.path.join(tmp, "tls.crt"), os.path.join(tmp, "tls.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=deploy-test",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True, timeout=60)
    ready = os.path.join(tmp, "ready")
    proc = subprocess.Popen([kvhubd, "--grpc_address=127.0.0.1:0", "--http_address=127.0.0.1:0",
                             "--tls_cert_file=" + cert, "--tls_key_file=" + key,
                             "--capacity_bytes=64MiB", "--region_bytes=64MiB", "--max_block_bytes=1MiB",
                             "--try_hugepages=false", "--log_level=warn", "--shutdown_timeout_ms=1000", "--auth_tokens_file=" + tokens,
                             "--namespace_quota_bytes=1MiB", "--namespace_quotas=deploy-test:2MiB",  # quota metrics
                             "--ready_file=" + ready], stdout=subprocess.DEVNULL)
    for _ in range(200):
        if os.path.exists(ready):
            with open(ready) as f:
                line = f.read()
            if line.strip():
                return proc, dict(kv.split("=", 1) for kv in line.split()[2:])
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("kvhubd did not become ready")


def exported_metrics(bindir):
    """Metric names, the label names of each, and every value seen per label name,
    from a live kvhubd after a lookup."""
    with tempfile.TemporaryDirectory() as tmp:
        proc, addr = start_kvhubd(os.path.join(bindir, "kvhubd"), tmp)
        try:
            env = dict(os.environ, KVHUB_TOKEN="deploy-test-ops-token-0123456789",
                       KVHUB_TLS_CA=os.path.join(tmp, "tls.crt"))
            spec = "model=m1,layers=2,kv_heads=1,head_dim=8,dtype=bf16,rope_base=10000,block_tokens=4"
            r = subprocess.run([os.path.join(bindir, "kvhub"), "lookup", "--addr", addr["grpc"], "--ns", "deploy-test",
                                "--spec", spec, "--tokens", "1,2,3,4,5,6,7,8"], env=env,
                               capture_output=True, text=True, timeout=30)
            if r.returncode != 0:
                raise RuntimeError("kvhub lookup failed (%d): %s" % (r.returncode, r.stdout + r.stderr))
            text = urllib.request.urlopen("http://%s/metrics" % addr["http"], timeout=10).read().decode()
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    names, labels, values = set(), {}, {}
    for line in text.splitlines():
        t = re.match(r"# TYPE (\S+) (\S+)", line)
        if t:
            names.add(t.group(1))
            if t.group(2) == "histogram":
                names.update(t.group(1) + s for s in ("_bucket", "_sum", "_count"))
            continue
        s = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s", line)
        if s and not line.startswith("#"):
            pairs = re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="([^"]*)"', s.group(3) or "")
            labels.setdefault(s.group(1), set()).update(k for k, _ in pairs)
            for k, v in pairs:
                values.setdefault(k, set()).add(v)
    return names, labels, values


def check_monitoring(source, bindir):
    with open(os.path.join(source, "deploy/prometheus/kvhub-rules.yml")) as f:
        rules = yaml.safe_load(f)
    proms = {}
    for name in ("prometheus.yml", "prometheus-kubernetes.yml"):
        with open(os.path.join(source, "deploy/prometheus", name)) as f:
            proms[name] = yaml.safe_load(f)
    with open(os.path.join(source, "deploy/grafana/kvhub-dashboard.json")) as f:
        dash = json.load(f)
    exprs, recorded, alerts = [], set(), []
    for g in rules["groups"]:
        for r in g["rules"]:
            exprs.append(r["expr"])
            if "record" in r:
                recorded.add(r["record"])
            else:
                alerts.append(r)
    dash_exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    names, labels, values = exported_metrics(bindir)
    # The GPU tier's series exist only on shards with a GPU (none here): those are
    # checked against the names the exporter writes (cachesvc/metrics.cc).
    with open(os.path.join(source, "cachesvc/metrics.cc")) as f:
        gpu_only = set(re.findall(r'"(kvhub_gpu_tier_[a-z0-9_]+)"', f.read()))
    failed = len(FAILURES)
    for e in exprs + dash_exprs:
        for metric in re.findall(r"\b(?:kvhub|process)_[a-z0-9_]+", e):
            check(metric in names or metric in gpu_only, "%r names %s, which kvhubd does not export" % (e, metric))
        for rec in re.findall(r"\bkvhub:[a-z0-9_:]+", e):
            check(rec in recorded, "%r uses recording rule %s, which kvhub-rules.yml does not define" % (e, rec))
    # The labels the rules and panels aggregate by exist on the metrics they aggregate.
    target_labels = ("le", "instance", "job", "kubernetes_namespace")  # the last: Kubernetes discovery's
    for e in exprs + dash_exprs:
        for by, metric in re.findall(r"by \(([a-z_, ]+)\) \((?:(?:rate|increase)\()?(kvhub_[a-z0-9_]+)", e):
            for label in (x.strip() for x in by.split(",")):
                if label in target_labels:
                    continue
                check(label in labels.get(metric, set()), "%r groups by %s, a label %s lacks" % (e, label, metric))
    # Two installs scraped by one Prometheus both have a kvhubd-0: no rule or alert
    # may sum them into one cluster, so every aggregation keeps kubernetes_namespace.
    for e in exprs:
        for agg, by in re.findall(r"\b(sum|count|min|max|avg)\s*(?:by\s*\(([^)]*)\))?\s*\(", e):
            check("kubernetes_namespace" in (by or ""),
                  "%r aggregates with %s without kubernetes_namespace (two installs would be merged)" % (e, agg))
    # The dashboard shows one install at a time: every series it reads is selected
    # by the $install variable.
    check(any(v.get("name") == "install" and "kubernetes_namespace" in json.dumps(v.get("query"))
              for v in dash["templating"]["list"]), "the dashboard has no install (kubernetes_namespace) variable")
    for e in dash_exprs:
        for ref in re.findall(r"\b(?:kvhub:[a-z0-9_:]+|kvhub_[a-z0-9_]+|up)\b(?:\{[^}]*\})?", e):
            check('kubernetes_namespace=~"$install"' in ref, "dashboard %r reads %s from every install" % (e, ref))
    # Label values the rules and panels select on exist (a renamed RPC or result
    # would silently empty an alert): method="Get", method=~"Get|GetStream", ...
    # A label no series has (a typo) would empty it too.
    for e in exprs + dash_exprs:
        for label, op, value in re.findall(r'\b([a-z_]+)(=~|!=|=)"([^"]*)"', e):
            if label in target_labels or label == "__name__":
                continue
            check(label in values, "%r selects on %s, a label no kvhubd series has" % (e, label))
            if label not in values or op == "!=":
                continue
            wanted = value.split("|") if op == "=~" else [value]
            for v in wanted:
                if op == "=~" and not re.fullmatch(r"[A-Za-z0-9_]+", v):
                    continue  # a real pattern, not a list of values
                check(v in values[label], "%r selects %s=%r, a value no kvhubd series has" % (e, label, v))
    # KvhubShardsMissing counts scrape targets against the StatefulSet's replicas.
    replicas = load_manifests(source)["StatefulSet"]["spec"]["replicas"]
    missing = [a for a in alerts if a["alert"] == "KvhubShardsMissing"]
    # Only Kubernetes targets are counted: shards at fixed addresses (prometheus.yml)
    # carry no kubernetes_namespace, and counting them would page for good.
    check(len(missing) == 1 and
          re.search(r"count by \(kubernetes_namespace\) \(up\{job=\"kvhubd\", kubernetes_namespace!=\"\"\}\) < %d\b"
                    % replicas, missing[0]["expr"]),
          "KvhubShardsMissing does not count the StatefulSet's %d replicas among Kubernetes targets only" % replicas)
    for name, prom in proms.items():
        jobs = {s["job_name"] for s in prom["scrape_configs"]}
        for what, e in [("alert " + a["alert"], a["expr"]) for a in alerts] + [("dashboard", e) for e in dash_exprs]:
            for job in re.findall(r'job="([^"]+)"', e):
                check(job in jobs, "%s names job %s, which %s does not scrape" % (what, job, name))
        static = [s for s in prom["scrape_configs"] if "static_configs" in s]
        check(all("kubernetes_namespace" not in json.dumps(s) for s in static),
              name + ": a static target labelled kubernetes_namespace would be counted by KvhubShardsMissing")
        check(prom["rule_files"] == ["kvhub-rules.yml"], name + " does not load kvhub-rules.yml")
    # Target labels must not take the place of a label kvhubd's series carry (a
    # "namespace" target label would hide the cache namespace of every series).
    exported_labels = set().union(*labels.values())
    for name, prom in proms.items():
        for sc in prom["scrape_configs"]:
            for r in sc.get("relabel_configs", []):
                target = r.get("target_label", "")
                check(target.startswith("__") or target in ("instance", "job") or target not in exported_labels,
                      "%s relabels into %r, a label kvhubd's own series carry" % (name, target))
    # The Kubernetes discovery keeps the pods the manifests label and annotate.
    k8s = json.dumps(proms["prometheus-kubernetes.yml"])
    pod = load_manifests(source)["StatefulSet"]["spec"]["template"]["metadata"]
    check("__meta_kubernetes_pod_label_app_kubernetes_io_name" in k8s and
          pod["labels"].get("app.kubernetes.io/name") == "kvhubd", "the Kubernetes scrape config does not select kvhubd's pods")
    check("__meta_kubernetes_pod_annotation_prometheus_io_port" in k8s and "prometheus.io/port" in pod["annotations"],
          "the Kubernetes scrape config does not use the pods' scrape port annotation")
    promtool = shutil.which("promtool")
    if promtool:
        before_promtool = len(FAILURES)
        for args in (["check", "rules", "kvhub-rules.yml"], ["check", "config", "prometheus.yml"],
                     ["check", "config", "prometheus-kubernetes.yml"]):
            r = subprocess.run([promtool] + args, cwd=os.path.join(source, "deploy/prometheus"),
                               capture_output=True, text=True, timeout=60)
            if r.returncode != 0 and "field kubernetes_sd_configs not found" in r.stdout + r.stderr:
                # Debian's promtool is built without Kubernetes discovery: check the rest of
                # the file (relabelling, rule files, intervals) with static targets standing
                # in for the discovery, in a copy beside a copy of the rules.
                with tempfile.TemporaryDirectory() as tmp:
                    conf = json.loads(json.dumps(proms[args[-1]]))
                    for sc in conf["scrape_configs"]:
                        if sc.pop("kubernetes_sd_configs", None) is not None:
                            sc["static_configs"] = [{"targets": ["127.0.0.1:7481"]}]
                    with open(os.path.join(tmp, args[-1]), "w") as f:
                        yaml.safe_dump(conf, f)
                    shutil.copy(os.path.join(source, "deploy/prometheus/kvhub-rules.yml"), tmp)
                    r = subprocess.run([promtool] + args, cwd=tmp, capture_output=True, text=True, timeout=60)
                print("promtool %s: checked with static targets for the Kubernetes discovery "
                      "(this promtool is built without it)" % " ".join(args))
            check(r.returncode == 0, "promtool %s: %s" % (" ".join(args), r.stdout + r.stderr))
        if len(FAILURES) == before_promtool:
            print("monitoring: promtool accepts the rules and the configs")
    else:
        # install-deps.sh installs it (Debian package prometheus): a missing one is a
        # broken set-up, not a reason to pass unchecked.
        check(False, "promtool is not installed (Debian package prometheus; scripts/install-deps.sh)")
    if len(FAILURES) == failed:
        print("monitoring: %d expressions name only exported metrics and defined recording rules" %
              (len(exprs) + len(dash_exprs)))


def runtime_packages(binary):
    """The Debian packages that hold the shared libraries `binary` links."""
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    libs = re.findall(r"=> (/\S+)", out)
    # Merged /usr: dpkg may know a library under /lib or /usr/lib, by link or by target.
    candidates = {lib: [lib, os.path.realpath(lib), re.sub(r"^/usr", "", lib),
                        re.sub(r"^/usr", "", os.path.realpath(lib))] for lib in libs}
    r = subprocess.run(["dpkg", "-S"] + sorted({c for cs in candidates.values() for c in cs}),
                       capture_output=True, text=True)  # one call: dpkg -S is slow to start
    owner = {}
    for line in r.stdout.splitlines():
        pkg, _, path = line.partition(": ")
        owner[path.strip()] = pkg.split(":")[0]
    pkgs = set()
    for lib, cs in candidates.items():
        found = [owner[c] for c in cs if c in owner]
        check(bool(found), "%s links %s, which no Debian package provides" % (binary, lib))
        pkgs.update(found[:1])
    return pkgs


def check_image(source, bindir, sanitized):
    if sanitized:
        # The image is built by `make build`; these binaries also link the sanitizer runtimes.
        print("SKIP image check: a sanitizer build's binaries are not what the image carries")
        return
    failed = len(FAILURES)
    with open(os.path.join(source, "deploy/container/Dockerfile")) as f:
        text = f.read()
    runtime = text.split("FROM debian:12-slim", 1)
    check(len(runtime) == 2, "the Dockerfile has no debian:12-slim runtime stage")
    installed = set(re.findall(r"\b(lib[a-z0-9+.\-]+|zlib1g|ca-certificates)\b", runtime[-1]))
    base = {"libc6"}  # in debian:12-slim itself
    needed = set()
    for b in ("kvhubd", "kvhub"):
        linked = runtime_packages(os.path.join(bindir, b))
        needed |= linked
        missing = linked - installed - base
        check(not missing, "the image lacks the packages %s links: %s" % (b, sorted(missing)))
        check(re.search(r"build/bin/%s(?![\w-])" % re.escape(b), text), "the image does not carry " + b)
    extra = installed - needed - {"ca-certificates"}
    check(not extra, "the image installs packages neither kvhubd nor kvhub links: %s" % sorted(extra))
    check("scripts/install-deps.sh" in text and "make build" in text, "the build stage does not use install-deps + make build")
    try:
        with open(os.path.join(source, ".dockerignore")) as f:
            ignored = {line.strip() for line in f if line.strip() and not line.startswith("#")}
    except FileNotFoundError:
        ignored = set()
    check({"build", "build-*"} <= ignored, ".dockerignore does not keep build trees (CMake caches of another path) out")
    if len(FAILURES) == failed:
        print("image: its runtime packages are exactly the libraries kvhubd and kvhub link")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--source", required=True)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--sanitized", action="store_true", help="binaries of an ASan/TSan build")
    a = ap.parse_args()
    check_manifests(a.source, os.path.join(a.bin, "kvhubd"))
    check_monitoring(a.source, a.bin)
    check_image(a.source, a.bin, a.sanitized)
    if FAILURES:
        print("%d check(s) failed" % len(FAILURES))
        return 1
    print("deploy: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
