"""Which training step each checkpoint of a series is: ``epoch_012.onnx`` -> 12, or given."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import PurePath

from layerlens.errors import InputError

_INTEGER = re.compile(r"\d+")


def step_from_name(name: str) -> int | None:
    """The last integer in a file name without its suffix (``ckpt_3_step_120.onnx`` -> 120,
    ``model.pt2`` -> None)."""
    found = _INTEGER.findall(PurePath(name).stem)
    return int(found[-1]) if found else None


def checkpoint_steps(names: Sequence[str], steps: Sequence[int] | None = None,
                     *, steps_name: str = "steps") -> list[int]:
    """The step of each checkpoint: ``steps`` when given, else from each file name.

    Raises :class:`InputError` when there are fewer than two checkpoints, ``steps`` does not
    give one step per checkpoint, a step is negative or repeated, or a file name holds no
    integer and no ``steps`` are given. ``steps_name``: how messages name the steps
    (``--steps`` on the command line).
    """
    if len(names) < 2:
        raise InputError(f"a checkpoint series needs at least 2 model files, got {len(names)}")
    if steps is None:
        missing = [name for name in names if step_from_name(name) is None]
        if missing:
            raise InputError(f"cannot tell the training step of '{missing[0]}': its file name "
                             f"holds no integer; give {steps_name} (e.g. {steps_name} "
                             f"{','.join(str(5 * i) for i in range(len(names)))})")
        found = [step_from_name(name) for name in names]
        steps = [step for step in found if step is not None]
    elif len(steps) != len(names):
        raise InputError(f"{steps_name} gives {len(steps)} steps for {len(names)} model "
                         "files: give one step per model file")
    if any(step < 0 for step in steps):
        raise InputError(f"{steps_name}: steps are non-negative integers, got "
                         f"{min(steps)}")
    repeated = sorted({step for step in steps if list(steps).count(step) > 1})
    if repeated:
        clash = [name for name, step in zip(names, steps, strict=True) if step == repeated[0]]
        raise InputError(f"step {repeated[0]} is given to more than one model file "
                         f"({', '.join(clash)}); each checkpoint needs its own step")
    return list(steps)


def parse_steps(text: str, *, steps_name: str = "--steps") -> list[int]:
    """``"0,5,10"`` -> ``[0, 5, 10]``; :class:`InputError` on anything else."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    try:
        return [int(part) for part in parts]
    except ValueError:
        raise InputError(f"{steps_name} takes comma-separated whole numbers, e.g. 0,5,10; "
                         f"got '{text}'") from None
