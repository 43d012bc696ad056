"""Adapters from agent frameworks to runyard runs, each behind its own extra:

    runyard.adapters.langgraph     a compiled graph as a pipeline     pip install 'runyard[langgraph]'
    runyard.adapters.pydantic_ai   an agent's streamed run            pip install 'runyard[pydantic-ai]'
    runyard.adapters.langchain     callbacks as events                pip install 'runyard[langchain]'
    runyard.adapters.openai        an OpenAI-compatible chat client   (no extra: httpx)

Nothing is imported here, so that importing one adapter never needs another's
framework; importing an adapter whose framework is missing raises an
``ImportError`` naming the extra to install.
"""
