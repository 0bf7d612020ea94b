"""Our Dramatiq middleware, one class per module."""

from workers.middleware.ai_limits import AILimits
from workers.middleware.metering import Metering
from workers.middleware.progress import Progress
from workers.middleware.termination import GracefulTermination

__all__ = ["AILimits", "GracefulTermination", "Metering", "Progress"]
