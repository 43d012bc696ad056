"""The ``runyard`` command.

    runyard demo [--host H] [--port P] [--<setting> V ...]
    runyard serve APP [--role all|api|worker] [--<setting> V ...]
    runyard worker APP [--<setting> V ...]
    runyard run PIPELINE --input JSON [--url U] [--session S] [--webhook URL] [--client-id C]
    runyard tail RUN_ID [--url U] [--after N] [--raw]
    runyard tail --session ID [--url U] [--after CURSOR]
    runyard answer RUN_ID --value JSON [--ask-id A] [--url U]
    runyard loadtest [--url U] [--sessions N] [--events M] [--interval-ms MS] [--duration S] [--json]
    runyard migrate [--store URL]

Every field of ``runyard.settings.Settings`` is a flag of ``demo``, ``serve`` and
``worker``, generated from the class so the two never drift; a flag given
overrides the field's ``RUNYARD_*`` variable, which overrides the default.

``run`` prompts for what a run asks (``ctx.ask``); with no terminal, it says how to ``answer``.
Exit status: 0 success or a run left waiting for input; 1 a run that did not succeed, a load
test that found a violation, or the server could not be reached; 2 a usage error (a bad flag
or input, a 4xx answer); 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, get_args, get_origin

import httpx
from pydantic import ValidationError
from pydantic_settings import SettingsError

from runyard.cli_common import FAILED, INTERRUPTED, OK, USAGE, UsageError, owner_hint
from runyard.cli_cron import add_cron_command
from runyard.cli_runs import cmd_answer, cmd_loadtest, cmd_run
from runyard.cli_session import cmd_tail_any
from runyard.client import DEFAULT_URL, APIError, ConnectionFailed
from runyard.client.api import server_url
from runyard.errors import ConfigurationError, RunyardError
from runyard.settings import Settings, redact_url
from runyard.validation import describe

if TYPE_CHECKING:
    from runyard.app import Runyard

SETTING = "setting_"  # prefix of the argparse destinations of settings flags


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); the exit status."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or argparse's own usage message
        return exc.code if isinstance(exc.code, int) else USAGE
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except (UsageError, ConfigurationError) as exc:
        return _fail(str(exc), USAGE)
    except APIError as exc:
        message = f"{exc.message} ({exc.status} {exc.code}){owner_hint(exc, args)}"
        return _fail(message, USAGE if exc.status < 500 else FAILED)
    except ConnectionFailed as exc:
        return _fail(f"{exc}; is it running? (runyard demo serves one; --url or RUNYARD_URL chooses it)", FAILED)
    except httpx.TransportError as exc:
        return _fail(f"cannot reach the server at {getattr(args, 'url', '?')}: {exc}", FAILED)
    except (RunyardError, httpx.HTTPError) as exc:
        return _fail(str(exc), FAILED)
    except KeyboardInterrupt:
        return INTERRUPTED


def _fail(message: str, status: int) -> int:
    print(f"runyard: error: {message}", file=sys.stderr)
    return status


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="runyard", description="Serve AI-agent pipelines to many users at once.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = _command(commands, "demo", cmd_demo, "serve the bundled demo app (dashboard at /)")
    add_settings_flags(demo)

    serve = _command(commands, "serve", cmd_serve, "serve a user app")
    serve.add_argument("app", metavar="APP", help="the app, as module:attribute (e.g. myapp:app)")
    add_settings_flags(serve)

    worker = _command(commands, "worker", cmd_worker, "same as serve --role worker")
    worker.add_argument("app", metavar="APP", help="the app, as module:attribute (e.g. myapp:app)")
    add_settings_flags(worker)

    run = _command(commands, "run", cmd_run, "start a run and follow it; exit 0 only if it succeeded")
    run.add_argument("pipeline", metavar="PIPELINE")
    run.add_argument(
        "--input", required=True, metavar="JSON", help="the run's input as JSON, @FILE to read a file, - for stdin"
    )
    run.add_argument("--session", metavar="S", help="run in this session (default: a new one)")
    run.add_argument("--webhook", metavar="URL", help="POST the run's final snapshot there once it finishes")
    _add_server_flags(run)

    tail = _command(commands, "tail", cmd_tail_any, "follow a run's (or a session's) stream, resuming after drops")
    tail.add_argument("run_id", metavar="RUN_ID", nargs="?")
    tail.add_argument("--session", metavar="ID", help="follow every run of this session instead, until it ends")
    tail.add_argument("--after", metavar="N", help="start after this seq (a session's: after this frame id)")
    tail.add_argument("--raw", action="store_true", help="one line per event, SEQ TYPE DATA, instead of the run's view")
    _add_server_flags(tail)

    answer = _command(commands, "answer", cmd_answer, "answer the question a waiting run asked")
    answer.add_argument("run_id", metavar="RUN_ID")
    answer.add_argument("--value", required=True, metavar="JSON", help="the answer as JSON, @FILE, or - for stdin")
    answer.add_argument("--ask-id", metavar="A", help="answer only if the run still waits on this question")
    _add_server_flags(answer)

    load = _command(commands, "loadtest", cmd_loadtest, "many ticker sessions at once; exit 1 on any violation")
    load.add_argument("--sessions", type=int, default=50, metavar="N", help="concurrent sessions (default 50)")
    load.add_argument("--events", type=int, default=100, metavar="M", help="ticks per run (default 100)")
    load.add_argument("--interval-ms", type=int, default=50, metavar="MS", help="pause between ticks (default 50)")
    load.add_argument("--duration", type=float, metavar="S", help="start new runs for S seconds (default: one run)")
    load.add_argument("--timeout", type=float, metavar="S", help="stop after S s (default: duration + one run + 60)")
    load.add_argument("--json", action="store_true", help="print the report as JSON")
    _add_server_flags(load)

    add_cron_command(commands, _add_server_flags)  # issue 13: runyard cron add|list|rm

    migrate = _command(commands, "migrate", cmd_migrate, "create or upgrade the store's schema")
    add_settings_flags(migrate, only={"store"})
    return parser


def _command(
    commands: Any, name: str, handler: Callable[[argparse.Namespace], int], help: str
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(name, help=help, description=help)
    parser.set_defaults(handler=handler)
    return parser


def _add_server_flags(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    parser.add_argument(
        "--url",
        default=env("RUNYARD_URL", DEFAULT_URL),
        type=server_url,
        help=f"the server; host:port is http://host:port (env RUNYARD_URL; {DEFAULT_URL})",
    )
    parser.add_argument(
        "--client-id",
        default=env("RUNYARD_CLIENT_ID"),
        help="who you are under RUNYARD_AUTH=none, sent as X-Client-Id (env RUNYARD_CLIENT_ID;"
        " default: none, which the server takes for 'anonymous')",
    )
    parser.add_argument("--token", default=env("RUNYARD_TOKEN"), help="bearer token (env RUNYARD_TOKEN)")


def _seq(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a non-negative integer")
    return int(text)


def add_settings_flags(parser: argparse.ArgumentParser, only: set[str] | None = None) -> None:
    """A ``--<name-with-dashes>`` flag for every field of ``Settings`` (or those in ``only``)."""
    group = parser.add_argument_group("settings", "each flag overrides its RUNYARD_* environment variable")
    for name, field in Settings.model_fields.items():
        if only is not None and name not in only:
            continue
        default = "none" if field.default in (None, "") else field.default
        help = f"{field.description} (env RUNYARD_{name.upper()}; default {default})".replace("%", "%%")
        options: dict[str, Any] = {"dest": SETTING + name, "default": None, "help": help}
        if field.annotation is bool:
            options["action"] = argparse.BooleanOptionalAction
        elif get_origin(field.annotation) is Literal:
            options["choices"] = [str(choice) for choice in get_args(field.annotation)]
        else:
            options["metavar"] = name.split("_")[-1].upper()
        group.add_argument("--" + name.replace("_", "-"), **options)


def settings_from(args: argparse.Namespace) -> Settings:
    """The flags given, over the ``RUNYARD_*`` environment, over the defaults."""
    overrides = {
        name: value for name in Settings.model_fields if (value := getattr(args, SETTING + name, None)) is not None
    }
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise UsageError(_invalid_setting(exc, overrides)) from None
    except SettingsError as exc:
        raise UsageError(str(exc)) from None


def _invalid_setting(exc: ValidationError, overrides: dict[str, Any]) -> str:
    def source(error: Mapping[str, Any]) -> str:
        if not error["loc"]:  # a rule between settings
            return "settings"
        name = str(error["loc"][0])
        flag = "--" + name.replace("_", "-") if name in overrides else f"RUNYARD_{name.upper()}"
        return f"{flag} {error['input']!r}"

    return "invalid " + describe(exc.errors(), limit=1, label=source)


# -- serving -------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    # The demo is a single-user playground: its page lists every owner's runs
    # (the CLI's among them) unless --no-playground or RUNYARD_PLAYGROUND says
    # otherwise. Settings honour it only under RUNYARD_AUTH=none.
    if getattr(args, SETTING + "playground", None) is None and "RUNYARD_PLAYGROUND" not in os.environ:
        setattr(args, SETTING + "playground", True)
    settings = settings_from(args)
    from runyard.demo import app
    from runyard.server import serve

    serve(app.with_settings(settings))
    return OK


def cmd_serve(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    app = load_app(args.app)
    from runyard.server import serve

    serve(app.with_settings(settings))
    return OK


def cmd_worker(args: argparse.Namespace) -> int:
    setattr(args, SETTING + "role", "worker")
    return cmd_serve(args)


def load_app(spec: str) -> Runyard:
    """The ``Runyard`` named by ``module:attribute``, imported with the working directory on the path."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise UsageError(f"APP must be module:attribute (e.g. myapp:app), not {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        target: object = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not (module_name + ".").startswith(exc.name + "."):
            raise  # the app itself failed to import something: its traceback tells more
        raise UsageError(f"cannot import {module_name!r}: no such module (looked in {os.getcwd()})") from None
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise UsageError(f"module {module_name!r} has no attribute {attribute!r}") from None
    from runyard.app import Runyard

    if not isinstance(target, Runyard):
        raise UsageError(f"{spec} is a {type(target).__name__}, not a runyard.Runyard")
    return target


def cmd_migrate(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    version = asyncio.run(_migrate(settings.store))
    print(f"{redact_url(settings.store)}: schema version {version}")
    return OK


async def _migrate(url: str) -> int:
    from runyard.store import store_from_url

    store = store_from_url(url)
    await store.open()
    try:
        return await store.migrate()
    finally:
        await store.close()


if __name__ == "__main__":
    sys.exit(main())
