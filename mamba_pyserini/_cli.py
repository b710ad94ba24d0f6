"""Shared CLI plumbing: logging to stderr, one-line errors (bad input exits with code 2), and clean interrupts."""
from __future__ import annotations

import dataclasses
import functools
import logging
import os
import signal
import sys
import threading

import click

from ._io import one_line

KERNEL_ENV = "MAMBA_PYSERINI_KERNEL"  # fast | ref: the Mamba kernel path asked for (``_kernels.kernel_path``)
BAD_INPUT = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, FileExistsError, PermissionError)


class BadInput(click.ClickException):
    """Bad input on the command line or in a file it names: ``Error: <one line>`` and exit code 2."""

    exit_code = 2


class Terminated(BaseException):
    """SIGTERM, raised in the main thread like KeyboardInterrupt so that temporary files are removed on the way out."""


def _terminate(signum, frame):
    raise Terminated


def _redeliver(unraisable) -> None:
    """``sys.unraisablehook``: an interrupt that landed where Python can only print it (a weakref callback such as
    the import system's, a ``__del__``) would be lost and the command would run on; send it again, from outside."""
    if isinstance(unraisable.exc_value, (KeyboardInterrupt, Terminated)):
        signum = signal.SIGINT if isinstance(unraisable.exc_value, KeyboardInterrupt) else signal.SIGTERM
        timer = threading.Timer(0.01, signal.pthread_kill, (threading.main_thread().ident, signum))
        timer.daemon = True
        timer.start()
    else:
        sys.__unraisablehook__(unraisable)


def handle_errors(command):
    """Turn the library's bad-input exceptions into :class:`BadInput`, runtime failures into exit code 1, and Ctrl-C
    (SIGINT) or SIGTERM into one ``Interrupted`` line with exit code 130 or 143."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(name)s: %(message)s")
        logging.getLogger("mamba_pyserini").setLevel(logging.INFO)
        previous, hook = signal.getsignal(signal.SIGTERM), sys.unraisablehook
        if previous == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _terminate)
        sys.unraisablehook = _redeliver
        try:
            return command(*args, **kwargs)
        except BAD_INPUT as e:
            raise BadInput(one_line(e)) from None
        except RuntimeError as e:
            raise click.ClickException(one_line(e)) from None
        except (KeyboardInterrupt, Terminated) as e:
            click.echo("\nInterrupted", err=True)
            sys.exit(130 if isinstance(e, KeyboardInterrupt) else 143)
        finally:
            signal.signal(signal.SIGTERM, previous)
            sys.unraisablehook = hook

    return wrapper


def _ask_kernel(ctx, param, value: str) -> str:
    if value != "auto":
        os.environ[KERNEL_ENV] = value
    return value


kernel_option = click.option(
    "--kernel", type=click.Choice(["auto", "fast", "ref"]), default="auto", show_default=True, expose_value=False,
    callback=_ask_kernel, help="Mamba layers on mamba_ssm's CUDA kernels (fast: an error with an install hint where "
                               "they cannot run), on the PyTorch ops (ref), or fast where available (auto).")


def setting(default, help: str, choices=None, low=None, closed: bool = False, type=None, flag: str | None = None):
    """A dataclass field that is also a command-line option (:func:`field_options`): its help, choices, lower bound
    (excluded for floats unless ``closed``), value type where the default is None, and flag where it is not the
    field's name (``--lr`` for ``learning_rate``). A bool field defaulting to False is a flag."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices, "low": low, "closed": closed,
                                                        "type": type, "flag": flag})


def field_options(cls):
    """A decorator adding one click option per field of the dataclass ``cls`` made by :func:`setting`, in order, with
    the field's default (so that the defaults live in the dataclass alone)."""
    def option(field: dataclasses.Field):
        meta, default = field.metadata, field.default
        name = meta["flag"] or "--" + field.name.replace("_", "-")
        if default is False:
            return click.option(name, field.name, is_flag=True, help=meta["help"])
        kind = meta["type"] or type(default)
        if meta["choices"]:
            kind = click.Choice(meta["choices"])
        elif meta["low"] is not None:
            kind = (click.IntRange(meta["low"]) if kind is int
                    else click.FloatRange(meta["low"], min_open=not meta["closed"]))
        return click.option(name, field.name, default=default, show_default=default is not None, type=kind,
                            help=meta["help"])

    return option_group(*(option(f) for f in dataclasses.fields(cls) if "help" in f.metadata))


def option_group(*options):
    """One decorator applying click options (or other decorators) in the order written."""
    def decorate(command):
        for option in reversed(options):
            command = option(command)
        return command
    return decorate


def info(message: str) -> None:
    click.echo(message, err=True)
