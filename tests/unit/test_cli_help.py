"""The CLI's help: plain text, every option explained with its default, summaries never cut."""

from __future__ import annotations

import re
from collections.abc import Iterator

import click
import pytest
from click.testing import CliRunner

from pitstop.cli import cli
from pitstop.cli.common import first_sentence, give_summaries

pytestmark = pytest.mark.timeout(60)

REST_MARKUP = re.compile(r"``|:(class|func|meth|mod|attr|data|exc|obj|ref|py:\w+):`")
CORE = {"up", "worker", "beat", "flower", "serve", "redis", "emit", "watch", "events", "run",
        "runs", "show", "cancel", "doctor", "log", "keygen"}
"""The commands of pitstop's core (issue 6): each option says what it does and its default."""


def walk(group: click.Group, path: str = "pitstop") -> Iterator[tuple[str, click.Command]]:
    for name, command in sorted(group.commands.items()):
        yield f"{path} {name}", command
        if isinstance(command, click.Group):
            yield from walk(command, f"{path} {name}")


def options(command: click.Command) -> list[click.Option]:
    return [param for param in command.params
            if isinstance(param, click.Option) and param.name not in ("help", "version")]


@pytest.mark.parametrize(("path", "command"), list(walk(cli)), ids=str)
def test_help_is_plain_text_without_rest_markup(path: str, command: click.Command) -> None:
    texts = [command.help or "", command.short_help or ""]
    texts += [option.help or "" for option in options(command)]
    for text in texts:
        assert not REST_MARKUP.search(text), f"{path}: reST markup in {text!r}"


@pytest.mark.parametrize(("path", "command"),
                         [(path, command) for path, command in walk(cli)
                          if path.split()[1] in CORE], ids=str)
def test_every_core_option_is_described_with_its_default(path: str,
                                                          command: click.Command) -> None:
    for option in options(command):
        name = option.opts[-1]
        assert option.help, f"{path} {name} has no help"
        takes_a_value = not option.is_flag and not option.multiple and option.nargs == 1
        if takes_a_value:
            shows_default = option.show_default and option.default is not None
            assert shows_default or "default" in option.help.lower(), (
                f"{path} {name}: say its default ({option.help!r})")


def test_pitstop_help_never_cuts_a_summary_mid_sentence() -> None:
    result = CliRunner().invoke(cli, ["--help"], terminal_width=80)
    assert result.exit_code == 0
    listing = result.output.split("Commands:", 1)[1]
    assert "..." not in listing, listing
    for _, command in walk(cli):
        assert command.short_help, f"{command.name} has no summary"
        assert not command.short_help.endswith("..."), command.short_help


def test_the_help_shown_is_plain_text_whatever_the_docstring_says() -> None:
    @click.command()
    @click.option("--x", help="Like ``--y``, see :class:`~pitstop.runs.RunStore`.")
    def marked() -> None:
        """Run it: see :func:`pitstop.cli.main` and ``--`` (:ref:`the docs <docs>`)."""

    group = click.Group("g", commands=[marked])
    give_summaries(group)
    shown = CliRunner().invoke(group, ["marked", "--help"], terminal_width=100).output
    assert not REST_MARKUP.search(shown), shown
    assert "see pitstop.cli.main and '--' (the docs)" in shown
    assert "Like '--y', see RunStore." in shown


def test_a_summary_is_the_first_sentence_whole() -> None:
    assert first_sentence("Do a thing: with a colon. Then more.\n\nDetails.") == (
        "Do a thing: with a colon.")
    assert first_sentence("One line\n    wrapped here\n\nSecond paragraph.") == (
        "One line wrapped here")
