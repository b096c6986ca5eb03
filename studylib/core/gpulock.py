"""Several runs on one GPU without spoiling each other's timings: a fair reader-writer lock between processes.

A small model leaves most of a big GPU idle while it translates, so ``python -m studylib.pipeline --jobs N``
runs N notebooks at once. What they measure must not suffer from that:

* ``shared()`` wraps work whose result does not depend on being alone (a batch of translations, a
  training step). Any number of processes hold it together.
* ``exclusive()`` wraps what is timed (decode speed, compression wall time). It waits until the current
  shared holders finish their step, keeps new ones out meanwhile (a gate taken first, so a stream of
  shared steps cannot starve it), and then has the GPU to itself.

The lock lives in the directory named by ``$STUDYLIB_GPU_LOCK`` (the pipeline sets it when ``--jobs`` > 1);
when it is unset both are no-ops. Nested use inside one process is allowed: anything inside ``exclusive()``
is already alone, and ``shared()`` inside ``shared()`` is a no-op; asking for ``exclusive()`` while holding
``shared()`` is a programming error (it could never be granted) and raises.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

ENV = "STUDYLIB_GPU_LOCK"
_held: list[str] = []  # stack of modes this process holds ("shared" / "exclusive")


def lock_dir() -> Path | None:
    value = os.environ.get(ENV)
    return Path(value) if value else None


def active() -> bool:
    """Whether runs share the GPU (the lock is in use)."""
    return lock_dir() is not None


def _open(directory: Path, name: str):
    directory.mkdir(parents=True, exist_ok=True)
    return open(directory / name, "a+b")  # noqa: SIM115 -- closed by the caller


@contextlib.contextmanager
def _hold(mode: str):
    directory = lock_dir()
    if directory is None or "exclusive" in _held or (mode == "shared" and _held):
        yield  # no lock in use, or this process already holds what it needs
        return
    if _held:
        raise RuntimeError("gpulock.exclusive() requested while this process holds gpulock.shared()")
    alone = mode == "exclusive"
    gate, gpu = _open(directory, "gate"), _open(directory, "gpu")
    try:
        # a writer keeps the gate while it waits, so new readers queue behind it; a reader passes the gate at once
        fcntl.flock(gate, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        fcntl.flock(gpu, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        if not alone:
            fcntl.flock(gate, fcntl.LOCK_UN)
        _held.append(mode)
        try:
            yield
        finally:
            _held.pop()
            fcntl.flock(gpu, fcntl.LOCK_UN)
            if alone:
                fcntl.flock(gate, fcntl.LOCK_UN)
    finally:
        gate.close()
        gpu.close()


def shared():
    """Hold the GPU together with other shared holders (translation batches, training steps)."""
    return _hold("shared")


def exclusive():
    """Have the GPU alone (timed sections); waits for current shared holders to finish their step."""
    return _hold("exclusive")


def describe() -> dict | None:
    """For a record's environment: how many runs shared the GPU and what was kept exclusive."""
    if not active():
        return None
    return {"concurrent_runs": int(os.environ.get("STUDYLIB_JOBS", "0") or 0) or None,
            "exclusive": "decode-speed timing and compression (wall time alone on the GPU)",
            "shared": "translation batches and training steps (their wall times are not comparable across runs)"}
