"""The Redis key schema. All keys of one run share the hash tag ``{run:<id>}``.

The hash tag puts a run's keys in one cluster slot, so a Lua script may touch
several of them atomically.
"""

from __future__ import annotations

PREFIX = "fm"


def run_tag(run_id: str) -> str:
    """The hash-tagged prefix of every key of ``run_id``."""
    return f"{PREFIX}:{{run:{run_id}}}"


def run_key(run_id: str) -> str:
    """Hash: the run's spec and status."""
    return f"{run_tag(run_id)}:run"


def round_key(run_id: str, round_no: int) -> str:
    """Hash: one round's phase, deadline, base model and outcome."""
    return f"{run_tag(run_id)}:round:{round_no}"


def participants_key(run_id: str, round_no: int) -> str:
    """Set: the nodes selected for a round."""
    return f"{round_key(run_id, round_no)}:participants"


def receipts_key(run_id: str, round_no: int) -> str:
    """Hash: node id → JSON receipt of its durably spooled update."""
    return f"{round_key(run_id, round_no)}:receipts"


def aggregate_result_key(run_id: str, round_no: int) -> str:
    """String: JSON result of AggregateRound (makes it idempotent)."""
    return f"{round_key(run_id, round_no)}:result"


def runs_index_key() -> str:
    """Sorted set: run ids by start time."""
    return f"{PREFIX}:runs"


def deadlines_key() -> str:
    """Sorted set: ``run_id|round`` by deadline (ms), scanned by the coordinator."""
    return f"{PREFIX}:deadlines"


def node_key(node_id: str) -> str:
    """Hash: one node's registration, trust and liveness."""
    return f"{PREFIX}:node:{node_id}"


def nodes_index_key() -> str:
    """Set: every registered node id."""
    return f"{PREFIX}:nodes"


def leader_key() -> str:
    """String: the coordinator leader lease (replica id)."""
    return f"{PREFIX}:coordinator:leader"


def fencing_key() -> str:
    """Counter: the fencing token, incremented at every leadership change."""
    return f"{PREFIX}:coordinator:fencing"


def evaluations_of_version_key(run_id: str, version: int) -> str:
    """Hash: node id → JSON evaluation of one model version produced by the run."""
    return f"{run_tag(run_id)}:eval:{version}"


def node_task_key(node_id: str) -> str:
    """String: JSON of the task pending for a node."""
    return f"{PREFIX}:node:{node_id}:task"


def stale_reported_key() -> str:
    """Set: nodes whose going stale has been reported (cleared when they beat again)."""
    return f"{PREFIX}:nodes:stale-reported"
