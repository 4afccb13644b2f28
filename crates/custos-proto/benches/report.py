#!/usr/bin/env python3
"""Prints the medians of the last `cargo bench -p custos-proto --bench core` run and the ratios the targets use.

Run from the workspace root after the bench: `python3 crates/custos-proto/benches/report.py`.
"""
import json
import pathlib

root = pathlib.Path("target/criterion")


def median(group, bench):
    path = root / group / bench / "new" / "estimates.json"
    return json.loads(path.read_text())["median"]["point_estimate"]


rows = [
    ("derive", "leaf", "raw_3_expand", "time ratio", "<= 1.2"),
    ("derive", "leaf_key", "raw_4_expand", "time ratio", "(leaf + AEAD key step)"),
    ("seal_open_64B", "seal", "raw_seal", "time ratio", "<= 1.5"),
    ("seal_open_64B", "open", "raw_open", "time ratio", "<= 1.5"),
    ("bulk_open_day", "opener", "raw_aes256gcm", "throughput ratio", ">= 0.70"),
]
for group, ours, raw, kind, target in rows:
    a, b = median(group, ours), median(group, raw)
    ratio = b / a if kind == "throughput ratio" else a / b
    print(f"{group}/{ours:<9} {a:>14,.0f} ns   {raw:<14} {b:>14,.0f} ns   {kind} {ratio:.2f}   target {target}")
for d in sorted((root / "cover_5y").iterdir()):
    if (d / "new").exists():
        print(f"cover_5y/{d.name:<40} {median('cover_5y', d.name) / 64 / 1000:.1f} us per cover (median of 64 ranges)")
