#!/usr/bin/env python3
"""Writes the seed corpora of the libFuzzer harnesses (tests/fuzz/<name>/corpus)
from real data: the line-table fixtures of the unit tests, /proc files of
this machine's Python processes, offset tables, ELF files, live interpreters'
memory. Each harness's fuzz.cpp documents the input layout written here.

Usage: tests/fuzz/make_seeds.py [--fuzz-build DIR] NAME...   (or `all`)
  --fuzz-build DIR  the fuzz build (scripts/fuzz build), whose record_code_seed
                    records the code_reader seeds (default: <repo>/build-fuzz)
Fixture programs are compiled here with gcc from the unit tests' sources.
Seeds are small (a few hundred KiB per harness at most) and deterministic
where the data is; rerunning replaces a harness's corpus/ directory. Run as
root: some seeds are read out of live processes (process_vm_readv).
"""
import argparse
import glob
import gzip
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FUZZ = os.path.join(ROOT, 'tests', 'fuzz')
MANIFEST = '/var/cache/krait/pythons/interpreters.json'


def corpus_dir(name):
    d = os.path.join(FUZZ, name, 'corpus')
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    return d


def write_seed(d, label, data):
    path = os.path.join(d, label)
    with open(path, 'wb') as f:
        f.write(data)
    return path


def interpreters():
    with open(MANIFEST) as f:
        return json.load(f)['interpreters']


# --- line_table: u8 format, i32 firstlineno, u32 code size, table ---------

def line_format(version):
    major, minor = (int(x) for x in version.split('.')[:2])
    if major == 2 or minor <= 5:
        return 0
    if minor <= 9:
        return 1
    if minor == 10:
        return 2
    return 3


def seeds_line_table(args):
    d = corpus_dir('line_table')
    fixtures = sorted(glob.glob(os.path.join(ROOT, 'tests/unit/python_line_table/fixtures/*.gz')))
    for path in fixtures:
        codes = []
        with gzip.open(path, 'rt') as f:
            version = None
            for line in f:
                fields = line.split()
                if fields[0] == 'python':
                    version = fields[1]
                elif fields[0] == 'code' and fields[5] != '-':
                    codes.append((fields[1], int(fields[2]), int(fields[3]), bytes.fromhex(fields[5])))
        fmt = line_format(version)
        codes = [c for c in codes if 0 < len(c[3]) <= 2048]
        codes.sort(key=lambda c: len(c[3]))
        # The smallest, a middle one and the largest table under 2 KiB.
        for i in sorted({0, len(codes) // 2, len(codes) - 1}):
            label, first, size, table = codes[i]
            data = struct.pack('<BiI', fmt, first, size) + table
            write_seed(d, 'cpython-%s-%d-%s' % (version, i, hashlib.sha1(data).hexdigest()[:8]), data)


# --- processes to read real /proc files and memory from --------------------

def run_env(interp):
    env = dict(os.environ)
    env.update(interp.get('env', {}))
    return env


class Started:
    """A child process started for its /proc files; killed on exit."""

    def __init__(self, argv, env=None, cwd=None):
        self.proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.line = self.proc.stdout.readline().decode().strip()
        if not self.line:
            self.stop()
            raise RuntimeError('%s did not start: %s' % (argv, self.proc.stderr.read().decode()))

    @property
    def pid(self):
        return self.proc.pid

    def read(self, name):
        with open('/proc/%d/%s' % (self.pid, name), 'rb') as f:
            return f.read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


# Prints a line, then waits until its stdin is closed.
WAIT = 'import sys; sys.stdout.write("ready\\n"); sys.stdout.flush(); sys.stdin.read()'


# --- proc_maps: /proc/PID/maps of Python processes --------------------------

MAPS_SCRIPT = """
import mmap, os, sys, tempfile
d = tempfile.mkdtemp()
paths = [os.path.join(d, 'gone.so'), os.path.join(d, 'with space.so')]
maps = []
for p in paths:
    with open(p, 'wb') as f:
        f.write(b'x' * 8192)
    f = open(p, 'rb')
    maps.append(mmap.mmap(f.fileno(), 8192, prot=mmap.PROT_READ))
os.unlink(paths[0])
fd = os.memfd_create('krait-seed')
os.write(fd, b'y' * 4096)
maps.append(mmap.mmap(fd, 4096, prot=mmap.PROT_READ))
sys.stdout.write('ready\\n'); sys.stdout.flush(); sys.stdin.read()
"""


def seeds_proc_maps(args):
    d = corpus_dir('proc_maps')
    wanted = {'pyenv-3.12.1', 'pyenv-2.7.18', 'debian-3.11.2', 'sid-3.14.10'}
    for interp in interpreters():
        if interp['name'] in wanted:
            with Started([interp['executable'], '-c', WAIT], env=run_env(interp)) as p:
                write_seed(d, interp['name'], p.read('maps'))
    # Mappings of a deleted file, of a memfd (" (deleted)") and a path with a space.
    with Started([sys.executable, '-c', MAPS_SCRIPT]) as p:
        write_seed(d, 'deleted-memfd-space', p.read('maps'))


# --- proc_cgroup: u8 selector (0 cgroup, 1 status), text --------------------

KID = '4c5e7e4a7d3b0e6f6d2b1a9c8f7e6d5c4b3a2918f7e6d5c4b3a29180f7e6d5c4'
KPOD_ = '2c7d8a7e_2b1f_4c6a_9b1e_8d5f4c3b2a19'


def seeds_proc_cgroup(args):
    d = corpus_dir('proc_cgroup')
    v1 = ['name=systemd', 'pids', 'memory', 'cpu,cpuacct', 'blkio', 'devices']
    # The layouts of tests/unit/proc/container_test.cpp, as runtimes write them.
    cgroups = {
        'docker-v2-systemd': '0::/system.slice/docker-%s.scope\n' % KID,
        'docker-v2-cgroupfs': '0::/docker/%s\n' % KID,
        'k8s-burstable-containerd': '0::/kubepods.slice/kubepods-burstable.slice/'
                                    'kubepods-burstable-pod%s.slice/cri-containerd-%s.scope\n' % (KPOD_, KID),
        'k8s-crio': '0::/kubepods.slice/kubepods-pod%s.slice/crio-%s.scope\n' % (KPOD_, KID),
        'k8s-cgroupfs-v1': ''.join('%d:%s:/kubepods/burstable/pod%s/%s\n'
                                   % (i, c, KPOD_.replace('_', '-'), KID) for i, c in enumerate(v1, 1)),
        'docker-v1-hybrid': ''.join('%d:%s:/docker/%s\n' % (i, c, KID) for i, c in enumerate(v1, 1))
                            + '0::/system.slice/containerd.service\n',
        'podman': '0::/machine.slice/libpod-%s.scope/container\n' % KID,
        'podman-rootless': '0::/user.slice/user-1000.slice/user@1000.service/user.slice/'
                           'libpod-%s.scope\n' % KID,
        'lxc': '0::/lxc.payload.web01/system.slice/gunicorn.service\n',
        'nested-relative': '0::/../../kubepods-besteffort-pod%s.slice/cri-containerd-%s.scope\n'
                           % (KPOD_, KID),
        'systemd-service': '0::/system.slice/gunicorn.service\n',
        'user-service': '0::/user.slice/user-1000.slice/user@1000.service/app.slice/jupyter.service\n',
        'host-root': '0::/\n',
    }
    for label, text in cgroups.items():
        write_seed(d, 'cgroup-' + label, b'\x00' + text.encode())
    with open('/proc/self/cgroup', 'rb') as f:
        write_seed(d, 'cgroup-this-host', b'\x00' + f.read())
    with open('/proc/self/status', 'rb') as f:
        write_seed(d, 'status-this-host', b'\x01' + f.read())
    write_seed(d, 'status-nested', b'\x01Name:\tpython3\nPid:\t4242\nNSpid:\t4242\t17\t1\nPPid:\t1\n')


# --- offset_table: offsets/tables/*.txt -------------------------------------

def seeds_offset_table(args):
    d = corpus_dir('offset_table')
    for path in sorted(glob.glob(os.path.join(ROOT, 'offsets/tables/*.txt'))):
        with open(path, 'rb') as f:
            write_seed(d, os.path.basename(path), f.read())


# --- debug_offsets: the first bytes of _PyRuntime of live 3.13+ -------------

def debug_offsets_size(version):
    minor = '.'.join(version.split('.')[:2])
    with open(os.path.join(ROOT, 'offsets/debug_offsets/%s.txt' % minor)) as f:
        slots = [l for l in f if l.strip() and not l.startswith('#')]
    return 8 * len(slots)


RUNTIME_SCRIPT = """
import ctypes, sys
addr = ctypes.addressof(ctypes.c_char.in_dll(ctypes.pythonapi, "_PyRuntime"))
sys.stdout.write(ctypes.string_at(addr, %d).hex() + "\\n"); sys.stdout.flush()
"""


def seeds_debug_offsets(args):
    d = corpus_dir('debug_offsets')
    for interp in interpreters():
        major, minor = (int(x) for x in interp['version'].split('.')[:2])
        if (major, minor) < (3, 13):
            continue
        script = RUNTIME_SCRIPT % debug_offsets_size(interp['version'])
        with Started([interp['executable'], '-c', script], env=run_env(interp)) as p:
            write_seed(d, interp['name'], bytes.fromhex(p.line))


# --- ELF files: the unit tests' fixture programs, built here ----------------

CC = os.environ.get('CC', 'gcc')


def cc(*argv):
    subprocess.run([CC] + list(argv), check=True)


FAKE_PYTHON = """
char _PyRuntime[4096];
char PyCode_Type[256];
const unsigned long Py_Version = 0x030c01f0;
const char version[] = "3.12.1";
int main(void) { return _PyRuntime[0]; }
"""
# Issue 8's reproduction: no Py_Version, so the version comes from the
# file's name and its .rodata strings.
FAKE_PYTHON_NO_VERSION = """
char _PyRuntime[4096];
char PyCode_Type[256];
const char version[] = "3.12.1";
int main(void) { return _PyRuntime[0] + version[0]; }
"""


def built_elf_fixtures(tmp):
    """Builds the ELF fixtures of tests/unit/elf with their CMake flags."""
    src = os.path.join(ROOT, 'tests/unit/elf/fixtures')
    prog = os.path.join(src, 'fixture_program.c')
    out = {}
    lib = out['lib'] = os.path.join(tmp, 'libkrait_elf_fixture.so.1')
    cc('-O2', '-g', '-fPIC', '-shared', '-Wl,-soname,libkrait_elf_fixture.so.1',
       '-Wl,--build-id=sha1', '-o', lib, os.path.join(src, 'fixture_lib.c'))
    pie = out['pie'] = os.path.join(tmp, 'krait_elf_fixture_pie')
    cc('-O2', '-g', '-fPIE', '-pie', '-DKRAIT_FIXTURE_WITH_LIB', '-Wl,--export-dynamic',
       '-Wl,--build-id=sha1', '-o', pie, prog, lib)
    ibt = out['ibt'] = os.path.join(tmp, 'krait_elf_fixture_ibt')
    cc('-O2', '-g', '-fPIE', '-pie', '-fcf-protection=full', '-Wl,-z,ibtplt', '-o', ibt, prog)
    nopie = out['nopie'] = os.path.join(tmp, 'krait_elf_fixture_nopie')
    cc('-O2', '-g', '-fno-pie', '-no-pie', '-o', nopie, prog)
    subprocess.run(['objcopy', '--only-keep-debug', pie, pie + '.debug'], check=True)
    out['debug'] = pie + '.debug'
    # A fake interpreter: a tiny program that defines the symbols that make
    # a file CPython to krait (issue 8's first reproduction).
    for key, text in (('fake_python', FAKE_PYTHON), ('fake_python_no_version', FAKE_PYTHON_NO_VERSION)):
        fake_c = os.path.join(tmp, key + '.c')
        with open(fake_c, 'w') as f:
            f.write(text)
        fake = out[key] = os.path.join(tmp, key)
        cc('-O2', '-fPIE', '-pie', '-rdynamic', '-Wl,--build-id=sha1', '-o', fake, fake_c)
    return out


def stripped(path, tmp, how='--strip-debug'):
    out = os.path.join(tmp, os.path.basename(path) + how.replace('-', '_'))
    subprocess.run(['strip', how, '-o', out, path], check=True)
    return out


def seeds_elf_file(args):
    d = corpus_dir('elf_file')
    with tempfile.TemporaryDirectory() as tmp:
        f = built_elf_fixtures(tmp)
        seeds = [
            ('lib', '/usr/lib/x86_64-linux-gnu/libkrait_elf_fixture.so.1', stripped(f['lib'], tmp)),
            ('pie', '/opt/app/bin/krait_elf_fixture_pie', stripped(f['pie'], tmp)),
            ('pie-stripped', '/opt/app/bin/krait_elf_fixture_pie', stripped(f['pie'], tmp, '--strip-all')),
            ('ibt', '/opt/app/bin/krait_elf_fixture_ibt', stripped(f['ibt'], tmp)),
            ('nopie', '/opt/app/bin/krait_elf_fixture_nopie', stripped(f['nopie'], tmp)),
            ('debug-file', '/usr/lib/debug/.build-id/ab/cdef.debug', f['debug']),
            ('true', '/usr/bin/true', '/usr/bin/true'),
            ('fake-python3.12', '/usr/bin/python3.12', f['fake_python']),
            ('fake-libpython', '/usr/lib/libpython3.12.so.1.0', f['fake_python']),
            ('fake-python-named', '/home/user/bin/python3.12', f['fake_python_no_version']),
        ]
        for label, name, path in seeds:
            with open(path, 'rb') as fh:
                body = fh.read()
            write_seed(d, label, struct.pack('<H', len(name)) + name.encode() + body)


# --- cfi_table: .eh_frame / .debug_frame bytes ------------------------------

def section(path, name):
    """(vaddr, bytes) of a section, or None."""
    out = subprocess.run(['readelf', '-SW', path], check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        fields = line.replace('[ ', '[').split()
        if len(fields) > 5 and fields[1] == name:
            vaddr, offset, size = int(fields[3], 16), int(fields[4], 16), int(fields[5], 16)
            with open(path, 'rb') as f:
                f.seek(offset)
                return vaddr, f.read(size)
    return None


def seeds_cfi_table(args):
    d = corpus_dir('cfi_table')
    with tempfile.TemporaryDirectory() as tmp:
        f = built_elf_fixtures(tmp)
        df = os.path.join(tmp, 'debug_frame_only')
        cc('-O2', '-g', '-fno-asynchronous-unwind-tables', '-fno-unwind-tables', '-o', df,
           os.path.join(ROOT, 'tests/unit/elf/fixtures/fixture_program.c'))
        dfcpp = os.path.join(tmp, 'debug_frame_cpp')
        src = os.path.join(ROOT, 'tests/unit/unwind/fixtures')
        subprocess.run(['g++', '-O2', '-g', '-fno-asynchronous-unwind-tables', '-I', src, '-o', dfcpp,
                        os.path.join(src, 'fixture_cpp.cpp'), '-x', 'c', os.path.join(src, 'capture.c'),
                        os.path.join(src, 'fixture_lib.c'), '-lpthread'], check=True)
        for label, path in [('lib', f['lib']), ('pie', f['pie']), ('nopie', f['nopie']),
                            ('true', '/usr/bin/true'), ('libz', '/lib/x86_64-linux-gnu/libz.so.1'),
                            ('debug-frame-only', df), ('debug-frame-cpp', dfcpp)]:
            for kind, sel in (('.eh_frame', 0), ('.debug_frame', 1)):
                got = section(path, kind)
                if got and got[1]:
                    write_seed(d, label + kind.replace('.', '-'), struct.pack('<BQ', sel, got[0]) + got[1])


# --- unwinder: the unwinding fixture's own captures --------------------------

def parse_snapshot(raw):
    assert raw[:8] == b'KRAITSNP'
    at = 16
    regs = raw[at:at + 17 * 8]
    at += 17 * 8
    stack_start, stack_size = struct.unpack_from('<QQ', raw, at)
    at += 16
    stack = raw[at:at + stack_size]
    at += stack_size
    (maps_size,) = struct.unpack_from('<Q', raw, at)
    return regs, stack_start, stack, raw[at + 8:at + 8 + maps_size].decode()


def seeds_unwinder(args):
    d = corpus_dir('unwinder')
    modules = os.path.join(FUZZ, 'unwinder', 'modules')
    shutil.rmtree(modules, ignore_errors=True)
    os.makedirs(modules)
    src = os.path.join(ROOT, 'tests/unit/unwind/fixtures')
    flags = ['-O2', '-g', '-fomit-frame-pointer']
    lib = os.path.join(modules, 'libkrait_unwind_fixture.so')
    cc(*flags, '-fPIC', '-shared', '-Wl,--build-id=sha1', '-o', lib, os.path.join(src, 'fixture_lib.c'))
    exes = {}
    for name, extra in (('eh', []), ('debug', ['-fno-asynchronous-unwind-tables', '-fno-unwind-tables'])):
        exe = exes[name] = os.path.join(modules, 'krait_unwind_fixture_c_' + name)
        cc(*flags, *extra, '-fPIE', '-pie', '-Wl,--build-id=sha1', '-Wl,-rpath,$ORIGIN', '-I', src,
           '-o', exe, os.path.join(src, 'fixture_c.c'), os.path.join(src, 'capture.c'), lib, '-lpthread')
    # Small files: no DWARF but .debug_frame (unwind tables) and symbols.
    for path in [lib] + list(exes.values()):
        subprocess.run(['strip', '--strip-debug', '--keep-section=.debug_frame', path], check=True)
    layout = ['# <set> <file> <base>: where `setarch -R` loaded each module when the seeds were captured']
    for name, exe in exes.items():
        with tempfile.TemporaryDirectory() as tmp:
            env = dict(os.environ, KRAIT_CAPTURE_DIR=tmp, KRAIT_CAPTURE_STACK_LIMIT='12288')
            subprocess.run(['setarch', '-R', exe, name], check=True, env=env)
            bases = {}
            for snap in sorted(glob.glob(os.path.join(tmp, '*.snapshot'))):
                with open(snap, 'rb') as fh:
                    regs, stack_start, stack, maps = parse_snapshot(fh.read())
                for line in maps.splitlines():
                    fields = line.split()
                    if len(fields) >= 6 and int(fields[2], 16) == 0 and fields[5] in (exe, lib):
                        bases[os.path.basename(fields[5])] = fields[0].split('-')[0]
                label = os.path.basename(snap).replace('.snapshot', '')
                write_seed(d, label, struct.pack('<B', 1 if name == 'debug' else 0) + regs +
                           struct.pack('<Q', stack_start) + stack)
                if name == 'eh':
                    # Selector 2: the same sample over the module's own
                    # .eh_frame, its first CIE and FDE given as the patch.
                    eh = section(exe, '.eh_frame')[1][:64]
                    write_seed(d, label + '-ehpatch', struct.pack('<BH', 2, len(eh)) + eh + regs +
                               struct.pack('<Q', stack_start) + stack)
            for module, base in sorted(bases.items()):
                layout.append('%s %s %s' % (name, module, base))
    with open(os.path.join(modules, 'layout.txt'), 'w') as fh:
        fh.write('\n'.join(layout) + '\n')


# --- dwarf_file: small -g programs and addresses of their functions ---------

def function_addresses(path, limit=16):
    out = subprocess.run(['nm', '--defined-only', path], check=True, capture_output=True, text=True).stdout
    addrs = set()
    for line in out.splitlines():
        fields = line.split()
        if len(fields) == 3 and fields[1] in ('t', 'T'):
            addrs.add(int(fields[0], 16))
    return sorted(addrs)[:limit]


def seeds_dwarf_file(args):
    d = corpus_dir('dwarf_file')
    with tempfile.TemporaryDirectory() as tmp:
        f = built_elf_fixtures(tmp)
        src = os.path.join(ROOT, 'tests/unit/unwind/fixtures')
        cpp = os.path.join(tmp, 'fixture_cpp')
        subprocess.run(['g++', '-O2', '-g', '-fPIE', '-pie', '-I', src, '-o', cpp,
                        os.path.join(src, 'fixture_cpp.cpp'), '-x', 'c', os.path.join(src, 'capture.c'),
                        os.path.join(src, 'fixture_lib.c'), '-lpthread'], check=True)
        g1 = os.path.join(tmp, 'fixture_g1')
        cc('-O2', '-g1', '-o', g1, os.path.join(ROOT, 'tests/unit/elf/fixtures/fixture_program.c'))
        for label, path in [('pie', f['pie']), ('lib', f['lib']), ('debug-file', f['debug']),
                            ('cpp-inlines', cpp), ('g1', g1)]:
            addrs = function_addresses(path)
            with open(path, 'rb') as fh:
                body = fh.read()
            write_seed(d, label, struct.pack('<B', len(addrs)) +
                       b''.join(struct.pack('<Q', a) for a in addrs) + body)


# --- code_reader: memory of live interpreters, recorded ---------------------

CODE_TARGET = """
import sys
class Base(object):
    def method(self):
        f = sys._getframe()
        sys.stdout.write('%d %d\\n' % (id(f.f_code), id(f)))
        sys.stdout.flush()
        sys.stdin.read()
class Derived(Base):
    pass
Derived().method()
"""


def seeds_code_reader(args):
    d = corpus_dir('code_reader')
    recorder = os.path.join(args.fuzz_build, 'fuzzers', 'record_code_seed')
    if not os.access(recorder, os.X_OK):
        sys.exit('make_seeds.py: %s missing: run scripts/fuzz build first' % recorder)
    for interp in interpreters():
        with Started([interp['executable'], '-c', CODE_TARGET], env=run_env(interp)) as p:
            code, frame = p.line.split()
            subprocess.run([recorder, str(p.pid), code, frame, os.path.join(d, interp['name'])],
                           check=True)


# --- app_name: command lines, comm, exe and cgroup of real processes --------

TITLE_SCRIPT = """
import ctypes, sys
ctypes.CDLL(None).prctl(15, b"gunicorn: worker", 0, 0, 0)
sys.stdout.write("ready\\n"); sys.stdout.flush(); sys.stdin.read()
"""


def seeds_app_name(args):
    d = corpus_dir('app_name')
    tmp = tempfile.mkdtemp()
    try:
        script = os.path.join(tmp, 'app.py')
        pkg = os.path.join(tmp, 'pkg')
        os.makedirs(pkg)
        for path in (script, os.path.join(pkg, '__main__.py')):
            with open(path, 'w') as f:
                f.write(WAIT.replace('; ', '\n') + '\n')
        py = '/usr/bin/python3.11'
        runs = [
            ('script', [py, '-u', script, '--service=billing', '--app=shop']),
            ('module', [py, '-X', 'dev', '-m', 'pkg', 'worker', '-A', 'tasks']),
            ('dash-c', [py, '-c', WAIT, 'worker-17', '--nightly']),
            ('main-py', [py, os.path.join(pkg, '__main__.py')]),
            ('pyenv', ['/root/.pyenv/versions/3.12.1/bin/python3.12', '-OO', '-W', 'ignore', script]),
            ('renamed', [py, '-c', TITLE_SCRIPT]),
        ]
        for label, argv in runs:
            with Started(argv, cwd=tmp) as p:
                cmdline = p.read('cmdline')
                comm = p.read('comm').rstrip(b'\n')
                exe = os.readlink('/proc/%d/exe' % p.pid).encode()
                cgroup = p.read('cgroup')
            for rule in range(5):
                write_seed(d, '%s-rule%d' % (label, rule),
                           struct.pack('<BI', rule, len(cmdline)) + cmdline +
                           struct.pack('<B', len(comm)) + comm +
                           struct.pack('<H', len(exe)) + exe + cgroup)
    finally:
        shutil.rmtree(tmp)


# --- ring_record: records laid out by include/krait/abi.h -------------------

RING_GENERATOR = """
#include <stdio.h>
#include <string.h>
#include "krait/abi.h"
static unsigned char buf[sizeof(struct krait_sample) + 128 * 8 + 65536];
static void out(const char* dir, const char* name, const void* p, size_t n) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE* f = fopen(path, "wb");
  fwrite(p, 1, n, f);
  fclose(f);
}
int main(int argc, char** argv) {
  const char* dir = argv[1];
  struct krait_sample* s = (struct krait_sample*)buf;
  s->hdr.type = KRAIT_EVENT_SAMPLE; s->hdr.pid = 4242; s->hdr.tid = 4243; s->hdr.cpu = 1;
  s->hdr.ktime_ns = 123456789012ull;
  s->py_status = KRAIT_PY_OK; s->py_flags = KRAIT_PYF_GIL_KNOWN | KRAIT_PYF_GIL_HELD;
  s->py_nframes = 3; s->tstate = 0x7f0000001000ull; strcpy(s->comm, "python3.12");
  for (int i = 0; i < 3; ++i) {
    s->frames[i].code = 0x7f0000100000ull + 0x100 * i;
    s->frames[i].token = 0x9e3779b9u * (i + 1);
    s->frames[i].instr = 40 + 2 * i;
  }
  out(dir, "sample-python", buf, KRAIT_SAMPLE_SIZE(3, 0, 0));
  s->kernel_nframes = 4; s->native_flags = KRAIT_NATIVE_CAPTURED | KRAIT_NATIVE_RED_ZONE;
  s->user_stack_size = 512; s->user_regs.ip = 0x55555555a123ull; s->user_regs.sp = 0x7ffffffde000ull;
  unsigned long long* k = (unsigned long long*)(s->frames + 3);
  for (int i = 0; i < 4; ++i) k[i] = 0xffffffff81000000ull + 0x1000 * i;
  unsigned char* stack = (unsigned char*)(k + 4);
  for (int i = 0; i < 512; ++i) stack[i] = (unsigned char)(i * 7);
  out(dir, "sample-mixed", buf, KRAIT_SAMPLE_SIZE(3, 4, 512));
  s->py_nframes = 0; s->py_status = KRAIT_PY_NO_THREAD_STATE; s->kernel_nframes = 0;
  s->user_stack_size = 0; s->native_flags = KRAIT_NATIVE_NO_USER;
  out(dir, "sample-kernel-thread", buf, KRAIT_SAMPLE_SIZE(0, 0, 0));
  struct krait_proc_event e; memset(&e, 0, sizeof e);
  e.hdr.type = KRAIT_EVENT_EXEC; e.hdr.pid = 5000; strcpy(e.comm, "python3");
  e.identity.start_ns = 123456789000ull; e.identity.exec_id = 3;
  out(dir, "exec", &e, sizeof e);
  e.hdr.type = KRAIT_EVENT_EXIT;
  out(dir, "exit", &e, sizeof e);
  e.hdr.type = KRAIT_EVENT_PROC_UNKNOWN;
  out(dir, "unknown-process", &e, sizeof e);
  struct krait_code_event c; memset(&c, 0, sizeof c);
  c.hdr.type = KRAIT_EVENT_CODE; c.hdr.pid = 4242; c.code = 0x7f0000100000ull; c.token = 0x9e3779b9u;
  c.firstlineno = 12; memcpy(c.name, "method", 6); memcpy(c.file, "/srv/app.py", 11);
  c.linetable[0] = 0x80;
  out(dir, "code", &c, sizeof c);
  return 0;
}
"""


def seeds_ring_record(args):
    d = corpus_dir('ring_record')
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, 'gen.c')
        with open(src, 'w') as f:
            f.write(RING_GENERATOR)
        exe = os.path.join(tmp, 'gen')
        cc('-O1', '-I', os.path.join(ROOT, 'include'), '-o', exe, src)
        subprocess.run([exe, d], check=True)


# --- config_toml: the packaged configuration and the unit tests' texts ------

def seeds_config_toml(args):
    d = corpus_dir('config_toml')
    with open(os.path.join(ROOT, 'packaging/krait.toml'), 'rb') as f:
        write_seed(d, 'packaging-krait.toml', f.read())
    with open(os.path.join(ROOT, 'tests/unit/daemon/config_test.cpp')) as f:
        test = f.read()
    for i, text in enumerate(re.findall(r'R"\((.*?)\)"', test, re.S)):
        if '=' in text and '\n' in text:
            write_seed(d, 'config_test-%d.toml' % i, text.encode())


# --- http_reply: u64 now, a Retry-After value -------------------------------

def seeds_http_reply(args):
    d = corpus_dir('http_reply')
    now = 1700000000 - 946684800  # 2023-11-14 22:13:20 UTC, as the harness folds it
    values = ['120', '0', ' 3600 ', '999999999', 'Wed, 21 Oct 2015 07:28:00 GMT',
              'Sun, 06 Nov 2033 08:49:37 GMT', 'Sunday, 06-Nov-94 08:49:37 GMT',
              'Sun Nov  6 08:49:37 1994', 'Tue, 14 Nov 2023 22:13:21 GMT']
    for i, v in enumerate(values):
        write_seed(d, 'retry-after-%d' % i, struct.pack('<Q', now) + v.encode())


# --- pprof_import: gunzipped pprof of real recordings ------------------------

def seeds_pprof_import(args):
    """krait records chain.py and threads.py (python-only and mixed stacks);
    the seeds are the messages inside the .pb.gz files. Needs root and the
    plain build's krait (KRAIT_BINARY, default <repo>/build/src/cli/krait)."""
    d = corpus_dir('pprof_import')
    krait = os.environ.get('KRAIT_BINARY', os.path.join(ROOT, 'build', 'src', 'cli', 'krait'))
    workloads = os.path.join(ROOT, 'tests', 'workloads')
    runs = [('chain', ['chain.py', '--depth', '5'], ['--stacks', 'python']),
            ('chain-mixed', ['chain.py', '--depth', '5'], []),
            ('threads-mixed', ['threads.py'], [])]
    with tempfile.TemporaryDirectory() as tmp:
        for label, script, flags in runs:
            with Started([sys.executable, os.path.join(workloads, script[0])] + script[1:]) as w:
                out = os.path.join(tmp, label + '.pb.gz')
                subprocess.run([krait, 'record', '-p', str(w.pid), '-d', '1', '-r', '49', '-o', out]
                               + flags, check=True, stderr=subprocess.DEVNULL)
            with gzip.open(out, 'rb') as f:
                write_seed(d, label + '.pb', f.read())


def seeds_asyncio_tasks(args):
    """Task lists laid out as sid's 3.14 and 3.15 lay them out (the memory
    the unit tests of python/asyncio_tasks build): a thread with a running
    loop and two tasks, one named by its number and one by a str, one
    awaiting the other, each with a suspended coroutine."""
    d = corpus_dir('asyncio_tasks')
    code_type, tstate, interp = 0xc0de, 0x10000, 0x90000
    coro_t, str_t, int_t, fut_t, task_t = 0x20000, 0x20400, 0x20800, 0x20c00, 0x21000

    def block(size, fields):
        b = bytearray(size)
        for at, fmt, value in fields:
            struct.pack_into('<' + fmt, b, at, value)
        return bytes(b)

    for flags, running_loop, running_task, head, interp_head in ((0, 864, 872, 880, 10880),
                                                                 (1, 1024, 1032, 1048, 10856)):
        regions = []
        for at, flags_t, name in ((coro_t, 0, b'coroutine'), (str_t, 1 << 28, b'str'),
                                  (int_t, 1 << 24, b'int'), (fut_t, 0, b'_asyncio.Future'),
                                  (task_t, 0, b'_asyncio.Task')):
            regions.append((at, block(176, [(24, 'Q', at + 0x200), (168, 'Q', flags_t)])))
            regions.append((at + 0x200, name + b'\0' * (16 - len(name) % 16)))
        for at, line in ((0x30000, 1), (0x30100, 2)):
            regions.append((at, block(48, [(8, 'Q', code_type), (16, 'Q', at + 0x10000),
                                           (24, 'Q', at + 0x20000), (32, 'Q', at + 0x30000),
                                           (40, 'I', line)])))
        t1, t2, c1, c2, n1, n2, fut = 0x40000, 0x41000, 0x50000, 0x51000, 0x60000, 0x61000, 0x70000
        # The thread: loop, no running task, the list head -> t1 -> t2 -> head.
        regions.append((tstate + running_loop,
                        block(head + 16 - running_loop,
                              [(0, 'Q', 0x5000), (running_task - running_loop, 'Q', 0),
                               (head - running_loop, 'Q', t1 + 152),
                               (head + 8 - running_loop, 'Q', t2 + 152)])))
        regions.append((interp + interp_head, block(16, [(0, 'Q', interp + interp_head)])))
        for task, nxt, name, coro, awaited_by in ((t1, t2 + 152, n1, c1, 0),
                                                  (t2, tstate + head, n2, c2, t1)):
            regions.append((task, block(168, [(8, 'Q', task_t), (16, 'Q', 0x5000),
                                              (96, 'Q', awaited_by), (104, 'i', 0), (108, 'B', 1),
                                              (120, 'Q', fut), (128, 'Q', coro), (136, 'Q', name),
                                              (152, 'Q', nxt), (160, 'Q', 0)])))
        regions.append((n1, block(32, [(8, 'Q', int_t), (16, 'Q', 1 << 3), (24, 'I', 7)])))
        regions.append((n2, block(56, [(8, 'Q', str_t), (16, 'q', 6), (32, 'I', 0x64)]) [:48] + b'worker\0'))
        for coro, code in ((c1, 0x30000), (c2, 0x30100)):
            regions.append((coro, block(120, [(8, 'Q', coro_t), (48, 'b', -1 if flags == 0 else 2),
                                              (72, 'Q', code), (80, 'i', 4), (84, 'B', 1),
                                              (88, 'Q', coro + 112), (104, 'Q', fut),
                                              (96, 'Q', fut)])))
        regions.append((fut, block(32, [(8, 'Q', fut_t)])))
        data = struct.pack('<B', flags | 2) + b'\0' * 104
        data += struct.pack('<QQQB', code_type, tstate, interp, len(regions))
        for at, b in regions:
            data += struct.pack('<QI', at, len(b)) + b
        write_seed(d, 'sid-3.1%d-two-tasks' % (4 + flags), data)


SEEDERS = {
    'asyncio_tasks': seeds_asyncio_tasks,
    'line_table': seeds_line_table,
    'proc_maps': seeds_proc_maps,
    'proc_cgroup': seeds_proc_cgroup,
    'offset_table': seeds_offset_table,
    'debug_offsets': seeds_debug_offsets,
    'elf_file': seeds_elf_file,
    'cfi_table': seeds_cfi_table,
    'unwinder': seeds_unwinder,
    'dwarf_file': seeds_dwarf_file,
    'code_reader': seeds_code_reader,
    'app_name': seeds_app_name,
    'ring_record': seeds_ring_record,
    'config_toml': seeds_config_toml,
    'http_reply': seeds_http_reply,
    'pprof_import': seeds_pprof_import,
}



def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--fuzz-build', default=os.environ.get('KRAIT_FUZZ_BUILD_DIR',
                                                               os.path.join(ROOT, 'build-fuzz')))
    parser.add_argument('names', nargs='+')
    args = parser.parse_args()
    names = sorted(SEEDERS) if args.names == ['all'] else args.names
    for name in names:
        if name not in SEEDERS:
            sys.exit('make_seeds.py: no harness named %s (known: %s)' % (name, ' '.join(sorted(SEEDERS))))
        SEEDERS[name](args)
        files = os.listdir(os.path.join(FUZZ, name, 'corpus'))
        total = sum(os.path.getsize(os.path.join(FUZZ, name, 'corpus', f)) for f in files)
        print('%s: %d seeds, %d bytes' % (name, len(files), total))


if __name__ == '__main__':
    main()
