"""The audit log's hash chain: the one definition of an event's canonical bytes and of a link.

Each audit row stores `chain = sha256(bytes.fromhex(prev) + canonical(row)).hexdigest()`, where
`prev` is the chain of the row before it in id order (or the anchor's, where older rows were
pruned; or `GENESIS` for the very first). Changing, removing or reordering a stored row breaks
the chain at that row or the one after it: `Store.verify_audit_chain` finds where. (A chain
rewritten from some row to its head is found only against a head recorded elsewhere.)

The canonical form is a stored format: never change it, or every stored chain stops verifying.
It is made of the values *as stored* (the time as the float in the row, texts as cut to their
columns), so a verifier reading the rows recomputes exactly what the writer hashed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from typing import Any

GENESIS = "0" * 64  # the `prev` of the first event ever written
SEPARATOR = "\x1f"  # ASCII unit separator; the audit writer removes it from texts (mapping.audit_contents)


def canonical(
    at: float,
    caller_id: str,
    role: str,
    rpc: str,
    plate_type: str,
    plate_number: str,
    verdict: str,
    serial: int,
    fingerprint: str,
) -> bytes:
    """An audit event's bytes as hashed: its stored values, in this order, joined by SEPARATOR."""
    return SEPARATOR.join(
        (repr(float(at)), caller_id, role, rpc, plate_type, plate_number, verdict, str(serial), fingerprint)
    ).encode()


def link(
    prev: str,
    at: float,
    caller_id: str,
    role: str,
    rpc: str,
    plate_type: str,
    plate_number: str,
    verdict: str,
    serial: int,
    fingerprint: str,
) -> str:
    """The chain through one event, from the chain before it (hex, 64 characters)."""
    body = canonical(at, caller_id, role, rpc, plate_type, plate_number, verdict, serial, fingerprint)
    return hashlib.sha256(bytes.fromhex(prev) + body).hexdigest()


def links(prev: str, contents: Iterable[tuple[Any, ...]]) -> Iterator[str]:
    """`link` through each event's content (the arguments after `prev`) in turn: the chain after
    each, the one before it carried as bytes rather than hex."""
    digest = bytes.fromhex(prev)
    for content in contents:
        digest = hashlib.sha256(digest + canonical(*content)).digest()
        yield digest.hex()
