"""CLI commands of the scoring service: serve, score, token, features load, precache.

Each builds the same objects the server uses (``Scorer``, ``FeatureTable``,
the cache from settings) and calls them; nothing here scores on its own.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import click
import orjson

from assay.cli import main, pass_workspace, settings_from
from assay.engines.engine import ENGINES, open_engine
from assay.errors import DataError, InvalidInput, Unavailable
from assay.settings import Settings

if TYPE_CHECKING:
    import pandas as pd

    from assay.serving.scoring import Scorer
    from assay.workspace import Workspace

PRECACHE_BATCH = 500


def _scorer(ws: Workspace) -> Scorer:
    from assay.serving.cache import open_cache
    from assay.serving.features import FeatureTable
    from assay.serving.scoring import Scorer

    return Scorer(ws.registry, FeatureTable(ws.engine), open_cache(ws.settings))


def _spec_data(scorer: Scorer, ref: str) -> dict[str, Any]:
    return dict(scorer.model(ref).loaded.record.spec.get("data") or {})


def _read_input(scorer: Scorer, ref: str, path: str, header: bool) -> pd.DataFrame:
    """A file of raw feature rows; without a header row the model's spec names the columns."""
    columns = None if header else (_spec_data(scorer, ref).get("columns") or None)
    if not header and columns is None:
        raise InvalidInput(
            "--no-header needs a spec that names its columns (data.columns)", field="--no-header"
        )
    from assay.modelling.datasets import read_table

    return read_table(path, header=header, columns=columns)


# --- serve ------------------------------------------------------------------------------


@main.command("serve")
@click.option("--host", default=None, help="Address to listen on (ASSAY_HOST).")
@click.option("--port", type=int, default=None, help="Port to listen on (ASSAY_PORT).")
@click.option("--workers", type=int, default=None, help="Worker processes (ASSAY_WORKERS).")
@click.option(
    "--grpc-port",
    type=int,
    default=None,
    help="Also serve the Open Inference Protocol over gRPC on this port (ASSAY_GRPC_PORT; needs assay[grpc]).",
)
@click.option("--access-log/--no-access-log", default=False, help="Log every request (costs throughput).")
@click.pass_context
def serve_command(
    ctx: click.Context,
    host: str | None,
    port: int | None,
    workers: int | None,
    grpc_port: int | None,
    access_log: bool,
) -> None:
    """Serve the workspace's models over HTTP (JSON API, OIP v2, metrics, review pages), and gRPC (OIP)."""
    import uvicorn

    from assay.web.server import GuardedHttpToolsProtocol, Guards
    from assay.workspace import Workspace

    settings = settings_from(ctx, host=host, port=port, workers=workers, grpc_port=grpc_port)
    if settings.workers < 1:
        raise InvalidInput("--workers must be at least 1", field="workers")
    Guards.from_settings(settings)  # refuse bad connection limits here, not in every worker
    if settings.grpc_port:
        _check_grpc(settings)
    # Open the store once here: SQLite is migrated, a PostgreSQL store behind is refused in one line.
    Workspace.open(settings).close()
    # Workers rebuild the settings from the environment; hand them these exact ones.
    for f in dataclasses.fields(Settings):
        value = getattr(settings, f.name)
        os.environ[f"ASSAY_{f.name.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
    metrics_dir = None
    if settings.workers > 1:
        metrics_dir = tempfile.mkdtemp(prefix="assay-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    grpc_note = f" and grpc://{settings.host}:{settings.grpc_port}" if settings.grpc_port else ""
    click.echo(
        f"serving {settings.home} on http://{settings.host}:{settings.port}{grpc_note} "
        f"with {settings.workers} worker(s)",
        err=True,
    )
    try:
        uvicorn.run(
            "assay.web.app:app_from_environment",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            loop="uvloop",
            # httptools, with header/body deadlines, a header size cap and a per-address
            # connection cap (uvicorn has none of them); no route takes a WebSocket.
            http=GuardedHttpToolsProtocol,
            ws="none",
            access_log=access_log,
            log_level="info",
            timeout_graceful_shutdown=10,
        )
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _check_grpc(settings: Settings) -> None:
    """Refuse a gRPC port that cannot work before any worker starts: no grpcio, a bad or busy port.

    Workers bind the port with SO_REUSEPORT (the kernel spreads connections over them), which
    would share it with another server already there too; a plain bind here finds that server.
    """
    import socket

    try:
        import grpc  # noqa: F401
    except ImportError:
        raise InvalidInput(
            "--grpc-port needs gRPC: install assay with its grpc extra (pip install 'assay[grpc]')",
            field="grpc_port",
        ) from None
    if not 0 < settings.grpc_port < 65536 or settings.grpc_port == settings.port:
        raise InvalidInput(
            f"--grpc-port must be a port from 1 to 65535 other than the HTTP port; got {settings.grpc_port}",
            field="grpc_port",
        )
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((settings.host, settings.grpc_port))
        except OSError as exc:
            raise Unavailable(
                f"cannot listen for gRPC on {settings.host}:{settings.grpc_port}: {exc.strerror}",
                code="port_unavailable",
            ) from None


# --- score --------------------------------------------------------------------------------


@main.command("score")
@click.argument("model")
@click.option("--input", "input_path", required=True, type=click.Path(), help="CSV/TSV/Parquet, or a folder.")
@click.option(
    "--output", "output_path", required=True, type=click.Path(), help="CSV or Parquet, or a folder."
)
@click.option("--id-column", default=None, help="The id column (default: the spec's data.id).")
@click.option("--header/--no-header", default=True, help="Whether the input has a header row.")
@click.option(
    "--log/--no-log",
    "log_scores",
    default=True,
    help="Write the scores to the prediction log (sampled by log_sample, as served scores are).",
)
@click.option(
    "--keys",
    type=click.Choice(["api", "classes"]),
    default="api",
    show_default=True,
    help="api: the HTTP API's answer (binary: true/false); classes: columns named by the model's classes.",
)
@click.option("--engine", type=click.Choice(ENGINES), default=None, help="For a folder (ASSAY_ENGINE).")
@click.option("--workers", type=click.IntRange(1), default=1, show_default=True, help="For a folder.")
@pass_workspace
def score_command(
    ws: Workspace,
    model: str,
    input_path: str,
    output_path: str,
    id_column: str | None,
    header: bool,
    log_scores: bool,
    engine: str | None,
    workers: int,
    keys: str,
) -> None:
    """Score every row of a file, or of a folder of Parquet files, with MODEL (name, name@3 or name@alias).

    Writes id, version, prediction and probability_<key> per row (the same answer as
    the API unless ``--keys classes``): a file for a file, a folder of Parquet files for a
    folder, scored by ``--workers`` workers of the engine, each loading the model once.
    The scores are logged for monitoring unless ``--no-log``.
    """
    from assay.serving.cache import MemoryCache
    from assay.serving.features import FeatureTable
    from assay.serving.scoring import Scorer

    if Path(input_path).is_dir():
        folder = Path(input_path), Path(output_path)
        _score_folder(ws, model, *folder, id_column, engine, workers, keys, log_scores)
        return
    from assay.monitoring.log import open_log

    started = time.perf_counter()
    # The whole file may be queued at once: a batch has no request for the log to hold up.
    log = open_log(ws.log, ws.settings, queue_rows=2**62) if log_scores else None
    scorer = Scorer(ws.registry, FeatureTable(ws.engine), MemoryCache(0), prediction_log=log)
    try:
        frame = _read_input(scorer, model, input_path, header)
        id_column = id_column or _spec_data(scorer, model).get("id") or "id"
        scored = scorer.score_frame(model, frame, id_column=id_column, keys=keys)
    finally:
        scorer.close()
    _write_output(scored, Path(output_path))
    seconds = time.perf_counter() - started
    _say_scored(len(scored), scorer.model(model).loaded.record.ref, seconds, output_path)
    if log is not None:
        log.close(timeout_s=3600.0)
        dropped = f"; dropped {sum(log.dropped.values())} ({log.dropped})" if log.dropped else ""
        click.echo(
            f"logged {log.written} rows in {time.perf_counter() - started - seconds:.2f}s more{dropped}",
            err=True,
        )


def _score_folder(
    ws: Workspace,
    model: str,
    source: Path,
    dest: Path,
    id_column: str | None,
    engine: str | None,
    workers: int,
    keys: str,
    log_scores: bool,
) -> None:
    from assay.monitoring.log import open_log
    from assay.serving.batch import score_parquet
    from assay.serving.cache import MemoryCache
    from assay.serving.features import FeatureTable
    from assay.serving.scoring import Scorer

    settings = dataclasses.replace(ws.settings, engine=engine or ws.settings.engine)
    started = time.perf_counter()
    scorer = Scorer(ws.registry, FeatureTable(ws.engine), MemoryCache(0))
    log = log_scores and settings.log_sample > 0
    try:
        served = scorer.model(model)
        before = ws.log.versions(served.name).get(served.version, 0) if log else 0
        used, rows = score_parquet(
            settings,
            scorer,
            model,
            source,
            dest,
            id_column=id_column or _spec_data(scorer, model).get("id") or "id",
            engine=open_engine(settings.engine, settings.ray_address),
            workers=workers,
            keys=keys,
            log=open_log if log else None,
        )
    finally:
        scorer.close()
    _say_scored(rows, used, time.perf_counter() - started, str(dest))
    if log:  # the workers wrote them: counted in the store
        logged = ws.log.versions(served.name).get(served.version, 0) - before
        click.echo(f"logged {logged} rows of {used}", err=True)


def _say_scored(rows: int, ref: str, seconds: float, output: str) -> None:
    click.echo(
        f"scored {rows} rows with {ref} in {seconds:.2f}s ({rows / max(seconds, 1e-9):,.0f} rows/s) -> {output}",
        err=True,
    )


def _write_output(frame: pd.DataFrame, path: Path) -> None:
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        frame.to_parquet(path, index=False)
    elif suffix in (".csv", ".tsv"):
        import pyarrow as pa
        import pyarrow.csv as pacsv

        # pyarrow writes CSV about ten times faster than DataFrame.to_csv.
        options = pacsv.WriteOptions(delimiter="\t" if suffix == ".tsv" else ",")
        pacsv.write_csv(pa.Table.from_pandas(frame, preserve_index=False), path, write_options=options)
    else:
        raise DataError(f"{path}: write .csv, .tsv or .parquet")


# --- tokens -------------------------------------------------------------------------------


@main.group("token")
def token_group() -> None:
    """API tokens for the endpoints that write (precache, feature tables, review API)."""


@token_group.command("create")
@click.argument("name")
@click.option("--admin", is_flag=True, help="The token may also make deletion requests (DELETE /v1/items).")
@pass_workspace
def token_create(ws: Workspace, name: str, admin: bool) -> None:
    """Create a token; it is printed once and only its hash is kept."""
    from assay.serving import tokens

    token = tokens.create_token(ws.engine, name, admin=admin)
    click.echo(token)
    click.echo(f"token {name!r} created; store it now, it cannot be shown again", err=True)


@token_group.command("list")
@pass_workspace
def token_list(ws: Workspace) -> None:
    """List tokens (names and dates; never the tokens)."""
    from assay.serving import tokens

    for info in tokens.list_tokens(ws.engine):
        state = f"revoked {info.revoked_at:%Y-%m-%d %H:%M}" if info.revoked_at else "active"
        click.echo(
            f"{info.name}\tcreated {info.created_at:%Y-%m-%d %H:%M}\t{state}"
            + ("\tadmin" if info.admin else "")
        )


@token_group.command("revoke")
@click.argument("name")
@pass_workspace
def token_revoke(ws: Workspace, name: str) -> None:
    """Revoke a token; requests with it are refused from now on."""
    from assay.serving import tokens

    tokens.revoke_token(ws.engine, name)
    click.echo(f"token {name!r} revoked", err=True)


# --- feature tables ---------------------------------------------------------------------


@main.group("features")
def features_group() -> None:
    """Feature tables: the features the server looks up when a request sends only an id."""


@features_group.command("load")
@click.argument("model")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--id-column", default=None, help="The id column (default: the spec's data.id).")
@click.option("--header/--no-header", default=True, help="Whether the file has a header row.")
@pass_workspace
def features_load(ws: Workspace, model: str, path: str, id_column: str | None, header: bool) -> None:
    """Load (replace) MODEL's feature rows from a CSV/TSV/Parquet file, checked against its schema."""
    scorer = _scorer(ws)
    try:
        served = scorer.model(model)
        frame = _read_input(scorer, model, path, header)
        id_column = id_column or _spec_data(scorer, model).get("id") or "id"
        ids = scorer.features.load_frame(served.name, frame, served.loaded.schema, id_column=id_column)
        scorer.invalidate(served.name, ids)  # scores cached from the old rows are stale now
    finally:
        scorer.cache.close()
    click.echo(f"loaded {len(ids)} feature rows for {served.name!r}", err=True)


# --- precache -------------------------------------------------------------------------------


def _ids(stream: IO[str]) -> Iterator[str]:
    for line in stream:
        item_id = line.strip()
        if item_id:
            yield item_id


def _batches(ids: Iterator[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for item_id in ids:
        batch.append(item_id)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _post_precache(url: str, token: str, model: str, ids: list[str]) -> dict[str, Any]:
    request = urllib.request.Request(
        url.rstrip("/") + "/v1/precache",
        data=orjson.dumps({"models": [model], "ids": ids}),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            message = orjson.loads(exc.read())["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = str(exc)
        raise Unavailable(f"{url}: {exc.code}: {message}") from None
    except urllib.error.URLError as exc:
        raise Unavailable(f"{url}: {exc.reason}") from None


@main.command("precache")
@click.argument("model")
@click.option(
    "--file", "id_file", type=click.File("r"), default=None, help="Ids, one per line (default: stdin)."
)
@click.option("--url", default=None, help="Precache through a running server (its in-process cache) instead.")
@click.option("--token", envvar="ASSAY_TOKEN", default=None, help="API token for --url (ASSAY_TOKEN).")
@click.option("--batch", "batch_size", type=int, default=PRECACHE_BATCH, show_default=True)
@click.pass_context
def precache_command(
    ctx: click.Context,
    model: str,
    id_file: IO[str] | None,
    url: str | None,
    token: str | None,
    batch_size: int,
) -> None:
    """Score a stream of item ids with MODEL ahead of their first request (ORES scored each new edit).

    Without --url the scores go straight into the shared cache, so ASSAY_REDIS_URL must be set:
    an in-process cache lives inside each server worker and only --url can reach it.
    """
    settings = settings_from(ctx)
    if batch_size < 1:
        raise InvalidInput("--batch must be at least 1", field="batch")
    ids = _ids(id_file or sys.stdin)
    totals: dict[str, Any] = {"scored": 0, "cached": 0, "failed": {}}
    if url is not None:
        if not token:
            raise InvalidInput("--url needs --token (or ASSAY_TOKEN)", field="token")

        def run(batch: list[str]) -> dict[str, Any]:
            return _post_precache(url, token, model, batch)

        _precache(ids, batch_size, run, totals)
    else:
        if not settings.redis_url:
            raise InvalidInput(
                "without --url, precache needs the shared Redis cache (ASSAY_REDIS_URL); the in-process "
                "cache lives inside the server: use --url http://host:port --token ...",
                field="redis_url",
            )
        from assay.workspace import Workspace

        ws = Workspace.open(settings)
        scorer = _scorer(ws)
        try:
            _precache(ids, batch_size, lambda batch: scorer.precache([model], batch), totals)
        finally:
            scorer.cache.close()
            ws.close()
    failed = ", ".join(f"{code}={n}" for code, n in sorted(totals["failed"].items())) or "none"
    click.echo(f"scored {totals['scored']}, already cached {totals['cached']}, failed: {failed}", err=True)


def _precache(ids: Iterator[str], size: int, run: Any, totals: dict[str, Any]) -> None:
    for batch in _batches(ids, size):
        counts = run(batch)
        totals["scored"] += counts["scored"]
        totals["cached"] += counts["cached"]
        for code, n in counts["failed"].items():
            totals["failed"][code] = totals["failed"].get(code, 0) + n
