"""Every baseline of the student bundle (``method``) trains through the real bundle workflow:
its loss falls, it is logged under its own name, and the best student is saved."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.bundles import STUDENT, initialized_workflow, small_overrides
from ignite.engine import Events

pytestmark = pytest.mark.slow  # trains the bundle


@pytest.mark.parametrize("method", ["erm", "kd", "rrr", "gradcam_kd", "group_dro", "irm"])
def test_each_method_trains_through_the_bundle_and_its_loss_falls(
    method: str, phantoms: Path, teacher_ckpt: Path, tmp_path: Path
) -> None:
    ov = small_overrides(phantoms, tmp_path) | {
        "bundle_root": str(STUDENT),
        "teacher_ckpt": str(teacher_ckpt),
        "teacher_segmenter_profile": "small",
        "method": method,
        "max_epochs": 6,
        "learning_rate": 0.02,
        "val_interval": 3,
    }
    del ov["segmenter_profile"]  # a teacher bundle key
    if method == "rrr":  # the paper's 1e4 swamps the cross-entropy of a random 32-px student
        ov["rrr_weight"] = 1.0
    ov["train#preprocessing#transforms#3#prob"] = 0.0  # no random affine: the same images every epoch
    ov["flip_prob"] = 0.0
    wf = initialized_workflow(STUDENT / "configs", "train", "train", **ov)
    trainer = wf.parser.get_parsed_content("train#trainer")
    history: list[float] = []
    trainer.add_event_handler(
        Events.EPOCH_COMPLETED, lambda e: history.append(e.state.metrics[f"train_{method}_loss"])
    )
    wf.run()
    wf.finalize()
    assert len(history) == 6
    assert history[-1] < history[0], history
    assert (tmp_path / "models" / "model.pt").is_file()
    assert wf.parser.get_parsed_content("selection_metric") == "val_auc"
