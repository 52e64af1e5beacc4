"""The signature engine (server/batcher.py) and the verifier on top of it: right answers, in order,
identical items checked once, many threads at once, and a stop() that strands nobody.
Speed is measured by load/verify_engine.py, not asserted here."""

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter
from collections.abc import Iterator

import pytest
from vector_loader import issue, trust_list

from vimark.client.certificate import CertificateBody, ForgedCertificate, IssueReason, Presentation, encode
from vimark.client.domain import VehicleCategory, month_of
from vimark.client.trust import TrustList, verify_signature
from vimark.server.batcher import InlineSignatures, SignatureEngine
from vimark.server.index import ValidityIndex
from vimark.server.records import VehicleRecord
from vimark.server.verifier import Verifier
from vimark.v1 import mark_service_pb2 as pb

NOW = dt.datetime(2026, 11, 25, 2, 0, tzinfo=dt.UTC)
VALID_UNTIL = month_of(dt.date(2027, 6, 1))


class CountingCheck:
    """verify_signature, counting calls per item; optionally held at a gate."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.calls: Counter[tuple[bytes, bytes, bytes]] = Counter()
        self._lock = threading.Lock()
        self._gate = gate

    def __call__(self, public_key: bytes, signature: bytes, message: bytes) -> bool:
        if self._gate is not None:
            self._gate.wait()
        with self._lock:
            self.calls[(public_key, signature, message)] += 1
        return verify_signature(public_key, signature, message)


class FixedTrust:
    def __init__(self, trust: TrustList) -> None:
        self._trust = trust

    def current(self) -> TrustList:
        return self._trust


def _body(i: int) -> CertificateBody:
    return CertificateBody(
        serial=i,
        plate_number=f"闽C{i:05d}",
        plate_type="02",
        vin=f"LSVAB2BJ5K{i:07d}",
        valid_until=VALID_UNTIL,
        issued_at=int(NOW.timestamp()) - 86400,
        reason=IssueReason.ISSUE_REASON_REDOWNLOAD,
        presentation=Presentation.PRESENTATION_OFFLINE,
    )


def _forge(text: str) -> str:
    """The same certificate with one signature bit flipped (clear, so the seal does not hide it)."""
    certificate = trust_list().claim(text).certificate
    signature = bytearray(certificate.signature)
    signature[7] ^= 0x04
    return encode(certificate.body_bytes, certificate.key_id, bytes(signature), None)


@pytest.fixture(scope="module")
def marks() -> list[str]:
    return [issue(_body(i)) for i in range(1, 41)]


@pytest.fixture(scope="module")
def index() -> ValidityIndex:
    index = ValidityIndex()
    records = [
        VehicleRecord(
            vehicle_id=i,
            plate_type="02",
            plate_number=f"闽C{i:05d}",
            vin=f"LSVAB2BJ5K{i:07d}",
            category=VehicleCategory.SMALL_PASSENGER,
            registered_on=dt.date(2021, 6, 1),
            seats=5,
            exemption_lost=False,
            status_bits=0,
            valid_until=VALID_UNTIL,
            current_serial=i,
        )
        for i in range(1, 41)
    ]
    index.load(len(records), records, [])
    return index


def _items(marks: list[str]) -> list[tuple[bytes, bytes, bytes]]:
    trust = trust_list()
    return [trust.claim(text).signed for text in marks]


@pytest.fixture
def engine() -> Iterator[SignatureEngine]:
    engine = SignatureEngine(workers=2, window=0.0002, max_batch=8, coalesce_unary=True)
    engine.start()
    yield engine
    engine.stop()


def test_mixed_valid_forged_and_duplicates_answer_in_order(engine: SignatureEngine, marks: list[str]) -> None:
    good = _items(marks[:10])
    forged = [(pk, sig[:10] + bytes([sig[10] ^ 1]) + sig[11:], msg) for pk, sig, msg in good[:5]]
    wrong_message = [(pk, sig, msg + b"x") for pk, sig, msg in good[5:8]]
    items = [*good, *forged, *wrong_message, good[0], forged[0], good[3], good[3]]
    expected = [verify_signature(*item) for item in items]
    assert expected.count(False) == 9
    assert engine.check_many(items) == expected
    assert engine.submit_many(items).result() == expected
    assert [engine.check(*item) for item in items] == expected
    assert engine.check_many([]) == []


def test_identical_items_in_a_batch_are_checked_once(marks: list[str]) -> None:
    counting = CountingCheck()
    a, b = _items(marks[:2])
    with SignatureEngine(counting, workers=1, max_batch=64) as engine:
        assert engine.check_many([a, b, a, a, b, a]) == [True] * 6
    assert counting.calls == {a: 1, b: 1}


def test_verify_many_checks_each_distinct_text_once(index: ValidityIndex, marks: list[str]) -> None:
    counting = CountingCheck()
    texts = [marks[0], marks[1], marks[0], _forge(marks[2]), "VM1:garbage", marks[1], marks[0]]
    with SignatureEngine(counting, workers=2, max_batch=64) as engine:
        results = Verifier(index, FixedTrust(trust_list()), lambda: NOW, signatures=engine).verify_many(texts)
    assert [r.verdict for r in results] == [
        pb.VERDICT_VALID,
        pb.VERDICT_VALID,
        pb.VERDICT_VALID,
        pb.VERDICT_FORGED,
        pb.VERDICT_MALFORMED,
        pb.VERDICT_VALID,
        pb.VERDICT_VALID,
    ]
    assert sorted(counting.calls.values()) == [1, 1, 1]  # two genuine marks, one forgery; garbage never reaches it
    assert results[0] is results[2] is results[6]


def test_engine_and_inline_verifiers_agree(index: ValidityIndex, marks: list[str]) -> None:
    texts = [*marks, *(_forge(m) for m in marks[::7]), "", "VM1:", marks[3][:-3], *marks[:5]]
    trust = FixedTrust(trust_list())
    inline = Verifier(index, trust, lambda: NOW)
    expected = [(r.verdict, r.explanation) for r in inline.verify_many(texts)]
    assert [(r.verdict, r.explanation) for r in (inline.verify(t) for t in texts)] == expected
    with SignatureEngine(workers=2, window=0.0, max_batch=4, coalesce_unary=True) as engine:
        batched = Verifier(index, trust, lambda: NOW, signatures=engine)
        assert [(r.verdict, r.explanation) for r in batched.verify_many(texts)] == expected
        assert [(r.verdict, r.explanation) for r in (batched.verify(t) for t in texts)] == expected
    assert Counter(v for v, _ in expected)[pb.VERDICT_VALID] == len(marks) + 5


def test_many_threads_at_once_each_get_their_own_answer(engine: SignatureEngine, marks: list[str]) -> None:
    good = _items(marks)
    forged = [(pk, bytes(64), msg) for pk, _, msg in good]
    failures: list[str] = []
    barrier = threading.Barrier(16)

    def caller(slot: int) -> None:
        barrier.wait()
        for n in range(60):
            i = (slot * 7 + n) % len(good)
            if n % 5 == 0:
                answers = engine.check_many([good[i], forged[i], good[i]])
                if answers != [True, False, True]:
                    failures.append(f"thread {slot} batch {n}: {answers}")
            elif engine.check(*(forged[i] if n % 3 == 0 else good[i])) != (n % 3 != 0):
                failures.append(f"thread {slot} call {n}")

    threads = [threading.Thread(target=caller, args=(slot,)) for slot in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not failures
    assert not any(thread.is_alive() for thread in threads)


def test_stop_finishes_pending_callers_then_runs_inline(marks: list[str]) -> None:
    gate = threading.Event()
    counting = CountingCheck(gate)
    items = _items(marks[:20])
    engine = SignatureEngine(counting, workers=2, window=0.0, max_batch=4)
    engine.start()
    tickets = [engine.submit_many(items[i : i + 5]) for i in range(0, 20, 5)]  # the workers block on the gate
    stopper = threading.Thread(target=engine.stop)
    stopper.start()
    gate.set()
    stopper.join(10)
    assert not stopper.is_alive()
    assert [ticket.result() for ticket in tickets] == [[True] * 5] * 4
    assert not engine.running
    assert engine.check_many(items[:3]) == [True] * 3  # after stop: on the caller's thread
    assert engine.check(*items[0])


def test_not_started_runs_inline_and_a_broken_checker_reaches_the_caller(marks: list[str]) -> None:
    item = _items(marks[:1])[0]
    assert SignatureEngine().check_many([item]) == [True]

    def broken(public_key: bytes, signature: bytes, message: bytes) -> bool:
        raise RuntimeError("checker bug")

    with SignatureEngine(broken, workers=1, coalesce_unary=True) as engine:
        with pytest.raises(RuntimeError, match="checker bug"):
            engine.check_many([item, item])
        with pytest.raises(RuntimeError, match="checker bug"):
            engine.check(*item)
        assert engine.running  # the worker survived


def test_configuration_is_checked() -> None:
    with pytest.raises(ValueError):
        SignatureEngine(window=-1)
    with pytest.raises(ValueError):
        SignatureEngine(max_batch=0)
    engine = SignatureEngine(workers=1)
    engine.start()
    with pytest.raises(RuntimeError):
        engine.start()
    engine.stop()
    engine.stop()  # idempotent


def test_authenticate_takes_any_checker(marks: list[str]) -> None:
    trust = trust_list()
    assert trust.authenticate(marks[0]).body == _body(1)
    assert trust.authenticate(marks[0], InlineSignatures().check).body == _body(1)
    with pytest.raises(ForgedCertificate):
        trust.authenticate(marks[0], lambda *_: False)
    with pytest.raises(ForgedCertificate):
        trust.authenticate(_forge(marks[0]))
