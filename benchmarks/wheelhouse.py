"""An offline wheelhouse of megamerge's runtime dependencies beyond PyTorch, and its installer.

    make wheelhouse PYVER=3.12                       # on a connected machine (this file's `build`)
    python benchmarks/wheelhouse.py install --wheelhouse wheelhouse/py3.12 --target /tmp/mm-deps

`build` resolves pyproject.toml's dependencies for a manylinux x86-64 CPython of the given
version, drops PyTorch and everything that only PyTorch brings (nvidia-*, triton: the node's own
CUDA build provides them, whatever its minor version), and downloads binary wheels of the rest with
`--no-deps`. DeepSpeed publishes no wheel, so it is built here against the local torch
(`pip wheel --no-build-isolation --no-deps`); its ops compile just in time on the node, so the
wheel is pure Python and serves every Python version.

`install` runs `pip install --no-index --find-links WHEELHOUSE --no-deps --target DIR` on the
wheels whose distribution the running interpreter cannot already import, so a node's preinstalled
numpy, safetensors or tqdm (matched to its torch) are never shadowed.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Provided by the node's CUDA PyTorch install, never by the wheelhouse.
TORCH_STACK = re.compile(r"^(torch|triton|nvidia-.*|pytorch-triton.*|cuda-.*)$")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_requirements(pyproject: Path = REPO / "pyproject.toml") -> list[str]:
    """pyproject.toml's [project] dependencies, PyTorch left out."""
    import tomllib

    deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    return [d for d in deps if not TORCH_STACK.match(canonical(re.split(r"[<>=!~ ;\[]", d, maxsplit=1)[0]))]


def build_deepspeed_wheel(out: Path) -> Path:
    """DeepSpeed at the version installed here, as a wheel built against the local torch."""
    version = importlib.metadata.version("deepspeed")
    out.mkdir(parents=True, exist_ok=True)
    existing = sorted(out.glob(f"deepspeed-{version}-*.whl"))
    if existing:
        return existing[0]
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-build-isolation", "--no-deps",
                    "-w", str(out), f"deepspeed=={version}"], check=True)
    return min(out.glob(f"deepspeed-{version}-*.whl"))


def resolve(requirements: list[str], python_version: str, find_links: Path) -> list[tuple[str, str]]:
    """(name, version) of every distribution the requirements need on the target, torch stack excluded."""
    target_args = ["--only-binary=:all:", "--platform", "manylinux2014_x86_64",
                   "--python-version", python_version, "--implementation", "cp"]
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--dry-run", "--ignore-installed",
                        "--report", str(report), "--target", str(Path(tmp) / "t"),
                        "--find-links", str(find_links), *target_args, *requirements], check=True)
        installs = json.loads(report.read_text())["install"]
    return reachable_without_torch(installs)


def reachable_without_torch(installs: list[dict]) -> list[tuple[str, str]]:
    """(name, version) of the report's distributions that the requested ones need through a path
    that avoids the torch stack (what only torch needs, sympy or networkx, comes with the node's torch)."""
    by_name = {canonical(item["metadata"]["name"]): item["metadata"] for item in installs}
    todo = [canonical(item["metadata"]["name"]) for item in installs if item.get("requested")]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen or name not in by_name or TORCH_STACK.match(name):
            continue
        seen.add(name)
        todo += [canonical(re.split(r"[<>=!~ ;\[(]", req, maxsplit=1)[0])
                 for req in by_name[name].get("requires_dist", []) if "extra ==" not in req]
    return sorted((by_name[n]["name"], by_name[n]["version"]) for n in seen)


def build(out: Path, python_version: str, only: list[str] | None = None) -> list[Path]:
    """Fill `out` with the wheels (of `only` and what they need, if given); returns them. Several
    Python versions may share one folder: the installer picks the matching binaries."""
    deepspeed_wheel = build_deepspeed_wheel(out)
    requirements = [r for r in runtime_requirements()
                    if canonical(re.split(r"[<>=!~ ;\[]", r)[0]) != "deepspeed"]
    if only:
        wanted = {canonical(name) for name in only}
        requirements = [r for r in requirements if canonical(re.split(r"[<>=!~ ;\[]", r)[0]) in wanted]
        requirements += [name for name in only if canonical(name) not in
                         {canonical(re.split(r"[<>=!~ ;\[]", r)[0]) for r in runtime_requirements()}]
    pins = resolve([str(deepspeed_wheel), *requirements], python_version, out)
    others = [f"{n}=={v}" for n, v in pins if canonical(n) != "deepspeed"]
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--platform", "manylinux2014_x86_64", "--python-version", python_version,
                    "--implementation", "cp", "-d", str(out), *others], check=True)
    (out / f"requirements-py{python_version}.txt").write_text("".join(f"{n}=={v}\n" for n, v in pins))
    return sorted(out.glob("*.whl"))


def wheel_distribution(path: Path) -> str:
    return canonical(path.name.split("-")[0])


def missing_distributions(wheelhouse: Path) -> list[str]:
    """The wheelhouse's distributions this interpreter does not already have."""
    wheels = sorted(wheelhouse.glob("*.whl"))
    if not wheels:
        raise SystemExit(f"--wheelhouse {wheelhouse}: no .whl files (run `make wheelhouse PYVER=...` first)")
    have = {canonical(d.metadata["Name"]) for d in importlib.metadata.distributions() if d.metadata["Name"]}
    return sorted({wheel_distribution(w) for w in wheels} - have)


def install_missing(wheelhouse: Path, target: Path) -> list[str]:
    """Install the missing distributions into `target` (offline; pip picks the wheel matching this
    interpreter) and put it on sys.path; returns their names."""
    names = missing_distributions(wheelhouse)
    if names:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index",
                        "--find-links", str(wheelhouse), "--no-deps", "--target", str(target), *names],
                       check=True)
    if str(target) not in sys.path:
        sys.path.insert(0, str(target))
    importlib.invalidate_caches()
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="download / build the wheels (needs the package registry)")
    b.add_argument("--out", type=Path, required=True, help="the wheelhouse folder")
    b.add_argument("--python-version", default=f"{sys.version_info[0]}.{sys.version_info[1]}",
                   help="target CPython version, e.g. 3.12 (default: this interpreter's)")
    b.add_argument("--only", nargs="+", help="just these packages and what they need (default: every "
                   "runtime dependency in pyproject.toml), e.g. deepspeed pytest for benchmarks/gpu_check.py")
    i = sub.add_parser("install", help="install the wheels this interpreter lacks, offline")
    i.add_argument("--wheelhouse", type=Path, required=True)
    i.add_argument("--target", type=Path, required=True, help="folder to install into (add it to PYTHONPATH)")
    args = parser.parse_args(argv)
    if args.command == "build":
        wheels = build(args.out, args.python_version, args.only)
        print(f"{len(wheels)} wheels in {args.out} for CPython {args.python_version} manylinux x86-64")
    else:
        names = install_missing(args.wheelhouse, args.target)
        print(f"installed {len(names)} wheels into {args.target}: {' '.join(names) or '(none missing)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
