"""Multi-worker training: the cluster from ``TF_CONFIG`` (or ``--workers``), and the
few collectives edgefer itself runs between workers.

Every worker runs the same program; worker 0 (or the ``chief`` task) is the chief. The
chief is the one source of truth: it alone reads and writes the run folder, decides which
stages are already done, and restores checkpoints; the other workers receive its settings,
its decisions and its variables over the same collectives that training uses, so a worker
needs neither a shared folder nor a copy of the run folder.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass

import numpy as np

from edgefer.errors import ClusterError, ConfigError

_ADDRESS = re.compile(r"^\[?[A-Za-z0-9._:-]+\]?:\d{1,5}$")
_TASK = re.compile(r"/job:(\w+)/replica:\d+/task:(\d+)")
_NOISE = re.compile(r"\{\{function_node [^}]*\}\}|\[\[[^\]]*\]\]|\[Op:[^\]]*\]")
JOBS = ("chief", "worker")  # the tasks that train, in TensorFlow's order


@dataclass(frozen=True)
class Cluster:
    """The training tasks of a ``TF_CONFIG`` and which one this process is."""

    jobs: tuple[tuple[str, tuple[str, ...]], ...]  # (job, addresses), chief first
    task_type: str
    task_index: int

    @property
    def addresses(self) -> dict[str, tuple[str, ...]]:
        return dict(self.jobs)

    @property
    def size(self) -> int:
        return sum(len(addresses) for _, addresses in self.jobs)

    @property
    def is_chief(self) -> bool:
        chief = "chief" if "chief" in self.addresses else "worker"
        return self.task_type == chief and self.task_index == 0

    def name(self, job: str | None = None, index: int | None = None) -> str:
        """``worker 1 (10.0.0.2:2222)``; this task's name without arguments."""
        job = self.task_type if job is None else job
        index = self.task_index if index is None else index
        addresses = self.addresses.get(job, ())
        where = f" ({addresses[index]})" if index < len(addresses) else ""
        return f"{job} {index}{where}"

    def names(self) -> list[str]:
        """Every task's name, in the order of its rank (chief first)."""
        return [self.name(job, i) for job, addresses in self.jobs for i in range(len(addresses))]


def tf_config_for(workers: str, index: int) -> str:
    """The ``TF_CONFIG`` of worker ``index`` of ``host:port,host:port,...``."""
    addresses = [w.strip() for w in workers.split(",") if w.strip()]
    if not addresses:
        raise ConfigError("--workers must list host:port addresses, e.g. "
                          "10.0.0.1:2222,10.0.0.2:2222")
    for address in addresses:
        if not _ADDRESS.match(address) or not 0 < int(address.rsplit(":", 1)[1]) < 65536:
            raise ConfigError(f"--workers: {address!r} is not host:port (port 1-65535)")
    if len(set(addresses)) != len(addresses):
        raise ConfigError(f"--workers lists an address twice: {workers}")
    if not 0 <= index < len(addresses):
        raise ConfigError(f"--worker-index must be 0 to {len(addresses) - 1} for "
                          f"{len(addresses)} workers, got {index}")
    return json.dumps({"cluster": {"worker": addresses},
                       "task": {"type": "worker", "index": index}})


def use_workers(workers: str | None, index: int | None, strategy: str | None) -> str:
    """Set ``TF_CONFIG`` from ``--workers`` and ``--worker-index``; the strategy to use."""
    if workers is None or index is None:
        raise ConfigError("--workers and --worker-index go together: every worker's "
                          "host:port, and this worker's place in that list (0: the chief)")
    if strategy not in (None, "multiworker"):
        raise ConfigError(f"--workers trains with --strategy multiworker, not {strategy}")
    if os.environ.get("TF_CONFIG", "").strip():
        raise ConfigError("TF_CONFIG is set and --workers is given: describe the cluster "
                          "one way (unset TF_CONFIG, or drop --workers and --worker-index)")
    os.environ["TF_CONFIG"] = tf_config_for(workers, index)
    return "multiworker"


def cluster_from_env() -> Cluster:
    """The cluster ``TF_CONFIG`` describes, checked, or a ConfigError saying what is wrong."""
    raw = os.environ.get("TF_CONFIG", "")
    if not raw.strip():
        raise ConfigError("--strategy multiworker needs the cluster: set TF_CONFIG, or pass "
                          "--workers host:port,host:port --worker-index N (see "
                          "docs/distributed.md)")
    try:
        record = json.loads(raw)
        cluster, task = record["cluster"], record["task"]
        jobs = tuple((job, tuple(cluster[job])) for job in JOBS if cluster.get(job))
        task_type, task_index = str(task["type"]), int(task["index"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"TF_CONFIG is not a TensorFlow cluster description ({exc}); "
                          'expected {"cluster": {"worker": ["host:port", ...]}, '
                          '"task": {"type": "worker", "index": N}}') from None
    if not jobs:
        raise ConfigError("TF_CONFIG lists no chief or worker tasks")
    found = dict(jobs)
    if task_type not in found or not 0 <= task_index < len(found[task_type]):
        raise ConfigError(f"TF_CONFIG: this task ({task_type} {task_index}) is not in its "
                          f"cluster ({', '.join(f'{j}: {len(a)}' for j, a in jobs)})")
    return Cluster(jobs, task_type, task_index)


def quiet_pool_teardown() -> None:
    """Drop the "Exception ignored in Pool.__del__ ... Bad file descriptor" traceback that
    can follow edgefer's own error when a worker stops after losing another: TensorFlow's
    collective all-reduce keeps a multiprocessing ThreadPool, whose ``__del__`` may run at
    interpreter exit after its pipes are closed. Every other unraisable error still shows."""
    previous = sys.unraisablehook

    def hook(unraisable) -> None:
        if (isinstance(unraisable.exc_value, OSError)
                and getattr(unraisable.object, "__qualname__", "") == "Pool.__del__"):
            return
        previous(unraisable)

    sys.unraisablehook = hook


def failed_tasks(message: str, cluster: Cluster) -> list[str]:
    """The other tasks a TensorFlow error message names (``/job:worker/replica:0/task:1``)."""
    found = []
    for job, index in _TASK.findall(message):
        name = cluster.name(job, int(index))
        if (job, int(index)) != (cluster.task_type, cluster.task_index) and name not in found:
            found.append(name)
    return found


def _reason(message: str) -> str:
    """The cause in TensorFlow's many-line collective error, without op and node names."""
    if "stopped sending heartbeats" in message:
        return "no heartbeat"
    text = _NOISE.sub("", message)
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return line.split("aborted by:", 1)[-1].strip() or "no reason given"


def cluster_error(exc: Exception, cluster: Cluster) -> ClusterError:
    """One line for a collective that failed because another worker died or left."""
    who = failed_tasks(str(exc), cluster)
    subject = " and ".join(who) if who else "another worker"
    return ClusterError(
        f"{cluster.name()}: training stopped because {subject} stopped responding "
        f"({_reason(str(exc))}); run the same command on every worker to resume from the "
        "last finished epoch")


def _rank_rows(strategy, vector: np.ndarray) -> np.ndarray:
    """Each replica's ``vector`` summed into its own row: every replica's, on every worker."""
    from edgefer._tf import tf

    n = strategy.num_replicas_in_sync

    def rows(context):
        out = np.zeros((n, *vector.shape), vector.dtype)
        out[context.replica_id_in_sync_group] = vector
        return out

    values = strategy.experimental_distribute_values_from_function(rows)
    return strategy.reduce(tf().distribute.ReduceOp.SUM, values, axis=None).numpy()


def gather_json(strategy, record, workers: int) -> list:
    """Every worker's JSON-able ``record``, in rank order (a collective: all must call)."""
    data = np.frombuffer(json.dumps(record).encode(), np.uint8).astype(np.int32)
    lengths = _rank_rows(strategy, np.array([len(data)], np.int32))[:, 0]
    padded = np.zeros(int(lengths.max()), np.int32)
    padded[:len(data)] = data
    rows = _rank_rows(strategy, padded)
    per_worker = len(rows) // workers  # replicas are numbered worker by worker
    return [json.loads(rows[r, :lengths[r]].astype(np.uint8).tobytes())
            for r in range(0, len(rows), per_worker)]


def broadcast_from_chief(strategy, variables) -> None:
    """Give every replica of every worker the chief's first replica's value of each
    variable (a collective: all workers must call it with the same variables)."""
    from edgefer._tf import tf

    unique = list({id(v): v for v in variables}.values())
    local = [strategy.experimental_local_results(v) for v in unique]
    ours = [np.asarray(parts[0].numpy()) for parts in local]
    # one flat float64 message holds every dtype here exactly (float32, int64 counters)
    flat = np.concatenate([a.astype(np.float64).ravel() for a in ours]) if ours else np.zeros(0)

    def chief_only(context):
        return flat if context.replica_id_in_sync_group == 0 else np.zeros_like(flat)

    values = strategy.experimental_distribute_values_from_function(chief_only)
    total = strategy.reduce(tf().distribute.ReduceOp.SUM, values, axis=None).numpy()
    offset = 0
    for parts, mine in zip(local, ours, strict=True):
        value = total[offset:offset + mine.size].reshape(mine.shape).astype(mine.dtype)
        offset += mine.size
        for part in parts:  # each local replica's own copy, aggregation aside
            part.assign(value)
