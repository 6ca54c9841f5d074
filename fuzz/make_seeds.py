#!/usr/bin/env python3
"""Writes the seed corpus for the tar_reader target into corpus/tar_reader:
small GNU, pax and ustar archives with every entry kind, and the pax one
compressed with gzip, zstd and xz; and hostile ones (issue 14): bombs (a
header claiming 8 GiB over 8 MiB of zeros, gzip; 64 MiB of zeros, zstd;
both past the target's unpack bound) and paths past PATH_MAX (one just over
4096 bytes, plain; one 50,000 directories deep, gzip). Every seed is at most
a few KB. Run from fuzz/: python3 make_seeds.py"""
import gzip, io, os, subprocess, tarfile

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

# Bombs: tiny archives that inflate far past the target's unpack bound
# (UnpackLimit::for_disk(4 MiB) = 4.5 MiB).
header = tarfile.TarInfo("zeros")
header.size = 0o77777777777  # 8 GiB - 1: the largest octal size field
with open(f"{out}/seed-bomb.tar.gz", "wb") as f:
    f.write(gzip.compress(header.tobuf(tarfile.USTAR_FORMAT) + bytes(8 << 20), 9, mtime=0))
with open(f"{out}/seed-bomb.tar.zst", "wb") as f:
    zeros = subprocess.run(["zstd", "-19", "-c"], input=bytes(64 << 20), stdout=subprocess.PIPE, check=True)
    f.write(zeros.stdout)

# Paths past PATH_MAX (4096 bytes): just over it, and 50,000 directories deep.
def deep_tar(path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        t.addfile(tarfile.TarInfo(path), io.BytesIO(b""))
    return buf.getvalue()
with open(f"{out}/seed-deep-4097.tar", "wb") as f:
    f.write(deep_tar("a/" * 2047 + "bbc"))
with open(f"{out}/seed-deep-50000.tar.gz", "wb") as f:
    f.write(gzip.compress(deep_tar("d/" * 50000 + "f"), 9, mtime=0))
