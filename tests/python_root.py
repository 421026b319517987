"""Pythons this machine's distribution does not ship, from a cached Debian root file system.

Pythons 3.14 and 3.15 are packaged in Debian sid only, whose binaries need a newer C library
than a stable release has. ``debootstrap --variant=minbase`` makes a sid root with one of them
(under a minute, about 300 MB each), cached outside the repository so that a machine builds it
once; commands then run in it with ``chroot``, in a private mount namespace (``unshare``) where
the project, the host's uv (unless asked for a machine without it) and its cache, CA bundle
and DNS settings are bind-mounted, and that vanishes with the command. PostgreSQL on
127.0.0.1 is the host's (same network). Root only, as debootstrap and chroot are; CI runs as
root. Plain errors, no pytest: the lock script uses this module too.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

# Debian release and packages for each Python not installed on the host.
ROOTS = {
    version: ("sid", [f"python{version}", f"python{version}-venv", "ca-certificates", "git"])
    for version in ("3.14", "3.15")
}
CACHE = Path(os.environ.get("TEMPLATE_ROOT_CACHE", "/var/cache/fastapi-template-tests"))
MIRROR = os.environ.get("TEMPLATE_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# Inside the root: where the project is mounted, and the variables passed through.
PROJECT = "/project"
PASSED = (
    *("TEST_DATABASE_URL", "UV_SYSTEM_CERTS", "UV_PYTHON_DOWNLOADS", "UV_INDEX_URL", "CI"),
    *("PIP_CERT", "PIP_INDEX_URL"),
)

MOUNT_AND_RUN = r"""
set -eu
root=$1 project=$2 uv=$3 cache=$4; shift 4
mount --bind /dev "$root/dev"
mount -t proc proc "$root/proc"
mount -t tmpfs tmpfs "$root/tmp"
mount --bind "$project" "$root/project"
mount --bind "$cache" "$root/uv-cache"
if [ -n "$uv" ]; then mount --bind "$uv" "$root/usr/local/bin/uv"; fi
mount --bind /etc/resolv.conf "$root/etc/resolv.conf"
mount --bind /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
exec chroot "$root" "$@"
"""


class PythonRootError(RuntimeError):
    """The root file system could not be built or used."""


def python_root(version: str) -> Path:
    """The cached root file system holding ``python<version>``; built if missing."""
    release, packages = ROOTS[version]
    root = CACHE / f"{release}-python{version}"
    if (root / "usr" / "bin" / f"python{version}").exists():
        return root
    debootstrap = shutil.which("debootstrap") or shutil.which("debootstrap", path="/usr/sbin")
    if debootstrap is None or os.geteuid() != 0:
        raise PythonRootError(f"building a root with Python {version} needs debootstrap and root")
    CACHE.mkdir(parents=True, exist_ok=True)
    # One builder per machine: parallel test workers wait for it.
    with (CACHE / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / "usr" / "bin" / f"python{version}").exists():
            building = root.with_name(root.name + ".building")
            shutil.rmtree(building, ignore_errors=True)
            result = subprocess.run(
                [debootstrap, "--variant=minbase", f"--include={','.join(packages)}",
                 release, str(building), MIRROR],
                capture_output=True, text=True, timeout=1800, check=False,
            )  # fmt: skip
            if result.returncode != 0:
                raise PythonRootError(f"debootstrap failed:\n{result.stdout[-3000:]}")
            # Downloaded packages and package lists are of no further use (about 130 MB).
            for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
                for path in (building / cache).glob("*"):
                    if path.is_file():
                        path.unlink()
            # What python:X-slim has: python3 is that version; and the mount points.
            (building / "usr" / "local" / "bin" / "python3").symlink_to(f"/usr/bin/python{version}")
            (building / "usr" / "local" / "bin" / "uv").touch()
            for folder in ("project", "uv-cache"):
                (building / folder).mkdir()
            building.rename(root)
    return root


def uv_cache_dir(uv: str) -> str:
    result = subprocess.run([uv, "cache", "dir"], capture_output=True, text=True, check=True)
    return result.stdout.strip()


def in_root(
    version: str,
    project: Path,
    command: list[str],
    env: Mapping[str, str],
    uv: str,
    extra_env: Mapping[str, str] | None = None,
    uv_on_path: bool = True,
) -> list[str]:
    """``command``, to run in ``project`` inside the root of ``version`` with ``env``'s
    variables that matter there (a few, by name), ``extra_env`` as it is, and the host's
    ``uv`` on PATH unless ``uv_on_path`` is false (a fresh machine; its cache is the host's
    uv cache all the same)."""
    inner_env = {key: env[key] for key in PASSED if key in env} | dict(extra_env or {})
    inner_env |= {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": "/root",
        "UV_CACHE_DIR": "/uv-cache",
        "SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt",
        "LANG": "C.UTF-8",
        # The root's own /tmp: a tmpfs that MOUNT_AND_RUN mounts for this command alone, so
        # pre-commit's environments land neither in the cached root nor anywhere on the host
        # (this is a path inside the root, the same on every machine, not one of this host).
        "PRE_COMMIT_HOME": "/tmp/pre-commit",
    }
    assignments = [f"{key}={value}" for key, value in inner_env.items()]
    return [
        "unshare", "--mount", "--propagation", "private",
        "sh", "-c", MOUNT_AND_RUN, "sh",
        str(python_root(version)), str(project), uv if uv_on_path else "", uv_cache_dir(uv),
        "/usr/bin/env", "-i", *assignments,
        "sh", "-c", 'cd "$0" && exec "$@"', PROJECT, *command,
    ]  # fmt: skip
