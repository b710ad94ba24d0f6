"""``python -m mamba_pyserini.regression``: reproduction regressions in Pyserini's 2CR style.

Conditions live in ``mamba_pyserini/regressions/*.yaml``: a name, a display name, what they need (``gpu``,
``network``), setup commands, and per topic set the command that writes ``{run}`` and the expected scores.
Verdicts follow Pyserini's: OK (equal at 4 decimals), OKish (within 0.0005, or higher than expected), FAIL;
a condition with no expected value yet records its result (RECORDED)."""
from __future__ import annotations

import dataclasses
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import click

from ._cli import handle_errors, info

REGRESSIONS = Path(__file__).parent / "regressions"
TOLERANCE = 0.0005
REQUIREMENTS = ("gpu", "network")


@dataclasses.dataclass
class TopicRun:
    topics: str  # the topic set whose qrels judge the run
    command: str  # writes {run}
    scores: dict[str, float | None]


@dataclasses.dataclass
class Condition:
    name: str
    display: str
    requires: list[str]
    setup: list[dict]  # {"command": ..., "creates": path (skipped when it exists)}
    runs: list[TopicRun]
    metrics: dict[str, str]  # metric name -> trec_eval flags, for names evaluation.METRICS does not know
    source: str

    @property
    def offline(self) -> bool:
        return not self.requires


def load_conditions(directory: Path = REGRESSIONS) -> dict[str, Condition]:
    """Every condition of every YAML file, by name."""
    import yaml

    conditions: dict[str, Condition] = {}
    for path in sorted(directory.glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        for entry in data.get("conditions", []):
            try:
                condition = Condition(
                    entry["name"], entry["display"], list(entry.get("requires", [])), _flat(entry.get("setup", [])),
                    [TopicRun(t["topics"], t["command"], dict(t["scores"])) for t in entry["topics"]],
                    dict(data.get("metrics", {})), path.name)
            except (KeyError, TypeError) as e:
                raise ValueError(f"{path}: malformed condition {entry.get('name', '?')!r}: missing {e}") from None
            unknown = set(condition.requires) - set(REQUIREMENTS)
            if unknown or condition.name in conditions:
                raise ValueError(f"{path}: condition {condition.name!r} is a duplicate or requires unknown "
                                 f"{', '.join(sorted(unknown))}")
            conditions[condition.name] = condition
    return conditions


def _flat(steps: list) -> list[dict]:
    """Setup steps, with YAML-aliased lists of shared steps spliced in."""
    return [s for step in steps for s in (_flat(step) if isinstance(step, list) else [step])]


def verdict(expected: float | None, actual: float) -> str:
    if expected is None:
        return "RECORDED"
    if round(actual, 4) == round(expected, 4):
        return "OK"
    if abs(actual - expected) <= TOLERANCE + 1e-9 or actual > expected:
        return "OKish"
    return "FAIL"


def _substitute(command: str, **values) -> list[str]:
    words = [w.format(**values) for w in shlex.split(command)]
    return [sys.executable, *words[1:]] if words and words[0] == "python" else words


def run_condition(condition: Condition, directory: Path, dry_run: bool = False) -> list[dict]:
    """Run a condition's setup and commands in the repository root, then evaluate each run; one row per metric.
    Conditions that need no GPU run in fp32 (``MAMBA_PYSERINI_FP32=1``), so that their pins hold on any CPU."""
    from ._kernels import FP32_ENV
    from ._paths import COLLECTIONS
    from .evaluation import evaluate_run
    from .topics import load_topics

    cwd = COLLECTIONS.parent
    values = {"dir": str(directory.resolve())}
    env = {**os.environ, **({} if "gpu" in condition.requires else {FP32_ENV: "1"})}
    rows = []
    for step in condition.setup:
        creates = step.get("creates", "").format(**values)
        if creates and Path(creates).exists():
            continue
        _execute(_substitute(step["command"], **values), cwd, env, dry_run)
    for topic_run in condition.runs:
        run = directory.resolve() / f"run.{condition.name}.{topic_run.topics}.txt"
        _execute(_substitute(topic_run.command, run=str(run), **values), cwd, env, dry_run)
        if dry_run:
            continue
        topic_set = load_topics(topic_run.topics)
        names = list(topic_run.scores)
        flags = [condition.metrics.get(n, n) for n in names]
        measured = evaluate_run(run, topic_set.qrels, flags, qrels_name=topic_set.name)
        for name, flag in zip(names, flags):
            expected, actual = topic_run.scores[name], measured[flag]
            rows.append({"condition": condition.name, "topics": topic_run.topics, "metric": name,
                         "expected": expected, "actual": actual, "verdict": verdict(expected, actual)})
    return rows


def _execute(argv: list[str], cwd: Path, env: dict, dry_run: bool) -> None:
    click.echo(" ".join(shlex.quote(a) for a in argv))
    if dry_run:
        return
    proc = subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"command failed with exit code {proc.returncode}: {last}")


def markdown(rows: list[dict]) -> str:
    lines = ["| condition | topics | metric | expected | actual | verdict |", "|---|---|---|---|---|---|"]
    for r in rows:
        expected = "—" if r["expected"] is None else f"{r['expected']:.4f}"
        lines.append(f"| {r['condition']} | {r['topics']} | {r['metric']} | {expected} | {r['actual']:.4f} | "
                     f"{r['verdict']} |")
    return "\n".join(lines) + "\n"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--condition", "names", multiple=True, help="Run this condition (repeatable).")
@click.option("--all", "run_all", is_flag=True, help="Run every condition this machine can: the offline ones, plus "
                                                      "those needing a GPU and network with --include-online.")
@click.option("--include-online", is_flag=True, help="With --all: also the GPU/network conditions.")
@click.option("--list", "list_only", is_flag=True, help="List the conditions and exit.")
@click.option("--dry-run", "--display-commands", "dry_run", is_flag=True, help="Print the commands, run nothing.")
@click.option("--directory", default="runs/regressions", show_default=True, help="Where runs, indexes and the "
                                                                                 "report go.")
@handle_errors
def main(names, run_all, include_online, list_only, dry_run, directory):
    """Reproduce the conditions in mamba_pyserini/regressions/*.yaml and judge their scores."""
    from ._io import atomic_write

    conditions = load_conditions(REGRESSIONS)
    if list_only:
        width = max(len(n) for n in conditions) + 2
        for c in conditions.values():
            needs = f" [needs {', '.join(c.requires)}]" if c.requires else ""
            click.echo(f"{c.name:<{width}}{c.display}{needs}")
        return
    unknown = [n for n in names if n not in conditions]
    if unknown:
        raise ValueError(f"unknown condition {unknown[0]!r}; --list shows them")
    if names:
        chosen = [conditions[n] for n in names]
    elif run_all:
        chosen = [c for c in conditions.values() if c.offline or include_online]
    else:
        raise click.UsageError("give --condition NAME, --all or --list")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rows = []
    for condition in chosen:
        info(f"== {condition.name}: {condition.display}")
        start = time.monotonic()
        rows += run_condition(condition, directory, dry_run)
        if not dry_run:
            info(f"   {time.monotonic() - start:.0f} s")
    if dry_run:
        return
    width = max(len(r["condition"]) for r in rows) + 2
    click.echo(f"\n{'condition':<{width}}{'topics':<28}{'metric':<10}{'expected':>9}{'actual':>9}  verdict")
    for r in rows:
        expected = "-" if r["expected"] is None else f"{r['expected']:.4f}"
        click.echo(f"{r['condition']:<{width}}{r['topics']:<28}{r['metric']:<10}{expected:>9}{r['actual']:>9.4f}  "
                   f"{r['verdict']}")
    report = directory / "regression-report.md"
    with atomic_write(report) as f:
        f.write("# mamba_pyserini regressions\n\n" + markdown(rows))
    info(f"report written to {report}")
    failed = [r for r in rows if r["verdict"] == "FAIL"]
    if failed:
        raise click.ClickException(f"{len(failed)} of {len(rows)} scores FAIL")


if __name__ == "__main__":
    main()
