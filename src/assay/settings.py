"""Every setting of assay, declared once with its default and help.

A value comes from the environment (``ASSAY_<NAME>``), else from ``assay.toml``
in the workspace home, else from the default declared here. The settings object
is built once (by the CLI or the app factory) and passed in; nothing else reads
``os.environ``.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from assay.errors import SettingsError


def _setting(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class Settings:
    """The settings of one workspace; see ``assay settings`` for the list with help."""

    home: Path = _setting(Path(".assay"), "Workspace folder: the SQLite store and the artifacts live here.")
    database_url: str = _setting(
        "", "SQLAlchemy URL of the store; empty means a SQLite file assay.db inside the home."
    )
    artifacts_dir: str = _setting("", "Folder for model artifacts; empty means artifacts/ inside the home.")
    artifacts_url: str = _setting(
        "",
        "Where every host finds versions' artifacts: empty means the artifacts folder; s3://bucket/prefix "
        "an S3-compatible bucket (needs assay[s3]; credentials as boto3 reads them), the folder then "
        "being this host's cache.",
    )
    s3_endpoint_url: str = _setting(
        "", "Endpoint of the S3-compatible server (MinIO, Ceph, ...); empty means AWS's own."
    )
    redis_url: str = _setting("", "Redis URL for the score cache; empty means an in-process cache.")
    cache_size: int = _setting(100_000, "Entries kept by the in-process score cache.")
    cache_ttl_s: int = _setting(86_400, "Seconds a cached score lives in Redis.")
    engine: str = _setting(
        "local",
        "Where heavy work runs (training folds and searches, retrains, scoring Parquet folders, "
        "unlearning retrains, the windows of monitoring reports): local (this process) or ray "
        "(needs assay[ray]).",
    )
    train_jobs: int = _setting(
        0,
        "Cores a training uses: the local engine gives each fit that many threads (folds one at a "
        "time); the ray engine runs folds side by side, one thread each. 0 means the idle cores "
        "(the machine's less its load average).",
    )
    ray_address: str = _setting(
        "", "The Ray cluster of ASSAY_ENGINE=ray; empty means Ray's RAY_ADDRESS, else a Ray started here."
    )
    host: str = _setting("127.0.0.1", "Address the server listens on.")
    port: int = _setting(8000, "Port the server listens on.")
    grpc_port: int = _setting(
        0, "Port of the Open Inference Protocol's gRPC endpoint (needs assay[grpc]); 0 means none."
    )
    workers: int = _setting(1, "Server worker processes.")
    max_items_per_request: int = _setting(1000, "Most items one score request may carry (413 above).")
    max_body_bytes: int = _setting(8 * 1024 * 1024, "Largest request body accepted, in bytes (413 above).")
    max_concurrent_per_client: int = _setting(
        64, "Requests one client may have in flight at once (429 above)."
    )
    max_concurrent_total: int = _setting(512, "Requests the server works on at once (503 above).")
    scoring_timeout_s: float = _setting(10.0, "Seconds a score request may take before it is answered 504.")
    header_timeout_s: float = _setting(
        10.0, "Seconds a client has to send a request's line and headers (408, connection closed, after)."
    )
    body_timeout_s: float = _setting(
        30.0, "Seconds a client has to send a request's body once its headers are in (408 and closed after)."
    )
    max_header_bytes: int = _setting(
        64 * 1024, "Largest request line plus headers, in bytes (431, connection closed, above)."
    )
    max_connections_per_address: int = _setting(
        128, "Connections one client address may hold open per worker; more are refused at once (0: no cap)."
    )
    alias_refresh_s: float = _setting(
        1.0,
        "Seconds between polls for alias moves and feature changes on a SQLite store "
        "(PostgreSQL notifies every server at once; it is polled as well, as a fallback).",
    )
    session_secret: str = _setting("", "Secret that signs session cookies; empty means one kept in the home.")
    secure_cookies: bool = _setting(False, "Mark session cookies Secure (set behind HTTPS).")
    login_failures_per_account: int = _setting(
        5,
        "Failed logins one account may have within ASSAY_LOGIN_WINDOW_S before it is locked (429); "
        "each lock in a row lasts twice as long, up to 15 minutes.",
    )
    login_failures_per_address: int = _setting(
        30, "Failed logins one client address may have within ASSAY_LOGIN_WINDOW_S before it is locked (429)."
    )
    login_window_s: float = _setting(
        60.0, "Seconds over which failed logins are counted; also how long a first lock lasts."
    )
    login_hash_slots: int = _setting(
        2, "Password checks (argon2, 64 MiB each) a worker runs at once; a login waits 2 s for one, then 503."
    )
    campaign_data_dir: str = _setting(
        "", "Folder whose data files the campaign web form may name; empty means uploaded files only."
    )
    workset_size: int = _setting(20, "Items handed to a reviewer at once.")
    workset_ttl_s: int = _setting(3600, "Seconds before an abandoned workset's items go back to the pool.")
    seed: int = _setting(0, "Random seed for sampling campaign items when a command gives none.")
    legal_hold: bool = _setting(
        False,
        "Keep the files of versions retired by a deletion request (they stay unservable); off deletes them.",
    )
    log_backend: str = _setting(
        "store",
        "Where the prediction log lives: store (tables of the store, beside the rest) or parquet "
        "(Parquet files partitioned by model and date under log/ in the home).",
    )
    log_sample: float = _setting(
        1.0, "Share of served scores written to the prediction log for monitoring (0 turns logging off)."
    )
    log_queue_rows: int = _setting(
        100_000,
        "Scored rows a worker holds for the prediction log; more are dropped and counted, never waited for.",
    )
    log_max_rows: int = _setting(
        10_000_000, "Rows the prediction log keeps per model, the oldest going first (0: no cap)."
    )
    log_retention_days: float = _setting(
        90.0, "Days a logged score is kept (0: until the row cap removes it)."
    )
    monitor_interval_s: float = _setting(
        60.0,
        "Seconds between the server's checks of closed monitoring windows (0: the server does not check).",
    )
    alert_webhooks: str = _setting(
        "", "Comma-separated URLs that receive monitor alerts as signed JSON POSTs."
    )
    alert_secret: str = _setting(
        "",
        "Secret that signs webhook bodies (HMAC-SHA256 in X-Assay-Signature); empty means one kept in the home.",
    )
    alert_retries: int = _setting(
        5, "Attempts to deliver an alert to each webhook before it is marked failed."
    )

    @property
    def store_url(self) -> str:
        """The database URL in force (the SQLite file in the home by default)."""
        return self.database_url or f"sqlite:///{(self.home / 'assay.db').resolve()}"

    @property
    def artifacts_path(self) -> Path:
        return Path(self.artifacts_dir) if self.artifacts_dir else self.home / "artifacts"

    @classmethod
    def load(
        cls, home: str | Path | None = None, environ: Mapping[str, str] | None = None, **overrides: Any
    ) -> Settings:
        """Build settings: explicit overrides > ``ASSAY_*`` environment > ``assay.toml`` > defaults."""
        env = os.environ if environ is None else environ
        raw_home = home if home is not None else env.get("ASSAY_HOME", "") or ".assay"
        home_path = Path(raw_home).expanduser()
        values: dict[str, Any] = {}
        toml_path = home_path / "assay.toml"
        if toml_path.is_file():
            try:
                values.update(tomllib.loads(toml_path.read_text()))
            except tomllib.TOMLDecodeError as exc:
                raise SettingsError(f"{toml_path}: not valid TOML: {exc}") from exc
        for f in dataclasses.fields(cls):
            name = f"ASSAY_{f.name.upper()}"
            if name in env and f.name != "home":
                values[f.name] = env[name]
        values.update({k: v for k, v in overrides.items() if v is not None})
        values["home"] = home_path
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise SettingsError(f"unknown setting(s): {', '.join(unknown)}")
        return cls(**{k: _coerce(known[k], v) for k, v in values.items()})

    @classmethod
    def describe(cls) -> list[tuple[str, Any, str]]:
        """(environment name, default, help) for every setting, for docs and ``assay settings``."""
        return [(f"ASSAY_{f.name.upper()}", f.default, f.metadata["help"]) for f in dataclasses.fields(cls)]


def _coerce(f: dataclasses.Field[Any], value: Any) -> Any:
    kind: Any = type(f.default)
    try:
        if kind is bool and isinstance(value, str):
            lowered = value.strip().lower()
            if lowered not in {"1", "0", "true", "false", "yes", "no", "on", "off"}:
                raise ValueError(value)
            return lowered in {"1", "true", "yes", "on"}
        if issubclass(kind, Path):
            return Path(value).expanduser()
        return kind(value)
    except (TypeError, ValueError) as exc:
        raise SettingsError(
            f"setting {f.name} (ASSAY_{f.name.upper()}) must be {kind.__name__}; got {value!r}"
        ) from exc
