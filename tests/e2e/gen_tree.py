#!/usr/bin/env python3
"""Deterministic test data for the end-to-end client suites.

    gen_tree.py DIR [--seed N]           write a nested tree of a few MiB
    gen_tree.py DIR --modify [--seed N]  change, add and delete some files in it
    gen_tree.py FILE --file SIZE [--seed N]  write one file of SIZE bytes

The same seed always gives the same bytes (random.Random is specified to be
reproducible for a given seed). The tree holds empty files, names with
spaces and other awkward characters, nested and empty-ish directories,
compressible text and incompressible data, and a few files above 1 MiB so
that chunked storage paths are exercised.
"""
import argparse
import os
import random
import sys


def data(rng, size, compressible=False):
    if size == 0:
        return b""
    if compressible:
        words = [b"grid", b"store", b"shard", b"erasure", b"site", b"farm",
                 b"chunk", b"repair", b"\n", b"object", b"version"]
        out = bytearray()
        while len(out) < size:
            out += rng.choice(words) + b" "
        return bytes(out[:size])
    return rng.randbytes(size)


# (relative path, size, compressible)
TREE = [
    ("README.txt", 2_000, True),
    ("empty.bin", 0, False),
    ("docs/empty file.txt", 0, False),
    ("docs/notes with spaces.txt", 12_345, True),
    ("docs/report (final) v2.txt", 40_000, True),
    ("docs/deep/deeper/deepest/leaf.dat", 70_001, False),
    ("docs/deep/deeper/sibling.log", 150_000, True),
    ("my photos/2024 summer/img 001.raw", 1_300_000, False),
    ("my photos/2024 summer/img 002.raw", 900_000, False),
    ("my photos/thumbs/t1.bin", 4_096, False),
    ("my photos/thumbs/t2.bin", 4_097, False),
    ("data/blob-1MiB.bin", 1 << 20, False),
    ("data/blob-1MiB-plus-1.bin", (1 << 20) + 1, False),
    ("data/text-600k.csv", 600_000, True),
    ("data/odd name, with comma & ampersand.txt", 777, True),
    ("data/dashes-and_underscores.2.txt", 333, True),
    ("data/unicode-\u00fcn\u00efc\u00f8d\u00e9.txt", 1_234, True),
    ("nested/a/b/c/d/e/f.txt", 10, True),
    ("nested/a/b/empty", 0, False),
    ("nested/a/one byte", 1, False),
]


def write_tree(root, seed):
    rng = random.Random(seed)
    for rel, size, comp in TREE:
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data(rng, size, comp))


def modify_tree(root, seed):
    rng = random.Random(seed + 1000)
    # Change bytes in the middle of a large file (same size).
    p = os.path.join(root, "my photos/2024 summer/img 001.raw")
    with open(p, "r+b") as f:
        f.seek(500_000)
        f.write(rng.randbytes(4096))
    # Grow a text file.
    with open(os.path.join(root, "docs/notes with spaces.txt"), "ab") as f:
        f.write(data(rng, 5_000, True))
    # Truncate one to empty, and make an empty one non-empty.
    open(os.path.join(root, "data/text-600k.csv"), "wb").close()
    with open(os.path.join(root, "empty.bin"), "wb") as f:
        f.write(b"no longer empty\n")
    # Delete one, add some.
    os.remove(os.path.join(root, "my photos/thumbs/t2.bin"))
    os.makedirs(os.path.join(root, "added dir/sub"), exist_ok=True)
    with open(os.path.join(root, "added dir/sub/new file.bin"), "wb") as f:
        f.write(rng.randbytes(300_000))
    with open(os.path.join(root, "added dir/new empty"), "wb") as f:
        pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("path")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--modify", action="store_true")
    ap.add_argument("--file", type=int, metavar="SIZE")
    a = ap.parse_args()
    if a.file is not None:
        rng = random.Random(a.seed)
        with open(a.path, "wb") as f:
            left = a.file
            while left:
                n = min(left, 1 << 20)
                f.write(rng.randbytes(n))
                left -= n
    elif a.modify:
        modify_tree(a.path, a.seed)
    else:
        os.makedirs(a.path, exist_ok=True)
        write_tree(a.path, a.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
