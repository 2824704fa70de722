"""A labelling campaign: its stored settings, how it is found, opened, closed and edited, and how one is made.

A campaign holds items, each wanting ``labels_per_item`` labels from
reviewers (more when they tie, up to ``extra_labels`` more). Making one
chooses its items (``assay.review.selection``), scores every chosen item once
through the one scorer, by the version the campaign pins, and stores them with
their features, probabilities, prediction and explanation: what reviewers see,
and what exports cite. Auto-label rules (``assay.review.autorules``) settle
items that need no review. The campaign is visible only once all its items
are stored.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from assay.errors import Conflict, DataError, Forbidden, InvalidInput, NotFound
from assay.registry.refs import check_name
from assay.review.accounts import User
from assay.review.autorules import AutoRule, parse_rule
from assay.review.judgments import RULES
from assay.review.selection import (
    SELECTIONS,
    Selection,
    class_probabilities,
    file_items,
    scores,
    select,
    table_items,
)
from assay.serving.scoring import Scorer
from assay.serving.served import ServedModel
from assay.store import db, tables
from assay.workspace import Workspace

UNSURE = "unsure"
MAX_COMMENT = 2000
MAX_LABELS_PER_ITEM = 20
MAX_EXTRA_LABELS = 10


@dataclass(frozen=True)
class Campaign:
    """A campaign's settings as stored."""

    id: int
    name: str
    description: str
    model: str
    model_version: int
    classes: list[str]
    labels_per_item: int
    extra_labels: int  # labels an item may get beyond labels_per_item while its votes tie
    guidelines: str  # what reviewers read before they label
    class_descriptions: dict[str, str]  # class -> what it means, shown next to its button
    reviewers: list[str]
    blind: bool
    selection: dict[str, Any]
    auto_rules: list[str]
    link_template: str | None
    judgment_rule: str
    status: str
    item_count: int
    created_by: str
    created_at: datetime

    @property
    def label_choices(self) -> list[str]:
        return [*self.classes, UNSURE]

    @property
    def max_labels(self) -> int:
        """The most class labels an item can get: labels_per_item, plus the extra ones for ties."""
        return self.labels_per_item + self.extra_labels

    @property
    def is_open(self) -> bool:
        return self.status == "open"

    def may_label(self, user: User) -> bool:
        """An empty reviewer list lets every account label; otherwise only those named."""
        return not self.reviewers or user.username in self.reviewers

    def link(self, item_id: str) -> str | None:
        """The item's page in the product, from the campaign's link template."""
        if not self.link_template:
            return None
        return self.link_template.replace("{id}", quote(str(item_id), safe=""))

    def to_dict(self, *, admin: bool = True) -> dict[str, Any]:
        """The campaign as JSON; for a non-admin, a blind campaign keeps how its items were chosen
        to itself (``flagged`` at a threshold would tell every item's prediction)."""
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "id"}
        out["created_at"] = self.created_at.isoformat()
        out["label_choices"] = self.label_choices
        if self.blind and not admin:
            out["selection"] = {}
        return out


def _campaign(row: sa.Row) -> Campaign:
    return Campaign(**{k: getattr(row, k) for k in Campaign.__dataclass_fields__})


def get_campaign(engine: Engine, name: str) -> Campaign:
    with engine.connect() as conn:
        row = conn.execute(sa.select(tables.campaigns).where(tables.campaigns.c.name == name)).first()
    if row is None:
        raise NotFound(f"no campaign named {name!r}", field="campaign", code="unknown_campaign")
    return _campaign(row)


def list_campaigns(engine: Engine) -> list[Campaign]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(tables.campaigns).order_by(tables.campaigns.c.created_at.desc())).all()
    return [_campaign(r) for r in rows]


def set_status(engine: Engine, campaign: Campaign, status: str) -> None:
    """Open or close a campaign; a closed one hands out no worksets and takes no labels."""
    if status not in ("open", "closed"):
        raise InvalidInput(f"status must be 'open' or 'closed'; got {status!r}", field="status")
    with engine.begin() as conn:
        conn.execute(
            sa.update(tables.campaigns).where(tables.campaigns.c.id == campaign.id).values(status=status)
        )


MAX_GUIDELINES = 20_000
MAX_CLASS_DESCRIPTION = 500


@dataclass(frozen=True)
class CampaignEdit:
    """What an admin may change in a running campaign (None: leave as it is).

    Not the items, the model or labels per item: those define what the labels
    already given mean. ``extra_labels`` may change: a raised cap requeues the
    items tied at the old one.
    """

    description: str | None = None
    guidelines: str | None = None
    class_descriptions: dict[str, str] | None = None
    extra_labels: int | None = None
    reviewers: list[str] | None = None


def _checked_edit(engine: Engine, campaign: Campaign | None, edit: CampaignEdit) -> dict[str, Any]:
    """The edit's columns, each checked; ``campaign`` None checks a new campaign's settings."""
    values: dict[str, Any] = {}
    if edit.description is not None:
        values["description"] = edit.description.strip()
    if edit.guidelines is not None:
        if len(edit.guidelines) > MAX_GUIDELINES:
            raise InvalidInput(f"guidelines may have at most {MAX_GUIDELINES} characters", field="guidelines")
        values["guidelines"] = edit.guidelines.strip()
    if edit.class_descriptions is not None:
        classes = campaign.classes if campaign else None
        for cls, text in edit.class_descriptions.items():
            if classes is not None and cls not in classes:
                raise InvalidInput(f"no class {cls!r} in this campaign", field="class_descriptions")
            if len(text) > MAX_CLASS_DESCRIPTION:
                raise InvalidInput(
                    f"a class description may have at most {MAX_CLASS_DESCRIPTION} characters",
                    field="class_descriptions",
                )
        values["class_descriptions"] = {c: t.strip() for c, t in edit.class_descriptions.items() if t.strip()}
    if edit.extra_labels is not None:
        if not 0 <= edit.extra_labels <= MAX_EXTRA_LABELS:
            raise InvalidInput(f"extra labels for ties must be 0-{MAX_EXTRA_LABELS}", field="extra_labels")
        values["extra_labels"] = edit.extra_labels
    if edit.reviewers is not None:
        with engine.connect() as conn:
            known = set(
                conn.execute(
                    sa.select(tables.users.c.username).where(tables.users.c.username.in_(edit.reviewers))
                ).scalars()
            )
        unknown = [r for r in edit.reviewers if r not in known]
        if unknown:
            raise InvalidInput(f"no user named {unknown[0]!r}", field="reviewers")
        values["reviewers"] = list(dict.fromkeys(edit.reviewers))
    return values


def edit_campaign(engine: Engine, campaign: Campaign, edit: CampaignEdit) -> Campaign:
    """Change a campaign's guidelines, descriptions, reviewers or tie cap; returns it as stored."""
    values = _checked_edit(engine, campaign, edit)
    if values:
        with engine.begin() as conn:
            conn.execute(
                sa.update(tables.campaigns).where(tables.campaigns.c.id == campaign.id).values(**values)
            )
            if values.get("extra_labels", 0) > campaign.extra_labels:
                # Ties that waited at the old cap get their next label now.
                requeue_ties(conn, dataclasses.replace(campaign, extra_labels=values["extra_labels"]))
    return get_campaign(engine, campaign.name)


def requeue_ties(conn: Connection, campaign: Campaign, item_pks: list[int] | None = None) -> int:
    """Give each tied item whose class labels fill what it wants one more slot, up to the cap.

    An item's votes tie when its two most given classes have as many votes
    ("unsure" is no vote). Called after every label (for that item) and when
    an admin raises the cap (for all items); returns how many items were requeued.
    """
    labels_t, items_t = tables.labels, tables.campaign_items
    query = (
        sa.select(labels_t.c.campaign_item_id, sa.func.count().label("n"))
        .where(labels_t.c.campaign_id == campaign.id, labels_t.c.label != UNSURE)
        .group_by(labels_t.c.campaign_item_id, labels_t.c.label)
    )
    if item_pks is not None:
        query = query.where(labels_t.c.campaign_item_id.in_(item_pks))
    votes: dict[int, list[int]] = {}
    for pk, n in conn.execute(query):
        votes.setdefault(pk, []).append(n)
    wanted = dict(
        conn.execute(
            sa.select(items_t.c.id, items_t.c.wanted).where(
                items_t.c.id.in_(list(votes)), items_t.c.wanted < campaign.max_labels
            )
        ).all()
    )
    tied = [
        pk
        for pk, counts in votes.items()
        if pk in wanted
        and sum(counts) >= wanted[pk]
        and len(counts) > 1
        and sorted(counts)[-2] == max(counts)
    ]
    if tied:
        conn.execute(
            sa.update(items_t)
            .where(items_t.c.id.in_(tied))
            .values(wanted=items_t.c.wanted + 1, available=True)
        )
    return len(tied)


def check_may_label(campaign: Campaign, user: User) -> None:
    if not campaign.is_open:
        raise Conflict(f"campaign {campaign.name!r} is closed", field="campaign", code="campaign_closed")
    if not campaign.may_label(user):
        raise Forbidden(f"{user.username} is not one of the reviewers of campaign {campaign.name!r}")


# --- making a campaign ----------------------------------------------------------

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
    extra_labels: int = 0  # labels an item may get beyond labels_per_item while its votes tie
    reviewers: list[str] = field(default_factory=list)
    blind: bool = False
    auto_rules: list[str] = field(default_factory=list)
    link_template: str | None = None
    description: str = ""
    guidelines: str = ""
    class_descriptions: dict[str, str] = field(default_factory=dict)
    judgment_rule: str = "admin"
    explain: int = 5
    seed: int = 0

    @property
    def settings(self) -> CampaignEdit:
        """The settings an admin may also change later."""
        return CampaignEdit(
            self.description, self.guidelines, self.class_descriptions, self.extra_labels, self.reviewers
        )

    @property
    def rule(self) -> Selection:
        return Selection(self.selection, self.size, self.seed, self.ids, self.threshold, self.flag_class)


def _check(engine: Engine, options: CampaignOptions, served: ServedModel) -> list[AutoRule]:
    """The options' problems as ``InvalidInput``/``Conflict`` before any scoring work; the parsed rules."""
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
    rules = [parse_rule(r, served.names, served.loaded.classes) for r in options.auto_rules if r.strip()]
    unknown = set(options.class_descriptions) - set(served.loaded.classes)
    if unknown:
        raise InvalidInput(
            f"no class {sorted(unknown)[0]!r} in model {served.name!r}", field="class_descriptions"
        )
    with engine.connect() as conn:
        taken = conn.execute(
            sa.select(tables.campaigns.c.id).where(tables.campaigns.c.name == options.name)
        ).first()
    if taken is not None:  # before the scoring work, not only at the insert
        raise Conflict(f"a campaign named {options.name!r} already exists", field="name")
    return rules


def _candidates(ws: Workspace, options: CampaignOptions, served: ServedModel) -> list[tuple[str, dict]]:
    """Every item the source offers, with its features; a source with none is a ``DataError``."""
    source, source_name = options.source, options.source_name or options.source
    if source:
        assert source_name is not None
        candidates = list(file_items(source, options.id_column, served, source_name))
    else:
        candidates = list(table_items(ws, served.name))
    if not candidates:
        where = source_name or f"the feature table of {served.name!r} (load one with 'assay features load')"
        raise DataError(f"no items in {where}", field="source")
    return candidates


def _item_rows(
    chosen: list[tuple[str, dict]],
    item_scores: list[dict[str, Any]],
    served: ServedModel,
    rules: list[AutoRule],
) -> list[dict[str, Any]]:
    """The stored rows of the chosen items: what reviewers see, and the auto-label a rule gives."""
    rows = []
    for position, ((item_id, features), score) in enumerate(zip(chosen, item_scores, strict=True)):
        probabilities, prediction = class_probabilities(served, score)
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
    return rows


def _store(
    engine: Engine, options: CampaignOptions, values: dict[str, Any], rows: list[dict[str, Any]]
) -> None:
    """The campaign and its items in one transaction: nobody sees a campaign half stored."""
    try:
        with engine.begin() as conn:
            campaign_id = conn.execute(
                sa.insert(tables.campaigns).values(**values).returning(tables.campaigns.c.id)
            ).scalar_one()
            for start in range(0, len(rows), _INSERT_CHUNK):
                chunk = [{**r, "campaign_id": campaign_id} for r in rows[start : start + _INSERT_CHUNK]]
                conn.execute(sa.insert(tables.campaign_items), chunk)
    except sa.exc.IntegrityError as exc:
        raise Conflict(f"a campaign named {options.name!r} already exists", field="name") from exc


def create_campaign(ws: Workspace, scorer: Scorer, options: CampaignOptions, *, created_by: str) -> Campaign:
    """Choose, score and store a campaign's items; the campaign is visible only once all are stored."""
    served = scorer.model(options.model)
    ref = f"{served.name}@{served.version}"  # pinned: an alias moving mid-creation changes nothing
    rules = _check(ws.engine, options, served)
    edit_values = _checked_edit(ws.engine, None, options.settings)
    chosen, selection = select(scorer, ref, served, options.rule, _candidates(ws, options, served))
    selection["source"] = options.source_name or options.source or "feature table"
    if options.size is not None:
        selection["size"] = options.size
    if not chosen:
        raise InvalidInput("the selection chose no items", field="selection")
    rows = _item_rows(chosen, scores(scorer, ref, chosen, explain=options.explain), served, rules)
    for row in rows:
        row["wanted"] = options.labels_per_item
    values = {
        "name": options.name,
        "model": served.name,
        "model_version": served.version,
        "classes": list(served.loaded.classes),
        "labels_per_item": options.labels_per_item,
        **edit_values,
        "blind": options.blind,
        "selection": selection,
        "auto_rules": [r.text for r in rules],
        "link_template": options.link_template or None,
        "judgment_rule": options.judgment_rule,
        "status": "open",
        "item_count": len(rows),
        "created_by": created_by,
        "created_at": db.now(),
    }
    _store(ws.engine, options, values, rows)
    return get_campaign(ws.engine, options.name)


def parse_list(text: str) -> list[str]:
    """Ids or names separated by commas, spaces or newlines (form fields, CLI options)."""
    return [part for part in re.split(r"[\s,]+", text or "") if part]
