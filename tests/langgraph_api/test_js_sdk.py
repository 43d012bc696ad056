"""The LangGraph API spoken to by the real JavaScript SDK (``@langchain/langgraph-sdk``,
pinned by tests/node's lock): ``tests/node/langgraph_sdk.mjs`` creates a thread,
streams a run in several modes, joins a dropped stream again by ``lastEventId``
and resumes an interrupt, against a real server. Without Node or the installed
packages (``make node-deps``) the test is skipped, except under ``CI=true``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid

import pytest

from tests.langgraph_api.app import build
from tests.support import REPO, serve_in_thread

pytestmark = pytest.mark.server
NODE_DIR = REPO / "tests" / "node"
SCRIPT = NODE_DIR / "langgraph_sdk.mjs"


def node() -> str:
    """The ``node`` binary, with the SDK installed beside the script."""
    binary = shutil.which("node")
    problem = None
    if binary is None:
        problem = "node is not installed"
    elif not (NODE_DIR / "node_modules" / "@langchain" / "langgraph-sdk").is_dir():
        problem = "tests/node/node_modules lacks @langchain/langgraph-sdk (run make node-deps)"
    if problem is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the JavaScript client tests are required in CI: {problem}", pytrace=False)
        pytest.skip(f"{problem}; with CI=true this test fails instead")
    assert binary is not None
    return binary


def test_the_javascript_sdk_streams_rejoins_and_resumes() -> None:
    binary = node()
    with serve_in_thread(build()) as url:
        done = subprocess.run(
            [binary, str(SCRIPT), url, f"js-{uuid.uuid4().hex[:8]}"],
            cwd=NODE_DIR,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 0, f"the Node script failed:\n{done.stdout}\n{done.stderr}"
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["ok"] is True and report["ticks"] == 20
