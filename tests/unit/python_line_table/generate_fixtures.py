#!/usr/bin/env python
# -*- coding: utf-8 -*-
"""Writes the CPython line-table fixtures that line_table_test checks against.

Each fixture holds, for a few hundred real code objects compiled by one
interpreter (stdlib modules plus synthetic code with big forward and backward
line jumps, decorators, multi-line expressions, comprehensions, generators,
lambdas, try/except/finally, very long functions), the raw line table bytes,
co_firstlineno, the bytecode size, and that interpreter's own answer for the
line at every offset:
  addr2line  CPython's C function PyCode_Addr2Line, called through ctypes;
  dis        the Python-level API: dis.findlinestarts() before 3.10,
             co_lines() in 3.10, co_positions() from 3.11.
Offsets are every byte for 2.7 (instructions have 1 or 3 bytes) and every
code unit (2 bytes) from 3.6, so every instruction start is covered.

Runs unchanged under CPython 2.7 and 3.6+.

Usage (from anywhere; --out defaults to fixtures/ beside this script):
  python generate_fixtures.py [--out DIR]
      one fixture, for the interpreter running the script:
      DIR/cpython-<major>.<minor>.<micro>.lines.gz
  python3 generate_fixtures.py --all [--out DIR]
      runs itself under every interpreter it knows: the pyenv versions
      ($(pyenv root)/versions/*/bin/python), /usr/bin/python3.11, and every
      entry of /var/cache/krait/pythons/interpreters.json (the Debian-unstable
      3.14/3.15 builds; each entry's "env" is applied to its run).
  python3 generate_fixtures.py --python EXE [--env NAME=VALUE ...] [--out DIR]
      runs itself under one more interpreter, with extra environment, e.g.
      --python PREFIX/usr/bin/python3.14 --env PYTHONHOME=PREFIX/usr

Fixture format (gzip'd ASCII, one record per line, fields separated by spaces):
  krait-line-table-fixture 1
  python <major.minor.micro>
  code <label> <co_firstlineno> <bytecode bytes> <offset step> <table hex or ->
  <oracle> <line>[x<count>] ...   lines at offsets 0, step, 2*step, ... (-1 = none)
  <oracle> same                   identical to the addr2line row of this code
  end <number of code records>
"""
from __future__ import print_function

import binascii
import gzip
import importlib
import io
import json
import os
import subprocess
import sys

MANIFEST = '/var/cache/krait/pythons/interpreters.json'
PYENV_VERSIONS = ['2.7.18', '3.6.15', '3.7.16', '3.8.18', '3.9.18', '3.10.13', '3.11.7',
                  '3.12.1', '3.13.0']
SYSTEM_PYTHONS = ['/usr/bin/python3.11']

STDLIB_MODULES = ['textwrap', 'difflib', 'argparse', 'json.decoder', 'json.encoder', 'shlex',
                  'fnmatch', 'posixpath', 'tokenize']


def gap(n):
    return '\n' * n


def long_line_source():
    items = ', '.join(['a'] * 300)
    calls = ', '.join(['a + %d' % i for i in range(120)])
    return ('def long_line(a, f):\n'
            '    x = [' + items + ']\n'
            '    return f(' + calls + ')\n')


def long_function_source():
    # More than 64 KiB of bytecode in every version, so jumps need EXTENDED_ARG,
    # with line deltas of 1 and a few irregular gaps.
    body = []
    for i in range(1500):
        body.append('        x = f(x, x); x = f(x, x); x = f(x, x)\n')
        if i % 97 == 0:
            body.append(gap(i % 7 + 1))
    return ('def long_function(x, f):\n'
            '    if x:\n' + ''.join(body) + '    else:\n'
            '        x = 0\n'
            '    return x\n')


# (name, minimum version, source). Sources use only syntax valid from the
# minimum version on; 2.7 compiles the (2, 7) ones.
SNIPPETS = [
    ('big_gaps', (2, 7),
     'def big_gaps(a):\n'
     '    x = a + 1\n' + gap(130) +
     '    y = x * 2\n' + gap(300) +
     '    z = y - 3\n' + gap(5000) +
     '    w = z\n' + gap(140000) +
     '    return w\n'),
    ('far_first_line', (2, 7),
     gap(70000) + 'def far(a):\n'
     '    return a\n'),
    ('backward_jumps', (2, 7),
     'def backward_jumps(n):\n'
     '    total = 0\n'
     '    while n > 0:\n'
     '        n -= 1\n' + gap(300) +
     '        total += n\n'
     '    for i in range(3):\n' + gap(140) +
     '        total += i\n'
     '    else:\n'
     '        total -= 1\n'
     '    return total\n'),
    ('multiline_call', (2, 7),
     'def multiline_call(f, a, b):\n'
     '    return f(\n'
     '        a,\n' + gap(300) +
     '        b,\n'
     '    )\n'
     'def multiline_expr(a, b, c):\n'
     '    x = (a +\n'
     '         b *\n' + gap(150) +
     '         c)\n'
     '    y = [a,\n'
     '         b,\n'
     '         c]\n'
     '    return {\n'
     '        "a": a,\n'
     '        "b": (b\n'
     '              if a else\n'
     '              c),\n'
     '    }\n'),
    ('decorators', (2, 7),
     'def deco(*args):\n'
     '    def wrap(f):\n'
     '        return f\n'
     '    return wrap\n'
     '\n'
     '@deco(\n'
     '    1,\n'
     '    2)\n'
     '@deco(3)\n'
     'def decorated(x):\n'
     '    return x\n'
     '\n'
     '@deco(\n' + gap(140) +
     '    4)\n'
     'class Decorated(object):\n'
     '    @staticmethod\n'
     '    def s(x):\n'
     '        return x\n'
     '    @property\n'
     '    def p(self):\n'
     '        return 1\n'
     '    @deco(5,\n'
     '          6)\n'
     '    def m(self, a,\n'
     '          b=lambda: 7):\n'
     '        return a\n'),
    ('functional', (2, 7),
     'square = lambda x: x * x\n'
     'multi_lambda = lambda x: (x +\n'
     '                          1)\n'
     'def comprehensions(xs):\n'
     '    a = [x for x in xs if x]\n'
     '    b = set(x for x in xs)\n'
     '    c = {x: x for x in xs}\n'
     '    d = [y\n'
     '         for x in xs\n'
     '         for y in range(x)\n'
     '         if y % 2]\n'
     '    e = {x\n'
     '         for x in xs}\n'
     '    return a, b, c, d, e\n'
     'def gen(n):\n'
     '    i = 0\n'
     '    while i < n:\n'
     '        yield i\n'
     '        i += 1\n'
     '    yield (i\n'
     '           + 1)\n'
     'def outer(a):\n'
     '    def middle(b):\n'
     '        def inner(c):\n'
     '            return a + b + c\n'
     '        return inner\n'
     '    class Inner(object):\n'
     '        def method(self):\n'
     '            return a\n'
     '    return middle, Inner\n'),
    ('control_flow', (2, 7),
     'def exceptions(f):\n'
     '    try:\n'
     '        f()\n'
     '    except ValueError as e:\n'
     '        return e\n'
     '    except (KeyError, TypeError):\n'
     '        pass\n'
     '    else:\n'
     '        f()\n'
     '    finally:\n'
     '        f()\n'
     '    try:\n'
     '        try:\n'
     '            f()\n'
     '        finally:\n'
     '            f()\n'
     '    except Exception:\n'
     '        raise\n'
     '    with open("x") as g, open("y") as h:\n'
     '        g.read()\n'
     '        h.read()\n'
     '    return 1\n'
     'def branches(a, b):\n'
     '    if a < b < 10:\n'
     '        r = 1\n'
     '    elif a:\n'
     '        r = 2\n'
     '    else:\n'
     '        r = 3\n'
     '    while a:\n'
     '        a -= 1\n'
     '        if a == 5:\n'
     '            break\n'
     '        if a == 7:\n'
     '            continue\n'
     '    else:\n'
     '        r += 1\n'
     '    assert r, (\n'
     '        "message")\n'
     '    del b\n'
     '    global G\n'
     '    G = r\n'
     '    return (r if a\n'
     '            else -r)\n'),
    ('long_line', (2, 7), long_line_source()),
    ('long_function', (2, 7), long_function_source()),
    ('py3_basics', (3, 3),
     'def py3(a, *, b=1, **kw):\n'
     '    def counter():\n'
     '        nonlocal a\n'
     '        a += 1\n'
     '        return a\n'
     '    try:\n'
     '        counter()\n'
     '    except KeyError as e:\n'
     '        raise ValueError(\n'
     '            "bad") from e\n'
     '    yield from range(\n'
     '        b)\n'),
    ('async', (3, 5),
     'async def agen(x, y):\n'
     '    async with x as a:\n'
     '        await a\n'
     '    async for i in y:\n' + gap(200) +
     '        await i\n'
     '    return x @ y\n'),
    ('fstrings', (3, 6),
     'async def acomp(xs):\n'
     '    return [x async for x in xs]\n'
     'def fstrings(a, b):\n'
     '    n: int = 3\n'
     '    return f"{a}-{b!r}-{a + b:>{n}}" + f"""\n'
     '    {a}\n'
     '    {b}\n'
     '    """\n'),
    ('walrus', (3, 8),
     'def walrus(xs, /, y):\n'
     '    if (n := len(xs)) > 3:\n'
     '        return [z for x in xs if (z := x + y)]\n'
     '    return n\n'),
    ('match', (3, 10),
     'def matcher(p):\n'
     '    match p:\n'
     '        case [x, y, *rest]:\n'
     '            return x\n'
     '        case {"k": v}:\n' + gap(140) +
     '            return v\n'
     '        case Point(x=0) | None:\n'
     '            return 0\n'
     '        case _:\n'
     '            return p\n'),
    ('exception_groups', (3, 11),
     'def groups(f):\n'
     '    try:\n'
     '        f()\n'
     '    except* ValueError:\n'
     '        pass\n'
     '    except* (KeyError, TypeError) as eg:\n'
     '        f(eg)\n'),
    ('type_params', (3, 12),
     'type Alias[T] = list[T]\n'
     'def first[T](xs: list[T]) -> T:\n'
     '    return xs[0]\n'
     'class Box[T]:\n'
     '    def get(self) -> T:\n'
     '        return f"{"nested"}"\n'),
]


def code_objects(code, prefix):
    """Depth-first, in co_consts order, so every run yields the same list."""
    qualname = getattr(code, 'co_qualname', code.co_name)
    label = prefix + ':' + qualname.replace(' ', '_')
    yield label, code
    for const in code.co_consts:
        if hasattr(const, 'co_code'):
            for item in code_objects(const, prefix):
                yield item


def stdlib_sources():
    for name in STDLIB_MODULES:
        module = importlib.import_module(name)
        path = module.__file__
        if path.endswith(('.pyc', '.pyo')):
            path = path[:-1]
        with io.open(path, 'rb') as f:
            yield name, path, f.read()


def addr2line_function():
    try:
        import ctypes
    except ImportError:
        return None
    func = ctypes.pythonapi.PyCode_Addr2Line
    func.argtypes = [ctypes.py_object, ctypes.c_int]
    func.restype = ctypes.c_int
    return func


def line_table(code):
    if sys.version_info >= (3, 10):
        return code.co_linetable
    return code.co_lnotab


def dis_lines(code, offsets):
    """The line at each offset according to the dis-level API."""
    if sys.version_info >= (3, 11):
        positions = list(code.co_positions())
        lines = []
        for offset in offsets:
            line = positions[offset // 2][0]
            lines.append(-1 if line is None else line)
        return lines
    if sys.version_info >= (3, 10):
        ranges = list(code.co_lines())
        lines = []
        for offset in offsets:
            found = -1
            for start, end, line in ranges:
                if start <= offset < end:
                    found = -1 if line is None else line
                    break
            lines.append(found)
        return lines
    import dis
    starts = list(dis.findlinestarts(code))
    lines = []
    index = 0
    current = -1
    for offset in offsets:
        while index < len(starts) and starts[index][0] <= offset:
            current = starts[index][1]
            index += 1
        lines.append(current)
    return lines


def rle(values):
    out = []
    i = 0
    while i < len(values):
        j = i
        while j < len(values) and values[j] == values[i]:
            j += 1
        count = j - i
        out.append('%d' % values[i] if count == 1 else '%dx%d' % (values[i], count))
        i = j
    return ' '.join(out)


def build_records():
    records = []
    for name, minimum, source in SNIPPETS:
        if sys.version_info[:2] < minimum:
            continue
        code = compile(source, '<krait:%s>' % name, 'exec', 0, True)
        records.extend(code_objects(code, name))
    for name, path, source in stdlib_sources():
        code = compile(source, path, 'exec', 0, True)
        records.extend(code_objects(code, name))
    return records


def write_fixture(out_dir):
    addr2line = addr2line_function()
    version = '%d.%d.%d' % sys.version_info[:3]
    step = 1 if sys.version_info < (3, 6) else 2
    lines = ['krait-line-table-fixture 1', 'python ' + version]
    records = build_records()
    mismatches = 0
    for label, code in records:
        table = line_table(code)
        size = len(code.co_code)
        hex_table = binascii.hexlify(table).decode('ascii') or '-'
        lines.append('code %s %d %d %d %s' % (label, code.co_firstlineno, size, step, hex_table))
        offsets = list(range(0, size, step))
        from_dis = dis_lines(code, offsets)
        if addr2line is not None:
            from_c = [addr2line(code, offset) for offset in offsets]
            lines.append('addr2line ' + rle(from_c))
            if from_dis == from_c:
                lines.append('dis same')
            else:
                mismatches += 1
                lines.append('dis ' + rle(from_dis))
        else:
            lines.append('dis ' + rle(from_dis))
    lines.append('end %d' % len(records))
    if not os.path.isdir(out_dir):
        os.makedirs(out_dir)
    path = os.path.join(out_dir, 'cpython-%s.lines.gz' % version)
    with open(path, 'wb') as raw:
        # mtime=0 and no file name keep the output byte-identical across runs.
        with gzip.GzipFile(filename='', mode='wb', compresslevel=9, fileobj=raw, mtime=0) as f:
            f.write(('\n'.join(lines) + '\n').encode('ascii'))
    print('%s: %d code objects, %d where dis and PyCode_Addr2Line disagree%s -> %s' %
          (version, len(records), mismatches, '' if addr2line else ' (no ctypes: dis only)', path))


def pyenv_root():
    root = os.environ.get('PYENV_ROOT')
    if root:
        return root
    try:
        return subprocess.check_output(['pyenv', 'root']).decode().strip()
    except (OSError, subprocess.CalledProcessError):
        return os.path.expanduser('~/.pyenv')


def manifest_interpreters():
    """(executable, env) pairs from the provisioning manifest, if it exists."""
    if not os.path.exists(MANIFEST):
        return []
    with open(MANIFEST) as f:
        data = json.load(f)
    entries = data
    if isinstance(data, dict):
        entries = data.get('interpreters', data)
        if isinstance(entries, dict):
            entries = list(entries.values())
    found = []
    for entry in entries:
        exe = None
        for key in ('executable', 'python', 'path', 'bin', 'exe'):
            if isinstance(entry, dict) and isinstance(entry.get(key), str):
                exe = entry[key]
                break
        if exe is None:
            raise SystemExit('%s: cannot find the executable of entry %r; run this script with '
                             '--python EXE --env NAME=VALUE instead' % (MANIFEST, entry))
        found.append((exe, dict(entry.get('env') or {})))
    return found


def run_under(exe, extra_env, out_dir):
    env = dict(os.environ)
    env.update(extra_env)
    cmd = [exe, os.path.abspath(__file__), '--out', out_dir]
    print('running', ' '.join(cmd), ' '.join('%s=%s' % kv for kv in sorted(extra_env.items())))
    return subprocess.call(cmd, env=env)


def main(argv):
    out_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixtures')
    run_all = False
    pythons = []
    extra_env = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == '--out':
            out_dir = os.path.abspath(argv[i + 1])
            i += 1
        elif arg == '--all':
            run_all = True
        elif arg == '--python':
            pythons.append(argv[i + 1])
            i += 1
        elif arg == '--env':
            name, _, value = argv[i + 1].partition('=')
            extra_env[name] = value
            i += 1
        else:
            raise SystemExit('unknown argument %r; see the usage at the top of %s' % (arg, __file__))
        i += 1
    if not run_all and not pythons:
        write_fixture(out_dir)
        return 0
    targets = [(exe, extra_env) for exe in pythons]
    if run_all:
        root = pyenv_root()
        for version in PYENV_VERSIONS:
            targets.append((os.path.join(root, 'versions', version, 'bin', 'python'), {}))
        targets.extend((exe, {}) for exe in SYSTEM_PYTHONS)
        targets.extend(manifest_interpreters())
    failed = [exe for exe, env in targets if run_under(exe, env, out_dir) != 0]
    if failed:
        print('FAILED under: ' + ', '.join(failed))
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
