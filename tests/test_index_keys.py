"""The index's key hashes (server/index_keys.py): the one-key form a lookup uses and the array form
a start or a bulk change uses agree bit for bit, for every plate shape and VIN; a plate's type is
part of its key; and the values are pinned, so a change of the hash (which makes every checkpoint
unreadable) is a deliberate one, with a new checkpoint format."""

from __future__ import annotations

import random

import numpy as np

from vimark.server import index_checkpoint
from vimark.server.index_keys import plate_hash, plate_hashes, vin_hash, vin_hashes
from vimark.server.index_text import TEXT

PLATES = ["闽C12345", "京A12345警", "粤Z1234港", "沪AD12345", "苏E12345D", "使123456", "123456使", "闽C1234挂", "A", ""]
VINS = ["LSVAB2BJ5KN000001", "1HGCM82633A004352", "WVWZZZ1JZXW000001"]


def test_one_key_and_an_array_of_keys_hash_alike() -> None:
    rng = random.Random(9)
    plates = PLATES + [f"闽{rng.choice('ABCDEFGH')}{rng.randrange(10**5):05d}" for _ in range(500)]
    types = [rng.choice((1, 2, 15, 23, 51, 52, 99)) for _ in plates]
    vins = VINS + ["".join(rng.choices("ABCDEFGHJKLMNPRSTUVWXYZ0123456789", k=17)) for _ in range(500)]
    by_array = plate_hashes(np.array(types), np.array([p.encode() for p in plates], TEXT["plate"]))
    assert by_array.tolist() == [plate_hash(t, p) for t, p in zip(types, plates, strict=True)]
    assert vin_hashes(np.array([v.encode() for v in vins], TEXT["vin"])).tolist() == [vin_hash(v) for v in vins]
    assert len(set(by_array.tolist())) == len(set(zip(types, plates, strict=True)))


def test_a_plate_type_is_part_of_the_key_and_a_longer_key_is_not_its_prefix() -> None:
    assert plate_hash(1, "闽C12345") != plate_hash(2, "闽C12345")
    assert plate_hash(2, "闽C12345") != vin_hash("闽C12345")
    assert plate_hash(2, "ABCDEFGHIJKLMNOP") != plate_hash(2, "ABCDEFGHIJKLMNOPQ")  # 16 and 17 bytes


def test_the_hash_values_are_pinned_to_the_checkpoint_format() -> None:
    assert index_checkpoint.FORMAT == 2, "a new hash needs a new checkpoint format, and new values here"
    assert plate_hash(2, "闽C12345") == 0xF6E04F59F1D64FF2
    assert vin_hash("LSVAB2BJ5KN000001") == 0x2A8C43F6AD004825
