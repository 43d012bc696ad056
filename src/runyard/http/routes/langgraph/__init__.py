"""The LangGraph API at ``/langgraph``, for the LangGraph SDKs (``langgraph_sdk``,
``@langchain/langgraph-sdk`` and its ``useStream``) unchanged: assistants are
pipelines, threads sessions, runs runs; crons and the store are runyard's.
Each module maps one kind of object; ``parts`` translates events into
LangGraph's stream parts and ``streams`` serves them."""

from __future__ import annotations

from fastapi import APIRouter

from runyard.http.routes.langgraph import assistants, crons_store, runs, threads

router = APIRouter(prefix="/langgraph")
# crons first: /runs/crons is theirs, not a run's
for part in (crons_store, assistants, threads, runs):
    router.include_router(part.router)

__all__ = ["router"]
