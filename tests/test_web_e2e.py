"""End-to-end: the HTTP API and /metrics of a real `farmd serve`, with a real worker, on
127.0.0.1: plain HTTP on the loopback in `tls.mode: auto`, HTTPS with the farm's CA in
`tls.mode: required`."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import pytest

from farmd.client import Client
from tests.e2e_support import Farm, wait_for

pytestmark = pytest.mark.e2e


def http_address(farm: Farm) -> str:
    """STATE/http_address, once written whole."""
    path = farm.state / "http_address"

    def written() -> str:
        text = path.read_text() if path.exists() else ""
        return text.strip() if text.endswith("\n") else ""

    return wait_for(written, "STATE/http_address")


def check_api(farm: Farm, base: str, verify: ssl.SSLContext | bool = True) -> None:
    """A job run by a real worker, seen through the API, its log, and /metrics."""
    farm.worker("w1")
    job = farm.submit(farm.frame("--print", "hello from the frame"))
    assert farm.wait_jobs([job]) == {str(job): "complete"}
    token = farm.token_file.read_text().strip()
    auth = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base, headers=auth, timeout=30, verify=verify) as web:
        page = web.get("/api/v1/jobs").json()
        assert [(j["id"], j["state"]) for j in page["jobs"]] == [(job, "complete")]
        log = web.get(f"/api/v1/jobs/{job}/frames/1/log").json()
        assert "hello from the frame" in log["text"]
        assert [w["name"] for w in web.get("/api/v1/workers").json()] == ["w1"]
        metrics = web.get("/metrics", headers={"Authorization": ""})
        assert metrics.status_code == 200
        assert "farmd_frames_completed_total 1.0" in metrics.text
        anonymous = web.get("/api/v1/jobs", headers={"Authorization": ""})
        assert anonymous.status_code == 401


def test_the_api_and_metrics_over_http_on_the_loopback(web_farm: Farm) -> None:
    farm = web_farm
    address = http_address(farm)
    assert address != farm.address
    check_api(farm, f"http://{address}")


def test_the_api_over_https_when_tls_is_required(bare_farm: Farm) -> None:
    farm = bare_farm
    config = farm.root / "farm.yaml"
    config.write_text("supervisor:\n  tls:\n    mode: required\n")
    farm.env["FARMD_CA"] = str(farm.state / "tls" / "ca.pem")  # the CLI and the worker
    farm.serve("--config", str(config), http=True)
    ca: Path = farm.state / "tls" / "ca.pem"
    farm._client = Client(farm.address, token_file=farm.token_file, ca=ca, timeout=20.0)
    address = http_address(farm)
    check_api(farm, f"https://{address}", ssl.create_default_context(cafile=str(ca)))
    with pytest.raises(httpx.TransportError):  # no plaintext, not even on the loopback
        httpx.get(f"http://{address}/metrics", timeout=10)
