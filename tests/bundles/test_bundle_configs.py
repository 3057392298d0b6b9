"""The bundles' composed YAML configs, without training: every workflow composes and parses, the
listed preprocessing chains equal the library factories, the data and the teacher are arguments
with clear errors, and nothing points outside the bundle."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import monai
import pytest
import torch
from helpers.bundles import SIZE, STUDENT, TEACHER, config_files, root_cause
from monai.bundle import ConfigParser, ConfigWorkflow
from monai.data import CacheDataset
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.transforms import Compose, CopyItemsd, DeleteItemsd

from tea_med.data import eval_transforms, test_transforms, train_transforms
from tea_med.data.manifest import load_datalist
from tea_med.networks import lung_segmenter

CLASSES = ["normal", "pneumonia", "covid"]
WORKFLOWS = {
    TEACHER: {
        "train_segmenter": "train",
        "train_classifier": "train",
        "evaluate": "infer",
        "inference": "infer",
    },
    STUDENT: {"train": "train", "evaluate": "infer", "inference": "infer"},
}
CASES = [(bundle, name) for bundle, names in WORKFLOWS.items() for name in names]


def _id(case: Any) -> str:
    return case.name if isinstance(case, Path) else str(case)


def _overrides(bundle: Path, phantoms: Path, work: Path, teacher_ckpt: Path) -> dict[str, Any]:
    ov: dict[str, Any] = {
        "bundle_root": str(bundle),
        "dataset_dir": str(phantoms),
        "ckpt_dir": str(work / "models"),
        "output_dir": str(work / "eval"),
        "image_size": SIZE,
        "input_path": str(phantoms / "images" / "test_unbiased"),
    }
    if bundle == TEACHER:
        ov["segmenter_profile"] = "small"
    else:
        ov |= {"teacher_ckpt": str(teacher_ckpt), "teacher_segmenter_profile": "small"}
    return ov


def _parser(bundle: Path, name: str, **overrides: Any) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(config_files(bundle / "configs", name))
    parser.update(overrides)
    return parser


@pytest.mark.parametrize(("bundle", "name"), CASES, ids=_id)
def test_every_workflow_composes_and_parses(
    bundle: Path, name: str, phantoms: Path, teacher_ckpt: Path, tmp_path: Path
) -> None:
    if name == "train_classifier":  # it trains on top of a segmenter
        (tmp_path / "models").mkdir()
        torch.save(lung_segmenter("small").state_dict(), tmp_path / "models" / "segmenter.pt")
    parser = _parser(bundle, name, **_overrides(bundle, phantoms, tmp_path, teacher_ckpt))
    assert {"initialize", "run", "network_def", "device", "class_names"} <= set(parser.get())
    assert isinstance(parser.get_parsed_content("network_def"), torch.nn.Module)
    if WORKFLOWS[bundle][name] == "train":
        assert isinstance(parser.get_parsed_content("train#trainer"), SupervisedTrainer)
        assert isinstance(parser.get_parsed_content("validate#evaluator"), SupervisedEvaluator)
        ids = ["train#dataset", "validate#dataset"]
    else:
        assert isinstance(parser.get_parsed_content("evaluator"), SupervisedEvaluator)
        ids = ["dataset"]
    for key in ids:
        assert len(parser.get_parsed_content(key)) > 0, key


@pytest.mark.parametrize(("bundle", "name"), [c for c in CASES if WORKFLOWS[c[0]][c[1]] == "train"], ids=_id)
def test_multi_gpu_train_overrides_ids_every_training_workflow_has(bundle: Path, name: str) -> None:
    """Each ``a#b#c`` the torchrun overrides set names a place that exists in the workflow (a
    renamed key would otherwise add a new, unused one)."""
    overrides = json.loads((bundle / "configs" / "multi_gpu_train.json").read_text())
    parser = _parser(bundle, name)
    for key in overrides:
        parent, _, last = key.rpartition("#")
        if parent:
            assert isinstance(parser[parent], dict), f"{name}: {key}"
            if last != "sampler":  # the samplers are new entries beside their data loaders
                assert last in parser[parent], f"{name}: {key}"
        elif key != "finalize":  # the workflow's last step, which they add
            assert key in parser.get(), f"{name}: {key}"
    assert parser["train#trainer#train_handlers"] == "@train#handlers"
    assert parser["validate#evaluator#val_handlers"] == "@validate#handlers"


def test_student_workflows_share_one_definition_of_the_common_keys() -> None:
    for name in WORKFLOWS[STUDENT]:
        text = (STUDENT / "configs" / f"{name}.yaml").read_text()
        for key in ("class_names", "image_size", "eps_lo", "num_workers", "device"):
            assert not re.search(rf"^{key}:", text, re.M), f"{name}.yaml repeats {key}"
    parser = _parser(STUDENT, "inference")
    assert parser.get_parsed_content("heatmap_eps") == pytest.approx((1e-3 * 1e-2) ** 0.5)
    assert _parser(STUDENT, "train")["task"]["eps_range"] == ["@eps_lo", "@eps_hi"]


# -- the listed chains are the library's ----------------------------------------------------------


def _flat(*chains: Any) -> Compose:
    return Compose([t for c in chains for t in (c.transforms if isinstance(c, Compose) else [c])])


def _mask_as_label() -> list[Any]:
    return [DeleteItemsd("label"), CopyItemsd("mask", names="label")]


CHAINS: list[tuple[Path, str, str, Callable[[int], Compose]]] = [
    (bundle, wf, key, factory)
    for bundle, wf in ((TEACHER, "train_classifier"), (STUDENT, "train"))
    for key, factory in (
        ("train#preprocessing", train_transforms),
        ("validate#preprocessing", eval_transforms),
        ("preprocessing", test_transforms),
    )
] + [
    (TEACHER, "train_segmenter", "train#preprocessing",
     lambda s: _flat(train_transforms(s, mask_key="mask"), *_mask_as_label())),
    (TEACHER, "train_segmenter", "validate#preprocessing",
     lambda s: _flat(eval_transforms(s, mask_key="mask"), *_mask_as_label())),
]  # fmt: skip


def _plain(v: Any) -> Any:
    return v.as_tensor() if hasattr(v, "as_tensor") else v


@pytest.mark.parametrize(("bundle", "name", "key", "factory"), CHAINS, ids=_id)
def test_listed_chains_equal_the_library_factories(
    bundle: Path, name: str, key: str, factory: Callable[[int], Compose], phantoms: Path
) -> None:
    """The same output for the same seed, at the configs' default size and augmentation."""
    record = load_datalist(phantoms / "datalist_png.json", "training", labels=CLASSES, encode_labels=True)[0]
    parser = _parser(bundle, name)
    listed = parser.get_parsed_content(key)
    reference = factory(parser.get_parsed_content("image_size"))
    assert [type(t) for t in listed.transforms] == [type(t) for t in reference.transforms]
    outputs = []
    for chain in (listed, reference):
        chain.set_random_state(seed=123)
        outputs.append(chain(copy.deepcopy(record)))
    got, want = outputs
    assert got.keys() == want.keys()
    for k, v in want.items():
        if isinstance(v, torch.Tensor):
            assert torch.equal(_plain(got[k]), _plain(v)), k
        else:
            assert got[k] == v, k


def test_with_teacher_masks_the_listed_training_chain_carries_the_mask(phantoms: Path) -> None:
    record = load_datalist(phantoms / "datalist_png.json", "training", labels=CLASSES, encode_labels=True)[0]
    record["teacher_mask"] = record["mask"]  # any mask file in the image's geometry
    parser = _parser(STUDENT, "train", teacher_masks=True)
    listed = parser.get_parsed_content("train#preprocessing")
    reference = train_transforms(parser.get_parsed_content("image_size"), mask_key="teacher_mask")
    outputs = []
    for chain in (listed, reference):
        chain.set_random_state(seed=123)
        outputs.append(chain(copy.deepcopy(record)))
    got, want = outputs
    assert got.keys() == want.keys() and "teacher_mask" in got
    for k in ("image", "teacher_mask"):
        assert torch.equal(_plain(got[k]), _plain(want[k])), k
    assert set(torch.unique(_plain(got["teacher_mask"])).tolist()) <= {0.0, 1.0}  # nearest neighbour


def _epochs(loader: Any, n: int = 2) -> list[dict[str, torch.Tensor]]:
    """Every batch of ``n`` epochs, tensors only, as plain tensors."""
    return [
        {k: _plain(v).clone() for k, v in batch.items() if isinstance(v, torch.Tensor)}
        for _ in range(n)
        for batch in loader
    ]


@pytest.mark.parametrize(("bundle", "name"), [c for c in CASES if WORKFLOWS[c[0]][c[1]] == "train"], ids=_id)
def test_cached_datasets_give_the_same_batches_as_uncached_ones(
    bundle: Path, name: str, phantoms: Path, teacher_ckpt: Path, tmp_path: Path
) -> None:
    """``cache_dataset true`` keeps the deterministic preprocessing in memory; the random
    augmentation still runs per epoch, so two epochs of training batches (and the validation and
    recalibration batches) equal those of the uncached datasets under the same seed."""
    if name == "train_classifier":
        (tmp_path / "models").mkdir()
        torch.save(lung_segmenter("small").state_dict(), tmp_path / "models" / "segmenter.pt")
    loaders = ["train#dataloader", "validate#dataloader"]
    if name != "train_segmenter":
        loaders.append("recalibration#dataloader")
    batches: dict[tuple[bool, str], list[dict[str, torch.Tensor]]] = {}
    for cache in (False, True):
        parser = _parser(
            bundle, name, **_overrides(bundle, phantoms, tmp_path, teacher_ckpt), cache_dataset=cache
        )
        for key in loaders:
            dataset = parser.get_parsed_content(key.replace("dataloader", "dataset"))
            assert isinstance(dataset, CacheDataset) == cache, key
            monai.utils.set_determinism(seed=7)
            batches[cache, key] = _epochs(parser.get_parsed_content(key))
    monai.utils.set_determinism(seed=None)
    for key in loaders:
        uncached, cached = batches[False, key], batches[True, key]
        assert len(cached) == len(uncached) > 0, key
        for got, want in zip(cached, uncached, strict=True):
            assert got.keys() == want.keys(), key
            for k in want:
                assert torch.equal(got[k], want[k]), (key, k)


def test_a_listed_augmentation_argument_can_be_overridden() -> None:
    parser = _parser(STUDENT, "train", **{"train#preprocessing#transforms#3#rotate_range": [0.25]})
    affine = parser.get_parsed_content("train#preprocessing").transforms[3]
    assert type(affine).__name__ == "RandAffined"
    assert tuple(affine.rand_affine.rand_affine_grid.rotate_range) == (0.25,)


# -- relocatable: the data and the teacher are arguments --------------------------------------------


def _checkpoints(bundle: Path, work: Path, teacher_ckpt: Path) -> dict[str, Any]:
    """Overrides and weights in ``work`` with which every workflow initialises (loads its weights)."""
    teacher = torch.load(teacher_ckpt, weights_only=True)
    if bundle == TEACHER:
        torch.save(teacher, work / "model.pt")
        segmenter = {
            k.removeprefix("segmenter."): v for k, v in teacher.items() if k.startswith("segmenter.")
        }
        torch.save(segmenter, work / "segmenter.pt")
        return {"ckpt_dir": str(work), "segmenter_profile": "small", "image_size": SIZE}
    student = {k.removeprefix("classifier."): v for k, v in teacher.items() if k.startswith("classifier.")}
    torch.save(student, work / "model.pt")
    return {"ckpt_dir": str(work), "teacher_segmenter_profile": "small", "image_size": SIZE}


def _workflow(bundle: Path, name: str, **overrides: Any) -> ConfigWorkflow:
    wf = ConfigWorkflow(
        config_file=config_files(bundle / "configs", name),
        workflow_type=WORKFLOWS[bundle][name],
        logging_file=False,
        **overrides,
    )
    wf.initialize()
    return wf


def _failure(wf: ConfigWorkflow) -> BaseException:
    with pytest.raises(RuntimeError) as err:  # MONAI wraps the errors of a config's components
        wf.run()
    return root_cause(err.value)


@pytest.mark.parametrize(("bundle", "name"), [c for c in CASES if c[1] != "inference"], ids=_id)
def test_without_dataset_dir_the_run_names_the_argument(
    bundle: Path, name: str, teacher_ckpt: Path, tmp_path: Path
) -> None:
    extra = {"teacher_ckpt": str(teacher_ckpt)} if bundle == STUDENT else {}
    cause = _failure(_workflow(bundle, name, **_checkpoints(bundle, tmp_path, teacher_ckpt), **extra))
    assert isinstance(cause, ValueError)
    assert "dataset_dir is not set: pass --dataset_dir DIR, a folder with datalist_png.json" in str(cause)


def test_a_dataset_dir_without_its_manifest_is_named(tmp_path: Path) -> None:
    wf = _workflow(TEACHER, "train_segmenter", dataset_dir=str(tmp_path), ckpt_dir=str(tmp_path / "models"))
    cause = _failure(wf)
    assert isinstance(cause, FileNotFoundError)
    assert str(tmp_path) in str(cause) and "has no datalist_png.json" in str(cause)


def test_without_a_manifest_the_dataset_says_how_to_pass_one(teacher_ckpt: Path, tmp_path: Path) -> None:
    cause = _failure(
        _workflow(TEACHER, "evaluate", datalist=None, **_checkpoints(TEACHER, tmp_path, teacher_ckpt))
    )
    assert isinstance(cause, ValueError) and "--dataset_dir DIR" in str(cause)


def test_without_teacher_ckpt_the_student_names_the_argument(phantoms: Path, tmp_path: Path) -> None:
    cause = _failure(_workflow(STUDENT, "train", dataset_dir=str(phantoms), ckpt_dir=str(tmp_path)))
    assert isinstance(cause, ValueError) and "teacher_ckpt is not set" in str(cause)
    assert "--teacher_ckpt" in str(cause)
    missing = tmp_path / "nope.pt"
    wf = _workflow(
        STUDENT, "train", dataset_dir=str(phantoms), ckpt_dir=str(tmp_path), teacher_ckpt=str(missing)
    )
    cause = _failure(wf)
    assert isinstance(cause, FileNotFoundError) and str(missing) in str(cause)


@pytest.mark.parametrize("bundle", [TEACHER, STUDENT], ids=_id)
def test_without_input_path_inference_names_the_argument(
    bundle: Path, teacher_ckpt: Path, tmp_path: Path
) -> None:
    cause = _failure(_workflow(bundle, "inference", **_checkpoints(bundle, tmp_path, teacher_ckpt)))
    assert isinstance(cause, ValueError) and "input_path is not set: pass --input_path" in str(cause)


def _strings(config: Any) -> list[str]:
    if isinstance(config, dict):
        return [s for k, v in config.items() for s in (str(k), *_strings(v))]
    if isinstance(config, list):
        return [s for v in config for s in _strings(v)]
    return [config] if isinstance(config, str) else []


@pytest.mark.parametrize("bundle", [TEACHER, STUDENT], ids=_id)
def test_configs_stay_inside_the_bundle_and_document_their_settings(bundle: Path) -> None:
    configs = sorted((bundle / "configs").glob("*.yaml"))
    # every workflow, the shared keys, and mlflow.yaml: the settings of --tracking configs/mlflow.yaml
    assert {c.stem for c in configs} == {"common", "mlflow", *WORKFLOWS[bundle]}
    assert {c.name for c in (bundle / "configs").glob("*.json")} == {"metadata.json", "multi_gpu_train.json"}
    for config in configs:
        values = _strings(ConfigParser.load_config_file(config))
        assert not [v for v in values if "../" in v or v.startswith("/")], config.name
        text = config.read_text()
        for line in text.splitlines():  # a top-level setting with a plain value says what it is
            m = re.match(r"^(\w+):\s*([^\s#].*)$", line)
            if (
                m
                and m.group(1) not in ("imports", "initialize", "run")
                and not m.group(2).startswith(('"$', '"@', "{"))
            ):
                assert " # " in line, f"{config.name}: {line}"


@pytest.mark.parametrize(
    ("warmup_epochs", "key", "negative_sign", "better", "worse"),
    [(0, "val_tea_loss", True, 0.8, 0.9), (2, "val_auc", False, 0.9, 0.8)],
)
def test_the_student_picks_its_best_checkpoint_by_a_metric_comparable_between_epochs(
    phantoms: Path,
    teacher_ckpt: Path,
    tmp_path: Path,
    warmup_epochs: int,
    key: str,
    negative_sign: bool,
    better: float,
    worse: float,
) -> None:
    """With a frozen teacher the TEA loss ranks the epochs; co-training moves the teacher, so its
    losses of different epochs are not comparable and the labelled validation AUC ranks them."""
    ov = _overrides(STUDENT, phantoms, tmp_path, teacher_ckpt) | {"warmup_epochs": warmup_epochs}
    parser = _parser(STUDENT, "train", **ov)
    evaluator = parser.get_parsed_content("validate#evaluator")
    assert evaluator.state.key_metric_name == key
    others = parser.get_parsed_content("validate#additional_metrics")
    assert set(others) == {"val_tea_loss", "val_auc", "val_agreement"} - {key}
    assert parser.get_parsed_content("validate#checkpoint#key_metric_negative_sign") is negative_sign
    assert evaluator.metric_cmp_fn(better, worse) and not evaluator.metric_cmp_fn(worse, better)


@pytest.mark.parametrize(
    ("method", "step", "selection"),
    [
        ("tea", "TEATrainStep", "val_tea_loss"),
        ("erm", "ERMStep", "val_auc"),
        ("kd", "KDStep", "val_auc"),
        ("rrr", "RRRStep", "val_auc"),
        ("gradcam_kd", "GradCAMKDStep", "val_auc"),
        ("group_dro", "GroupDROStep", "val_auc"),
        ("irm", "IRMStep", "val_auc"),
        ("rep_kd", "RepKDStep", "val_auc"),
        ("gain", "GAINStep", "val_auc"),
        ("isnet", "ISNetStep", "val_auc"),
        ("tea+kd", "TEAPlusKDStep", "val_tea_loss"),
        ("tea+rep_kd", "TEAPlusRepKDStep", "val_tea_loss"),
    ],
)
def test_the_student_method_selects_its_step_loss_name_and_selection(
    phantoms: Path, teacher_ckpt: Path, tmp_path: Path, method: str, step: str, selection: str
) -> None:
    ov = _overrides(STUDENT, phantoms, tmp_path, teacher_ckpt) | {"method": method}
    parser = _parser(STUDENT, "train", **ov)
    assert type(parser.get_parsed_content("train#step")).__name__ == step
    loss_name = {"tea+kd": "train_tea_plus_kd_loss", "tea+rep_kd": "train_tea_plus_rep_kd_loss"}
    assert parser.get_parsed_content("train#trainer").state.key_metric_name == loss_name.get(
        method, f"train_{method}_loss"
    )
    assert parser.get_parsed_content("validate#evaluator").state.key_metric_name == selection
    params = parser.get_parsed_content("tracking_params")
    assert params["method"] == method
    assert (params["kd_temperature"] is None) == (method not in ("kd", "gradcam_kd", "tea+kd"))
    assert (params["explainer"] is None) == (method not in ("tea", "tea+kd", "tea+rep_kd"))


@pytest.mark.parametrize(
    ("explainer", "loss", "explainer_class", "levels"),
    [
        ("lrp", "tea", "LRPEpsilon", True),
        ("gradient_x_input", "l1", "GradientXInput", False),
        ("input_gradient", "l2", "InputGradient", False),
        ("gradcam", "single_resolution", "GradCAM", False),
        ("attention", "tea", "SpatialAttention", True),
    ],
)
def test_the_tea_ablations_set_the_task_explainer_and_loss(
    phantoms: Path,
    teacher_ckpt: Path,
    tmp_path: Path,
    explainer: str,
    loss: str,
    explainer_class: str,
    levels: bool,
) -> None:
    ov = _overrides(STUDENT, phantoms, tmp_path, teacher_ckpt) | {
        "explainer": explainer,
        "heatmap_loss": loss,
    }
    task = _parser(STUDENT, "train", **ov).get_parsed_content("task")
    assert type(task.explainer).__name__ == explainer_class
    assert task.loss.multi_resolution is levels
    expected_loss = {"tea": "TEALoss", "single_resolution": "TEALoss", "l1": "L1NormalizedLoss"}
    assert type(task.loss).__name__ == expected_loss.get(loss, "L2NormalizedLoss")


def test_an_unknown_explainer_or_heatmap_loss_is_named() -> None:
    from tea_med.explain import make_explainer
    from tea_med.losses import make_heatmap_loss

    with pytest.raises(ValueError, match=r"explainer must be one of lrp, .*attention, got 'lrp_z'"):
        make_explainer("lrp_z")
    with pytest.raises(
        ValueError, match=r"heatmap_loss must be one of tea, l1, l2, single_resolution, got 'l3'"
    ):
        make_heatmap_loss("l3")


def test_an_unknown_selection_metric_is_named() -> None:
    from tea_med.engines import metric_comparison

    with pytest.raises(ValueError, match=r"selection_metric must be one of .*'val_loss'"):
        metric_comparison("val_loss")


def test_set_common_values_changes_only_the_named_keys_and_keeps_comments(tmp_path: Path) -> None:
    from monai.bundle import ConfigParser

    from tea_med.bundled import copy_bundles, set_common_values

    (bundle,) = copy_bundles(tmp_path, names=("tea_student",))
    before = ConfigParser.load_config_file(bundle / "configs" / "common.yaml")
    set_common_values(bundle, {"image_size": 64, "eps_lo": 0.01})
    text = (bundle / "configs" / "common.yaml").read_text()
    after = ConfigParser.load_config_file(bundle / "configs" / "common.yaml")
    assert (after["image_size"], after["eps_lo"]) == (64, 0.01)
    assert {k: v for k, v in after.items() if k not in ("image_size", "eps_lo")} == {
        k: v for k, v in before.items() if k not in ("image_size", "eps_lo")
    }
    assert "# network input side in pixels" in text
    with pytest.raises(KeyError, match="no top-level key 'imagesize'"):
        set_common_values(bundle, {"imagesize": 64})


@pytest.mark.parametrize("statistics", ["checkpoint", "training"])
def test_teacher_statistics_wire_the_task_teacher_the_training_set_and_the_validator(
    phantoms: Path, teacher_ckpt: Path, tmp_path: Path, statistics: str
) -> None:
    from tea_med.engines import TeacherTrainingStatistics

    ov = _overrides(STUDENT, phantoms, tmp_path, teacher_ckpt) | {"teacher_statistics": statistics}
    parser = _parser(STUDENT, "train", **ov)
    (handler,) = [
        h for h in parser.get_parsed_content("train#handlers") if isinstance(h, TeacherTrainingStatistics)
    ]
    assert handler.enabled is (statistics == "training")
    assert handler.teacher is parser.get_parsed_content("task").teacher
    assert handler.dataset is parser.get_parsed_content("train#dataset")
    assert handler.validator is parser.get_parsed_content("validate#evaluator")
    assert parser.get_parsed_content("tracking_params")["teacher_statistics"] == statistics
