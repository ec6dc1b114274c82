"""Firmware bundles (`tpe provision bundle build`): the application's files and a manifest
signed by the fleet key (ECDSA P-256, SHA-256, raw r||s as the journal's), in one tar file:

    manifest.json   {"format": 1, "version", "hardware", "min_version", "created",
                     "files": [{"path", "size", "sha256"}]}
    manifest.sig    the signature of manifest.json's exact bytes, hexadecimal
    files/<path>    each file of the manifest

`verify` reads the whole bundle and checks the signature, every file's size and SHA-256 and that
no member is missing or extra, before an installer writes a byte (RAUC and Mender check the
same way). Anything else raises `BundleError`.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from cryptography.hazmat.primitives.asymmetric import ec

from firmware import journal

FORMAT = 1
VERSION = re.compile(r"\d{1,5}(\.\d{1,5}){0,3}")
HARDWARE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
DEFAULT_HARDWARE = "tpe-rpi"  # the handheld this project targets: what bundles and devices name by default
PACKAGES = ("emv", "firmware", "modem", "ui", "provisioning")  # what a terminal runs
DATA_SUFFIXES = (".py", ".toml", ".json", ".pem", ".md")
MAX_MANIFEST = 4 * 1024 * 1024
CHUNK = 1 << 16


class BundleError(Exception):
    """A bundle that is not what it claims: refused before anything is written."""


def version_key(version: str) -> tuple[int, ...]:
    if not isinstance(version, str) or not VERSION.fullmatch(version):
        raise BundleError(f"version {version!r}: digits and dots, e.g. 1.4.2")
    return tuple(int(part) for part in version.split("."))


@dataclass(frozen=True)
class Manifest:
    version: str
    hardware: str
    min_version: str
    files: tuple[dict[str, Any], ...]
    raw: bytes

    @property
    def size(self) -> int:
        return sum(int(entry["size"]) for entry in self.files)


def application_files(root: Path, packages: tuple[str, ...] = PACKAGES) -> list[tuple[str, Path]]:
    """The files a terminal runs, from the source tree `root`: (path in the bundle, file)."""
    found = []
    for package in packages:
        for path in sorted((root / package).rglob("*")):
            if path.is_file() and path.suffix in DATA_SUFFIXES and "__pycache__" not in path.parts:
                found.append((path.relative_to(root).as_posix(), path))
    return found


def build(out: Path, files: list[tuple[str, Path]], *, version: str, hardware: str, min_version: str,
          signing_key: ec.EllipticCurvePrivateKey) -> Manifest:
    """Write the bundle of `files` to `out`, signed with the fleet key."""
    version_key(version)
    version_key(min_version)
    if not HARDWARE.fullmatch(hardware):
        raise BundleError(f"hardware id {hardware!r}: letters, digits, '.', '-', '_'")
    entries = []
    for name, path in files:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        entries.append({"path": name, "size": path.stat().st_size, "sha256": digest})
    raw = json.dumps({"format": FORMAT, "version": version, "hardware": hardware, "min_version": min_version,
                      "created": datetime.datetime.now(datetime.UTC).isoformat(), "files": entries},
                     sort_keys=True, indent=1).encode()
    signature = journal.sign(signing_key, raw).hex().encode()
    with tarfile.open(out, "w") as tar:
        for name, data in (("manifest.json", raw), ("manifest.sig", signature)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, path in files:
            tar.add(path, arcname=f"files/{name}", recursive=False)
    return parse_manifest(raw)


def _safe_path(name: Any) -> str:
    if not isinstance(name, str) or not name or name.startswith("/") or "\\" in name:
        raise BundleError(f"file path {name!r} is not relative")
    parts = PurePosixPath(name).parts
    if any(part in ("", ".", "..") for part in parts):
        raise BundleError(f"file path {name!r} leaves its folder")
    return name


def parse_manifest(raw: bytes) -> Manifest:
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise BundleError(f"the manifest is not JSON: {exc}") from None
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        raise BundleError(f"the manifest is not of format {FORMAT}")
    version, hardware, minimum = body.get("version"), body.get("hardware"), body.get("min_version")
    version_key(version)
    version_key(minimum)
    if not isinstance(hardware, str) or not HARDWARE.fullmatch(hardware):
        raise BundleError("the manifest names no hardware")
    files = body.get("files")
    if not isinstance(files, list) or not files:
        raise BundleError("the manifest lists no file")
    seen = set()
    for entry in files:
        if not isinstance(entry, dict) or type(entry.get("size")) is not int or entry["size"] < 0 \
                or not re.fullmatch(r"[0-9a-f]{64}", str(entry.get("sha256"))):
            raise BundleError("a manifest entry has no path, size or SHA-256")
        path = _safe_path(entry.get("path"))
        if path in seen:
            raise BundleError(f"{path} is listed twice")
        seen.add(path)
    return Manifest(version, hardware, minimum, tuple(files), raw)


def _member(tar: tarfile.TarFile, name: str, limit: int) -> bytes:
    try:
        member = tar.getmember(name)
    except KeyError:
        raise BundleError(f"the bundle has no {name}") from None
    if not member.isfile() or member.size > limit:
        raise BundleError(f"{name} is not a file of at most {limit} bytes")
    stream = tar.extractfile(member)
    if stream is None:
        raise BundleError(f"{name} cannot be read")
    return stream.read()


def open_manifest(bundle: Path, public: ec.EllipticCurvePublicKey) -> Manifest:
    """The manifest, its signature checked against the fleet key."""
    try:
        with tarfile.open(bundle, "r:") as tar:
            raw = _member(tar, "manifest.json", MAX_MANIFEST)
            signature = _member(tar, "manifest.sig", 256)
    except (OSError, tarfile.TarError) as exc:
        raise BundleError(f"{bundle} is not a bundle: {exc}") from None
    try:
        valid = journal.verify(public, raw, bytes.fromhex(signature.decode("ascii").strip()))
    except (ValueError, UnicodeDecodeError):
        valid = False
    if not valid:
        raise BundleError("the manifest's signature is not the fleet key's")
    return parse_manifest(raw)


def files(bundle: Path, manifest: Manifest) -> Iterator[tuple[dict[str, Any], IO[bytes]]]:
    """Each file of `manifest` with its stream, in the manifest's order; a member of the bundle
    the manifest does not list is refused."""
    expected = {f"files/{entry['path']}": entry for entry in manifest.files}
    try:
        with tarfile.open(bundle, "r:") as tar:
            names = {member.name for member in tar.getmembers()}
            extra = sorted(names - set(expected) - {"manifest.json", "manifest.sig"})
            if extra:
                raise BundleError(f"{extra[0]} is in the bundle but not in its manifest")
            for name, entry in expected.items():
                member = tar.getmember(name) if name in names else None
                stream = tar.extractfile(member) if member is not None and member.isfile() else None
                if stream is None:
                    raise BundleError(f"{entry['path']} is missing from the bundle")
                yield entry, stream
    except (OSError, tarfile.TarError) as exc:
        raise BundleError(f"{bundle} cannot be read: {exc}") from None


def verify(bundle: Path, public: ec.EllipticCurvePublicKey) -> Manifest:
    """The manifest once the signature and every file's size and SHA-256 are checked."""
    manifest = open_manifest(bundle, public)
    for entry, stream in files(bundle, manifest):
        digest, size = hashlib.sha256(), 0
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
        if size != entry["size"] or digest.hexdigest() != entry["sha256"]:
            raise BundleError(f"{entry['path']} is not the file the manifest signed")
    return manifest
