"""The runyard app ``langgraph_server.py`` serves: the benchmark's graph
(``_lggraph.py``) as the pipeline ``ticks``, through runyard's LangGraph
adapter, so runyard and ``langgraph dev`` run the very same graph. Served as
``runyard serve _lgapp:app`` with this folder on ``PYTHONPATH``.
"""

from __future__ import annotations

from _lggraph import graph

from runyard import Runyard
from runyard.adapters.langgraph import langgraph_pipeline

app = Runyard(title="runyard LangGraph bench")
app.pipeline("ticks")(langgraph_pipeline(graph))
