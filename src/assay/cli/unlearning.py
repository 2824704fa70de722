"""``assay forget``: deletion requests — forget items, list requests, resume or verify one.

``assay forget --model NAME ID…`` (or ``--ids-file``) forgets; ``assay forget status [N]``,
``assay forget resume [N]`` and ``assay forget verify N`` read or finish requests. An id that is
literally one of those words goes through ``--ids-file``.
"""

from __future__ import annotations

import functools
import getpass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from assay.cli import main, pass_workspace
from assay.errors import InvalidInput

if TYPE_CHECKING:
    from assay.unlearning.forgetting import Forgetting
    from assay.unlearning.requests import ForgetRequest
    from assay.workspace import Workspace

_ACTIONS = ("status", "resume", "verify")


def _forgetting(ws: Workspace) -> Forgetting:
    # Forgetting trains models: its libraries are imported when a command needs them.
    from assay.engines.engine import open_engine
    from assay.review.resolution import resolved_labels
    from assay.serving.cache import open_cache
    from assay.unlearning.forgetting import Forgetting

    return Forgetting(
        engine=ws.engine,
        registry=ws.registry,
        log=ws.log,
        cache=open_cache(ws.settings),
        legal_hold=ws.settings.legal_hold,
        campaign_labels=functools.partial(resolved_labels, ws.engine),
        say=lambda m: click.echo(m, err=True),
        work=open_engine(ws.settings.engine, ws.settings.ray_address, ws.settings.train_jobs),
    )


@main.command("forget")
@click.argument("args", nargs=-1)
@click.option("--model", "models", multiple=True, help="Model to forget the items from (repeatable).")
@click.option("--ids-file", type=click.Path(dir_okay=False, exists=True), help="Ids to forget, one a line.")
@click.option("--verify", is_flag=True, help="Then train from scratch without the ids and compare.")
@pass_workspace
def forget_command(
    ws: Workspace, args: tuple[str, ...], models: tuple[str, ...], ids_file: str | None, verify: bool
) -> None:
    """Forget items everywhere (ID…), or: status [N] | resume [N] | verify N."""
    from assay.unlearning import forgetting

    f = _forgetting(ws)
    if args and args[0] in _ACTIONS and not models:
        _action(f, args[0], args[1:])
        return
    ids = list(args)
    if ids_file:
        ids += [line.strip() for line in Path(ids_file).read_text().splitlines() if line.strip()]
    if not models:
        raise InvalidInput("name the model(s) to forget the items from with --model", field="model")
    request = forgetting.forget(f, list(models), ids, actor=getpass.getuser())
    _show(request)
    if verify:
        _show_verification(forgetting.verify(f, request.id))


def _action(f: Forgetting, action: str, rest: tuple[str, ...]) -> None:
    from assay.unlearning import requests
    from assay.unlearning.forgetting import resume, verify

    number = _request_number(rest, required=action == "verify")
    if action == "status":
        if number is not None:
            _show(requests.get_request(f.engine, number))
            return
        for r in requests.list_requests(f.engine):
            changed = ", ".join(f"{v['model']}@{v['version']}" for v in r.versions) or "none"
            click.echo(
                f"{r.id}  {r.status:<7}  {r.requested_at:%Y-%m-%d %H:%M}  by {r.actor}  "
                f"{len(r.id_hashes)} id(s), {len(r.unknown)} unknown  versions retired: {changed}"
                + (f"  verified: {r.verification['equal']}" if r.verification else "")
            )
        return
    if action == "resume":
        pending = (
            [number]
            if number is not None
            else [r.id for r in requests.list_requests(f.engine, status=requests.RUNNING)]
        )
        if not pending:
            click.echo("no deletion request is unfinished")
        for request_id in pending:
            _show(resume(f, request_id))
        return
    assert number is not None
    _show_verification(verify(f, number))


def _request_number(rest: tuple[str, ...], *, required: bool) -> int | None:
    if not rest:
        if required:
            raise InvalidInput("name the request: assay forget verify N", field="request")
        return None
    if len(rest) > 1 or not rest[0].isdigit():
        raise InvalidInput(f"a request is named by its number, not {' '.join(rest)!r}", field="request")
    return int(rest[0])


def _show(r: ForgetRequest) -> None:
    click.echo(f"deletion request {r.id}: {r.status}, by {r.actor} at {r.requested_at:%Y-%m-%d %H:%M:%S}")
    click.echo(f"  ids: {len(r.id_hashes)} ({len(r.unknown)} found nowhere: unknown)")
    for model, counts in sorted(r.stores.items()):
        click.echo(f"  {model}: rows deleted " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    for v in r.versions:
        click.echo("  " + _version_line(v))
    for file in r.files:
        if file.get("status"):  # a label file assay exported
            click.echo(f"  label export {file['path']}: {file['status']} ({file['ids']} id(s))")
            continue
        click.echo(
            f"  still in a data file you own (not rewritten; every training leaves them out): {file['path']} ({file['ids']} id(s))"
        )
    if r.seconds is not None:
        click.echo(f"  took {r.seconds:.2f}s")
    if r.error:
        click.echo(f"  stopped: {r.error} (assay forget resume {r.id})")


def _version_line(v: dict[str, Any]) -> str:
    ref = f"{v['model']}@{v['version']}"
    kept = "files kept (legal hold)" if not v.get("artifacts_deleted") else "files deleted"
    if v.get("replacement") is not None:
        how = (
            f"shard(s) {v['retrained_shards']} retrained"
            if v["mode"] == "shards"
            else "retrained in full (no shards)"
        )
        return f"{ref} retired ({kept}); replaced by {v['model']}@{v['replacement']}, {how}, in {v['seconds']:.2f}s, aliases: {', '.join(sorted(v['aliases']))}"
    if v["mode"] == "unreadable":
        return f"{ref} retired ({kept}); its data could not be read, so it is not replaced"
    return f"{ref} retired ({kept}); no alias pointed at it, so it is not replaced"


def _show_verification(result: dict[str, Any]) -> None:
    for v in result["versions"]:
        verdict = "equal bit for bit" if v["equal"] else f"DIFFERENT (max |diff| {v['max_abs_diff']:.3g})"
        click.echo(
            f"verify {v['model']}@{v['version']}: {v['rows']} held-out predictions {verdict} to a training from scratch ({v['seconds']:.2f}s)"
        )
    if not result["versions"]:
        click.echo("verify: no replacement version to check")
