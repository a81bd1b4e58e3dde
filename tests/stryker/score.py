#!/usr/bin/env python3
"""Mutation score per folder and per file from a Stryker.NET mutation-report.json (tests/README.md).

usage: score.py mutation-report.json [REGEX]
With REGEX, a mutant counts as killed only if a test whose name matches killed it, and as not covered if no
matching test covers it: the score that test set alone would get (needs a run with "disable-bail": true).
score = (killed + timeout) / (killed + timeout + survived + no coverage); compile errors and ignored left out."""
import json, sys, re, collections
# usage: score.py report.json [subset-regex]   (subset: count a mutant killed only if a killing test's name matches;
# NoCoverage if no covering test matches; static mutants keep their status)
d = json.load(open(sys.argv[1]))
sub = re.compile(sys.argv[2]) if len(sys.argv) > 2 else None
names = {}
for tf in d.get('testFiles', {}).values():
    for t in tf.get('tests', []):
        names[t['id']] = t['name']
def ok(ids): return any(sub.search(names.get(i, i)) for i in ids)
per = collections.OrderedDict(); folders = collections.defaultdict(collections.Counter)
for fn, f in sorted(d['files'].items()):
    if '/tests/' in fn: continue
    c = collections.Counter()
    for m in f['mutants']:
        st = m['status']
        if st in ('CompileError', 'Ignored'): continue
        if sub is not None and st in ('Killed', 'Timeout', 'Survived', 'NoCoverage'):
            if st in ('Killed', 'Timeout'):
                kb = m.get('killedBy') or []
                if kb and not ok(kb):
                    st = 'Survived' if ok(m.get('coveredBy') or []) else 'NoCoverage'
            if st == 'Survived' and not ok(m.get('coveredBy') or []): st = 'NoCoverage'
        c[st] += 1
    if not c: continue
    short = re.sub(r'.*/src/KaDeploy/', '', fn)
    per[short] = c
    folders[short.split('/')[0]] += c
def line(name, c):
    k = c['Killed'] + c['Timeout']; tot = k + c['Survived'] + c['NoCoverage']
    return f"{name:40s} tested {k + c['Survived']:4d}  killed {k:4d} (timeout {c['Timeout']:3d})  survived {c['Survived']:4d}  nocov {c['NoCoverage']:4d}  score {100.0*k/tot if tot else 0:5.1f} %"
for f, c in folders.items(): print(line(f + '/', c))
for f, c in per.items(): print(line(f, c))
