from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from fedmesh.model import AnomalyDetector, load_detector, save_detector


def test_round_trip_is_exact(tmp_path: Path) -> None:
    torch.manual_seed(3)
    model = AnomalyDetector()
    path = tmp_path / "detector.safetensors"

    save_detector(model, path)
    loaded = load_detector(path)

    original, restored = model.state_dict(), loaded.state_dict()
    assert original.keys() == restored.keys()
    assert all(torch.equal(original[k], restored[k]) for k in original)
    x, edge_index = torch.randn(20, 8), torch.randint(0, 20, (2, 40))
    assert torch.equal(model.eval()(x, edge_index), loaded.eval()(x, edge_index))


def test_file_is_plain_safetensors(tmp_path: Path) -> None:
    path = tmp_path / "detector.safetensors"
    save_detector(AnomalyDetector(), path)

    assert len(load_file(str(path))) == 14


def test_foreign_safetensors_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata={"architecture": "resnet"})

    with pytest.raises(ValueError, match="holds architecture 'resnet'; expected"):
        load_detector(path)


def test_missing_tensor_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "detector.safetensors"
    save_detector(AnomalyDetector(), path)
    tensors = load_file(str(path))
    del tensors["head.2.bias"]
    metadata = {
        "architecture": "fedmesh.AnomalyDetector/1",
        "features": "rssi,snr,loss_rate,link_age,latency,throughput,cpu,memory",
    }
    save_file(tensors, str(path), metadata=metadata)

    with pytest.raises(ValueError, match=r"missing tensors \['head.2.bias'\]"):
        load_detector(path)


def test_wrong_shape_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "detector.safetensors"
    save_detector(AnomalyDetector(), path)
    tensors = load_file(str(path))
    tensors["head.2.bias"] = torch.zeros(2)
    metadata = {
        "architecture": "fedmesh.AnomalyDetector/1",
        "features": "rssi,snr,loss_rate,link_age,latency,throughput,cpu,memory",
    }
    save_file(tensors, str(path), metadata=metadata)

    with pytest.raises(ValueError, match=r"tensor 'head.2.bias' is torch.float32 \(2,\)"):
        load_detector(path)
