"""Exact resumption: RandomStates round trips, latest_checkpoint's choice, ResumeCheckpoint on a
trainer, and BestCheckpointState keeping the best checkpoint across a restart.

Expected draws come from freshly seeded generators of each library (torch, numpy, Python, MONAI
transforms), not from RandomStates; the resumed training run is compared with one that never stopped.
"""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from ignite.engine import Events
from ignite.metrics import Metric
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.handlers import CheckpointSaver, ValidationHandler
from monai.transforms import Compose, RandFlip, RandGaussianNoise
from torch import nn

from tea_med.engines import (
    BestCheckpointState,
    RandomStates,
    ResumeCheckpoint,
    latest_checkpoint,
    lower_is_better,
)


def _seed_everything(seed: int, task: SimpleNamespace, transforms: list) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed + 1)
    random.seed(seed + 2)
    task.generator.manual_seed(seed + 3)
    for i, t in enumerate(transforms):
        t.set_random_state(seed=seed + 10 + i)


def _draws(task: SimpleNamespace, transforms: list) -> dict[str, list[float]]:
    """Draws from every generator RandomStates covers, including the cached Gaussians."""
    return {
        "torch": torch.rand(3).tolist(),
        "numpy": [*np.random.rand(2).tolist(), float(np.random.standard_normal())],
        "python": [random.random(), random.gauss(0.0, 1.0)],
        "task": torch.rand(3, generator=task.generator).tolist(),
        "transforms": [float(t.R.random()) for t in transforms],
    }


def test_random_states_round_trip_restores_every_generator(tmp_path: Path) -> None:
    flip, noise = RandFlip(prob=0.5), RandGaussianNoise(prob=1.0)
    transforms = [flip, noise]
    task = SimpleNamespace(generator=torch.Generator())
    states = RandomStates(task, Compose([Compose([flip]), noise]))  # nested Compose chains are found
    _seed_everything(5, task, transforms)
    # leave a cached Gaussian in numpy's and Python's generators: it is part of their state
    np.random.standard_normal()
    random.gauss(0.0, 1.0)
    saved = states.state_dict()
    torch.save(saved, tmp_path / "rng.pt")  # a checkpoint must survive torch's safe loader
    after_save = _draws(task, transforms)

    # what those generators give, worked out with fresh generators seeded the same way
    np_ref, py_ref = np.random.RandomState(6), random.Random(7)
    np_ref.standard_normal()
    py_ref.gauss(0.0, 1.0)
    expected = {
        "torch": torch.rand(3, generator=torch.Generator().manual_seed(5)).tolist(),
        "numpy": [*np_ref.rand(2).tolist(), float(np_ref.standard_normal())],
        "python": [py_ref.random(), py_ref.gauss(0.0, 1.0)],
        "task": torch.rand(3, generator=torch.Generator().manual_seed(8)).tolist(),
        "transforms": [float(np.random.RandomState(15).random()), float(np.random.RandomState(16).random())],
    }
    assert after_save == expected

    _seed_everything(99, task, transforms)  # move every generator elsewhere
    assert _draws(task, transforms) != after_save
    states.load_state_dict(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert _draws(task, transforms) == after_save


def test_random_states_without_task_and_refusing_other_preprocessing() -> None:
    states = RandomStates()
    state = states.state_dict()
    assert "task" not in state and state["transforms"] == []
    torch.manual_seed(3)
    before = torch.rand(2)
    torch.manual_seed(3)
    state = states.state_dict()
    torch.rand(5)
    states.load_state_dict(state)
    torch.testing.assert_close(torch.rand(2), before, rtol=0, atol=0)
    with pytest.raises(ValueError, match="checkpoint holds 0 transform random states, this run has 1"):
        RandomStates(transforms=[RandFlip(prob=0.5)]).load_state_dict(state)


def test_random_states_of_a_two_process_run_need_two_processes() -> None:
    state = RandomStates().state_dict()
    with pytest.raises(
        ValueError, match=r"by 2 process\(es\), this run has 1: resume with --nproc_per_node 2"
    ):
        RandomStates().load_state_dict({"ranks": [state, state]})


def test_latest_checkpoint_picks_the_highest_number(tmp_path: Path) -> None:
    assert latest_checkpoint(tmp_path / "absent") is None
    assert latest_checkpoint(tmp_path) is None
    names = [
        "checkpoint_epoch=2.pt",
        "checkpoint_epoch=10.pt",  # 10 > 9 as numbers, not as strings
        "checkpoint_epoch=9.pt",
        "checkpoint_key_metric=0.9500.pt",  # a score, not an epoch
        "checkpoint_epoch=11.pt.tmp",  # a partial write
        "checkpoint_epoch=12.pth",
        "other_epoch=99.pt",  # another prefix
        "xcheckpoint_epoch=50.pt",
        "model.pt",
        "notes.txt",
    ]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    assert latest_checkpoint(tmp_path) == str(tmp_path / "checkpoint_epoch=10.pt")
    assert latest_checkpoint(tmp_path, prefix="other") == str(tmp_path / "other_epoch=99.pt")
    assert latest_checkpoint(tmp_path, prefix="model") is None
    (tmp_path / "checkpoint_13.pt").write_bytes(b"")  # no "epoch=" in the name
    assert latest_checkpoint(tmp_path) == str(tmp_path / "checkpoint_13.pt")


DATA = [
    {"image": torch.tensor([float(i), 1.0 - i / 4]), "label": torch.tensor([0.5 * i - 1.0])} for i in range(6)
]


def _trainer(directory: Path, max_epochs: int, init_seed: int, with_rng: bool = True):
    """A linear model trained by SGD with momentum on batches whose order the global torch RNG draws."""
    net = nn.Linear(2, 1)
    with torch.no_grad():  # distinct initial weights per call, without touching the global RNG
        g = torch.Generator().manual_seed(init_seed)
        net.weight.copy_(torch.randn(1, 2, generator=g))
        net.bias.copy_(torch.randn(1, generator=g))
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    objects = {"net": net, "opt": opt, "teacher_opt": None, **({"rng": RandomStates()} if with_rng else {})}
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=max_epochs,
        train_data_loader=torch.utils.data.DataLoader(DATA, batch_size=2, shuffle=True),
        network=net,
        optimizer=opt,
        loss_function=nn.MSELoss(),
        train_handlers=[ResumeCheckpoint(directory, objects)],
    )
    return trainer, net, opt


def _params(net: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in net.parameters()]


def test_resume_checkpoint_continues_a_stopped_run_exactly(tmp_path: Path) -> None:
    # the run that never stops: 4 epochs
    straight, net, _ = _trainer(tmp_path / "straight", 4, init_seed=0)
    torch.manual_seed(1)
    straight.run()
    want = _params(net)
    assert [f.name for f in (tmp_path / "straight").iterdir()] == ["checkpoint_epoch=4.pt"]  # newest only
    saved = torch.load(tmp_path / "straight" / "checkpoint_epoch=4.pt", weights_only=True)
    assert set(saved) == {"net", "opt", "rng", "trainer"}  # a None object is left out
    assert saved["trainer"]["iteration"] == 12 and saved["trainer"]["epoch_length"] == 3

    # the same run stopped after 2 epochs ...
    first, net1, _ = _trainer(tmp_path / "run", 2, init_seed=0)
    torch.manual_seed(1)
    first.run()
    at_epoch2 = _params(net1)
    assert latest_checkpoint(tmp_path / "run") == str(tmp_path / "run" / "checkpoint_epoch=2.pt")

    # ... and started again: other initial weights, other global RNG state, fresh objects
    again, net2, opt2 = _trainer(tmp_path / "run", 4, init_seed=7)
    seen: dict[str, object] = {}

    @again.on(Events.EPOCH_STARTED(once=3))  # the first epoch this engine runs
    def _record(engine) -> None:
        seen.update(epoch=engine.state.epoch, iteration=engine.state.iteration, params=_params(net2))
        seen["momentum"] = [opt2.state[p]["momentum_buffer"].clone() for p in net2.parameters()]

    started = []
    again.add_event_handler(Events.EPOCH_STARTED, lambda e: started.append(e.state.epoch))
    torch.manual_seed(12345)
    again.run()
    assert started == [3, 4]  # epochs 1 and 2 were not run again
    assert seen["epoch"] == 3 and seen["iteration"] == 6  # 3 batches per epoch
    for a, b in zip(seen["params"], at_epoch2, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert all(float(m.abs().sum()) > 0 for m in seen["momentum"])  # the optimiser state came back too
    assert again.state.epoch == 4 and again.state.iteration == 12
    for a, b in zip(_params(net2), want, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)  # the same weights as the run that never stopped
    assert latest_checkpoint(tmp_path / "run") == str(tmp_path / "run" / "checkpoint_epoch=4.pt")

    # without the random states the batches of epochs 3-4 come in another order: other weights
    no_rng_dir = tmp_path / "no_rng"
    no_rng_dir.mkdir()
    first, _, _ = _trainer(no_rng_dir, 2, init_seed=0, with_rng=False)
    torch.manual_seed(1)
    first.run()
    again, net3, _ = _trainer(no_rng_dir, 4, init_seed=7, with_rng=False)
    torch.manual_seed(12345)
    again.run()
    assert any(not torch.equal(a, b) for a, b in zip(_params(net3), want, strict=True))


def test_resume_checkpoint_refuses_a_trainer_object(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="objects must not contain 'trainer'"):
        ResumeCheckpoint(tmp_path, {"trainer": object()})


class _ScriptedScore(Metric):
    """The key metric of each validation as listed, by the trainer's epoch (the evaluator's)."""

    def __init__(self, by_epoch: dict[int, float]) -> None:
        self.by_epoch = by_epoch
        super().__init__()

    def reset(self) -> None:
        pass

    def update(self, output: object) -> None:
        pass

    def compute(self) -> float:
        raise NotImplementedError  # completed() reads the script instead

    def completed(self, engine, name: str) -> None:
        engine.state.metrics[name] = self.by_epoch[engine.state.epoch]


def _trainer_with_best(directory: Path, max_epochs: int, scores: dict[int, float], lower: bool, best: bool):
    """A trainer validated every epoch: the evaluator's key metric is ``scores[epoch]``, the saver
    keeps the best network in ``model.pt``, whose bias is set to the epoch at each epoch's start."""
    net = nn.Linear(2, 1)
    loader = torch.utils.data.DataLoader(DATA, batch_size=3)
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=loader,
        network=net,
        key_val_metric={"score": _ScriptedScore(scores)},
        **({"metric_cmp_fn": lower_is_better} if lower else {}),
    )
    saver = CheckpointSaver(
        save_dir=str(directory),
        save_dict={"model": net},
        save_key_metric=True,
        key_metric_negative_sign=lower,
        key_metric_filename="model.pt",
    )
    saver.attach(evaluator)
    objects = {"net": net, "best": BestCheckpointState(saver, evaluator) if best else None}
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=max_epochs,
        train_data_loader=loader,
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.0),
        loss_function=nn.MSELoss(),
        train_handlers=[
            ValidationHandler(validator=evaluator, interval=1),
            ResumeCheckpoint(directory, objects),
        ],
    )

    @trainer.on(Events.EPOCH_STARTED)
    def _mark(engine) -> None:
        with torch.no_grad():
            net.bias.fill_(float(engine.state.epoch))

    return trainer, evaluator


def _saved_epoch(directory: Path) -> int:
    return int(torch.load(directory / "model.pt", weights_only=True)["bias"].item())


@pytest.mark.parametrize(
    ("lower", "scores", "better"),
    [
        (True, {1: 0.5, 2: 0.3, 3: 0.45, 4: 0.4}, 0.2),  # a loss: epoch 2's is the lowest
        (False, {1: 0.5, 2: 0.9, 3: 0.6, 4: 0.7}, 0.95),  # an accuracy: epoch 2's is the highest
    ],
    ids=["lower-is-better", "higher-is-better"],
)
def test_best_checkpoint_state_keeps_the_best_model_across_a_restart(
    tmp_path: Path, lower: bool, scores: dict[int, float], better: float
) -> None:
    straight, _ = _trainer_with_best(tmp_path / "straight", 4, scores, lower, best=True)
    straight.run()
    assert _saved_epoch(tmp_path / "straight") == 2

    _trainer_with_best(tmp_path / "run", 2, scores, lower, best=True)[0].run()
    saved = torch.load(tmp_path / "run" / "checkpoint_epoch=2.pt", weights_only=True)
    assert saved["best"] == {"best_metric": scores[2], "best_metric_epoch": 2}
    again, evaluator = _trainer_with_best(tmp_path / "run", 4, scores, lower, best=True)
    again.run()  # epochs 3 and 4 score worse than epoch 2
    assert _saved_epoch(tmp_path / "run") == 2
    assert evaluator.state.best_metric == scores[2] and evaluator.state.best_metric_epoch == 2

    # a later epoch that beats epoch 2 still replaces it after the restart
    improved = {**scores, 4: better}
    _trainer_with_best(tmp_path / "improved", 2, improved, lower, best=True)[0].run()
    again, evaluator = _trainer_with_best(tmp_path / "improved", 4, improved, lower, best=True)
    again.run()
    assert _saved_epoch(tmp_path / "improved") == 4
    assert evaluator.state.best_metric == better and evaluator.state.best_metric_epoch == 4

    # without it, the first validation after the restart replaces model.pt, and the better of
    # epochs 3 and 4 is kept
    _trainer_with_best(tmp_path / "bare", 2, scores, lower, best=False)[0].run()
    _trainer_with_best(tmp_path / "bare", 4, scores, lower, best=False)[0].run()
    assert _saved_epoch(tmp_path / "bare") == 4


def test_best_checkpoint_state_needs_a_checkpoint_saver() -> None:
    with pytest.raises(TypeError, match="saver must be a MONAI CheckpointSaver, got dict"):
        BestCheckpointState({}, evaluator=None)
