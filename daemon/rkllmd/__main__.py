"""``rkllmd``: parse arguments, build the Config, run the Daemon. Exit codes:
0 clean stop, 1 runtime failure (socket taken, bind error), 2 bad usage/config.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import logging
import os
import sys
from typing import Any

from . import __version__
from .config import load_config
from .daemon import Daemon
from .errors import ConfigError, RkllmdError
from .memtrace import install_from_env as install_memtrace

EXIT_OK, EXIT_RUNTIME, EXIT_CONFIG = 0, 1, 2


def parse_args(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="rkllmd", description="Keeps one LLM resident and serves it."
    )
    parser.add_argument("--config", help="TOML config file (default /etc/rkllmd/rkllmd.toml)")
    parser.add_argument("--models-dir", help="directory watched for .gguf/.rkllm models")
    parser.add_argument("--socket", help="control socket path")
    parser.add_argument("--listen", help="HTTP address HOST:PORT (default 127.0.0.1:8080)")
    parser.add_argument("--load", metavar="MODEL", help="model to load at start")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--version", action="version", version=f"rkllmd {__version__}")
    args = vars(parser.parse_args(argv))
    cli: dict[str, Any] = {k: v for k, v in args.items() if v is not None and k != "listen"}
    if args["listen"] is not None:
        cli["http"] = {"listen": args["listen"]}
    return cli


def setup_logging(level: str) -> None:
    # Under journald the journal adds timestamps; elsewhere we do.
    fmt = "%(levelname)s %(name)s: %(message)s"
    if not os.environ.get("JOURNAL_STREAM"):
        fmt = "%(asctime)s " + fmt
    logging.basicConfig(level=level.upper(), format=fmt, stream=sys.stderr, force=True)


def main(argv: list[str] | None = None) -> None:
    faulthandler.enable()
    install_memtrace()  # a debugging switch; nothing happens without its variable
    cli = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        config = load_config(cli)
    except ConfigError as exc:
        print(f"rkllmd: {exc.message}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    setup_logging(config.log_level)
    try:
        code = asyncio.run(Daemon(config, cli).run())
    except ConfigError as exc:
        logging.getLogger("rkllmd").error("%s", exc.message)
        code = EXIT_CONFIG
    except RkllmdError as exc:
        logging.getLogger("rkllmd").error("%s", exc.message)
        code = EXIT_RUNTIME
    except OSError as exc:
        logging.getLogger("rkllmd").error("cannot start: %s", exc)
        code = EXIT_RUNTIME
    sys.exit(code)


if __name__ == "__main__":
    main()
