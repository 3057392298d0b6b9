"""Every baseline of the student bundle (``method``) trains through the real bundle workflow:
its loss falls, it is logged under its own name, and the best student is saved."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.bundles import STUDENT, initialized_workflow, small_overrides
from ignite.engine import Events

pytestmark = pytest.mark.slow  # trains the bundle


@pytest.mark.parametrize(
    "method",
    ["erm", "kd", "rep_kd", "gradcam_kd", "rrr", "gain", "isnet", "group_dro", "irm", "tea+kd", "tea+rep_kd"],
)
def test_each_method_trains_through_the_bundle_and_its_loss_falls(
    method: str, phantoms: Path, teacher_ckpt: Path, tmp_path: Path
) -> None:
    ov = small_overrides(phantoms, tmp_path) | {
        "bundle_root": str(STUDENT),
        "teacher_ckpt": str(teacher_ckpt),
        "teacher_segmenter_profile": "small",
        "method": method,
        "max_epochs": 9,
        "learning_rate": 0.02,
        "val_interval": 3,
    }
    del ov["segmenter_profile"]  # a teacher bundle key
    if method == "rrr":  # the paper's 1e4 swamps the cross-entropy of a random 32-px student
        ov["rrr_weight"] = 1.0
    if method == "gain":  # likewise its 1e4 mask weight
        ov["gain_mask_weight"] = 1.0
    if method == "gradcam_kd":  # at 32 px DenseNet's last feature map is 1x1: every Grad-CAM map is
        ov["image_size"] = 64  # constant and its cosine 0 or 1, a step with no gradient; 64 px gives 2x2
    if method in ("isnet", "gradcam_kd"):  # clipped heatmap gradients: SGD barely moves in 9 steps
        ov["optimizer"] = {"_target_": "torch.optim.Adam", "params": "$@network.parameters()", "lr": 1e-3}
    ov["train#preprocessing#transforms#3#prob"] = 0.0  # no random affine: the same images every epoch
    ov["flip_prob"] = 0.0
    name = method.replace("+", "_plus_")
    wf = initialized_workflow(STUDENT / "configs", "train", "train", **ov)
    trainer = wf.parser.get_parsed_content("train#trainer")
    history: list[float] = []
    trainer.add_event_handler(
        Events.EPOCH_COMPLETED, lambda e: history.append(e.state.metrics[f"train_{name}_loss"])
    )
    wf.run()
    wf.finalize()
    assert len(history) == 9
    # one batch per epoch, and TEA draws the explained class and ε per image: compare thirds
    assert sum(history[-3:]) < sum(history[:3]), history
    assert (tmp_path / "models" / "model.pt").is_file()
    selection = "val_tea_loss" if method.startswith("tea") else "val_auc"
    assert wf.parser.get_parsed_content("selection_metric") == selection


@pytest.mark.parametrize(
    "ablation",
    [
        {"explainer": "gradient_x_input"},
        {"explainer": "input_gradient"},
        {"explainer": "gradcam"},
        {"explainer": "attention"},
        {"heatmap_loss": "l1"},
        {"heatmap_loss": "l2"},
        {"heatmap_loss": "single_resolution"},
        {"eps_lo": 0.01, "eps_hi": 0.01},
    ],
    ids=lambda a: "-".join(f"{k}={v}" for k, v in a.items()),
)
def test_each_tea_ablation_trains_through_the_bundle_and_its_loss_falls(
    ablation: dict[str, object], phantoms: Path, teacher_ckpt: Path, tmp_path: Path
) -> None:
    ov = small_overrides(phantoms, tmp_path) | {
        "bundle_root": str(STUDENT),
        "teacher_ckpt": str(teacher_ckpt),
        "teacher_segmenter_profile": "small",
        "max_epochs": 9,
        "val_interval": 9,
        "optimizer": {"_target_": "torch.optim.Adam", "params": "$@network.parameters()", "lr": 1e-3},
        "train#preprocessing#transforms#3#prob": 0.0,
        "flip_prob": 0.0,
        **ablation,
    }
    del ov["segmenter_profile"]
    if ablation.get("heatmap_loss") == "l2":
        ov["optimizer"]["lr"] = 1e-2  # type: ignore[index]  # the normalised distance moves slowly at 1e-3
    if ablation.get("heatmap_loss") == "l1":
        ov["max_epochs"] = ov["val_interval"] = 18  # the noisiest of the losses: more steps
    wf = initialized_workflow(STUDENT / "configs", "train", "train", **ov)
    trainer = wf.parser.get_parsed_content("train#trainer")
    history: list[float] = []
    trainer.add_event_handler(
        Events.EPOCH_COMPLETED, lambda e: history.append(e.state.metrics["train_tea_loss"])
    )
    wf.run()
    wf.finalize()
    params = wf.parser.get_parsed_content("tracking_params")
    assert {k: params[k] for k in ablation} == ablation
    assert sum(history[-3:]) < sum(history[:3]), history
    assert (tmp_path / "models" / "model.pt").is_file()
