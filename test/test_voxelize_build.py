"""The CUDA voxelizer's sources are compiled from a folder named by their content
(``gausstr_core.voxelize.cuda.stable_sources``): a fresh copy of the package with the same sources
(new file times) finds the same folder with the old times, so its build is not redone."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from gausstr_core.voxelize import cuda


def _copy_of_csrc(tmp_path: Path, name: str) -> Path:
    src = Path(cuda.__file__).with_name("csrc")
    dst = tmp_path / name / "csrc"
    shutil.copytree(src, dst)  # new file times, as a checkout or a copied tree has
    return dst


def test_same_sources_same_folder_and_times(tmp_path, monkeypatch):
    monkeypatch.setenv("GAUSSTR_EXTENSIONS_DIR", str(tmp_path / "ext"))
    first = cuda.stable_sources(_copy_of_csrc(tmp_path, "a"))
    times = {p.name: p.stat().st_mtime_ns for p in first.iterdir()}
    second_copy = _copy_of_csrc(tmp_path, "b")
    for p in second_copy.iterdir():
        os.utime(p, ns=(p.stat().st_atime_ns, p.stat().st_mtime_ns + 10**9))
    second = cuda.stable_sources(second_copy)
    assert second == first and first.parent == tmp_path / "ext" / "gausstr_csrc"
    assert {p.name: p.stat().st_mtime_ns for p in second.iterdir()} == times
    assert sorted(p.name for p in first.iterdir()) == sorted(p.name for p in second_copy.iterdir())
    assert not [p for p in first.parent.iterdir() if ".tmp" in p.name]  # no staging left behind


def test_changed_sources_get_their_own_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("GAUSSTR_EXTENSIONS_DIR", str(tmp_path / "ext"))
    before = cuda.stable_sources(_copy_of_csrc(tmp_path, "a"))
    changed = _copy_of_csrc(tmp_path, "b")
    with open(changed / "platform.h", "a") as f:
        f.write("\n// changed\n")
    after = cuda.stable_sources(changed)
    assert after != before and (after / "platform.h").read_text().endswith("// changed\n")
    assert not (before / "platform.h").read_text().endswith("// changed\n")


def test_an_unwritable_root_builds_from_the_sources_themselves(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("GAUSSTR_EXTENSIONS_DIR", str(blocker))  # mkdir below a file fails
    csrc = _copy_of_csrc(tmp_path, "a")
    assert cuda.stable_sources(csrc) == csrc
