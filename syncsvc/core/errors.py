"""Exceptions users see. Messages say what is wrong and what to do."""

from __future__ import annotations


class SyncsvcError(Exception):
    """Base class of all syncsvc errors."""


class ConfigurationError(SyncsvcError):
    """The environment or configuration cannot work (missing pgvector, bad URL...)."""


class ValidationError(SyncsvcError):
    """A user request is invalid (unknown table, column, dimensions...)."""


class TargetDefinitionError(SyncsvcError):
    """A target's stored definition (template, columns) cannot be turned into SQL: the target
    is paused with this message; the others carry on."""


class NotFoundError(SyncsvcError):
    """A named object (target, generation, job) does not exist."""
