"""Puts a generated table into a markdown file: standard input replaces what
stands between `<!-- NAME:begin -->` and `<!-- NAME:end -->`, or is appended
under a `## TITLE` heading with those markers when the file has none. The
table is printed too.

Usage: python3 bench/doc_section.py DOC NAME TITLE < table.md
"""

import os
import re
import sys

doc, name, title = sys.argv[1:]
table = sys.stdin.read().rstrip("\n")
print(table)
begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
text = open(doc).read() if os.path.exists(doc) else ""
section = f"{begin}\n{table}\n{end}"
if begin in text and end in text:
    text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: section, text, flags=re.S)
else:
    text = text.rstrip("\n") + f"\n\n## {title}\n\n{section}\n"
open(doc, "w").write(text)
