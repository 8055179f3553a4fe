"""Whether one actor of a stage can ever start on the connected Ray cluster, checked before the stage
submits any work: an actor that asks for more than any node has (``--num-gpus 1`` without a GPU,
``--encode-cpus 1000``, a ``--node-resource`` no node offers) would wait for good, with no message.

:func:`check_fits` compares what one actor asks for (CPUs, GPUs, custom resources) with every alive
node of ``ray.nodes()``. When no node could hold one, it decides between an error and a warning from
what can be told about the cluster's autoscaling:

- the local Ray a command started for itself never grows: one ClusterError naming what was asked,
  what the cluster has and the option to change;
- a cluster whose autoscaler published its node types (Ray's autoscaler v2: the same record
  Ray Data and Ray Train read) grows only into those: a warning when one of them could hold the
  actor (the actors wait for the autoscaler), the ClusterError otherwise;
- any other cluster (its autoscaler, if any, says nothing of its node types; a node may still join
  by hand): a warning, and the actors wait.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ..errors import ClusterError

if TYPE_CHECKING:
    from .encode import EncodeConfig
    from .tag import TagConfig

__all__ = ["ActorAsk", "check_fits", "check_stages", "encode_asks", "search_ask", "shortfall", "tag_ask",
           "with_gpus"]

logger = logging.getLogger(__name__)

#: CPUs Ray Data reserves for a map actor given none (any node with CPUs has one).
TASK_CPUS = 1.0

#: Ray's memory pools, left out of what a cluster is said to have (as are its node: markers).
_BOOKKEEPING = ("memory", "object_store_memory")


@dataclass(frozen=True)
class ActorAsk:
    """What one actor of a stage asks of its node, and the command-line option that sets each part
    (keyed by Ray resource name: ``CPU``, ``GPU`` or a custom resource)."""

    stage: str
    cpus: float = 0.0
    gpus: float = 0.0
    resources: Mapping[str, float] = field(default_factory=dict)
    options: Mapping[str, str] = field(default_factory=dict)

    def bundle(self) -> dict[str, float]:
        """The resources one actor needs, those it asks none of left out."""
        need = {"CPU": self.cpus, "GPU": self.gpus, **self.resources}
        return {k: float(v) for k, v in need.items() if v > 0}


def _holds(have: Mapping[str, float], need: Mapping[str, float]) -> bool:
    return all(float(have.get(k, 0.0)) >= v for k, v in need.items())


def _what(key: str, amount: float) -> str:
    if key in ("CPU", "GPU"):
        return f"{amount:g} {key}" + ("s" if amount != 1 else "")
    return f"resource {key!r}"


def _cluster_words(nodes: Sequence[Mapping[str, float]]) -> str:
    """``1 node: 2 CPUs, no GPU, no custom resource`` (totals over the alive nodes)."""
    cpus = sum(float(n.get("CPU", 0.0)) for n in nodes)
    gpus = sum(float(n.get("GPU", 0.0)) for n in nodes)
    custom = sorted({k for n in nodes for k in n if k not in ("CPU", "GPU", *_BOOKKEEPING)
                     and not k.startswith(("node:", "accelerator_type:"))})
    return (f"{len(nodes)} node{'s' if len(nodes) != 1 else ''}: {_what('CPU', cpus)}, "
            + (_what("GPU", gpus) if gpus else "no GPU") + ", "
            + (f"custom resources {', '.join(custom)}" if custom else "no custom resource"))


def shortfall(ask: ActorAsk, nodes: Sequence[Mapping[str, float]]) -> str | None:
    """Why no node of ``nodes`` (each a node's total resources) can hold one actor of ``ask``; None
    when one can."""
    need = ask.bundle()
    if _holds_any(nodes, need):
        return None
    parts, options = [], []
    for key, amount in need.items():
        best = max((float(n.get(key, 0.0)) for n in nodes), default=0.0)
        if best >= amount:
            continue
        has = "no node offers it" if key not in ("CPU", "GPU") and best == 0 else \
            "no node has one" if best == 0 else f"the largest node has {best:g}"
        opt = ask.options.get(key)
        parts.append(f"{_what(key, amount)}{f' ({opt})' if opt else ''}: {has}")
        options += [opt] if opt else []
    if not parts:  # each part fits some node, never all on one
        asked = ", ".join(f"{_what(k, v)}{f' ({ask.options[k]})' if k in ask.options else ''}" for k, v in need.items())
        parts = [f"{asked}, and no single node has all of it"]
        options = [ask.options[k] for k in need if k in ask.options]
    change = f"; change {' or '.join(dict.fromkeys(options))}" if options else ""
    return (f"no node of the Ray cluster can hold one {ask.stage}, which asks for {'; '.join(parts)} "
            f"(the cluster has {_cluster_words(nodes)}){change}")


def _holds_any(nodes: Iterable[Mapping[str, float]], need: Mapping[str, float]) -> bool:
    return any(_holds(n, need) for n in nodes)


def _alive_nodes(ray: Any) -> list[dict[str, float]]:
    return [dict(n.get("Resources") or {}) for n in ray.nodes() if n.get("Alive")]


def _autoscaled_types(ray: Any) -> list[dict[str, float]] | None:
    """The node types an autoscaler may start (those of its published cluster config, with a
    nonzero maximum); None when no autoscaler published one (none runs, or it cannot be told)."""
    try:
        from ray._private.state import state
        config = state.get_cluster_config()
    except Exception as e:  # noqa: BLE001 - an internal record of Ray's: any failure means "cannot tell"
        logger.debug("no autoscaler config to read (%s)", e)
        return None
    if config is None or not config.node_group_configs:
        return None
    return [{k: float(v) for k, v in g.resources.items()} for g in config.node_group_configs if g.max_count != 0]


def _own_local_ray() -> bool:
    """Whether the connected Ray is the local one this process started (it never grows)."""
    try:
        from ray._private import worker
        node = worker._global_node
        return node is not None and bool(node.head)
    except (ImportError, AttributeError):
        return False


def _or(why: str, more: str) -> str:
    return f"{why}, or {more}" if "; change " in why else f"{why}; {more}"


def check_fits(asks: Iterable[ActorAsk]) -> None:
    """Raise ClusterError when no node of the connected cluster can ever hold one actor of an ask
    (warn instead when the cluster may still grow a node that can); see the module's docstring."""
    import ray
    nodes = _alive_nodes(ray)
    for ask in asks:
        why = shortfall(ask, nodes)
        if why is None:
            continue
        if _own_local_ray():
            raise ClusterError(_or(why, "set RAY_ADDRESS to a cluster that has it (this command's own local Ray "
                                        "has only this machine)"))
        types = _autoscaled_types(ray)
        if types is not None and not _holds_any(types, ask.bundle()):
            kinds = "; ".join(_cluster_words([t]).split(": ", 1)[1] for t in types) or "none"
            raise ClusterError(_or(why, f"add a node type that has it to the autoscaler (its node types: {kinds})"))
        wait = "the autoscaler to start one" if types is not None else "such a node to join the cluster"
        logger.warning("%s; the %ss wait for %s", why, ask.stage, wait)


def _pinned(name: str | None, option: str) -> tuple[dict[str, float], dict[str, str]]:
    """The custom resource one pinned actor takes (:func:`~tagger.pipeline.raycluster.placement`) and its option."""
    from .raycluster import placement
    return dict(placement(name).get("resources", {})), ({name: option} if name else {})


def encode_asks(cfg: "EncodeConfig") -> list[ActorAsk]:
    """What one decode actor and one encoder actor of ``cfg`` ask (``num_gpus`` resolved: None is 0)."""
    gpus = cfg.num_gpus or 0.0
    custom, option = _pinned(cfg.node_resource, "--node-resource")
    return [ActorAsk("decode actor", cpus=cfg.decode_cpus, options={"CPU": "--decode-cpus"}),
            ActorAsk("encoder actor", cpus=0.0 if gpus else cfg.encode_cpus, gpus=gpus, resources=custom,
                     options={"CPU": "--encode-cpus", "GPU": "--num-gpus", **option})]


def tag_ask(cfg: "TagConfig") -> ActorAsk:
    """What one tagging actor of ``cfg`` asks: Ray Data's one CPU (an actor given none), its GPUs and pin."""
    custom, option = _pinned(cfg.node_resource, "--node-resource")
    return ActorAsk("tagging actor", cpus=TASK_CPUS, gpus=cfg.num_gpus, resources=custom, options=option)


def search_ask(cpus: float, node_resource: str | None) -> ActorAsk:
    """What one shard's search actor asks: ``cpus`` and its pin (the ``node_resource`` argument)."""
    custom, option = _pinned(node_resource, "node_resource")
    return ActorAsk("search actor", cpus=cpus, resources=custom, options=option)


def with_gpus(cfg: "EncodeConfig") -> "EncodeConfig":
    """``cfg`` with ``num_gpus`` None resolved from the connected cluster: 1 when it has GPUs, else 0."""
    if cfg.num_gpus is not None:
        return cfg
    from .raycluster import gpus_available
    cfg = replace(cfg, num_gpus=1.0 if gpus_available() > 0 else 0.0)
    logger.info("encoder actors get %s GPU each", cfg.num_gpus)
    return cfg


def check_stages(encode: "EncodeConfig | None", tag: "TagConfig | None") -> None:
    """Check a job's stages before its first one, in a Ray session of its own, when an actor asks for
    more than one CPU (or a GPU, or a custom resource); each stage checks its own again as it starts."""
    tag_asks = [tag_ask(tag)] if tag is not None else []
    asks = (encode_asks(encode) if encode is not None else []) + tag_asks
    if all(set(a.bundle()) <= {"CPU"} and a.cpus <= TASK_CPUS for a in asks):
        return
    from .raycluster import ray_session
    with ray_session():  # the encoder's GPUs as the cluster resolves them
        check_fits((encode_asks(with_gpus(encode)) if encode is not None else []) + tag_asks)
