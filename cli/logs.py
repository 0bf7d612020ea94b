"""Log lines of the CLI: warnings only unless ``--verbose``, and never inside the progress bar.

Worker threads log while the main thread draws the progress line with carriage returns;
a log line written in between would be glued to the bar. The handler here writes to
stderr through :func:`cli.render.write_above`, which clears the bar's line first and
draws it again below.
"""

from __future__ import annotations

import logging

import click

from cli import render

#: Format of a log line.
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class AboveProgress(logging.Handler):
    """Writes records to stderr, above the progress line when one is drawn."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
        except Exception:  # logging's contract: report, never raise into the caller
            self.handleError(record)
            return
        render.write_above(lambda: click.echo(message, err=True))


def configure(level: str, *, verbose: bool) -> None:
    """Send log records to stderr: those at ``level`` with ``verbose``, else warnings and worse.

    Parameters:
      level: the ``LOG_LEVEL`` setting.
      verbose: show records at ``level`` (INFO by default), not only warnings.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, AboveProgress):
            root.removeHandler(handler)  # an earlier command of this process (tests)
    handler = AboveProgress()
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    threshold = logging.getLevelName(level.upper())
    handler.setLevel(threshold if verbose else max(threshold, logging.WARNING))
    root.addHandler(handler)
    root.setLevel(threshold)
    # Migration chatter would drown the command's own output.
    logging.getLogger("alembic").setLevel(logging.WARNING)
