#!/usr/bin/env python3
"""Lists a tar (any compression) with Python's tarfile, an independent reader,
as one JSON object per member, in archive order:
{"path", "type", "mode", "uid", "gid", "secs", "nsec", "size", "link",
 "major", "minor", "xattrs": {name: hex}, "acl_access", "acl_default", "sha256"}.
Paths lose a leading "./" or "/"; xattrs come from SCHILY.xattr.* records."""
import decimal, hashlib, json, sys, tarfile

def norm(p):
    while p.startswith("./") or p.startswith("/"):
        p = p[2:] if p.startswith("./") else p[1:]
    return "" if p == "." else p.rstrip("/")

def main(path, with_hash):
    with tarfile.open(path) as t:
        for m in t:
            mt = m.pax_headers.get("mtime")
            if mt is not None:
                d = decimal.Decimal(mt)
                secs = int(d.to_integral_value(rounding=decimal.ROUND_FLOOR))
                nsec = int(((d - secs) * 1_000_000_000).to_integral_value(rounding=decimal.ROUND_FLOOR))
            else:
                secs, nsec = int(m.mtime), 0
            types = {tarfile.REGTYPE: "file", tarfile.AREGTYPE: "file", tarfile.CONTTYPE: "file",
                     tarfile.DIRTYPE: "dir", tarfile.SYMTYPE: "symlink", tarfile.LNKTYPE: "hardlink",
                     tarfile.CHRTYPE: "chr", tarfile.BLKTYPE: "blk", tarfile.FIFOTYPE: "fifo"}
            rec = {
                "path": norm(m.name), "type": types.get(m.type, repr(m.type)), "mode": m.mode & 0o7777,
                "uid": m.uid, "gid": m.gid, "secs": secs, "nsec": nsec, "size": m.size,
                "link": norm(m.linkname) if m.type == tarfile.LNKTYPE else m.linkname,
                "major": m.devmajor, "minor": m.devminor,
                "xattrs": {k[len("SCHILY.xattr."):]: v.encode("utf-8", "surrogateescape").hex()
                           for k, v in m.pax_headers.items() if k.startswith("SCHILY.xattr.")},
                "acl_access": m.pax_headers.get("SCHILY.acl.access"),
                "acl_default": m.pax_headers.get("SCHILY.acl.default"),
            }
            if with_hash and m.isfile():
                h = hashlib.sha256()
                f = t.extractfile(m)
                while True:
                    b = f.read(1 << 20)
                    if not b:
                        break
                    h.update(b)
                rec["sha256"] = h.hexdigest()
            print(json.dumps(rec, sort_keys=True))

if __name__ == "__main__":
    main(sys.argv[1], "--hash" in sys.argv[2:])
