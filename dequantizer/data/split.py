"""The train / val / test split of a photo set, by group (a source photo, a scene, a Flickr owner).

Training learns from ``train``, ``val`` picks the best checkpoint, ``test`` is touched by neither and gives the
held-out numbers. A split is made once, seeded, and saved as JSON; photos added later are placed with their group's
part, or by a seeded hash of a new group, so no photo ever moves between parts.
"""

from __future__ import annotations

import hashlib
import logging
import random

from dequantizer.errors import DequantizerError

log = logging.getLogger(__name__)

PARTS = ("train", "val", "test")


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    if not 0 < val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise DequantizerError(
            f"val_fraction={val_fraction} and test_fraction={test_fraction}: each must lie between 0 and 1 "
            "(val above 0) and together leave photos to train on"
        )


def make_split(groups: list[str], val_fraction: float, test_fraction: float, seed: int) -> dict[str, set[str]]:
    """The groups of each part: a seeded shuffle; train and val get at least one group, test one when asked for and
    there are 3 groups or more (with 2, the table after training is computed on val, and says so)."""
    check_fractions(val_fraction, test_fraction)
    unique = sorted(set(groups))
    if len(unique) < 2:
        raise DequantizerError("need photos from at least 2 different sources (groups) to split into train and val")
    if test_fraction and len(unique) < 3:
        log.warning("only 2 photo groups: no test part in the split, the held-out numbers will be on val")
        test_fraction = 0.0
    parts = 3 if test_fraction else 2
    order = random.Random(seed).sample(unique, len(unique))
    val = min(max(1, round(val_fraction * len(unique))), len(unique) - parts + 1)
    test = min(max(1, round(test_fraction * len(unique))), len(unique) - val - 1) if test_fraction else 0
    return {"val": set(order[:val]), "test": set(order[val : val + test]), "train": set(order[val + test :])}


def place_new_group(group: str, val_fraction: float, test_fraction: float, seed: int) -> str:
    """The part of a group that was not there when the split was made: a seeded hash, stable across runs."""
    digest = hashlib.sha256(f"{seed}:{group}".encode()).digest()
    draw = int.from_bytes(digest[:8], "big") / 2**64
    if draw < val_fraction:
        return "val"
    return "test" if draw < val_fraction + test_fraction else "train"


def split_names(names: dict[str, str], saved: dict[str, list[str]] | None, val_fraction: float,
                test_fraction: float, seed: int) -> dict[str, list[str]]:
    """Names (photo name -> group) in parts: ``saved`` kept as it is, the others placed with their group's part or,
    for new groups, by hash. A split saved without a test part (older versions) gets none: holding out only photos
    added later would make a test set of newcomers."""
    if saved is None:
        groups = make_split(list(names.values()), val_fraction, test_fraction, seed)
        part_of_group = {group: part for part, members in groups.items() for group in members}
        return {part: sorted(name for name, group in names.items() if part_of_group[group] == part) for part in PARTS}
    split = {part: list(saved.get(part, [])) for part in PARTS}
    if "test" not in saved:
        test_fraction = 0.0
    part_of_group = {names[name]: part for part in PARTS for name in split[part] if name in names}
    known = {name for part in PARTS for name in split[part]}
    for name in sorted(set(names) - known):
        group = names[name]
        part = part_of_group.setdefault(group, place_new_group(group, val_fraction, test_fraction, seed))
        split[part].append(name)
    return split
