#!/usr/bin/python3
"""Dump a registry hive with python3-hivex (libhivex), an independent parser.

Output format (one line each, keys in on-disk order, values sorted by name):
  <key path>
  <key path>\t<value name as hex of UTF-8>\t<type>\t<data hex>
The same format as drivers::hive::Hive::export, so dumps can be diffed.
Used by the drivers crate tests; needs the Debian package python3-hivex.
"""
import sys
import hivex

def main(path):
    h = hivex.Hivex(path)
    out = sys.stdout.buffer
    stack = [(h.root(), "")]
    while stack:
        node, p = stack.pop()
        out.write(p.encode("utf-8", "surrogatepass") + b"\n")
        vals = []
        for v in h.node_values(node):
            name = h.value_key(v)
            t, data = h.value_value(v)
            vals.append((name, t, data))
        vals.sort(key=lambda x: x[0])
        for name, t, data in vals:
            out.write(("%s\t%s\t%d\t%s\n" % (p, name.encode("utf-8", "surrogatepass").hex(), t, data.hex())).encode("utf-8", "surrogatepass"))
        children = h.node_children(node)
        for c in reversed(children):
            n = h.node_name(c)
            stack.append((c, n if p == "" else p + "\\" + n))

if __name__ == "__main__":
    main(sys.argv[1])
