"""Module-level functions the topic tests subscribe as handlers."""


def on_notification(notification):
    """A handler: does nothing (the worker calls it; the tests only subscribe it)."""
    return None


NOT_A_FUNCTION = 42
