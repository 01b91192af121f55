"""Third-party start-up noise kept off the terminal, narrowly: each filter names the one
message it drops and why the user cannot act on it. Everything else (every other warning,
every other log line, every other line TensorFlow writes) stays visible.

Call :func:`install` at the start of an entry point (``training.train``, ``python -m
serving``), before TensorFlow is imported; or run a module under it, installed before the
module imports anything: ``python -m quiet training.train …`` (the MLproject's train entry
point: MLflow warns once already while ``pyfunc.contract`` is imported). Nothing happens at
import time. A top-level module, like ``locations``: serving and training both use it, and
neither imports the other.

TensorFlow's two start-up lines ("All log messages before absl::InitializeLog() …" and the
oneDNN notice) are written by its C++ code straight to file descriptor 2 while ``import
tensorflow`` runs, before its logging is set up, so ``TF_CPP_MIN_LOG_LEVEL`` does not hold
them back (TensorFlow 2.21) and ``TF_ENABLE_ONEDNN_OPTS=0`` would switch the oneDNN kernels
off rather than only the notice. :func:`install` therefore captures descriptor 2 while
``tensorflow`` itself is imported, and writes back every captured line but those.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import logging
import os
import re
import runpy
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from types import ModuleType

# (message regex, category, why it is not the user's business). MLflow colours some of its
# warnings: the message then starts with an ANSI escape.
_ANSI = r"(?:\x1b\[[0-9;]*m)?"
WARNINGS: tuple[tuple[str, type[Warning], str], ...] = (
    (
        _ANSI + r"Add type hints to the `predict` method",
        UserWarning,
        "the pyfunc is logged with an explicit signature (pyfunc.signature)",
    ),
    (
        _ANSI + r"An input example was not provided when logging the model",
        UserWarning,
        "training.register logs one; loading a model logged without one is not the user's to fix",
    ),
    (
        r"The specified dataset source can be interpreted in multiple ways",
        UserWarning,
        "MLflow's guess between two equal local sources of the MNIST file",
    ),
    (
        r"`shuffle=True` was passed, but will be ignored since the data `x` was provided as "
        r"a tf\.data\.Dataset",
        UserWarning,
        "the training dataset is shuffled by training.augment itself",
    ),
    (
        r"In the future `np\.object` will be defined",
        FutureWarning,
        "Keras's ONNX export probing NumPy; nothing of the project's",
    ),
    (
        r".*Model registry stages will be removed",
        FutureWarning,
        "stages are how this project's registry works (docs/operations.md)",
    ),
)

# (logger, message regex): log records dropped by message, only on that logger.
LOG_RECORDS: tuple[tuple[str, str], ...] = (
    # MLflow tags runs with the git commit when it can; no git is no problem here.
    ("mlflow.utils.git_utils", r"Failed to import Git"),
    ("mlflow.tracking._tracking_service.utils", r"Failed to import Git"),
    # The project logs its pyfunc as a Python object on purpose (pyfunc/model.py), and has
    # the example it gives checked: neither line asks anything of the user.
    ("mlflow.pyfunc", r"Passing a Python object as `python_model` causes it to be serialized"),
    ("mlflow.pyfunc", r"Validating input example against model signature"),
    # The augmentation's per-batch function runs as plain TensorFlow ops as it is.
    ("tensorflow", r"AutoGraph could not transform <function dataset\.<locals>\."),
)

# Lines TensorFlow's C++ writes to descriptor 2 while it is imported.
STDERR_LINES: tuple[str, ...] = (
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    r"I\d{4} [\d:. ]+\d+ port\.cc:\d+\] oneDNN custom operations are on\.",
    r"I\d{4} [\d:. ]+\d+ cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized",
)

_STDERR_NOISE = re.compile("|".join(f"(?:{line})" for line in STDERR_LINES))


_NOISY_WARNINGS = [(re.compile(message, re.I), category) for message, category, _ in WARNINGS]


class _ShowWarning:
    """``warnings.showwarning`` that passes on all but the warnings in :data:`WARNINGS`."""

    def __init__(self, show: Callable[..., None]) -> None:
        self.show = show

    def __call__(self, message, category, filename, lineno, file=None, line=None) -> None:
        text = str(message)
        if any(issubclass(category, c) and p.match(text) for p, c in _NOISY_WARNINGS):
            return
        self.show(message, category, filename, lineno, file, line)


class _MessageFilter(logging.Filter):
    def __init__(self, pattern: str) -> None:
        super().__init__()
        self.pattern = re.compile(pattern)

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.match(record.getMessage())


def install(modules: Sequence[str] = ("tensorflow",)) -> None:
    """Filter the noise above in this process. ``modules``: the packages whose import is
    captured on descriptor 2 (the first import of each, by anyone)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    for message, category, _why in WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    # MLflow shows its own warnings through ``simplefilter("once", UserWarning)`` inside
    # ``catch_warnings`` (its filter_user_warnings_once), which outranks every filter above:
    # the same warnings are also held back where they are shown.
    if not isinstance(warnings.showwarning, _ShowWarning):
        warnings.showwarning = _ShowWarning(warnings.showwarning)
    for name, pattern in LOG_RECORDS:
        logger = logging.getLogger(name)
        if not any(
            isinstance(f, _MessageFilter) and f.pattern.pattern == pattern for f in logger.filters
        ):
            logger.addFilter(_MessageFilter(pattern))
    for name in modules:
        if name not in sys.modules and not any(
            isinstance(f, _QuietImport) and f.name == name for f in sys.meta_path
        ):
            sys.meta_path.insert(0, _QuietImport(name))


@contextlib.contextmanager
def filtered_stderr() -> Iterator[None]:
    """Descriptor 2 goes to a temporary file while the block runs; afterwards every line of
    it but the known noise is written back, also when the block raises."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [
                line
                for line in capture.read().splitlines(keepends=True)
                if not _STDERR_NOISE.match(line.decode(errors="replace"))
            ]
            if kept:
                os.write(2, b"".join(kept))


class _QuietImport(importlib.abc.MetaPathFinder):
    """Finds ``name`` with the other finders, and runs its module code inside
    :func:`filtered_stderr`. Removes itself once used."""

    def __init__(self, name: str) -> None:
        self.name = name

    def find_spec(self, fullname, path, target=None):
        if fullname != self.name:
            return None
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _FilteredLoader(spec.loader)
        return spec


class _FilteredLoader(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        # The real loader stays the module's own, for pkgutil and importlib.resources.
        module.__loader__ = self.loader
        if module.__spec__ is not None:
            module.__spec__.loader = self.loader
        with filtered_stderr():
            self.loader.exec_module(module)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m quiet MODULE ARGS…``: ``python -m MODULE ARGS…`` with :func:`install` first."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0].startswith("-"):
        sys.exit("usage: python -m quiet MODULE [ARGS…]")
    install()
    sys.argv = args
    # sys.modules["__main__"] stays this module (alter_sys=False): a process the module
    # spawns (multiprocessing's "spawn") then starts by importing ``quiet`` as its main
    # module, and installs the same filters (below) before it imports anything else.
    runpy.run_module(args[0], run_name="__main__", alter_sys=False)


if __name__ == "__main__":
    # This very file, imported as ``quiet``: the module run below imports the same copy.
    import quiet

    quiet.main()
elif __name__ == "__mp_main__":
    import quiet

    quiet.install()
