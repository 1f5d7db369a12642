"""Detector weights on disk as safetensors; nothing is ever unpickled."""

from __future__ import annotations

from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save_file

from fedmesh.model.detector import AnomalyDetector
from fedmesh.model.features import FEATURE_NAMES

_ARCHITECTURE = "fedmesh.AnomalyDetector/1"
_METADATA = {"architecture": _ARCHITECTURE, "features": ",".join(FEATURE_NAMES)}


def save_detector(model: AnomalyDetector, path: str | Path) -> None:
    """Write the model's weights (its full state dict) to ``path`` as safetensors."""
    state = {name: t.detach().contiguous() for name, t in model.state_dict().items()}
    save_file(state, str(path), metadata=_METADATA)


def load_detector(path: str | Path) -> AnomalyDetector:
    """Read a detector written by ``save_detector``; the weights are restored bit for bit.

    Raises ``ValueError`` when the file is not a detector of this architecture.
    """
    with safe_open(str(path), framework="pt") as stored:
        metadata = stored.metadata() or {}
        if metadata.get("architecture") != _ARCHITECTURE:
            raise ValueError(
                f"{path} holds architecture {metadata.get('architecture')!r}; "
                f"expected {_ARCHITECTURE!r}"
            )
        if metadata.get("features") != _METADATA["features"]:
            raise ValueError(
                f"{path} was trained on features {metadata.get('features')!r}; "
                f"expected {_METADATA['features']!r}"
            )
        tensors = {name: stored.get_tensor(name) for name in stored.keys()}  # noqa: SIM118
    model = AnomalyDetector()
    expected = model.state_dict()
    if set(tensors) != set(expected):
        missing = sorted(set(expected) - set(tensors))
        unexpected = sorted(set(tensors) - set(expected))
        raise ValueError(f"{path}: missing tensors {missing}, unexpected tensors {unexpected}")
    for name, tensor in tensors.items():
        want = expected[name]
        if tensor.shape != want.shape or tensor.dtype != want.dtype:
            raise ValueError(
                f"{path}: tensor {name!r} is {tensor.dtype} {tuple(tensor.shape)}; "
                f"expected {want.dtype} {tuple(want.shape)}"
            )
    model.load_state_dict(tensors, strict=True)
    return model
