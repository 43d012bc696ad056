"""The LangGraph API's objects (assistants, threads, runs, crons) made from runyard's."""

from __future__ import annotations

import time
from typing import Any

from runyard.http.routes.langgraph.parts import interrupts_of, run_status
from runyard.models import Cron, Run, Session, rfc3339
from runyard.pipeline import Pipeline
from runyard.session_ids import public_session_id

STARTED = time.time()  # an assistant's "created_at": its pipeline was loaded when this process started
METADATA = {"created_by": "system"}  # every assistant's: the app declares them all


def assistant_json(pipeline: Pipeline) -> dict[str, Any]:
    """A pipeline as an assistant: ``assistant_id`` and ``graph_id`` are its name."""
    return {
        "assistant_id": pipeline.name,
        "graph_id": pipeline.name,
        "name": pipeline.name,
        "description": pipeline.description or None,
        "config": {},
        "context": {},
        "metadata": dict(METADATA),
        "version": 1,
        "created_at": rfc3339(STARTED),
        "updated_at": rfc3339(STARTED),
    }


def schemas_json(pipeline: Pipeline) -> dict[str, Any]:
    return {
        "graph_id": pipeline.name,
        "input_schema": pipeline.input_schema(),
        "output_schema": None,
        "state_schema": None,
        "config_schema": None,
        "context_schema": None,
    }


def thread_json(
    session: Session, status: str, values: dict[str, Any] | None = None, latest: Run | None = None
) -> dict[str, Any]:
    """A session as a thread. Its ``status`` is the session's (``busy``, or
    ``idle`` for ``idle`` and ``expired``), unless its latest run says more:
    ``interrupted`` while that run asks, ``error`` once it failed."""
    interrupts = interrupts_of(latest) if latest is not None else []
    if interrupts:
        status = "interrupted"
    elif latest is not None and run_status(latest) in ("error", "timeout"):
        status = "error"
    elif status != "busy":
        status = "idle"
    return {
        "thread_id": public_session_id(session.session_id),
        "created_at": rfc3339(session.created_at),
        "updated_at": rfc3339(session.last_activity),
        "metadata": session.metadata,
        "status": status,
        "values": values,
        "interrupts": {latest.run_id: interrupts} if latest is not None and interrupts else {},
    }


def state_json(thread_id: str, values: dict[str, Any], latest: Run | None) -> dict[str, Any]:
    """A thread's state: its latest run's values, and the question that run waits on as a task."""
    interrupts = interrupts_of(latest) if latest is not None else []
    checkpoint = {
        "thread_id": thread_id,
        "checkpoint_ns": "",
        "checkpoint_id": latest.run_id if latest is not None else None,
        "checkpoint_map": None,
    }
    tasks = [
        {
            "id": latest.run_id,
            "name": latest.pipeline,
            "error": None,
            "interrupts": interrupts,
            "checkpoint": None,
            "state": None,
            "result": None,
        }
        for _ in interrupts[:1]
        if latest is not None
    ]
    return {
        "values": values,
        "next": [latest.pipeline] if latest is not None and interrupts else [],
        "checkpoint": checkpoint,
        "metadata": {"run_id": latest.run_id} if latest is not None else {},
        "created_at": rfc3339(latest.created_at) if latest is not None else None,
        "parent_checkpoint": None,
        "tasks": tasks,
        "interrupts": interrupts,
    }


def run_json(run: Run) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "thread_id": public_session_id(run.session_id),
        "assistant_id": run.pipeline,
        "created_at": rfc3339(run.created_at),
        "updated_at": rfc3339(run.finished_at or run.started_at or run.created_at),
        "status": run_status(run),
        "metadata": run.metadata,
        "multitask_strategy": None,  # not kept with the run
        "kwargs": {"input": run.input},
    }


def cron_json(cron: Cron) -> dict[str, Any]:
    return {
        "cron_id": cron.cron_id,
        "assistant_id": cron.pipeline,
        "thread_id": None if cron.session_id is None else public_session_id(cron.session_id),
        "schedule": cron.schedule,
        "timezone": cron.timezone,
        "created_at": rfc3339(cron.created_at),
        "updated_at": rfc3339(cron.updated_at),
        "payload": {"input": cron.input, "webhook": cron.webhook},
        "metadata": cron.metadata,
        "enabled": cron.enabled,
        "next_run_date": rfc3339(cron.next_run_at),
        "end_time": None,
        "on_run_completed": None,
        "user_id": None,
    }
