"""Making a labelling campaign: which items, chosen how, scored by which model version.

Items come from a data file (CSV/TSV/Parquet with an id column and the model's
feature columns) or from the model's feature table. They are chosen by a
random sample (for unbiased evaluation), by the items the model flags at an
operating point, by the items it is least sure about (active learning), or by
an explicit list. Every chosen item is scored once, through the one scorer,
by the version the campaign pins, and stored with its features, probabilities,
prediction and explanation: what reviewers see, and what exports cite.
Auto-label rules (``user_is_bot_or_sysop == true -> not damaging``) settle
items that need no review.

The CLI names any local file (the operator runs it). The web form is confined:
it takes an uploaded file, or the name of a file inside the configured
campaign data folder (``data_file``), and anything else (an absolute path,
``..``, a symlink that leads out, a file that does not exist) is refused with
one message that says nothing about what is on the server.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from assay.errors import Conflict, DataError, InvalidInput
from assay.modelling.datasets import read_table
from assay.modelling.queries import answer_threshold_query
from assay.registry.versions import check_name
from assay.review.judgments import RULES
from assay.review.reviews import Campaign, get_campaign
from assay.serving.scoring import Scorer, ServedModel
from assay.store import db
from assay.workspace import Workspace

SELECTIONS = ("random", "flagged", "uncertain", "list")
# What an upload may be: plain tables only, so that a small upload cannot unpack into a huge one.
UPLOAD_SUFFIXES = (".csv", ".tsv", ".parquet")
MAX_LABELS_PER_ITEM = 20
_SCORE_CHUNK = 1000
_INSERT_CHUNK = 1000


@dataclass
class CampaignOptions:
    """What an admin chooses when making a campaign (the web form and the CLI fill this)."""

    name: str
    model: str  # "damaging", "damaging@3" or "damaging@candidate"
    selection: str = "random"
    size: int | None = 100  # how many items to pick (random, uncertain; a cap for flagged)
    source: str | None = None  # a data file; None means the model's feature table
    source_name: str | None = None  # how messages and the record name the file (default: its path)
    id_column: str = "id"
    threshold: str | None = None  # flagged: an operating point name or a query
    flag_class: str | None = None  # flagged: the class (default: the positive class)
    ids: list[str] = field(default_factory=list)  # list selection
    labels_per_item: int = 1
    reviewers: list[str] = field(default_factory=list)
    blind: bool = False
    auto_rules: list[str] = field(default_factory=list)
    link_template: str | None = None
    description: str = ""
    judgment_rule: str = "admin"
    explain: int = 5
    seed: int = 0


# --- auto-label rules -----------------------------------------------------------

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
}
_RULE = re.compile(
    r"^\s*(?P<feature>[\w.]+)\s*(?P<op>==|!=|>=|<=|>|<)\s*(?P<value>[^<>=!\s].*?)\s*(?:->|→)\s*(?P<label>.+?)\s*$"
)


@dataclass(frozen=True)
class AutoRule:
    """``feature op value -> label``: items matching it are labelled without review."""

    text: str
    feature: str
    op: str
    value: Any
    label: str

    def matches(self, features: dict[str, Any]) -> bool:
        actual = features.get(self.feature)
        if actual is None:
            return False
        try:
            return bool(_OPS[self.op](actual, self.value))
        except TypeError:
            return False  # a string compared with a number: no match rather than an error mid-campaign


def parse_rule(text: str, features: Sequence[str], classes: Sequence[str]) -> AutoRule:
    """Parse one rule, checking its feature and label against the model."""
    match = _RULE.match(text)
    form = "'<feature> <==|!=|>=|<=|>|<> <value> -> <label>', e.g. 'user_is_bot_or_sysop == true -> not damaging'"
    if match is None:
        raise InvalidInput(f"auto-label rule {text!r} does not have the form {form}", field="auto_rules")
    if match["feature"] not in features:
        raise InvalidInput(
            f"auto-label rule {text!r}: the model has no feature {match['feature']!r}", field="auto_rules"
        )
    label = match["label"].strip("'\"")
    if label not in classes:
        raise InvalidInput(
            f"auto-label rule {text!r}: label must be one of {', '.join(classes)}; got {label!r}",
            field="auto_rules",
        )
    return AutoRule(text.strip(), match["feature"], match["op"], _rule_value(match["value"]), label)


def _rule_value(raw: str) -> Any:
    lowered = raw.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
        return raw[1:-1]
    try:
        number = float(raw)
    except ValueError:
        return raw
    return int(number) if number.is_integer() else number


# --- items ------------------------------------------------------------------------


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


def _file_items(
    path: str, id_column: str, served: ServedModel, name: str
) -> Iterator[tuple[str, dict[str, Any]]]:
    try:
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


def _table_items(ws: Workspace, model: str) -> Iterator[tuple[str, dict[str, Any]]]:
    t = db.feature_rows
    with ws.engine.connect() as conn:
        rows = conn.execution_options(yield_per=5000).execute(
            sa.select(t.c.item_id, t.c.features).where(t.c.model == model).order_by(t.c.item_id)
        )
        for row in rows:
            yield row.item_id, row.features


def _scores(
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


def _class_probabilities(served: ServedModel, score: dict[str, Any]) -> tuple[dict[str, float], str]:
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


def _flag_threshold(served: ServedModel, options: CampaignOptions) -> tuple[str, float, str]:
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


def _select(
    scorer: Scorer,
    ref: str,
    served: ServedModel,
    options: CampaignOptions,
    candidates: list[tuple[str, dict]],
) -> tuple[list[tuple[str, dict]], dict[str, Any]]:
    """The chosen items, in the order they will be handed out, and a record of how."""
    rng = np.random.default_rng(options.seed)
    method = options.selection
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
    scores = _scores(scorer, ref, candidates, explain=0)
    probabilities = [_class_probabilities(served, s)[0] for s in scores]
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


def _check(options: CampaignOptions, served: ServedModel) -> list[AutoRule]:
    check_name(options.name, "campaign name")
    if options.selection not in SELECTIONS:
        raise InvalidInput(
            f"selection must be one of {', '.join(SELECTIONS)}; got {options.selection!r}", field="selection"
        )
    if not 1 <= options.labels_per_item <= MAX_LABELS_PER_ITEM:
        raise InvalidInput(f"labels per item must be 1-{MAX_LABELS_PER_ITEM}", field="labels_per_item")
    if options.judgment_rule not in RULES:
        raise InvalidInput(f"judgment rule must be one of {', '.join(RULES)}", field="judgment_rule")
    link = options.link_template
    if link and (not re.match(r"^https?://", link) or "{id}" not in link):
        raise InvalidInput("a link template is an http(s) URL containing {id}", field="link_template")
    return [parse_rule(r, served.names, served.loaded.classes) for r in options.auto_rules if r.strip()]


def create_campaign(ws: Workspace, scorer: Scorer, options: CampaignOptions, *, created_by: str) -> Campaign:
    """Choose, score and store a campaign's items; the campaign is visible only once all are stored."""
    served = scorer.model(options.model)
    ref = f"{served.name}@{served.version}"  # pinned: an alias moving mid-creation changes nothing
    rules = _check(options, served)
    with ws.engine.connect() as conn:
        taken = conn.execute(sa.select(db.campaigns.c.id).where(db.campaigns.c.name == options.name)).first()
    if taken is not None:  # before the scoring work, not only at the insert
        raise Conflict(f"a campaign named {options.name!r} already exists", field="name")
    if options.reviewers:
        with ws.engine.connect() as conn:
            known = set(
                conn.execute(
                    sa.select(db.users.c.username).where(db.users.c.username.in_(options.reviewers))
                ).scalars()
            )
        unknown = [r for r in options.reviewers if r not in known]
        if unknown:
            raise InvalidInput(f"no user named {unknown[0]!r}", field="reviewers")
    source = options.source
    source_name = options.source_name or source
    if source:
        assert source_name is not None
        items = _file_items(source, options.id_column, served, source_name)
    else:
        items = _table_items(ws, served.name)
    candidates = list(items)
    if not candidates:
        where = source_name or f"the feature table of {served.name!r} (load one with 'assay features load')"
        raise DataError(f"no items in {where}", field="source")
    chosen, selection = _select(scorer, ref, served, options, candidates)
    selection["source"] = source_name or "feature table"
    if options.size is not None:
        selection["size"] = options.size
    if not chosen:
        raise InvalidInput("the selection chose no items", field="selection")
    scores = _scores(scorer, ref, chosen, explain=options.explain)
    rows = []
    for position, ((item_id, features), score) in enumerate(zip(chosen, scores, strict=True)):
        probabilities, prediction = _class_probabilities(served, score)
        rule = next((r for r in rules if r.matches(features)), None)
        rows.append(
            {
                "position": position,
                "item_id": item_id,
                "features": features,
                "probabilities": probabilities,
                "prediction": prediction,
                "explanation": score.get("explanation"),
                "auto_label": rule.label if rule else None,
                "auto_rule": rule.text if rule else None,
                "claimed": 0,
                "available": rule is None,
            }
        )
    try:
        with ws.engine.begin() as conn:
            campaign_id = conn.execute(
                sa.insert(db.campaigns)
                .values(
                    name=options.name,
                    description=options.description.strip(),
                    model=served.name,
                    model_version=served.version,
                    classes=list(served.loaded.classes),
                    labels_per_item=options.labels_per_item,
                    reviewers=list(dict.fromkeys(options.reviewers)),
                    blind=options.blind,
                    selection=selection,
                    auto_rules=[r.text for r in rules],
                    link_template=options.link_template or None,
                    judgment_rule=options.judgment_rule,
                    status="open",
                    item_count=len(rows),
                    created_by=created_by,
                    created_at=db.now(),
                )
                .returning(db.campaigns.c.id)
            ).scalar_one()
            for start in range(0, len(rows), _INSERT_CHUNK):
                chunk = [{**r, "campaign_id": campaign_id} for r in rows[start : start + _INSERT_CHUNK]]
                conn.execute(sa.insert(db.campaign_items), chunk)
    except sa.exc.IntegrityError as exc:
        raise Conflict(f"a campaign named {options.name!r} already exists", field="name") from exc
    return get_campaign(ws.engine, options.name)


def parse_list(text: str) -> list[str]:
    """Ids or names separated by commas, spaces or newlines (form fields, CLI options)."""
    return [part for part in re.split(r"[\s,]+", text or "") if part]
