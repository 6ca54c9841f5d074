#!/usr/bin/env python3
"""Writes the seed corpus for the tar_reader target into corpus/tar_reader:
small GNU, pax and ustar archives with every entry kind, and the pax one
compressed with gzip, zstd and xz. Run from fuzz/: python3 make_seeds.py"""
import io, os, subprocess, tarfile

out = "corpus/tar_reader"
os.makedirs(out, exist_ok=True)
for fmt, name in [(tarfile.GNU_FORMAT, "gnu"), (tarfile.PAX_FORMAT, "pax"), (tarfile.USTAR_FORMAT, "ustar")]:
    with tarfile.open(f"{out}/seed-{name}.tar", "w", format=fmt) as t:
        def add(n, type=tarfile.REGTYPE, data=b"", link="", **kw):
            i = tarfile.TarInfo(n)
            i.type, i.linkname = type, link
            i.size = len(data) if type == tarfile.REGTYPE else 0
            for k, v in kw.items():
                setattr(i, k, v)
            t.addfile(i, io.BytesIO(data) if type == tarfile.REGTYPE else None)
        add("./etc", tarfile.DIRTYPE, mode=0o755)
        add("./etc/a", data=b"hello\n", mode=0o4755, uid=70000 if fmt != tarfile.USTAR_FORMAT else 7)
        add("./etc/l", tarfile.LNKTYPE, link="./etc/a")
        add("./etc/s", tarfile.SYMTYPE, link="../x" * (40 if fmt != tarfile.USTAR_FORMAT else 3))
        add("./dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3)
        add("./p", tarfile.FIFOTYPE)
        if fmt == tarfile.PAX_FORMAT:
            i = tarfile.TarInfo("./x")
            i.pax_headers = {"SCHILY.xattr.user.a": "b", "mtime": "-1.5",
                             "SCHILY.acl.access": "user::rwx,user:5:r--,group::r-x,mask::r-x,other::---"}
            t.addfile(i, io.BytesIO(b""))
for tool in ["gzip", "zstd", "xz"]:
    with open(f"{out}/seed-pax.tar.{tool}", "wb") as f:
        subprocess.run([tool, "-c", f"{out}/seed-pax.tar"], stdout=f, check=True)
