"""The DICOM node's and the result sender's settings, declared once for `cass dicom-node`,
`cass resend` and the Dagster resources. Pure: no networking here."""

from __future__ import annotations

from dataclasses import dataclass

from cass_pipeline.domain.options import option


@dataclass(frozen=True)
class NodeSettings:
    """Where the Storage SCP listens, and when a study counts as complete."""

    ae_title: str = option("CASS", "the node's AE title (what workstations send to)")
    host: str = option("127.0.0.1", "address to listen on (0.0.0.0: every interface)")
    port: int = option(11112, "DICOM port to listen on", min=1)
    quiet_seconds: float = option(
        10.0, "a study is handed to the inbox once no instance has arrived for this long"
    )


@dataclass(frozen=True)
class Destination:
    """A DICOM node that results are sent to (the PACS, a viewer): `AE@host:port`."""

    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Destination:
        ae_title, _, address = text.strip().partition("@")
        host, _, port = address.rpartition(":")
        if not ae_title or not host or not port.isdigit():
            raise ValueError(f"a destination is AE@host:port, got {text!r}")
        return cls(ae_title, host, int(port))

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


@dataclass(frozen=True)
class SendSettings:
    """Where results go and how hard delivery is tried."""

    destinations: str = option(
        "", "comma-separated AE@host:port of the nodes that get the SR and the key image"
    )
    calling_ae_title: str = option("CASS", "the AE title CASS sends as")
    attempts: int = option(4, "tries per destination before the delivery fails", min=1)
    backoff_seconds: float = option(2.0, "wait before the second try, doubled after each")

    def parsed(self) -> list[Destination]:
        return [Destination.parse(d) for d in self.destinations.split(",") if d.strip()]
