"""The audit log's hash chain (server/store/audit_chain.py), on SQLite and PostgreSQL: every event
is chained to the one stored before it, in id order, also when several stores append at once; an
altered row is found; pruning keeps what remains verifiable from the anchor; a log written
before the chain existed is chained by its migration."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import threading
from collections.abc import Iterator

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, text

from vimark.client.errors import InvalidArgument
from vimark.server.records import AuditEvent
from vimark.server.store import MIGRATIONS, Store

T0 = dt.datetime(2026, 11, 25, 2, 0, tzinfo=dt.UTC)
FINGERPRINT = "ab" * 32


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store(db_url)
    yield s
    s.close()


def event(i: int, at: dt.datetime | None = None) -> AuditEvent:
    return AuditEvent(
        at or T0 + dt.timedelta(seconds=i, microseconds=123457),
        f"police-terminal-{i % 3:04d}",
        "police",
        "Verify",
        "02",
        f"闽C1{i:04d}",
        "VERDICT_VALID",
        1000 + i,
        FINGERPRINT if i % 2 else "",
    )


def everything(store: Store) -> list[AuditEvent]:
    return store.list_audit_events(limit=10_000)


def sql(url: str, statement: str, **params: object) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text(statement), params)
    finally:
        engine.dispose()


def test_the_chain_is_the_documented_hash(store: Store) -> None:
    """The format, pinned independently of the code: sha256(prev bytes + the stored values joined
    by US), from 32 zero bytes."""
    store.append_audit([event(1), event(2)])
    first, second = everything(store)
    prev = bytes(32)
    for e in (first, second):
        values = [repr(e.at.timestamp()), e.caller_id, e.role, e.rpc, e.plate_type, e.plate_number, e.verdict]
        canonical = "\x1f".join([*values, str(e.serial), e.fingerprint]).encode()
        assert e.chain == hashlib.sha256(prev + canonical).hexdigest()
        prev = bytes.fromhex(e.chain)
    assert (first.fingerprint, second.fingerprint) == ("ab" * 32, "")


def test_batches_chain_in_id_order_and_verify(store: Store) -> None:
    assert store.verify_audit_chain() == (0, "0" * 64, None)
    written = [event(i) for i in range(23)]
    for start in (0, 1, 8, 20):  # batches of 1, 7, 12 and 3
        store.append_audit(written[start : {0: 1, 1: 8, 8: 20, 20: 23}[start]])
    read = everything(store)
    assert read == written  # fingerprints kept, chain and id not part of an event's value
    assert len({e.chain for e in read}) == 23 and all(len(e.chain) == 64 for e in read)
    assert store.verify_audit_chain() == (23, read[-1].chain, None)
    assert store.verify_audit_chain(page=5) == (23, read[-1].chain, None)  # pages join up
    assert store.audit_events(limit=100)[-1].chain == read[-1].chain  # the older reader shows it too
    with pytest.raises(InvalidArgument):
        store.verify_audit_chain(page=0)


def test_texts_are_stored_cleaned_and_cut_event_by_event(store: Store) -> None:
    """No NUL or separator is stored (the chain's canonical bytes could not be told apart), texts
    are cut to their columns, a serial that is not ours is 0; events of a batch that share their
    caller or verdict are cleaned alike, and each keeps its own plate and its own texts."""
    odd = AuditEvent(
        T0, "police\x1f-0001\x00", "police", "Verify", "02", "闽C\x1f1\x002345", "VERDICT\x1f_VALID", -5, ""
    )
    wide = AuditEvent(T0, "p" * 300, "police", "Verify", "02", "闽C00001" * 10, "VERDICT_VALID", 2**64, FINGERPRINT)
    other = dataclasses.replace(odd, plate_type="01", verdict="VERDICT_FORGED", fingerprint=FINGERPRINT)
    store.append_audit([odd, event(1), odd, wide, event(2), other])
    first, _, third, fourth, _, sixth = everything(store)
    for e in (first, third):
        assert (e.caller_id, e.plate_number, e.verdict, e.serial) == ("police-0001", "闽C12345", "VERDICT_VALID", 0)
    assert (sixth.caller_id, sixth.plate_type, sixth.verdict, sixth.fingerprint) == (
        "police-0001", "01", "VERDICT_FORGED", FINGERPRINT)  # fmt: skip
    assert (len(fourth.caller_id), len(fourth.plate_number), fourth.serial) == (128, 32, 0)
    assert everything(store)[1:5:3] == [event(1), event(2)]
    assert store.verify_audit_chain()[2] is None


def test_appends_from_several_stores_at_once_chain_in_id_order(db_url: str) -> None:
    stores = [Store(db_url) for _ in range(3)]
    try:
        barrier = threading.Barrier(len(stores))

        def append(k: int) -> None:
            barrier.wait()
            for b in range(10):
                stores[k].append_audit([event(100 * k + 10 * b + j) for j in range(5)])

        threads = [threading.Thread(target=append, args=(k,)) for k in range(len(stores))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        checked, head, broken = stores[0].verify_audit_chain(page=7)
        assert (checked, broken) == (150, None)
        assert head == everything(stores[0])[-1].chain
    finally:
        for s in stores:
            s.close()


def test_an_altered_row_is_found(store: Store, db_url: str) -> None:
    store.append_audit([event(i) for i in range(10)])
    store.append_audit([event(i) for i in range(10, 15)])
    read = everything(store)
    target = read[6].event_id
    sql(db_url, "UPDATE audit_events SET plate_number = :p WHERE id = :id", p="闽C99999", id=target)
    assert store.verify_audit_chain(page=4) == (15, read[-1].chain, target)
    # A row removed from the middle: the next one no longer follows from the one before it.
    sql(db_url, "UPDATE audit_events SET plate_number = :p WHERE id = :id", p=read[6].plate_number, id=target)
    assert store.verify_audit_chain()[2] is None
    sql(db_url, "DELETE FROM audit_events WHERE id = :id", id=read[9].event_id)
    assert store.verify_audit_chain() == (14, read[-1].chain, read[10].event_id)


def test_prune_deletes_old_events_through_the_id_and_the_rest_still_verifies(store: Store, db_url: str) -> None:
    store.append_audit([event(i, T0 + dt.timedelta(days=i)) for i in range(10)])  # one a day
    read = everything(store)
    ids = [e.event_id for e in read]
    before = T0 + dt.timedelta(days=6)  # events 0..5 are old enough
    with pytest.raises(InvalidArgument):
        store.prune_audit(before.replace(tzinfo=None), ids[3])
    # Through id 3 only, though 4 and 5 are old enough too.
    assert store.prune_audit(before, ids[3]) == 4
    assert [e.event_id for e in everything(store)] == ids[4:]
    assert store.verify_audit_chain() == (6, read[-1].chain, None)  # from the anchor: event 3's chain
    # Then by time: up to id 8, but 6..8 are not old enough.
    assert store.prune_audit(before, ids[8]) == 2
    assert [e.event_id for e in everything(store)] == ids[6:]
    assert store.verify_audit_chain() == (4, read[-1].chain, None)
    assert store.prune_audit(before, ids[8]) == 0  # nothing more: the anchor stays where it is
    assert store.verify_audit_chain() == (4, read[-1].chain, None)
    # An anchor that does not match the rest is found: the first remaining event is broken.
    sql(db_url, "UPDATE audit_chain_anchor SET chain = :c", c="0" * 64)
    assert store.verify_audit_chain()[2] == ids[6]


def test_prune_stops_at_the_first_event_that_is_not_old_enough(store: Store) -> None:
    """Events are stored in id order, but a buffered one may carry an earlier time than the one
    before it: pruning stops at the first event not before `before`, so no hole opens in the chain."""
    days = [0, 1, 9, 2, 3]  # the third is recent, those after it old
    store.append_audit([event(i, T0 + dt.timedelta(days=d)) for i, d in enumerate(days)])
    read = everything(store)
    assert store.prune_audit(T0 + dt.timedelta(days=5), read[-1].event_id) == 2
    assert [e.event_id for e in everything(store)] == [e.event_id for e in read[2:]]
    assert store.verify_audit_chain() == (3, read[-1].chain, None)


def test_after_pruning_everything_the_chain_continues_from_the_anchor(store: Store) -> None:
    store.append_audit([event(i, T0) for i in range(5)])
    read = everything(store)
    assert store.prune_audit(T0 + dt.timedelta(days=1), read[-1].event_id) == 5
    assert store.verify_audit_chain() == (0, read[-1].chain, None)  # the head is the anchor
    store.append_audit([event(i, T0) for i in range(5, 8)])
    later = everything(store)
    assert [e.event_id for e in later] == [read[-1].event_id + k for k in (1, 2, 3)]  # ids never go back
    assert store.verify_audit_chain() == (3, later[-1].chain, None)


def test_migration_chains_the_events_already_stored(db_url: str) -> None:
    """A log written at revision 0002 (no chain): the upgrade chains it, and new events follow on."""
    s = Store(db_url, migrate=False)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    try:
        with s.engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "0002")
            for i in range(7):
                conn.execute(
                    text(
                        "INSERT INTO audit_events (at, caller_id, role, rpc, plate_type, plate_number, verdict,"
                        " serial) VALUES (:at, 'T-1', 'police', 'Verify', '02', :plate, 'VERDICT_VALID', :serial)"
                    ),
                    {"at": T0.timestamp() + i / 3, "plate": f"闽C1{i:04d}", "serial": i},
                )
        s.migrate()
        s.append_audit([event(100)])
        checked, head, broken = s.verify_audit_chain(page=3)
        assert (checked, broken) == (8, None) and head == everything(s)[-1].chain
    finally:
        s.close()
