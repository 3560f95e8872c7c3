"""`trouter data fetch` against real loopback HTTP servers: byte-for-byte copies of the public
files, refusal of tampered or truncated ones (exit 2), resume after an interrupted download."""

from __future__ import annotations

import filecmp
import functools
import http.server
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import require_full_data
from typer.testing import CliRunner

from trouter.cli import app
from trouter.config import DataNotFoundError
from trouter.data.fetch import DataFetchError, fetch_files
from trouter.data.sources import BY_PATH, FILES
from trouter.evaluation.real_questions import (
    PACKAGED_GSM8K_ROWS,
    load_gsm8k,
    load_humaneval,
    packaged_question_file,
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_up(url: str, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the mirror exited with {process.returncode}")
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer in 15 s")


@pytest.fixture
def http_mirror() -> Iterator:
    """Start ``python -m http.server`` on a free loopback port serving a folder."""
    started: list[subprocess.Popen] = []

    def serve(folder: Path) -> str:
        port = _free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
             "--directory", str(folder)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        started.append(process)
        url = f"http://127.0.0.1:{port}/"
        _wait_until_up(url, process)
        return url

    yield serve
    for process in started:
        process.terminate()
        process.wait(timeout=10)


def fetch_cli(*args: str):
    return CliRunner().invoke(app, ["data", "fetch", *args])


def test_fetch_all_from_a_mirror_reproduces_every_file(http_mirror, tmp_path):
    full = require_full_data()
    url = http_mirror(full)
    out = tmp_path / "data"
    result = fetch_cli("--all", "--mirror", url, "--dir", str(out))
    assert result.exit_code == 0, result.output
    assert f"{len(FILES)} file(s) downloaded and verified" in result.output
    for item in FILES:
        assert filecmp.cmp(full / item.path, out / item.path, shallow=False), item.path
    assert not list(out.rglob("*.part"))
    # a second run finds everything in place and downloads nothing
    again = fetch_cli("--all", "--mirror", url, "--dir", str(out))
    assert again.exit_code == 0 and f"{len(FILES)} already present" in again.output


def test_tampered_files_are_refused_deleted_and_named(http_mirror, tmp_path, data_dir):
    """The committed fixtures are cuts: served as a mirror, none matches its checksum."""
    out = tmp_path / "data"
    result = fetch_cli("routerbench", "--mirror", http_mirror(data_dir), "--dir", str(out))
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "6 of 6 file(s) not fetched" in text
    for item in FILES:
        if item.path.startswith("routerbench/"):
            assert f"{item.path}: refused and deleted" in text
            assert not (out / item.path).exists()
    assert not list(out.rglob("*.part")) and "Traceback" not in result.output


def test_one_changed_byte_is_refused(http_mirror, tmp_path):
    full = require_full_data("llmrouter")
    mirror = tmp_path / "mirror"
    shutil.copytree(full / "llmrouter", mirror / "llmrouter")
    tampered = mirror / "llmrouter" / "default_llm.json"
    tampered.chmod(0o644)
    body = bytearray(tampered.read_bytes())
    body[100] ^= 1
    tampered.write_bytes(bytes(body))
    out = tmp_path / "data"
    result = fetch_cli("llmrouter", "--mirror", http_mirror(mirror), "--dir", str(out))
    assert result.exit_code == 2
    assert "llmrouter/default_llm.json: refused and deleted" in " ".join(result.output.split())
    assert not (out / "llmrouter" / "default_llm.json").exists()
    assert (out / "llmrouter" / "dcrouter_test.json").is_file()  # the good files are kept


class FlakyRangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves ``Range: bytes=N-`` requests (206) and cuts the first full response short."""

    cut_after: int | None = None  # bytes sent before the connection drops, once

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - the http.server hook
        path = Path(self.translate_path(self.path))
        body = path.read_bytes()
        start = 0
        if self.headers.get("Range", "").startswith("bytes="):
            start = int(self.headers["Range"][6:].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        cut = type(self).cut_after
        if cut is not None and start == 0:
            type(self).cut_after = None
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body[start:])


def test_interrupted_download_resumes_from_the_part_file(tmp_path):
    item = BY_PATH["questions/HumanEval.jsonl.gz"]  # the installed copy is the whole file
    shipped = tmp_path / "mirror"  # the mirror's layout, serving the installed copy
    (shipped / "questions").mkdir(parents=True)
    shutil.copy(packaged_question_file("HumanEval.jsonl.gz"), shipped / item.path)
    FlakyRangeHandler.cut_after = 20_000
    handler = functools.partial(FlakyRangeHandler, directory=str(shipped))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    mirror = f"http://127.0.0.1:{server.server_address[1]}/"
    out = tmp_path / "data"
    try:
        with pytest.raises(DataFetchError, match="run the command again to resume"):
            fetch_files([item], out, mirror)
        part = out / "questions" / "HumanEval.jsonl.gz.part"
        assert part.stat().st_size == 20_000
        assert not (out / item.path).exists()
        seen: list[tuple[int, int]] = []
        report = fetch_files([item], out, mirror, progress=lambda d, t: seen.append((d, t)))
    finally:
        server.shutdown()
        server.server_close()
    assert report.downloaded == [item.path]
    assert filecmp.cmp(out / item.path, shipped / item.path, shallow=False)
    assert not part.exists()
    assert seen[-1] == (item.size, item.size)


def test_fetch_needs_a_name_and_knows_the_names(tmp_path):
    assert fetch_cli("--dir", str(tmp_path)).exit_code == 2
    result = fetch_cli("nope", "--dir", str(tmp_path))
    assert result.exit_code == 2 and "unknown data set 'nope'" in result.output


def test_unreachable_mirror_is_a_short_error(tmp_path):
    result = fetch_cli("questions", "--mirror", f"http://127.0.0.1:{_free_port()}/",
                       "--dir", str(tmp_path))  # fmt: skip
    assert result.exit_code == 2
    assert "download from" in result.output and "Traceback" not in result.output


def test_question_sets_are_read_from_the_data_folder_when_it_has_them(tmp_path, monkeypatch):
    # Cut 3 real GSM8K rows into a data folder; the loader must read them, not the 300
    # packaged ones, and must fall back to the installed copies when the folder lacks a file.
    packaged = packaged_question_file("gsm8k_test.jsonl")
    rows = packaged.read_text(encoding="utf-8").splitlines()[:3]
    (tmp_path / "questions").mkdir()
    (tmp_path / "questions" / "gsm8k_test.jsonl").write_text(
        "\n".join(reversed(rows)) + "\n", encoding="utf-8"
    )
    monkeypatch.setenv("TROUTER_DATA_DIR", str(tmp_path))
    from_folder = load_gsm8k()
    assert len(from_folder) == 3
    assert from_folder[0].prompt.startswith(json.loads(rows[2])["question"])
    assert len(load_humaneval()) == 164  # not in the folder: the packaged copy

    monkeypatch.setenv("TROUTER_DATA_DIR", str(tmp_path / "empty"))
    assert len(load_gsm8k(limit=PACKAGED_GSM8K_ROWS)) == PACKAGED_GSM8K_ROWS == 300
    assert load_gsm8k(limit=300)[-1].prompt.startswith(
        json.loads(packaged.read_text(encoding="utf-8").splitlines()[-1])["question"]
    )


def test_more_gsm8k_than_shipped_asks_for_the_fetch(tmp_path, monkeypatch):
    # Without a data folder only the first 300 test questions are installed: asking for all
    # of them (or 301) must name the fetch command, not quietly return fewer.
    monkeypatch.setenv("TROUTER_DATA_DIR", str(tmp_path / "empty"))
    for limit in (None, PACKAGED_GSM8K_ROWS + 1):
        with pytest.raises(DataNotFoundError, match="trouter data fetch questions"):
            load_gsm8k(limit=limit)
    result = CliRunner().invoke(app, ["experiment", "local-pool", "export", "--gsm8k", "301",
                                      "--out", str(tmp_path / "out")])  # fmt: skip
    assert result.exit_code == 2 and "trouter data fetch questions" in result.output
    assert "Traceback" not in result.output


class HostileMirror(http.server.BaseHTTPRequestHandler):
    """``/redirect/...`` sends a 302 to ``redirect_to``; ``/endless/...`` streams bytes until
    the client leaves; ``/slow/...`` sends one byte every ``slow_every_s`` seconds."""

    redirect_to = ""
    slow_every_s = 0.5
    sent: list[int] = []  # bytes sent per endless response

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - the http.server hook
        kind, _, rest = self.path.lstrip("/").partition("/")
        if kind == "redirect":
            self.send_response(302)
            self.send_header("Location", f"{type(self).redirect_to}/endless/{rest}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.end_headers()  # no Content-Length: the body ends when the connection does
        sent = 0
        try:
            if kind == "endless":
                block = b"x" * 65536
                while sent < 50 * 2**20:  # bounded, in case the client never stops reading
                    self.wfile.write(block)
                    sent += len(block)
            else:
                for _ in range(60):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    sent += 1
                    time.sleep(type(self).slow_every_s)
        except OSError:
            pass
        type(self).sent.append(sent)


@pytest.fixture
def hostile_mirror() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), HostileMirror)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    HostileMirror.redirect_to = f"http://localhost:{port}"  # the same server, another host name
    HostileMirror.sent = []
    yield f"http://127.0.0.1:{port}"
    server.shutdown()
    server.server_close()


SMALL = BY_PATH["questions/HumanEval.jsonl.gz"]


def test_redirect_to_an_unlisted_host_is_refused(hostile_mirror, tmp_path):
    with pytest.raises(DataFetchError) as caught:
        fetch_files([SMALL], tmp_path, f"{hostile_mirror}/redirect")
    message = str(caught.value)
    assert "redirects to http://localhost:" in message and "a host not allowed" in message
    assert HostileMirror.sent == []  # the other host was never asked
    assert not list((tmp_path / "questions").glob("HumanEval*"))


def test_an_endless_body_is_cut_at_the_pinned_size(hostile_mirror, tmp_path):
    seen: list[tuple[int, int]] = []
    with pytest.raises(DataFetchError, match=f"more than the pinned {SMALL.size:,} bytes"):
        fetch_files([SMALL], tmp_path, f"{hostile_mirror}/redirect", progress=lambda d, t:
                    seen.append((d, t)), redirect_hosts=["localhost"])  # fmt: skip
    assert max(done for done, _ in seen) <= SMALL.size  # never more than was pinned
    assert seen[-1] == (0, 0)  # the failed file leaves the bar: nothing shown as fetched
    assert not list((tmp_path / "questions").glob("HumanEval*"))  # the overlong part is deleted


def test_a_trickling_mirror_meets_the_per_file_deadline(hostile_mirror, tmp_path):
    start = time.monotonic()
    with pytest.raises(DataFetchError, match="deadline of 2 s passed"):
        fetch_files([SMALL], tmp_path, f"{hostile_mirror}/slow", deadline_s=2.0)
    assert time.monotonic() - start < 4
    part = tmp_path / "questions" / "HumanEval.jsonl.gz.part"
    assert 0 < part.stat().st_size < 10  # what arrived is kept, to resume from


def test_cli_reports_a_hostile_mirror_in_one_paragraph(hostile_mirror, tmp_path):
    result = fetch_cli("questions", "--mirror", f"{hostile_mirror}/redirect", "--dir",
                       str(tmp_path))  # fmt: skip
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "a host not allowed" in " ".join(result.output.split())
