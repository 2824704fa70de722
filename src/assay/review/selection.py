"""Which items a campaign reviews: read from a file or the feature table, scored, and chosen.

Items come from a data file (CSV/TSV/Parquet with an id column and the model's
feature columns) or from the model's feature table. They are chosen by a
random sample (for unbiased evaluation), by the items the model flags at an
operating point, by the items it is least sure about (active learning), or by
an explicit list.

The CLI names any local file (the operator runs it). The web form is confined:
it takes an uploaded file, or the name of a file inside the configured
campaign data folder (``data_file``), and anything else (an absolute path,
``..``, a symlink that leads out, a file that does not exist) is refused with
one message that says nothing about what is on the server.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from assay.errors import DataError, InvalidInput
from assay.serving.scoring import Scorer
from assay.serving.served import ServedModel
from assay.store import tables
from assay.workspace import Workspace

SELECTIONS = ("random", "flagged", "uncertain", "list")
# What an upload may be: plain tables only, so that a small upload cannot unpack into a huge one.
UPLOAD_SUFFIXES = (".csv", ".tsv", ".parquet")
_SCORE_CHUNK = 1000


@dataclass(frozen=True)
class Selection:
    """How a campaign's items are chosen (a part of ``CampaignOptions``)."""

    method: str = "random"
    size: int | None = 100  # how many items to pick (random, uncertain; a cap for flagged)
    seed: int = 0
    ids: list[str] = field(default_factory=list)  # list selection
    threshold: str | None = None  # flagged: an operating point name or a query
    flag_class: str | None = None  # flagged: the class (default: the positive class)


def data_file(data_dir: str | Path | None, name: str) -> Path:
    """The file ``name`` names inside ``data_dir``, symlinks resolved; ``InvalidInput`` otherwise.

    Every refusal has the same message, whether the file is outside the folder, missing, a
    folder or unreadable, so that the form cannot be used to learn what exists on the server.
    """
    if not data_dir:
        raise InvalidInput(
            "this server takes campaign data as an uploaded file only (no data folder is configured)",
            field="source",
        )
    refused = InvalidInput(f"{name!r} is not a data file in the campaign data folder", field="source")
    if not name.strip() or "\0" in name or Path(name).is_absolute():
        raise refused
    root = Path(data_dir).resolve()
    try:
        path = (root / name).resolve(strict=True)
        inside = path.is_relative_to(root) and path != root and path.is_file()
    except (OSError, RuntimeError, ValueError):  # missing, a symlink loop, a name the system refuses
        raise refused from None
    if not inside:
        raise refused
    return path


def file_items(
    path: str, id_column: str, served: ServedModel, name: str
) -> Iterator[tuple[str, dict[str, Any]]]:
    try:
        from assay.modelling.datasets import read_table  # pandas and pyarrow, for files only

        frame = read_table(path)
    except DataError as exc:
        # Named as the admin knows the file (an upload lives in a temporary folder).
        raise DataError(exc.message.replace(str(path), name), field=exc.field or "source") from None
    if id_column not in frame.columns:
        raise DataError(
            f"{name}: no id column {id_column!r}; columns are: {', '.join(map(str, frame.columns))}",
            field="id_column",
        )
    ids = frame[id_column].astype(str)
    if ids.duplicated().any():
        raise DataError(
            f"{name}: duplicate item ids, e.g. {ids[ids.duplicated()].iloc[0]!r}", field=id_column
        )
    schema = served.loaded.schema
    # Through the model's schema: typed values (CSV cells are strings), bad cells refused by name.
    X = schema.encode_frame(frame, source=name)
    for item_id, row in zip(ids.tolist(), X, strict=True):
        yield item_id, schema.decode_row(row)


def table_items(ws: Workspace, model: str) -> Iterator[tuple[str, dict[str, Any]]]:
    t = tables.feature_rows
    with ws.engine.connect() as conn:
        rows = conn.execution_options(yield_per=5000).execute(
            sa.select(t.c.item_id, t.c.features).where(t.c.model == model).order_by(t.c.item_id)
        )
        for row in rows:
            yield row.item_id, row.features


def scores(
    scorer: Scorer, ref: str, items: list[tuple[str, dict[str, Any]]], explain: int
) -> list[dict[str, Any]]:
    """One score per item, through the scorer, a chunk at a time; an unscorable item refuses the campaign."""
    out: list[dict[str, Any]] = []
    for start in range(0, len(items), _SCORE_CHUNK):
        chunk = items[start : start + _SCORE_CHUNK]
        result = scorer.score([ref], [{"id": i, "features": f} for i, f in chunk], explain=explain)["scores"]
        for item_id, _ in chunk:
            score = result[item_id][ref]
            if "error" in score:
                raise DataError(
                    f"item {item_id!r} cannot be scored: {score['error']['message']}", field="source"
                )
            out.append(score)
    return out


def class_probabilities(served: ServedModel, score: dict[str, Any]) -> tuple[dict[str, float], str]:
    """A score's probabilities keyed by class name, and its prediction as a class name.

    The scorer answers binary models ORES's way (``true``/``false``); reviewers
    label with class names, so campaigns store those.
    """
    classes = served.loaded.classes
    probabilities = {classes[j]: float(score["probability"][key]) for j, key in enumerate(served.keys)}
    prediction = score["prediction"]
    if isinstance(prediction, bool):
        positive = served.positive_index
        assert positive is not None
        prediction = classes[positive] if prediction else classes[1 - positive]
    return probabilities, str(prediction)


def _flag_threshold(served: ServedModel, options: Selection) -> tuple[str, float, str]:
    """(class, threshold, description) for a flagged campaign."""
    loaded = served.loaded
    if not options.threshold:
        raise InvalidInput(
            "a flagged campaign needs an operating point or a threshold query", field="threshold"
        )
    point = loaded.operating_points.get(options.threshold)
    if point is not None:
        cls = point.get("class") or loaded.positive or loaded.classes[-1]
        if point.get("threshold") is None:
            raise InvalidInput(f"operating point {options.threshold!r} has no threshold", field="threshold")
        return cls, float(point["threshold"]), f"{options.threshold}: {point['query']}"
    cls = options.flag_class or loaded.positive
    tables = loaded.evaluation.get("thresholds") or {}
    if cls is None or cls not in tables:
        raise InvalidInput(f"name the class to flag (one of {', '.join(sorted(tables))})", field="flag_class")
    from assay.modelling.queries import answer_threshold_query

    answer = answer_threshold_query(tables[cls], options.threshold)
    if answer is None:
        raise InvalidInput(
            f"no threshold of {loaded.record.ref} satisfies {options.threshold!r}", field="threshold"
        )
    return cls, float(answer["threshold"]), options.threshold


def _margin(probabilities: dict[str, float], served: ServedModel) -> float:
    """How sure the model is: distance to the decision threshold (binary) or top-two margin."""
    if served.positive_index is not None:
        return abs(probabilities[served.loaded.classes[served.positive_index]] - served.threshold)
    top = sorted(probabilities.values(), reverse=True)
    return top[0] - top[1]


def select(
    scorer: Scorer,
    ref: str,
    served: ServedModel,
    options: Selection,
    candidates: list[tuple[str, dict]],
) -> tuple[list[tuple[str, dict]], dict[str, Any]]:
    """The chosen items, in the order they will be handed out, and a record of how."""
    rng = np.random.default_rng(options.seed)
    method = options.method
    record: dict[str, Any] = {"method": method, "seed": options.seed, "candidates": len(candidates)}
    if method == "list":
        wanted = list(dict.fromkeys(str(i).strip() for i in options.ids if str(i).strip()))
        if not wanted:
            raise InvalidInput("a list campaign needs item ids", field="ids")
        by_id = dict(candidates)
        missing = [i for i in wanted if i not in by_id]
        if missing:
            raise InvalidInput(
                f"{len(missing)} listed item(s) are not in the source, e.g. {missing[0]!r}", field="ids"
            )
        return [(i, by_id[i]) for i in wanted], record
    size = options.size
    if size is not None and size < 1:
        raise InvalidInput("size must be at least 1", field="size")
    if method == "random":
        n = len(candidates) if size is None else min(size, len(candidates))
        chosen = rng.choice(len(candidates), size=n, replace=False)
        return [candidates[k] for k in chosen], record
    scored = scores(scorer, ref, candidates, explain=0)
    probabilities = [class_probabilities(served, s)[0] for s in scored]
    if method == "uncertain":
        margins = np.array([_margin(p, served) for p in probabilities])
        order = np.argsort(margins, kind="stable")[: size or len(candidates)]
        return [candidates[k] for k in order], record
    cls, threshold, query = _flag_threshold(served, options)
    flagged = [k for k, p in enumerate(probabilities) if p[cls] >= threshold]
    record.update({"class": cls, "threshold": threshold, "query": query, "flagged": len(flagged)})
    if size is not None and len(flagged) > size:
        flagged = sorted(rng.choice(flagged, size=size, replace=False).tolist())
    # Shuffled, so a campaign stopped half way still reviewed a random part of the flagged items.
    order = rng.permutation(len(flagged))
    return [candidates[flagged[k]] for k in order], record
