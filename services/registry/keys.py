"""The registry's Redis keys. All keys of one model share the hash tag ``{model:<name>}``.

The hash tag puts a model's keys in one cluster slot, so one Lua script may commit a
version, its publication key and its blob reference together.
"""

from __future__ import annotations

PREFIX = "fm"


def model_tag(name: str) -> str:
    """The hash-tagged prefix of every key of model ``name``."""
    return f"{PREFIX}:{{model:{name}}}"


def head_key(name: str) -> str:
    """Hash: ``head`` (latest version) and ``head_digest`` (its record digest)."""
    return f"{model_tag(name)}:head"


def records_key(name: str) -> str:
    """Hash: version → signed record JSON (immutable once written)."""
    return f"{model_tag(name)}:records"


def evaluations_key(name: str) -> str:
    """Hash: version → evaluation metrics JSON."""
    return f"{model_tag(name)}:evaluations"


def dropped_key(name: str) -> str:
    """Set: versions whose blob retention deleted (the record stays)."""
    return f"{model_tag(name)}:dropped"


def aliases_key(name: str) -> str:
    """Hash: alias → version."""
    return f"{model_tag(name)}:aliases"


def alias_moves_key(name: str) -> str:
    """List: JSON alias moves, newest first."""
    return f"{model_tag(name)}:alias-moves"


def publications_key(name: str) -> str:
    """Hash: ``run|round`` → version (PublishModel is idempotent by run and round)."""
    return f"{model_tag(name)}:publications"


def blob_refs_key(name: str) -> str:
    """Hash: blob digest → number of this model's versions that still hold the blob."""
    return f"{model_tag(name)}:blob-refs"


def models_key() -> str:
    """Set: every model name with at least one publish attempt."""
    return f"{PREFIX}:registry:models"
