"""Each adapter needs only its own framework, and says how to install it when missing."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    ("adapter", "framework_module", "extra"),
    [
        ("langgraph", "langgraph.pregel", "langgraph"),
        ("langgraph_savers", "langgraph.checkpoint.memory", "langgraph"),
        ("pydantic_ai", "pydantic_ai.agent", "pydantic-ai"),
        ("langchain", "langchain_core.callbacks", "langchain"),
    ],
)
def test_a_missing_framework_names_the_extra_to_install(
    monkeypatch: pytest.MonkeyPatch, adapter: str, framework_module: str, extra: str
) -> None:
    module = f"runyard.adapters.{adapter}"
    monkeypatch.delitem(sys.modules, module, raising=False)
    monkeypatch.setitem(sys.modules, framework_module, None)  # as if it were not installed

    with pytest.raises(ImportError, match=rf"pip install 'runyard\[{extra}\]'"):
        importlib.import_module(module)


def test_the_openai_client_and_the_demo_need_no_framework() -> None:
    code = (
        "import sys, runyard.adapters.openai, runyard.demo\n"
        "loaded = [m for m in ('langgraph', 'langchain_core', 'pydantic_ai') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
