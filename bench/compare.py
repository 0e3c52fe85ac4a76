"""Run a bench against the current tree and an older commit in the same run, for an honest speed-up ratio.

    python -m bench.compare --base 1aec556 -- bench.cpu_per_item -n 10000

The older commit is checked out as a git worktree with its own venv under /tmp (reused on later runs).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import REPO


def base_python(rev: str) -> Path:
    sha = subprocess.run(
        ["git", "rev-parse", "--short", rev], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    tree = Path(f"/tmp/leadhub-base-{sha}")
    if not tree.exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), sha], cwd=REPO, check=True)
    python = tree / ".venv" / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(tree / ".venv")], check=True)
        # [test]: bench.imap and bench.rules drive Dovecot and the SMTP sink through tests/ helpers (pytest, aiosmtpd)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "-e", f"{tree}[test]"], check=True)
    return python


def run(python: Path, module_args: list[str]) -> dict:
    """The bench code is this tree's; the daemon it spawns, and all of `leadhub`, are that python's install.

    Without PYTHONSAFEPATH the working directory (this tree) is put first on sys.path, and this tree's
    `leadhub/` folder shadowed the base's top-level modules (leadhub.envelope, .ids, ...) in the base's bench
    and daemon while hub/, store/ and the rest came from the base: a change to those modules was measured on
    both sides. Now only `bench` and the harness it drives servers with (`tests`: Dovecot, the SMTP sink) are
    taken from this tree, through a folder that holds nothing else.
    """
    with tempfile.TemporaryDirectory(prefix="leadhub-bench-path-") as only_bench:
        for harness in ("bench", "tests"):
            (Path(only_bench) / harness).symlink_to(REPO / harness)
        env = {**os.environ, "PYTHONSAFEPATH": "1", "PYTHONPATH": only_bench}
        out = subprocess.run(
            [str(python), "-m", *module_args], check=False, cwd=REPO, env=env, capture_output=True, text=True
        )
    if out.returncode != 0:
        sys.exit(f"{python} -m {' '.join(module_args)} exited {out.returncode}:\n{out.stderr[-4000:]}")
    return parsed(out.stdout)


def parsed(stdout: str) -> dict:
    """A bench prints one JSON object (indented or not, maybe after log lines) or one object per line (bench.rules)."""
    decoder = json.JSONDecoder()
    objects: list[dict] = []
    pos = 0
    while (start := stdout.find("{", pos)) != -1:
        if start and stdout[start - 1] != "\n":  # only an object that begins a line
            pos = start + 1
            continue
        try:
            obj, pos = decoder.raw_decode(stdout, start)
        except json.JSONDecodeError:
            pos = start + 1
            continue
        if isinstance(obj, dict):
            objects.append(obj)
    if len(objects) == 1 and "result" in objects[0]:
        return objects[0]
    merged: dict = {}
    for obj in objects:
        merged.update(obj)
    return {"result": merged}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base", required=True)
    parser.add_argument("--rounds", type=int, default=2, help="alternate base/current this many times")
    parser.add_argument("bench", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    bench = [a for a in args.bench if a != "--"]
    old = base_python(args.base)
    results: dict[str, list[dict]] = {"base": [], "current": []}
    for _ in range(args.rounds):
        results["base"].append(run(old, bench)["result"])
        results["current"].append(run(Path(sys.executable), bench)["result"])
    print(json.dumps({"bench": bench, "base": args.base, **results}, indent=2))


if __name__ == "__main__":
    main()
