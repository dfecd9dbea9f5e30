"""The DICOM node's and the result sender's settings, declared once for `cass dicom-node`,
`cass resend` and the Dagster resources. Pure: no networking here."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network
from urllib.parse import unquote, urlsplit, urlunsplit

from cass_pipeline.domain.options import option


@dataclass(frozen=True)
class NodeSettings:
    """Where the Storage SCP listens, whom it takes studies from, and when a study counts
    as complete."""

    ae_title: str = option("CASS", "the node's AE title (what workstations send to)")
    host: str = option("127.0.0.1", "address to listen on (0.0.0.0: every interface)")
    port: int = option(11112, "DICOM port to listen on", min=1)
    quiet_seconds: float = option(
        10.0, "a study is handed to the inbox once no instance has arrived for this long"
    )
    allowed_aes: str = option(
        "",
        "comma-separated calling AE titles that may send (none by default; '*': any AE, "
        "only on a closed network)",
    )
    allowed_hosts: str = option(
        "", "comma-separated addresses or networks (10.1.0.0/16) that may send; empty: any"
    )
    max_associations: int = option(8, "associations served at once; more are refused", min=1)
    handshake_seconds: float = option(
        5.0, "a connection that has not asked for an association by then is closed"
    )
    idle_seconds: float = option(60.0, "an association silent this long is aborted")
    tls_cert: str = option("", "PEM certificate: listen with DICOM TLS (with --tls-key)")
    tls_key: str = option("", "PEM private key of --tls-cert")
    tls_ca: str = option("", "PEM CA certificates: senders must show a certificate they sign")

    def calling_aes(self) -> frozenset[str] | None:
        """The AE titles allowed to send; None: any."""
        titles = {t.strip() for t in self.allowed_aes.split(",") if t.strip()}
        return None if "*" in titles else frozenset(titles)

    def networks(self) -> list[IPv4Network | IPv6Network]:
        return [
            ip_network(h.strip(), strict=False) for h in self.allowed_hosts.split(",") if h.strip()
        ]

    def host_allowed(self, address: str) -> bool:
        networks = self.networks()
        return not networks or any(ip_address(address) in n for n in networks)


@dataclass(frozen=True)
class Destination:
    """A DICOM node that results are sent to by C-STORE (the PACS, a viewer):
    `AE@host:port`."""

    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Destination | WebDestination:
        """`AE@host:port`, or a DICOMweb service's URL (http:// or https://)."""
        if text.strip().lower().startswith(("http://", "https://")):
            return WebDestination.parse(text)
        ae_title, _, address = text.strip().partition("@")
        host, _, port = address.rpartition(":")
        if not ae_title or not host or not port.isdigit():
            raise ValueError(f"a destination is AE@host:port or a DICOMweb URL, got {text!r}")
        return cls(ae_title, host, int(port))

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


@dataclass(frozen=True)
class WebDestination:
    """A DICOMweb service that results are sent to by STOW-RS (a modern PACS, a cloud
    archive): its root URL, e.g. `https://pacs.example.org/dicom-web`. A user and password
    in the URL are sent as HTTP basic authentication and never shown (`__str__`)."""

    url: str

    @classmethod
    def parse(cls, text: str) -> WebDestination:
        parts = urlsplit(text.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("a DICOMweb destination is an http(s) URL with a host")
        return cls(text.strip().rstrip("/"))

    @property
    def credentials(self) -> tuple[str, str] | None:
        parts = urlsplit(self.url)
        return (unquote(parts.username), unquote(parts.password or "")) if parts.username else None

    @property
    def studies_url(self) -> str:
        """The STOW-RS endpoint, without the credentials."""
        parts = urlsplit(self.url)
        netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
        return urlunsplit((parts.scheme, netloc, f"{parts.path}/studies", "", ""))

    def __str__(self) -> str:
        return self.studies_url.removesuffix("/studies")


@dataclass(frozen=True)
class SendSettings:
    """Where results go and how hard delivery is tried."""

    destinations: str = option(
        "",
        "comma-separated AE@host:port of the nodes that get the results (SR, report "
        "picture, key objects)",
    )
    calling_ae_title: str = option("CASS", "the AE title CASS sends as")
    attempts: int = option(4, "tries per destination before the delivery fails", min=1)
    backoff_seconds: float = option(2.0, "wait before the second try, doubled after each")
    retry_refused: bool = option(
        False, "send again to destinations that refused the objects for good (once fixed)"
    )

    def parsed(self) -> list[Destination | WebDestination]:
        return [Destination.parse(d) for d in self.destinations.split(",") if d.strip()]
