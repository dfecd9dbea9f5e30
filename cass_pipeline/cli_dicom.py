"""`cass` commands on the hospital's DICOM network: dicom-node, resend (thin: parse, call,
print)."""

from __future__ import annotations

import logging
import signal
import threading

import click

from cass_pipeline.cli_common import options_of
from cass_pipeline.domain.dicom.config import NodeSettings, SendSettings
from cass_pipeline.layout import dicom_outbox
from cass_pipeline.settings import CassSettings


def quiet_network_logs() -> None:
    """CASS's own lines at INFO; pynetdicom's only when something goes wrong."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)


@click.command("dicom-node")
@options_of(NodeSettings)
def dicom_node(**options) -> None:
    """Receive studies by DICOM C-STORE into the inbox (until Ctrl-C or SIGTERM)."""
    from cass_pipeline.domain.dicom.node import DicomNode

    quiet_network_logs()
    settings = CassSettings.from_env()
    node = DicomNode(NodeSettings(**options), settings.inbox_dir, settings.dicom_dir)
    stopped = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopped.set())
    try:
        node.start()
    except OSError as error:
        raise click.ClickException(
            f"cannot listen on {options['host']}:{options['port']}: {error.strerror}"
        ) from error
    click.echo(f"inbox {settings.inbox_dir}; rejects {node.rejects_path}", err=True)
    stopped.wait()
    node.stop()
    click.echo(f"stopped after {node.received} instances", err=True)


@click.command()
@options_of(SendSettings)
def resend(**options) -> None:
    """Send the outbox's results that a destination has not taken yet (destinations: the
    option, else CASS_DICOM_DESTINATIONS)."""
    from cass_pipeline.domain.dicom.outbox import (
        DeliveryState,
        failure_text,
        send_results,
        undelivered,
    )
    from cass_pipeline.domain.prediction.outputs import WRITERS
    from cass_pipeline.domain.prediction.worklist import DELIVERED, FAILED, record_delivery

    quiet_network_logs()
    env = CassSettings.from_env()
    settings = env.send_settings(**options)
    if not settings.parsed():
        raise click.UsageError("no --destinations nor CASS_DICOM_DESTINATIONS: nothing to send to")
    outbox = dicom_outbox(env.dicom_dir)
    pending, failed = undelivered(outbox, settings), 0
    if not pending:
        click.echo(f"nothing undelivered in {outbox}")
    for folder in pending:
        try:
            problem = failure_text(send_results(folder, settings))
        except Exception as error:  # one patient's broken outbox never stops the others
            problem = f"not sent: {type(error).__name__}: {error}"
        click.echo(f"{folder.name}: {problem or 'delivered'}")
        failed += bool(problem)
        document = env.layout.prediction(folder.name) / WRITERS["json"].file_name
        if document.is_file():  # the worklist's delivery column
            destinations = ", ".join(map(str, settings.parsed()))
            if problem:
                record_delivery(document, FAILED, f"{problem}; kept for `cass resend`")
            else:
                record_delivery(document, DELIVERED, f"to {destinations}")
    for folder in sorted(outbox.iterdir()) if outbox.is_dir() else []:
        for destination, reason in DeliveryState(folder).refused(settings.parsed()).items():
            click.echo(f"{folder.name}: {destination} refuses for good: {reason}", err=True)
    if failed:
        raise click.ClickException(f"{failed} patients still undelivered; they stay in {outbox}")


COMMANDS = (dicom_node, resend)
