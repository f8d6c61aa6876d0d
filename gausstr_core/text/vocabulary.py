"""Category vocabularies: ``Vocabulary`` (names, prompt groups, the free label) and the Occ3D one."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

MAX_CATEGORIES = 255
"""Labels are uint8 and the free label K takes one value, so at most 255 categories."""


@dataclass(frozen=True)
class Vocabulary:
    """K categories, each a group of prompts whose probabilities are merged by their maximum.

    Attributes:
        names: (K,) class names; label k is names[k], the free label is K.
        prompts: (P,) all prompts, group by group (a category's name is its first prompt).
        groups: (P,) the category index of each prompt.
    """

    names: tuple[str, ...]
    prompts: tuple[str, ...]
    groups: tuple[int, ...]

    @staticmethod
    def parse(categories: Sequence[str]) -> Vocabulary:
        """Parse entries "name" or "name|prompt 2|prompt 3" (whitespace around parts is stripped).

        Raises:
            ValueError naming the offending entry: not a list of strings, empty list, empty names or
            prompts, duplicate names or prompts (case-insensitive), more than 255 categories.
        """
        if isinstance(categories, (str, bytes)) or not isinstance(categories, Sequence):
            raise ValueError(f"categories must be a list of strings, got {type(categories).__name__}")
        if len(categories) == 0:
            raise ValueError("categories must not be empty: give at least one category name")
        if len(categories) > MAX_CATEGORIES:
            raise ValueError(
                f"at most {MAX_CATEGORIES} categories fit uint8 labels (one value is the free "
                f"label), got {len(categories)}"
            )
        names, prompts, groups = [], [], []
        seen_names: dict[str, int] = {}
        seen_prompts: dict[str, int] = {}
        for k, entry in enumerate(categories):
            if not isinstance(entry, str):
                raise ValueError(f"category {k} must be a string, got {type(entry).__name__}: {entry!r}")
            parts = [" ".join(p.split()) for p in entry.split("|")]
            if not parts[0]:
                raise ValueError(f"category {k} ({entry!r}) has an empty name")
            for part in parts[1:]:
                if not part:
                    raise ValueError(f"category {k} ({entry!r}) has an empty prompt")
            key = parts[0].casefold()
            if key in seen_names:
                raise ValueError(f"category {k} ({parts[0]!r}) duplicates category {seen_names[key]}")
            seen_names[key] = k
            for part in parts:
                pkey = part.casefold()
                if pkey in seen_prompts:
                    other = seen_prompts[pkey]
                    where = "twice in it" if other == k else f"also in category {other} ({names[other]!r})"
                    raise ValueError(f"prompt {part!r} of category {k} ({parts[0]!r}) appears {where}")
                seen_prompts[pkey] = k
                prompts.append(part)
                groups.append(k)
            names.append(parts[0])
        return Vocabulary(tuple(names), tuple(prompts), tuple(groups))

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @property
    def free_label(self) -> int:
        """The label of free space: K."""
        return len(self.names)

    def group_index(self, device=None) -> Tensor:
        """(P,) int64 category of each prompt."""
        return torch.tensor(self.groups, dtype=torch.long, device=device)

    def merge(self, prompt_scores: Tensor) -> Tensor:
        """Max over the prompts of each category: (..., P) -> (..., K)."""
        if prompt_scores.shape[-1] != len(self.prompts):
            raise ValueError(
                f"expected (..., {len(self.prompts)}) prompt scores, got {tuple(prompt_scores.shape)}"
            )
        index = self.group_index(prompt_scores.device).expand_as(prompt_scores)
        out = prompt_scores.new_full((*prompt_scores.shape[:-1], self.num_classes), float("-inf"))
        return out.scatter_reduce(-1, index, prompt_scores, reduce="amax", include_self=True)


OCC3D_CATEGORIES: tuple[str, ...] = (
    "others",
    "barrier",
    "bicycle",
    "bus",
    "car",
    "construction vehicle",
    "motorcycle",
    "pedestrian|person",
    "traffic cone|cone",
    "trailer",
    "truck",
    "driveable surface|road",
    "other flat",
    "sidewalk",
    "terrain|grass",
    "manmade|building|wall|fence|pole|sign",
    "vegetation",
)
"""The 17 occupied Occ3D-nuScenes classes as a vocabulary: index = Occ3D label, free = 17.

The prompt groups follow the official GaussTR ones (``OCC3D_CATEGORIES`` in its models/utils.py:
"road" for driveable surface, "terrain|grass", "building|wall|fence|pole|sign" for manmade, "person",
"cone"). The official prompt list has no entry for "others" and "other flat", so it never predicts
them; ``OCC3D_UNPREDICTED`` names them for ``InferenceConfig.unpredicted_classes`` to do the same.
The official "sky" prompt, whose voxels become free, is ``InferenceConfig.free_prompts``.
"""


OCC3D_UNPREDICTED: tuple[str, ...] = ("others", "other flat")
"""Occ3D classes the official zero-shot head never predicts (no prompt of its own)."""
