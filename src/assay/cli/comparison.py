"""CLI commands that judge one version against another: compare and promote."""

from __future__ import annotations

import functools
import getpass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import orjson

from assay.cli import main, pass_workspace
from assay.cli.models import _num, _table
from assay.modelling.significance import DEFAULT_RESAMPLES

if TYPE_CHECKING:
    from assay.modelling.comparison import Comparison, Rows
    from assay.workspace import Workspace

# Comparing scores versions (scikit-learn, LightGBM, matplotlib): imported by the commands that do.
# How many bootstrap resamples a comparison draws (assay compare, assay retrain).
resamples_option = click.option(
    "--resamples",
    default=DEFAULT_RESAMPLES,
    show_default=True,
    type=click.IntRange(100, 100_000),
    help="Bootstrap resamples of the comparison.",
)


def print_comparison(c: Comparison) -> None:
    """Every statistic side by side, the paired tests, and the one-line verdict."""
    click.echo(f"{c.a} vs {c.b} on {c.n} labelled rows of {c.source}")
    click.echo("classes: " + ", ".join(f"{k}={v}" for k, v in c.counts.items()))
    rows = []
    for stat, row in c.stats.items():
        ci = row.get("ci")
        interval = f"{ci[0]:+.4f} .. {ci[1]:+.4f}" if ci and ci[0] == ci[0] else ""
        diff = row.get("difference")
        rows.append(
            [stat, _num(row["a"], 4), _num(row["b"], 4), "" if diff is None else f"{diff:+.4f}", interval,
             _num(row.get("p_value"), 4) if "p_value" in row else ""]
        )  # fmt: skip
    click.echo("\n" + _table(["statistic", c.a, c.b, "b - a", "95% interval", "p"], rows))
    ops = [
        [op["name"], _num(op["threshold"]["a"], 4), _num(op["threshold"]["b"], 4), op["mcnemar"]["only_a_right"],
         op["mcnemar"]["only_b_right"], _num(op["mcnemar"]["p_value"], 4)]
        for op in c.operating_points
    ]  # fmt: skip
    click.echo("\nMcNemar at each operating point (each version at its own threshold):")
    click.echo(_table(["operating point", f"threshold {c.a}", f"threshold {c.b}", f"only {c.a} right",
                       f"only {c.b} right", "p"], ops))  # fmt: skip
    cv = c.cross_validation
    if cv["test"]:
        t = cv["test"]
        click.echo(
            f"\ncorrected repeated cross-validation t-test (Nadeau-Bengio), {t['folds']} shared folds of "
            f"{cv['metric']}: mean difference {t['mean_difference']:+.4f}, t={t['t']:.3f}, p={t['p_value']:.4f}"
        )
    else:
        click.echo(f"\nno corrected cross-validation t-test: {cv['why_not']}")
    click.echo(f"decisions agree on {100 * c.agreement:.1f}% of rows")
    click.echo(f"verdict: {c.verdict()}")


@main.command("compare")
@click.argument("first", metavar="MODEL@A")
@click.argument("second", metavar="MODEL@B")
@click.option(
    "--data",
    "data",
    type=click.Path(dir_okay=False),
    help="Labelled rows to compare on (default: the newer version's held-out data).",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False),
    help="Write the report: .html (tables and box plots) or .png (plots).",
)
@resamples_option
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
@click.option(
    "--shadow",
    is_flag=True,
    help="Score B on the traffic A served (the prediction log): agreement, and both on the labelled items.",
)
@click.option("--since", default=None, help="With --shadow: only traffic of this last period (e.g. 7d).")
@pass_workspace
def compare_command(
    ws: Workspace, first: str, second: str, data: str | None, output: str | None, resamples: int, as_json: bool,
    shadow: bool, since: str | None,
) -> None:  # fmt: skip
    """Score two versions on the same labelled rows and compare them with paired statistics."""
    from assay.modelling.comparison import file_rows
    from assay.modelling.promotion import challenge, newer
    from assay.review.resolution import resolved_labels

    if shadow:
        comparison = _shadow(ws, first, second, since, resamples, as_json)
    else:
        a, b = ws.registry.resolve(first), ws.registry.resolve(second)
        rows: Rows | None = file_rows(newer(a, b), data) if data else None
        comparison = challenge(
            ws.registry, a, b, rows=rows, campaign_labels=functools.partial(resolved_labels, ws.engine),
            resamples=resamples,
        )  # fmt: skip
        if as_json:
            click.echo(
                orjson.dumps(
                    comparison.to_dict(), option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY
                ).decode()
            )
    if comparison is not None and not as_json:
        print_comparison(comparison)
    if output and comparison is not None:
        from assay.modelling.comparison_report import write_report

        click.echo(f"report: {write_report(comparison, Path(output))}", err=as_json)


def _shadow(ws: Workspace, first: str, second: str, since: str | None, resamples: int, as_json: bool) -> Any:
    """``--shadow``: B on the traffic A served; returns the labelled comparison, if there is one."""
    import time

    from assay.modelling.spec import parse_duration
    from assay.retraining.shadow import shadow

    try:
        start = None if since is None else time.time() - parse_duration(since)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    model = first.partition("@")[0]
    result = shadow(ws.registry, ws.engine, ws.log, model, champion_ref=first, challenger_ref=second, since=start,
                    resamples=resamples)  # fmt: skip
    if as_json:
        click.echo(
            orjson.dumps(result.to_dict(), option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY).decode()
        )
        return result.labelled
    agreement = "-" if result.agreement is None else f"{100 * result.agreement:.1f}%"
    click.echo(
        f"shadow: {result.challenger} scored on {result.rows} logged rows {result.champion} served; "
        f"decisions agree on {agreement}; {result.labelled_rows} of them labelled"
    )
    if result.why_not:
        click.echo(f"no comparison on labelled items yet: {result.why_not}")
    return result.labelled


@main.command("promote")
@click.argument("model")
@click.argument("version", type=int)
@click.option("--alias", default="production", show_default=True)
@click.option("--force", is_flag=True, help="Move the alias even if gates fail (needs --reason).")
@click.option("--reason", default="", help="Why; recorded with the move.")
@click.option(
    "--data",
    "data",
    type=click.Path(dir_okay=False),
    help="Labelled rows to compare the two versions on (default: the newer version's held-out data).",
)
@pass_workspace
def promote_command(
    ws: Workspace, model: str, version: int, alias: str, force: bool, reason: str, data: str | None
) -> None:  # fmt: skip
    """Point an alias at a version if its gates pass against the version holding the alias, both
    scored on the same rows (with no gates declared: unless it is significantly worse)."""
    from assay.modelling.comparison import file_rows
    from assay.modelling.promotion import promote
    from assay.review.resolution import resolved_labels

    rows: Any = None
    if data:
        record = ws.registry.get(model, version)
        rows = functools.partial(file_rows, record, data)
    outcome = promote(
        ws.registry, model, version, alias=alias, actor=getpass.getuser(), reason=reason, force=force, rows=rows,
        campaign_labels=functools.partial(resolved_labels, ws.engine),
    )  # fmt: skip
    if outcome.comparison is not None:
        click.echo(f"compared with {outcome.comparison.a}: {outcome.comparison.verdict()}")
    for r in outcome.results:
        click.echo(("pass  " if r["passed"] else "FAIL  ") + r["message"])
    click.echo(f"{alias} -> {model}@{version}" + (" (forced)" if force else ""))
