"""deploy/: the Kubernetes manifests parse (PyYAML) and fit together (selectors, ports, probes on
the endpoints kiln serves), the Deployment's command line is one `kiln serve` runs, and the
Dockerfile builds from Debian 12 with the packages kiln builds against and installs the
libraries the kiln binary links. No cluster and no Docker here: the files are checked, not
deployed."""
import re
import subprocess

import httpx
import pytest
import yaml

from conftest import BUILD, ROOT
from serve_util import SANITIZED, Server
from test_serve import offering  # noqa: F401  (the shared fixture)

DEPLOY = ROOT / "deploy"


def docs():
    out = {}
    for f in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for d in yaml.safe_load_all(f.read_text()):
            assert d and "apiVersion" in d and "kind" in d and d["metadata"]["name"], f
            out[d["kind"]] = d
    return out


@pytest.fixture(scope="module")
def k8s():
    d = docs()
    assert {"Deployment", "Service", "InferencePool"} <= set(d)
    return d


def container(dep):
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    return c


def arg(args, name):
    return args[args.index(name) + 1]


def test_deployment(k8s):
    dep = k8s["Deployment"]
    assert dep["apiVersion"] == "apps/v1"
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
    c = container(dep)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["http"] == int(arg(c["args"], "--port"))
    assert arg(c["args"], "--host") == "0.0.0.0"
    # readiness waits for the model and its compiled graphs (/health is 503 until then)
    for probe in ("readinessProbe", "startupProbe"):
        assert c[probe]["httpGet"]["path"] == "/health" and c[probe]["httpGet"]["port"] == "http"
    assert c["livenessProbe"]["httpGet"]["path"] == "/metrics"
    assert {"cpu", "memory"} <= set(c["resources"]["requests"])
    assert "memory" in c["resources"]["limits"]
    # SIGTERM drains for --drain-timeout: the pod must be given longer than that
    grace = dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > float(arg(c["args"], "--drain-timeout"))
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert any(c["args"][0].startswith(m + "/") for m in mounts)


def test_service_and_pool_select_the_pods(k8s):
    dep, svc, pool = k8s["Deployment"], k8s["Service"], k8s["InferencePool"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    c = container(dep)
    assert svc["spec"]["selector"].items() <= labels.items()
    (port,) = svc["spec"]["ports"]
    assert port["targetPort"] in {p["name"] for p in c["ports"]}
    assert pool["apiVersion"] == "inference.networking.k8s.io/v1"
    assert pool["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert [p["number"] for p in pool["spec"]["targetPorts"]] == \
        [p["containerPort"] for p in c["ports"]]
    assert pool["spec"]["endpointPickerRef"]["name"]


def test_the_deployments_command_line_serves(k8s, offering):
    """The manifest's args, with the offering, host and port swapped for this machine's, start a
    server that answers under the manifest's alias."""
    args = list(container(k8s["Deployment"])["args"])
    args[0] = str(offering)
    args[args.index("--host") + 1] = "127.0.0.1"
    args[args.index("--port") + 1] = "0"
    s = Server(args[0], *args[1:])
    try:
        models = httpx.get(s.url + "/v1/models", timeout=30).json()
        assert [m["id"] for m in models["data"]] == [arg(args, "--alias")]
        assert s.metric("kiln_slots_total") == int(arg(args, "--parallel"))
    finally:
        s.kill()


def test_router_metric_names_exist(offering):
    """The names deploy/README.md tells an endpoint picker to read are the ones /metrics has."""
    readme = (DEPLOY / "README.md").read_text()
    named = set(re.findall(r"`(kiln_[a-z_]+)`", readme))
    assert {"kiln_num_requests_waiting", "kiln_num_requests_running",
            "kiln_kv_cache_usage_perc"} <= named
    s = Server(offering, "--parallel", 1)
    try:
        have = {l.split()[2] for l in s.metrics().splitlines() if l.startswith("# TYPE ")}
    finally:
        s.kill()
    assert named <= have, named - have


def test_dockerfile():
    text = (DEPLOY / "Dockerfile").read_text()
    froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert froms and all(f.startswith("debian:12") for f in froms)
    # the build stage installs what scripts/deps.sh says kiln builds against
    deps = re.search(r"pkgs=\(([^)]*)\)", (ROOT / "scripts" / "deps.sh").read_text()).group(1)
    for lib in (p for p in deps.split() if p.startswith("lib")):
        assert lib in text, f"the Dockerfile's build stage lacks {lib}"
    entry = re.search(r"^ENTRYPOINT\s+(\[.*\])", text, re.M).group(1)
    cmd = re.search(r"^CMD\s+(\[.*\])", text, re.M).group(1)
    assert yaml.safe_load(entry)[-1] == "serve"
    assert yaml.safe_load(cmd)[0] == container(docs()["Deployment"])["args"][0]
    assert re.search(r"^EXPOSE\s+8080$", text, re.M)


@pytest.mark.skipif(SANITIZED, reason="a sanitizer build links the sanitizer runtimes too")
def test_dockerfile_runtime_has_what_kiln_links():
    """Each shared library the built kiln binary links directly (its DT_NEEDED entries) comes
    from a Debian package the Dockerfile's last stage installs (or from libc6, which
    debian:12-slim has); their own dependencies come with those packages."""
    text = (DEPLOY / "Dockerfile").read_text()
    runtime = text[text.rindex("FROM "):]
    kiln = str(BUILD / "kiln")
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[(\S+)\]",
                        subprocess.run(["readelf", "-d", kiln], capture_output=True,
                                       text=True).stdout)
    where = dict(re.findall(r"^\s*(\S+) => (/\S+)", subprocess.run(
        ["ldd", kiln], capture_output=True, text=True).stdout, re.M))
    assert "libmicrohttpd.so.12" in needed
    for lib in (where[n] for n in needed):
        owner = subprocess.run(["dpkg", "-S", lib], capture_output=True, text=True)
        if owner.returncode != 0:   # a merged-/usr path: ask for the other spelling
            alt = lib[4:] if lib.startswith("/usr/") else "/usr" + lib
            owner = subprocess.run(["dpkg", "-S", alt], capture_output=True, text=True)
        pkg = owner.stdout.split(":")[0]
        assert pkg, f"no package owns {lib}"
        assert pkg in ("libc6",) or pkg in runtime, f"{lib} ({pkg}) is not in the runtime stage"
