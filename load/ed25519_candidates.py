"""Which Ed25519 verify is fastest on this machine, and do the candidates agree?

    python -m load.ed25519_candidates [--seconds 1.0] [--repeats 3]

Prints verifications/s for each candidate on 1 thread and on as many threads as there are cores
(each a best of --repeats), then checks that every candidate gives the same answer on valid and
invalid signatures. A candidate that releases the GIL scales with the threads; one that does not
stays flat. Exit status 1 if the candidates disagree on any case that matters to vimark.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Callable

import nacl.bindings
import nacl.exceptions
import nacl.signing
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

Check = Callable[[bytes, bytes, bytes], bool]  # (public_key, signature, message) -> authentic?
# The group order L: a signature whose S is not below it is non-canonical and must be refused.
_L = 2**252 + 27742317777372353535851937790883648493


def _pynacl_detached() -> Check | None:
    verify = getattr(nacl.bindings, "crypto_sign_verify_detached", None)  # not exported by PyNaCl <= 1.6
    if verify is None:
        return None

    def check(public_key: bytes, signature: bytes, message: bytes) -> bool:
        try:
            return bool(verify(signature, message, public_key))
        except nacl.exceptions.BadSignatureError:
            return False

    return check


def _pynacl_open(public_key: bytes, signature: bytes, message: bytes) -> bool:
    try:
        nacl.bindings.crypto_sign_open(signature + message, public_key)
    except nacl.exceptions.BadSignatureError:
        return False
    return True


def _pynacl_verify_key() -> Check:
    keys: dict[bytes, nacl.signing.VerifyKey] = {}

    def check(public_key: bytes, signature: bytes, message: bytes) -> bool:
        key = keys.get(public_key)
        if key is None:
            key = keys[public_key] = nacl.signing.VerifyKey(public_key)
        try:
            key.verify(message, signature)
        except nacl.exceptions.BadSignatureError:
            return False
        return True

    return check


def _cryptography() -> Check:
    keys: dict[bytes, Ed25519PublicKey] = {}

    def check(public_key: bytes, signature: bytes, message: bytes) -> bool:
        key = keys.get(public_key)
        if key is None:
            key = keys[public_key] = Ed25519PublicKey.from_public_bytes(public_key)
        try:
            key.verify(signature, message)
        except InvalidSignature:
            return False
        return True

    return check


def candidates() -> dict[str, Check]:
    found: dict[str, Check] = {}
    detached = _pynacl_detached()
    if detached is not None:
        found["pynacl crypto_sign_verify_detached"] = detached
    found["pynacl bindings.crypto_sign_open"] = _pynacl_open
    found["pynacl VerifyKey.verify"] = _pynacl_verify_key()
    found["cryptography Ed25519PublicKey.verify"] = _cryptography()
    return found


def _rate(check: Check, item: tuple[bytes, bytes, bytes], threads: int, seconds: float) -> float:
    """Verifications per second over `threads` threads, each looping for about `seconds`."""
    counts = [0] * threads
    start = threading.Barrier(threads + 1)

    def loop(slot: int) -> None:
        start.wait()
        deadline = time.perf_counter() + seconds
        n = 0
        while time.perf_counter() < deadline:
            for _ in range(200):
                check(*item)
            n += 200
        counts[slot] = n

    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    start.wait()
    t0 = time.perf_counter()
    for w in workers:
        w.join()
    return sum(counts) / (time.perf_counter() - t0)


def _cases() -> tuple[dict[str, tuple[bytes, bytes, bytes]], dict[str, tuple[bytes, bytes, bytes]]]:
    """(cases every candidate must agree on, edge cases reported for information)."""
    private = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    public = private.public_key().public_bytes_raw()
    other = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33))).public_key().public_bytes_raw()
    message = b"vimark/v1/mark\x00\x00\x01" + bytes(range(150))
    signature = private.sign(message)
    s = int.from_bytes(signature[32:], "little")
    flipped = bytearray(signature)
    flipped[5] ^= 0x01
    flipped_s = bytearray(signature)
    flipped_s[40] ^= 0x80
    must_agree = {
        "valid": (public, signature, message),
        "valid, empty message": (public, private.sign(b""), b""),
        "bit flipped in R": (public, bytes(flipped), message),
        "bit flipped in S": (public, bytes(flipped_s), message),
        "message altered": (public, signature, message[:-1] + b"\x00"),
        "message truncated": (public, signature, message[:-1]),
        "another key": (other, signature, message),
        "non-canonical S (S + L)": (public, signature[:32] + (s + _L).to_bytes(32, "little"), message),
        "all-zero signature": (public, bytes(64), message),
        "identity R, S = 0": (public, (1).to_bytes(32, "little") + bytes(32), message),
    }
    # A small-order public key (the identity point) is never in vimark's trust list (keys are ours);
    # libsodium refuses such keys outright, OpenSSL may not. Shown, not required to agree.
    identity = (1).to_bytes(32, "little")
    informational = {"identity public key, identity R, S = 0": (identity, identity + bytes(32), message)}
    return must_agree, informational


def _agree(found: dict[str, Check]) -> bool:
    must_agree, informational = _cases()
    ok = True
    print("\nanswers (True = authentic):")
    for group, cases in (("must agree", must_agree), ("informational", informational)):
        for name, case in cases.items():
            answers = {}
            for label, check in found.items():
                try:
                    answers[label] = check(*case)
                except Exception as exc:  # a candidate that raises instead of answering
                    answers[label] = f"raised {type(exc).__name__}"  # type: ignore[assignment]
            same = len(set(map(str, answers.values()))) == 1
            if group == "must agree" and not same:
                ok = False
            shown = ", ".join(f"{label.split()[0]}/{label.split()[-1]}={a}" for label, a in answers.items())
            print(f"  [{group}] {name:32s} {'agree' if same else 'DIFFER'}: {shown}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=1.0, help="seconds per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per figure; the best is shown")
    args = parser.parse_args(argv)
    cores = len(os.sched_getaffinity(0))
    found = candidates()
    private = Ed25519PrivateKey.generate()
    message = b"vimark/v1/mark\x00\x00\x01" + os.urandom(150)  # about the size of a real signed body
    item = (private.public_key().public_bytes_raw(), private.sign(message), message)
    if "pynacl crypto_sign_verify_detached" not in found:
        print("nacl.bindings.crypto_sign_verify_detached: not in this PyNaCl; measuring the other bindings")
    print(f"{cores} cores; best of {args.repeats} x {args.seconds:.1f} s; valid signatures over {len(message)} bytes")
    print(f"{'candidate':40s} {'1 thread /s':>12s} {f'{cores} threads /s':>14s} {'per core':>10s} {'scaling':>8s}")
    for label, check in found.items():
        one = max(_rate(check, item, 1, args.seconds) for _ in range(args.repeats))
        many = max(_rate(check, item, cores, args.seconds) for _ in range(args.repeats))
        print(f"{label:40s} {one:12,.0f} {many:14,.0f} {many / cores:10,.0f} {many / one:7.2f}x")
    return 0 if _agree(found) else 1


if __name__ == "__main__":
    sys.exit(main())
