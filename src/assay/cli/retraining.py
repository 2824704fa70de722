"""CLI command of continuous training: ``assay retrain`` (its runs show in ``assay history``)."""

from __future__ import annotations

import getpass
import sys
from typing import TYPE_CHECKING

import click

from assay.cli import main, pass_workspace
from assay.cli.comparison import resamples_option

if TYPE_CHECKING:
    from assay.retraining.retrain import Outcome
    from assay.workspace import Workspace


def _progress(message: str) -> None:
    click.secho(message, err=True, dim=message.startswith("  "))


def _report(outcome: Outcome) -> None:
    where = f"run {outcome.run_id}: " if outcome.run_id is not None else ""
    click.echo(where + outcome.message)
    if outcome.challenger is not None and outcome.champion is not None:
        click.echo(f"explain: assay compare {outcome.champion.ref} {outcome.challenger.ref}")


@main.command("retrain")
@click.argument("model")
@click.option(
    "--min-new-labels",
    default=0,
    type=click.IntRange(0),
    help="Run only when at least this many labels arrived since the last run that trained (or the production version).",
)
@click.option("--on-alert", is_flag=True, help="Run only while a monitor of the model is in alert.")
@click.option(
    "--every",
    "every",
    default=None,
    help="Keep running: one run per period (e.g. 7d, 12h), each checking the triggers.",
)
@click.option(
    "--promote-equal",
    is_flag=True,
    help="Promote a challenger that is not significantly worse (default: only a significantly better one).",
)
@resamples_option
@pass_workspace
def retrain_command(
    ws: Workspace, model: str, min_new_labels: int, on_alert: bool, every: str | None, promote_equal: bool,
    resamples: int,
) -> None:  # fmt: skip
    """Re-run the production version's spec on the data as it is now; promote the challenger only
    if, on the same rows, it is significantly better than the production version and passes its gates."""
    # Training pulls in scikit-learn, LightGBM and pandas: imported when a run starts.
    from assay.modelling.spec import parse_duration
    from assay.retraining.retrain import Triggers, retrain, retrain_every

    name = "schedule" if every else "manual"
    triggers = Triggers(min_new_labels=min_new_labels, on_alert=on_alert, name=name)
    if every is not None:
        try:
            period = parse_duration(every)
        except ValueError:
            raise click.BadParameter(
                f"{every!r} is not a duration like 12h, 1d or 7d", param_hint="--every"
            ) from None
        retrain_every(
            ws, model, period, actor=getpass.getuser(), triggers=triggers, resamples=resamples,
            require_better=not promote_equal, report=_report,
        )  # fmt: skip
        return
    outcome = retrain(
        ws, model, actor=getpass.getuser(), triggers=triggers, resamples=resamples,
        require_better=not promote_equal, progress=_progress,
    )  # fmt: skip
    _report(outcome)
    if outcome.status in ("refused", "failed"):
        sys.exit(1)
