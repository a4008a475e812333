"""The one exception type for user-facing failures: entry points print its message as a single line."""


class DequantizerError(Exception):
    """A failure the user can fix (bad config value, missing data, offline...). The message says how."""
