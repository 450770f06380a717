#!/usr/bin/env python3
"""Checks an Autobahn-style report (the index.json kosoku writes) and
summarizes it; optionally rewrites the summary in a Markdown file.

Usage: autobahn-report.py OUTDIR [--docs FILE --marker NAME --command CMD]

The bar (docs/conformance.md): no case FAILED; every case of sections 1-10
ends OK, NON-STRICT or INFORMATIONAL; UNIMPLEMENTED only in sections 12-13
(permessage-deflate compression, not negotiated by tickwire). Exits 1 when
the report misses the bar, after printing why.

With --docs, the text between `<!-- NAME:begin -->` and `<!-- NAME:end -->`
in FILE is replaced by the summary: the tool and version, CMD, a table of
counts per section, and the cases that are not OK.
"""

import argparse
import importlib.metadata
import json
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

PASSING = {"OK", "NON-STRICT", "INFORMATIONAL"}
COLUMNS = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]
# Sections whose cases may be UNIMPLEMENTED: compression.
COMPRESSION = {12, 13}


def case_key(case_id):
    return tuple(int(part) for part in case_id.split("."))


def verdict(entry):
    """A case's single verdict: FAILED if either part failed, else the
    weaker of its behaviour and close behaviour."""
    both = {entry["behavior"], entry["behaviorClose"]}
    for result in ["FAILED", "UNIMPLEMENTED", "NON-STRICT", "INFORMATIONAL"]:
        if result in both:
            return result
    return "OK"


def load(outdir):
    index = json.loads((outdir / "index.json").read_text())
    if len(index) != 1:
        sys.exit(f"expected one agent in {outdir}/index.json, got {sorted(index)}")
    (cases,) = index.values()
    if not any(case_key(case_id)[0] <= 10 for case_id in cases):
        sys.exit(f"{outdir}/index.json has no case of sections 1-10")
    return {case_id: verdict(entry) for case_id, entry in cases.items()}, cases


def problems(verdicts):
    found = []
    for case_id, result in sorted(verdicts.items(), key=lambda kv: case_key(kv[0])):
        section = case_key(case_id)[0]
        if result == "FAILED":
            found.append(f"{case_id}: FAILED")
        elif result == "UNIMPLEMENTED" and section not in COMPRESSION:
            found.append(f"{case_id}: UNIMPLEMENTED outside sections 12-13")
        elif section <= 10 and result not in PASSING:
            found.append(f"{case_id}: {result}")
    return found


def ranges(case_ids):
    """Groups case ids by subsection: `12.1.1-12.1.18 (18)`."""
    groups = defaultdict(list)
    for case_id in case_ids:
        groups[case_key(case_id)[:-1]].append(case_id)
    parts = []
    for _, ids in sorted(groups.items()):
        ids.sort(key=case_key)
        if len(ids) == 1:
            parts.append(ids[0])
        else:
            parts.append(f"{ids[0]}-{ids[-1]} ({len(ids)})")
    return ", ".join(parts)


def summary(outdir, verdicts, cases, command):
    per_section = defaultdict(Counter)
    for case_id, result in verdicts.items():
        per_section[case_key(case_id)[0]][result] += 1
    version = importlib.metadata.version("kosoku")
    lines = [
        f"Tool: kosoku {version} (`pip install kosoku=={version}`), "
        "playing the Autobahn fuzzing server. Command (runs it all and "
        "checks the report):",
        "",
        "```sh",
        command,
        "```",
        "",
        "| section | cases | " + " | ".join(COLUMNS) + " |",
        "|---|---|" + "---|" * len(COLUMNS),
    ]
    total = Counter()
    for section in sorted(per_section):
        counts = per_section[section]
        total += counts
        cells = [str(counts[c]) for c in COLUMNS]
        lines.append(f"| {section} | {sum(counts.values())} | " + " | ".join(cells) + " |")
    cells = [str(total[c]) for c in COLUMNS]
    lines.append(f"| all | {sum(total.values())} | " + " | ".join(cells) + " |")
    lines.append("")
    for result in ["UNIMPLEMENTED", "NON-STRICT", "INFORMATIONAL"]:
        ids = [c for c, r in verdicts.items() if r == result]
        if not ids:
            lines.append(f"{result}: none.")
        elif result == "UNIMPLEMENTED":
            lines.append(f"{result}: {ranges(ids)}.")
        else:
            lines.append(f"{result}:")
            lines.append("")
            for case_id in sorted(ids, key=case_key):
                report = json.loads((outdir / cases[case_id]["reportfile"]).read_text())
                lines.append(f"- {case_id} ({report.get('description', '').strip()}): "
                             f"{report.get('result', '').strip()}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def update_docs(path, marker, text):
    begin, end = f"<!-- {marker}:begin -->", f"<!-- {marker}:end -->"
    doc = path.read_text()
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    if not pattern.search(doc):
        sys.exit(f"{path} has no {begin} ... {end} block")
    path.write_text(pattern.sub(lambda _: f"{begin}\n{text}{end}", doc))
    print(f"updated {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--docs", type=Path)
    parser.add_argument("--marker")
    parser.add_argument("--command", default="")
    args = parser.parse_args()
    verdicts, cases = load(args.outdir)
    text = summary(args.outdir, verdicts, cases, args.command)
    print(text)
    found = problems(verdicts)
    if found:
        print(f"{len(found)} cases miss the bar:", *found, sep="\n  ")
        sys.exit(1)
    if args.docs:
        update_docs(args.docs, args.marker, text)


if __name__ == "__main__":
    main()
