"""Real processes and real signals: Ctrl-C and SIGTERM end a command cleanly, ``--seed`` makes training reproducible
across processes, and ``kill -9`` while a checkpoint is written leaves a run that resumes exactly."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import FIXTURES

FLAG = FIXTURES / "train" / "flag-reranker.jsonl"


def start(args, cwd: Path) -> subprocess.Popen:
    """``python ARGS`` in a fresh process that takes Ctrl-C as a terminal would deliver it (SIGINT not ignored)."""
    return subprocess.Popen([sys.executable, *map(str, args)], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for(process: subprocess.Popen, *markers: bytes, timeout: float = 240) -> bytes:
    """Read the process's stderr until one of ``markers`` shows (progress bars end lines with \\r, so read raw
    chunks)."""
    seen, deadline = b"", time.monotonic() + timeout
    while not any(marker in seen for marker in markers):
        assert time.monotonic() < deadline and process.poll() is None, seen.decode(errors="replace")
        seen += os.read(process.stderr.fileno(), 4096)
    return seen


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_mid_rerank_ends_search_within_seconds_and_leaves_nothing(sig, code, tmp_path):
    output = tmp_path / "runs" / "run.txt"
    process = start(["-m", "mamba_pyserini.search", "--topics", "dl19", "--output", output], tmp_path)
    wait_for(process, b"rerank:", b"encode:")  # the JVM is up, the model loaded, scoring (or encoding) under way
    sent = time.monotonic()
    process.send_signal(sig)
    _, err = process.communicate(timeout=30)
    assert time.monotonic() - sent < 5
    assert process.returncode == code, err.decode()
    assert err.decode().strip().splitlines()[-1] == "Interrupted"
    assert b"Traceback" not in err and b"fatal error" not in err
    assert [p.name for p in tmp_path.rglob("*")] == []  # no output, no temporary file, no hs_err_pid*.log


SWALLOWED = """
import gc, os, signal, sys, time, weakref
import click
from mamba_pyserini._cli import handle_errors

class Thing:
    pass

@click.command()
@handle_errors
def main():
    thing = Thing()
    def callback(_):  # the signal arrives while a weakref callback runs, where Python only prints an exception
        os.kill(os.getpid(), int(sys.argv[1]))
        time.sleep(5)
    ref = weakref.ref(thing, callback)
    del thing
    gc.collect()
    time.sleep(10)
    print("ran on")

main([])
"""


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_that_lands_in_a_callback_still_ends_the_command(sig, code, tmp_path):
    """Seen in CI: Ctrl-C during an import's weakref callback was printed as "Exception ignored" and lost."""
    process = start(["-c", SWALLOWED, str(int(sig))], tmp_path)
    out, err = process.communicate(timeout=60)
    assert process.returncode == code, err.decode()
    assert out == b"" and err.decode().strip().splitlines() == ["Interrupted"]


def _train(model: Path, output: Path, *extra) -> list[str]:
    return ["-m", "mamba_pyserini.train", "cross-encoder", "--model", model, "--init", "random", "--data", FLAG,
            "--lr", "3e-3", "--warmup-steps", "2", "--queries-per-step", "2", "--group-size", "4",
            "--log-steps", "1", "--output", output, *extra]


def _losses(output: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (output / "train_log.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_the_same_seed_gives_the_same_losses_in_fresh_processes(tiny_checkpoints, tmp_path):
    """A random initialisation and the data order both come from --seed alone."""
    runs = []
    for name, seed in [("a", "7"), ("b", "7"), ("c", "8")]:
        process = start(_train(tiny_checkpoints["mamba"], tmp_path / name, "--max-steps", "3", "--seed", seed),
                        tmp_path)
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err.decode()
        runs.append(_losses(tmp_path / name))
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


@pytest.mark.slow
def test_kill_9_while_checkpointing_leaves_a_run_that_resumes_exactly(tiny_checkpoints, tmp_path):
    """Killed while writing checkpoint 4 or later (or, if the write is too quick to catch, just after it)."""
    steps = ["--max-steps", "8", "--save-steps", "1", "--save-total-limit", "2"]
    model = tiny_checkpoints["mamba"]
    whole = start(_train(model, tmp_path / "whole", *steps), tmp_path)
    _, err = whole.communicate(timeout=300)
    assert whole.returncode == 0, err.decode()

    killed = tmp_path / "killed"
    process = start(_train(model, killed, *steps), tmp_path)
    checkpoints, deadline = killed / "checkpoints", time.monotonic() + 300
    while not any(p.name >= ("step-00000004.tmp" if p.name.endswith(".tmp") else "step-00000005")
                  for p in _listing(checkpoints)):
        assert process.poll() is None and time.monotonic() < deadline, "training ended before a 4th checkpoint"
    process.kill()  # SIGKILL: no handler runs, whatever was being written stays half-written
    process.communicate()

    resumed = start(_train(model, killed, *steps, "--resume"), tmp_path)
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err.decode()
    assert b"resumed from" in err
    assert _losses(killed) == _losses(tmp_path / "whole")
    assert not any(p.name.endswith(".tmp") for p in _listing(checkpoints))


def _listing(directory: Path) -> list[Path]:
    try:
        return list(directory.iterdir())
    except FileNotFoundError:
        return []
