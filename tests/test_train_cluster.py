"""Multi-worker options: TF_CONFIG from --workers, and TF_CONFIG checked before TensorFlow
reads it (no TensorFlow needed)."""

from __future__ import annotations

import json
import os

import pytest

from edgefer.errors import ConfigError
from edgefer.train.cluster import (
    cluster_error,
    cluster_from_env,
    failed_tasks,
    tf_config_for,
    use_workers,
)


def test_workers_make_tf_config():
    record = json.loads(tf_config_for("10.0.0.1:2222, 10.0.0.2:2222", 1))
    assert record == {"cluster": {"worker": ["10.0.0.1:2222", "10.0.0.2:2222"]},
                      "task": {"type": "worker", "index": 1}}


@pytest.mark.parametrize(("workers", "index", "message"), [
    ("", 0, "must list host:port"),
    ("10.0.0.1", 0, "'10.0.0.1' is not host:port"),
    ("10.0.0.1:99999", 0, "is not host:port"),
    ("a:1,a:1", 0, "lists an address twice"),
    ("a:1,b:2", 2, "--worker-index must be 0 to 1 for 2 workers, got 2"),
    ("a:1,b:2", -1, "got -1"),
])
def test_bad_workers(workers, index, message):
    with pytest.raises(ConfigError, match=message):
        tf_config_for(workers, index)


def test_use_workers_sets_tf_config_once(monkeypatch):
    # setenv, not delenv: monkeypatch then removes the TF_CONFIG use_workers sets, which
    # would otherwise leak into the multi-worker tests' subprocesses
    monkeypatch.setenv("TF_CONFIG", "")
    assert use_workers("a:1,b:2", 0, None) == "multiworker"
    assert cluster_from_env().names() == ["worker 0 (a:1)", "worker 1 (b:2)"]
    with pytest.raises(ConfigError, match="TF_CONFIG is set and --workers is given"):
        use_workers("a:1,b:2", 0, None)


@pytest.mark.parametrize(("workers", "index", "strategy", "message"), [
    ("a:1,b:2", None, None, "go together"),
    (None, 1, None, "go together"),
    ("a:1,b:2", 0, "mirrored", "not mirrored"),
])
def test_use_workers_refuses(monkeypatch, workers, index, strategy, message):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ConfigError, match=message):
        use_workers(workers, index, strategy)
    assert "TF_CONFIG" not in os.environ


@pytest.mark.parametrize(("value", "message"), [
    ("", "needs the cluster: set TF_CONFIG"),
    ("{not json", "not a TensorFlow cluster description"),
    ('{"cluster": {"worker": ["a:1"]}}', "not a TensorFlow cluster description"),
    ('{"cluster": {"ps": ["a:1"]}, "task": {"type": "ps", "index": 0}}', "no chief or worker"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}',
     r"this task \(worker 3\) is not in its cluster \(worker: 1\)"),
])
def test_bad_tf_config(monkeypatch, value, message):
    monkeypatch.setenv("TF_CONFIG", value)
    with pytest.raises(ConfigError, match=message):
        cluster_from_env()


def test_chief_task_is_the_chief(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", json.dumps({
        "cluster": {"chief": ["c:1"], "worker": ["w:1", "w:2"]},
        "task": {"type": "worker", "index": 0}}))
    cluster = cluster_from_env()
    assert not cluster.is_chief and cluster.size == 3
    assert cluster.names() == ["chief 0 (c:1)", "worker 0 (w:1)", "worker 1 (w:2)"]


def test_error_names_the_worker_that_stopped(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", tf_config_for("127.0.0.1:5000,127.0.0.1:5001", 0))
    cluster = cluster_from_env()
    # TensorFlow's own words when a worker is killed (the chief's view)
    message = ("{{function_node __wrapped__CollectiveReduceV2_device_/job:worker/replica:0/"
               "task:0/device:CPU:0}} Collective ops is aborted by: Error reported from "
               "/job:worker/task:1: The following tasks are unhealthy (stopped sending "
               "heartbeats):\n/job:worker/replica:0/task:1\nThe tasks have crashed.")
    assert failed_tasks(message, cluster) == ["worker 1 (127.0.0.1:5001)"]
    assert str(cluster_error(RuntimeError(message), cluster)) == (
        "worker 0 (127.0.0.1:5000): training stopped because worker 1 (127.0.0.1:5001) "
        "stopped responding (no heartbeat); run the same command on every worker to resume "
        "from the last finished epoch")


def test_error_names_the_chief_that_stopped(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", tf_config_for("127.0.0.1:5000,127.0.0.1:5001", 1))
    # TensorFlow's own words when the chief is killed (the other worker's view)
    message = ("{{function_node __wrapped__CollectiveReduceV2_device_/job:worker/replica:0/"
               "task:1/device:CPU:0}} Collective ops is aborted by: recvmsg:Connection reset "
               "by peer\nAdditional GRPC error information from remote target /job:worker/"
               "replica:0/task:0 while calling /tensorflow.WorkerService/RecvBuf:\n"
               "\t [[{{node CollectiveReduceV2_1}}]] [Op:__inference_train_function_1669]")
    error = str(cluster_error(RuntimeError(message), cluster_from_env()))
    assert error.startswith("worker 1 (127.0.0.1:5001): training stopped because worker 0 "
                            "(127.0.0.1:5000) stopped responding (recvmsg:Connection reset "
                            "by peer); run the same command")


def test_pool_teardown_error_is_dropped_and_others_still_show(monkeypatch, capsys):
    import sys
    from multiprocessing.pool import Pool
    from types import SimpleNamespace

    from edgefer.train.cluster import quiet_pool_teardown

    seen = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    quiet_pool_teardown()
    pool_error = SimpleNamespace(exc_value=OSError(9, "Bad file descriptor"),
                                 object=Pool.__del__)
    other = SimpleNamespace(exc_value=OSError(9, "Bad file descriptor"), object=print)
    not_os = SimpleNamespace(exc_value=ValueError("x"), object=Pool.__del__)
    for unraisable in (pool_error, other, not_os):
        sys.unraisablehook(unraisable)
    assert seen == [other, not_os]
