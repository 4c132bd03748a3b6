"""The files of the offline model that the wordllama wheel ships: its weights and tokenizer.

Kept apart from the provider (``syncsvc.providers.wordllama``) so token counting
(``syncsvc.embed.tokens``) needs no provider module.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from types import ModuleType
from typing import Any

from syncsvc.core.errors import ConfigurationError

WEIGHTS = "weights/l2_supercat_256.safetensors"
TOKENIZER = "tokenizers/l2_supercat_tokenizer_config.json"


def wordllama_package() -> ModuleType:
    """The ``wordllama`` package, imported without letting it configure logging.

    Its import calls ``logging.basicConfig(level=INFO)``: in a host application that has not
    configured logging yet, that would install a handler on the root logger and lower its level
    to INFO. The root logger is put back as it was, and wordllama's own INFO lines stay quiet.
    """
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        import wordllama
    except ImportError:
        raise ConfigurationError(
            "provider 'local' needs the wordllama package (pip install wordllama)"
        ) from None
    finally:
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)
    quiet = logging.getLogger("wordllama")
    if quiet.level == logging.NOTSET:  # a host that set a level for it keeps its choice
        quiet.setLevel(logging.WARNING)
    package: ModuleType = wordllama
    return package


def package_file(relative: str) -> Path:
    path = Path(str(wordllama_package().__file__)).parent / relative
    if not path.is_file():
        raise ConfigurationError(f"the wordllama package has no {relative}: reinstall it")
    return path


@functools.cache
def tokenizer() -> Any:
    """The model's tokenizer (for counting and cutting), loaded once per process."""
    from tokenizers import Tokenizer

    loaded = Tokenizer.from_file(str(package_file(TOKENIZER)))
    loaded.no_padding()
    loaded.no_truncation()
    return loaded
