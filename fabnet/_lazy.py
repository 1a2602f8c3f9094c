"""Lazy package exports: a name listed in a package's ``__init__`` is imported on first use.

``fabnet.cli`` imports every subpackage's ``cli`` module to build its parser, and Python runs a
package's ``__init__`` before any of its modules. With eager ``__init__`` imports that pulled
torch into ``fabnet --help`` (1.9 s on a 2-core CPU, 1.0 s of it importing torch); now only the
command that runs imports it.

    __getattr__, __dir__ = lazy_exports(globals(), {"train": "fabnet.train.loop", ...})
"""

from __future__ import annotations

import importlib


def lazy_exports(namespace: dict, exports: dict[str, str]):
    """(``__getattr__``, ``__dir__``) for the package whose ``globals()`` is ``namespace``.

    exports: public name -> the module defining it. A name is imported on first access and
    then stored in ``namespace``, so later lookups are plain attribute reads.
    """
    package = namespace["__name__"]

    def __getattr__(name: str):
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
