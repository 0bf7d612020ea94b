"""Our Dramatiq middleware, one class per module."""

from workers.middleware.progress import Progress

__all__ = ["Progress"]
