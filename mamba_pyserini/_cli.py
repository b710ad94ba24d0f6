"""Shared CLI plumbing: logging to stderr and one-line errors (bad input exits with code 2)."""
from __future__ import annotations

import functools
import logging
import sys

import click

BAD_INPUT = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError)


class BadInput(click.ClickException):
    """Bad input on the command line or in a file it names: ``Error: <one line>`` and exit code 2."""

    exit_code = 2


def one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text[:500]


def handle_errors(command):
    """Turn the library's bad-input exceptions into :class:`BadInput` and runtime failures into exit code 1."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(name)s: %(message)s")
        logging.getLogger("mamba_pyserini").setLevel(logging.INFO)
        try:
            return command(*args, **kwargs)
        except BAD_INPUT as e:
            raise BadInput(one_line(e)) from None
        except RuntimeError as e:
            raise click.ClickException(one_line(e)) from None

    return wrapper


def option_group(*options):
    """One decorator applying click options (or other decorators) in the order written."""
    def decorate(command):
        for option in reversed(options):
            command = option(command)
        return command
    return decorate


def info(message: str) -> None:
    click.echo(message, err=True)
