#!/usr/bin/env python3
"""Writes a pax tar with Python's tarfile from a JSON list of entries:
make_tar.py OUT.tar '[{"name": "a", "type": "file", "data": "text", ...}]'.
Keys: name, type (file|dir|symlink|hardlink|chr|fifo), data (text, or
"size": N for N bytes of a pattern, "zero": [[offset, length], ...] to zero
ranges of it), link, mode (default 0o644 / 0o755).
tarfile writes names as given, so `../x` and `/abs` reach the archive."""
import io, json, sys, tarfile

TYPES = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
         "hardlink": tarfile.LNKTYPE, "chr": tarfile.CHRTYPE, "fifo": tarfile.FIFOTYPE}

out, entries = sys.argv[1], json.loads(sys.argv[2])
with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as t:
    for e in entries:
        i = tarfile.TarInfo(e["name"])
        i.type = TYPES[e.get("type", "file")]
        i.mode = e.get("mode", 0o755 if i.type == tarfile.DIRTYPE else 0o644)
        i.mtime = e.get("mtime", 1700000000)
        i.linkname = e.get("link", "")
        i.devmajor, i.devminor = e.get("major", 1), e.get("minor", 3)
        if i.type == tarfile.REGTYPE:
            if "size" in e:
                data = bytearray((n * 7 + n // 251) % 256 for n in range(e["size"]))
                for off, n in e.get("zero", []):
                    data[off:off + n] = bytes(n)
                data = bytes(data)
            else:
                data = e.get("data", "").encode()
            i.size = len(data)
            t.addfile(i, io.BytesIO(data))
        else:
            t.addfile(i)
