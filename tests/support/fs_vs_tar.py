#!/usr/bin/env python3
"""Compares an ext4 image with the tar it was made from, entry by entry:
fs_vs_tar.py TAR IMAGE.

The expected tree comes from Python's tarfile (independent of imgbuild's
reader), with extraction semantics: a later entry for a path replaces the
earlier one (a directory over a directory keeps its children), missing
parents are created, a hard link names the target's inode and leaves its
metadata alone. The image side comes only from debugfs, in a few batched
runs (`debugfs -f CMDFILE`), addressing inodes by number so no path needs
quoting:
  1. `ls -p <ino>` per directory, level by level: every name, its inode,
     mode, uid and gid;
  2. `stat <ino>` per inode (links, times, sizes, devices, fast symlink
     targets, xattr names) and `dump <ino> FILE` per regular file (sha256);
  3. `ea_get -x <ino> NAME` per xattr (debugfs translates POSIX ACLs back to
     the kernel's xattr form) and `dump` of slow symlinks.
Checked per path: presence (no extra or missing names except /lost+found),
type, permission bits incl. set-uid/set-gid/sticky, uid/gid (32-bit), size,
content hash, symlink target, device major/minor, mtime (seconds and, when the
tar has them, nanoseconds), xattr names and values, POSIX ACLs compared as
entry sets (getfacl semantics: the id of base entries is ignored), and that
hard links are one inode with the right link count. Prints mismatches and
exits 1, else prints a one-line JSON summary and exits 0."""
import decimal, hashlib, json, os, re, subprocess, sys, tarfile, tempfile

ACL_USER_OBJ, ACL_USER, ACL_GROUP_OBJ, ACL_GROUP, ACL_MASK, ACL_OTHER = 1, 2, 4, 8, 0x10, 0x20
TYPES = {0o040000: "dir", 0o100000: "file", 0o120000: "symlink", 0o020000: "chr",
         0o060000: "blk", 0o010000: "fifo", 0o140000: "socket"}


def parts(name):
    return [p for p in name.split(b"/") if p not in (b"", b".")]


def tar_mtime(m):
    mt = m.pax_headers.get("mtime")
    if mt is None:
        return int(m.mtime), None
    d = decimal.Decimal(mt)
    secs = int(d.to_integral_value(rounding=decimal.ROUND_FLOOR))
    nsec = int(((d - secs) * 1_000_000_000).to_integral_value(rounding=decimal.ROUND_FLOOR))
    return secs, nsec


def acl_entries_from_xattr(value):
    """Kernel xattr form (version 2, {u16 tag, u16 perm, u32 id}) -> entry set."""
    if len(value) < 4 or int.from_bytes(value[:4], "little") != 2 or (len(value) - 4) % 8:
        return ("malformed", value.hex())
    out = set()
    for i in range(4, len(value), 8):
        tag = int.from_bytes(value[i:i + 2], "little")
        perm = int.from_bytes(value[i + 2:i + 4], "little")
        ident = int.from_bytes(value[i + 4:i + 8], "little")
        out.add((tag, ident if tag in (ACL_USER, ACL_GROUP) else None, perm))
    return frozenset(out)


def acl_entries_from_text(text, users, groups):
    """getfacl/setfacl text (as GNU tar and star store it) -> entry set."""
    tags = {"user": ACL_USER_OBJ, "u": ACL_USER_OBJ, "group": ACL_GROUP_OBJ, "g": ACL_GROUP_OBJ,
            "mask": ACL_MASK, "m": ACL_MASK, "other": ACL_OTHER, "o": ACL_OTHER}
    out = set()
    for raw in re.split(r"[,\n]", text):
        e = raw.split("#")[0].strip()
        if not e:
            continue
        f = e.split(":")
        tag, qual, perms = tags[f[0]], f[1], f[2]
        perm = sum(b for c, b in zip("rwx", (4, 2, 1)) if c in perms)
        ident = None
        if qual:
            tag = ACL_USER if tag == ACL_USER_OBJ else ACL_GROUP
            if len(f) > 3 and f[3].isdigit():
                ident = int(f[3])
            elif qual.isdigit():
                ident = int(qual)
            else:
                ident = (users if tag == ACL_USER else groups)[qual]
        out.add((tag, ident, perm))
    return frozenset(out)


def id_map(data):
    out = {}
    for line in (data or b"").decode("utf-8", "replace").splitlines():
        f = line.split(":")
        if len(f) > 2 and f[2].isdigit():
            out.setdefault(f[0], int(f[2]))
    return out


class Model:
    """The tree a tar extracts to: nested dicts of names, inodes by key."""

    def __init__(self):
        self.inodes = {"root": {"type": "dir", "implicit": True}}
        self.root = {"key": "root", "children": {}}
        self.pending_acls = []
        self.user_db = {}

    def parent(self, ps, what):
        node = self.root
        for i, p in enumerate(ps[:-1]):
            child = node["children"].get(p)
            if child is None:
                key = ("implicit", b"/".join(ps[:i + 1]))
                self.inodes[key] = {"type": "dir", "implicit": True}
                child = {"key": key, "children": {}}
                node["children"][p] = child
            elif "children" not in child:
                raise SystemExit(f"model: {what}: parent {p!r} is not a directory")
            node = child
        return node

    def lookup(self, ps):
        node = self.root
        for p in ps:
            node = node.get("children", {}).get(p)
            if node is None:
                return None
        return node

    def add(self, index, m):
        name = m.name.encode("utf-8", "surrogateescape")
        ps = parts(name)
        if m.islnk():
            target = self.lookup(parts(m.linkname.encode("utf-8", "surrogateescape")))
            if target is None or "children" in target:
                raise SystemExit(f"model: hard link {name!r} to a missing path or a directory")
            self.parent(ps, name)["children"][ps[-1]] = {"key": target["key"]}
            return
        kind = {tarfile.DIRTYPE: "dir", tarfile.SYMTYPE: "symlink", tarfile.CHRTYPE: "chr",
                tarfile.BLKTYPE: "blk", tarfile.FIFOTYPE: "fifo"}.get(m.type)
        if kind is None and m.isreg():
            kind = "file"
        if kind is None:
            raise SystemExit(f"model: {name!r}: unsupported tar type {m.type!r}")
        secs, nsec = tar_mtime(m)
        attrs = {"type": kind, "mode": m.mode & 0o7777, "uid": m.uid, "gid": m.gid,
                 "secs": secs, "nsec": nsec, "xattrs": {}, "acls": {}, "name": name}
        for k, v in m.pax_headers.items():
            if k.startswith("SCHILY.xattr."):
                attrs["xattrs"][k[len("SCHILY.xattr."):]] = v.encode("utf-8", "surrogateescape")
        for key, xname, default in (("SCHILY.acl.access", "system.posix_acl_access", False),
                                    ("SCHILY.acl.default", "system.posix_acl_default", True)):
            text = m.pax_headers.get(key)
            if text is not None and xname not in attrs["xattrs"]:
                self.pending_acls.append((attrs, xname, text, default))
        if kind == "file":
            attrs["size"] = m.size
        elif kind == "symlink":
            attrs["target"] = m.linkname.encode("utf-8", "surrogateescape")
            attrs["size"] = len(attrs["target"])
        elif kind in ("chr", "blk"):
            attrs["dev"] = (m.devmajor, m.devminor)
        key = ("entry", index)
        if not ps:
            if kind != "dir":
                raise SystemExit(f"model: {name!r} names the root and is not a directory")
            self.inodes[self.root["key"]] = attrs
            return attrs
        parent = self.parent(ps, name)
        old = parent["children"].get(ps[-1])
        if kind == "dir" and old is not None and "children" in old:
            self.inodes[old["key"]] = attrs  # metadata replaced, children kept
            return attrs
        self.inodes[key] = attrs
        node = {"key": key}
        if kind == "dir":
            node["children"] = {}
        parent["children"][ps[-1]] = node
        return attrs

    def resolve_acls(self):
        users = id_map(self.user_db.get(b"etc/passwd"))
        groups = id_map(self.user_db.get(b"etc/group"))
        for attrs, xname, text, default in self.pending_acls:
            entries = acl_entries_from_text(text, users, groups)
            # An access ACL of only the three base entries is just the mode.
            if entries and (default or len(entries) > 3):
                attrs["acls"][xname] = entries

    def walk(self):
        stack = [(b"", self.root)]
        while stack:
            path, node = stack.pop()
            yield path, node
            for name, child in node.get("children", {}).items():
                stack.append((path + b"/" + name, child))


def read_tar(path):
    model = Model()
    with tarfile.open(path, encoding="utf-8", errors="surrogateescape") as t:
        for index, m in enumerate(t):
            attrs = model.add(index, m)
            if attrs is not None and attrs["type"] == "file":
                h = hashlib.sha256()
                f = t.extractfile(m)
                data = b""
                while True:
                    b = f.read(1 << 20)
                    if not b:
                        break
                    h.update(b)
                    if len(data) < (1 << 20):
                        data += b
                attrs["sha256"] = h.hexdigest()
                key = b"/".join(parts(m.name.encode("utf-8", "surrogateescape")))
                if key in (b"etc/passwd", b"etc/group"):
                    model.user_db[key] = data
    model.resolve_acls()
    return model


def debugfs(image, cmds):
    """Runs the commands in one debugfs process; returns each one's output lines."""
    with tempfile.NamedTemporaryFile("w", suffix=".cmds", delete=False) as f:
        f.write("\n".join(cmds) + "\n")
        cmdfile = f.name
    try:
        r = subprocess.run(["debugfs", "-f", cmdfile, image], capture_output=True)
    finally:
        os.unlink(cmdfile)
    errors = [l for l in r.stderr.decode("utf-8", "replace").splitlines()
              if l.strip() and not l.startswith("debugfs ")]
    if r.returncode != 0 or errors:
        raise SystemExit(f"debugfs failed ({r.returncode}): {errors[:20]}")
    blocks = []
    for line in r.stdout.split(b"\n"):
        if line.startswith(b"debugfs: "):
            blocks.append([])
        elif blocks:
            blocks[-1].append(line)
    if len(blocks) != len(cmds):
        raise SystemExit(f"debugfs answered {len(blocks)} of {len(cmds)} commands")
    return blocks


def parse_ls(lines):
    out = []
    for line in lines:
        if not line.startswith(b"/"):
            continue
        ino, mode, uid, gid, rest = line[1:].split(b"/", 4)
        name = rest[:rest.rindex(b"/", 0, len(rest) - 1)]
        if name in (b".", b"..") or ino == b"0":  # 0: unused space in a block
            continue
        out.append((name, int(ino), int(mode, 8), int(uid) % 2**32, int(gid) % 2**32))
    return out


def decode_time(hexpair):
    lo, extra = (int(x, 16) for x in hexpair.split(":"))
    secs = (lo - 2**32 if lo >= 2**31 else lo) + ((extra & 3) << 32)
    return secs, extra >> 2


def parse_stat(lines):
    s = {"xattrs": []}
    in_xattrs = False
    for raw in lines:
        line = raw.decode("utf-8", "surrogateescape")
        if in_xattrs:
            m = re.match(r"  (\S+) \((\d+)\)", line)
            if m:
                s["xattrs"].append(m.group(1))
                continue
            in_xattrs = False
        if line.startswith("Extended attributes:"):
            in_xattrs = True
        elif m := re.match(r"Inode: (\d+)\s+Type: (.+?)\s+Mode:\s+(\d+)", line):
            s["ino"], s["mode"] = int(m.group(1)), int(m.group(3), 8)
        elif m := re.match(r"User:\s+(-?\d+)\s+Group:\s+(-?\d+).*Size: (\d+)", line):
            s["uid"], s["gid"] = int(m.group(1)) % 2**32, int(m.group(2)) % 2**32
            s["size"] = int(m.group(3))
        elif m := re.match(r"Links: (\d+)", line):
            s["links"] = int(m.group(1))
        elif m := re.match(r"\s*mtime: 0x([0-9a-f]+:[0-9a-f]+)", line):
            s["mtime"] = decode_time(m.group(1))
        elif m := re.search(r"Device major/minor number: (\d+):(\d+)", line):
            s["dev"] = (int(m.group(1)), int(m.group(2)))
        elif raw.startswith(b'Fast link dest: "'):
            s["target"] = raw[len(b'Fast link dest: "'):raw.rindex(b'"')]
    return s


def parse_ea_get(lines):
    text = b" ".join(lines).decode()
    m = re.match(r"\s*\S+ \((\d+)\) = ((?:[0-9a-f]{2} ?)*)", text)
    if not m:
        raise SystemExit(f"cannot parse ea_get output {text!r}")
    value = bytes.fromhex(m.group(2).replace(" ", ""))
    if len(value) != int(m.group(1)):
        raise SystemExit(f"ea_get length mismatch in {text!r}")
    return value


def read_image(image, workdir):
    paths = {}
    level = [(b"", 2)]
    paths[b""] = (2, 0o040000, None, None)
    while level:
        blocks = debugfs(image, [f"ls -p <{ino}>" for _, ino in level])
        nxt = []
        for (path, _), lines in zip(level, blocks):
            for name, ino, mode, uid, gid in parse_ls(lines):
                p = path + b"/" + name
                paths[p] = (ino, mode, uid, gid)
                if mode & 0o170000 == 0o040000:
                    nxt.append((p, ino))
        level = nxt
    inos = sorted({v[0] for v in paths.values()})
    kinds = {v[0]: TYPES.get(v[1] & 0o170000) for v in paths.values()}
    cmds = [f"stat <{i}>" for i in inos]
    files = [i for i in inos if kinds[i] == "file"]
    cmds += [f"dump <{i}> {workdir}/{i}" for i in files]
    blocks = debugfs(image, cmds)
    stats = {i: parse_stat(b) for i, b in zip(inos, blocks)}
    root = stats[2]
    paths[b""] = (2, 0o040000 | root["mode"], root["uid"], root["gid"])
    for i in files:
        h = hashlib.sha256()
        with open(f"{workdir}/{i}", "rb") as f:
            while b := f.read(1 << 20):
                h.update(b)
        stats[i]["sha256"] = h.hexdigest()
        os.unlink(f"{workdir}/{i}")
    cmds, want = [], []
    for i in inos:
        for x in stats[i]["xattrs"]:
            cmds.append(f"ea_get -x <{i}> {x}")
            want.append(("x", i, x))
        if kinds[i] == "symlink" and "target" not in stats[i]:
            cmds.append(f"dump <{i}> {workdir}/{i}")
            want.append(("l", i, None))
    if cmds:
        for (what, i, x), lines in zip(want, debugfs(image, cmds)):
            if what == "x":
                stats[i].setdefault("values", {})[x] = parse_ea_get(lines)
            else:
                with open(f"{workdir}/{i}", "rb") as f:
                    stats[i]["target"] = f.read()
                os.unlink(f"{workdir}/{i}")
    return paths, stats


def compare(model, paths, stats):
    bad = []
    summary = {"paths": 0, "files": 0, "dirs": 0, "symlinks": 0, "devices": 0, "fifos": 0,
               "hardlink_groups": 0, "xattrs": 0, "acls": 0, "bytes": 0}
    expected = dict(model.walk())
    for p in sorted(set(paths) - set(expected)):
        if p != b"/lost+found":
            bad.append(f"{p!r}: in the image, not in the tar")
    names_of = {}
    for p, node in expected.items():
        names_of.setdefault(node["key"], []).append(p)
    used_inos = set()
    for key, names in sorted(names_of.items(), key=lambda kv: kv[1][0]):
        first = sorted(names)[0]
        present = [n for n in names if n in paths]
        for n in sorted(set(names) - set(present)):
            bad.append(f"{n!r}: in the tar, not in the image")
        if not present:
            continue
        inos = {paths[n][0] for n in present}
        if len(inos) != 1:
            bad.append(f"{first!r}: hard links {sorted(names)} are inodes {sorted(inos)}")
            continue
        ino = inos.pop()
        if ino in used_inos:
            bad.append(f"{first!r}: shares inode {ino} with another tar entry")
        used_inos.add(ino)
        a, s = model.inodes[key], stats[ino]
        _, mode, uid, gid = paths[first]
        kind = TYPES.get(mode & 0o170000)
        summary["paths"] += len(names)
        def check(what, want, got):
            if want != got:
                bad.append(f"{first!r}: {what}: tar {want!r}, image {got!r}")
        check("type", a["type"], kind)
        if kind != a["type"]:
            continue
        if kind == "dir":
            summary["dirs"] += 1
            subdirs = sum(1 for c in expected[first]["children"].values() if "children" in c)
            if first == b"" and b"/lost+found" in paths and b"lost+found" not in expected[first]["children"]:
                subdirs += 1
            check("link count", 2 + subdirs, s["links"])
        else:
            check("link count", len(names), s["links"])
            if len(names) > 1:
                summary["hardlink_groups"] += 1
        if a.get("implicit"):
            continue
        check("mode", oct(a["mode"]), oct(mode & 0o7777))
        check("stat mode", oct(a["mode"]), oct(s["mode"]))
        check("uid", a["uid"], uid)
        check("gid", a["gid"], gid)
        check("stat uid/gid", (a["uid"], a["gid"]), (s["uid"], s["gid"]))
        secs, nsec = s["mtime"]
        check("mtime", (a["secs"], a["nsec"] or 0), (secs, nsec))
        if kind == "file":
            summary["files"] += 1
            summary["bytes"] += a["size"]
            check("size", a["size"], s["size"])
            check("sha256", a["sha256"], s.get("sha256"))
        elif kind == "symlink":
            summary["symlinks"] += 1
            check("symlink target", a["target"], s.get("target"))
            check("size", a["size"], s["size"])
        elif kind in ("chr", "blk"):
            summary["devices"] += 1
            check("device", a["dev"], s.get("dev"))
        elif kind == "fifo":
            summary["fifos"] += 1
        values = s.get("values", {})
        want_names = set(a["xattrs"]) | set(a["acls"])
        check("xattr names", sorted(want_names), sorted(values))
        for x, v in values.items():
            if x.startswith("system.posix_acl_"):
                want = a["acls"].get(x)
                if want is None and x in a["xattrs"]:
                    want = acl_entries_from_xattr(a["xattrs"][x])
                check(f"ACL {x}", want and sorted(want, key=str), sorted(acl_entries_from_xattr(v), key=str))
                summary["acls"] += 1
            else:
                check(f"xattr {x}", a["xattrs"].get(x), v)
                summary["xattrs"] += 1
    return bad, summary


def main(tar, image):
    model = read_tar(tar)
    with tempfile.TemporaryDirectory(prefix="fs_vs_tar.") as work:
        paths, stats = read_image(image, work)
    bad, summary = compare(model, paths, stats)
    for b in bad[:100]:
        print("MISMATCH", b)
    if bad:
        print(f"{len(bad)} mismatches")
        sys.exit(1)
    print(json.dumps(summary, sort_keys=True))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
