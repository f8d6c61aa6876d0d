#!/usr/bin/env python3
"""Check rosdep keys against a rosdistro checkout (github.com/ros/rosdistro): does each key exist in
ROS 2 Jazzy (a released package in jazzy/distribution.yaml, or a system key in rosdep/*.yaml) and
resolve on Ubuntu 24.04 (noble)?

    git clone --depth 1 https://github.com/ros/rosdistro /tmp/rosdistro
    python scripts/check_rosdep_keys.py /tmp/rosdistro            # the keys of package.xml
    python scripts/check_rosdep_keys.py /tmp/rosdistro --list     # the keys of test/rosdep_keys_jazzy.txt

Exit code 1 when a key is missing. Update test/rosdep_keys_jazzy.txt (and its commit line) after a
successful check against a newer rosdistro.
"""

from __future__ import annotations

import argparse
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DISTRO = "jazzy"
UBUNTU = "noble"


def package_xml_keys(path: Path) -> list[str]:
    root = ET.parse(path).getroot()
    return [e.text.strip() for e in root if e.tag.endswith("depend") and e.text]


def listed_keys(path: Path) -> list[str]:
    keys = []
    for line in path.read_text().splitlines():
        key = line.split("#", 1)[0].strip()
        if key:
            keys.append(key)
    return keys


def released_packages(rosdistro: Path) -> dict[str, str]:
    """{package: "repository version"} of every released package of the distribution."""
    data = yaml.safe_load((rosdistro / DISTRO / "distribution.yaml").read_text())
    out = {}
    for repo, entry in data["repositories"].items():
        release = entry.get("release")
        if release:
            for package in release.get("packages", [repo]):
                out[package] = f"{repo} {release.get('version')}"
    return out


def resolves_on_ubuntu(rule) -> bool:
    """Whether a rosdep rule installs something on Ubuntu noble (apt or pip)."""
    if not isinstance(rule, dict):
        return False
    ubuntu = rule.get("ubuntu", rule.get("*"))
    if ubuntu is None:
        return False
    if isinstance(ubuntu, list) or (isinstance(ubuntu, dict) and "pip" in ubuntu):
        return True
    if isinstance(ubuntu, dict):
        value = ubuntu.get(UBUNTU, ubuntu.get("*"))
        return value is not None
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("rosdistro", type=Path, help="a checkout of github.com/ros/rosdistro")
    parser.add_argument(
        "--list", action="store_true", help="check test/rosdep_keys_jazzy.txt, not package.xml"
    )
    parser.add_argument("--package-xml", type=Path, default=ROOT / "package.xml", help="manifest to check")
    args = parser.parse_args(argv)
    keys = (
        listed_keys(ROOT / "test" / "rosdep_keys_jazzy.txt")
        if args.list
        else package_xml_keys(args.package_xml)
    )
    packages = released_packages(args.rosdistro)
    rules = {}
    for name in ("base.yaml", "python.yaml"):
        rules.update(yaml.safe_load((args.rosdistro / "rosdep" / name).read_text()))
    missing = 0
    for key in keys:
        if key in packages:
            print(f"ok       {key:32s} {DISTRO}/distribution.yaml: {packages[key]}")
        elif key in rules and resolves_on_ubuntu(rules[key]):
            print(f"ok       {key:32s} rosdep/*.yaml, resolves on ubuntu {UBUNTU}")
        elif key in rules:
            print(f"NO-{UBUNTU} {key:32s} rosdep/*.yaml has it, but not for ubuntu {UBUNTU}")
            missing += 1
        else:
            print(f"MISSING  {key:32s} neither a {DISTRO} package nor a rosdep key")
            missing += 1
    print(f"{len(keys) - missing} of {len(keys)} keys resolve")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
