"""Bulk first issuance (backfill): a current mark for every vehicle within its recorded validity
that has none, or for a list of plates, issued for an operator.

Follow the data: the registry is read in id order (or by plate) -> each vehicle judged (`judge`:
the policy table's statuses that forbid any new mark, and the validity the registry records) ->
serials reserved -> bodies signed and sealed in worker processes -> each batch written in one
transaction (store/backfill.py: marks, request rows, current marks, change log) -> progress.

Resumable without duplicates: a vehicle with a current mark is skipped, so a run stopped anywhere
(Ctrl-C, a crash, a killed server) is finished by running it again; each mark's request id is
derived from the vehicle, its VIN and its validity (`request_id`), so even two backfills racing
cannot both issue one (marks.request_id is unique). A batch is durable before its progress is
sent, and nothing of a batch is written unless all of it is.

Signing uses every core: a process pool started with 'forkserver' (the server runs gRPC threads,
and forking a threaded process is unsafe), each worker holding the run's signing and seal keys,
sent once at its start. A run pins the active key: if the key directory rotates meanwhile, the run
stops with FAILED_PRECONDITION (the marks written so far verify; run it again).
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import logging
import multiprocessing
import os
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass

import nacl.bindings

from vimark.client import certificate as cert
from vimark.client.domain import BLOCKS_ISSUE_MASK, Clock, china_date, parse_plate_number, parse_plate_type
from vimark.client.errors import FailedPrecondition, InvalidArgument
from vimark.server import rules
from vimark.server.keys import KeyRing
from vimark.server.store import Store
from vimark.server.store.backfill import BatchTerms, Candidate, NewMark
from vimark.v1 import mark_service_pb2 as pb

log = logging.getLogger("vimark.server")

REASON = cert.IssueReason.ISSUE_REASON_BACKFILL
DEFAULT_BATCH = 1000  # marks per transaction: at ~20,000/s about 50 ms of the writer lock
MAX_BATCH = 5000
MAX_PLATES = 50_000  # BackfillMarksRequest.plates per call
_SCAN_CHUNK = 5000  # vehicles read per query
_IN_FLIGHT = 3  # batches being signed while one is written


class Outcome(enum.IntEnum):
    """What became of a vehicle a backfill considered (the proto's BackfillOutcome)."""

    ISSUED = pb.BACKFILL_OUTCOME_ISSUED
    ALREADY_MARKED = pb.BACKFILL_OUTCOME_ALREADY_MARKED
    STATUS_FORBIDS_ISSUE = pb.BACKFILL_OUTCOME_STATUS_FORBIDS_ISSUE
    OUT_OF_VALIDITY = pb.BACKFILL_OUTCOME_OUT_OF_VALIDITY
    NO_RECORDED_VALIDITY = pb.BACKFILL_OUTCOME_NO_RECORDED_VALIDITY
    UNKNOWN_PLATE = pb.BACKFILL_OUTCOME_UNKNOWN_PLATE
    CHANGED = pb.BACKFILL_OUTCOME_CHANGED


def judge(vehicle: Candidate, today: dt.date) -> Outcome | None:
    """Why a vehicle gets no backfill mark, or None: it gets one. The statuses are the policy
    table's (client/domain.py, R1 in rules.py: B, C, E, M, P forbid any new mark). A backfill
    carries the recorded validity as a re-issue does (R3), so an open violation or accident (G,
    I), which only stops marks after an inspection or exemption, does not stop it; a road-blocked
    vehicle (D) gets its mark and verifies VEHICLE_BLOCKED, as any other mark would."""
    if vehicle.current_serial:
        return Outcome.ALREADY_MARKED
    if vehicle.status_bits & BLOCKS_ISSUE_MASK:
        return Outcome.STATUS_FORBIDS_ISSUE
    if vehicle.valid_until is None:
        return Outcome.NO_RECORDED_VALIDITY
    if not rules.within_validity(vehicle.valid_until, today):
        return Outcome.OUT_OF_VALIDITY
    return None


def request_id(vehicle: Candidate) -> str:
    """The idempotency key of a vehicle's backfill mark: at most 52 characters."""
    return f"backfill-{vehicle.vehicle_id}-{vehicle.valid_until}-{vehicle.vin}"


@dataclass(frozen=True)
class Progress:
    """A run's counts so far; `done` once every vehicle was considered."""

    total: int
    counts: dict[Outcome, int]
    done: bool = False
    last_change_id: int = 0  # the change that made the run's latest mark current (0: none yet)

    @property
    def considered(self) -> int:
        return sum(self.counts.values())


# -- signing, in worker processes (or in the caller's thread with workers=0) --------------------
# One item: (serial, plate_number, plate_type, vin, valid_until); the batch's terms come once.
Item = tuple[int, str, str, str, int]
_worker_signer: MarkSigner | None = None


@dataclass(frozen=True)
class SigningKeys:
    """What a worker signs and seals with: the run's pinned keys, as raw bytes (picklable)."""

    key_id: int
    seed: bytes  # the Ed25519 private key's 32 bytes
    seal_key_id: int
    seal_key: bytes

    @classmethod
    def of(cls, ring: KeyRing) -> SigningKeys:
        key_id, key = ring.active_signing_key()
        seal_id = ring.active_seal_key_id
        return cls(key_id, key.private_bytes_raw(), seal_id, ring.seal_keys[seal_id])

    def signer(self) -> MarkSigner:
        return MarkSigner(self)


class MarkSigner:
    """Signs and seals a body as issuer.Signer does, to the byte (Ed25519 signatures are
    deterministic, and so is the seal), but with libsodium (PyNaCl, which the verify path uses
    already): 37 µs a signature here against 56 µs through cryptography's OpenSSL."""

    def __init__(self, keys: SigningKeys) -> None:
        self._key_id = keys.key_id
        self._secret = nacl.bindings.crypto_sign_seed_keypair(keys.seed)[1]
        self._seal = (keys.seal_key_id, keys.seal_key)

    def sign(self, body: cert.CertificateBody) -> str:
        body_bytes = body.to_bytes()
        signed = nacl.bindings.crypto_sign(cert.signed_message(self._key_id, body_bytes), self._secret)
        return cert.encode(body_bytes, self._key_id, signed[: cert.SIGNATURE_SIZE], self._seal)


def _start_worker(keys: SigningKeys) -> None:
    global _worker_signer
    _worker_signer = keys.signer()


def sign_items(signer: MarkSigner, items: Sequence[Item], issued_at: int, valid_from_day: int) -> list[str]:
    """The QR texts of these marks, signed and sealed as Issue's are (Issuer.body, Signer.sign)."""
    texts = []
    for serial, plate_number, plate_type, vin, valid_until in items:
        body = cert.CertificateBody(
            serial=serial,
            plate_number=plate_number,
            plate_type=plate_type,
            vin=vin,
            valid_until=valid_until,
            issued_at=issued_at,
            reason=REASON,
            presentation=cert.Presentation.PRESENTATION_OFFLINE,
            valid_from_day=valid_from_day,
        )
        texts.append(signer.sign(body))
    return texts


def _sign_in_worker(items: Sequence[Item], issued_at: int, valid_from_day: int) -> list[str]:
    assert _worker_signer is not None, "the pool's initializer sets it"
    return sign_items(_worker_signer, items, issued_at, valid_from_day)


def _forkserver() -> multiprocessing.context.BaseContext:
    """The 'forkserver' context, its server process preloaded with this module: it starts once per
    serving process, and each run's workers fork from it with the codec and keys code imported."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])  # heeded when the fork server starts (the first run)
    return context


class _Signing:
    """Signs batches: split across a process pool, or in this thread (workers=0)."""

    def __init__(self, keys: SigningKeys, workers: int) -> None:
        self.workers = workers
        self._local = keys.signer() if workers == 0 else None
        self._pool = (
            ProcessPoolExecutor(
                workers,
                mp_context=_forkserver(),
                initializer=_start_worker,
                initargs=(keys,),
            )
            if workers
            else None
        )

    def submit(self, items: list[Item], issued_at: int, valid_from_day: int) -> Callable[[], list[str]]:
        """Start signing; returns a function that waits for the texts, in order."""
        if self._pool is None:
            assert self._local is not None
            texts = sign_items(self._local, items, issued_at, valid_from_day)
            return lambda: texts
        share = -(-len(items) // self.workers)
        parts: list[Future[list[str]]] = [
            self._pool.submit(_sign_in_worker, items[i : i + share], issued_at, valid_from_day)
            for i in range(0, len(items), share)
        ]
        return lambda: [text for part in parts for text in part.result()]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


# -- the run ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Batch:
    vehicles: list[Candidate]
    serials: list[int]
    texts: Callable[[], list[str]]


class Backfiller:
    """Runs backfills on a store with the server's keys; `workers` signing processes (0: sign in
    the calling thread; default: one per core)."""

    def __init__(
        self, store: Store, keyring: Callable[[], KeyRing], clock: Clock, *, workers: int | None = None
    ) -> None:
        self.store = store
        self.keyring = keyring
        self.clock = clock
        self.workers = (os.cpu_count() or 1) if workers is None else workers

    def run(
        self,
        *,
        issued_by: str,
        issuer_fingerprint: str = "",
        plates: Sequence[tuple[str, str]] | None = None,
        batch_size: int = DEFAULT_BATCH,
        stopped: Callable[[], bool] = lambda: False,
    ) -> Iterator[Progress]:
        """Issue, yielding progress after each durable batch and once at the end (done). Stops
        after the batch being written when `stopped()` turns true (progress then not done)."""
        if plates is not None:
            plates = list(dict.fromkeys(plates))  # a plate listed twice is one vehicle
        keys = SigningKeys.of(self.keyring())
        now = self.clock()
        today = china_date(now)
        terms = BatchTerms(
            reason=REASON,
            issued_at=int(now.timestamp()),
            valid_from=today,  # no validity of vimark's to carry forward: it starts now (issuer.py)
            issued_by=issued_by,
            issuer_fingerprint=issuer_fingerprint,
            digest=hashlib.sha256(f"backfill\x1f{issued_by}".encode()).hexdigest(),
        )
        valid_from_day = (today - cert.EPOCH_DAY).days
        counts: Counter[Outcome] = Counter()
        total = len(plates) if plates is not None else self.store.count_vehicles()
        backfill = self.store.backfill
        signing = _Signing(keys, self.workers if total > batch_size else 0)  # a small run: no pool to start
        pending: deque[_Batch] = deque()
        started, last_change = time.monotonic(), 0

        def start(vehicles: list[Candidate]) -> None:
            serials = backfill.reserve_serials(len(vehicles))
            items = [
                (s, v.plate_number, v.plate_type, v.vin, v.valid_until or 0)
                for s, v in zip(serials, vehicles, strict=True)
            ]
            pending.append(_Batch(vehicles, serials, signing.submit(items, terms.issued_at, valid_from_day)))

        def resign(marks: list[NewMark], serials: list[int]) -> list[NewMark]:
            vehicles = [m.vehicle for m in marks]
            items = [
                (s, v.plate_number, v.plate_type, v.vin, v.valid_until or 0)
                for s, v in zip(serials, vehicles, strict=True)
            ]
            texts = signing.submit(items, terms.issued_at, valid_from_day)()
            return [
                NewMark(v, s, request_id(v), t, keys.key_id) for v, s, t in zip(vehicles, serials, texts, strict=True)
            ]

        def write(batch: _Batch) -> Progress:
            nonlocal last_change
            if self.keyring().active_key_id != keys.key_id:
                raise FailedPrecondition(
                    f"the issuing key changed during the backfill (key {keys.key_id} is no longer active): "
                    "run it again to continue with the new key",
                    reason="NO_ACTIVE_KEY",
                )
            marks = [
                NewMark(v, s, request_id(v), t, keys.key_id)
                for v, s, t in zip(batch.vehicles, batch.serials, batch.texts(), strict=True)
            ]
            written = backfill.write(marks, terms, resign)
            counts[Outcome.ISSUED] += len(written.marks)
            counts[Outcome.ALREADY_MARKED] += len(written.already_marked)
            counts[Outcome.CHANGED] += len(written.changed)
            last_change = max(last_change, written.last_change_id)
            return Progress(total, dict(counts), last_change_id=last_change)

        try:
            eligible: list[Candidate] = []
            for chunk in self._candidates(plates, counts):
                if stopped():
                    return
                for vehicle in chunk:
                    outcome = judge(vehicle, today)
                    if outcome is None:
                        eligible.append(vehicle)
                    else:
                        counts[outcome] += 1
                final, wrote = chunk is _END, False
                while len(eligible) >= batch_size or (final and eligible):
                    start(eligible[:batch_size])
                    eligible = eligible[batch_size:]
                    while len(pending) > _IN_FLIGHT:
                        if stopped():
                            return
                        yield write(pending.popleft())
                        wrote = True
                while final and pending:
                    if stopped():
                        return
                    yield write(pending.popleft())
                if not (wrote or final):  # a chunk of vehicles skipped: say so (a re-run skips many)
                    yield Progress(total, dict(counts), last_change_id=last_change)
            seconds = time.monotonic() - started
            log.info(
                "backfill by %s: %s in %.1f s (%.0f marks/s)",
                issued_by,
                ", ".join(f"{o.name.lower()} {n}" for o, n in sorted(counts.items())),
                seconds,
                counts[Outcome.ISSUED] / seconds if seconds else 0.0,
            )
            yield Progress(total, dict(counts), done=True, last_change_id=last_change)
        finally:
            signing.close()

    def _candidates(
        self, plates: Sequence[tuple[str, str]] | None, counts: Counter[Outcome]
    ) -> Iterator[list[Candidate]]:
        """The vehicles to judge, a chunk at a time, then `_END` (an empty chunk)."""
        if plates is None:
            after = 0
            while chunk := self.store.backfill.scan(after, _SCAN_CHUNK):
                after = chunk[-1].vehicle_id
                yield chunk
        else:
            for start in range(0, len(plates), _SCAN_CHUNK):
                part = plates[start : start + _SCAN_CHUNK]
                found = self.store.backfill.by_plates(part)
                counts[Outcome.UNKNOWN_PLATE] += sum(1 for p in part if p not in found)
                yield [found[p] for p in part if p in found]
        yield _END


_END: list[Candidate] = []


# -- the RPC's request and progress messages ----------------------------------------------------
def parse_request(request: pb.BackfillMarksRequest) -> tuple[list[tuple[str, str]] | None, int]:
    """(plates as (plate type, plate number), canonical; None: every vehicle) and the batch size.
    Oversize requests are refused before any plate is read."""
    if len(request.plates) > MAX_PLATES:
        raise InvalidArgument("plates", f"{len(request.plates)} plates; send at most {MAX_PLATES} per call")
    batch_size = request.batch_size or DEFAULT_BATCH
    if not 1 <= batch_size <= MAX_BATCH:
        raise InvalidArgument("batch_size", f"{batch_size}; give 1 to {MAX_BATCH}, or 0 for {DEFAULT_BATCH}")
    if not request.plates:
        return None, batch_size
    plates = []
    for i, plate in enumerate(request.plates):
        try:
            plates.append((parse_plate_type(plate.plate_type), parse_plate_number(plate.plate_number)))
        except InvalidArgument as exc:
            raise InvalidArgument(f"plates[{i}].{exc.field}", exc.description) from None
    return plates, batch_size


def progress_message(progress: Progress) -> pb.BackfillMarksProgress:
    return pb.BackfillMarksProgress(
        total=progress.total,
        considered=progress.considered,
        counts=[pb.BackfillCount(outcome=o.value, count=n) for o, n in sorted(progress.counts.items())],  # type: ignore[arg-type]
        done=progress.done,
    )
