"""Argument parsing and the ``run(argv)`` entry point."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TextIO

from .chat import cmd_run
from .client import ClientError, DaemonUnreachable
from .commands import (
    cmd_load,
    cmd_ls,
    cmd_rescan,
    cmd_show,
    cmd_status,
    cmd_unload,
)
from .context import PROG, Context, ExitCode, UsageError, report_error
from .doctor import cmd_doctor
from .paths import choose_socket, tmp_problem
from .pulling import cmd_pull, cmd_rm

DEFAULT_TIMEOUT_S = 10.0

Handler = Callable[[Context, argparse.Namespace], int]


def _number(
    kind: type[int] | type[float], minimum: float | None, strict: bool
) -> Callable[[str], float]:
    def convert(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        too_small = minimum is not None and (value <= minimum if strict else value < minimum)
        if too_small:
            relation = "greater than" if strict else "at least"
            raise argparse.ArgumentTypeError(f"must be {relation} {minimum:g}: {text}")
        return value

    return convert


positive_int = _number(int, 0, strict=True)
non_negative_int = _number(int, 0, strict=False)
non_negative_float = _number(float, 0, strict=False)
positive_float = _number(float, 0, strict=True)
any_int = _number(int, None, strict=False)


class _Formatter(argparse.HelpFormatter):
    """argparse's formatter without ``shutil`` (argparse builds one per add_argument,
    and importing shutil for its terminal width costs milliseconds at every start)."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=max(_columns(), 40) - 2)


def _columns() -> int:
    try:
        return int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        pass
    try:
        return os.get_terminal_size(sys.__stdout__.fileno() if sys.__stdout__ else 1).columns
    except (OSError, ValueError):
        return 80


def _command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    handler: Handler,
    help_text: str,
    *,
    long_call: bool = False,
    aliases: Sequence[str] = (),
) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        name,
        help=help_text,
        description=help_text,
        aliases=list(aliases),
        formatter_class=_Formatter,
    )
    parser.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )
    parser.set_defaults(handler=handler, long_call=long_call)
    return parser


def _add_run(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = _command(sub, "run", cmd_run, "chat with a model", long_call=True)
    parser.add_argument("model", metavar="MODEL")
    parser.add_argument("prompt", metavar="PROMPT", nargs="?")
    parser.add_argument("--max-tokens", type=positive_int, metavar="N")
    parser.add_argument("--temperature", type=non_negative_float, metavar="T")
    parser.add_argument("--top-p", type=non_negative_float, metavar="P")
    parser.add_argument("--top-k", type=non_negative_int, metavar="K")
    parser.add_argument("--seed", type=any_int, metavar="N")
    parser.add_argument("--stop", action="append", metavar="TEXT", help="repeatable")
    parser.add_argument("--system", metavar="TEXT", help="system prompt")
    parser.add_argument(
        "--image",
        action="append",
        metavar="FILE",
        help="a JPEG, PNG or WebP file the model looks at with the prompt (repeatable; "
        "needs a model that can see)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no stats line on stderr")


def _add_model_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    _command(sub, "status", cmd_status, "show the daemon's state")
    _command(sub, "ls", cmd_ls, "list the models", aliases=["list"])
    show = _command(sub, "show", cmd_show, "show one model")
    show.add_argument("model", metavar="MODEL")
    load = _command(sub, "load", cmd_load, "load a model", long_call=True)
    load.add_argument("model", metavar="MODEL")
    load.add_argument("--ctx-size", type=positive_int, metavar="N")
    load.add_argument("--threads", type=positive_int, metavar="N")
    load.add_argument(
        "--embedding",
        action="store_true",
        help="load it as the separate embedding model, beside the chat model (GGUF only)",
    )
    template = load.add_mutually_exclusive_group()
    template.add_argument(
        "--template",
        metavar="NAME",
        help="chat template by name: chatml, llama3, mistral, gemma, qwen3, phi3, zephyr, "
        "deepseek-r1, or a *.jinja of the daemon's templates_dir",
    )
    template.add_argument("--chat-template", metavar="FILE", help="Jinja chat template file")
    load.add_argument("--parallel", type=positive_int, metavar="N", help="generations at once")
    load.add_argument("--draft-model", metavar="MODEL", help="speculative decoding's drafter")
    load.add_argument(
        "--lookup-ngram", type=positive_int, metavar="N", help="prompt-lookup drafting"
    )
    unload = _command(sub, "unload", cmd_unload, "unload the resident model")
    unload.add_argument(
        "--embedding", action="store_true", help="unload the embedding model instead"
    )
    _command(sub, "rescan", cmd_rescan, "rescan the models directory")
    pull = _command(sub, "pull", cmd_pull, "download a model from the Hub", long_call=True)
    pull.add_argument("repo", metavar="REPO", help="owner/name")
    pull.add_argument("file", metavar="FILE", nargs="?", help="the model file, if several")
    pull.add_argument("--include", action="append", metavar="GLOB", help="repeatable")
    pull.add_argument("--exclude", action="append", metavar="GLOB", help="repeatable")
    pull.add_argument("--revision", metavar="REV", help="branch, tag or commit")
    rm = _command(sub, "rm", cmd_rm, "remove a model and its files", aliases=["remove"])
    rm.add_argument("model", metavar="MODEL", nargs="?")
    rm.add_argument("--force", action="store_true", help="unload it first if it is loaded")
    rm.add_argument("--all", action="store_true", help="remove every model")
    rm.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Control the rkllmd daemon.", formatter_class=_Formatter
    )
    parser.add_argument("--socket", metavar="PATH", help="control socket path")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument(
        "--timeout",
        type=positive_float,
        metavar="SECONDS",
        help=f"give up after this long (default: none for run/load/pull, {DEFAULT_TIMEOUT_S:g})",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_model_commands(sub)
    _add_run(sub)
    _command(sub, "doctor", cmd_doctor, "check this machine's setup")
    return parser


def parse_args(argv: Sequence[str], stdout: TextIO, stderr: TextIO) -> argparse.Namespace | int:
    """The parsed arguments, or the exit code when argparse stopped (help, usage error)."""
    parser = build_parser()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            args, extra = parser.parse_known_args(list(argv))
            # argparse binds `run MODEL`'s optional PROMPT before it sees options, so
            # `run MODEL --image FILE "question"` leaves the question over: it is the prompt.
            if extra and _is_late_prompt(args, extra):
                args.prompt = extra[0]
            elif extra:
                parser.error(f"unrecognized arguments: {' '.join(extra)}")
            return args
        except SystemExit as stop:
            if stop.code is None or isinstance(stop.code, int):
                return int(stop.code or 0)
            return int(ExitCode.USAGE)


def _is_late_prompt(args: argparse.Namespace, extra: list[str]) -> bool:
    run_command = hasattr(args, "image") and getattr(args, "prompt", "") is None
    return run_command and len(extra) == 1 and not extra[0].startswith("-")


def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run one ``rkllmctl`` invocation and return its exit code."""
    out = sys.stdout if stdout is None else stdout
    err = sys.stderr if stderr is None else stderr
    parsed = parse_args(argv, out, err)
    if isinstance(parsed, int):
        return parsed
    environ = os.environ if env is None else env
    choice = choose_socket(parsed.socket, environ)
    problem = tmp_problem(choice.path) if choice.source == "tmp" else None
    if problem is not None:
        print(f"{PROG}: refusing to use {choice.path}: {problem}", file=err)
        return int(ExitCode.UNREACHABLE)
    ctx = Context(
        stdin=sys.stdin if stdin is None else stdin,
        stdout=out,
        stderr=err,
        env=environ,
        socket_path=choice.path,
        json=bool(parsed.json),
        timeout=_timeout(parsed),
    )
    return dispatch(ctx, parsed)


def _timeout(args: argparse.Namespace) -> float | None:
    if args.timeout is not None:
        return float(args.timeout)
    return None if args.long_call else DEFAULT_TIMEOUT_S


def dispatch(ctx: Context, args: argparse.Namespace) -> int:
    handler: Handler = args.handler
    try:
        return int(handler(ctx, args))
    except UsageError as exc:
        ctx.err(str(exc))
        return ExitCode.USAGE
    except DaemonUnreachable as exc:
        report_error(ctx, exc)
        return ExitCode.UNREACHABLE
    except ClientError as exc:
        report_error(ctx, exc)
        return ExitCode.DAEMON_ERROR
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
    except BrokenPipeError:
        _silence_stdout(ctx.stdout)
        return ExitCode.DAEMON_ERROR


def _silence_stdout(stream: TextIO) -> None:
    """After the reader of stdout went away, avoid a second error when Python flushes."""
    if stream is not sys.stdout:
        return
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
