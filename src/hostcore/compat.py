"""Where hostcore works around a library, in one place, each with what it saves.

Every workaround keeps the library's behaviour and is undone by deleting it here.
"""

from __future__ import annotations

import sys
from typing import Any

import fastapi.utils

_ORIGINAL_V1_CHECK = getattr(fastapi.utils, "annotation_is_pydantic_v1", None)


def _annotation_is_pydantic_v1(annotation: Any) -> bool:
    """FastAPI's check, without importing ``pydantic.v1`` when nothing else has.

    FastAPI asks, for every field of every route it builds, whether the type is a
    pydantic v1 model (it refuses those), and imports ``pydantic.v1`` to ask: about
    1.5 MiB in every process, for a module nothing of hostcore or its plugins uses. A
    class cannot derive from ``pydantic.v1.BaseModel`` unless ``pydantic.v1`` was
    imported, so while it is not, the answer is no; once it is, FastAPI's own check
    answers.
    """
    if "pydantic.v1" not in sys.modules or _ORIGINAL_V1_CHECK is None:
        return False
    return bool(_ORIGINAL_V1_CHECK(annotation))


def install() -> None:
    """Apply the workarounds (idempotent); ``create_app`` calls it before building routes."""
    if _ORIGINAL_V1_CHECK is not None:
        setattr(fastapi.utils, "annotation_is_pydantic_v1", _annotation_is_pydantic_v1)  # noqa: B010
