"""The README runs: every ``sh`` block, in order, in a fresh folder, as a user would paste it.

Blocks right after a ``<!-- not run: … -->`` comment are skipped (the test
command itself, reinstalling the pins). A few shell functions stand in for what
a person does by hand: ``pip install`` is skipped (the package is installed),
``assay serve`` starts in the background on a free port and is waited for,
``curl`` is pointed at that port and fails on an HTTP error, and ``assay user create``
is given its password as a person would type it. The JSON a block shows after a ``curl`` must match
what the server answered (``"…"`` stands for anything).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PASSWORD = "quartz-lantern-orbit-97"
FENCE = re.compile(r"(<!-- not run:[^>]*-->\s*)?```(\w*)\n(.*?)```", re.S)

PRELUDE = r"""
set -euo pipefail
servers=()
stop_servers() { for pid in "${servers[@]:-}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; done; }
trap stop_servers EXIT
python() {
  if [ "${1:-} ${2:-} ${3:-}" = "-m pip install" ]; then return 0; fi
  command python "$@"
}
assay() {
  local args=() serve=0
  while [ $# -gt 0 ]; do
    case "$1" in
      serve) serve=1; args+=("$1"); shift ;;
      --port) shift 2 ;;
      *) args+=("$1"); shift ;;
    esac
  done
  if [ "${args[0]:-} ${args[1]:-}" = "user create" ]; then  # typing the password at the prompt
    command assay "${args[@]}" --password-stdin <<<"$README_PASSWORD"; return
  fi
  if [ "$serve" = 0 ]; then command assay "${args[@]}"; return; fi
  stop_servers; servers=()
  command assay "${args[@]}" --port "$PORT" >>"$OUT/server.log" 2>&1 &
  servers+=($!)
  for _ in $(seq 1 300); do
    command curl -sf "127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "assay serve did not become ready" >&2; cat "$OUT/server.log" >&2; return 1
}
curl_count=0
curl() {
  local args=()
  for a in "$@"; do args+=("${a//localhost:8000/127.0.0.1:$PORT}"); done
  curl_count=$((curl_count + 1))
  command curl --fail-with-body "${args[@]}" | tee "$OUT/curl-$curl_count.json"
}
"""


def blocks() -> list[tuple[str, str, bool]]:
    """(language, text, runs) of every fenced block, in order."""
    return [(m.group(2), m.group(3), not m.group(1)) for m in FENCE.finditer(README.read_text())]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _matches(shown: Any, actual: Any, where: str = "") -> None:
    """``actual`` has everything ``shown`` shows; "…" keys and values stand for anything."""
    if shown == "…":
        return
    if isinstance(shown, dict):
        assert isinstance(actual, dict), f"{where}: README shows an object, the server answered {actual!r}"
        for key, value in shown.items():
            if key == "…":
                continue
            assert key in actual, f"{where}: README shows {key!r}, the server's answer has {sorted(actual)}"
            _matches(value, actual[key], f"{where}.{key}")
    elif isinstance(shown, float):
        assert math.isclose(shown, actual, abs_tol=0.0015), f"{where}: README shows {shown}, server {actual}"
    else:
        assert shown == actual, f"{where}: README shows {shown!r}, the server answered {actual!r}"


def test_every_block_is_parsed() -> None:
    found = blocks()
    runnable = [text for lang, text, runs in found if lang == "sh" and runs]
    assert len(runnable) >= 4
    assert any("quickstart" in text for text in runnable)
    assert all(lang for lang, _, _ in found), "every fenced block names its language"


@pytest.mark.slow
def test_readme_commands_run(tmp_path: Path, editquality: Path) -> None:
    # The layout a clone has: examples/ in the checkout, the shared data two levels up from it.
    work = tmp_path / "clone"
    shutil.copytree(ROOT / "examples", work / "examples")
    (tmp_path / "shared").symlink_to(editquality.parent.parent)
    out = tmp_path / "out"
    out.mkdir()
    found = blocks()
    script = [PRELUDE]
    curl_json: list[Any] = []
    for k, (lang, text, runs) in enumerate(found):
        if lang == "sh" and runs:
            script.append(f"echo '=== README block {k}' >&2\n{text}")
            if "curl" in text and k + 1 < len(found) and found[k + 1][0] == "json":
                curl_json.append(json.loads(found[k + 1][1]))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ASSAY_")},
        "PORT": str(_free_port()),
        "OUT": str(out),
        "README_PASSWORD": PASSWORD,
    }
    done = subprocess.run(
        ["bash", "-c", "\n".join(script)],
        cwd=work,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, f"README commands failed:\n{done.stderr[-6000:]}\n{done.stdout[-3000:]}"
    for n, shown in enumerate(curl_json, start=1):
        _matches(shown, json.loads((out / f"curl-{n}.json").read_text()), f"curl {n}")
    # What the blocks say they make is there.
    assert (work / "assay-home" / "example" / "spec.toml").is_file()
    assert (work / "scores.csv").stat().st_size > 0
    assert (work / "other").is_dir()
