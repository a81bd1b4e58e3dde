#!/usr/bin/env python3
"""Turn bench/cluster's raw rows (TSV) into a table, JSON and a gnuplot PNG.

Ratios are against figures measured in the same run: the link-rate limit
(payload bytes / port rate) and the plain-TCP baseline for the same payload
and N (nc chain for raw data, the seed's tar-over-nc chain for the OS tree).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

BASELINE = {"raw": "nc-chain", "os-tree": "seed-tar-chain", "tree": "seed-tar-chain"}
KA_VS_BASELINE = {"ka-chain", "ka-tree2", "ka-files", "ka-files-zstd"}


def fnum(s):
    try:
        return float(s)
    except (TypeError, ValueError):
        return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tsv", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--stamp", required=True)
    ap.add_argument("--rate", required=True)
    ap.add_argument("--rate-bps", type=int, required=True)
    ap.add_argument("--size-bytes", type=int, required=True)
    ap.add_argument("--tree-bytes", type=int, default=0)
    ap.add_argument("--machine", default="")
    ap.add_argument("--ka-buffer", type=int, default=64 << 20)
    ap.add_argument("--ka", default="")
    ap.add_argument("--tree-label", default="os-tree")
    a = ap.parse_args()

    rows = []
    with open(a.tsv) as f:
        for line in f:
            p = line.rstrip("\n").split("\t")
            p += [""] * (8 - len(p))
            payload, method, n, secs, status, rss, limit, note = p[:8]
            rows.append({
                "payload": payload, "method": method, "nodes": int(n),
                "seconds": fnum(secs), "status": status,
                "limit_seconds": fnum(limit),
                "peak_rss_kib": int(rss) if rss.isdigit() else None,
                "note": note,
            })
    by = {(r["payload"], r["method"], r["nodes"]): r for r in rows}
    for r in rows:
        s, lim = r["seconds"], r["limit_seconds"]
        if r["status"] != "ok":
            s = None  # no ratios for a failed row: its time is not a deployment's
        r["ratio_to_limit"] = round(s / lim, 3) if s and lim else None
        base = BASELINE.get(r["payload"])
        b = by.get((r["payload"], base, r["nodes"]))
        r["baseline"] = base
        r["ratio_to_baseline"] = (round(s / b["seconds"], 3)
                                  if s and b and b["seconds"] and b["status"] == "ok" else None)

    # Issue 3's targets, judged only where ka-deploy rows exist.
    targets = []
    buf_kib = a.ka_buffer // 1024
    for r in rows:
        if r["status"] == "not built":
            continue
        if r["payload"] == "raw" and r["method"] == "ka-chain":
            ok = (r["status"] == "ok" and r["ratio_to_baseline"] is not None
                  and r["ratio_to_baseline"] <= 1.03 and r["ratio_to_limit"] <= 1.08)
            targets.append({"target": f"ka-chain N={r['nodes']}: <=1.03x nc chain and <=1.08x limit", "met": ok})
        if r["method"].startswith("ka-") and r["peak_rss_kib"] is not None:
            ok = r["peak_rss_kib"] < buf_kib + 65536
            targets.append({"target": f"{r['payload']} {r['method']} N={r['nodes']}: peak client RSS < buffer+64MiB ({buf_kib + 65536} KiB)", "met": ok})
        if r["payload"] in ("os-tree", "tree") and r["method"] == "ka-files-zstd":
            ok = (r["status"] == "ok" and r["ratio_to_limit"] is not None and r["ratio_to_limit"] < 1
                  and r["ratio_to_baseline"] is not None and r["ratio_to_baseline"] < 1)
            targets.append({"target": f"os-tree zstd N={r['nodes']}: faster than tar-size limit and than seed tar chain", "met": ok})
    chain = sorted((r for r in rows if r["payload"] == "raw" and r["method"] == "ka-chain"
                    and r["status"] == "ok"), key=lambda r: r["nodes"])
    if len(chain) >= 2 and chain[0]["nodes"] == 1:
        t1, tn = chain[0]["seconds"], chain[-1]["seconds"]
        targets.append({"target": f"ka-chain time at N={chain[-1]['nodes']} <= 1.05x time at N=1",
                        "met": tn <= 1.05 * t1})

    os.makedirs(a.out, exist_ok=True)
    base = os.path.join(a.out, f"cluster-{a.stamp}")
    doc = {
        "date": a.stamp, "machine": a.machine, "rate": a.rate, "rate_bps": a.rate_bps,
        "raw_size_bytes": a.size_bytes, "tree_tar_bytes": a.tree_bytes, "tree_label": a.tree_label,
        "ka_deploy": a.ka or None, "ka_buffer_bytes": a.ka_buffer,
        "timing": "receivers started first; clock from sender start to last receiver done "
                  "(ka-deploy: server start to server exit)",
        "rows": rows, "targets": targets,
    }
    with open(base + ".json", "w") as f:
        json.dump(doc, f, indent=2)

    out = sys.stdout
    print(f"\n{a.machine}", file=out)
    print(f"rate {a.rate} per port, both directions; raw payload {a.size_bytes} B random"
          + (f"; {a.tree_label} {a.tree_bytes} B as tar" if a.tree_bytes else ""), file=out)
    hdr = f"{'payload':8} {'method':15} {'N':>3} {'time s':>8} {'limit s':>8} {'x limit':>8} {'x base':>7} {'RSS MiB':>8}  status"
    print(hdr, file=out)
    print("-" * len(hdr), file=out)
    for r in sorted(rows, key=lambda r: (r["payload"] != "raw", r["nodes"], r["method"])):
        def f(v, fmt):
            return format(v, fmt) if v is not None else "-"
        rss = r["peak_rss_kib"] / 1024 if r["peak_rss_kib"] is not None else None
        print(f"{r['payload']:8} {r['method']:15} {r['nodes']:>3} {f(r['seconds'], '8.2f'):>8} "
              f"{f(r['limit_seconds'], '8.2f'):>8} {f(r['ratio_to_limit'], '8.3f'):>8} "
              f"{f(r['ratio_to_baseline'], '7.3f'):>7} {f(rss, '8.1f'):>8}  {r['status']}"
              + (f"  [{r['note']}]" if r['note'] and r['status'] != 'ok' else ""), file=out)
    if targets:
        print("\nissue 3 targets:", file=out)
        for t in targets:
            print(f"  {'MET   ' if t['met'] else 'MISSED'} {t['target']}", file=out)
    print(f"\nJSON: {base}.json", file=out)

    # One plot per payload: time against N, one line per method, limit dashed.
    for payload in sorted({r["payload"] for r in rows}):
        prow = [r for r in rows if r["payload"] == payload]
        methods = [m for m in dict.fromkeys(r["method"] for r in prow)
                   if any(r["seconds"] for r in prow if r["method"] == m)]
        if not methods:
            continue
        lim = next((r["limit_seconds"] for r in prow if r["limit_seconds"]), None)
        png = f"{base}-{payload}.png"
        with tempfile.TemporaryDirectory() as td:
            plots = []
            for m in methods:
                dat = os.path.join(td, m + ".dat")
                with open(dat, "w") as f:
                    for r in sorted(prow, key=lambda r: r["nodes"]):
                        if r["method"] == m and r["seconds"]:
                            f.write(f"{r['nodes']} {r['seconds']}\n")
                plots.append(f"'{dat}' using 1:2 with linespoints lw 2 title '{m}'")
            if lim:
                plots.append(f"{lim} with lines dashtype 2 lw 2 lc rgb 'black' title 'link-rate limit ({lim:.2f} s)'")
            ns = sorted({r["nodes"] for r in prow})
            script = f"""
set terminal pngcairo size 1100,600
set output '{png}'
set title "{payload} payload to N nodes, {a.rate} per port"
set xlabel 'nodes (N)'
set ylabel 'wall time (s)'
set logscale x 2
set xrange [{ns[0] / 1.3}:{ns[-1] * 1.3}]
set xtics ({', '.join(str(n) for n in ns)})
set yrange [0:*]
set key outside right top box
set grid
plot {', '.join(plots)}
"""
            try:
                subprocess.run(["gnuplot"], input=script, text=True, check=True)
                print(f"PNG:  {png}", file=out)
            except (OSError, subprocess.CalledProcessError) as e:
                print(f"gnuplot failed: {e}", file=sys.stderr)


if __name__ == "__main__":
    main()
