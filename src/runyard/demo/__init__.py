"""The bundled demo app that ``runyard demo`` serves: four pipelines and a dashboard.

- ``ticker``: numbered events at a chosen pace, the workhorse of load tests;
- ``research``: a simulated multi-phase agent behind a rate-limited search API;
- ``chat``: a conversation kept in the session's memory;
- ``approval``: a draft written in a durable step, approved or edited by a
  person the run waits for, then a durable timer.

The dashboard is the single page ``static/index.html`` (``INDEX_HTML``), served at ``/``.
"""

from __future__ import annotations

from pathlib import Path

from runyard import Runyard
from runyard.demo import approval, chat, research, ticker

STATIC_DIR = Path(__file__).parent / "static"
INDEX_HTML = STATIC_DIR / "index.html"


def register_demo_pipelines(app: Runyard) -> Runyard:
    """Add the four demo pipelines (and the search and LLM limits) to ``app``."""
    app.limit(research.SEARCH_LIMIT, concurrency=research.SEARCH_CONCURRENCY)
    app.limit(chat.LLM_LIMIT, concurrency=chat.LLM_CONCURRENCY)
    app.pipeline("ticker", input_model=ticker.TickerInput)(ticker.ticker)
    app.pipeline("research", timeout_s=120, input_model=research.ResearchInput)(research.research)
    app.pipeline("chat", timeout_s=120, input_model=chat.ChatInput)(chat.for_app(app))
    # timeout_s counts executing time only: the person may take as long as they like
    app.pipeline("approval", timeout_s=60, input_model=approval.ApprovalInput)(approval.approval)
    return app


app = register_demo_pipelines(Runyard(title="runyard demo"))

__all__ = ["INDEX_HTML", "STATIC_DIR", "app", "register_demo_pipelines"]
