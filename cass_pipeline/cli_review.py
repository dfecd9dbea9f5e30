"""`cass` commands for the people in the loop: review-app, review-user (thin: parse, call,
print)."""

from __future__ import annotations

import click

from cass_pipeline.settings import CassSettings


@click.command("review-app")
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on")
@click.option("--port", default=8300, show_default=True, type=int)
@click.option(
    "--secure-cookie/--no-secure-cookie",
    default=False,
    help="send the login cookie over HTTPS only (behind a TLS proxy)",
)
def review_app(host: str, port: int, secure_cookie: bool) -> None:
    """Serve the review pages: label review for reviewers, the reading room for readers
    (accounts: `cass review-user`; store: CASS_REVIEW_DB, default SQLite under data/)."""
    import uvicorn

    from cass_pipeline.review_app.app import review_app as build

    settings = CassSettings.from_env()
    app = build(settings.layout, settings.review_db, secure_cookie)
    uvicorn.run(app, host=host, port=port, log_level="info", server_header=False)


@click.command("review-user")
@click.argument("name")
@click.option("--role", type=click.Choice(["reviewer", "reader", "admin"]), required=True)
@click.option(
    "--password-stdin", is_flag=True, help="read the password from standard input (scripts)"
)
def review_user(name: str, role: str, password_stdin: bool) -> None:
    """Create an account of the review app, or give it a new role and password."""
    from cass_pipeline.domain.review.store import ReviewStore

    if password_stdin:
        password = click.get_text_stream("stdin").readline().rstrip("\n")
    else:
        password = click.prompt("password", hide_input=True, confirmation_prompt=True)
    try:
        ReviewStore(CassSettings.from_env().review_db).add_user(name, role, password)
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    click.echo(f"{name}: {role}")


COMMANDS = (review_app, review_user)
