"""The worker side: ``dramatiq workers`` imports this package to find broker and actors.

The broker module must be imported first: it sets the global broker that the actor
modules declare their actors on.
"""

from workers import broker
from workers.actors import generate

broker.configure()

__all__ = ["broker", "generate"]
