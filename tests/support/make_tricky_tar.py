#!/usr/bin/env python3
"""Writes a tar full of corner cases with Python's tarfile (an implementation
independent of ours): make_tricky_tar.py OUT.tar pax|gnu."""
import io, sys, tarfile

out, fmt = sys.argv[1], sys.argv[2]
PAX = fmt == "pax"
t = tarfile.open(out, "w", format=tarfile.PAX_FORMAT if PAX else tarfile.GNU_FORMAT)

def add(name, type=tarfile.REGTYPE, data=b"", mode=0o644, uid=0, gid=0, mtime=1700000000,
        link="", major=0, minor=0, pax=None):
    i = tarfile.TarInfo(name)
    i.type, i.mode, i.uid, i.gid, i.mtime, i.linkname = type, mode, uid, gid, mtime, link
    i.devmajor, i.devminor = major, minor
    if pax:
        i.pax_headers = pax
    if type == tarfile.REGTYPE:
        i.size = len(data)
        t.addfile(i, io.BytesIO(data))
    else:
        t.addfile(i)

add("./", tarfile.DIRTYPE, mode=0o755)
add("./etc", tarfile.DIRTYPE, mode=0o755)
deep = "./deep/" + "/".join(f"level{i:02d}-" + "x" * 20 for i in range(6))
add(deep + "/long-file-name-" + "y" * 120, data=b"long name\n")
add("./etc/long-symlink", tarfile.SYMTYPE, mode=0o777, link="/" + "z" * 150 + "/target")
add("./usr/bin/suidprog", data=b"#!/bin/sh\necho suid\n", mode=0o4755, uid=0, gid=0)
# A hard link entry carrying other metadata: must not change the target.
add("./usr/bin/suidlink", tarfile.LNKTYPE, mode=0o644, uid=1234, gid=1234, mtime=1, link="./usr/bin/suidprog")
add(deep + "/hardlink-to-long", tarfile.LNKTYPE, link=deep + "/long-file-name-" + "y" * 120)
add("./etc/dup", data=b"first\n", mode=0o600)
add("./etc/dup", data=b"second, longer\n", mode=0o640, uid=7, gid=8)
add("./missing/parents/here/file", data=b"parents\n")
add("./home/big-ids", data=b"ids\n", uid=70000, gid=4000000000)
if PAX:
    add("./time/old", data=b"old\n", pax={"mtime": "-86400.5"})
    add("./time/future", data=b"2100\n", pax={"mtime": "4102444800.25"})
    cap = bytes.fromhex("0100000200200000000000000000000000000000")  # cap_net_raw+ep, VFS_CAP_REVISION_2
    acl = bytes.fromhex("02000000" "01000600ffffffff" "02000500d2040000" "04000400ffffffff"
                        "10000500ffffffff" "20000400ffffffff")
    add("./usr/bin/ping", data=b"ping\n", mode=0o755, pax={
        "SCHILY.xattr.security.capability": cap.decode("utf-8", "surrogateescape"),
        "SCHILY.xattr.user.comment": "hello=world\n",
        "SCHILY.xattr.system.posix_acl_access": acl.decode("utf-8", "surrogateescape")})
    add("./var/log/journal", tarfile.DIRTYPE, mode=0o2755, pax={
        "SCHILY.acl.default": "user::rwx\ngroup::r-x\ngroup:4:r-x\nmask::r-x\nother::r-x\n"})
else:
    add("./time/old", data=b"old\n", mtime=-86400)
    add("./time/future", data=b"2100\n", mtime=4102444800)
add("./dev/null", tarfile.CHRTYPE, mode=0o666, major=1, minor=3)
add("./dev/sda1", tarfile.BLKTYPE, mode=0o660, gid=6, major=8, minor=1)
add("./dev/bigminor", tarfile.CHRTYPE, mode=0o600, major=240, minor=70000)
add("./run/fifo", tarfile.FIFOTYPE, mode=0o600)
add("./etc/rel-symlink", tarfile.SYMTYPE, mode=0o777, link="../usr/bin/suidprog")
for i in range(3000):
    add(f"./many/f{i:04d}", data=f"{i}\n".encode())
big = bytes(range(256)) * (40 * 1024 * 1024 // 256) + b"tail"
add("./big/forty-mb", data=big)
add("./after-big", data=b"after\n")
t.close()
