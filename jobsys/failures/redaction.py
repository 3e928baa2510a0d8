"""Redaction of secrets in job arguments and texts. Pure functions, no I/O.

Keys are matched case-insensitively as substrings (``api_key`` matches
``X-Api-Key``... after normalising ``-`` to ``_``) at any nesting depth. Values of
matching keys are replaced; the secret values found are also scrubbed from free
text such as exception messages, so a secret echoed in an error does not leak.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from jobsys.config.models import DEFAULT_REDACTED_KEYS

if TYPE_CHECKING:
    from jobsys.config import Config

DEFAULT_REPLACEMENT = "[REDACTED]"
MAX_DEPTH = 32  # deeper structures are cut, not walked
MIN_SECRET_LENGTH = 4  # shorter values would scrub ordinary words from messages


@dataclass(frozen=True)
class Redactor:
    keys: tuple[str, ...] = DEFAULT_REDACTED_KEYS
    replacement: str = DEFAULT_REPLACEMENT
    #: ``keys`` normalised once, not on every key of every capture.
    _needles: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_needles", tuple(_normalise(k) for k in self.keys))

    @classmethod
    def for_config(cls, config: Config) -> Redactor:
        """The redactor of ``config``'s ``redaction`` section (queues.yaml)."""
        section = config.queues.redaction
        return cls(keys=section.keys, replacement=section.replacement)

    def is_secret_key(self, key: object) -> bool:
        name = _normalise(str(key))
        return any(needle in name for needle in self._needles)

    def redact(self, value: Any) -> Any:
        """A copy of ``value`` with every secret-keyed value replaced."""
        return self._walk(value, 0, None)

    def secrets_in(self, value: Any) -> list[str]:
        """The secret values found in ``value`` (to scrub them from texts)."""
        found: list[str] = []
        self._walk(value, 0, found)
        return found

    def _walk(self, value: Any, depth: int, found: list[str] | None) -> Any:
        if depth > MAX_DEPTH:
            return self.replacement
        if isinstance(value, dict):
            out = {}
            for key, item in value.items():
                if self.is_secret_key(key):
                    if found is not None:
                        _collect(item, found)
                    out[key] = self.replacement
                else:
                    out[key] = self._walk(item, depth + 1, found)
            return out
        if isinstance(value, (list, tuple)):
            return [self._walk(item, depth + 1, found) for item in value]
        return value

    def scrub(self, text: str, secrets: Iterable[str]) -> str:
        """``text`` with each known secret value replaced."""
        for secret in sorted(set(secrets), key=len, reverse=True):
            if len(secret) >= MIN_SECRET_LENGTH:
                text = text.replace(secret, self.replacement)
        return text

    def redact_with_text(self, args: Any, *texts: str) -> tuple[Any, list[str]]:
        """Redacted ``args`` and each text scrubbed of the secrets found in ``args``."""
        secrets = self.secrets_in(args)
        return self.redact(args), [self.scrub(t, secrets) for t in texts]


def _normalise(key: str) -> str:
    return key.lower().replace("-", "_")


def _collect(value: Any, found: list[str]) -> None:
    if isinstance(value, dict):
        for item in value.values():
            _collect(item, found)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _collect(item, found)
    elif value is not None and not isinstance(value, bool):
        found.append(str(value))
