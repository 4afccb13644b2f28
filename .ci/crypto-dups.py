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
for name, vs in sorted(tree("normal,build").items()):
    if name in RNG and len(vs) > 1:
        bad.append(f"{name}: {', '.join(sorted(vs))} (shipped graph)")
if bad:
    print("crypto crates in more than one version:\n  " + "\n  ".join(bad))
    print("see `cargo tree -d -i <crate>` for who pulls each")
    sys.exit(1)
print("crypto crates: one version each")
