"""`vimark serve --demo N`: synthetic vehicles with marks, so a new user has something to scan."""

from __future__ import annotations

import datetime as dt
import random
from itertools import takewhile

from vimark.client.domain import BLOCKS_ISSUE_MASK, PROVINCES, Clock, VehicleCategory, china_date, month_of, status_bits
from vimark.client.errors import RuleViolation
from vimark.server import rules
from vimark.server.issuer import IssueCommand, Issuer
from vimark.server.records import VehicleRecord
from vimark.server.store import Store
from vimark.v1 import certificate_pb2

_LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"  # no I, O
_VIN_CHARS = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"  # no I, O, Q
_CATEGORIES = [  # (category, plate type, weight): mostly private cars, as on the road
    (VehicleCategory.SMALL_PASSENGER, "02", 70),
    (VehicleCategory.SMALL_VAN, "02", 4),
    (VehicleCategory.COMMERCIAL_PASSENGER, "02", 6),
    (VehicleCategory.GOODS, "01", 8),
    (VehicleCategory.LARGE_PASSENGER, "01", 2),
    (VehicleCategory.MOTORCYCLE, "07", 5),
    (VehicleCategory.SMALL_PASSENGER, "52", 5),  # small new-energy cars
]


def demo_vehicles(n: int, today: dt.date, seed: int = 2026) -> list[VehicleRecord]:
    """n synthetic vehicles: about 90% within validity, 5% overdue, 5% with a status set."""
    rng = random.Random(seed)
    vehicles = []
    for i in range(n):
        category, plate_type, _ = rng.choices(_CATEGORIES, weights=[w for *_, w in _CATEGORIES])[0]
        # i -> (province, authority letter, number) one to one: plates are unique up to 74 million.
        rest, province = divmod(i, len(PROVINCES))
        number, letter = divmod(rest, len(_LETTERS))
        prefix = PROVINCES[province] + _LETTERS[letter]
        plate = f"{prefix}D{number:05d}" if plate_type == "52" else f"{prefix}{number:05d}"
        registered = today - dt.timedelta(days=rng.randrange(60, 12 * 365))
        seats = 5 if category in (VehicleCategory.SMALL_PASSENGER, VehicleCategory.SMALL_VAN) else 0
        record = VehicleRecord(
            vehicle_id=0,
            plate_type=plate_type,
            plate_number=plate,
            vin="".join(rng.choice(_VIN_CHARS) for _ in range(9)) + f"{i:08d}",  # unique: the serial part
            category=category,
            registered_on=registered,
            seats=seats,
            exemption_lost=False,
            status_bits=0,
            valid_until=None,
            current_serial=0,
        )
        grid_facts = record.facts()
        due = rules.next_grid_due_after(grid_facts, month_of(today) - 1)  # the due month covering today
        roll = rng.random()
        if roll < 0.05:  # overdue: the due before that passed without inspection
            due = max(takewhile(lambda d: d < month_of(today), rules.grid(grid_facts)), default=due)
        status = "A"
        if 0.05 <= roll < 0.10:
            status = rng.choice("CDGKLJ")
        vehicles.append(VehicleRecord(**{**record.__dict__, "valid_until": due, "status_bits": status_bits(status)}))
    return vehicles


def seed_demo(store: Store, issuer: Issuer, n: int, clock: Clock) -> str:
    if store.count_vehicles():
        return "the database already holds vehicles; nothing seeded"
    today = china_date(clock())
    vehicles = demo_vehicles(n, today)
    for start in range(0, n, 1000):
        store.upsert_vehicles(vehicles[start : start + 1000])
    issued = refused = 0
    for i, v in enumerate(vehicles):
        if rules.within_validity(v.valid_until, today) and not v.status_bits & BLOCKS_ISSUE_MASK:
            command = IssueCommand(
                f"demo-{i}", v.plate_type, v.plate_number, v.vin, certificate_pb2.ISSUE_REASON_REDOWNLOAD, None, ""
            )
            try:
                issuer.issue(command)
                issued += 1
            except RuleViolation:  # one odd synthetic vehicle must not stop the seeding
                refused += 1
    sample = vehicles[0]
    return (
        f"seeded {n} vehicles and {issued} marks ({refused} refused by the rules); "
        f"try: vimark lookup --plate-number {sample.plate_number} --plate-type {sample.plate_type}"
        " (against a TLS server, with --ca, --cert and --key of a police or operator certificate)"
    )
