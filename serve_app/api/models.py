"""``GET /v1/models``: the served model names, in OpenAI's list format."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from serve_app.api.context import ApiContext, context

router = APIRouter(tags=["models"])


@router.get("/v1/models")
async def list_models(ctx: ApiContext = Depends(context)) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {"id": name, "object": "model", "created": ctx.created, "owned_by": "funasr-serve"}
            for name in ctx.served.names
        ],
    }
