"""The worker side: ``dramatiq workers`` imports this package to find broker and actors.

The broker must be set up before the actor modules are imported: they declare their
actors on the global broker. A process that configured its worker side already keeps
it (importing any module of ``workers`` never reconfigures a process).
"""

from workers import broker

broker.configure_from_environment()

from workers.actors import generate  # noqa: E402  (declared on the broker set up above)

__all__ = ["broker", "generate"]
