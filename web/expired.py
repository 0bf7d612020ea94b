"""A form whose CSRF token no longer matches comes back filled in, with a message.

Tokens live in the session cookie, signed with the secret key: a form goes stale when
the cookie is gone or the key changed (a restart with a random key). Answering a bare
400 would lose what the user typed; instead the same page is rendered again with what
was sent and a fresh token, so one more click sends it. A request that says it comes
from another site gets the plain refusal: its contents are not ours to show.
"""

from __future__ import annotations

from typing import Any

from flask import flash, render_template, request

from db import jobs
from web import graph, queries
from web.errors import ApiError
from web.security import check_csrf

#: Why nothing was done, above the form that came back.
EXPIRED = (
    "This form had expired (the server restarted, or the page was open a long time),"
    " so nothing was done."
)
#: What to do about it, on a form that came back filled in.
MESSAGE = f"{EXPIRED} It is filled in again: check it and send it again (or reload the page)."
#: What to do about it, on a job page's button.
BUTTON_MESSAGE = f"{EXPIRED} Press the button again (or reload the page)."


def check_csrf_or_recover() -> Any:
    """Check the CSRF token (a ``before_request`` hook); re-render the form on a stale one.

    Raises:
      ApiError: 400 when the token is wrong and the form cannot be recovered.
    """
    try:
        check_csrf()
    except ApiError:
        recovered = None if _cross_site() else _recover()
        if recovered is None:
            raise
        return recovered
    return None


def _cross_site() -> bool:
    return request.headers.get("Sec-Fetch-Site", "same-origin") not in {"same-origin", "none"}


def _recover() -> Any:
    args = request.view_args or {}
    if request.endpoint == "views.create_project":
        form = {key: request.form.get(key, "") for key in ("name", "description", "tasks")}
        message = MESSAGE
        if request.files.get("file") and request.files["file"].filename:
            message += " Choose the JSON file again: browsers do not keep it."
        error = {"message": message, "field": None}
        return render_template("project_new.html", form=form, error=error), 400
    if request.endpoint == "views.start_job":
        data = queries.project_data(args["project_id"])
        if data is None:
            return None
        batch_size = request.form.get("batch_size", "")
        page = render_template("project.html", project=data, batch_size=batch_size, error=MESSAGE)
        return page, 400
    if request.endpoint in {"views.cancel_job", "views.retry_job"}:
        try:
            job = jobs.snapshot(args["job_id"])
        except jobs.NotFoundError:
            return None
        flash(BUTTON_MESSAGE)  # shown by the page rendered now (the page's scripts read it)
        return render_template("job.html", job=job, graph=graph.of_job(job)), 400
    return None
