"""The errors a person can meet, typed: each names what it concerns (a setting, a link, a record, a member
hash or a stored row) and says what to do. Stack traces are for bugs; these are for people.

Layering: this module imports nothing of the product, so every layer may raise these.
"""

from __future__ import annotations


class ConsentBridgeError(Exception):
    """A problem someone can act on. ``subject`` names the setting, link, record or member hash."""

    def __init__(self, subject: str, problem: str, todo: str = "") -> None:
        self.subject = subject
        self.problem = problem
        self.todo = todo
        super().__init__(f"{subject}: {problem}" + (f"; {todo}" if todo else ""))


class ConfigurationError(ConsentBridgeError):
    """A setting (or what it points at) is wrong: ``subject`` is the setting's name."""


class LinkError(ConsentBridgeError):
    """A link cannot be synced as configured (its marketing list or audience is missing, unreadable, ...)."""


class StoredFormatError(ConsentBridgeError):
    """A stored row or queue message is in a format this version cannot read (written by a newer version,
    or damaged). ``subject`` names the table or queue and the row."""
