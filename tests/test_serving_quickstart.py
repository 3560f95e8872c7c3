"""docs/serving-quickstart.md runs as written: train on RouterBench, serve a pool of current
models mapped with ``routes_as``, call it with the official ``openai`` client, route from
Python and the shell.

What the test changes, and nothing else: the data is the committed RouterBench fixture (so
``trouter data fetch`` is skipped), every upstream of the pool file points at one loopback
stand-in (``api_base`` set or replaced), and the proxy listens on a free port instead of 8000.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from standin import StandIn
from typer.testing import CliRunner

from trouter.cli import app as cli_app
from trouter.local.server import free_port

PAGE = Path(__file__).resolve().parents[1] / "docs" / "serving-quickstart.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", PAGE.read_text(), flags=re.S)


def commands() -> list[list[str]]:
    lines = [line.strip() for block in blocks("bash") for line in block.splitlines()]
    return [shlex.split(line) for line in lines if line.startswith("trouter ")]


def run_cli(args: list[str], cwd: Path) -> str:
    old = os.getcwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(cli_app, args)
    finally:
        os.chdir(old)
    assert result.exit_code == 0, f"{' '.join(args)}:\n{result.output}"
    return result.stdout


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A folder holding the page's router and pool file, and the stand-in for its upstreams."""
    folder = tmp_path_factory.mktemp("quickstart")
    pool = yaml.safe_load(blocks("yaml")[0])
    upstream_names = [m["litellm_model"].removeprefix("openai/") for m in pool["models"]]
    standin = StandIn(models=upstream_names).start()
    for model in pool["models"]:
        model["api_base"] = standin.base_url
    (folder / "pool.yaml").write_text(yaml.safe_dump(pool, sort_keys=False))
    train = [c for c in commands() if c[1] == "train"]
    assert len(train) == 1, "the page trains one router"
    run_cli(train[0][1:], folder)
    yield {"folder": folder, "pool": pool, "standin": standin}
    standin.stop()


def test_the_page_serves_its_pool_to_the_openai_client(site):
    serve = [c for c in commands() if c[1] == "serve"]
    assert len(serve) == 1, "the page has one serve command"
    port = free_port()
    env = {**os.environ, "OPENAI_API_KEY": "sk-quickstart-test"}
    process = subprocess.Popen(
        [sys.executable, "-m", "trouter", *serve[0][1:], "--port", str(port)],
        cwd=site["folder"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.time() + 300
        while True:
            assert process.poll() is None, process.stdout.read()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.time() < deadline, "the proxy did not start in 300 s"
            time.sleep(0.5)
        client_code = blocks("python")[0].replace(":8000/", f":{port}/")
        namespace: dict = {}
        exec(compile(client_code, str(PAGE), "exec"), namespace)  # noqa: S102
        reply = namespace["reply"]
        names = [m["name"] for m in site["pool"]["models"]]
        assert reply.model in names
        assert reply.choices[0].message.content
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        assert f'model="{reply.model}"' in metrics
        assert "trouter_pool_model_unpriced{" not in metrics  # every model has its prices
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_the_page_routes_from_python_and_the_shell(site):
    names = {m["name"]: m["routes_as"] for m in site["pool"]["models"]}
    old = os.getcwd()
    os.chdir(site["folder"])
    try:
        namespace: dict = {}
        exec(compile(blocks("python")[1], str(PAGE), "exec"), namespace)  # noqa: S102
    finally:
        os.chdir(old)
    result = namespace["result"]
    assert result.model in names and result.routes_as == names[result.model]
    assert result.cost_usd[result.model] <= 0.01
    (route,) = [c for c in commands() if c[1] == "route"]
    decision = json.loads(run_cli(route[1:], site["folder"]))
    assert (
        decision["model"] in names and decision["policy"] == "weights(0.7,-0.3),max-cost-usd<=0.01"
    )
    assert set(decision["performance"]) == set(names)
