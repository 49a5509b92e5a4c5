"""Reading the small text files phfa and its users write (manifests, metric logs, image lists,
data configs) so that a damaged one is a sentence naming it, never a traceback."""
from __future__ import annotations

import json
from pathlib import Path

from pipeline.errors import PhfaError


def read_text(path: str | Path, what: str, fix: str = "fix or remove it") -> str:
    """The UTF-8 text of `path`; a file that is not UTF-8 or cannot be read is a PhfaError."""
    path = Path(path)
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise PhfaError(f"{what} {path} is not UTF-8 text (byte {e.start}); {fix}") from None
    except OSError as e:
        raise PhfaError(f"{what} {path} cannot be read ({e.strerror or e}); {fix}") from None


def read_json_object(path: str | Path, what: str, fix: str = "fix or remove it") -> dict:
    """A JSON object from `path`; anything else (not UTF-8, not JSON, a list) is a PhfaError."""
    text = read_text(path, what, fix)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise PhfaError(f"{what} {path} is damaged (not JSON: {e.msg} at line {e.lineno}); {fix}") from None
    if not isinstance(obj, dict):
        raise PhfaError(f"{what} {path} is damaged (a JSON {type(obj).__name__}, not an object); {fix}")
    return obj
