"""Probing a model in isolation: load it and predict its reference row in a throwaway process.

A file that still crashes a native loader (whatever the checks before it missed) kills
that process, not the caller, and comes back as a one-line refusal.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

from assay.errors import ArtifactError
from assay.registry.artifacts import MODEL_JSON, SKOPS_FILE, load_model, read_model_json
from assay.registry.files import check_manifest
from assay.registry.lightgbm_text import LIGHTGBM_FILE

# --------------------------------------------------------------------------- probing in isolation

PROBE_TIMEOUT_S = 120.0


def probe_model(directory: Path, manifest: dict[str, str], *, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Load the model in ``directory`` and score its reference row in a throwaway process.

    The strict readers keep every file that could crash a native loader away from it; this is
    the second line. Should a model file still kill the process that loads it (a segfault or
    an abort inside LightGBM, skops or numpy), only the throwaway process dies and the model is
    refused with one line. A model that loads there but fails, or answers probabilities that
    are not probabilities, is refused with what went wrong.
    """
    check_manifest(manifest)
    model_file = next((n for n in (LIGHTGBM_FILE, SKOPS_FILE) if n in manifest), MODEL_JSON)
    # spawn, not fork: the probe must not share the caller's threads, locks or open handles.
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_probe, args=(sender, str(directory), dict(manifest)), daemon=True)
    process.start()
    sender.close()
    try:
        process.join(timeout_s)
        if process.is_alive():
            process.kill()
            process.join()
            raise ArtifactError(f"refused: model file {model_file} did not load within {timeout_s:g} s")
        try:
            problem = receiver.recv() if receiver.poll() else None
        except (EOFError, OSError):  # died while answering
            problem = None
    finally:
        receiver.close()
    if process.exitcode == 0 and problem is None:
        return
    if problem is None:
        raise ArtifactError(
            f"refused: model file {model_file} crashed the loader ({_exit_reason(process.exitcode)})"
        )
    raise ArtifactError(f"refused: model file {model_file} does not load and score: {problem}")


def _probe(answer: Connection, directory: str, manifest: dict[str, str]) -> None:
    """The throwaway process: load, score the reference row alone and in a batch, explain it."""
    # What a native library prints as it dies ("[LightGBM] [Fatal] ...", "terminate called ...")
    # would break the caller's one-line refusal: the answer goes through the pipe instead.
    quiet = os.open(os.devnull, os.O_WRONLY)
    os.dup2(quiet, 1)
    os.dup2(quiet, 2)
    problem = None
    try:
        folder = Path(directory)
        predictor = load_model(folder, manifest)
        reference = read_model_json((folder / MODEL_JSON).read_bytes())["reference"]
        row = np.full(predictor.n_features, np.nan) if reference is None else np.asarray(reference)
        rows = np.repeat(row[None, :], 3, axis=0)
        batch, single = predictor.predict_proba(rows), predictor.predict_proba(rows[:1])
        predictor.contributions(rows[:1])
        if (
            batch.shape != (3, predictor.n_classes)
            or not np.isfinite(batch).all()
            or (batch < 0).any()
            or (batch > 1).any()
            or not np.allclose(batch.sum(axis=1), 1.0)
            or not np.allclose(batch, single[0])
        ):
            problem = "its probabilities for the reference row are not probabilities"
    except Exception as exc:  # the parent reports whatever it was, as one line
        text = str(getattr(exc, "message", "") or exc) or repr(exc)
        problem = text.splitlines()[0][:500]
    answer.send(problem)
    answer.close()


def _exit_reason(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return signal.Signals(-exitcode).name
        except ValueError:
            return f"signal {-exitcode}"
    return f"exit status {exitcode}"
