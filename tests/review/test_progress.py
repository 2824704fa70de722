"""A campaign of 100,000 items: claims, labels, pages, progress and agreement never load them all."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import httpx

from assay.review import agreement, labelling, progress, resolution, worksets
from assay.settings import Settings
from assay.web.app import create_app
from tests.conftest import edits_frame
from tests.reviewing import PASSWORD, TTL, campaign, users

SLOW_S = 5.0  # far above what any step takes; only a step that walks every item gets near it


async def _timed_pages(home: Path, name: str) -> dict[str, float]:
    """Render the reviewer's page and the admin's page of campaign ``name`` through the real app."""
    app = create_app(Settings.load(home=home, environ={}))
    timings = {}
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as client,
    ):
        for username, page, shows in [
            ("ana", f"/review/campaigns/{name}/work", 'id="item-id"'),
            ("root", f"/review/campaigns/{name}", '<dd id="label-count">40 of 200000'),
        ]:
            r = await client.post("/v1/session", json={"username": username, "password": PASSWORD})
            assert r.status_code == 200, r.text
            start = time.perf_counter()
            r = await client.get(page)
            timings[f"{username}'s page"] = time.perf_counter() - start
            assert r.status_code == 200 and shows in r.text, r.text[-2000:]
    return timings


def test_a_100000_item_campaign_stays_fast(ws, trained_home, tmp_path):
    """A campaign made from 100,000 items: claims, labels, pages and agreement never load them all.

    The timings are printed (``-s`` shows them), not asserted: speed is measured in
    ``bench/``; the ceiling only catches a step that grew with the campaign.
    """
    big = tmp_path / "big.parquet"
    edits_frame(100_000, seed=3).drop(columns=["reverted"]).to_parquet(big, index=False)
    timings = {}
    start = time.perf_counter()
    # No explanations: they are the costly part of scoring and do not change what is measured here.
    c = campaign(ws, big, name="big", size=None, labels_per_item=2, explain=0)
    timings["create"] = time.perf_counter() - start
    assert c.item_count == 100_000
    users(ws, "root", role="admin")
    ana, ben = users(ws, "ana", "ben")
    for user, choose in ((ana, lambda k: "True"), (ben, lambda k: "True" if k % 3 else "False")):
        start = time.perf_counter()
        w = worksets.take_workset(ws.engine, c, user, size=20, ttl_s=TTL)
        timings["take"] = max(timings.get("take", 0), time.perf_counter() - start)
        assert w.total == 20
        start = time.perf_counter()
        for k, item in enumerate(w.items):
            labelling.submit_label(ws.engine, c, user, item.item_id, choose(k), ttl_s=TTL)
        timings["label"] = max(timings.get("label", 0), (time.perf_counter() - start) / 20)
    start = time.perf_counter()
    assert worksets.take_workset(ws.engine, c, ana, size=20, ttl_s=TTL).total == 20  # what her page shows
    timings["take again"] = time.perf_counter() - start
    timings |= anyio.run(_timed_pages, trained_home, c.name)
    loaded = ws.registry.load(ws.registry.get(c.model, c.model_version))
    for name, fn in [
        ("progress", lambda: progress.measure(ws.engine, c)),
        ("agreement", lambda: agreement.summary(ws.engine, c)),
        ("disputes", lambda: resolution.disputes(ws.engine, c)),
        ("versus", lambda: agreement.model_vs_labels(ws.engine, c, loaded.operating_points)),
    ]:
        start = time.perf_counter()
        result = fn()
        timings[name] = time.perf_counter() - start
    assert result["resolved_items"] == 13  # the items ana and ben agree on; the rest are ties
    kappa = agreement.summary(ws.engine, c)["pairwise_kappa"]
    assert [(k["a"], k["b"], k["items"]) for k in kappa] == [("ana", "ben", 20)]
    start = time.perf_counter()
    frame = resolution.resolved_frame(ws.engine, c)  # what `assay labels export --all` writes
    assert len(frame) == 100_000 and (frame["status"] == "tie").sum() == 7
    timings["resolved labels"] = time.perf_counter() - start  # every item, like "create": linear by nature
    print("100,000 items, seconds:", {k: round(v, 3) for k, v in timings.items()})
    linear = ("create", "resolved labels")
    slow = {k: round(v, 3) for k, v in timings.items() if k not in linear and v > SLOW_S}
    assert not slow, f"grew with the campaign (100,000 items): {slow}"
