"""``rtdecoder doctor`` and the deployment files."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_doctor_reports_every_area_and_what_serve_would_choose():
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "0"}  # the real probe, not the tests' simulator
    r = subprocess.run([sys.executable, "-m", "rtdecoder", "doctor", "--json"], capture_output=True, text=True,
                       timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    findings = json.loads(r.stdout)
    areas = {f["area"] for f in findings}
    for must in ("pyverbs", "libibverbs", "gpu", "cpus", "isolated cores", "busy poll sysctls", "hugepages",
                 "clock source", "/dev/cpu_dma_latency", "locked memory limit", "serve --transport auto",
                 "serve --backend auto"):
        assert must in areas, must
    assert all(f["status"] in ("ok", "warn", "info") for f in findings)
    assert all(f["advice"] for f in findings if f["status"] == "warn"), "every warning says what to do"
    t = next(f for f in findings if f["area"] == "serve --transport auto")
    assert t["found"].startswith(("udp: transport auto chose udp", "roce: transport auto chose roce"))


def test_doctor_table_prints():
    r = subprocess.run([sys.executable, "-m", "rtdecoder", "doctor"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "rtdecoder doctor" in r.stdout and "serve --transport auto" in r.stdout


def test_tune_host_script_dry_run_changes_nothing():
    script = ROOT / "deploy" / "tune-host.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    r = subprocess.run(["bash", str(script), "--cpus", "1"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "busy_read=50" in r.stdout and "isolcpus=managed_irq,domain,1" in r.stdout
    assert "dry run: nothing changed" in r.stdout
    bad = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--cpus is required" in bad.stderr


def test_systemd_unit_and_container_file_point_at_real_commands():
    unit = (ROOT / "deploy" / "rtdecoder.service").read_text()
    assert "ExecStart=/opt/rtdecoder/venv/bin/rtdecoder serve --config" in unit
    assert "ExecReload=/bin/kill -HUP $MAINPID" in unit and "LimitMEMLOCK=infinity" in unit
    sections = [ln for ln in unit.splitlines() if ln.startswith("[")]
    assert sections == ["[Unit]", "[Service]", "[Install]"]
    cf = (ROOT / "deploy" / "Containerfile").read_text()
    assert cf.startswith("#") and "FROM python:3.11" in cf and 'ENTRYPOINT ["/opt/rtdecoder/venv/bin/rtdecoder"]' in cf
    assert (ROOT / "deploy" / "TUNING.md").read_text().count("tune-host.sh") >= 3


STREAMS_TOML = """
[server]
port = 7700

[[streams]]
id = 0
distance = 13
decoder = "matching_correlated"
allow = ["10.0.0.10/32"]

[[streams]]
id = 1
distance = 3
decoder = "union_find"

[[streams]]
id = 2
distance = 3
decoder = "union_find"

[[streams]]
id = 3
distance = 3
decoder = "union_find"

[[streams]]
id = 4
distance = 5
decoder = "union_find"
parallel = 2
window = 10
commit = 5
"""


def test_shard_splits_by_decode_cost_not_by_count(tmp_path):
    """One costly stream (correlated matching at d = 13) against four cheap ones on two nodes:
    the costly one gets a node to itself; every stream lands once, in a config the service loads."""
    from rtdecoder.configfile import load_config

    src = tmp_path / "streams.toml"
    src.write_text(STREAMS_TOML)
    r = subprocess.run([sys.executable, "-m", "rtdecoder", "shard", str(src), "--nodes", "2", "--out",
                        str(tmp_path / "out"), "--hosts", "gpu-a,gpu-b", "--kubernetes"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    nodes = [load_config(tmp_path / "out" / f"node-{i}.toml") for i in range(2)]
    ids = [sorted(s.id for s in n.streams) for n in nodes]
    assert sorted(ids) == [[0], [1, 2, 3, 4]]
    assert all(n.port == 7700 for n in nodes)
    assert "stream 0 (controllers 10.0.0.10/32" in r.stdout and "-> gpu-" in r.stdout
    r = subprocess.run([sys.executable, "-m", "rtdecoder", "shard", str(src), "--nodes", "9"], capture_output=True,
                       text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 2 and "too few for 9 nodes" in r.stderr


def _validate(doc: dict) -> None:
    import kubernetes_validate

    kubernetes_validate.validate(doc, "1.30", strict=True)


def _merge(base, patch):
    """Kubernetes' strategic merge for what the patches use: maps merged, containers by name."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            out[k] = _merge(base[k], v) if k in base else v
        return out
    if isinstance(base, list) and isinstance(patch, list) and all(isinstance(x, dict) and "name" in x for x in base):
        out = list(base)
        for p in patch:
            i = next(j for j, b in enumerate(out) if b["name"] == p["name"])
            out[i] = _merge(out[i], p)
        return out
    return patch


def test_the_kubernetes_manifests_validate_and_run_one_guaranteed_host_network_pod_per_node(tmp_path):
    import yaml

    kdir = ROOT / "deploy" / "kubernetes"
    docs = list(yaml.safe_load_all((kdir / "base" / "rtdecoder.yaml").read_text()))
    kinds = {d["kind"]: d for d in docs}
    assert set(kinds) == {"StatefulSet", "Service", "ServiceMonitor"}
    for kind in ("StatefulSet", "Service"):
        _validate(kinds[kind])
    sts = kinds["StatefulSet"]
    pod = sts["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert pod["hostNetwork"] is True
    anti = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
    assert anti["topologyKey"] == "kubernetes.io/hostname"
    res = c["resources"]
    assert res["requests"] == res["limits"] and float(res["requests"]["cpu"]).is_integer()  # Guaranteed, whole CPUs
    assert "hugepages-2Mi" in res["limits"]
    assert "rtdecoder hello" in " ".join(c["readinessProbe"]["exec"]["command"])
    shards = [s["configMap"]["name"] for s in pod["volumes"][0]["projected"]["sources"]]
    assert shards == [f"rtdecoder-shard-{i}" for i in range(sts["spec"]["replicas"])]
    mon = kinds["ServiceMonitor"]  # a CRD: checked against the Service it selects
    assert mon["apiVersion"] == "monitoring.coreos.com/v1"
    assert mon["spec"]["selector"]["matchLabels"].items() <= kinds["Service"]["metadata"]["labels"].items()
    assert {e["port"] for e in mon["spec"]["endpoints"]} <= {p["name"] for p in kinds["Service"]["spec"]["ports"]}
    for variant, resource in (("gpu", "nvidia.com/gpu"), ("rdma", "rdma/rdma_shared_device_a")):
        kz = yaml.safe_load((kdir / variant / "kustomization.yaml").read_text())
        assert kz["resources"] == ["../base"]
        patch = yaml.safe_load((kdir / variant / kz["patches"][0]["path"]).read_text())
        merged = _merge(sts, patch)
        _validate(merged)
        (mc,) = merged["spec"]["template"]["spec"]["containers"]
        assert mc["resources"]["limits"][resource] == "1" and mc["resources"]["limits"]["cpu"] == res["limits"]["cpu"]
    src = tmp_path / "streams.toml"
    src.write_text(STREAMS_TOML)
    subprocess.run([sys.executable, "-m", "rtdecoder", "shard", str(src), "--nodes", "2", "--out", str(tmp_path),
                    "--kubernetes"], check=True, capture_output=True, timeout=300)
    for i in range(2):
        cm = yaml.safe_load((tmp_path / f"configmap-shard-{i}.yaml").read_text())
        _validate(cm)
        import tomllib

        assert cm["metadata"]["name"] == shards[i] and tomllib.loads(cm["data"]["streams.toml"])["streams"]


def test_hello_answers_for_a_ready_service_and_fails_for_a_stream_it_lacks():
    from rtdecoder.cli import ServiceProcess

    with ServiceProcess(["--distance", "3", "--rounds", "3", "--decoder", "union_find"]) as svc:
        ok = subprocess.run([sys.executable, "-m", "rtdecoder", "hello", "--port", str(svc.port), "--stream", "0"],
                            capture_output=True, text=True, timeout=120)
        bad = subprocess.run([sys.executable, "-m", "rtdecoder", "hello", "--port", str(svc.port), "--stream", "0,9"],
                             capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and "1 stream(s) ready" in ok.stdout
    assert bad.returncode == 1 and "stream 9 at" in bad.stderr and "UNKNOWN_STREAM" in bad.stderr
    dead = subprocess.run([sys.executable, "-m", "rtdecoder", "hello", "--port", "9", "--timeout", "0.2"],
                          capture_output=True, text=True, timeout=120)
    assert dead.returncode == 1 and "stream 0 at" in dead.stderr


def test_the_slurm_example_parses_and_runs_one_shard_per_node():
    script = ROOT / "deploy" / "slurm" / "rtdecoder.sbatch"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    text = script.read_text()
    assert "--ntasks-per-node=1" in text and "node-$SLURM_NODEID.toml" in text and "rtdecoder shard" in text
