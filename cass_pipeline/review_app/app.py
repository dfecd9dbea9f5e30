"""`cass review-app`: server-rendered pages where reviewers settle flagged report labels and
readers judge CASS's answers. Every page needs a login; every form carries the session's
CSRF token; every decision is audited. The pages only read the pipeline's outputs; a label
decision is written as the override file the report stage already reads (docs/review.md)."""

from __future__ import annotations

import math
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from cass_pipeline.domain.anatomy import BRANCHES, CATEGORIES, STENOSIS_CLASSES
from cass_pipeline.domain.prediction.outputs import WRITERS
from cass_pipeline.domain.reports.flags import HOLDING
from cass_pipeline.domain.review.decisions import (
    LABEL_CHOICES,
    agreement,
    settled,
    verdict_table,
    write_overrides,
)
from cass_pipeline.domain.review.pages import (
    PSEUDONYM,
    choices_for,
    prediction_file,
    prediction_of,
    reading_list,
    report_under_review,
    review_queue,
)
from cass_pipeline.domain.review.store import ROLES, LoginError, ReviewStore, Session, Verdict
from cass_pipeline.layout import DataLayout

COOKIE = "cass_session"
#: The prediction's pictures the reading room shows, by output format, in this order.
PICTURES = ("png", "explanations")
LOGIN_CSRF = "cass_login_csrf"
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self'; style-src 'self' "
    "'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class ReviewApp:
    """Where the app reads the pipeline's outputs and keeps its people and decisions."""

    layout: DataLayout
    store: ReviewStore
    #: The cookie only travels over HTTPS (behind a TLS proxy); off for 127.0.0.1.
    secure_cookie: bool = False


class RefusedError(Exception):
    """A request the app answers with a status and a one-line reason."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


templates = Environment(
    loader=PackageLoader("cass_pipeline.review_app", "templates"),
    autoescape=select_autoescape(["html"]),
)
templates.filters["utc"] = lambda at: datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S")
templates.filters["number"] = lambda x: "-" if x is None or math.isnan(x) else f"{x:.2f}"


def page(name: str, status: int = 200, **values) -> HTMLResponse:
    return HTMLResponse(templates.get_template(name).render(**values), status, headers=HEADERS)


def create_app(app: ReviewApp) -> Starlette:
    """The review app's routes over `app`'s data."""

    def session_of(request: Request, role: str | None = None) -> Session:
        session = app.store.session(request.cookies.get(COOKIE))
        if session is None:
            raise RefusedError(401, "log in first")
        if role is not None and not session.may(role):
            raise RefusedError(403, f"this page is for the {role} role")
        return session

    async def form_of(request: Request, session: Session) -> dict:
        form = dict(await request.form())
        if not secrets.compare_digest(str(form.get("csrf", "")), session.csrf):
            raise RefusedError(403, "the form's CSRF token is missing or wrong: reload the page")
        return form

    def patient_of(request: Request) -> str:
        patient = request.path_params["patient"]
        if not PSEUDONYM.match(patient):
            raise RefusedError(404, "no such patient")
        return patient

    def guarded(handler):
        async def run(request: Request) -> Response:
            try:
                return await handler(request)
            except RefusedError as refused:
                if refused.status == 401 and request.method == "GET":
                    return RedirectResponse("/login", 303, headers=HEADERS)
                return page("refused.html", refused.status, reason=refused.reason)

        return run

    async def login_page(request: Request) -> Response:
        token = secrets.token_urlsafe(24)
        response = page("login.html", csrf=token, error=request.query_params.get("error"))
        response.set_cookie(
            LOGIN_CSRF, token, httponly=True, samesite="strict", secure=app.secure_cookie
        )
        return response

    async def login(request: Request) -> Response:
        form = dict(await request.form())
        expected = request.cookies.get(LOGIN_CSRF, "")
        if not expected or not secrets.compare_digest(str(form.get("csrf", "")), expected):
            raise RefusedError(403, "the login form's CSRF token is missing or wrong: reload it")
        try:
            token, _ = app.store.login(str(form.get("name", "")), str(form.get("password", "")))
        except LoginError:
            return RedirectResponse("/login?error=1", 303, headers=HEADERS)
        response = RedirectResponse("/", 303, headers=HEADERS)
        response.set_cookie(
            COOKIE, token, httponly=True, samesite="strict", secure=app.secure_cookie
        )
        response.delete_cookie(LOGIN_CSRF)
        return response

    async def logout(request: Request) -> Response:
        session = session_of(request)
        await form_of(request, session)
        app.store.logout(request.cookies[COOKIE])
        response = RedirectResponse("/login", 303, headers=HEADERS)
        response.delete_cookie(COOKIE)
        return response

    async def home(request: Request) -> Response:
        session = session_of(request)
        return page(
            "home.html",
            session=session,
            to_review=len(review_queue(app.layout)),
            disputed=len(settled(app.store.decisions())[1]),
            worklist=len(reading_list(app.layout)),
        )

    async def queue(request: Request) -> Response:
        session = session_of(request, "reviewer")
        standing, disputed = settled(app.store.decisions())
        return page(
            "queue.html",
            session=session,
            queue=review_queue(app.layout).to_dict("records"),
            standing=standing,
            disputed=disputed,
        )

    async def report(request: Request) -> Response:
        session = session_of(request, "reviewer")
        patient = patient_of(request)
        shown = report_under_review(app.layout, patient)
        if shown is None:
            raise RefusedError(404, "no flagged report of this patient")
        if request.method == "POST":
            form = await form_of(request, session)
            labels = {}
            if form.get("action") != "accept":
                for row in shown.branches:
                    chosen = str(form.get(f"label:{row.branch}", row.parsed))
                    if chosen not in choices_for(row.parsed):
                        raise RefusedError(
                            400, f"{row.branch}: {chosen!r} is not a label to choose"
                        )
                    if chosen != row.parsed:
                        labels[row.branch] = chosen
                added = str(form.get("add_branch", ""))
                if added:
                    chosen = str(form.get("add_label", ""))
                    if added not in BRANCHES or chosen not in LABEL_CHOICES:
                        raise RefusedError(400, "an added branch needs a known branch and label")
                    labels[added] = chosen
            comment = str(form.get("comment", "")).strip()[:500]
            app.store.decide_labels(session, patient, labels, comment)
            write_overrides(app.layout.raw_folders.reviews, app.store.decisions())
            return RedirectResponse(f"/review?decided={patient}", 303, headers=HEADERS)
        decisions = app.store.decisions(patient)
        return page(
            "report.html",
            session=session,
            report=shown,
            choices={row.branch: choices_for(row.parsed) for row in shown.branches},
            branches=BRANCHES,
            label_choices=LABEL_CHOICES,
            decisions=decisions,
            disputed=patient in settled(decisions)[1],
            holding=HOLDING,
        )

    async def reading(request: Request) -> Response:
        session = session_of(request, "reader")
        judged = {v.patient_id for v in app.store.verdicts() if v.user == session.user}
        return page(
            "reading.html",
            session=session,
            worklist=reading_list(app.layout).to_dict("records"),
            judged=judged,
        )

    async def patient_page(request: Request) -> Response:
        session = session_of(request, "reader")
        patient = patient_of(request)
        document = prediction_of(app.layout, patient, WRITERS["json"].file_name)
        if document is None:
            raise RefusedError(404, "no prediction of this patient")
        if request.method == "POST":
            form = await form_of(request, session)
            agree = form.get("verdict") == "agree"
            category = str(form.get("cad_rads", "")) or None
            if not agree and category not in CATEGORIES:
                raise RefusedError(400, "a disagreement needs the CAD-RADS category you read")
            corrected = {
                b: str(form[f"class:{b}"])
                for b in document["branches"]
                if not agree and form.get(f"class:{b}") in STENOSIS_CLASSES
            }
            read = {b: finding["class"] for b, finding in document["branches"].items()}
            app.store.record_verdict(
                session,
                Verdict(
                    patient,
                    session.user,
                    time.time(),
                    str(document["model"].get("version", "")),
                    document.get("cad_rads"),
                    document.get("refer"),
                    agree,
                    None if agree else category,
                    read | corrected,
                    str(form.get("comment", "")).strip()[:500],
                    document.get("study"),
                ),
            )
            return RedirectResponse(f"/reading?judged={patient}", 303, headers=HEADERS)
        mine = [v for v in app.store.verdicts() if v.patient_id == patient]
        return page(
            "patient.html",
            session=session,
            patient=patient,
            document=document,
            pictures=[
                WRITERS[f].file_name
                for f in PICTURES
                if prediction_file(app.layout, patient, WRITERS[f].file_name) is not None
            ],
            categories=CATEGORIES,
            classes=STENOSIS_CLASSES,
            verdicts=mine,
        )

    async def picture(request: Request) -> Response:
        session_of(request, "reader")
        name = request.path_params["name"]
        if name not in {WRITERS[f].file_name for f in PICTURES}:
            raise RefusedError(404, "no such picture")
        path = prediction_file(app.layout, patient_of(request), name)
        if path is None:
            raise RefusedError(404, "no such picture of this patient")
        return FileResponse(path, media_type="image/png", headers=HEADERS)

    async def admin(request: Request) -> Response:
        session = session_of(request, "admin")
        if request.method == "POST":
            form = await form_of(request, session)
            try:
                app.store.add_user(
                    str(form.get("name", "")),
                    str(form.get("role", "")),
                    str(form.get("password", "")),
                    by=session.user,
                )
            except ValueError as error:
                raise RefusedError(400, str(error)) from None
            return RedirectResponse("/admin", 303, headers=HEADERS)
        return page(
            "admin.html",
            session=session,
            users=app.store.roles(),
            roles=ROLES,
            audit=app.store.audit_log(),
            agreement=agreement(verdict_table(app.store.verdicts())),
        )

    routes = [
        Route("/login", guarded(login_page), methods=["GET"]),
        Route("/login", guarded(login), methods=["POST"]),
        Route("/logout", guarded(logout), methods=["POST"]),
        Route("/", guarded(home), methods=["GET"]),
        Route("/review", guarded(queue), methods=["GET"]),
        Route("/review/{patient}", guarded(report), methods=["GET", "POST"]),
        Route("/reading", guarded(reading), methods=["GET"]),
        Route("/reading/{patient}", guarded(patient_page), methods=["GET", "POST"]),
        Route("/reading/{patient}/{name}", guarded(picture), methods=["GET"]),
        Route("/admin", guarded(admin), methods=["GET", "POST"]),
    ]
    return Starlette(routes=routes)


def review_app(layout: DataLayout, database_url: str, secure_cookie: bool = False) -> Starlette:
    """The app over `layout` with its store at `database_url`."""
    return create_app(ReviewApp(layout, ReviewStore(database_url), secure_cookie))
