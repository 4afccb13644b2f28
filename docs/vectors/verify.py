#!/usr/bin/env python3
"""Independent check of docs/vectors/wire-v1.json, sharing-v1.json, control-v1.json, ties-v1.json, ties-tpm-v1.json and
registry-v1.json, and of the transparency log vectors of docs/registry.md.

This is an independent implementation of the custos v1 wire formats. The §1–§5 part was written from
docs/wire.md alone (no Rust source was consulted); the §10 part follows wire.md §10 and RFCs 8949, 9052
and 9180, and, like the rest, imports no project code. For every record vector it recomputes the schedule
encoding, the DPK, the node path, the AEAD key/nonce, the header and the sealed record; opens the expected
records; computes the minimal covers; and shows that every corrupted record is rejected. For the sharing
statements (§10) it rebuilds every CBOR payload and COSE_Sign1 by hand, re-signs and verifies them with
Ed25519, runs the HPKE (RFC 9180) base-mode setup from the seeded ephemeral key, and opens every sealed
node secret to the secret derived from the master secret. The §11 part (owner control, Vector 8) follows wire.md
§11: it derives every key with HKDF-Expand, rebuilds and opens every message with AES-GCM, recomputes the claim
proof's HMAC and rebuilds the device's persisted state. The §12 part (device-to-device keys, Vector 9) follows
wire.md §12 and the Noise specification (revision 34): it derives every wrapping and message key with HKDF-Expand,
rebuilds and opens every request, package, receipt, notice and refusal with AES-GCM, derives the session keys,
recomputes the key confirmations' HMACs and the data messages, and runs the Noise KK exchange step by step. The
transparency log part follows RFC 9162 §2.1 and the C2SP tlog-checkpoint and signed-note specifications: it
recomputes the leaf hashes, the roots and the proofs from the RFC's recursive definitions (MTH, PATH, SUBPROOF),
rebuilds the signed checkpoint from its seed, and verifies it and a note signed by Go's golang.org/x/mod/sumdb/note.
The registry-v1.json part follows RFC 5869, RFC 9580 (OpenPGP v4 packets, both header formats), RFC 9052 and RFC 8949:
it derives the device's identity seed, reads the certificates packet by packet, recomputes the v4 fingerprints and
every signature hash, verifies the self-certifications, the subkey binding and the manufacturer's certification with
its notations (and refuses them with one byte changed), verifies the COSE_Sign1 status and code identity with a small
CBOR decoder of its own, and recomputes the log entries and their leaf hashes.

Usage (from the repository root):  python3 docs/vectors/verify.py
Needs only the standard library plus `cryptography` (pip install cryptography).
"""
import base64
import calendar
import hashlib
import hmac
import json
import re
import sys
from datetime import datetime, timedelta
from pathlib import Path

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

EPOCH = datetime(1970, 1, 1)
END_OF_TIME = 253402300800  # 10000-01-01T00:00:00Z, exclusive
SUITES = {"aes256gcm": 1, "chacha20poly1305": 2}
CIPHERS = {1: AESGCM, 2: ChaCha20Poly1305}
CALENDAR = {"year": 1, "month": 2, "week": 3, "day": 4, "hour": 5}
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
FIXED_OF = {4: 86400, 5: 3600}  # length of the calendar stages that have a fixed length


# ---- §1 primitives --------------------------------------------------------------------------
def expand(prk: bytes, info: bytes) -> bytes:
    """HKDF-Expand(SHA-256, L=32) with `prk` used directly as the PRK = HMAC(prk, info || 0x01)."""
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()


# ---- §2 time and schedules ------------------------------------------------------------------
def rfc3339(t: int) -> str:
    return (EPOCH + timedelta(seconds=t)).strftime("%Y-%m-%dT%H:%M:%SZ")


def month_start(m: int) -> int:
    return calendar.timegm((1970 + m // 12, m % 12 + 1, 1, 0, 0, 0))


def parse_schedule(text: str) -> list:
    """Text form -> list of (code, L, text); L is the length for code 6, else 0. Enforces nesting."""
    stages = []
    for name in text.split("/"):
        if name in CALENDAR:
            stages.append((CALENDAR[name], 0, name))
            continue
        m = re.fullmatch(r"([1-9][0-9]*)([smhd])", name)
        if not m or int(m[1]) * UNITS[m[2]] > 0xFFFFFFFF:
            raise ValueError(f"bad stage {name!r}")
        stages.append((6, int(m[1]) * UNITS[m[2]], name))
    if not 1 <= len(stages) <= 8:
        raise ValueError("a schedule has 1 to 8 stages")
    for (co, lo, _), (ci, li, name) in zip(stages, stages[1:]):
        if not nests(ci, li, co, lo):
            raise ValueError(f"stage {name!r} does not nest in the one before it")
    return stages


def nests(ci: int, li: int, co: int, lo: int) -> bool:
    if ci == 6 and co == 6:
        return lo % li == 0 and li < lo
    if ci == 6:  # fixed in calendar: divides 1 h (hour), 1 d (day, week, month, year); strictly shorter
        limit = 3600 if co == 5 else 86400
        return limit % li == 0 and (li < limit or co <= 3)
    if co == 6:  # hour/day in a fixed stage that is a larger multiple of them
        return ci in FIXED_OF and lo % FIXED_OF[ci] == 0 and lo > FIXED_OF[ci]
    return ci > co  # calendar in a coarser calendar stage


def encode_schedule(stages) -> bytes:
    out = bytes([len(stages)])
    for code, length, _ in stages:
        out += bytes([code]) + (length.to_bytes(4, "big") if code == 6 else b"")
    return out


def index_of(stage, t: int) -> int:
    code, length, _ = stage
    if not 0 <= t < END_OF_TIME:
        raise ValueError("time out of range")
    dt = EPOCH + timedelta(seconds=t)
    month_index = (dt.year - 1970) * 12 + dt.month - 1
    return {1: lambda: dt.year - 1970, 2: lambda: month_index,
            3: lambda: month_index * 5 + min((dt.day - 1) // 7, 4),
            4: lambda: t // 86400, 5: lambda: t // 3600, 6: lambda: t // (length or 1)}[code]()


def period_of(stage, i: int):
    """[start, end) of the period with index i."""
    code, length, _ = stage
    if code == 1:
        return month_start(12 * i), month_start(12 * (i + 1))
    if code == 2:
        return month_start(i), month_start(i + 1)
    if code == 3:
        m, w = divmod(i, 5)
        start, month_end = month_start(m) + 7 * 86400 * w, month_start(m + 1)
        if start >= month_end:
            raise ValueError("no fifth week in a 28-day February")
        return start, (start + 7 * 86400 if w < 4 else month_end)
    size = {4: 86400, 5: 3600, 6: length}[code]
    return i * size, (i + 1) * size


# ---- §3 key derivation ----------------------------------------------------------------------
def dpk_info(device: bytes, epoch: int) -> bytes:
    return b"custos/v1/dpk" + device + epoch.to_bytes(2, "big")


def node_info(depth: int, stage, i: int) -> bytes:
    code, length, _ = stage
    return b"custos/v1/node" + bytes([depth, code]) + length.to_bytes(4, "big") + i.to_bytes(8, "big")


def derive_path(dpk: bytes, stages, t: int) -> list:
    """For each depth: dict(depth, stage, index, period, info, secret) of the node containing t."""
    path, secret = [], dpk
    for depth, stage in enumerate(stages, start=1):
        i = index_of(stage, t)
        info = node_info(depth, stage, i)
        secret = expand(secret, info)
        path.append(dict(depth=depth, stage=stage[2], index=i, period=list(map(rfc3339, period_of(stage, i))),
                         info=info.hex(), secret=secret.hex()))
    return path


def key_info(suite: int) -> bytes:
    return b"custos/v1/key" + bytes([suite])


def check_span(stages, valid_from: int, valid_until: int):
    leaf = stages[-1]
    for edge in (valid_from, valid_until):
        if period_of(leaf, index_of(leaf, edge))[0] != edge:
            raise ValueError("epoch span must start and end on leaf boundaries")


def cover(stages, valid_from: int, valid_until: int, start: int, end: int) -> list:
    """Minimal cover: walking from `start`, take the shallowest node (clipped to the epoch span) that
    starts there and ends inside [start, end). Depth 0 is the whole span (the DPK)."""
    check_span(stages, valid_from, valid_until)
    if not valid_from <= start < end <= valid_until:
        raise ValueError("range outside the epoch span")
    out, cursor = [], start
    while cursor < end:
        candidates = [(0, 0, valid_from, valid_until)]
        for depth, stage in enumerate(stages, start=1):
            i = index_of(stage, cursor)
            s, e = period_of(stage, i)
            candidates.append((depth, i, max(s, valid_from), min(e, valid_until)))
        depth, i, s, e = next((c for c in candidates if c[2] == cursor and c[3] <= end), (None,) * 4)
        if depth is None:
            raise ValueError("range is not on leaf boundaries")
        out.append(dict(depth=depth, index=i, period=[rfc3339(s), rfc3339(e)]))
        cursor = e
    return out


# ---- §4 sealed record -----------------------------------------------------------------------
def header(suite: int, device: bytes, epoch: int, leaf: int, nonce: bytes) -> bytes:
    return bytes([0x10 | suite]) + device + epoch.to_bytes(2, "big") + leaf.to_bytes(4, "big") + nonce


def aead_nonce(nonce: bytes) -> bytes:
    return b"\x00" * 4 + nonce


def open_record(key: bytes, record: bytes) -> bytes:
    """Return the plaintext, or raise ValueError naming the rejection."""
    if len(record) < 1 or record[0] >> 4 != 1:
        raise ValueError("UnsupportedVersion")
    if record[0] & 0x0F not in CIPHERS:
        raise ValueError("UnsupportedSuite")
    if len(record) < 39:
        raise ValueError("Truncated")
    try:
        return CIPHERS[record[0] & 0x0F](key).decrypt(aead_nonce(record[15:23]), record[23:], record[:23])
    except InvalidTag:
        raise ValueError("Authentication") from None


# ---- §10 sharing statements -----------------------------------------------------------------
def cbor(v) -> bytes:
    """Deterministic CBOR (RFC 8949 §4.2.1) for the few types the statements use."""
    def head(major: int, n: int) -> bytes:
        if n < 24:
            return bytes([major << 5 | n])
        for ai, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
            if n < 1 << (8 * size):
                return bytes([major << 5 | ai]) + n.to_bytes(size, "big")
        raise ValueError("integer too large")
    if isinstance(v, int):
        return head(0, v) if v >= 0 else head(1, -1 - v)
    if isinstance(v, bytes):
        return head(2, len(v)) + v
    if isinstance(v, str):
        return head(3, len(v.encode())) + v.encode()
    if isinstance(v, list):
        return head(4, len(v)) + b"".join(map(cbor, v))
    if isinstance(v, dict):
        return head(5, len(v)) + b"".join(cbor(k) + cbor(x) for k, x in v.items())
    raise TypeError(type(v))


CONTENT_TYPES = {"request": "application/custos-request+cbor", "grant": "application/custos-grant+cbor",
                 "denial": "application/custos-denial+cbor", "access": "application/custos-access+cbor"}


def protected_header(kind: str) -> bytes:
    return cbor({1: -8, 3: CONTENT_TYPES[kind]})  # alg: EdDSA, content type


def sig_structure(protected: bytes, payload: bytes) -> bytes:
    return cbor(["Signature1", protected, b"", payload])


def sign1(protected: bytes, payload: bytes, signature: bytes) -> bytes:
    return cbor([protected, {}, payload, signature])


def ed25519_public(seed: bytes) -> bytes:
    return Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()


def x25519_public(secret: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(secret).public_key().public_bytes_raw()


def hkdf_extract(salt: bytes, ikm: bytes) -> bytes:
    return hmac.new(salt, ikm, hashlib.sha256).digest()


def hkdf_expand(prk: bytes, info: bytes, length: int) -> bytes:
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out, counter = out + block, counter + 1
    return out[:length]


KEM_SUITE = b"KEM" + (0x0020).to_bytes(2, "big")  # DHKEM(X25519, HKDF-SHA256)
HPKE_SUITE = b"HPKE" + (0x0020).to_bytes(2, "big") + (0x0001).to_bytes(2, "big") + (0x0002).to_bytes(2, "big")


def labeled_extract(suite: bytes, salt: bytes, label: bytes, ikm: bytes) -> bytes:
    return hkdf_extract(salt, b"HPKE-v1" + suite + label + ikm)


def labeled_expand(suite: bytes, prk: bytes, label: bytes, info: bytes, length: int) -> bytes:
    return hkdf_expand(prk, length.to_bytes(2, "big") + b"HPKE-v1" + suite + label + info, length)


def ephemeral_ikm(seed: bytes, counter: int = 0) -> bytes:
    """The seeded generator's block `counter`; HPKE's DeriveKeyPair takes the first 32 bytes."""
    return hmac.new(seed, b"custos/v1/hpke-ephemeral" + counter.to_bytes(4, "big"), hashlib.sha256).digest()


def derive_keypair(ikm: bytes):
    """RFC 9180 §7.1.3, X25519: sk = LabeledExpand(LabeledExtract("", "dkp_prk", ikm), "sk", "", 32)."""
    sk = labeled_expand(KEM_SUITE, labeled_extract(KEM_SUITE, b"", b"dkp_prk", ikm), b"sk", b"", 32)
    return sk, x25519_public(sk)


def hpke_context(dh: bytes, enc: bytes, pk_r: bytes, info: bytes) -> dict:
    """DHKEM's ExtractAndExpand, then KeySchedule in base mode (no PSK): key and base_nonce."""
    eae_prk = labeled_extract(KEM_SUITE, b"", b"eae_prk", dh)
    shared_secret = labeled_expand(KEM_SUITE, eae_prk, b"shared_secret", enc + pk_r, 32)
    context = bytes([0]) + labeled_extract(HPKE_SUITE, b"", b"psk_id_hash", b"") + \
        labeled_extract(HPKE_SUITE, b"", b"info_hash", info)
    secret = labeled_extract(HPKE_SUITE, shared_secret, b"secret", b"")
    return dict(shared_secret=shared_secret, key=labeled_expand(HPKE_SUITE, secret, b"key", context, 32),
                base_nonce=labeled_expand(HPKE_SUITE, secret, b"base_nonce", context, 12))


def seq_nonce(base_nonce: bytes, seq: int) -> bytes:
    return bytes(a ^ b for a, b in zip(base_nonce, seq.to_bytes(12, "big")))


def node_aad(device: bytes, epoch: int, depth: int, index: int) -> bytes:
    return device + epoch.to_bytes(2, "big") + bytes([depth]) + index.to_bytes(8, "big")


def node_secret(dpk: bytes, stages, depth: int, start: int) -> bytes:
    """The secret of the node at `depth` whose extent starts at `start` (depth 0: the DPK)."""
    return dpk if depth == 0 else bytes.fromhex(derive_path(dpk, stages, start)[depth - 1]["secret"])


def check_statement(n: str, kind: str, payload: bytes, seed: bytes, public: bytes, exp: dict) -> bytes:
    """Rebuild a COSE_Sign1 around `payload`, re-sign it (Ed25519 is deterministic), verify it; returns the bytes."""
    compare(f"{n}: public key of the signing seed", ed25519_public(seed).hex(), public.hex())
    protected = protected_header(kind)
    compare(f"{n}: protected header", protected.hex(), exp["protected"])
    compare(f"{n}: payload", payload.hex(), exp["payload"])
    tbs = sig_structure(protected, payload)
    compare(f"{n}: Sig_structure", tbs.hex(), exp["sig_structure"])
    signature = Ed25519PrivateKey.from_private_bytes(seed).sign(tbs)
    compare(f"{n}: signature", signature.hex(), exp["signature"])
    signed = bytes.fromhex(exp["signed"])
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(bytes.fromhex(exp["signature"]), tbs)
        check(f"{n}: signature verifies", True)
    except InvalidSignature:
        check(f"{n}: signature verifies", False, "invalid signature")
    compare(f"{n}: COSE_Sign1", sign1(protected, payload, signature).hex(), exp["signed"])
    compare(f"{n}: size", len(signed), exp["size"])
    return signed


def run_sharing(v: dict):
    keys = {k: bytes.fromhex(x) for k, x in v["keys"].items()}
    tree = v["tree"]
    device, epoch = bytes.fromhex(tree["device"].replace("-", "")), tree["epoch"]
    stages = parse_schedule(tree["schedule"])
    compare("sharing: schedule_bytes", encode_schedule(stages).hex(), tree["schedule_bytes"])
    compare("sharing: reply public key", x25519_public(keys["reply_secret"]).hex(), keys["reply_public"].hex())
    dpk = expand(keys["master"], dpk_info(device, epoch))
    now = v["now"]
    ids = {}
    for case in v["cases"]:
        n = f"sharing {case['name']}"
        inp, exp = case["request"]["input"], case["request"]["expect"]
        app_key, owner, reply_key = (bytes.fromhex(inp[k]) for k in ("app_key", "owner", "reply_key"))
        devices = [bytes.fromhex(d.replace("-", "")) for d in inp["devices"]]
        compare(f"{n}: owner is the keeper", owner.hex(), keys["keeper_public"].hex())
        compare(f"{n}: reply key", reply_key.hex(), keys["reply_public"].hex())
        payload = cbor([1, app_key, inp["app_name"], owner, devices, inp["from"], inp["until"], inp["purpose"],
                        inp["purpose_text"], inp["retention"], reply_key, bytes.fromhex(inp["nonce"]), inp["expires"]])
        signed = check_statement(f"{n} request", "request", payload, keys["app_seed"], app_key, exp)
        request_id = hashlib.sha256(signed).digest()
        compare(f"{n}: request id", request_id.hex(), exp["id"])
        ids[case["name"]] = request_id
        check(f"{n}: valid at `now`, for at most 90 days", now < inp["expires"] <= now + 90 * 86400)
        check(f"{n}: shape", 1 <= len(devices) <= 64 and 0 < len(inp["purpose"].encode()) <= 64
              and len(inp["app_name"].encode()) <= 64 and len(inp["purpose_text"].encode()) <= 512)

        # The grant: the cover of the whole range, sealed with HPKE to the reply key.
        gexp, hp = case["grant"]["expect"], case["grant"]["expect"]["hpke"]
        info = b"custos/v1/grant" + request_id
        compare(f"{n}: hpke info", info.hex(), hp["info"])
        ikm = ephemeral_ikm(keys["hpke_seed"])
        compare(f"{n}: hpke ikm (generator block 0)", ikm.hex(), hp["ikm"])
        sk_e, enc = derive_keypair(ikm)
        compare(f"{n}: hpke ephemeral secret", sk_e.hex(), hp["ephemeral_secret"])
        compare(f"{n}: hpke enc", enc.hex(), hp["enc"])
        dh = X25519PrivateKey.from_private_bytes(sk_e).exchange(X25519PublicKey.from_public_bytes(reply_key))
        compare(f"{n}: hpke dh", dh.hex(), hp["dh"])
        ctx = hpke_context(dh, enc, reply_key, info)
        for field in ("shared_secret", "key", "base_nonce"):
            compare(f"{n}: hpke {field}", ctx[field].hex(), hp[field])
        # The application's side: the reply secret and enc alone give the same context.
        reply = X25519PrivateKey.from_private_bytes(keys["reply_secret"])
        dh_r = reply.exchange(X25519PublicKey.from_public_bytes(enc))
        ctx_r = hpke_context(dh_r, enc, reply_key, info)
        compare(f"{n}: hpke context, receiver side", ctx_r, ctx)
        want = cover(stages, tree["valid_from"], tree["valid_until"], inp["from"], inp["until"])
        compare(f"{n}: granted nodes are the cover", [(x["depth"], x["index"], x["period"]) for x in gexp["nodes"]],
                [(c["depth"], c["index"], c["period"]) for c in want])
        items = []
        for seq, (node, c) in enumerate(zip(gexp["nodes"], want)):
            start = calendar.timegm(datetime.strptime(c["period"][0], "%Y-%m-%dT%H:%M:%SZ").timetuple())
            secret = node_secret(dpk, stages, c["depth"], start)
            compare(f"{n}: node {seq} secret", secret.hex(), node["secret"])
            aad = node_aad(device, epoch, c["depth"], c["index"])
            compare(f"{n}: node {seq} aad", aad.hex(), node["aad"])
            nonce = seq_nonce(ctx["base_nonce"], seq)
            compare(f"{n}: node {seq} nonce", nonce.hex(), node["nonce"])
            sealed = AESGCM(ctx["key"]).encrypt(nonce, secret, aad)
            compare(f"{n}: node {seq} sealed", sealed.hex(), node["sealed"])
            try:
                opened = AESGCM(ctx_r["key"]).decrypt(seq_nonce(ctx_r["base_nonce"], seq),
                                                      bytes.fromhex(node["sealed"]), aad)
                compare(f"{n}: node {seq} opens with the reply secret", opened.hex(), secret.hex())
            except InvalidTag:
                check(f"{n}: node {seq} opens with the reply secret", False, "tag")
            items.append([c["depth"], c["index"], sealed])
        granted = [device, epoch, encode_schedule(stages), tree["valid_from"], tree["valid_until"], items]
        payload = cbor([1, request_id, case["grant"]["input"]["issued_at"], enc, [granted]])
        check_statement(f"{n} grant", "grant", payload, keys["keeper_seed"], keys["keeper_public"], gexp)

    d = v["denial"]
    compare("sharing denial: names the one-week request", d["input"]["request"], ids["one week"].hex())
    payload = cbor([1, bytes.fromhex(d["input"]["request"]), d["input"]["issued_at"], d["input"]["reason"]])
    check_statement("sharing denial", "denial", payload, keys["keeper_seed"], keys["keeper_public"], d["expect"])

    t = v["access_token"]
    owner = bytes.fromhex(t["input"]["owner"])
    compare("sharing access token: inbox scope", t["input"]["scope"], f"GET /v1/owners/{owner.hex()}/inbox")
    payload = cbor([1, owner, t["input"]["scope"], t["input"]["at"]])
    check_statement("sharing access token", "access", payload, keys["keeper_seed"], owner, t["expect"])


# ---- §11 owner control ----------------------------------------------------------------------
def run_control(v: dict):
    """Vector 8: derive every key from the UDK (and the member key, and the SDK for the claim proof), rebuild every
    message from its fields with AES-256-GCM, open it again, and rebuild the device's persisted state."""
    inp, keys = v["input"], v["keys"]
    udk, member_key, sdk = bytes.fromhex(inp["udk"]), bytes.fromhex(inp["member"]["key"]), bytes.fromhex(inp["sdk"])
    device = bytes.fromhex(inp["device"].replace("-", ""))
    token = bytes.fromhex(inp["token"])
    check("control: suite is AES-256-GCM", SUITES[inp["suite"]] == 1)

    k_owner = hkdf_expand(udk, b"custos/v1/command/owner", 32)
    derived = {"K_owner": k_owner, "K_list": hkdf_expand(udk, b"custos/v1/control-list", 32),
               "K_ack": hkdf_expand(udk, b"custos/v1/control-list-ack", 32),
               "K_claim": hkdf_expand(udk, b"custos/v1/claim", 32), "K_up": hkdf_expand(sdk, b"custos/v1/uplink", 32)}
    for name, key in derived.items():
        compare(f"control: {name}", key.hex(), keys[name])
    senders = {}
    for who, k_s in (("owner", k_owner), ("member", member_key)):
        senders[who] = {"K_cmd": hkdf_expand(k_s, b"custos/v1/command", 32),
                        "K_ans": hkdf_expand(k_s, b"custos/v1/answer", 32)}
        for name, key in senders[who].items():
            compare(f"control: {who} {name}", key.hex(), keys[who][name])

    def sealed(n: str, key: bytes, label: bytes, head: bytes, nonce: bytes, plain: bytes, exp: dict, size: int):
        aad = label + device + head
        compare(f"control {n}: header", head.hex(), exp["header"])
        compare(f"control {n}: nonce", nonce.hex(), exp["nonce"])
        compare(f"control {n}: aad", aad.hex(), exp["aad"])
        if "plaintext" in exp:
            compare(f"control {n}: plaintext", plain.hex(), exp["plaintext"])
        msg = head + AESGCM(key).encrypt(nonce, plain, aad)
        compare(f"control {n}: bytes", msg.hex(), exp["bytes"])
        compare(f"control {n}: size", len(msg), exp["size"])
        compare(f"control {n}: size per wire.md", len(msg), size)
        try:
            opened = AESGCM(key).decrypt(nonce, bytes.fromhex(exp["bytes"])[len(head):], aad)
            compare(f"control {n}: opens", opened.hex(), plain.hex())
        except InvalidTag:
            check(f"control {n}: opens", False, "tag")
        bad = bytearray.fromhex(exp["bytes"])
        bad[1 + len(head) // 2] ^= 1  # a header byte (the AAD) altered
        try:
            AESGCM(key).decrypt(nonce, bytes(bad[len(head):]), bytes(label + device + bad[:len(head)]))
            check(f"control {n}: an altered header is refused", False, "opened")
        except InvalidTag:
            check(f"control {n}: an altered header is refused", True)

    def command(n: str, who: str, exp: dict):
        sender, counter, expires = exp["sender"], exp["counter"], exp["expires"]
        value = bytes.fromhex(exp["value"])
        head = bytes([0x41, 1]) + sender.to_bytes(4, "big") + counter.to_bytes(8, "big") + expires.to_bytes(4, "big")
        nonce = sender.to_bytes(4, "big") + counter.to_bytes(8, "big")
        check(f"control {n}: not expired at `now`", inp["now"] < expires)
        sealed(n, senders[who]["K_cmd"], b"custos/v1/command", head, nonce, bytes([exp["op"]]) + value, exp,
               35 + len(value))

    command("owner SET", "owner", v["owner_set"])
    compare("control owner SET: op SET, value \"on\"", (v["owner_set"]["op"], v["owner_set"]["value"]), (1, b"on".hex()))
    command("member GET", "member", v["member_get"])
    compare("control member GET: op GET, no value", (v["member_get"]["op"], v["member_get"]["value"]), (2, ""))
    compare("control member GET: sender is the member", v["member_get"]["sender"], inp["member"]["sender"])

    a = v["owner_answer"]
    state = bytes.fromhex(a["state"])
    head = bytes([0x42, 1]) + a["sender"].to_bytes(4, "big") + a["counter"].to_bytes(8, "big") + bytes.fromhex(a["nonce"])
    compare("control answer: answers the owner's command", (a["sender"], a["counter"]),
            (v["owner_set"]["sender"], v["owner_set"]["counter"]))
    sealed("answer", senders["owner"]["K_ans"], b"custos/v1/answer", head, bytes.fromhex(a["nonce"]),
           bytes([a["status"]]) + state, a, 43 + len(state))
    compare("control answer: Done, state \"on\"", (a["status"], state), (0, b"on"))

    lst, m = v["list"], inp["member"]
    plain = bytes([1]) + m["sender"].to_bytes(4, "big") + bytes([m["rights"]]) + member_key
    head = bytes([0x45, 1]) + lst["version"].to_bytes(8, "big") + bytes.fromhex(lst["nonce"])
    sealed("list", derived["K_list"], b"custos/v1/control-list", head, bytes.fromhex(lst["nonce"]), plain, lst,
           39 + 37 * 1)

    ack = v["list_ack"]
    head = bytes([0x46, 1]) + ack["version"].to_bytes(8, "big") + bytes.fromhex(ack["nonce"])
    sealed("list ack", derived["K_ack"], b"custos/v1/control-list-ack", head, bytes.fromhex(ack["nonce"]), b"",
           ack, 38)
    compare("control list ack: acknowledges the list's version", ack["version"], lst["version"])

    c = v["claim"]
    head = bytes([0x47, 1]) + bytes.fromhex(c["nonce"])
    sealed("claim", derived["K_claim"], b"custos/v1/claim", head, bytes.fromhex(c["nonce"]), token, c, 46)

    p = v["claim_proof"]
    mac_input = bytes([0x35]) + device + token
    compare("control claim proof: MAC input", mac_input.hex(), p["mac_input"])
    mac = hmac.new(derived["K_up"], mac_input, hashlib.sha256).digest()
    compare("control claim proof: HMAC", mac.hex(), p["hmac"])
    proof = bytes([0x35]) + token + mac[:16]
    compare("control claim proof: bytes", proof.hex(), p["bytes"])
    compare("control claim proof: size", (len(proof), p["size"]), (33, 33))
    got = bytes.fromhex(p["bytes"])
    check("control claim proof: verifies", hmac.compare_digest(
        hmac.new(derived["K_up"], bytes([0x35]) + device + got[1:17], hashlib.sha256).digest()[:16], got[17:]))

    # The device's state after list v1 and both commands: version, the owner's mark, member 1 with its mark.
    st = bytes([1]) + lst["version"].to_bytes(8, "big") + v["owner_set"]["counter"].to_bytes(8, "big") + bytes([1]) \
        + m["sender"].to_bytes(4, "big") + bytes([m["rights"]]) + member_key + v["member_get"]["counter"].to_bytes(8, "big")
    compare("control state: encode()", st.hex(), v["state"]["bytes"])
    compare("control state: size", (len(st), v["state"]["size"]), (18 + 45, 18 + 45))


# ---- §12 device-to-device keys (TIES) -------------------------------------------------------
def run_ties(v: dict):
    """Vector 9: derive each node's wrapping keys from its SDK, rebuild every node <-> CE message from its fields with
    a key per message and AES-256-GCM under the zero nonce, open each one, derive the session key, rebuild the key
    confirmations (HMAC-SHA256) and data messages, and run Noise KK step by step from the Noise specification."""
    inp, keys = v["input"], v["keys"]
    ids = {n: bytes.fromhex(x["id"].replace("-", "")) for n, x in inp["nodes"].items()}
    name_of = {i: n for n, i in ids.items()}
    wrap = {}
    for n, x in inp["nodes"].items():
        sdk = bytes.fromhex(x["sdk"])
        wrap[n] = {"K_n2h": hkdf_expand(sdk, b"custos/v1/ties/node-to-hub", 32),
                   "K_h2n": hkdf_expand(sdk, b"custos/v1/ties/hub-to-node", 32)}
        for k in ("K_n2h", "K_h2n"):
            compare(f"ties {n}: {k}", wrap[n][k].hex(), keys[n][k])
    now, expires = inp["now"], inp["expires"]
    exp4 = expires.to_bytes(4, "big")
    check("ties: the expiry is 60 s to 7 days ahead of `now`", now + 60 <= expires <= now + 7 * 86400)

    def node_id(text: str) -> bytes:
        return bytes.fromhex(text.replace("-", ""))

    def message(n: str, k_dir: bytes, header: bytes, aad: bytes, plain: bytes, exp: dict, size: int):
        """header || AES-256-GCM(Expand(K_dir, "custos/v1/ties/msg" || A), 0^12, A, plain); opened again, and refused
        with any one byte of A (the header, or a transport id) altered."""
        k_msg = hkdf_expand(k_dir, b"custos/v1/ties/msg" + aad, 32)
        compare(f"ties {n}: A", aad.hex(), exp["aad"])
        compare(f"ties {n}: K_msg", k_msg.hex(), exp["K_msg"])
        if "plaintext" in exp:
            compare(f"ties {n}: plaintext", plain.hex(), exp["plaintext"])
        if "header" in exp:
            compare(f"ties {n}: header", header.hex(), exp["header"])
        msg = header + AESGCM(k_msg).encrypt(bytes(12), plain, aad)
        compare(f"ties {n}: bytes", msg.hex(), exp["bytes"])
        compare(f"ties {n}: size", (len(msg), exp["size"]), (size, size))
        got = bytes.fromhex(exp["bytes"])
        try:
            compare(f"ties {n}: opens", AESGCM(k_msg).decrypt(bytes(12), got[len(header):], aad).hex(), plain.hex())
        except InvalidTag:
            check(f"ties {n}: opens", False, "tag")
        refused = 0
        for i in range(len(aad)):
            bad = bytearray(aad)
            bad[i] ^= 1
            k_bad = hkdf_expand(k_dir, b"custos/v1/ties/msg" + bytes(bad), 32)
            try:
                AESGCM(k_bad).decrypt(bytes(12), got[len(header):], bytes(bad))
            except InvalidTag:
                refused += 1
        compare(f"ties {n}: every altered byte of A is refused", refused, len(aad))

    def session(n: str, seed: bytes, kid: bytes, requester: bytes, peers: list, exp: dict) -> bytes:
        salt = kid + exp4
        prk = hkdf_extract(salt, seed)
        info = b"custos/v1/ties/session" + requester + b"".join(sorted(peers))
        s = hkdf_expand(prk, info, 32)
        for field, got in (("salt", salt), ("prk", prk), ("info", info), ("S", s)):
            compare(f"ties {n}: session {field}", got.hex(), exp[field])
        return s

    sessions = {}
    for n in ("ktc_direct", "ktc_indirect", "kdc_direct", "kdc_indirect", "group"):
        sc = v[n]
        kind = bytes.fromhex(sc["type"])[0]
        kdc = kind in (0x43, 0x44)
        compare(f"ties {n}: type", kind, {"ktc_direct": 0x41, "ktc_indirect": 0x42, "kdc_direct": 0x43,
                                           "kdc_indirect": 0x44, "group": 0x41}[n])
        kid = bytes.fromhex(sc["kid"])
        compare(f"ties {n}: kid", sc["kid"], inp["kids"][n])
        requester = node_id(sc["requester"])
        peers = [node_id(p) for p in sc["peers"]]
        check(f"ties {n}: 1 to 8 distinct peers, not the requester",
              1 <= len(peers) <= 8 and len(set(peers)) == len(peers) and requester not in peers)
        seed = bytes.fromhex(inp["ce_seed"] if kdc else inp["seed"])
        compare(f"ties {n}: seed", sc["seed"], seed.hex())
        req = name_of[requester]
        header = bytes([kind]) + b"".join(peers) + kid + exp4
        aad = bytes([kind]) + requester + b"".join(peers) + kid + exp4
        message(f"{n} request", wrap[req]["K_n2h"], header, aad, b"" if kdc else seed, sc["request"],
                1 + 8 * len(peers) + 12 + (0 if kdc else 16) + 16)
        # KTC: a delivery for each peer; KDC: a grant for the requester too.
        want = ([requester] if kdc else []) + peers
        compare(f"ties {n}: recipients", [p["recipient"] for p in sc["packages"]],
                [x["id"] for w in want for x in inp["nodes"].values() if node_id(x["id"]) == w])
        for p in sc["packages"]:
            r = node_id(p["recipient"])
            if r == requester:
                ptype, holders = 0x49, peers
            else:
                ptype, holders = 0x48, [requester] + [q for q in peers if q != r]
            compare(f"ties {n} package for {p['recipient']}: type", p["type"], bytes([ptype]).hex())
            compare(f"ties {n} package for {p['recipient']}: holders", [node_id(x) for x in p["holders"]], holders)
            header = bytes([ptype]) + kid + exp4 + b"".join(holders)
            aad = bytes([ptype]) + r + kid + exp4 + b"".join(holders)
            message(f"{n} package for {p['recipient']}", wrap[name_of[r]]["K_h2n"], header, aad, seed, p,
                    1 + 12 + 8 * len(holders) + 16 + 16)
            # A package for another node (here: the requester) does not open under that node's key and id.
            other = requester if r != requester else peers[0]
            bad_aad = bytes([ptype]) + other + kid + exp4 + b"".join(holders)
            try:
                k_other = hkdf_expand(wrap[name_of[other]]["K_h2n"], b"custos/v1/ties/msg" + bad_aad, 32)
                AESGCM(k_other).decrypt(bytes(12), bytes.fromhex(p["bytes"])[len(header):], bad_aad)
                check(f"ties {n} package for {p['recipient']}: refused by another node", False, "opened")
            except InvalidTag:
                check(f"ties {n} package for {p['recipient']}: refused by another node", True)
        sessions[n] = session(n, seed, kid, requester, peers, sc["session"])
    check("ties: every scenario has its own session key", len(set(sessions.values())) == len(sessions))
    # The group names N3 before N2; the session key sorts them.
    check("ties group: the request's order is not sorted", v["group"]["peers"] != sorted(v["group"]["peers"]))

    n1, n2 = ids["N1"], ids["N2"]
    kid = bytes.fromhex(inp["kids"]["ktc_direct"])
    r = v["receipt"]
    message("receipt", wrap["N2"]["K_n2h"], bytes([0x4a]) + n1 + kid, bytes([0x4a]) + n2 + n1 + kid, b"", r, 33)
    nt = v["notice"]
    message("notice", wrap["N1"]["K_h2n"], bytes([0x4b]) + n2 + kid, bytes([0x4b]) + n1 + n2 + kid, b"", nt, 33)
    refused = bytes.fromhex(inp["kids"]["refused"])
    compare("ties refusals: the three reasons", [(f["reason"], f["name"]) for f in v["refusals"]],
            [(1, "PeerNotAuthorized"), (2, "BadExpiry"), (3, "KeyIdReused")])
    for f in v["refusals"]:
        why = bytes([f["reason"]])
        message(f"refusal {f['reason']}", wrap["N1"]["K_h2n"], bytes([0x4f]) + refused + why,
                bytes([0x4f]) + n1 + refused + why, b"", f, 26)

    def confirmation(n: str, s: bytes, kind: int, frm: bytes, to: bytes, kid: bytes, exp: dict):
        k_conf = hkdf_expand(s, b"custos/v1/ties/confirm", 32)
        mac_input = bytes([kind]) + frm + to + kid + exp4
        mac = hmac.new(k_conf, mac_input, hashlib.sha256).digest()
        msg = bytes([kind]) + kid[:4] + mac[:16]
        compare(f"ties {n}: from, to", (exp["from"], exp["to"]), (name_or_id(frm), name_or_id(to)))
        compare(f"ties {n}: MAC input", mac_input.hex(), exp["mac_input"])
        compare(f"ties {n}: HMAC", mac.hex(), exp["hmac"])
        compare(f"ties {n}: bytes", msg.hex(), exp["bytes"])
        compare(f"ties {n}: size", (len(msg), exp["size"]), (21, 21))
        # Reflected to its sender, the receiver expects the other type with from and to swapped: it fails.
        other = hmac.new(k_conf, bytes([kind ^ 1]) + to + frm + kid + exp4, hashlib.sha256).digest()[:16]
        check(f"ties {n}: does not verify reflected", not hmac.compare_digest(other, bytes.fromhex(exp["bytes"])[5:]))
        return k_conf

    def name_or_id(i: bytes) -> str:
        return "-".join(f"{b:02x}" for b in i)

    s = sessions["ktc_direct"]
    lk = v["link"]
    k_conf = confirmation("4c", s, 0x4c, n1, n2, kid, lk["confirm_requester"])
    compare("ties: K_conf", k_conf.hex(), lk["K_conf"])
    confirmation("4d", s, 0x4d, n2, n1, kid, lk["confirm_peer"])
    k_send = hkdf_expand(s, b"custos/v1/ties/send" + n1, 32)
    for seq, d in enumerate(lk["data"]):
        compare(f"ties data {seq}: seq", d["seq"], seq)
        compare(f"ties data {seq}: from N1", d["from"], name_or_id(n1))
        compare(f"ties data {seq}: K_send", k_send.hex(), d["K_send"])
        nonce = bytes(8) + seq.to_bytes(4, "big")
        aad = bytes([0x4e]) + kid + exp4 + n1 + seq.to_bytes(4, "big")
        compare(f"ties data {seq}: nonce", nonce.hex(), d["nonce"])
        compare(f"ties data {seq}: aad", aad.hex(), d["aad"])
        plain = bytes.fromhex(d["plaintext"])
        msg = bytes([0x4e]) + kid[:4] + seq.to_bytes(4, "big") + AESGCM(k_send).encrypt(nonce, plain, aad)
        compare(f"ties data {seq}: bytes", msg.hex(), d["bytes"])
        compare(f"ties data {seq}: size", (len(msg), d["size"]), (len(plain) + 25, len(plain) + 25))
        # N2 under its own sending key cannot be taken for N1.
        try:
            k2 = hkdf_expand(s, b"custos/v1/ties/send" + n2, 32)
            AESGCM(k2).decrypt(nonce, msg[9:], bytes([0x4e]) + kid + exp4 + n2 + seq.to_bytes(4, "big"))
            check(f"ties data {seq}: refused as from N2", False, "opened")
        except InvalidTag:
            check(f"ties data {seq}: refused as from N2", True)

    run_kk(v["kk"], ids, exp4)


def run_kk(k: dict, ids: dict, exp4: bytes):
    """Noise_KK_25519_AESGCM_SHA256 (Noise revision 34) written out: MixHash, MixKey, EncryptAndHash, Split."""
    compare("kk: pattern", k["pattern"], "Noise_KK_25519_AESGCM_SHA256")
    s1, s2 = bytes.fromhex(k["static"]["N1"]["secret"]), bytes.fromhex(k["static"]["N2"]["secret"])
    e1, e2 = bytes.fromhex(k["ephemeral"]["N1"]["secret"]), bytes.fromhex(k["ephemeral"]["N2"]["secret"])
    S1, S2, E1, E2 = (x25519_public(x) for x in (s1, s2, e1, e2))
    for n, got, want in (("N1 static", S1, k["static"]["N1"]["public"]), ("N2 static", S2, k["static"]["N2"]["public"]),
                         ("N1 e", E1, k["ephemeral"]["N1"]["public"]), ("N2 e", E2, k["ephemeral"]["N2"]["public"])):
        compare(f"kk: {n} public", got.hex(), want)

    def dh(sk: bytes, pk: bytes) -> bytes:
        return X25519PrivateKey.from_private_bytes(sk).exchange(X25519PublicKey.from_public_bytes(pk))

    def hkdf2(ck: bytes, ikm: bytes):
        temp = hmac.new(ck, ikm, hashlib.sha256).digest()
        o1 = hmac.new(temp, b"\x01", hashlib.sha256).digest()
        return o1, hmac.new(temp, o1 + b"\x02", hashlib.sha256).digest()

    st = {"h": k["pattern"].encode().ljust(32, b"\0"), "k": None}
    st["ck"] = st["h"]

    def mix_hash(data: bytes):
        st["h"] = hashlib.sha256(st["h"] + data).digest()

    def mix_key(ikm: bytes):
        st["ck"], st["k"] = hkdf2(st["ck"], ikm)

    def encrypt_and_hash(plain: bytes) -> bytes:
        ct = AESGCM(st["k"]).encrypt(bytes(12), plain, st["h"])  # nonce: 4 zero bytes || n = 0 (64-bit BE)
        mix_hash(ct)
        return ct

    initiator, responder = bytes.fromhex(k["initiator"].replace("-", "")), bytes.fromhex(k["responder"].replace("-", ""))
    compare("kk: N1 initiates, N2 responds", (initiator, responder), (ids["N1"], ids["N2"]))
    prologue = b"custos/v1/ties/kk" + initiator + responder
    compare("kk: prologue", prologue.hex(), k["prologue"])
    mix_hash(prologue)
    mix_hash(S1)  # pre-message -> s
    mix_hash(S2)  # pre-message <- s
    mix_hash(E1)  # -> e
    mix_key(dh(e1, S2))  # es
    mix_key(dh(s1, S2))  # ss
    init = bytes([0x46]) + E1 + encrypt_and_hash(exp4)
    compare("kk: Init", init.hex(), k["init"]["bytes"])
    compare("kk: Init size", (len(init), k["init"]["size"]), (53, 53))
    mix_hash(E2)  # <- e
    mix_key(dh(e2, E1))  # ee
    mix_key(dh(e2, S1))  # se
    reply = bytes([0x47]) + E2 + encrypt_and_hash(b"")
    compare("kk: Reply", reply.hex(), k["reply"]["bytes"])
    compare("kk: Reply size", (len(reply), k["reply"]["size"]), (49, 49))
    k1, k2 = hkdf2(st["ck"], b"")
    compare("kk: h", st["h"].hex(), k["h"])
    compare("kk: k1", k1.hex(), k["k1"])
    compare("kk: k2", k2.hex(), k["k2"])
    s = hkdf_extract(st["h"], k1 + k2)
    compare("kk: S = HMAC-SHA256(h, k1 || k2)", s.hex(), k["S"])
    compare("kk: kid = h[..8]", st["h"][:8].hex(), k["kid"])
    compare("kk: expires", k["expires"].to_bytes(4, "big"), exp4)
    # The responder's side, from the published Init only: DH from its own keys gives the same payload.
    got = bytes.fromhex(k["init"]["bytes"])
    compare("kk: Init's ephemeral key", got[1:33].hex(), E1.hex())
    c = k["confirm_requester"]
    k_conf = hkdf_expand(s, b"custos/v1/ties/confirm", 32)
    kid = st["h"][:8]
    mac_input = bytes([0x4c]) + initiator + responder + kid + exp4
    compare("kk 4c: MAC input", mac_input.hex(), c["mac_input"])
    mac = hmac.new(k_conf, mac_input, hashlib.sha256).digest()
    compare("kk 4c: HMAC", mac.hex(), c["hmac"])
    compare("kk 4c: bytes", (bytes([0x4c]) + kid[:4] + mac[:16]).hex(), c["bytes"])


# ---- registry.md: the transparency log (RFC 9162 §2.1, C2SP tlog-checkpoint and signed-note) ----------------
def tl_leaf(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def tl_node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def tl_split(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def tl_mth(d: list) -> bytes:
    """MTH (RFC 9162 §2.1.1) over a list of leaf hashes, recursively as defined."""
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return d[0]
    k = tl_split(len(d))
    return tl_node(tl_mth(d[:k]), tl_mth(d[k:]))


def tl_path(m: int, d: list) -> list:
    """PATH(m, D[n]) (RFC 9162 §2.1.3.1)."""
    if len(d) == 1:
        return []
    k = tl_split(len(d))
    if m < k:
        return tl_path(m, d[:k]) + [tl_mth(d[k:])]
    return tl_path(m - k, d[k:]) + [tl_mth(d[:k])]


def tl_subproof(m: int, d: list, b: bool) -> list:
    """SUBPROOF(m, D[n], b) (RFC 9162 §2.1.4.1); PROOF(m, D[n]) = SUBPROOF(m, D[n], true)."""
    if m == len(d):
        return [] if b else [tl_mth(d)]
    k = tl_split(len(d))
    if m <= k:
        return tl_subproof(m, d[:k], b) + [tl_mth(d[k:])]
    return tl_subproof(m - k, d[k:], False) + [tl_mth(d[:k])]


def tl_key_id(name: str, public: bytes) -> bytes:
    """C2SP signed-note: SHA-256(key name || 0x0A || 0x01 || Ed25519 public key)[:4]."""
    return hashlib.sha256(name.encode() + b"\n" + b"\x01" + public).digest()[:4]


def tl_open_note(note: str, name: str, key_id: bytes, public: bytes) -> str:
    """Splits a signed note at its last blank line and verifies every signature line by (name, key_id); returns the
    text. Raises ValueError if there is none or one fails."""
    split = note.rindex("\n\n")
    text, sigs = note[:split + 1], note[split + 2:]
    if not sigs.endswith("\n"):
        raise ValueError("no final newline")
    verified = 0
    for line in sigs[:-1].split("\n"):
        if not line.startswith("\u2014 "):
            raise ValueError("signature line without the em dash")
        signer, b64 = line[2:].split(" ", 1)
        raw = base64.b64decode(b64, validate=True)
        if signer != name or raw[:4] != key_id:
            continue
        try:
            Ed25519PublicKey.from_public_bytes(public).verify(raw[4:], text.encode())
        except InvalidSignature:
            raise ValueError("bad signature")
        verified += 1
    if not verified:
        raise ValueError("no signature by the key")
    return text


def run_translog(v: dict):
    leaves = [bytes.fromhex(x) for x in v["leaves"]]
    hashes = [tl_leaf(x) for x in leaves]
    compare("translog: leaf hashes", [x.hex() for x in hashes], v["leaf_hashes"])
    compare("translog: the empty root is SHA-256('')", tl_mth([]).hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    compare("translog: roots of sizes 0..8", [tl_mth(hashes[:n]).hex() for n in range(len(hashes) + 1)], v["roots"])
    for c in v["inclusion"]:
        m, n = c["index"], c["size"]
        compare(f"translog: inclusion proof of leaf {m} in size {n}", [x.hex() for x in tl_path(m, hashes[:n])],
                c["proof"])
    for c in v["consistency"]:
        m, n = c["size1"], c["size2"]
        compare(f"translog: consistency proof {m} -> {n}", [x.hex() for x in tl_subproof(m, hashes[:n], True)],
                c["proof"])
    # The signed checkpoint, rebuilt from the seed: Ed25519 is deterministic, so the bytes must match.
    c = v["checkpoint"]
    seed, origin, size = bytes.fromhex(c["seed"]), c["origin"], c["size"]
    public = ed25519_public(seed)
    compare("translog checkpoint: public key", public.hex(), c["public_key"])
    kid = tl_key_id(origin, public)
    compare("translog checkpoint: key ID", kid.hex(), c["key_id"])
    key64 = base64.b64encode(bytes([1]) + public).decode()
    vkey = f"{origin}+{kid.hex()}+{key64}"
    compare("translog checkpoint: verifier key", vkey, c["verifier_key"])
    text = f"{origin}\n{size}\n{base64.b64encode(tl_mth(hashes[:size])).decode()}\n"
    compare("translog checkpoint: text", text, c["text"])
    signature = Ed25519PrivateKey.from_private_bytes(seed).sign(text.encode())
    compare("translog checkpoint: signature", signature.hex(), c["signature"])
    note = f"{text}\n\u2014 {origin} {base64.b64encode(kid + signature).decode()}\n"
    compare("translog checkpoint: signed note", note, c["note"])
    try:
        compare("translog checkpoint: opens", tl_open_note(c["note"], origin, kid, public), text)
    except ValueError as e:
        check("translog checkpoint: opens", False, str(e))
    forged = c["note"].replace(f"\n{size}\n", f"\n{size + 1}\n", 1)
    try:
        tl_open_note(forged, origin, kid, public)
        check("translog checkpoint: a changed size is refused", False, "accepted")
    except ValueError:
        check("translog checkpoint: a changed size is refused", True)
    # Go's signed note (golang.org/x/mod/sumdb/note), with Go's verifier key.
    g = v["go_note"]
    name, hex_id, key64 = g["verifier_key"].split("+", 2)
    raw = base64.b64decode(key64, validate=True)
    check("translog go note: Ed25519 key", raw[0] == 1 and len(raw) == 33)
    compare("translog go note: key ID", tl_key_id(name, raw[1:]).hex(), hex_id)
    try:
        compare("translog go note: opens", tl_open_note(g["note"], name, bytes.fromhex(hex_id), raw[1:]), g["text"])
    except ValueError as e:
        check("translog go note: opens", False, str(e))


def registry_vectors() -> dict:
    """The JSON block after the `translog-vectors` marker in docs/registry.md."""
    md = (Path(__file__).resolve().parent.parent / "registry.md").read_text()
    block = md.split("<!-- translog-vectors -->", 1)[1].split("```json\n", 1)[1].split("\n```", 1)[0]
    return json.loads(block)


# ---- registry-v1.json: device certificates (RFC 9580 v4 packets), statements (RFC 9052), log entries -------------
ED25519_OID = "1.3.6.1.4.1.11591.15.1"  # RFC 9580 §9.2, Ed25519Legacy
CURVE25519_OID = "1.3.6.1.4.1.3029.1.5.1"  # RFC 9580 §9.2, Curve25519Legacy
EDDSA_LEGACY, ECDH, SHA256_ID, AES128_ID = 22, 18, 8, 7  # RFC 9580 §9.1, §9.5, §9.3
STATEMENT_TYPE = "application/custos-statement+cbor"


def cbor_decode(data: bytes):
    """Decodes one CBOR item (RFC 8949 §3) that must span all of `data`: unsigned and negative integers, byte and
    text strings, arrays and maps, definite lengths only (all the statements and log entries use). Raises
    ValueError otherwise."""
    def need(i: int, n: int):
        if i + n > len(data):
            raise ValueError("truncated CBOR")

    def item(i: int):
        need(i, 1)
        major, ai = data[i] >> 5, data[i] & 0x1F
        i += 1
        if ai < 24:
            n = ai
        elif ai <= 27:
            size = 1 << (ai - 24)
            need(i, size)
            n, i = int.from_bytes(data[i:i + size], "big"), i + size
        else:
            raise ValueError("indefinite length or reserved additional information")
        if major == 0:
            return n, i
        if major == 1:
            return -1 - n, i
        if major in (2, 3):
            need(i, n)
            raw = data[i:i + n]
            return (raw if major == 2 else raw.decode("utf-8")), i + n
        if major == 4:
            out = []
            for _ in range(n):
                x, i = item(i)
                out.append(x)
            return out, i
        if major == 5:
            out = {}
            for _ in range(n):
                k, i = item(i)
                if isinstance(k, list) or isinstance(k, dict) or k in out:
                    raise ValueError("unusable or repeated map key")
                out[k], i = item(i)
            return out, i
        raise ValueError(f"CBOR major type {major} is not used here")

    value, end = item(0)
    if end != len(data):
        raise ValueError("bytes after the CBOR item")
    return value


def oid_bytes(dotted: str) -> bytes:
    """The contents of a DER OBJECT IDENTIFIER (X.690 §8.19), as an OpenPGP curve OID field carries it."""
    arcs = [int(x) for x in dotted.split(".")]
    out = bytes([40 * arcs[0] + arcs[1]])
    for a in arcs[2:]:
        groups = [a & 0x7F]
        while a > 0x7F:
            a >>= 7
            groups.append(0x80 | (a & 0x7F))
        out += bytes(reversed(groups))
    return out


def pgp_packets(data: bytes) -> list:
    """Splits OpenPGP packets (RFC 9580 §4.2): new-format (0xC0 | tag) and old-format (0x80 | tag << 2 | length
    type) headers, definite lengths only. Returns [(tag, body)]."""
    out, i = [], 0

    def field(at: int, n: int) -> int:
        if at + n > len(data):
            raise ValueError("truncated packet header")
        return int.from_bytes(data[at:at + n], "big")

    while i < len(data):
        b = data[i]
        if not b & 0x80:
            raise ValueError("a packet header without bit 7")
        if b & 0x40:  # new format (§4.2.1)
            tag, o = b & 0x3F, field(i + 1, 1)
            if o < 192:
                n, i = o, i + 2
            elif o < 224:
                n, i = ((o - 192) << 8) + field(i + 2, 1) + 192, i + 3
            elif o == 255:
                n, i = field(i + 2, 4), i + 6
            else:
                raise ValueError("a partial body length in a certificate")
        else:  # old format (§4.2.2)
            tag, length_type = (b >> 2) & 0x0F, b & 3
            if length_type == 3:
                raise ValueError("an indeterminate length in a certificate")
            size = 1 << length_type
            n, i = field(i + 1, size), i + 1 + size
        if i + n > len(data):
            raise ValueError("truncated packet")
        out.append((tag, data[i:i + n]))
        i += n
    return out


def pgp_old_format(packets: list) -> bytes:
    """The same packets framed with old-format headers (four-octet lengths), to exercise the other reader."""
    return b"".join(bytes([0x80 | tag << 2 | 2]) + len(body).to_bytes(4, "big") + body for tag, body in packets)


def pgp_mpi(body: bytes, i: int):
    """An MPI (RFC 9580 §3.2): a two-octet bit count, then the big-endian bytes with no leading zero bits."""
    if i + 2 > len(body):
        raise ValueError("truncated MPI")
    bits = int.from_bytes(body[i:i + 2], "big")
    n = (bits + 7) // 8
    value = body[i + 2:i + 2 + n]
    if len(value) != n:
        raise ValueError("truncated MPI")
    if n and value[0].bit_length() != bits - 8 * (n - 1):
        raise ValueError("MPI bit count does not match its first octet")
    return value, i + 2 + n


def pgp_key(body: bytes) -> dict:
    """A v4 ECC public key or subkey packet body (RFC 9580 §5.5.2.3, §5.5.5.5, §5.5.5.6)."""
    if len(body) < 8 or body[0] != 4:
        raise ValueError("not a v4 key packet")
    oid_len = body[6]
    point, i = pgp_mpi(body, 7 + oid_len)
    return dict(version=body[0], created=int.from_bytes(body[1:5], "big"), algo=body[5], oid=body[7:7 + oid_len],
                point=point, rest=body[i:])


def pgp_fingerprint(key_body: bytes) -> bytes:
    """v4 fingerprint (RFC 9580 §5.5.4.2): SHA-1(0x99 || two-octet length || key packet body)."""
    return hashlib.sha1(b"\x99" + len(key_body).to_bytes(2, "big") + key_body).digest()


def pgp_subpackets(data: bytes) -> list:
    """Signature subpackets (RFC 9580 §5.2.3.7): [(type, critical, body)]."""
    out, i = [], 0
    while i < len(data):
        o = data[i]
        if o < 192:
            n, i = o, i + 1
        elif o < 255:
            if i + 2 > len(data):
                raise ValueError("truncated subpacket length")
            n, i = ((o - 192) << 8) + data[i + 1] + 192, i + 2
        else:
            if i + 5 > len(data):
                raise ValueError("truncated subpacket length")
            n, i = int.from_bytes(data[i + 1:i + 5], "big"), i + 5
        if n < 1 or i + n > len(data):
            raise ValueError("bad subpacket length")
        out.append((data[i] & 0x7F, bool(data[i] & 0x80), data[i + 1:i + n]))
        i += n
    return out


def pgp_signature(body: bytes) -> dict:
    """A v4 signature packet body (RFC 9580 §5.2.3); an EdDSALegacy signature is the MPIs r and s, each left-padded
    to 32 octets (§5.2.3.3)."""
    if len(body) < 6 or body[0] != 4:
        raise ValueError("not a v4 signature")
    hashed_len = int.from_bytes(body[4:6], "big")
    i = 6 + hashed_len
    if i + 2 > len(body):
        raise ValueError("truncated signature")
    unhashed_len = int.from_bytes(body[i:i + 2], "big")
    unhashed = body[i + 2:i + 2 + unhashed_len]
    i += 2 + unhashed_len
    left16 = body[i:i + 2]
    r, i = pgp_mpi(body, i + 2)
    s, i = pgp_mpi(body, i)
    if i != len(body) or len(r) > 32 or len(s) > 32:
        raise ValueError("not an EdDSA signature")
    return dict(version=body[0], type=body[1], algo=body[2], hash=body[3], hashed_part=body[:6 + hashed_len],
                hashed=pgp_subpackets(body[6:6 + hashed_len]), unhashed=pgp_subpackets(unhashed), left16=left16,
                sig=r.rjust(32, b"\x00") + s.rjust(32, b"\x00"))


def pgp_digest(key_body: bytes, hashed_part: bytes, uid: bytes = None, subkey_body: bytes = None) -> bytes:
    """The v4 signature hash (RFC 9580 §5.2.4) with SHA-256: the key, then the User ID (certifications) or the
    subkey (subkey bindings), then the signature's hashed part and the trailer 0x04 0xFF || its four-octet length."""
    h = hashlib.sha256(b"\x99" + len(key_body).to_bytes(2, "big") + key_body)
    if uid is not None:
        h.update(b"\xb4" + len(uid).to_bytes(4, "big") + uid)
    if subkey_body is not None:
        h.update(b"\x99" + len(subkey_body).to_bytes(2, "big") + subkey_body)
    h.update(hashed_part + b"\x04\xff" + len(hashed_part).to_bytes(4, "big"))
    return h.digest()


def ed25519_verifies(public: bytes, signature: bytes, message: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
        return True
    except InvalidSignature:
        return False


def notation(body: bytes):
    """A Notation Data subpacket (RFC 9580 §5.2.3.24): (human-readable, name, value)."""
    name_len, value_len = int.from_bytes(body[4:6], "big"), int.from_bytes(body[6:8], "big")
    if len(body) != 8 + name_len + value_len:
        raise ValueError("bad notation lengths")
    return bool(body[0] & 0x80), body[8:8 + name_len].decode(), body[8 + name_len:].decode()


def subpacket(sig: dict, typ: int) -> list:
    return [body for t, _, body in sig["hashed"] if t == typ]


def check_primary(n: str, body: bytes, public: bytes, fpr: str, created: int):
    k = pgp_key(body)
    compare(f"{n}: primary key is v4 EdDSALegacy (22) on Ed25519", (k["version"], k["algo"], k["oid"].hex()),
            (4, EDDSA_LEGACY, oid_bytes(ED25519_OID).hex()))
    compare(f"{n}: primary key point is 0x40 || the seed's Ed25519 public key", k["point"].hex(),
            (b"\x40" + public).hex())
    compare(f"{n}: nothing after the point", k["rest"].hex(), "")
    compare(f"{n}: key creation time", k["created"], created)
    compare(f"{n}: v4 fingerprint", pgp_fingerprint(body).hex().upper(), fpr)


def check_pgp_signature(n: str, body: bytes, typ: int, signer_seed: bytes, signer_fpr: str, key_body: bytes,
                        created: int, **signed) -> dict:
    """Parses and verifies one signature; `signed` is uid= or subkey_body=. Returns the parsed signature."""
    s = pgp_signature(body)
    compare(f"{n}: v4, type 0x{typ:02x}, EdDSALegacy, SHA-256", (s["version"], s["type"], s["algo"], s["hash"]),
            (4, typ, EDDSA_LEGACY, SHA256_ID))
    digest = pgp_digest(key_body, s["hashed_part"], **signed)
    compare(f"{n}: left 16 bits of the hash", s["left16"].hex(), digest[:2].hex())
    check(f"{n}: Ed25519 signature verifies", ed25519_verifies(ed25519_public(signer_seed), s["sig"], digest))
    compare(f"{n}: re-signing the hash with the seed gives the same signature",
            Ed25519PrivateKey.from_private_bytes(signer_seed).sign(digest).hex(), s["sig"].hex())
    compare(f"{n}: hashed issuer fingerprint (33)", [x.hex().upper() for x in subpacket(s, 33)], ["04" + signer_fpr])
    times = [int.from_bytes(x, "big") for x in subpacket(s, 2)]
    check(f"{n}: one hashed creation time, not before the key's", len(times) == 1 and times[0] >= created,
          f"{times}")
    return s


def check_statement_sign1(n: str, data: bytes, maker_seed: bytes):
    """An untagged COSE_Sign1 (RFC 9052 §4.2) signed by the manufacturer; returns its decoded payload."""
    msg = cbor_decode(data)
    check(f"{n}: untagged COSE_Sign1, an array of 4", data[0] == 0x84 and isinstance(msg, list) and len(msg) == 4)
    protected, unprotected, payload, signature = msg
    check(f"{n}: field types bstr, map, bstr, bstr", isinstance(protected, bytes) and isinstance(unprotected, dict)
          and isinstance(payload, bytes) and isinstance(signature, bytes) and len(signature) == 64)
    compare(f"{n}: re-encodes to the same bytes (deterministic CBOR)", cbor(msg).hex(), data.hex())
    compare(f"{n}: protected header: alg EdDSA (-8), content type", cbor_decode(protected),
            {1: -8, 3: STATEMENT_TYPE})
    compare(f"{n}: unprotected header is empty", unprotected, {})
    tbs = cbor(["Signature1", protected, b"", payload])
    public = ed25519_public(maker_seed)
    check(f"{n}: Ed25519 signature over Sig_structure verifies", ed25519_verifies(public, signature, tbs))
    compare(f"{n}: re-signing gives the same signature",
            Ed25519PrivateKey.from_private_bytes(maker_seed).sign(tbs).hex(), signature.hex())
    flipped = payload[:-1] + bytes([payload[-1] ^ 1])
    check(f"{n}: attacker: a payload with one byte flipped is refused",
          not ed25519_verifies(public, signature, cbor(["Signature1", protected, b"", flipped])))
    return cbor_decode(payload)


def run_registry(v: dict):
    hx = lambda k: bytes.fromhex(v[k])  # noqa: E731
    created, maker_seed = v["created"], hx("manufacturer_seed")
    maker_fpr, identity_fpr = v["manufacturer_fingerprint"], v["identity_fingerprint"]
    # 1. The identity seed and the admission key.
    device = bytes.fromhex(v["device"].replace("-", ""))
    check("registry: the device id is 8 bytes", len(device) == 8)
    identity_seed = hkdf_expand(hkdf_extract(b"custos device identity v1", hx("admission_secret")), device, 32)
    compare("registry: identity_seed = HKDF-SHA256(salt, admission_secret, device id)", identity_seed.hex(),
            v["identity_seed"])
    compare("registry: admission_public = X25519(admission_secret)", x25519_public(hx("admission_secret")).hex(),
            v["admission_public"])
    identity_public, maker_public = ed25519_public(identity_seed), ed25519_public(maker_seed)
    # 2. The certificates.
    maker = pgp_packets(hx("manufacturer_certificate"))
    own = pgp_packets(hx("device_certificate_own"))
    issued = pgp_packets(hx("device_certificate_issued"))
    compare("registry: manufacturer certificate: key, User ID, self-certification", [t for t, _ in maker], [6, 13, 2])
    compare("registry: device certificate (own): key, User ID, self-certification, subkey, binding",
            [t for t, _ in own], [6, 13, 2, 14, 2])
    compare("registry: device certificate (issued): the same with the manufacturer's certification after the "
            "self-certification", [t for t, _ in issued], [6, 13, 2, 2, 14, 2])
    compare("registry: the issued certificate is the device's own plus one signature", issued[:3] + issued[4:], own)
    compare("registry: old-format packet headers read the same packets",
            pgp_packets(pgp_old_format(issued)), issued)
    # The manufacturer's certificate.
    m_key, m_uid = maker[0][1], maker[1][1]
    check_primary("registry manufacturer", m_key, maker_public, maker_fpr, created)
    compare("registry manufacturer: User ID", m_uid.decode(), "Acme Sensors (manufacturer)")
    s = check_pgp_signature("registry manufacturer self-certification", maker[2][1], 0x13, maker_seed, maker_fpr,
                            m_key, created, uid=m_uid)
    compare("registry manufacturer self-certification: key flags certify and sign",
            [x[0] & 0x03 for x in subpacket(s, 27)], [0x03])
    # The device's certificate.
    d_key, d_uid, d_sub = own[0][1], own[1][1], own[3][1]
    check_primary("registry device", d_key, identity_public, identity_fpr, created)
    compare("registry device: User ID names the device", d_uid.decode(), f"custos device {v['device']}")
    s = check_pgp_signature("registry device self-certification", own[2][1], 0x13, identity_seed, identity_fpr,
                            d_key, created, uid=d_uid)
    compare("registry device self-certification: key flags certify and sign",
            [x[0] & 0x03 for x in subpacket(s, 27)], [0x03])
    k = pgp_key(d_sub)
    compare("registry device subkey: v4 ECDH (18) on Curve25519", (k["version"], k["algo"], k["oid"].hex()),
            (4, ECDH, oid_bytes(CURVE25519_OID).hex()))
    compare("registry device subkey: point is 0x40 || admission_public", k["point"].hex(),
            "40" + v["admission_public"])
    compare("registry device subkey: KDF parameters (SHA-256, AES-128)", k["rest"].hex(),
            bytes([3, 1, SHA256_ID, AES128_ID]).hex())
    s = check_pgp_signature("registry device subkey binding", own[4][1], 0x18, identity_seed, identity_fpr, d_key,
                            created, subkey_body=d_sub)
    compare("registry device subkey binding: key flags encrypt communications",
            [x[0] & 0x04 for x in subpacket(s, 27)], [0x04])
    # The manufacturer's certification of the device's User ID.
    n = "registry manufacturer certification"
    s = check_pgp_signature(n, issued[3][1], 0x13, maker_seed, maker_fpr, d_key, created, uid=d_uid)
    notations = [notation(x) for x in subpacket(s, 20)]
    compare(f"{n}: notations", notations, [(True, "role@custos.dev", "manufacturer"),
                                          (True, "manu@custos.dev", "Acme Sensors"),
                                          (True, "model@custos.dev", "TH-1"), (True, "lot@custos.dev", "2026-48")])
    # An attacker's edits: each must break the certification.
    def refused(what: str, key_body: bytes, hashed_part: bytes, uid: bytes, public: bytes = maker_public):
        check(f"{n}: attacker: {what} is refused",
              not ed25519_verifies(public, s["sig"], pgp_digest(key_body, hashed_part, uid=uid)))
    refused("one byte of the User ID flipped", d_key, s["hashed_part"], d_uid[:-1] + bytes([d_uid[-1] ^ 1]))
    refused("another lot (one byte of a notation)", d_key, s["hashed_part"].replace(b"2026-48", b"2026-49"), d_uid)
    refused("one byte of the device key flipped", d_key[:-1] + bytes([d_key[-1] ^ 1]), s["hashed_part"], d_uid)
    refused("the certification checked with the device's own key", d_key, s["hashed_part"], d_uid, identity_public)
    b = pgp_signature(own[4][1])
    other = d_sub[:-5] + bytes([d_sub[-5] ^ 1]) + d_sub[-4:]
    check("registry device subkey binding: attacker: another admission key is refused",
          not ed25519_verifies(identity_public, b["sig"], pgp_digest(d_key, b["hashed_part"], subkey_body=other)))
    # 3. The statements.
    status = check_statement_sign1("registry status", hx("status"), maker_seed)
    check("registry status: payload [1, signer, subject, issued_at, status, domain, note]",
          isinstance(status, list) and len(status) == 7 and status[0] == 1 and
          [type(x) for x in status[1:]] == [bytes, bytes, int, int, str, str] and len(status[2]) in (20, 32))
    compare("registry status: signer is the manufacturer", status[1].hex().upper(), maker_fpr)
    compare("registry status: subject is the device's identity", status[2].hex().upper(), identity_fpr)
    compare("registry status: stolen (2)", status[4], 2)
    check("registry status: issued after the key was made", status[3] >= created)
    code = check_statement_sign1("registry code identity", hx("code_identity"), maker_seed)
    check("registry code identity: payload [2, signer, digest, issued_at, name, version, domain]",
          isinstance(code, list) and len(code) == 7 and code[0] == 2 and
          [type(x) for x in code[1:]] == [bytes, bytes, int, str, str, str] and len(code[2]) == 32)
    compare("registry code identity: signer is the manufacturer", code[1].hex().upper(), maker_fpr)
    compare("registry code identity: digest", code[2].hex(), v["code_digest"])
    # 4. The log entries.
    expect = [(1, hx("device_certificate_issued")), (2, hx("status"))]
    compare("registry log: two entries", len(v["log_entries"]), 2)
    for i, (e, (kind, data)) in enumerate(zip(v["log_entries"], expect)):
        n, entry = f"registry log entry {i}", bytes.fromhex(e["entry"])
        compare(f"{n}: leaf hash = SHA-256(0x00 || entry)", tl_leaf(entry).hex(), e["leaf_hash"])
        x = cbor_decode(entry)
        check(f"{n}: [kind, domain, added_at, data]", isinstance(x, list) and len(x) == 4 and
              [type(y) for y in x] == [int, str, int, bytes])
        compare(f"{n}: re-encodes to the same bytes (deterministic CBOR)", cbor(x).hex(), entry.hex())
        compare(f"{n}: kind", x[0], kind)
        compare(f"{n}: data", x[3].hex(), data.hex())
        compare(f"{n}: domain is the status's", x[1], status[5])
        try:
            cbor_decode(entry[:-1])
            check(f"{n}: a truncated entry does not decode", False, "decoded")
        except ValueError:
            check(f"{n}: a truncated entry does not decode", True)
    certified_at = int.from_bytes(subpacket(pgp_signature(issued[3][1]), 2)[0], "big")
    added = [cbor_decode(bytes.fromhex(e["entry"]))[2] for e in v["log_entries"]]
    check("registry log: each entry logged no earlier than its item was signed",
          added[0] >= certified_at and added[1] >= status[3], f"{added} vs {certified_at}, {status[3]}")


# ---- driver ---------------------------------------------------------------------------------
results = []


def check(name: str, ok: bool, detail: str = ""):
    results.append(ok)
    print(f"{'PASS' if ok else 'FAIL'}  {name}" + (f"  ({detail})" if detail and not ok else ""))


def compare(name: str, got, want):
    check(name, got == want, f"got {got!r}, expected {want!r}")


def run_record(case) -> bytes:
    inp, exp, n = case["input"], case["expect"], case["name"]
    device, epoch = bytes.fromhex(inp["device"].replace("-", "")), inp["epoch"]
    suite, nonce = SUITES[inp["suite"]], bytes.fromhex(inp["nonce"])
    stages = parse_schedule(inp["schedule"])
    check_span(stages, inp["valid_from"], inp["valid_until"])
    check(f"{n}: time inside epoch span", inp["valid_from"] <= inp["time"] < inp["valid_until"])
    compare(f"{n}: schedule_bytes", encode_schedule(stages).hex(), exp["schedule_bytes"])
    compare(f"{n}: dpk_info", dpk_info(device, epoch).hex(), exp["dpk_info"])
    dpk = expand(bytes.fromhex(inp["master"]), dpk_info(device, epoch))
    compare(f"{n}: dpk", dpk.hex(), exp["dpk"])
    path = derive_path(dpk, stages, inp["time"])
    compare(f"{n}: path length", len(path), len(exp["path"]))
    for got, want in zip(path, exp["path"]):
        for field in ("depth", "stage", "index", "period", "info", "secret"):
            compare(f"{n}: depth {want['depth']} {field}", got[field], want[field])
    leaf, leaf_secret = path[-1]["index"], bytes.fromhex(path[-1]["secret"])
    compare(f"{n}: leaf", leaf, exp["leaf"])
    compare(f"{n}: key_info", key_info(suite).hex(), exp["key_info"])
    key = expand(leaf_secret, key_info(suite))
    compare(f"{n}: aead_key", key.hex(), exp["aead_key"])
    compare(f"{n}: aead_nonce", aead_nonce(nonce).hex(), exp["aead_nonce"])
    hdr = header(suite, device, epoch, leaf, nonce)
    compare(f"{n}: header", hdr.hex(), exp["header"])
    sealed = hdr + CIPHERS[suite](key).encrypt(aead_nonce(nonce), bytes.fromhex(inp["plaintext"]), hdr)
    compare(f"{n}: record", sealed.hex(), exp["record"])
    # A reader knows only the header: the path follows from the leaf period's first second.
    record = bytes.fromhex(exp["record"])
    leaf_start = period_of(stages[-1], int.from_bytes(record[11:15], "big"))[0]
    from_header = expand(bytes.fromhex(derive_path(dpk, stages, leaf_start)[-1]["secret"]), key_info(record[0] & 15))
    compare(f"{n}: key derived from the header alone", from_header.hex(), key.hex())
    try:
        compare(f"{n}: open expected record", open_record(key, record).hex(), inp["plaintext"])
    except ValueError as e:
        check(f"{n}: open expected record", False, f"rejected: {e}")
    return key


def run_ties_tpm(v: dict):
    """TPM deliveries (wire.md §12, "TPM duplication"): rebuild the registration and each TPM package from their
    fields, open them, and derive PRK = HMAC(kid || expires, seed) and S = HMAC(PRK, label || requester || peers || 01),
    which must equal HKDF's session key from the seed."""
    inp = v["input"]
    ids = {n: bytes.fromhex(x["id"].replace("-", "")) for n, x in inp["nodes"].items()}
    sdk = {n: bytes.fromhex(x["sdk"]) for n, x in inp["nodes"].items()}
    expires = inp["expires"].to_bytes(4, "big")
    public = bytes.fromhex(inp["tpm_parent_of_N2"])
    r = v["registration"]
    k_n2h = hkdf_expand(sdk["N2"], b"custos/v1/ties/node-to-hub", 32)
    aad = b"\x45" + ids["N2"] + len(public).to_bytes(2, "big") + public
    k_msg = hkdf_expand(k_n2h, b"custos/v1/ties/msg" + aad, 32)
    compare("ties-tpm registration: A", aad.hex(), r["aad"])
    compare("ties-tpm registration: K_msg", k_msg.hex(), r["K_msg"])
    msg = b"\x45" + len(public).to_bytes(2, "big") + public + AESGCM(k_msg).encrypt(bytes(12), b"", aad)
    compare("ties-tpm registration: bytes", msg.hex(), r["bytes"])
    k_h2n = hkdf_expand(sdk["N2"], b"custos/v1/ties/hub-to-node", 32)
    for name, kind in (("tpm_delivery", 0x58), ("tpm_grant", 0x59)):
        x = v[name]
        kid, seed = bytes.fromhex(x["kid"]), bytes.fromhex(x["seed"])
        requester = ids[x["requester"]]
        holders = [ids["N1"]]
        aad = bytes([kind]) + ids["N2"] + kid + expires + b"".join(holders)
        k_msg = hkdf_expand(k_h2n, b"custos/v1/ties/msg" + aad, 32)
        compare(f"ties-tpm {name}: A", aad.hex(), x["aad"])
        compare(f"ties-tpm {name}: K_msg", k_msg.hex(), x["K_msg"])
        header = bytes([kind]) + kid + expires + bytes([len(holders)]) + b"".join(holders)
        blob = bytes.fromhex(x["blob"])
        msg = header + AESGCM(k_msg).encrypt(bytes(12), blob, aad)
        compare(f"ties-tpm {name}: bytes", msg.hex(), x["bytes"])
        try:
            got = AESGCM(k_msg).decrypt(bytes(12), bytes.fromhex(x["bytes"])[len(header):], aad)
            compare(f"ties-tpm {name}: opens to the blob", got.hex(), blob.hex())
        except InvalidTag:
            check(f"ties-tpm {name}: opens", False, "tag")
        prk = hkdf_extract(kid + expires, seed)
        compare(f"ties-tpm {name}: PRK", prk.hex(), x["PRK"])
        members = sorted(d for d in (ids["N1"], ids["N2"]) if d != requester)
        info = b"custos/v1/ties/session" + requester + b"".join(members)
        compare(f"ties-tpm {name}: HMAC input", (info + b"\x01").hex(), x["hmac_input"])
        s = hmac.new(prk, info + b"\x01", hashlib.sha256).digest()
        compare(f"ties-tpm {name}: S", s.hex(), x["S"])
        compare(f"ties-tpm {name}: S is HKDF's session key", hkdf_expand(prk, info, 32).hex(), x["S"])


def main() -> int:
    vectors = json.loads((Path(__file__).resolve().parent / "wire-v1.json").read_text())
    keys = [run_record(case) for case in vectors["records"]]
    for case in vectors["covers"]:
        inp = case["input"]
        got = cover(parse_schedule(inp["schedule"]), inp["valid_from"], inp["valid_until"], inp["from"], inp["until"])
        compare(f"cover {case['name']}", got, case["expect"])
    # Two rows of the wire.md §5 table that wire-v1.json does not carry (epoch 2026, month/week/day).
    day, span = parse_schedule("month/week/day"), (1767225600, 1798761600)
    compare("cover wire.md §5: week 2 of March 2026", [(c["depth"], c["index"]) for c in
            cover(day, *span, 1772928000, 1773532800)], [(2, 3371)])
    compare("cover wire.md §5: the whole epoch span", [(c["depth"], c["index"]) for c in
            cover(day, *span, *span)], [(0, 0)])
    key = keys[vectors["reject"]["key_of"]]
    for bad in vectors["reject"]["records"]:
        try:
            open_record(key, bytes.fromhex(bad["record"]))
            check(f"reject {bad['why']}", False, "record was accepted")
        except ValueError as e:
            check(f"reject {bad['why']} -> {e}", True)
    run_sharing(json.loads((Path(__file__).resolve().parent / "sharing-v1.json").read_text()))
    run_control(json.loads((Path(__file__).resolve().parent / "control-v1.json").read_text()))
    run_ties(json.loads((Path(__file__).resolve().parent / "ties-v1.json").read_text()))
    run_ties_tpm(json.loads((Path(__file__).resolve().parent / "ties-tpm-v1.json").read_text()))
    run_translog(registry_vectors())
    try:
        run_registry(json.loads((Path(__file__).resolve().parent / "registry-v1.json").read_text()))
    except (ValueError, IndexError, KeyError, TypeError, UnicodeDecodeError) as e:
        check("registry-v1.json: readable", False, f"{type(e).__name__}: {e}")
    failed = results.count(False)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
