"""hostcore's workarounds keep the libraries' behaviour (hostcore.compat)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from fastapi import APIRouter
from fastapi.exceptions import FastAPIError

from hostcore import compat


def test_building_every_built_in_route_does_not_import_pydantic_v1(tmp_path: Path) -> None:
    # A fresh interpreter: this one may have imported pydantic.v1 for another test.
    code = textwrap.dedent(
        """
        import sys
        from hostcore.app import create_app
        from hostcore.config import load_settings
        import tempfile, os
        d = tempfile.mkdtemp()
        for name in ("DATA", "LOG", "RUN"):
            os.environ[f"HOSTCORE_{name}_DIR"] = d
        app = create_app(load_settings())
        assert len(app.routes) > 20, len(app.routes)
        print("pydantic.v1" in sys.modules)
        """
    )
    environ = {k: v for k, v in os.environ.items() if not k.startswith("HOSTCORE_")}
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env=environ,
        cwd=tmp_path,
    )
    assert done.stdout.strip() == "False", done.stderr


def test_a_pydantic_v1_model_is_still_refused_as_fastapi_refuses_it() -> None:
    from pydantic import v1

    class Old(v1.BaseModel):
        name: str

    compat.install()
    router = APIRouter()
    with pytest.raises(FastAPIError, match=r"pydantic\.v1"):

        @router.get("/old", response_model=Old)
        async def old() -> None:
            return None
