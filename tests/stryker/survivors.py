#!/usr/bin/env python3
"""Lists the mutants a Stryker.NET run left alive (Survived, NoCoverage), one line each: file, line, status, mutator,
the replacement and the source line (tests/README.md, Mutation testing).

usage: survivors.py mutation-report.json [PATH-REGEX]   (e.g. '/Relay/')"""
import json, re, sys
d = json.load(open(sys.argv[1]))
only = re.compile(sys.argv[2]) if len(sys.argv) > 2 else None
for fn, f in sorted(d['files'].items()):
    if '/tests/' in fn or (only and not only.search(fn)): continue
    src = f['source'].splitlines()
    for m in sorted(f['mutants'], key=lambda m: m['location']['start']['line']):
        if m['status'] not in ('Survived', 'NoCoverage'): continue
        line = m['location']['start']['line']
        print(f"{re.sub(r'.*/src/KaDeploy/', '', fn)}:{line} {m['status']} {m['mutatorName']} | "
              f"{m.get('replacement', '')[:80]!r} | {src[line - 1].strip()[:100]}")
