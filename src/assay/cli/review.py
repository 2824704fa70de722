"""CLI commands of human review: users, campaigns and label export."""

from __future__ import annotations

import getpass
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import orjson

from assay.cli import LazyChoice, main, pass_workspace

if TYPE_CHECKING:
    from assay.workspace import Workspace


def _read_password(stdin: bool) -> str:
    if stdin:
        return sys.stdin.readline().rstrip("\n")
    return click.prompt("password", hide_input=True, confirmation_prompt=True)


@main.group("user")
def user_group() -> None:
    """Accounts of the review pages (admins and reviewers)."""


@user_group.command("create")
@click.argument("username")
@click.option(
    "--role", type=LazyChoice("assay.review.accounts", "ROLES"), default="reviewer", show_default=True
)
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
@pass_workspace
def user_create(ws: Workspace, username: str, role: str, password_stdin: bool) -> None:
    """Create an account (the first admin is made this way)."""
    from assay.review import accounts

    user = accounts.create_user(ws.engine, username, _read_password(password_stdin), role)
    click.echo(f"created {user.role} {user.username} (pseudonym in exports: {user.pseudonym})")


@user_group.command("list")
@pass_workspace
def user_list(ws: Workspace) -> None:
    """List accounts."""
    from assay.review import accounts

    for user in accounts.list_users(ws.engine):
        state = "  (disabled)" if user.disabled else ""
        click.echo(f"{user.username:<24} {user.role:<9} {user.pseudonym}{state}")


@user_group.command("password")
@click.argument("username")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
@pass_workspace
def user_password(ws: Workspace, username: str, password_stdin: bool) -> None:
    """Set a new password (this ends the user's sessions)."""
    from assay.review import accounts

    accounts.set_password(ws.engine, username, _read_password(password_stdin))
    click.echo(f"password of {username} changed")


@user_group.command("disable")
@click.argument("username")
@click.option("--enable", is_flag=True, help="Re-enable the account instead.")
@pass_workspace
def user_disable(ws: Workspace, username: str, enable: bool) -> None:
    """Disable an account (it can no longer log in; its labels stay)."""
    from assay.review import accounts

    accounts.set_disabled(ws.engine, username, not enable)
    click.echo(f"{username} {'enabled' if enable else 'disabled'}")


def _pairs(values: tuple[str, ...], option: str) -> dict[str, str]:
    out = {}
    for value in values:
        key, sep, text = value.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{value!r} is not CLASS=TEXT", param_hint=option)
        out[key.strip()] = text.strip()
    return out


@main.group("campaign")
def campaign_group() -> None:
    """Labelling campaigns."""


@campaign_group.command("create")
@click.argument("name")
@click.option("--model", required=True, help="Model reference: name, name@3 or name@alias.")
@click.option(
    "--source", type=click.Path(dir_okay=False), help="CSV/TSV/Parquet of items; default: the feature table."
)
@click.option("--id-column", default="id", show_default=True, help="Id column of --source.")
@click.option(
    "--select",
    "selection",
    type=LazyChoice("assay.review.selection", "SELECTIONS"),
    default="random",
    show_default=True,
)
@click.option("--size", type=int, default=100, show_default=True, help="Items to pick (a cap for 'flagged').")
@click.option(
    "--threshold",
    help="flagged: an operating point name or a query like 'maximum recall @ precision >= 0.6'.",
)
@click.option("--flag-class", help="flagged: the class a query is about (default: the positive class).")
@click.option("--ids", help="list: ids separated by commas/spaces, or @FILE with one id per line.")
@click.option("--labels-per-item", type=int, default=1, show_default=True)
@click.option(
    "--extra-labels",
    type=int,
    default=0,
    show_default=True,
    help="Labels an item may get beyond --labels-per-item while its votes tie (0: ties go to an admin).",
)
@click.option(
    "--reviewer", "reviewers", multiple=True, help="Who may label (repeat); default: every account."
)
@click.option("--blind", is_flag=True, help="Hide the model's score from reviewers.")
@click.option(
    "--auto-rule", "auto_rules", multiple=True, help="e.g. 'user_is_bot_or_sysop == true -> False'."
)
@click.option("--link", "link_template", help="URL of an item in the product, with {id}.")
@click.option("--description", default="", help="The question reviewers answer.")
@click.option("--guidelines", default="", help="What reviewers read before they label (plain text).")
@click.option(
    "--class-description",
    "class_descriptions",
    multiple=True,
    help="CLASS=TEXT, what a class means, shown next to its button (repeat).",
)
@click.option(
    "--judgment-rule", type=click.Choice(["admin", "most_endorsed"]), default="admin", show_default=True
)
@click.option("--explain", type=int, default=5, show_default=True, help="Reasons shown per item.")
@click.option("--seed", type=int, default=None, help="Random seed (default: the seed setting).")
@click.option("--created-by", default=None, help="Recorded as the campaign's creator (default: your login).")
@pass_workspace
def campaign_create(
    ws: Workspace, name: str, ids: str | None, seed: int | None, created_by: str | None, **kw: Any
) -> None:
    """Choose and score a campaign's items, and open it for review."""
    from assay.review import progress
    from assay.review.campaigns import CampaignOptions, create_campaign, parse_list
    from assay.serving.cache import MemoryCache
    from assay.serving.features import FeatureTable
    from assay.serving.scoring import Scorer

    if ids and ids.startswith("@"):
        ids = Path(ids[1:]).read_text()
    options = CampaignOptions(
        name=name,
        ids=parse_list(ids or ""),
        seed=ws.settings.seed if seed is None else seed,
        **{
            **kw,
            "reviewers": list(kw["reviewers"]),
            "auto_rules": list(kw["auto_rules"]),
            "class_descriptions": _pairs(kw["class_descriptions"], "--class-description"),
        },
    )
    scorer = Scorer(ws.registry, FeatureTable(ws.engine), MemoryCache(ws.settings.cache_size))
    campaign = create_campaign(ws, scorer, options, created_by=created_by or getpass.getuser())
    auto = progress.measure(ws.engine, campaign).auto_labelled
    click.echo(
        f"campaign {campaign.name}: {campaign.item_count} items ({auto} auto-labelled), "
        f"{campaign.labels_per_item} label(s) each, scored by {campaign.model}@{campaign.model_version}"
    )


@campaign_group.command("list")
@pass_workspace
def campaign_list(ws: Workspace) -> None:
    """List campaigns with their progress."""
    from assay.review import campaigns, progress

    for c in campaigns.list_campaigns(ws.engine):
        p = progress.measure(ws.engine, c)
        click.echo(
            f"{c.name:<24} {c.status:<7} {c.model}@{c.model_version:<4} {c.item_count:>7} items  "
            f"{p.labels}/{p.labels_needed} labels ({p.fraction:.0%})"
        )


@campaign_group.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_workspace
def campaign_show(ws: Workspace, name: str, as_json: bool) -> None:
    """Progress, per-reviewer counts and agreement of a campaign."""
    from assay.review import campaigns, progress

    campaign = campaigns.get_campaign(ws.engine, name)
    p = progress.measure(ws.engine, campaign)
    from assay.review import agreement  # scikit-learn's kappa: imported when asked for

    agree = agreement.summary(ws.engine, campaign)
    if as_json:
        body = {"campaign": campaign.to_dict(), "progress": p.to_dict(), "agreement": agree}
        click.echo(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())
        return
    click.echo(f"{campaign.name} ({campaign.status}): {campaign.description or 'no description'}")
    click.echo(
        f"model {campaign.model}@{campaign.model_version}; selection {campaign.selection.get('method')}"
    )
    click.echo(
        f"items {p.items} ({p.auto_labelled} auto-labelled), complete {p.complete_items}; "
        f"labels {p.labels}/{p.labels_needed} ({p.fraction:.0%})"
    )
    for r in p.reviewers:
        click.echo(
            f"  {r['username']:<20} labels {r['labels']:>6}  unsure {r['unsure']:>5}  skipped {r['skipped']:>5}"
        )
    alpha = agree["krippendorff_alpha"]
    click.echo(f"Krippendorff's alpha (nominal): {'-' if alpha is None else f'{alpha:.3f}'}")
    for k in agree["pairwise_kappa"]:
        kappa = "-" if k["kappa"] is None else f"{k['kappa']:.3f}"
        click.echo(f"  kappa {k['a']} / {k['b']}: {kappa} on {k['items']} items")


@campaign_group.command("close")
@click.argument("name")
@click.option("--reopen", is_flag=True, help="Open a closed campaign again.")
@pass_workspace
def campaign_close(ws: Workspace, name: str, reopen: bool) -> None:
    """Close a campaign (no more worksets or labels), or reopen it."""
    from assay.review import campaigns

    campaigns.set_status(ws.engine, campaigns.get_campaign(ws.engine, name), "open" if reopen else "closed")
    click.echo(f"{name} {'reopened' if reopen else 'closed'}")


@main.group("labels")
def labels_group() -> None:
    """Labels that reviews produced."""


@labels_group.command("export")
@click.argument("campaign")
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False), help=".csv or .parquet")
@click.option("--all", "everything", is_flag=True, help="Also unresolved items (ties, unsure, incomplete).")
@click.option("--raw", is_flag=True, help="One row per label instead of one per item.")
@pass_workspace
def labels_export(ws: Workspace, campaign: str, output: str, everything: bool, raw: bool) -> None:
    """Write a campaign's resolved labels with provenance, ready for a spec to train on."""
    from assay.review import campaigns, resolution

    n = resolution.export_labels(
        ws.engine, campaigns.get_campaign(ws.engine, campaign), Path(output), everything=everything, raw=raw
    )
    click.echo(f"wrote {n} rows to {output}")
