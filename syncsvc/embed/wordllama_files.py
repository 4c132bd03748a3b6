"""The files of the offline model that the wordllama wheel ships: its weights and tokenizer.

Kept apart from the provider (``syncsvc.providers.wordllama``) so token counting
(``syncsvc.embed.tokens``) needs no provider module.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from syncsvc.core.errors import ConfigurationError

WEIGHTS = "weights/l2_supercat_256.safetensors"
TOKENIZER = "tokenizers/l2_supercat_tokenizer_config.json"


def package_file(relative: str) -> Path:
    try:
        import wordllama
    except ImportError:
        raise ConfigurationError(
            "provider 'local' needs the wordllama package (pip install wordllama)"
        ) from None
    path = Path(wordllama.__file__).parent / relative
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
