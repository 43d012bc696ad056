"""Choosing a backend by URL scheme from a table of import strings, loaded lazily
so that an optional driver matters only to whoever asks for its scheme."""

from __future__ import annotations

import importlib
from typing import Any
from urllib.parse import urlsplit

from runyard.errors import ConfigurationError

# scheme -> (module, class, the extra that installs its driver or None)
BackendTable = dict[str, tuple[str, str, str | None]]


def load_backend(kind: str, url: str, table: BackendTable, **options: Any) -> Any:
    """An instance of the ``kind`` backend named by ``url``, constructed with it (and ``options``)."""
    scheme = urlsplit(url).scheme
    if scheme not in table:
        known = ", ".join(f"{name}://" for name in table)
        raise ConfigurationError(f"unknown {kind} URL {url!r}: use one of {known}")
    module_name, class_name, extra = table[scheme]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = f": pip install 'runyard[{extra}]'" if extra else ""
        raise ConfigurationError(f"{kind} {scheme}:// is not available ({exc}){hint}") from exc
    return getattr(module, class_name)(url, **options)
