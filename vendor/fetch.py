"""Fetch the pinned offline report assets (`make assets`): npm packages -> vendor/files/.

Reads vendor/assets.json, runs `npm pack <package>@<version>` for each package, extracts the
listed files, checks them against the recorded sha256 (`--record` writes the hashes of a first
fetch), and writes vendor/files/dvc_plots.html: a `dvc plots show --html-template` with vega,
vega-lite and vega-embed inlined, so the plots page draws without a network.

Exit status 0 with a one-line note when npm is missing (reports then keep their CDN links);
1 on a hash mismatch or a failed download.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
MANIFEST = HERE / "assets.json"
FILES = HERE / "files"
VEGA = ("vega/vega.min.js", "vega/vega-lite.min.js", "vega/vega-embed.min.js")

DVC_TEMPLATE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC plots</title>
    %s
    <style>
        table { border-spacing: 15px; }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def npm_pack(spec: str, dest: Path) -> Path:
    out = subprocess.run(
        ["npm", "pack", spec, "--silent", "--pack-destination", str(dest)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if out.returncode != 0:
        raise RuntimeError(f"npm pack {spec} failed: {out.stderr.strip()[-500:]}")
    return dest / out.stdout.strip().splitlines()[-1]


def extract(tarball: Path, mapping: dict[str, str], files: Path) -> list[str]:
    """Copy the mapped members (a trailing / maps a folder) out of an npm tarball."""
    written = []
    with tarfile.open(tarball) as tar:
        for member in tar.getmembers():
            if not member.isfile():
                continue
            for source, target in mapping.items():
                if member.name == source or (
                    source.endswith("/") and member.name.startswith(source)
                ):
                    rel = target + member.name[len(source) :] if source.endswith("/") else target
                    dest = files / rel
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    handle = tar.extractfile(member)
                    assert handle is not None
                    dest.write_bytes(handle.read())
                    written.append(rel)
    missing = [s for s in mapping if not any(w.startswith(mapping[s]) for w in written)]
    if missing:
        raise RuntimeError(f"{tarball.name} has no {missing}")
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", action="store_true", help="write the sha256 of each file")
    args = parser.parse_args()
    manifest = json.loads(MANIFEST.read_text(encoding="utf-8"))
    recorded: dict[str, str] = manifest.get("sha256", {})
    if recorded and all(
        (FILES / p).is_file() and sha256(FILES / p) == h for p, h in recorded.items()
    ):
        print(f"offline report assets: up to date in {FILES}")
        return 0
    if shutil.which("npm") is None:
        print("offline report assets: npm not found (apt-get install npm); reports keep CDN links")
        return 0
    staging = Path(tempfile.mkdtemp(prefix="assets-"))
    try:
        written: list[str] = []
        for spec, mapping in manifest["files"].items():
            written += extract(npm_pack(spec, staging), mapping, staging / "files")
        hashes = {p: sha256(staging / "files" / p) for p in sorted(written)}
        if not args.record:
            bad = [p for p, h in hashes.items() if recorded.get(p) != h]
            if bad:
                print(f"error: sha256 differs from vendor/assets.json for {bad}", file=sys.stderr)
                return 1
        scripts = "\n    ".join(
            "<script>" + (staging / "files" / p).read_text(encoding="utf-8") + "</script>"
            for p in VEGA
        )
        (staging / "files" / "dvc_plots.html").write_text(DVC_TEMPLATE % scripts, encoding="utf-8")
        if FILES.exists():
            shutil.rmtree(FILES)
        shutil.move(str(staging / "files"), FILES)
    except (RuntimeError, OSError, subprocess.SubprocessError) as err:
        print(f"error: offline report assets: {err}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if args.record:
        manifest["sha256"] = hashes
        MANIFEST.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    print(f"offline report assets: {len(hashes)} files in {FILES}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
