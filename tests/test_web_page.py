"""The dashboard's files as the HTTP app serves them (`farmd.web.page`), in-process: the
page and every module it imports, each with its type and the strict CSP; nothing
outside the package's `static/` directory; nothing loaded from another origin."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from farmd.web import create_app
from farmd.web.page import CSP, PageFiles


class NoFarm:
    """The page's routes never ask the farm: a backend that fails if they do."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the page's routes used the backend ({name})")


@pytest.fixture
async def web() -> Any:
    transport = httpx.ASGITransport(app=create_app(NoFarm()))
    async with httpx.AsyncClient(transport=transport, base_url="http://farm") as client:
        yield client


async def test_the_page_and_every_module_it_loads_are_served_with_their_types(
    web: httpx.AsyncClient,
) -> None:
    index = await web.get("/")
    assert index.status_code == 200
    assert index.headers["content-type"] == "text/html; charset=utf-8"
    assert index.headers["content-security-policy"] == CSP
    assert "default-src 'self'" in CSP
    assert "unsafe" not in CSP
    assert index.headers["x-content-type-options"] == "nosniff"
    wanted = set(re.findall(r'(?:src|href)="/static/([\w.]+)"', index.text))
    assert {"main.js", "style.css"} <= wanted
    seen: set[str] = set()
    while wanted - seen:  # follow every module's imports, to the last one
        name = sorted(wanted - seen)[0]
        seen.add(name)
        answer = await web.get(f"/static/{name}")
        assert answer.status_code == 200, name
        assert answer.headers["content-security-policy"] == CSP
        kind = {"js": "text/javascript", "css": "text/css", "svg": "image/svg+xml"}
        assert answer.headers["content-type"].startswith(kind[name.rsplit(".", 1)[1]]), name
        wanted |= set(re.findall(r'from "\./([\w.]+)"', answer.text))
    assert {"api.js", "util.js", "jobs.js", "job.js", "grid.js", "farm.js"} <= seen


async def test_a_file_not_shipped_is_404_and_a_known_version_is_304(
    web: httpx.AsyncClient,
) -> None:
    for path in ("/static/nope.js", "/static/..%2Fapp.py", "/static/%2E%2E%2Fpage.py"):
        answer = await web.get(path)
        assert answer.status_code == 404, path
    first = await web.get("/static/main.js")
    again = await web.get("/static/main.js", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304
    assert again.content == b""


def test_the_page_loads_nothing_from_another_origin() -> None:
    files = PageFiles.load().files
    for name, found in files.items():
        text = found.body.decode()
        assert not re.search(r"(?<!xmlns=\")https?://", text), name  # no CDN, no fonts
        assert "innerHTML" not in text, name  # text only: the farm's strings are not HTML
