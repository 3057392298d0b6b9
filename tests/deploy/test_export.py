"""``tea-med export``: TorchScript and ONNX beside the checkpoint, verified, with a model card."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from deploy.conftest import SIZE, make_student_bundle

from tea_med.bundled import bundle_dir
from tea_med.cli import main
from tea_med.deploy.bundle import BundleError, MissingCheckpointError
from tea_med.deploy.export import ExportError, ModelCard, export_bundle
from tea_med.networks import densenet121, lung_segmenter
from tea_med.networks.teacher import TeacherPipeline


def _eager(bundle: Path, x: torch.Tensor) -> np.ndarray:
    net = densenet121(num_classes=3)
    net.load_state_dict(torch.load(bundle / "models" / "model.pt", weights_only=True)["model"])
    with torch.no_grad():
        return net.eval()(x).numpy()


def test_the_card_describes_the_files_and_the_bundle(exported_student: Path) -> None:
    models = exported_student / "models"
    card = json.loads((models / "model_card.json").read_text())
    assert card["class_names"] == ["normal", "pneumonia", "covid"]  # common.yaml's class_names
    assert card["preprocessing"]["image_size"] == SIZE
    assert card["preprocessing"]["channels"] == 3
    assert card["preprocessing"]["pad_to_square"] is True
    assert card["input"]["shape"] == ["batch", 3, SIZE, SIZE]
    assert card["output"]["shape"] == ["batch", 3]
    for name in ("model.pt", "model.ts", "model.onnx"):
        data = (models / name).read_bytes()
        assert card["files"][name] == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    assert set(card["versions"]) >= {"tea_med", "torch", "monai", "onnx", "onnxruntime"}
    assert card["versions"]["torch"] == torch.__version__
    assert card["device_uid"].startswith("2.25.") and len(card["device_uid"]) <= 64
    for fmt in ("torchscript", "onnx"):
        assert 0 <= card["verification"][fmt]["max_abs_logit_difference"] <= 1e-4


def test_exports_reproduce_the_eager_network_at_any_batch_size(exported_student: Path) -> None:
    models = exported_student / "models"
    x = torch.rand(5, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(7))
    expected = _eager(exported_student, x)
    scripted = torch.jit.load(str(models / "model.ts")).eval()
    with torch.no_grad():
        np.testing.assert_allclose(scripted(x).numpy(), expected, atol=1e-4, rtol=0)
    graph = onnx.load(str(models / "model.onnx")).graph
    batch_dim = graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param, "the ONNX batch axis must be dynamic"
    session = onnxruntime.InferenceSession(str(models / "model.onnx"), providers=["CPUExecutionProvider"])
    for n in (1, 5):
        found = session.run(None, {"image": x[:n].numpy()})[0]
        np.testing.assert_allclose(found, expected[:n], atol=1e-4, rtol=0)
    # the bundle's metadata and config travel inside the TorchScript file (MONAI ckpt_export)
    extra = {"metadata.json": "", "inference.json": ""}
    torch.jit.load(str(models / "model.ts"), _extra_files=extra)
    assert json.loads(extra["metadata.json"])["version"] == "0.1.0"


def test_the_device_uid_changes_with_the_weights(tmp_path: Path) -> None:
    a = make_student_bundle(tmp_path / "a", seed=1)
    b = make_student_bundle(tmp_path / "b", seed=2)
    card_a = export_bundle(a, formats=["torchscript"])
    card_b = export_bundle(b, formats=["torchscript"])
    assert card_a.device_uid != card_b.device_uid
    shutil.copy(b / "models" / "model.pt", a / "models" / "model.pt")  # "retrained" a
    assert export_bundle(a, formats=["torchscript"]).device_uid == card_b.device_uid


def test_an_export_beyond_the_tolerance_fails_and_writes_nothing(tmp_path: Path) -> None:
    bundle = make_student_bundle(tmp_path / "s")
    # ONNX Runtime's kernels round differently from PyTorch's: never to 1e-12 on a DenseNet
    with pytest.raises(
        ExportError, match=r"onnx export .* largest absolute logit difference .* > tolerance 1e-12"
    ):
        export_bundle(bundle, tolerance=1e-12, formats=["onnx"])
    assert sorted(p.name for p in (bundle / "models").iterdir()) == ["README.md", "model.pt"]


def test_export_errors_name_the_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundle = make_student_bundle(tmp_path / "s")
    (bundle / "models" / "model.pt").unlink()
    with pytest.raises(MissingCheckpointError, match=r"model\.pt does not exist"):
        export_bundle(bundle)
    assert main(["export", "--bundle", str(bundle)]) == 1
    assert "model.pt does not exist" in capsys.readouterr().err
    assert main(["export", "--bundle", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(BundleError, match="tolerance must be > 0"):
        export_bundle(bundle, tolerance=0)


def test_a_teacher_pipeline_is_not_exported_to_onnx(tmp_path: Path) -> None:
    shutil.copytree(bundle_dir("tea_teacher"), tmp_path / "t")
    teacher = TeacherPipeline(lung_segmenter("small"), densenet121(num_classes=3))
    (tmp_path / "t" / "models").mkdir(exist_ok=True)
    torch.save({"model": teacher.state_dict()}, tmp_path / "t" / "models" / "model.pt")
    with pytest.raises(BundleError, match="--format torchscript"):
        export_bundle(tmp_path / "t", overrides={"segmenter_profile": "small", "image_size": SIZE})


def test_model_card_load_names_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="tea-med export"):
        ModelCard.load(tmp_path / "model_card.json")
