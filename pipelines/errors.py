"""Exceptions that steer an envelope: retry later, dead-letter now, or store as dropped."""


class PermanentError(Exception):
    """The envelope itself is wrong (malformed, unknown connector): retrying cannot help."""


class TransientError(Exception):
    """Something outside the envelope failed (database down, lock timeout): retry later."""
