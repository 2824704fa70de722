"""CLI commands of model development: train, list, show, thresholds, history, export and import."""

from __future__ import annotations

import functools
import getpass
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import orjson

from assay.cli import main, pass_workspace
from assay.engines.engine import ENGINES, open_engine
from assay.errors import InvalidInput
from assay.registry.contracts import CONSTRAINT_STAT
from assay.settings import Settings

if TYPE_CHECKING:
    from assay.workspace import Workspace


def _progress(message: str) -> None:
    click.secho(message, err=True, dim=message.startswith("  "))


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    cells = [[str(h) for h in header]] + [[_num(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


@main.command("train")
@click.argument("spec_path", metavar="SPEC", type=click.Path(dir_okay=False))
@click.option(
    "--engine", type=click.Choice(ENGINES), default=None, help="Where folds and trials run (ASSAY_ENGINE)."
)
@pass_workspace
def train_command(ws: Workspace, spec_path: str, engine: str | None) -> None:
    """Train the model a TOML spec describes and register a new version."""
    # Modelling pulls in scikit-learn, LightGBM and matplotlib: imported by the commands that use them.
    from assay.modelling.selection import no_better_than_prior
    from assay.modelling.spec_file import load_spec
    from assay.modelling.training import train
    from assay.review.resolution import resolved_labels
    from assay.unlearning.sharding import training_options

    spec = load_spec(spec_path)
    result = train(
        spec,
        ws.registry,
        progress=_progress,
        actor=getpass.getuser(),
        campaign_labels=functools.partial(resolved_labels, ws.engine),
        engine=open_engine(engine or ws.settings.engine, ws.settings.ray_address, ws.settings.train_jobs),
        **training_options(ws.engine, spec),
    )
    metric = spec.training.metric
    click.echo("\ncandidates (cross-validated on the training data):")
    click.echo(
        _table(
            ["candidate", f"mean {metric}", "min", "max", "mean fit s", *_COST_HEADER, ""],
            [
                [
                    c.candidate,
                    c.mean_score,
                    min(c.fold_scores),
                    max(c.fold_scores),
                    c.mean_fit_time,
                    *_cost_cells(c.serving),
                    "NO BETTER THAN THE PRIOR"
                    if no_better_than_prior(c.mean_score, result.prior_score)
                    else "",
                ]
                for c in sorted(result.comparison, key=lambda c: -c.mean_score)
            ],
        )
    )
    click.echo(f"prior (predicting the class frequencies): mean {metric}={_num(result.prior_score)}")
    record = result.record
    click.echo(
        f"\nchosen: {result.winner.candidate} -> {record.ref} "
        f"(refit on all {record.lineage['train_rows']} training rows in {record.lineage['refit_s']:.2f}s)"
    )
    click.echo(f"hyperparameters: {_params(result.winner.params)}")
    _print_summary(record.summary)
    aliases = ", ".join(f"{a}={v}" for a, v in sorted(ws.registry.aliases(record.model).items()))
    click.echo(f"aliases: {aliases}")
    click.echo(f"model card: {record.directory / 'card.html'}")


_COST_HEADER = ["1 row µs", "1,000 rows ms", "served by"]


def _cost_cells(cost: Mapping[str, Any] | None) -> list[Any]:
    """What one row and 1,000 rows cost to predict as served, and what serves them."""
    if not cost:
        return ["-", "-", "-"]
    return [_num(cost["predict_us"], 0), _num(cost["batch_us"] / 1000, 1), cost["runtime"]]


def _comparison_table(comparison: list[dict[str, Any]], metric: str) -> str:
    """Candidates by score, with their serving cost (as a version's card recorded them)."""
    rows = [
        [
            c["candidate"],
            c["mean_score"],
            min(c["fold_scores"]),
            max(c["fold_scores"]),
            c["mean_fit_time"],
            *_cost_cells(c.get("serving")),
        ]
        for c in sorted(comparison, key=lambda c: -c["mean_score"])
    ]
    return _table(["candidate", f"mean {metric}", "min", "max", "mean fit s", *_COST_HEADER], rows)


def _served_by(inference: Mapping[str, Any]) -> str:
    """How a version's probabilities are computed, and how closely they match the estimator's."""
    runtime, diff = inference["runtime"], inference["max_abs_diff"]
    if runtime == "reference":
        return f"the estimator itself ({inference['reason']})"
    if diff is None:
        return f"{runtime} (the model as trained)"
    return f"compiled {runtime} (largest difference from the estimator on held-out rows: {diff:.3g})"


def _params(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(params.items())) or "-"


def _print_summary(summary: dict[str, Any]) -> None:
    keys = ["roc_auc", "pr_auc", "f1", "precision", "recall", "accuracy", "brier"]
    click.echo("held-out: " + "  ".join(f"{k}={_num(summary.get(k))}" for k in keys))
    for stat, value in (summary.get("fairness") or {}).items():
        click.echo(f"fairness: worst {stat}={_num(value)}")


@main.command("models")
@pass_workspace
def models_command(ws: Workspace) -> None:
    """List models, their versions and aliases."""
    rows = [
        [
            m.name,
            m.task,
            ", ".join(map(str, m.versions)),
            ", ".join(f"{a}={v}" for a, v in sorted(m.aliases.items())),
        ]
        for m in ws.registry.models()
    ]
    click.echo(_table(["model", "task", "versions", "aliases"], rows) if rows else "no models yet")


@main.command("show")
@click.argument("ref", metavar="MODEL[@VERSION|ALIAS]")
@click.option("--json", "as_json", is_flag=True, help="Print the full evaluation as JSON.")
@pass_workspace
def show_command(ws: Workspace, ref: str, as_json: bool) -> None:
    """Show a version's statistics, fairness, operating points and lineage."""
    record = ws.registry.resolve(ref)
    card = ws.registry.card(record)
    if as_json:
        shown: dict[str, Any] = {
            **card,
            "aliases": ws.registry.aliases(record.model),
            "history": ws.registry.history(record.model),
        }
        click.echo(orjson.dumps(shown, option=orjson.OPT_INDENT_2).decode())
        return
    aliases = [a for a, v in ws.registry.aliases(record.model).items() if v == record.version]
    click.echo(
        f"{record.ref}  {card['candidate']}  created {record.created_at:%Y-%m-%d %H:%M}  aliases: {', '.join(aliases) or '-'}"
    )
    sections = (
        _show_training,
        _show_statistics,
        _show_decisions,
        _show_fairness,
        _show_mitigation,
        _show_lineage,
    )
    for section in sections:
        section(card)
    click.echo(f"model card: {record.directory / 'card.html'}")


def _show_training(card: Mapping[str, Any]) -> None:
    if card["description"]:
        click.echo(card["description"])
    click.echo(f"hyperparameters: {_params(card['params'])}")
    search = card["search"]
    if search:
        # Versions trained before the trial cap recorded neither the cap nor the cut.
        click.echo(
            f"search: {search['trials']} of {search.get('max_trials', '?')} trials"
            + (f", cut short by the {search['budget_s']:g}s budget" if search.get("cut_short") else "")
        )


def _show_statistics(card: Mapping[str, Any]) -> None:
    ev = card["evaluation"]
    click.echo(f"held-out rows: {ev['n']}  counts: " + ", ".join(f"{k}={v}" for k, v in ev["counts"].items()))
    # The share of items classified correctly; the averaged rows below are one-vs-rest statistics.
    click.echo(
        f"accuracy={_num(ev['accuracy'])}  log loss={_num(ev.get('log_loss'), 4)}"
        f"  brier={_num(ev['calibration']['brier'], 4)}"
    )
    stats = ["precision", "recall", "f1", "match_rate", "filter_rate", "fpr", "roc_auc", "pr_auc"]
    rows = [[cls, *[s[k] for k in stats]] for cls, s in ev["per_class"].items()]
    rows += [["micro", *[ev["micro"][k] for k in stats]], ["macro", *[ev["macro"][k] for k in stats]]]
    click.echo("\n" + _table(["label", *stats], rows))
    cm = ev["confusion_matrix"]
    click.echo("\nconfusion matrix (rows: true, columns: predicted)")
    click.echo(
        _table(
            ["", *cm["labels"]],
            [[label, *row] for label, row in zip(cm["labels"], cm["matrix"], strict=True)],
        )
    )


def _show_fairness(card: Mapping[str, Any]) -> None:
    for attr, by_class in card["evaluation"]["fairness"].items():
        for cls, block in by_class.items():
            _print_fairness(f"fairness by {attr} (class {cls}) at the decision", block)
    for point, by_attribute in card.get("fairness_at_operating_points", {}).items():
        op = card["operating_points"][point]
        for attr, block in by_attribute.items():
            _print_fairness(f"fairness by {attr} at operating point {point} (class {op['class']})", block)


def _show_mitigation(card: Mapping[str, Any]) -> None:
    """The mitigation's trade-off at the decision and at each operating point, and its group thresholds."""
    m = card.get("mitigation")
    if not m:
        return
    stat = CONSTRAINT_STAT[m["constraint"]]
    click.echo(f"\nmitigation: {m['method']} ({m['constraint']} by {m['attribute']}), on the held-out rows:")
    rows = [["decision", 0.5, "per group" if "thresholds" in m else 0.5, m["before"], m["after"]]]
    for name, at in m.get("operating_points", {}).items():
        rows.append(
            [name, at["threshold_before"], at.get("threshold_after", "per group"), at["before"], at["after"]]
        )
    click.echo(
        _table(
            ["at", "threshold", "mitigated", "accuracy", "mitigated", stat.replace("_", " "), "mitigated"],
            [[n, t, u, b["accuracy"], a["accuracy"], b[stat], a[stat]] for n, t, u, b, a in rows],
        )
    )
    if "thresholds" in m:
        points = m.get("operating_points", {})
        groups = [
            [g, t, *[p["thresholds"].get(g) for p in points.values()]] for g, t in m["thresholds"].items()
        ]
        if "fallback_threshold" in m:
            fallbacks = [p["fallback_threshold"] for p in points.values()]
            groups.append(["(no known group)", m["fallback_threshold"], *fallbacks])
        click.echo(f"per-group thresholds (the scorer decides each item at its {m['attribute']} group's):")
        click.echo(_table(["group", "decision", *points], groups))


def _show_decisions(card: Mapping[str, Any]) -> None:
    for name, op in card["operating_points"].items():
        answer = op["answer"]
        click.echo(
            f"\noperating point {name} (class {op['class']}): {op['query']} -> "
            + (f"threshold {answer['threshold']:.4f}" if answer else "no threshold satisfies it")
        )
    if card["importance"]:
        click.echo("\nfeature importance (drop in ROC-AUC when shuffled):")
        click.echo(
            _table(
                ["feature", "importance", "std"],
                [[i["feature"], i["importance"], i["std"]] for i in card["importance"]],
            )
        )


def _show_lineage(card: Mapping[str, Any]) -> None:
    click.echo("\ncandidates (cross-validated on the training data):")
    click.echo(_comparison_table(card["comparison"], card["metric"]))
    lin = card["lineage"]
    inference = lin.get("inference")
    if inference is not None:
        click.echo(f"\nserved by: {_served_by(inference)}")
    click.echo(
        f"\nlineage: data {lin['data_fingerprint'][:16]}  spec {lin['spec_hash'][:16]}  seed {lin['seed']}  "
        f"assay {lin['assay']}  " + " ".join(f"{k} {v}" for k, v in lin["libraries"].items())
    )


FAIRNESS_SHOWN = (
    "demographic_parity_difference",
    "equalized_odds_difference",
    "demographic_parity_ratio",
    "equalized_odds_ratio",
)


def _print_fairness(title: str, block: Mapping[str, Any]) -> None:
    """One fairness block: its disparities with their intervals, then a row per group."""
    click.echo(f"\n{title}")
    intervals = block.get("intervals") or {}
    confidence = f"{block.get('confidence', 0.95):.0%}"
    for stat in FAIRNESS_SHOWN:
        interval = intervals.get(stat)
        shown = f" ({confidence} CI {_num(interval[0])}-{_num(interval[1])})" if interval else ""
        click.echo(f"  {stat.replace('_', ' ')}={_num(block[stat])}{shown}")
    if block.get("excluded_groups"):
        click.echo(
            f"  warning: not compared (fewer than {block['min_group_size']} rows): "
            + ", ".join(block["excluded_groups"])
        )
    columns = ["count", "selection_rate", "tpr", "fpr", "fnr", "precision", "brier"]
    rows = [[g, *[s.get(c) for c in columns]] for g, s in block["groups"].items()]
    click.echo(_table(["group", *columns], rows))


@main.command("thresholds")
@click.argument("ref", metavar="MODEL[@VERSION|ALIAS]")
@click.argument("query")
@click.option(
    "--label", "label", default=None, help="Class the query is about (default: the positive class)."
)
@pass_workspace
def thresholds_command(ws: Workspace, ref: str, query: str, label: str | None) -> None:
    """Answer a threshold query, e.g. "maximum recall @ precision >= 0.9"."""
    record = ws.registry.resolve(ref)
    ev = ws.registry.evaluation(record)
    label = label or ev["positive"]
    if label is None:
        raise InvalidInput(
            f"{record.ref} is multi-class: name the class with --label ({', '.join(ev['classes'])})"
        )
    if label not in ev["thresholds"]:
        raise InvalidInput(
            f"unknown label {label!r}; labels are {', '.join(ev['thresholds'])}", field="label"
        )
    from assay.modelling.queries import answer_threshold_query

    answer = answer_threshold_query(ev["thresholds"][label], query)
    if answer is None:
        click.echo(f'no threshold satisfies "{query}" for {record.ref} (label {label})')
        raise SystemExit(2)
    click.echo(f'{record.ref} label {label}: "{query}"')
    click.echo(_table(["statistic", "value"], [[k, v] for k, v in answer.items()]))


@main.command("history")
@click.argument("model")
@pass_workspace
def history_command(ws: Workspace, model: str) -> None:
    """Every alias move of a model (who, when, why) and every retraining run."""
    from assay.retraining import runs

    ws.registry.model(model)
    rows = [
        [
            h["at"][:19],
            h["alias"],
            h["from_version"],
            h["to_version"],
            h["actor"],
            "yes" if h["forced"] else "",
            h["reason"],
        ]
        for h in ws.registry.history(model)
    ]
    click.echo(_table(["at", "alias", "from", "to", "who", "forced", "why"], rows))
    retrains = [
        [
            r.started_at.isoformat()[:19],
            r.id,
            r.trigger,
            r.status,
            r.champion_version,
            r.challenger_version,
            r.message,
        ]
        for r in runs.list_runs(ws.engine, model)
    ]
    if retrains:
        click.echo("\nretraining runs (newest first):")
        click.echo(
            _table(["at", "run", "trigger", "outcome", "champion", "challenger", "decision"], retrains)
        )


@main.command("export")
@click.argument("ref", metavar="MODEL[@VERSION|ALIAS]")
@click.argument("out", type=click.Path(dir_okay=False))
@pass_workspace
def export_command(ws: Workspace, ref: str, out: str) -> None:
    """Write one file that carries a version: artifact, statistics, card and lineage."""
    from assay.registry.files import sha256_file

    record = ws.registry.export(ref, Path(out))
    click.echo(f"exported {record.ref} to {out}")
    # Published beside the file, the hash lets an importer refuse a bundle changed on the way.
    click.echo(f"sha256 {sha256_file(Path(out))}  (import with --sha256 to check it)")


@main.command("import")
@click.argument("bundle", type=click.Path(dir_okay=False))
@click.option("--sha256", "expected", help="Refuse the file unless its SHA-256 is this (the exporter's).")
@pass_workspace
def import_command(ws: Workspace, bundle: str, expected: str | None) -> None:
    """Add a version from an exported file (checked before anything is written)."""
    from assay.registry.importer import import_version

    imported = import_version(ws.registry, Path(bundle), expected_sha256=expected)
    record = imported.record
    if not imported.added:
        click.echo(f"{imported.origin} is already here as {record.ref} (the same bundle): nothing imported")
        return
    renumbered = (
        "" if record.ref == imported.origin else f" (exported as {imported.origin}, whose card it keeps)"
    )
    click.echo(f"imported {record.ref}{renumbered}")
    aliases = [a for a, v in ws.registry.aliases(record.model).items() if v == record.version]
    if not aliases:
        # Importing never moves an alias: name the step that makes `assay show NAME` reach it.
        click.echo(
            f"no alias points at it yet: `assay promote {record.model} {record.version}` makes it production "
            f"(its gates permitting); until then call it {record.ref}"
        )


@main.command("settings")
def settings_command() -> None:
    """List every setting with its environment name, default and help."""
    for env, default, help_text in Settings.describe():
        click.echo(f"{env} (default {default!s:s})\n    {help_text}")


@main.command("quickstart")
@click.pass_context
def quickstart_command(ctx: click.Context) -> None:
    """Train an example model on data scikit-learn ships, and show what assay made of it."""
    from assay.cli import settings_from
    from assay.quickstart import write_example

    settings = settings_from(ctx)
    spec_path = write_example(settings.home / "example")
    click.echo(f"example data and spec written to {spec_path.parent}")
    ctx.invoke(train_command, spec_path=str(spec_path))
    click.echo(
        '\nnext: assay show malignant | assay thresholds malignant "maximum recall @ precision >= 0.9" | assay serve'
    )
