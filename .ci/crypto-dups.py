#!/usr/bin/env python3
"""Fails if a crypto crate appears in more than one version.

Primitives (ciphers, hashes, MACs, KDFs, curves, signatures and their traits) must be unique in the whole graph,
dev-dependencies included. RNG plumbing (rand_core, getrandom) must be unique in what we ship (normal and build
dependencies); test-only generators such as proptest may bring their own.
"""
import collections
import json
import subprocess
import sys

PRIMITIVES = {
    "aead", "aes", "aes-gcm", "chacha20", "chacha20poly1305", "poly1305", "polyval", "ghash", "universal-hash",
    "cipher", "ctr", "hkdf", "hmac", "sha2", "digest", "block-buffer", "crypto-common", "curve25519-dalek",
    "ed25519", "ed25519-dalek", "x25519-dalek", "signature", "subtle", "zeroize", "snow", "hpke", "elliptic-curve",
    "p256", "sha3", "blake2", "argon2", "password-hash", "coset",
}
RNG = {"rand_core", "getrandom"}
# hpke 0.13 (RFC 9180) takes its randomness through the rand_core 0.9 traits; everything else is on 0.6. The
# traits hold no generator: we feed hpke from the one OS generator through an adapter (custos_proto::sharing).
# So a second rand_core is allowed only while hpke is the one crate that wants it, and getrandom stays unique.
TRAIT_ONLY = {("rand_core", "v0.9.5"): "hpke"}


def versions(lines):
    seen = collections.defaultdict(set)
    for line in lines:
        parts = line.split()
        if len(parts) >= 2 and parts[1].startswith("v"):
            seen[parts[0]].add(parts[1])
    return seen


def tree(edges):
    out = subprocess.run(
        ["cargo", "tree", "--workspace", "--locked", "--target", "all", "-e", edges, "--prefix", "none"],
        check=True, capture_output=True, text=True,
    ).stdout
    return versions(out.splitlines())


bad = []
for name, vs in sorted(tree("normal,build,dev").items()):
    if name in PRIMITIVES and len(vs) > 1:
        bad.append(f"{name}: {', '.join(sorted(vs))} (whole graph)")
def dependents(name, version):
    out = subprocess.run(
        ["cargo", "tree", "--workspace", "--locked", "--target", "all", "-e", "normal,build", "-i",
         f"{name}@{version.lstrip('v')}", "--depth", "1", "--prefix", "none"],
        check=True, capture_output=True, text=True,
    ).stdout
    return {line.split()[0] for line in out.splitlines()[1:] if line.strip()}


for name, vs in sorted(tree("normal,build").items()):
    for v in sorted(vs):
        allowed = TRAIT_ONLY.get((name, v))
        if allowed and len(vs) > 1 and dependents(name, v) == {allowed}:
            vs = vs - {v}
    if name in RNG and len(vs) > 1:
        bad.append(f"{name}: {', '.join(sorted(vs))} (shipped graph)")
if bad:
    print("crypto crates in more than one version:\n  " + "\n  ".join(bad))
    print("see `cargo tree -d -i <crate>` for who pulls each")
    sys.exit(1)
print("crypto crates: one version each")
