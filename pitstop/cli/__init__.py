"""The ``pitstop`` command: one entry point, errors as messages and exit codes, never tracebacks."""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from typing import Any

import click

from pitstop.cli.common import Context, fail, give_summaries
from pitstop.cli.doctor import doctor, log_command
from pitstop.cli.events import emit, events, watch
from pitstop.cli.processes import beat, flower, keygen, redis_group, serve, up, worker
from pitstop.cli.runs import cancel, run, runs, show
from pitstop.kernel.errors import ExitCode, PitstopError

EXIT_INTERNAL = ExitCode.INTERNAL


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
             invoke_without_command=True)
@click.version_option(package_name="pitstop")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """pitstop: event-driven automation for build and CI fleets (Celery + Redis).

    Without PITSTOP_REDIS_URL, pitstop runs a private Redis under .state/redis.
    """
    ctx.obj = Context()
    if ctx.invoked_subcommand is None:  # plain `pitstop`: the help, and success
        click.echo(ctx.get_help())


for command in (up, worker, beat, flower, serve, redis_group, emit, watch, events, run, runs, show,
                cancel, doctor, log_command, keygen):
    cli.add_command(command)

# Each component's commands live in its own module exporting ``COMMANDS`` (a list of click commands).
COMPONENT_CLI_MODULES: list[str] = [
    "pitstop.cli.workstreams",  # workstreams
    "pitstop.cli.triggers",  # triggers
    "pitstop.cli.triage",  # triage
    "pitstop.cli.patches",  # patches
    "pitstop.cli.alerts",  # alerts
    "pitstop.cli.deploy",  # deploy
    "pitstop.cli.web",  # web
    "pitstop.cli.smoke",  # smoke
]
for _module in COMPONENT_CLI_MODULES:
    for command in importlib.import_module(_module).COMMANDS:
        cli.add_command(command)
give_summaries(cli)  # `pitstop --help` never cuts a summary mid-sentence


def main(argv: list[str] | None = None) -> Any:
    """Console-script entry point."""
    try:
        return cli.main(args=argv, prog_name="pitstop", standalone_mode=False)
    except PitstopError as exc:
        fail(str(exc), exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(ExitCode.INTERRUPTED)
    except KeyboardInterrupt:
        sys.exit(ExitCode.INTERRUPTED)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:
        # A bug of ours, not the user's: one line, and the traceback only on request.
        if os.environ.get("PITSTOP_DEBUG"):
            traceback.print_exc()
        fail(f"internal error: {type(exc).__name__}: {exc} (PITSTOP_DEBUG=1 shows the traceback;"
             " please report it)", EXIT_INTERNAL)
    return None
