"""The hand-written peer of bench_serving.py: a minimal Starlette + orjson app over the raw Booster.

``POST /v1/scores`` parses the same JSON body as assay's endpoint, takes the first
item's features in the model's column order and answers the probability from
``Booster.predict``: no validation, versions, cache, limits or metrics — the
floor that assay's platform costs are measured against. ``POST /const`` answers
a constant after reading the body: the ceiling of the web stack itself.

    python bench/raw_server.py MODEL_DIR PORT
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightgbm
import numpy as np
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def build(model_dir: Path) -> Starlette:
    booster = lightgbm.Booster(model_file=str(model_dir / "model.lgb.txt"))
    names = [f["name"] for f in orjson.loads((model_dir / "schema.json").read_bytes())["features"]]

    async def score(request: Request) -> Response:
        payload = orjson.loads(await request.body())
        item = payload["items"][0]
        features = item["features"]
        x = np.array([[float(features[name]) for name in names]])
        p = float(booster.predict(x, num_threads=1)[0])
        body = {
            "scores": {item["id"]: {payload["models"][0]: {"probability": {"true": p, "false": 1.0 - p}}}}
        }
        return Response(orjson.dumps(body), media_type="application/json")

    async def const(request: Request) -> Response:
        await request.body()
        return Response(b'{"ok":true}', media_type="application/json")

    return Starlette(
        routes=[Route("/v1/scores", score, methods=["POST"]), Route("/const", const, methods=["POST"])]
    )


if __name__ == "__main__":
    uvicorn.run(
        build(Path(sys.argv[1])),
        host="127.0.0.1",
        port=int(sys.argv[2]),
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )
