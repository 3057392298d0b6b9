"""``tea-med explain``: LRP-ε overlays of a bundle's predictions, the numbers behind them, errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tea_med.cli import main
from tea_med.data import test_transforms
from tea_med.data.phantom_files import write_phantoms
from tea_med.deploy.explain import BundleError, explain_images, parse_override
from tea_med.explain import LRPEpsilon
from tea_med.networks import TeacherPipeline, densenet121, load_weights, lung_segmenter

REPO = Path(__file__).resolve().parents[2]
TEACHER_CONFIGS = REPO / "bundles" / "tea_teacher" / "configs"
STUDENT_CONFIGS = REPO / "bundles" / "tea_student" / "configs"
SIZE = 32
OVERRIDES = {"segmenter_profile": "small", "image_size": SIZE}
CLI_OVERRIDES = ["--override", "segmenter_profile=small", "--override", "image_size=32"]
CLASSES = ["normal", "pneumonia", "covid"]


def tiny_teacher() -> TeacherPipeline:
    return TeacherPipeline(lung_segmenter("small"), densenet121(num_classes=3))


def make_bundle(root: Path, network: torch.nn.Module, *, student: bool = False) -> Path:
    """A bundle folder with the teacher's (or the student's) configs and ``network``'s weights."""
    shutil.copytree(STUDENT_CONFIGS if student else TEACHER_CONFIGS, root / "configs")
    (root / "models").mkdir()
    torch.save(network.state_dict(), root / "models" / "model.pt")
    return root


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("phantoms")
    written = write_phantoms(out, n=2, size=SIZE, formats=("png",), grid=False, progress=False)
    assert written["datalist_png"].is_file()
    return sorted((out / "images").rglob("*.png"))[:3]


@pytest.fixture(scope="module")
def teacher_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(7)
    return make_bundle(tmp_path_factory.mktemp("tea_teacher"), tiny_teacher())


@pytest.fixture(scope="module")
def student_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(8)
    return make_bundle(tmp_path_factory.mktemp("tea_student"), densenet121(num_classes=3), student=True)


def preprocessed(path: Path) -> torch.Tensor:
    return test_transforms(SIZE)({"image": str(path)})["image"].as_tensor()[None]


def loaded_teacher(bundle: Path) -> TeacherPipeline:
    return load_weights(tiny_teacher(), bundle / "models" / "model.pt").eval()


def run_cli(*args: object) -> int:
    return main(["explain", *map(str, args)])


# -- the written figures ---------------------------------------------------------------------------


def test_cli_writes_one_real_png_per_image(
    teacher_bundle: Path, images: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert run_cli("--bundle", teacher_bundle, *images, "--out", out, *CLI_OVERRIDES) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(images)
    for image, line in zip(images, lines, strict=True):
        png = out / f"{image.stem}_lrp.png"
        assert line.startswith(str(png)) and "predicted" in line
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        pixels = np.asarray(Image.open(png).convert("RGB")).astype(int)
        assert pixels.shape[0] > 100 and pixels.shape[1] > 300  # three panels side by side
        assert pixels.std() > 20  # not blank
        # the heatmap's colours: clearly red or clearly blue pixels, not only grey
        red = (pixels[..., 0] - pixels[..., 2] > 80).sum()
        blue = (pixels[..., 2] - pixels[..., 0] > 80).sum()
        assert red + blue > 100


def test_same_stem_in_two_folders_gets_two_files(
    teacher_bundle: Path, images: list[Path], tmp_path: Path
) -> None:
    src = images[0]
    a, b = tmp_path / "a" / "x.png", tmp_path / "b" / "x.png"
    for dst in (a, b):
        dst.parent.mkdir()
        shutil.copy(src, dst)
    results = explain_images(teacher_bundle, [a, b], overrides=OVERRIDES, out_dir=tmp_path / "out")
    assert [r.output.name for r in results] == ["x_lrp.png", "x_2_lrp.png"]
    assert all(r.output.is_file() for r in results)


# -- the numbers behind them -----------------------------------------------------------------------


def test_teacher_heatmap_is_lrp_of_its_classifier_on_the_masked_input(
    teacher_bundle: Path, images: list[Path]
) -> None:
    results = explain_images(teacher_bundle, images, eps=0.02, overrides=OVERRIDES, seed=5)
    net = loaded_teacher(teacher_bundle)
    assert len(results) == len(images)
    for path, r in zip(images, results, strict=True):
        x = preprocessed(path)
        torch.testing.assert_close(r.image, x[0])
        torch.manual_seed(5)  # the seed explain_images draws the background noise with
        masked, mask = net.masked_input(x)
        torch.testing.assert_close(r.model_input, masked[0])
        torch.testing.assert_close(r.mask, mask[0, 0])
        expected = LRPEpsilon()(net.classifier, masked, lambda z: z.argmax(1), eps=0.02)
        torch.testing.assert_close(r.heatmap, expected[0])
        assert r.heatmap.abs().sum() > 0
        with torch.no_grad():
            probs = torch.softmax(net.classifier(masked), 1)[0]
            torch.manual_seed(5)
            pipeline_probs = torch.softmax(net(x), 1)[0]  # the teacher's own prediction
        torch.testing.assert_close(r.probabilities, probs)
        torch.testing.assert_close(r.probabilities, pipeline_probs)
        assert r.predicted == r.explained == CLASSES[int(probs.argmax())]
        assert r.output is None and r.eps == 0.02


def test_teacher_heatmaps_are_reproducible_and_leave_the_global_rng_alone(
    teacher_bundle: Path, images: list[Path]
) -> None:
    torch.manual_seed(123)
    first = explain_images(teacher_bundle, images[:1], overrides=OVERRIDES)[0]
    after = torch.rand(3)
    torch.manual_seed(123)
    expected_after = torch.rand(3)
    torch.testing.assert_close(after, expected_after)
    second = explain_images(teacher_bundle, images[:1], overrides=OVERRIDES)[0]
    # same seed -> the very same background noise (random draws are exact) ...
    assert torch.equal(first.model_input, second.model_input)
    # ... and the same heatmap up to float32 rounding: CPU kernels may sum in a thread-dependent order
    torch.testing.assert_close(first.heatmap, second.heatmap, rtol=1e-4, atol=1e-6)
    other_seed = explain_images(teacher_bundle, images[:1], overrides=OVERRIDES, seed=1)[0]
    assert not torch.equal(other_seed.model_input, first.model_input)  # the noise did change


def test_class_option_explains_that_class(teacher_bundle: Path, images: list[Path], tmp_path: Path) -> None:
    results = explain_images(teacher_bundle, images, class_name="covid", overrides=OVERRIDES)
    net = loaded_teacher(teacher_bundle)
    for r in results:
        assert r.explained == "covid"
        expected = LRPEpsilon()(net.classifier, r.model_input[None], torch.tensor([2]), eps=0.01)
        torch.testing.assert_close(r.heatmap, expected[0])
    out = tmp_path / "out"
    assert (
        run_cli("--bundle", teacher_bundle, images[0], "--out", out, "--class", "covid", *CLI_OVERRIDES) == 0
    )
    assert (out / f"{images[0].stem}_lrp.png").is_file()


def test_plain_classifier_bundle_is_explained_directly(
    student_bundle: Path, images: list[Path], tmp_path: Path
) -> None:
    results = explain_images(
        student_bundle, images, eps=0.005, overrides={"image_size": SIZE}, out_dir=tmp_path / "out"
    )
    net = load_weights(densenet121(num_classes=3), student_bundle / "models" / "model.pt").eval()
    for path, r in zip(images, results, strict=True):
        x = preprocessed(path)
        torch.testing.assert_close(r.model_input, x[0])
        assert r.mask is None
        expected = LRPEpsilon()(net, x, lambda z: z.argmax(1), eps=0.005)
        torch.testing.assert_close(r.heatmap, expected[0])
        with torch.no_grad():
            torch.testing.assert_close(r.probabilities, torch.softmax(net(x), 1)[0])
        width = Image.open(r.output).size[0]
        assert width < Image.open(r.output).size[1] * 2.5  # two panels, no classifier-input panel


def test_a_bundle_heatmap_eps_is_the_default_eps(student_bundle: Path, images: list[Path]) -> None:
    # the student's: the geometric midpoint of its training range (configs/common.yaml)
    (r,) = explain_images(student_bundle, images[:1], overrides={"image_size": SIZE})
    assert r.eps == pytest.approx((1e-3 * 1e-2) ** 0.5)
    (r,) = explain_images(student_bundle, images[:1], overrides={"image_size": SIZE, "eps_hi": 0.1})
    assert r.eps == pytest.approx((1e-3 * 0.1) ** 0.5)


def test_parse_override() -> None:
    assert parse_override("image_size=32") == ("image_size", 32)
    assert parse_override('segmenter_profile="small"') == ("segmenter_profile", "small")
    assert parse_override("segmenter_profile=small") == ("segmenter_profile", "small")
    assert parse_override("network_def#threshold=0.5") == ("network_def#threshold", 0.5)
    assert parse_override('class_names=["a", "b"]') == ("class_names", ["a", "b"])
    for bad in ("image_size", "=3"):
        with pytest.raises(BundleError, match="not KEY=VALUE"):
            parse_override(bad)


# -- errors ----------------------------------------------------------------------------------------


def test_missing_bundle_and_config_are_usage_errors(
    images: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli("--bundle", tmp_path / "nope", images[0], "--out", tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert "tea-med explain: error:" in err and str(tmp_path / "nope") in err and "does not exist" in err
    (tmp_path / "empty").mkdir()
    assert run_cli("--bundle", tmp_path / "empty", images[0], "--out", tmp_path / "o") == 2
    assert str(tmp_path / "empty" / "configs" / "inference.yaml") in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_missing_checkpoint_names_the_file_and_the_command(
    images: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(TEACHER_CONFIGS, bundle / "configs")
    assert run_cli("--bundle", bundle, images[0], "--out", tmp_path / "o", *CLI_OVERRIDES) == 1
    err = capsys.readouterr().err
    assert str(bundle / "models" / "model.pt") in err and "does not exist" in err
    command = (
        "python -m monai.bundle run --config_file \"['configs/common.yaml','configs/train_classifier.yaml']\""
    )
    assert command in err and "train_segmenter" not in err  # the workflow that writes model.pt


def test_checkpoint_of_another_profile_is_refused(
    teacher_bundle: Path, images: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # without the override the config builds the paper-profile segmenter: the small weights do not fit
    assert (
        run_cli("--bundle", teacher_bundle, images[0], "--out", tmp_path / "o", "--override", "image_size=32")
        == 1
    )
    err = capsys.readouterr().err
    assert "does not fit" in err and str(teacher_bundle / "models" / "model.pt") in err


def test_unreadable_images_are_reported_and_the_others_written(
    teacher_bundle: Path, images: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    missing = tmp_path / "missing.dcm"
    out = tmp_path / "out"
    assert run_cli("--bundle", teacher_bundle, bad, images[0], missing, "--out", out, *CLI_OVERRIDES) == 1
    captured = capsys.readouterr()
    assert f"{bad}: not a PNG/JPEG image" in captured.err
    assert f"{missing}: cannot be read" in captured.err
    assert "2 of 3 image(s) could not be read" in captured.err
    assert sorted(p.name for p in out.iterdir()) == [f"{images[0].stem}_lrp.png"]
    assert len(captured.out.strip().splitlines()) == 1
    with pytest.raises(ValueError, match=r"bad\.png: not a PNG/JPEG image"):
        explain_images(teacher_bundle, [bad], overrides=OVERRIDES)


def test_bad_class_override_and_eps_are_usage_errors(
    teacher_bundle: Path, images: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ("--bundle", teacher_bundle, images[0], "--out", tmp_path / "o")
    assert run_cli(*common, "--class", "flu", *CLI_OVERRIDES) == 2
    assert "unknown class 'flu'; allowed: normal, pneumonia, covid" in capsys.readouterr().err
    assert run_cli(*common, "--override", "image_size") == 2
    assert "'image_size' is not KEY=VALUE" in capsys.readouterr().err
    assert run_cli(*common, "--override", "imagesize=32") == 2
    err = capsys.readouterr().err
    assert "override 'imagesize' is not an id of" in err and "image_size" in err
    with pytest.raises(SystemExit) as exc:
        run_cli(*common, "--eps", "0", *CLI_OVERRIDES)
    assert exc.value.code == 2 and "expected a number > 0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        run_cli(*common[2:])  # no --bundle
    assert exc.value.code == 2 and "--bundle" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
