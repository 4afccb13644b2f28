#!/usr/bin/env python3
"""Fails if a crypto crate appears in more than one version.

Primitives (ciphers, hashes, MACs, KDFs, curves, signatures and their traits) must be unique in the whole graph,
dev-dependencies included. RNG plumbing (rand_core, getrandom) must be unique in what we ship (normal and build
dependencies); test-only generators such as proptest may bring their own.

Two graphs are checked as one: the main workspace and the Cortex-M4 firmware (firmware/cortex-m4, a workspace of
its own with its own Cargo.lock, all features), so the firmware seals with the very crates the hub opens with.
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


# Each graph: the arguments that select it for `cargo tree`.
GRAPHS = {
    "workspace": ["--workspace"],
    "firmware/cortex-m4": ["--manifest-path", "firmware/cortex-m4/Cargo.toml", "--all-features"],
}


def versions(lines):
    seen = collections.defaultdict(set)
    for line in lines:
        parts = line.split()
        if len(parts) >= 2 and parts[1].startswith("v"):
            seen[parts[0]].add(parts[1])
    return seen


def cargo_tree(graph, *args):
    return subprocess.run(
        ["cargo", "tree", *GRAPHS[graph], "--locked", "--target", "all", "--prefix", "none", *args],
        check=True, capture_output=True, text=True,
    ).stdout


def tree(graph, edges):
    return versions(cargo_tree(graph, "-e", edges).splitlines())


def dependents(graph, name, version):
    out = cargo_tree(graph, "-e", "normal,build", "-i", f"{name}@{version.lstrip('v')}", "--depth", "1")
    return {line.split()[0] for line in out.splitlines()[1:] if line.strip()}


def merged(graphs):
    seen = collections.defaultdict(set)
    for g in graphs:
        for name, vs in g.items():
            seen[name] |= vs
    return seen


bad = []
for name, vs in sorted(merged(tree(g, "normal,build,dev") for g in GRAPHS).items()):
    if name in PRIMITIVES and len(vs) > 1:
        bad.append(f"{name}: {', '.join(sorted(vs))} (whole graph: {' + '.join(GRAPHS)})")


def shipped(graph):
    seen = tree(graph, "normal,build")
    for name, vs in seen.items():
        for v in sorted(vs):
            allowed = TRAIT_ONLY.get((name, v))
            if allowed and len(vs) > 1 and dependents(graph, name, v) == {allowed}:
                vs = vs - {v}
        seen[name] = vs
    return seen


for name, vs in sorted(merged(shipped(g) for g in GRAPHS).items()):
    if name in RNG and len(vs) > 1:
        bad.append(f"{name}: {', '.join(sorted(vs))} (shipped graph: {' + '.join(GRAPHS)})")
if bad:
    print("crypto crates in more than one version:\n  " + "\n  ".join(bad))
    print("see `cargo tree -d -i <crate>` (with --manifest-path for the firmware) for who pulls each")
    sys.exit(1)
print("crypto crates: one version each (" + ", ".join(GRAPHS) + ")")
