"""TLS and mutual TLS for the gRPC servers, from certificate files named in the settings.

The files are read again whenever they change (checked at each new connection's handshake),
so a renewed certificate is served without a restart; an unreadable renewal keeps the old one.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import grpc

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TlsFiles:
    cert: Path  # PEM certificate chain of the server
    key: Path  # PEM private key
    client_ca: Path | None = None  # PEM roots that client certificates must chain to: mutual TLS

    @classmethod
    def from_settings(cls, cert: str, key: str, client_ca: str) -> TlsFiles | None:
        if not cert and not key:
            if client_ca:
                raise ValueError("tls_client_ca_file needs tls_cert_file and tls_key_file")
            return None
        if not (cert and key):
            raise ValueError("TLS needs both tls_cert_file and tls_key_file")
        return cls(Path(cert), Path(key), Path(client_ca) if client_ca else None)

    def _stamp(self) -> tuple[float, ...]:
        return tuple(os.stat(p).st_mtime_ns for p in (self.cert, self.key, self.client_ca) if p is not None)

    def _config(self) -> grpc.ServerCertificateConfiguration:
        roots = self.client_ca.read_bytes() if self.client_ca else None
        return grpc.ssl_server_certificate_configuration([(self.key.read_bytes(), self.cert.read_bytes())], roots)

    def credentials(self) -> grpc.ServerCredentials:
        stamp = [self._stamp()]

        def fetch() -> grpc.ServerCertificateConfiguration | None:
            try:
                now = self._stamp()
                if now == stamp[0]:
                    return None  # unchanged: keep serving the current certificate
                config = self._config()
            except OSError as err:
                log.warning("TLS files unreadable (%s); keeping the current certificate", err)
                return None
            stamp[0] = now
            log.info("TLS certificate reloaded from %s", self.cert)
            return config

        return grpc.dynamic_ssl_server_credentials(self._config(), fetch,
                                                   require_client_authentication=self.client_ca is not None)
