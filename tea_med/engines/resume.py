"""Exact resumption: every random generator a run draws from, as a checkpointable object."""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.transforms import Randomizable

from tea_med.engines.distributed import gather_objects, rank, world_size


def _randomizables(obj: Any, seen: set[int] | None = None) -> list[Randomizable]:
    """Every MONAI ``Randomizable`` reachable from ``obj`` (Compose chains, wrapped transforms)."""
    seen = set() if seen is None else seen
    if id(obj) in seen or obj is None:
        return []
    seen.add(id(obj))
    found = [obj] if isinstance(obj, Randomizable) else []
    children: list[Any] = []
    if isinstance(obj, list | tuple):
        children = list(obj)
    elif hasattr(obj, "transforms") and isinstance(obj.transforms, list | tuple):
        children = list(obj.transforms)
    if isinstance(obj, Randomizable):
        children += [v for v in vars(obj).values() if isinstance(v, Randomizable)]
    for child in children:
        found += _randomizables(child, seen)
    return found


def _np_state_to_dict(state: tuple[Any, ...]) -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = state
    return {"name": name, "keys": torch.as_tensor(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached": float(cached)}  # fmt: skip


def _np_state_from_dict(d: dict[str, Any]) -> tuple[Any, ...]:
    keys = d["keys"].numpy().astype(np.uint32)
    return (d["name"], keys, d["pos"], d["has_gauss"], d["cached"])


class RandomStates:
    """``state_dict()`` / ``load_state_dict()`` of torch's, numpy's and Python's global
    generators, a task's own generator and the random states of MONAI transforms.

    List it in a checkpoint's ``save_dict`` (and the matching ``CheckpointLoader``'s
    ``load_dict``) so that a run killed and restarted draws the same numbers as one that never
    stopped. Exact with ``num_workers=0``; worker processes have states of their own.

    Under ``torchrun`` every process draws its own numbers: ``state_dict()`` gathers all ranks'
    states (a collective call, which ignite's checkpoint handlers make on every rank before rank
    0 writes the file) and ``load_state_dict()`` gives each rank its own back, so a resumed
    multi-process run needs as many processes as the one that wrote the checkpoint.
    """

    def __init__(self, task: Any = None, transforms: Any = None) -> None:
        self.task = task
        self.transforms = _randomizables(transforms)

    def state_dict(self) -> dict[str, Any]:
        if world_size() > 1:
            return {"ranks": gather_objects(self._local_state())}
        return self._local_state()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = len(state["ranks"]) if "ranks" in state else 1
        if saved != world_size():
            raise ValueError(
                f"the checkpoint's random states were written by {saved} process(es), this run has "
                f"{world_size()}: resume with --nproc_per_node {saved} (or without torchrun when 1), "
                "or start afresh in another ckpt_dir"
            )
        self._load_local(state["ranks"][rank()] if "ranks" in state else state)

    def _local_state(self) -> dict[str, Any]:
        version, internal, gauss = random.getstate()
        state: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "numpy": _np_state_to_dict(np.random.get_state()),  # type: ignore[arg-type]  # a tuple for MT19937; numpy's overloads say dict
            "python": {"version": version, "internal": list(internal), "gauss": gauss},
            "transforms": [_np_state_to_dict(t.R.get_state()) for t in self.transforms],  # type: ignore[arg-type]  # a tuple for MT19937; numpy's overloads say dict
        }
        generator = getattr(self.task, "generator", None)
        if generator is not None:
            state["task"] = generator.get_state()
        return state

    def _load_local(self, state: dict[str, Any]) -> None:
        if len(state["transforms"]) != len(self.transforms):
            raise ValueError(
                f"checkpoint holds {len(state['transforms'])} transform random states, this run has "
                f"{len(self.transforms)}: was the preprocessing changed since the checkpoint?"
            )
        torch.set_rng_state(state["torch"])
        np.random.set_state(_np_state_from_dict(state["numpy"]))
        py = state["python"]
        random.setstate((py["version"], tuple(py["internal"]), py["gauss"]))
        for t, s in zip(self.transforms, state["transforms"], strict=True):
            t.R.set_state(_np_state_from_dict(s))
        generator = getattr(self.task, "generator", None)
        if generator is not None and "task" in state:
            generator.set_state(state["task"])


def latest_checkpoint(directory: str | os.PathLike[str], prefix: str = "checkpoint") -> str | None:
    """The ``<prefix>_epoch=N.pt`` (or ``_key_metric``-free ``_checkpoint_N.pt``) with the largest N
    in ``directory``, or ``None`` when there is none (a fresh run)."""
    d = Path(directory)
    if not d.is_dir():
        return None
    pattern = re.compile(rf"^{re.escape(prefix)}_\w*?=?(\d+)\.pt$")
    found = [(int(m.group(1)), f) for f in d.iterdir() if (m := pattern.match(f.name))]
    return str(max(found)[1]) if found else None


class ResumeCheckpoint:
    """Checkpoint every epoch and resume from the newest checkpoint, as one trainer handler.

    Saves ``objects`` plus the trainer engine itself (epoch, iteration) to
    ``<directory>/checkpoint_epoch=N.pt`` (keeping the newest only) at the end of every epoch;
    when such a file exists at start, everything is restored from it first, so a run killed
    (even with SIGKILL) and started again with the same command continues where it stopped.
    List it after the ``ValidationHandler`` so a checkpoint includes that epoch's validation,
    and list a :class:`BestCheckpointState` among ``objects`` so the best checkpoint is chosen
    among all validations of the run, not only those after the last restart.

    Args:
        directory: where checkpoints go (the bundle's ``ckpt_dir``).
        objects: name -> object with ``state_dict``/``load_state_dict`` (model, optimiser,
            scheduler, :class:`RandomStates`, :class:`BestCheckpointState`). ``None`` values are
            left out, so a config can list objects that only some settings create (e.g. a
            co-trained teacher's optimiser).
    """

    def __init__(self, directory: str | os.PathLike[str], objects: dict[str, Any]) -> None:
        if "trainer" in objects:
            raise ValueError("objects must not contain 'trainer': the engine is added when attached")
        self.directory = os.fspath(directory)
        self.objects = {k: v for k, v in objects.items() if v is not None}

    def attach(self, engine: Any) -> None:
        from monai.handlers import CheckpointLoader, CheckpointSaver

        to_save = {**self.objects, "trainer": engine}
        resume_from = latest_checkpoint(self.directory)
        if resume_from is not None:
            loader = CheckpointLoader(
                load_path=resume_from,
                load_dict=to_save,
                map_location="cpu",  # type: ignore[arg-type]  # MONAI annotates dict | None; torch.load takes a str
            )
            loader.attach(engine)
        CheckpointSaver(save_dir=self.directory, save_dict=to_save, save_interval=1, n_saved=1).attach(engine)


class BestCheckpointState:
    """What a best-checkpoint ``CheckpointSaver`` remembers, as a checkpointable object.

    MONAI's ``CheckpointSaver(save_key_metric=True)`` keeps the best score it has seen in memory
    only, and so does an evaluator's ``state.best_metric``. After a restart the first validation
    would therefore overwrite the best checkpoint (``models/model.pt``) whatever its score. List
    this object in :class:`ResumeCheckpoint`'s ``objects``: the evaluator's best metric and its
    epoch are then saved every epoch and, on resume, restored to the evaluator and handed to the
    saver (``CheckpointSaver.load_state_dict``), so the best checkpoint is the best of every
    validation of the run.

    The saver must rank the evaluator's key metric as the evaluator does (with
    ``key_metric_negative_sign`` exactly when the evaluator's ``metric_cmp_fn`` prefers lower
    values) and keep one checkpoint under a fixed ``key_metric_filename``; the student bundle's
    ``validate#checkpoint`` does.

    Args:
        saver: the validator's ``CheckpointSaver`` with ``save_key_metric=True``.
        evaluator: the validator itself (its ``state.best_metric`` / ``best_metric_epoch`` and
            ``metric_cmp_fn``).
    """

    def __init__(self, saver: Any, evaluator: Any) -> None:
        from monai.handlers import CheckpointSaver

        if not isinstance(saver, CheckpointSaver):
            raise TypeError(f"saver must be a MONAI CheckpointSaver, got {type(saver).__name__}")
        self.saver = saver
        self.evaluator = evaluator

    def state_dict(self) -> dict[str, Any]:
        state = self.evaluator.state
        return {"best_metric": float(state.best_metric), "best_metric_epoch": int(state.best_metric_epoch)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.evaluator.state.best_metric = state["best_metric"]
        self.evaluator.state.best_metric_epoch = state["best_metric_epoch"]
        if state["best_metric_epoch"] < 1:  # nothing validated yet: nothing saved
            return
        # the saver's score: the key metric, negated when lower is better
        higher_is_better = bool(self.evaluator.metric_cmp_fn(1.0, 0.0))
        score = state["best_metric"] if higher_is_better else -state["best_metric"]
        # ignite's ranking: (score, file name); a saver with a fixed key_metric_filename replaces
        # that file whatever name is recorded here
        self.saver.load_state_dict({"_saved": [(score, f"key_metric={score:.4f}.pt")]})
