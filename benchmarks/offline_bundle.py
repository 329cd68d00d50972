"""Pack raygrid's Python dependencies for a GPU machine that has PyTorch but no internet.

GPU machines often run an image with CUDA, PyTorch and the scientific stack, and
reach no package index (an air-gapped cluster, the benchmark machine of the
scale issue). This script packs what raygrid needs at run time and the image
lacks into one ``.tar.xz``:

1. the closure of raygrid's run-time requirements (no ``test`` or ``bench``
   extras), read from *this* environment's installed distributions, so the
   versions are the ones CI tests; a package the image already has (``--have``)
   is left out together with its own requirements;
2. each as a wheel for the target's Python (``pip download --only-binary``);
3. installed into one folder (``pip install --target``, no compilation);
4. slimmed: Ray's Java jars, dashboard web client, RLlib, Serve and LLM, and
   MLflow's web UI, which a grid never loads (Ray's wheel is 79 MB zipped, too
   big for a 64 MiB transfer; 29 MB once slimmed and xz-compressed);
5. packed with a manifest, ``RAYGRID_BUNDLE.txt`` (name==version per line).

On the target, in the repository's root::

    mkdir -p /tmp/site && tar -xJf .bundle/site.tar.xz -C /tmp/site
    export PYTHONPATH=/tmp/site:$PWD     # Ray's workers inherit it

``pyproject.toml`` asks for Python 3.11, the version CI tests; the bundle runs
raygrid from its source tree on the image's Python (3.12 on the GPU machines
lent here), without installing it.

Usage::

    .venv/bin/python benchmarks/offline_bundle.py --python-version 3.12 \\
        --have benchmarks/gpu_image_packages.txt --out .bundle/site.tar.xz
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

#: Installed paths raygrid never imports, removed from the bundle (relative to the install folder).
SLIM = ("ray/jars", "ray/dashboard/client/build", "ray/rllib", "ray/serve", "ray/llm", "mlflow/server/js")

#: Wheel platform tags tried for the target (x86-64 Linux), newest first.
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64", "linux_x86_64")


def canonical(name: str) -> str:
    """A distribution name as pip compares them (PEP 503): lower case, runs of ``-_.`` as one ``-``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_have(path: Path) -> set[str]:
    """Canonical names of the packages the target already has: one per line, ``pip freeze`` lines accepted.

    Blank lines and ``#`` comments are skipped; ``name==version`` and ``name @ url`` keep the name.
    """
    names = set()
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(canonical(re.split(r"[=<>!~ @\[;]", line, maxsplit=1)[0]))
    return names


def closure(root: str, python_version: str, have: Iterable[str] = ()) -> dict[str, str]:
    """``{canonical name: installed version}`` of what ``root`` needs at run time, minus ``have``.

    Requirements are read from this environment's installed metadata; their markers
    are evaluated for ``python_version`` on Linux, with the extras asked for
    (``ray[tune]`` brings Tune's requirements, raygrid's ``test`` extra is not asked
    for). A requirement of a package in ``have`` is not followed: the image that
    has the package has what it needs.

    Raises:
        SystemExit: A needed distribution is not installed here.
    """
    from packaging.requirements import Requirement

    skip = {canonical(n) for n in have}
    full = python_version if python_version.count(".") >= 2 else f"{python_version}.0"
    short = ".".join(full.split(".")[:2])
    found: dict[str, str] = {}
    pending: list[tuple[str, frozenset[str]]] = [(root, frozenset())]
    seen: set[tuple[str, frozenset[str]]] = set()
    while pending:
        name, extras = pending.pop()
        if (canonical(name), extras) in seen:
            continue
        seen.add((canonical(name), extras))
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise SystemExit(f"error: {name} is needed but not installed in {sys.prefix}; run `make setup` first") from None
        if canonical(name) != canonical(root):
            found[canonical(name)] = dist.version
        for line in dist.requires or []:
            requirement = Requirement(line)
            environments = [{"extra": extra} for extra in extras] or [{"extra": ""}]
            if requirement.marker is not None and not any(
                requirement.marker.evaluate({"python_version": short, "python_full_version": full,
                                             "sys_platform": "linux", "platform_system": "Linux", **env})
                for env in environments
            ):
                continue
            if canonical(requirement.name) not in skip:
                pending.append((requirement.name, frozenset(requirement.extras)))
    return found


def _pip(args: Sequence[str]) -> None:
    """Run pip in this interpreter; a failure ends the script with pip's last line."""
    result = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)
    if result.returncode != 0:
        lines = [line for line in (result.stderr or result.stdout).splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("ERROR")] or lines  # not pip's index warnings
        raise SystemExit(f"error: pip {args[0]} failed: {errors[-1] if errors else result.returncode}")


def build(packages: dict[str, str], python_version: str, out: Path) -> int:
    """Download, install, slim and pack ``packages`` into ``out``; returns the archive's size in bytes."""
    target_tags = ["--only-binary=:all:", "--python-version", python_version, "--implementation", "cp"]
    for platform_tag in PLATFORMS:
        target_tags += ["--platform", platform_tag]
    pins = [f"{name}=={version}" for name, version in sorted(packages.items())]
    with tempfile.TemporaryDirectory(prefix="raygrid-bundle-") as tmp:
        wheels, site = Path(tmp) / "wheels", Path(tmp) / "site"
        _pip(["download", "--quiet", "--no-deps", *target_tags, "-d", str(wheels), *pins])
        _pip(["install", "--quiet", "--no-deps", "--no-compile", "--no-index", "--target", str(site), *target_tags,
              *map(str, sorted(wheels.glob("*.whl")))])
        for relative in SLIM:
            shutil.rmtree(site / relative, ignore_errors=True)
        (site / "RAYGRID_BUNDLE.txt").write_text("".join(f"{pin}\n" for pin in pins))
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(out.name + ".partial")
        try:
            with tarfile.open(partial, "w:xz", preset=6) as archive:
                for path in sorted(site.iterdir()):
                    archive.add(path, arcname=path.name)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        partial.replace(out)  # never a half-written archive under the final name
    return out.stat().st_size


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the flags, pack the bundle, print what it holds; returns the exit code."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--python-version", default="3.12", help="the target's Python, e.g. 3.12")
    parser.add_argument("--have", type=Path, default=None, help="file of packages the target already has (pip freeze lines or names)")
    parser.add_argument("--include", action="append", default=None, metavar="NAME",
                        help="pack this installed package even if the target has it (repeatable; default: "
                             "typing-extensions, which pydantic needs at 4.16 or newer, whatever the image holds)")
    parser.add_argument("--out", type=Path, default=Path(".bundle/site.tar.xz"))
    parser.add_argument("--list", action="store_true", help="print the packages and stop")
    args = parser.parse_args(argv)
    if args.have is not None and not args.have.is_file():
        print(f"error: --have file {args.have} not found", file=sys.stderr)
        return 2
    have = read_have(args.have) if args.have else set()
    packages = closure("raygrid", args.python_version, have)
    for name in args.include if args.include is not None else ["typing-extensions"]:
        try:
            packages[canonical(name)] = metadata.version(name)
        except metadata.PackageNotFoundError:
            print(f"error: --include {name}: not installed in {sys.prefix}", file=sys.stderr)
            return 2
    print(f"{len(packages)} packages for Python {args.python_version}: "
          + " ".join(f"{n}=={v}" for n, v in sorted(packages.items())))
    if args.list:
        return 0
    size = build(packages, args.python_version, args.out)
    print(f"wrote {args.out} ({size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
