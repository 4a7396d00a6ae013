"""Writes interpreters.json: every CPython of the test matrix on this machine.

Run by scripts/provision-pythons with Debian's /usr/bin/python3.11. Each entry
is read off the interpreter itself (its version) and off its ELF file (shared
or static libpython, stripped or not), never assumed from where it was found.
An interpreter that is absent or does not run is left out with a warning; the
tests decide which ones they require.
"""

import argparse
import json
import os
import re
import subprocess
import sys

VERSION_PROBE = "import sys; print(sys.version.split()[0])"


def warn(message):
    print("write_manifest: " + message, file=sys.stderr)


def is_elf(path):
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def readelf(flag, path):
    out = subprocess.run(["readelf", "-W", flag, path], check=True, capture_output=True, text=True)
    return out.stdout


def elf_traits(path):
    """(build, stripped) of an interpreter executable."""
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", readelf("-d", path))
    build = "shared" if any(n.startswith("libpython") for n in needed) else "static"
    # A shared build keeps its interpreter in libpython, so the symbol table
    # that matters is that library's, not the tiny launcher's.
    target = path
    if build == "shared":
        target = shared_libpython(path) or path
    sections = re.findall(r"^\s*\[\s*\d+\]\s+(\S+)", readelf("-S", target), re.M)
    return build, ".symtab" not in sections


def shared_libpython(path):
    out = subprocess.run(["ldd", path], capture_output=True, text=True).stdout
    for line in out.splitlines():
        m = re.match(r"\s*(libpython\S+)\s+=>\s+(\S+)", line)
        if m and os.path.exists(m.group(2)):
            return m.group(2)
    return None


def run_version(exe, env):
    full_env = dict(os.environ)
    full_env.update(env)
    # pyenv's own variables could redirect a real binary's site setup.
    for key in ("PYTHONHOME", "PYTHONPATH", "PYENV_VERSION"):
        if key not in env:
            full_env.pop(key, None)
    try:
        out = subprocess.run([exe, "-c", VERSION_PROBE], env=full_env, capture_output=True,
                             text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        warn("%s does not run: %s" % (exe, e))
        return None
    if out.returncode != 0:
        warn("%s exited %d: %s" % (exe, out.returncode, out.stderr.strip()))
        return None
    return out.stdout.strip()


def entry(name_prefix, origin, exe, env):
    exe = os.path.realpath(exe)
    if not is_elf(exe):
        warn("%s is not an ELF file (a shim or script?); left out" % exe)
        return None
    version = run_version(exe, env)
    if version is None:
        return None
    build, stripped = elf_traits(exe)
    return {
        "name": "%s-%s" % (name_prefix, version),
        "version": version,
        "executable": exe,
        "env": env,
        "build": build,
        "stripped": stripped,
        "origin": origin,
    }


def version_key(text):
    return [int(p) if p.isdigit() else 0 for p in re.split(r"[.]", text)]


def pyenv_entries(root):
    versions_dir = os.path.join(root, "versions")
    if not os.path.isdir(versions_dir):
        warn("no pyenv versions under %s" % versions_dir)
        return []
    found = []
    for name in sorted(os.listdir(versions_dir), key=version_key):
        m = re.match(r"^(\d+)\.(\d+)\.\d+$", name)
        if not m:
            continue
        exe = os.path.join(versions_dir, name, "bin", "python%s.%s" % m.groups())
        if not os.path.exists(exe):
            warn("%s is missing" % exe)
            continue
        e = entry("pyenv", "pyenv", exe, {})
        if e:
            found.append(e)
    return found


def os_codename():
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("VERSION_CODENAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return "unknown"


def system_entries():
    origin = "debian-" + os_codename()
    found = []
    names = [n for n in os.listdir("/usr/bin") if re.match(r"^python\d+\.\d+$", n)]
    for name in sorted(names, key=lambda n: version_key(n[len("python"):])):
        e = entry("debian", origin, os.path.join("/usr/bin", name), {})
        if e:
            found.append(e)
    return found


def sid_entries(prefixes):
    found = []
    for prefix in prefixes:
        minor = os.path.basename(prefix)[len("sid-"):]
        exe = os.path.join(prefix, "krait-bin", "python" + minor)
        if not os.path.exists(exe):
            warn("%s is missing" % exe)
            continue
        e = entry("sid", "debian-sid", exe, {"PYTHONHOME": os.path.join(prefix, "usr")})
        if e:
            found.append(e)
    return found


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--pyenv-root", required=True)
    parser.add_argument("--sid", nargs="*", default=[])
    args = parser.parse_args()

    interpreters = pyenv_entries(args.pyenv_root) + system_entries() + sid_entries(args.sid)
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"interpreters": interpreters}, f, indent=2)
        f.write("\n")
    os.replace(tmp, args.out)
    for e in interpreters:
        print("  %-16s %-7s %-9s %s" % (e["name"], e["build"],
                                        "stripped" if e["stripped"] else "symbols",
                                        e["executable"]), file=sys.stderr)


if __name__ == "__main__":
    main()
