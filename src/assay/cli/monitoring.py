"""CLI commands of monitoring: ``assay log``, ``assay monitor`` and ``assay labels load``.

``log export`` writes logged scores out, ``log import`` scores a file through the scorer and logs
it with the file's own times (a backfill, or a batch scored offline); ``monitor report`` prints a
summary and writes the HTML report, ``monitor check`` judges the windows closed since the last
check (what ``assay serve`` does every ``monitor_interval_s``) and ``monitor status`` lists the
monitors' states; ``labels load`` adds ground truth from a file.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import orjson

from assay.cli import main, pass_workspace
from assay.cli.review import labels_group
from assay.engines.engine import ENGINES, open_engine
from assay.errors import DataError, InvalidInput
from assay.registry.refs import parse_ref, version_number

if TYPE_CHECKING:
    import pandas as pd

    from assay.workspace import Workspace

# Monitoring's statistics (scipy, scikit-learn, matplotlib) and file reading (pandas) are imported
# by the commands that use them, so that every other command starts fast.


def _period(since: str | None, until: str | None) -> tuple[float | None, float | None]:
    from assay.monitoring.windows import parse_time

    now = time.time()
    return (
        parse_time(since, now=now, field="--since") if since else None,
        parse_time(until, now=now, field="--until") if until else None,
    )


# --- assay log ---------------------------------------------------------------------------------


@main.group("log")
def log_group() -> None:
    """The prediction log: every score the server computed, kept for monitoring."""


@log_group.command("export")
@click.argument("model")
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False), required=True, help=".csv, .parquet or .jsonl"
)
@click.option(
    "--since", default=None, help="From this time: ISO date/time, a duration back (7d) or UNIX seconds."
)
@click.option("--until", default=None, help="Before this time (same forms).")
@pass_workspace
def log_export_command(ws: Workspace, model: str, output: str, since: str | None, until: str | None) -> None:
    """Write MODEL's logged scores (MODEL@3 for one version) with decoded features to a file."""
    from assay.monitoring import frames
    from assay.monitoring.frames import frame_of

    name, which = parse_ref(model)
    versions = sorted(ws.log.versions(name))
    if which is not None:
        number = version_number(which)
        number = number if number is not None else ws.registry.resolve(model).version
        versions = [v for v in versions if v == number]
    start, end = _period(since, until)
    rows = []
    for version in versions:
        loaded = ws.registry.load(ws.registry.get(name, version))
        frame = frame_of(loaded, ws.log, since=start, until=end, with_ids=True)
        rows.append(frames.decoded(loaded, frame))
    n = frames.export_log(rows, Path(output))
    click.echo(
        f"wrote {n} logged scores of {name} ({', '.join(map(str, versions)) or 'no versions'}) to {output}"
    )


@log_group.command("import")
@click.argument("model")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--time-column", default=None, help="Column with each row's time (ISO or UNIX seconds); default now."
)
@click.option(
    "--id-column", default=None, help="Column with item ids (default: the spec's data.id if present)."
)
@click.option(
    "--header/--no-header", default=True, help="Without a header, the spec's data.columns name them."
)
@pass_workspace
def log_import_command(
    ws: Workspace, model: str, path: str, time_column: str | None, id_column: str | None, header: bool
) -> None:
    """Score the rows of PATH with MODEL (the one scoring path) and log them at their own times."""
    from assay.serving.cache import MemoryCache
    from assay.serving.features import FeatureTable
    from assay.serving.scoring import Scorer

    scorer = Scorer(ws.registry, FeatureTable(ws.engine), MemoryCache(1))
    served = scorer.model(model)
    data_spec = dict(served.loaded.record.spec.get("data") or {})
    columns = None if header else (data_spec.get("columns") or None)
    if not header and columns is None:
        raise InvalidInput(
            "--no-header needs a spec that names its columns (data.columns)", field="--no-header"
        )
    from assay.modelling.datasets import read_table

    frame = read_table(path, header=header, columns=columns)
    id_column = id_column or (data_spec.get("id") if data_spec.get("id") in frame.columns else None)
    if id_column is not None and id_column not in frame.columns:
        raise InvalidInput(f"{path}: no column {id_column!r}", field="--id-column")
    at = _times(frame, time_column, path)
    ids = frame[id_column].astype(str).tolist() if id_column else None
    scored = scorer.score_frame(model, frame, id_column=id_column or frame.columns[0])
    classes = served.loaded.classes
    proba = scored[[f"probability_{c}" for c in classes]].to_numpy(dtype=float)
    X = served.loaded.schema.encode_frame(frame, source=path, strict=True)
    n = ws.log.write(served.name, served.version, at, ids, X, proba)
    click.echo(f"logged {n} rows of {path} as {served.name}@{served.version}")


def _times(frame: pd.DataFrame, column: str | None, path: str) -> Any:
    if column is None:
        return time.time()
    if column not in frame.columns:
        raise InvalidInput(f"{path}: no column {column!r}", field="--time-column")
    raw = frame[column]
    import pandas as pd

    numeric = pd.to_numeric(raw, errors="coerce")
    if numeric.notna().all():
        return numeric.to_numpy(dtype=float)
    parsed = pd.to_datetime(raw, utc=True, errors="coerce", format="mixed")
    if parsed.isna().any():
        bad = raw[parsed.isna()].iloc[0]
        raise DataError(f"{path}: column {column!r} holds {bad!r}, which is not a time", field=column)
    return (parsed - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy()


@log_group.command("stats")
@pass_workspace
def log_stats_command(ws: Workspace) -> None:
    """Logged rows per model and version."""
    found = False
    for info in ws.registry.models():
        for version, n in sorted(ws.log.versions(info.name).items()):
            click.echo(f"{info.name}@{version}\t{n}")
            found = True
    if not found:
        click.echo("nothing logged yet")


# --- assay monitor -------------------------------------------------------------------------------


@main.group("monitor")
def monitor_group() -> None:
    """Drift, performance and alerts of served models."""


@monitor_group.command("report")
@click.argument("model")
@click.option(
    "--since", default=None, help="From this time: ISO date/time, a duration back (7d) or UNIX seconds."
)
@click.option("--until", default=None, help="Before this time (same forms); default now.")
@click.option(
    "--window", default=None, help="Window: a duration (1h, 1d) or a number of rows; default the spec's."
)
@click.option("--psi", is_flag=True, help="Add each column's population stability index.")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    default=None,
    help="The HTML report (default MODEL-monitoring.html).",
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write the analysis as JSON.",
)
@click.option(
    "--engine",
    type=click.Choice(ENGINES),
    default=None,
    help="Where the windows' drift tests run (ASSAY_ENGINE).",
)
@pass_workspace
def monitor_report_command(
    ws: Workspace,
    model: str,
    since: str | None,
    until: str | None,
    window: str | None,
    psi: bool,
    output: str | None,
    json_path: str | None,
    engine: str | None,
) -> None:
    """Print MODEL's drift, performance and alerts over a period and write the HTML report."""
    from assay.monitoring import labels, monitor, report

    start, end = _period(since, until)
    name, _ = parse_ref(model)
    analysis = monitor.analyse(
        ws.engine,
        ws.log,
        ws.registry,
        model,
        since=start,
        until=end,
        window=window,
        with_psi=psi,
        extra_labels=labels.campaign_labels(ws.engine, name),
        work=open_engine(engine or ws.settings.engine, ws.settings.ray_address),
    )
    html_path = Path(output or f"{name}-monitoring.html")
    html_path.parent.mkdir(parents=True, exist_ok=True)
    html_path.write_text(report.render_html(analysis), encoding="utf-8")
    if json_path:
        Path(json_path).write_bytes(orjson.dumps(analysis.to_dict(), option=orjson.OPT_SERIALIZE_NUMPY))
    click.echo(report.summary_text(analysis, html_path))


@monitor_group.command("check")
@click.argument("model", required=False)
@pass_workspace
def monitor_check_command(ws: Workspace, model: str | None) -> None:
    """Judge the windows closed since the last check (every production model, or MODEL) and send alerts."""
    from assay.monitoring import alerts, checks, labels

    names = [model] if model else checks.watched_models(ws.registry)
    for name in names:
        result = checks.check(
            ws.engine,
            ws.log,
            ws.registry,
            name,
            extra_labels=partial(labels.campaign_labels, ws.engine, name),
        )
        if result.skipped:
            click.echo(f"{name}: {result.skipped}")
            continue
        click.echo(f"{name}@{result.version}: {result.windows} window(s) judged")
        for t in result.transitions:
            click.echo(f"  {t['monitor']}: {t['from']} -> {t['to']} (window {t['window_start'][:16]})")
    sender = alerts.sender_from(ws.settings, ws.engine)
    sent = sender.deliver_pending()
    if sender.urls:
        click.echo(f"{sent} alert(s) delivered to {len(sender.urls)} webhook(s)")


@monitor_group.command("status")
@click.argument("model", required=False)
@click.option("--events", "n_events", type=int, default=10, show_default=True, help="Latest events to list.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_workspace
def monitor_status_command(ws: Workspace, model: str | None, n_events: int, as_json: bool) -> None:
    """Every monitor's state (ok / warning / alert) and the latest events."""
    from assay.monitoring import alerts

    states = alerts.states(ws.engine, model)
    events = alerts.events(ws.engine, model, limit=n_events) if n_events > 0 else []
    if as_json:
        click.echo(orjson.dumps({"monitors": states, "events": events}, option=orjson.OPT_INDENT_2).decode())
        return
    if not states:
        click.echo("no monitor has judged a window yet (assay monitor check, or assay serve, does)")
    for s in states:
        value = "" if s["value"] is None else f"  {s['value']:.4g}"
        click.echo(f"{s['model']:<20} {s['monitor']:<40} {s['state']:<8}{value}")
    if events:
        click.echo("latest events:")
        for e in events:
            click.echo(
                f"  {e['at'][:19]} {e['model']} {e['monitor']}: {e['from'] or '-'} -> {e['to']}"
                + (f" (webhook: {e['delivery']})" if e["delivery"] != "none" else "")
            )


@monitor_group.command("secret")
@pass_workspace
def monitor_secret_command(ws: Workspace) -> None:
    """Print the secret that signs webhook bodies (give it to the receivers)."""
    from assay.monitoring import alerts

    click.echo(alerts.alert_secret(ws.settings).decode())


# --- assay labels load ----------------------------------------------------------------------------


@labels_group.command("load")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--model", default=None, help="The model the labels are for (else a 'model' column names it).")
@click.option("--id-column", default="id", show_default=True)
@click.option("--label-column", default="label", show_default=True)
@pass_workspace
def labels_load_command(
    ws: Workspace, path: str, model: str | None, id_column: str, label_column: str
) -> None:
    """Add ground-truth labels of served items from a CSV/TSV/Parquet file (id, label[, model])."""
    import pandas as pd

    from assay.modelling.datasets import read_table
    from assay.monitoring import labels

    frame = read_table(path)
    for column in (id_column, label_column):
        if column not in frame.columns:
            raise InvalidInput(f"{path}: no column {column!r}", field=column)
    if model is None and "model" not in frame.columns:
        raise InvalidInput(f"{path}: name the model with --model or a 'model' column", field="--model")
    models = pd.Series([model] * len(frame)) if model else frame["model"].astype(str)
    known = {info.name for info in ws.registry.models()}
    source = f"file:{Path(path).name}"[:300]
    accepted, refused = 0, 0
    reasons: dict[str, int] = {}
    examples: list[str] = []
    for name, rows in frame.groupby(models.to_numpy(), sort=True):
        items = [{"id": i, "label": v} for i, v in zip(rows[id_column], rows[label_column], strict=True)]
        if name not in known:
            refused += len(items)
            reasons["unknown_model"] = reasons.get("unknown_model", 0) + len(items)
            examples.append(f"model {name!r}: unknown model")
            continue
        outcomes = labels.add_labels(
            ws.engine, ws.log, str(name), items, source=source, classes_of=_classes_of(ws, str(name))
        )
        for o in outcomes:
            if o.accepted:
                accepted += 1
            else:
                refused += 1
                reasons[o.code or "refused"] = reasons.get(o.code or "refused", 0) + 1
                if len(examples) < 5:
                    examples.append(f"row {rows.index[o.index] + 1}: {o.message}")
    click.echo(
        f"{accepted} label(s) stored, {refused} refused" + (f" ({_counts(reasons)})" if reasons else "")
    )
    for line in examples:
        click.echo(f"  {line}")


def _classes_of(ws: Workspace, name: str) -> Any:
    def classes(version: int) -> list[str]:
        return list(ws.registry.card(ws.registry.get(name, version))["classes"])

    return classes


def _counts(reasons: dict[str, int]) -> str:
    return ", ".join(f"{code}: {n}" for code, n in sorted(reasons.items()))
