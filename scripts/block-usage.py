#!/usr/bin/env python3
"""Usage: scripts/block-usage.py RAW [ROOT_START_MIB]

How densely a disk's data fills 1 MiB blocks, the unit a dynamic VHDX stores
(docs/performance.md, "VHDX size"). RAW is a sparse raw disk, for example
`qemu-img convert -O raw -S 4k out/x-kvm.qcow2 disk.raw`. For each 1 MiB block
holding data, counts the non-zero 4 KiB pages; prints the data, the waste (the
stored blocks' zero pages), the VHDX size this implies (blocks + 4 MiB of
headers, log, BAT and metadata) and every block wasting more than 16 pages,
with its ext4 block and group when it lies in the root partition
(ROOT_START_MIB, default 257: imgbuild's layout with the default ESP)."""
import os, sys
f = open(sys.argv[1], 'rb'); fd = f.fileno()
ROOT = int(sys.argv[2]) if len(sys.argv) > 2 else 257
MIB = 1 << 20
blocks = set(); off = 0
while True:
    try: d = os.lseek(fd, off, os.SEEK_DATA)
    except OSError: break
    h = os.lseek(fd, d, os.SEEK_HOLE)
    blocks.update(range(d // MIB, (h - 1) // MIB + 1)); off = h
tot = waste = nblocks = 0; rows = []
for b in sorted(blocks):
    f.seek(b * MIB); data = f.read(MIB)
    nz = sum(1 for i in range(0, MIB, 4096) if data[i:i + 4096].count(0) != 4096)
    if nz == 0: continue
    nblocks += 1; tot += nz; waste += 256 - nz
    if 256 - nz > 16: rows.append((b, nz))
print(f"stored 1MiB blocks {nblocks}; data {tot/256:.2f} MiB; waste {waste/256:.2f} MiB; "
      f"vhdx ~{nblocks+4} MiB = data {100*((nblocks+4)/(tot/256)-1):+.2f}%")
for b, nz in rows:
    where = f"disk MiB {b} (before root)" if b < ROOT else f"ext4 blk {(b-ROOT)*256} group {(b-ROOT)*256//32768}"
    print(f"  MiB {b}: {nz} non-zero pages  {where}")
