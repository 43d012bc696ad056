"""Adapters from agent frameworks to runyard runs (``runyard.adapters.<name>``),
each behind its own extra:

    langgraph         a compiled graph as a durable pipeline      pip install 'runyard[langgraph]'
    langgraph_savers  LangGraph's savers on the store's database  (the same extra)
    pydantic_ai       an agent's run, model requests as steps     pip install 'runyard[pydantic-ai]'
    langchain         callbacks as events, model calls as steps   pip install 'runyard[langchain]'
    openai            an OpenAI-compatible chat client            (no extra: httpx)

Nothing is imported here, so that importing one adapter never needs another's
framework; importing an adapter whose framework is missing raises an
``ImportError`` naming the extra to install.
"""
