"""The dialogues of `chatterbot-corpus`, loaded from the installed package.

The package ships one directory per language under ``chatterbot_corpus/data``
with YAML files whose ``conversations`` key holds a list of dialogues, each a
list of alternating utterances. The data is hand-made and a little uneven, so
loading is forgiving: a dialogue written as a bare string (a YAML indentation
slip) becomes a one-utterance dialogue, numbers and booleans become their
text, and blank utterances are dropped (the server refuses empty bodies).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from importlib import resources
from importlib.abc import Traversable

import yaml
from attrs import frozen

__all__ = ["CorpusError", "Dialogue", "available_languages", "load_dialogues"]

logger = logging.getLogger(__name__)

_PACKAGE = "chatterbot_corpus"

#: The safe loader, in C when PyYAML was built with libyaml.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class CorpusError(Exception):
    """The corpus is not installed, or a requested language is not in it."""


@frozen
class Dialogue:
    """One dialogue of the corpus: its origin and its utterances in order."""

    language: str
    source: str
    index: int
    utterances: tuple[str, ...]


def _data_root() -> Traversable:
    try:
        root = resources.files(_PACKAGE) / "data"
    except ModuleNotFoundError as exc:
        raise CorpusError(
            "chatterbot-corpus is not installed (pip install chatterbot-corpus, "
            "or fleets-mailbox[server])"
        ) from exc
    if not root.is_dir():
        raise CorpusError(f"{_PACKAGE} has no data directory")
    return root


def available_languages() -> list[str]:
    """Returns the language directories of the installed corpus, sorted."""
    return sorted(p.name for p in _data_root().iterdir() if p.is_dir())


def load_dialogues(languages: Iterable[str] | None = None) -> list[Dialogue]:
    """Returns every dialogue of the given languages (all when None).

    The order is stable: by language, then file name, then position in the
    file. Raises `CorpusError` for a language the corpus does not have.
    """
    root = _data_root()
    known = available_languages()
    wanted = known if languages is None else list(dict.fromkeys(languages))
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise CorpusError(
            f"unknown language(s) {', '.join(unknown)}; "
            f"the corpus has {', '.join(known)}"
        )
    dialogues: list[Dialogue] = []
    for language in wanted:
        directory = root / language
        files = sorted(
            (p for p in directory.iterdir() if p.name.endswith((".yml", ".yaml"))),
            key=lambda p: p.name,
        )
        for path in files:
            source = f"{language}/{path.name}"
            for index, utterances in enumerate(_conversations(path, source)):
                dialogues.append(Dialogue(language, source, index, utterances))
    return dialogues


def _conversations(path: Traversable, source: str) -> Iterator[tuple[str, ...]]:
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_LOADER)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        logger.warning("skipping %s: %s", source, exc)
        return
    raw = data.get("conversations") if isinstance(data, dict) else None
    if not isinstance(raw, list):
        logger.warning("skipping %s: no conversations list", source)
        return
    for item in raw:
        utterances = _utterances(item if isinstance(item, list) else [item])
        if utterances:
            yield utterances


def _utterances(items: Sequence[object]) -> tuple[str, ...]:
    texts = []
    for item in items:
        if isinstance(item, str | int | float | bool):
            text = str(item)
            if text.strip():
                texts.append(text)
    return tuple(texts)
