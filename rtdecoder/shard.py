"""``rtdecoder shard``: spread a configuration's streams over several nodes by their estimated
decode cost, and write one configuration per node.

Cost of a stream: the CPU time its decoder spends per round of the controller's cycle,
``detectors per round × µs per detector-round of its decoder`` (``DecoderSpec.cost_us``,
``decoder_cost_us``), the controllers of
all streams taken to run at the same cycle. Detectors per round come from the stream's circuit
(or its CUDA-Q matrices), counted as its detector layout counts them; the per-decoder figures are
``bench/decode_cost.py``'s on the reference 2-core VM (d = 13, windows 26/13, p = 0.001, through
``Engine.decode_shots``: union-find 1.566, matching 3.866, correlated matching 13.669 µs per round,
165.5 detectors per round). A parallel stream costs the same in all and needs ``parallel`` CPUs on
its node.

Assignment: longest processing time first (each stream, most costly first, to the node with the
least cost so far), which is within 4/3 of the best possible makespan (Graham, 1969).

Output: ``node-<i>.toml`` per node, each the input's ``[server]`` table and its streams'
``[[streams]]`` tables unchanged (written with ``tomli_w``); with ``kubernetes=True`` also one
ConfigMap per node (``rtdecoder-shard-<i>``, key ``streams.toml``) for
``deploy/kubernetes/rtdecoder.yaml``.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from rtdecoder.config import ConfigError
from rtdecoder.configfile import load_config

def decoder_cost_us(name: str) -> float:
    """µs per detector per round of the registered decoder ``name`` (``DecoderSpec.cost_us``); a
    decoder without a measured figure is costed as the costliest registered one."""
    from rtdecoder import decoders

    spec = decoders.get(name)
    return spec.cost_us or max(s.cost_us for s in decoders.specs())


@dataclass
class Assignment:
    """One node's share: ``streams`` (the raw ``[[streams]]`` tables), their ids, the estimated
    cost in µs per round cycle, and the helper threads its parallel streams need (``parallel - 1``
    each, each wanting a CPU of its own)."""

    node: int
    streams: list[dict]
    ids: list[int]
    cost_us: float
    helpers: int


def stream_cost(cfg) -> tuple[float, int]:
    """``(µs per round cycle, detectors per round)`` of a ``StreamConfig`` (module docstring)."""
    from rtdecoder.dem import detector_layout, make_circuit

    if cfg.model is not None:
        layout = detector_layout(cfg.model.dem)
    else:
        layout = detector_layout(make_circuit(cfg))
    per_round = layout.num_detectors / max(layout.num_rounds, 1)
    return per_round * decoder_cost_us(cfg.decoder), int(round(per_round))


def shard(path: str | Path, nodes: int) -> tuple[dict, list[Assignment], dict[int, tuple[float, int]]]:
    """Split the TOML configuration at ``path`` over ``nodes`` nodes.

    Returns:
        ``(server table, assignments, {stream id: (cost µs, detectors per round)})``.

    Raises:
        ConfigError: the file is not a valid rtdecoder TOML configuration (``load_config``'s
            checks), ``nodes < 1``, or fewer streams than nodes.
    """
    if nodes < 1:
        raise ConfigError(f"--nodes {nodes}: at least one node")
    p = Path(path)
    if p.suffix in (".yaml", ".yml"):
        raise ConfigError(f"{p}: rtdecoder shard takes a TOML configuration ([server] and [[streams]])")
    cfg = load_config(p)  # every check the service makes
    raw = tomllib.loads(p.read_text())
    tables = raw.get("streams", [])
    if len(tables) < nodes:
        raise ConfigError(f"{p} has {len(tables)} streams: too few for {nodes} nodes (a node with none serves "
                          "nothing)")
    costs = {s.id: stream_cost(s) for s in cfg.streams}
    order = sorted(range(len(tables)), key=lambda i: (-costs[cfg.streams[i].id][0], cfg.streams[i].id))
    out = [Assignment(n, [], [], 0.0, 0) for n in range(nodes)]
    for i in order:
        a = min(out, key=lambda x: (x.cost_us, x.node))
        s = cfg.streams[i]
        a.streams.append(tables[i])
        a.ids.append(s.id)
        a.cost_us += costs[s.id][0]
        a.helpers += s.parallel - 1
    for a in out:
        pairs = sorted(zip(a.ids, a.streams), key=lambda t: t[0])
        a.ids, a.streams = [t[0] for t in pairs], [t[1] for t in pairs]
    return dict(raw.get("server", {})), out, costs


def write(server: dict, assignments: list[Assignment], out_dir: str | Path, kubernetes: bool = False) -> list[Path]:
    """Write ``node-<i>.toml`` (and with ``kubernetes``, ``configmap-shard-<i>.yaml``) per node;
    returns the paths written."""
    import tomli_w
    import yaml

    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    paths = []
    for a in assignments:
        text = tomli_w.dumps({"server": server, "streams": a.streams} if server else {"streams": a.streams})
        f = d / f"node-{a.node}.toml"
        f.write_text(f"# rtdecoder shard: node {a.node}, streams {a.ids}, estimated {a.cost_us:.2f} µs per round\n"
                     + text)
        paths.append(f)
        if kubernetes:
            cm = {"apiVersion": "v1", "kind": "ConfigMap",
                  "metadata": {"name": f"rtdecoder-shard-{a.node}", "labels": {"app.kubernetes.io/name": "rtdecoder",
                                                                               "rtdecoder/shard": str(a.node)}},
                  "data": {"streams.toml": f.read_text()}}
            k = d / f"configmap-shard-{a.node}.yaml"
            k.write_text(yaml.safe_dump(cm, sort_keys=False))
            paths.append(k)
    return paths
