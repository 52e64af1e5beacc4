"""A police terminal's offline verification: the signed trust bundle, the signed status snapshot
and its deltas, the directory that keeps them, and the verifier that reads them.
Formats: docs/offline-format.md."""

from vimark.client.offline.bundle import DEFAULT_BUNDLE_MAX_AGE, TrustBundle
from vimark.client.offline.directory import TerminalDirectory
from vimark.client.offline.envelope import OfflineDataRefused
from vimark.client.offline.status import DEFAULT_STATUS_MAX_AGE, DeltaDoesNotApply, StatusState
from vimark.client.offline.verifier import OfflineVerification, OfflineVerifier, PlateCheck

__all__ = [
    "DEFAULT_BUNDLE_MAX_AGE",
    "DEFAULT_STATUS_MAX_AGE",
    "DeltaDoesNotApply",
    "OfflineDataRefused",
    "OfflineVerification",
    "OfflineVerifier",
    "PlateCheck",
    "StatusState",
    "TerminalDirectory",
    "TrustBundle",
]
