"""The public surface is explicit, and the README documents every setting."""

from __future__ import annotations

from pathlib import Path

import runyard
from runyard.settings import Settings

README = Path(__file__).resolve().parent.parent / "README.md"


def test_all_exports_exactly_the_public_names_sorted() -> None:
    public = {name for name in dir(runyard) if not name.startswith("_")}
    modules = {name for name in public if type(getattr(runyard, name)).__name__ == "module"}
    assert set(runyard.__all__) == public - modules
    assert runyard.__all__ == sorted(runyard.__all__)


def test_the_readme_lists_every_setting_with_its_variable_and_flag() -> None:
    readme = README.read_text()
    for name in Settings.model_fields:
        assert f"`RUNYARD_{name.upper()}`" in readme, f"README lacks RUNYARD_{name.upper()}"
        assert f"`--{name.replace('_', '-')}`" in readme, f"README lacks --{name.replace('_', '-')}"


async def test_the_readmes_example_app_runs_as_shown() -> None:
    source = README.read_text().split("```python\n# app.py", 1)[1].split("```", 1)[0]
    namespace: dict[str, object] = {}
    exec(compile("# app.py" + source, "README.md", "exec"), namespace)
    app = namespace["app"]
    assert isinstance(app, runyard.Runyard)
    app.with_settings(Settings(store="memory://"))
    async with app.running() as rt:
        run = await rt.create_run("alice", "answer", {"question": "why SSE?"})
        done = await rt.wait(await rt.get_run("alice", run.run_id), 10)
        assert done is not None and done.output == {"sources": ["result for why SSE?"]}
        types = [event.type for event in await rt.store.read_events(run.run_id, 0, 100)]
        assert types[:3] == ["status", "phase", "search"] and types[-1] == "end"
