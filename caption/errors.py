"""Every failure a user can cause is a `CaptionError`: one line naming the file or value and the
problem. The CLI prints it after `caption: error: ` and exits with EXIT_INPUT; library code raises
and never prints."""
from __future__ import annotations

EXIT_INPUT = 1     # a bad file, value or option


class CaptionError(Exception):
    """The base of every user-facing failure; str(e) is the whole message."""


class InputError(CaptionError, ValueError):
    """An input a model or command cannot take: an unreadable image, an unseen character, a bad value."""


class OptionError(InputError):
    """A bad option value. `name` is the option as the caller wrote it (an API argument such as
    beam_size); the CLI shows its flag instead (--beam)."""

    def __init__(self, name: str, problem: str):
        self.name, self.problem = name, problem
        super().__init__(f"{name} {problem}")


class DataError(CaptionError):
    """A data file that cannot be used; the message names the file (and line or entry)."""


class OutputError(CaptionError):
    """An output path that must not or cannot be written (a directory, a FIFO, a device, no permission)."""


class CheckpointError(CaptionError):
    """A file that is not a usable caption checkpoint, or foreign weights that do not fit."""
