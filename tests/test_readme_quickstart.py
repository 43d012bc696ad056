"""The README's quick start, run as written (issue 16: it had drifted from what works).

The commands of the README's blocks marked ``<!-- quickstart -->`` run in order, as a
new user types them in a second terminal of the checkout, against a real
``runyard demo`` process: ``RUN_ID`` and ``SESSION_ID`` become those the last
``run`` printed, as a person would copy them. The 20-line app is served the way its
comment says, beside the demo, and its curl lines are sent to it.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import free_port

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
CLI = ".venv/bin/runyard"
STARTED = re.compile(r"^run (\S+) · (\S+) · session (\S+)$", re.MULTILINE)

pytestmark = pytest.mark.server


def marked_blocks(marker: str) -> list[str]:
    """The fenced blocks right after ``<!-- marker -->`` in the README."""
    blocks = re.findall(rf"<!-- {marker} -->\n```\w*\n(.*?)```", README.read_text(), re.DOTALL)
    assert blocks, f"README.md has no block marked <!-- {marker} -->"
    return blocks


def quickstart_commands() -> list[str]:
    return [line for block in marked_blocks("quickstart") for line in block.splitlines() if line.strip()]


def runyard_command() -> list[str]:
    """``.venv/bin/runyard`` as the README says, where the checkout has it (``make test``);
    else the ``runyard`` installed beside this Python."""
    if (ROOT / CLI).exists():
        return [str(ROOT / CLI)]
    beside = Path(sys.executable).parent / "runyard"
    return [str(beside)] if beside.exists() else [sys.executable, "-m", "runyard"]


def wait_healthy(url: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError(f"nothing answered at {url}")


def start(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def stop(process: subprocess.Popen[str]) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if process.stderr is not None:
        process.stderr.close()


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[str]:
    """``runyard demo`` in a process of its own, on a free port and its own SQLite file."""
    port = free_port()
    env = {**os.environ, "RUNYARD_DEMO_SPEED": "0", "RUNYARD_STORE": f"sqlite:///{tmp_path / 'demo.db'}"}
    process = start([*runyard_command(), "demo", "--port", str(port)], ROOT, env)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, process)
        yield url
    finally:
        stop(process)


def test_the_quick_start_runs_as_written(demo: str) -> None:
    env = {**os.environ, "RUNYARD_URL": demo}
    env.pop("RUNYARD_CLIENT_ID", None)
    copied: dict[str, str] = {}  # what a person copies from the last run's first line
    outputs: list[str] = []
    for line in quickstart_commands():
        words = shlex.split(line, comments=True)
        assert words[0] == CLI, f"{line!r}: the quick start's commands are the checkout's CLI"
        argv = [*runyard_command(), *(copied.get(word, word) for word in words[1:])]
        done = subprocess.run(
            argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
        )
        assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"
        if started := STARTED.search(done.stdout):
            copied = {"RUN_ID": started[1], "SESSION_ID": started[3]}
        outputs.append(done.stdout)

    by_command = dict(zip(quickstart_commands(), outputs, strict=True))
    follow_up = next(out for line, out in by_command.items() if "--session SESSION_ID" in line)
    assert "Ada" in follow_up, follow_up  # the same session: the chat remembers the name
    asked = next(out for line, out in by_command.items() if "run approval" in line)
    assert "waiting for input" in asked  # no one to answer at a pipe: it says how to answer
    tailed = next(out for line, out in by_command.items() if " tail RUN_ID" in line)
    assert "✓ succeeded in " in tailed and "Ship it in May." in tailed


def test_the_20_line_app_serves_beside_the_demo_as_its_comment_says(demo: str, tmp_path: Path) -> None:
    """Its comment's command, on its own port and SQLite file, while the demo runs;
    then its curl lines, which name that port, not the demo's."""
    source = README.read_text().split("```python\n# app.py", 1)[1].split("```", 1)[0]
    (tmp_path / "app.py").write_text("# app.py" + source)
    serve_line = next(line for line in source.splitlines() if " serve app:app" in line).lstrip("# ")
    port = re.search(r"--port (\d+)", serve_line)
    assert port is not None and port[1] != "8000", serve_line
    curls = README.read_text().split("```python\n# app.py", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    assert curls.count(f"localhost:{port[1]}/") == 2, curls
    if shutil.which("curl") is None:
        pytest.skip("no curl on this machine")

    free = str(free_port())  # the README's port may be taken on a shared machine
    words = shlex.split(serve_line.replace(port[0], f"--port {free}"))
    assignments = [word for word in words if re.fullmatch(r"[A-Z_]+=\S*", word)]  # VAR=value before the command
    command = words[len(assignments) :]
    assert command[0] == CLI, serve_line
    env = {**os.environ, **dict(word.split("=", 1) for word in assignments)}
    server = start([*runyard_command(), *command[1:]], tmp_path, env)
    try:
        wait_healthy(f"http://127.0.0.1:{free}", server)
        create, follow = [line.replace(port[1], free) for line in curls.replace("\\\n", " ").splitlines() if line]
        created = subprocess.run(shlex.split(create), capture_output=True, text=True, timeout=30, check=True)
        run_id = re.search(r'"run_id":"([^"]+)"', created.stdout)
        assert run_id is not None, created.stdout
        streamed = subprocess.run(
            shlex.split(follow.replace("RUN_ID", run_id[1])), capture_output=True, text=True, timeout=30
        )
        assert "event: end" in streamed.stdout and "result for why SSE?" in streamed.stdout
    finally:
        stop(server)


def test_the_demo_is_a_playground_whose_page_lists_the_clis_runs(demo: str) -> None:
    """``runyard demo`` (no flag) is a single-user playground: the dashboard lists
    every owner's runs, so a run the CLI started shows there."""
    assert httpx.get(f"{demo}/v1/console").json()["playground"] is True
    started = httpx.post(f"{demo}/v1/runs", json={"pipeline": "ticker", "input": {"marker": "q", "count": 1}})
    listed = httpx.get(f"{demo}/v1/runs", params={"owner": "*"}, headers={"X-Client-Id": "web-page"})
    assert started.json()["run_id"] in [run["run_id"] for run in listed.json()["runs"]]
