//! The writer's single pass: number inodes, place every block, encode every
//! inode, then the group descriptors, bitmaps and superblocks.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use imgbuild_formats::{ReadAt, VirtualDisk, VirtualDiskBuilder};

use super::alloc::{Allocator, Full, Layout};
use super::dir::{self, ftype, Entry, Hasher};
use super::extent_tree::{self, consecutive, Mapped};
use super::group::{self, GroupState, BG_BLOCK_UNINIT, BG_INODE_UNINIT, BG_INODE_ZEROED};
use super::inode::{device_block, InodeSpec, EXTENTS_FL, INDEX_FL};
use super::superblock::{self, Geometry, SuperInfo, BLOCK_SIZE, FIRST_INO, INODE_SIZE};
use super::{csum, journal, xattr, Ext4Error, Ext4Options, JOURNAL_INO, LOST_FOUND_INO, ROOT_INO};
use crate::tree::{FileData, InodeId, Kind, Meta, Tree, ROOT};

/// Longest file with 4 KiB blocks and 32-bit logical block numbers.
const MAX_FILE: u64 = (1 << 32) * BLOCK_SIZE - BLOCK_SIZE;
/// Largest `i_links_count` ext4 keeps (`EXT4_LINK_MAX`).
const LINK_MAX: u32 = 65_000;
/// An xattr block is shared by at most this many inodes (`EXT4_XATTR_REFCOUNT_MAX`).
const XATTR_REFCOUNT_MAX: u32 = 1024;

/// A filesystem laid out and encoded, ready to become a disk.
pub struct Plan {
    disk: VirtualDiskBuilder,
}

impl Plan {
    /// Checks the extents into a [`VirtualDisk`].
    pub fn into_disk(self, _size: u64) -> Result<VirtualDisk, Ext4Error> {
        self.disk.build().map_err(Ext4Error::Disk)
    }
}

fn show(p: &[u8]) -> String {
    format!("/{}", String::from_utf8_lossy(p))
}

/// A rough lower bound of the blocks the tree's data needs, in bytes.
pub fn data_estimate(tree: &Tree) -> u64 {
    let mut seen = vec![false; tree.inode_slots()];
    let mut total = 0u64;
    for (_, _, id) in tree.entries() {
        if std::mem::replace(&mut seen[id], true) {
            continue;
        }
        total += INODE_SIZE;
        total += match &tree.inode(id).kind {
            Kind::File(d) => {
                data_segments(d)
                    .iter()
                    .map(|r| r.end - r.start)
                    .sum::<u64>()
                    * BLOCK_SIZE
            }
            Kind::Dir(m) => (m.keys().map(|k| 12 + k.len() as u64).sum::<u64>() * 3 / 2)
                .next_multiple_of(BLOCK_SIZE),
            Kind::Symlink(t) if t.len() >= 60 => BLOCK_SIZE,
            _ => 0,
        };
    }
    total
}

/// The logical block ranges of a file that need blocks: all of them, except
/// for a `Source` the 4 KiB blocks it knows are zero
/// ([`ReadAt::known_zero`]), which become holes.
fn data_segments(data: &FileData) -> Vec<Range<u64>> {
    let len = data.len();
    let blocks = len.div_ceil(BLOCK_SIZE);
    let FileData::Source { source, offset, .. } = data else {
        return std::iter::once(0..blocks)
            .filter(|r| !r.is_empty())
            .collect();
    };
    // `&**`: the source itself, not `Arc`'s `ReadAt` impl, which does not
    // forward `known_zero` (it answers the default `None`).
    let source: &dyn ReadAt = &**source;
    let mut out: Vec<Range<u64>> = Vec::new();
    for k in 0..blocks {
        let at = k * BLOCK_SIZE;
        if source.known_zero(offset.saturating_add(at), BLOCK_SIZE.min(len - at)) == Some(true) {
            continue;
        }
        match out.last_mut() {
            Some(last) if last.end == k => last.end = k + 1,
            _ => out.push(k..k + 1),
        }
    }
    out
}

/// Inode numbers: root 2, lost+found 11, the rest from 12 in walk order.
/// Paths are not kept (a hostile tree's paths add up to its inode count
/// times [`crate::tree::PATH_MAX`]): each inode keeps the parent and name it
/// was numbered through, and [`Numbering::path`] rebuilds its path.
struct Numbering<'t> {
    ino_of: Vec<u32>,
    /// Tree inodes in inode-number order from 12 (and root, lost+found).
    order: Vec<InodeId>,
    /// `(parent, name)` each numbered inode was first reached through.
    reached_by: Vec<(InodeId, &'t [u8])>,
    /// lost+found from the tree, if it has one.
    lost_found: Option<InodeId>,
    /// Parent directory's inode number, by tree inode (directories only).
    parent: Vec<u32>,
    /// Last inode number in use.
    last: u32,
}

impl Numbering<'_> {
    /// The path `id` was numbered through (empty for the root).
    fn path(&self, id: InodeId) -> Vec<u8> {
        path_through(&self.reached_by, id)
    }
}

/// The path from the root to `id` through `reached_by` links.
fn path_through(reached_by: &[(InodeId, &[u8])], id: InodeId) -> Vec<u8> {
    let mut names = Vec::new();
    let mut cur = id;
    while cur != ROOT {
        let (parent, name) = reached_by[cur];
        names.push(name);
        cur = parent;
    }
    names.reverse();
    names.join(&b'/')
}

fn number(tree: &Tree) -> Result<Numbering<'_>, Ext4Error> {
    let mut ino_of = vec![0u32; tree.inode_slots()];
    let mut reached_by: Vec<(InodeId, &[u8])> = vec![(ROOT, &[]); tree.inode_slots()];
    ino_of[ROOT] = ROOT_INO;
    let lost_found = match tree.children(ROOT).find(|(n, _)| *n == b"lost+found") {
        Some((_, id)) if matches!(tree.inode(id).kind, Kind::Dir(_)) => Some(id),
        Some(_) => return Err(Ext4Error::LostFoundNotDirectory),
        None => None,
    };
    let mut order = vec![ROOT];
    if let Some(id) = lost_found {
        ino_of[id] = LOST_FOUND_INO;
        reached_by[id] = (ROOT, b"lost+found");
        order.push(id);
    }
    let mut next = FIRST_INO + 1;
    for (parent, name, id) in tree.entries() {
        if name.len() > 255 {
            let mut path = path_through(&reached_by, parent);
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(name);
            return Err(Ext4Error::NameTooLong {
                path: show(&path),
                len: name.len(),
            });
        }
        if ino_of[id] == 0 {
            ino_of[id] = next;
            next = next.checked_add(1).ok_or(Ext4Error::TooManyInodes {
                needed: u64::MAX,
                max: 0,
            })?;
            reached_by[id] = (parent, name);
            order.push(id);
        }
    }
    let mut parent = vec![ROOT_INO; tree.inode_slots()];
    for d in &order {
        for (_, c) in tree.children(*d) {
            if matches!(tree.inode(c).kind, Kind::Dir(_)) {
                parent[c] = ino_of[*d];
            }
        }
    }
    Ok(Numbering {
        ino_of,
        order,
        reached_by,
        lost_found,
        parent,
        last: next - 1,
    })
}

fn dir_ftype(kind: &Kind) -> u8 {
    match kind {
        Kind::Dir(_) => ftype::DIR,
        Kind::File(_) => ftype::REG,
        Kind::Symlink(_) => ftype::LNK,
        Kind::CharDev { .. } => ftype::CHR,
        Kind::BlockDev { .. } => ftype::BLK,
        Kind::Fifo => ftype::FIFO,
        Kind::Socket => ftype::SOCK,
    }
}

struct Ctx<'a> {
    tree: &'a Tree,
    opts: &'a Ext4Options,
    geo: &'a Geometry,
    fs_seed: u32,
    hasher: Hasher,
    alloc: Allocator<'a>,
    disk: VirtualDiskBuilder,
    /// Encoded inodes 1..=last.
    inodes: Vec<[u8; INODE_SIZE as usize]>,
    dirs_per_group: Vec<u32>,
    /// Xattr blocks: body → (block, refcount); the body already encoded.
    xattr_blocks: BTreeMap<Vec<u8>, (u64, u32)>,
}

fn full(opts: &Ext4Options) -> impl Fn(Full) -> Ext4Error + '_ {
    move |_| Ext4Error::TooSmall {
        needed: 0,
        size: opts.size,
    }
}

/// Lays out and encodes the whole filesystem.
pub fn plan(tree: &Tree, opts: &Ext4Options) -> Result<Plan, Ext4Error> {
    if opts.label.len() > 16 {
        return Err(Ext4Error::LabelTooLong {
            label: opts.label.clone(),
            len: opts.label.len(),
        });
    }
    if !(1..=extent_tree::MAX_LEN).contains(&opts.max_extent_blocks) {
        return Err(Ext4Error::BadOption {
            option: "max_extent_blocks",
            reason: "must be 1..=32768",
        });
    }
    if matches!(opts.journal_blocks, Some(n) if n > 0 && u64::from(n) < journal::MIN_JOURNAL_BLOCKS)
    {
        return Err(Ext4Error::BadOption {
            option: "journal_blocks",
            reason: "0 or at least 1024",
        });
    }
    let numbering = number(tree)?;
    let geo = Geometry::new(opts, u64::from(numbering.last))?;
    // The bitmaps written last, right before the data, are those of the low
    // groups the data and journal reach (0..low). Layout starts them on a
    // 1 MiB boundary, so it needs `low`: a first guess from the data's size,
    // then, rarely, a second pass with what the first one found.
    let guess = Layout::new(&geo, 1)
        .map(|l| {
            let end = l.data_start + data_estimate(tree) / BLOCK_SIZE + geo.journal_blocks;
            (end / superblock::BLOCKS_PER_GROUP + 1).min(u64::from(geo.groups))
        })
        .unwrap_or(1);
    let mut low = u32::try_from(guess).unwrap_or(geo.groups);
    let mut passes = 0;
    loop {
        let (plan, found) = plan_with(tree, opts, &numbering, &geo, low)?;
        passes += 1;
        if found == low || passes == 3 {
            return Ok(plan);
        }
        low = found;
    }
}

/// [`plan`] with the layout for `low` written low groups; also returns how
/// many low groups ended up with written bitmaps.
fn plan_with(
    tree: &Tree,
    opts: &Ext4Options,
    numbering: &Numbering,
    geo: &Geometry,
    low: u32,
) -> Result<(Plan, u32), Ext4Error> {
    let layout = Layout::new(geo, low).map_err(full(opts))?;
    let fs_seed = csum::fs_seed(&opts.uuid);
    let mut ctx = Ctx {
        tree,
        opts,
        geo,
        fs_seed,
        hasher: Hasher::new(&opts.hash_seed),
        alloc: Allocator::new(&layout.reserved, layout.data_start, geo.blocks),
        disk: VirtualDiskBuilder::new(opts.size),
        inodes: Vec::with_capacity(numbering.last as usize),
        dirs_per_group: vec![0; geo.groups as usize],
        xattr_blocks: BTreeMap::new(),
    };
    for ino in 1..=numbering.last {
        ctx.inodes
            .push(InodeSpec::default().encode(csum::inode_seed(fs_seed, ino)));
    }
    let links = tree.link_counts();
    for &id in &numbering.order {
        ctx.tree_inode(id, &numbering.path(id), numbering, &links)?;
        if id == ROOT && numbering.lost_found.is_none() {
            ctx.lost_found()?;
        }
    }
    // After all data: the journal superblock (its only written block) then
    // shares a 1 MiB block with the end of the data.
    let jnl_blocks = ctx.journal()?;
    let found = written_low_groups(geo, &ctx.alloc.used(), numbering.last);
    Ok((ctx.finish(&layout, numbering.last, jnl_blocks)?, found))
}

/// How many low groups (0..found, never the last group) get a written
/// bitmap: the highest group below the last holding more than its own
/// superblock copy, or in-use inodes, plus one.
fn written_low_groups(geo: &Geometry, used: &[Range<u64>], last_ino: u32) -> u32 {
    let ipg = geo.inodes_per_group;
    (0..geo.groups.saturating_sub(1))
        .rev()
        .find(|&g| {
            group::used_in_group(geo, g, used) != geo.super_blocks(g)
                || last_ino.saturating_sub(g * ipg) > 0
        })
        .map_or(1, |g| g + 1)
}

impl Ctx<'_> {
    fn seed(&self, ino: u32) -> u32 {
        csum::inode_seed(self.fs_seed, ino)
    }

    fn store(&mut self, ino: u32, spec: &InodeSpec) {
        let bytes = spec.encode(self.seed(ino));
        self.inodes[(ino - 1) as usize] = bytes;
    }

    /// Maps `mapped` (increasing logical blocks, gaps are holes) with an
    /// extent tree; returns `i_block` and the number of tree blocks written.
    fn map(
        &mut self,
        ino: u32,
        mapped: &[Mapped],
        max_len: u32,
    ) -> Result<([u8; 60], u64), Ext4Error> {
        let extents = extent_tree::from_mapped(mapped, max_len);
        let n = extent_tree::tree_blocks(extents.len());
        let blocks: Vec<u64> = self
            .alloc
            .alloc(n as u64)
            .map_err(full(self.opts))?
            .into_iter()
            .flatten()
            .collect();
        let t = extent_tree::build(&extents, &blocks, self.seed(ino));
        for (at, b) in t.blocks {
            self.disk.bytes(at * BLOCK_SIZE, b);
        }
        Ok((t.i_block, n as u64))
    }

    /// Allocates and places in-memory blocks; returns the runs.
    fn place_blocks(&mut self, blocks: Vec<Vec<u8>>) -> Result<Vec<Range<u64>>, Ext4Error> {
        let runs = self
            .alloc
            .alloc(blocks.len() as u64)
            .map_err(full(self.opts))?;
        let mut it = blocks.into_iter();
        for r in &runs {
            let bytes: Vec<u8> = it
                .by_ref()
                .take((r.end - r.start) as usize)
                .flatten()
                .collect();
            self.disk.bytes(r.start * BLOCK_SIZE, bytes);
        }
        Ok(runs)
    }

    /// The journal inode: one contiguous extent after everything else, only
    /// its jbd2 superblock written.
    fn journal(&mut self) -> Result<[u32; 17], Ext4Error> {
        let n = self.geo.journal_blocks;
        if n == 0 {
            return Ok([0; 17]);
        }
        let runs = [self.alloc.contiguous(n).map_err(full(self.opts))?];
        let sb = journal::superblock(
            u32::try_from(n).unwrap_or(u32::MAX),
            BLOCK_SIZE as u32,
            &self.opts.uuid,
        );
        self.disk.bytes(runs[0].start * BLOCK_SIZE, sb);
        let (i_block, tree) = self.map(JOURNAL_INO, &consecutive(&runs), extent_tree::MAX_LEN)?;
        let size = n * BLOCK_SIZE;
        let spec = InodeSpec {
            mode: 0o100600,
            size,
            links: 1,
            time: crate::tree::Timestamp::from_secs(self.opts.epoch),
            flags: EXTENTS_FL,
            i_block,
            blocks: n + tree,
            ..InodeSpec::default()
        };
        self.store(JOURNAL_INO, &spec);
        let mut words = [0u32; 17];
        for (i, w) in words.iter_mut().take(15).enumerate() {
            *w = u32::from_le_bytes(i_block[4 * i..4 * i + 4].try_into().expect("4 bytes"));
        }
        words[15] = (size >> 32) as u32;
        words[16] = size as u32;
        Ok(words)
    }

    /// lost+found as mke2fs makes it: mode 0700, four blocks.
    fn lost_found(&mut self) -> Result<(), Ext4Error> {
        let mut d = dir::build(LOST_FOUND_INO, ROOT_INO, &[], &self.hasher)
            .map_err(|_| full(self.opts)(Full))?;
        for _ in 0..3 {
            d.push_empty();
        }
        let meta = Meta {
            mode: 0o700,
            mtime: crate::tree::Timestamp::from_secs(self.opts.epoch),
            ..Meta::default()
        };
        self.directory(LOST_FOUND_INO, d, &meta, 2, b"lost+found")
    }

    fn directory(
        &mut self,
        ino: u32,
        mut d: dir::DirBlocks,
        meta: &Meta,
        links: u32,
        path: &[u8],
    ) -> Result<(), Ext4Error> {
        let seed = self.seed(ino);
        dir::finish(&mut d, seed);
        let nblocks = d.blocks.len() as u64;
        let indexed = d.indexed;
        let runs = self.place_blocks(d.blocks)?;
        let (i_block, tree) = self.map(ino, &consecutive(&runs), extent_tree::MAX_LEN)?;
        let flags = EXTENTS_FL | if indexed { INDEX_FL } else { 0 };
        let links = if links > LINK_MAX { 1 } else { links as u16 };
        let spec = InodeSpec {
            mode: 0o040000 | (meta.mode & 0o7777),
            size: nblocks * BLOCK_SIZE,
            links,
            flags,
            i_block,
            blocks: nblocks + tree,
            ..self.spec_from(meta)
        };
        self.dirs_per_group[((ino - 1) / self.geo.inodes_per_group) as usize] += 1;
        self.finish_inode(ino, spec, meta, path)
    }

    fn spec_from(&self, meta: &Meta) -> InodeSpec {
        InodeSpec {
            uid: meta.uid,
            gid: meta.gid,
            time: meta.mtime,
            ..InodeSpec::default()
        }
    }

    /// Adds the xattrs (in-inode area, shared block) and stores the inode.
    fn finish_inode(
        &mut self,
        ino: u32,
        mut spec: InodeSpec,
        meta: &Meta,
        path: &[u8],
    ) -> Result<(), Ext4Error> {
        let placed = xattr::place(
            meta.xattrs
                .iter()
                .map(|(k, v)| (k.as_slice(), v.as_slice())),
        )
        .map_err(|(name, p)| Ext4Error::Xattr {
            path: show(path),
            name: String::from_utf8_lossy(&name).into_owned(),
            problem: p.to_string(),
        })?;
        spec.xattrs = placed.in_inode;
        if let Some(body) = placed.block {
            let block = match self.xattr_blocks.get_mut(&body) {
                Some((b, refs)) if *refs < XATTR_REFCOUNT_MAX => {
                    *refs += 1;
                    *b
                }
                _ => {
                    let b = self.alloc.one().map_err(full(self.opts))?;
                    self.xattr_blocks.insert(body, (b, 1));
                    b
                }
            };
            spec.file_acl = block;
            spec.blocks += 1;
        }
        self.store(ino, &spec);
        Ok(())
    }

    fn tree_inode(
        &mut self,
        id: InodeId,
        path: &[u8],
        n: &Numbering,
        links: &[u32],
    ) -> Result<(), Ext4Error> {
        let ino = n.ino_of[id];
        let node = self.tree.inode(id);
        let meta = &node.meta;
        let mode = node.kind.type_bits() | (meta.mode & 0o7777);
        let nlink = links[id];
        if !matches!(node.kind, Kind::Dir(_)) && nlink > LINK_MAX {
            return Err(Ext4Error::TooManyLinks {
                path: show(path),
                links: nlink,
            });
        }
        let mut spec = InodeSpec {
            mode,
            links: nlink as u16,
            ..self.spec_from(meta)
        };
        match &node.kind {
            Kind::Dir(children) => {
                return self.dir_inode(id, ino, children, path, n);
            }
            Kind::File(data) => self.file_blocks(ino, data, path, &mut spec)?,
            Kind::Symlink(target) => self.symlink_blocks(ino, target, path, &mut spec)?,
            Kind::CharDev { major, minor } | Kind::BlockDev { major, minor } => {
                spec.i_block =
                    device_block(*major, *minor).ok_or_else(|| Ext4Error::DeviceNumber {
                        path: show(path),
                        major: *major,
                        minor: *minor,
                    })?;
            }
            Kind::Fifo | Kind::Socket => {}
        }
        self.finish_inode(ino, spec, meta, path)
    }

    /// A directory inode: its entries (with `lost+found` in the root when
    /// the tree has none), hashed into an htree when large.
    fn dir_inode(
        &mut self,
        id: InodeId,
        ino: u32,
        children: &BTreeMap<Vec<u8>, InodeId>,
        path: &[u8],
        n: &Numbering,
    ) -> Result<(), Ext4Error> {
        let mut entries: Vec<Entry> = children
            .iter()
            .map(|(name, &c)| Entry {
                name: name.as_slice(),
                ino: n.ino_of[c],
                ftype: dir_ftype(&self.tree.inode(c).kind),
            })
            .collect();
        let mut subdirs = entries.iter().filter(|e| e.ftype == ftype::DIR).count() as u32;
        if id == ROOT && n.lost_found.is_none() {
            let at = entries.partition_point(|e| e.name < &b"lost+found"[..]);
            entries.insert(
                at,
                Entry {
                    name: b"lost+found",
                    ino: LOST_FOUND_INO,
                    ftype: ftype::DIR,
                },
            );
            subdirs += 1;
        }
        let parent = n.parent[id];
        let d = dir::build(ino, parent, &entries, &self.hasher).map_err(|entries| {
            Ext4Error::DirectoryTooLarge {
                path: show(path),
                entries,
            }
        })?;
        let tree = self.tree;
        self.directory(ino, d, &tree.inode(id).meta, 2 + subdirs, path)
    }

    /// A regular file's blocks: its data by reference, zero blocks left as
    /// holes, mapped by an extent tree.
    fn file_blocks(
        &mut self,
        ino: u32,
        data: &FileData,
        path: &[u8],
        spec: &mut InodeSpec,
    ) -> Result<(), Ext4Error> {
        let len = data.len();
        if len > MAX_FILE {
            return Err(Ext4Error::FileTooLarge {
                path: show(path),
                len,
            });
        }
        // Blocks the source knows are zero become holes (mke2fs -d
        // does the same): no block, no extent; they read as zeros.
        let segments = data_segments(data);
        let count: u64 = segments.iter().map(|r| r.end - r.start).sum();
        let runs = self.alloc.alloc(count).map_err(full(self.opts))?;
        let mapped = extent_tree::pair(&segments, &runs);
        self.file_data(data, &mapped);
        let (i_block, tree) = self.map(ino, &mapped, self.opts.max_extent_blocks)?;
        spec.size = len;
        spec.flags = EXTENTS_FL;
        spec.i_block = i_block;
        spec.blocks = count + tree;
        Ok(())
    }

    /// A symlink's target: inline below 60 bytes, else in one block.
    fn symlink_blocks(
        &mut self,
        ino: u32,
        target: &[u8],
        path: &[u8],
        spec: &mut InodeSpec,
    ) -> Result<(), Ext4Error> {
        if target.is_empty() || target.len() > 4095 {
            return Err(Ext4Error::BadSymlink {
                path: show(path),
                len: target.len(),
            });
        }
        spec.size = target.len() as u64;
        if target.len() < 60 {
            spec.i_block[..target.len()].copy_from_slice(target);
        } else {
            let runs = self.place_blocks(vec![target.to_vec()])?;
            let (i_block, tree) = self.map(ino, &consecutive(&runs), extent_tree::MAX_LEN)?;
            spec.flags = EXTENTS_FL;
            spec.i_block = i_block;
            spec.blocks = 1 + tree;
        }
        Ok(())
    }

    /// Places a file's contents by reference: one disk extent per mapped
    /// piece (holes get none).
    fn file_data(&mut self, data: &FileData, mapped: &[Mapped]) {
        let len = data.len();
        for (logical, r) in mapped {
            let done = logical * BLOCK_SIZE;
            let n = ((r.end - r.start) * BLOCK_SIZE).min(len - done);
            let at = r.start * BLOCK_SIZE;
            match data {
                FileData::Bytes(b) if mapped.len() == 1 => {
                    self.disk.bytes(at, b.clone());
                }
                FileData::Bytes(b) => {
                    let src: Arc<dyn ReadAt> = Arc::new(b.clone());
                    self.disk.source(at, n, src, done);
                }
                FileData::Source { source, offset, .. } => {
                    self.disk.source(at, n, source.clone(), offset + done);
                }
            }
        }
    }

    /// Group descriptors, bitmaps, inode tables, xattr blocks, superblocks.
    fn finish(
        mut self,
        layout: &Layout,
        last: u32,
        jnl_blocks: [u32; 17],
    ) -> Result<Plan, Ext4Error> {
        for (body, (block, refs)) in std::mem::take(&mut self.xattr_blocks) {
            self.disk.bytes(
                block * BLOCK_SIZE,
                xattr::finish_block(&body, refs, block, self.fs_seed),
            );
        }
        let geo = self.geo;
        let used = self.alloc.used();
        let ipg = geo.inodes_per_group;
        let mut gdt = vec![0u8; (geo.gdt_blocks * BLOCK_SIZE) as usize];
        let (mut free_blocks, mut free_inodes) = (0u64, 0u64);
        for g in 0..geo.groups {
            let meta = &layout.groups[g as usize];
            let in_use = last.saturating_sub(g * ipg).min(ipg);
            let used_blocks = group::used_in_group(geo, g, &used);
            let mut st = GroupState {
                free_blocks: (geo.group_len(g) - used_blocks) as u32,
                free_inodes: ipg - in_use,
                used_dirs: self.dirs_per_group[g as usize],
                flags: BG_INODE_ZEROED,
                itable_unused: ipg - in_use,
                ..GroupState::default()
            };
            if g + 1 < geo.groups && used_blocks == geo.super_blocks(g) {
                st.flags |= BG_BLOCK_UNINIT;
            } else {
                let bm = group::block_bitmap(geo, g, &used);
                st.block_bitmap_csum = group::bitmap_csum(self.fs_seed, &bm, BLOCK_SIZE as usize);
                self.disk.bytes(meta.block_bitmap * BLOCK_SIZE, bm);
            }
            if in_use == 0 {
                st.flags |= BG_INODE_UNINIT;
            } else {
                let bm = group::inode_bitmap(ipg, in_use);
                st.inode_bitmap_csum = group::bitmap_csum(self.fs_seed, &bm, (ipg / 8) as usize);
                self.disk.bytes(meta.inode_bitmap * BLOCK_SIZE, bm);
                let first = (g * ipg) as usize;
                let table: Vec<u8> = self.inodes[first..first + in_use as usize]
                    .iter()
                    .flatten()
                    .copied()
                    .collect();
                self.disk.bytes(meta.inode_table * BLOCK_SIZE, table);
            }
            free_blocks += u64::from(st.free_blocks);
            free_inodes += u64::from(st.free_inodes);
            let at = g as usize * superblock::DESC_SIZE as usize;
            gdt[at..at + superblock::DESC_SIZE as usize].copy_from_slice(&group::encode_desc(
                meta,
                &st,
                g,
                self.fs_seed,
            ));
        }
        let info = SuperInfo {
            free_blocks,
            free_inodes: free_inodes as u32,
            jnl_blocks,
        };
        let gdt: Arc<[u8]> = gdt.into();
        for g in (0..geo.groups).filter(|&g| geo.super_blocks(g) > 0) {
            let sb = superblock::encode(geo, self.opts, &info, g);
            let start = geo.group_start(g) * BLOCK_SIZE;
            self.disk
                .bytes(if g == 0 { 1024 } else { start }, sb.to_vec());
            self.disk.bytes(start + BLOCK_SIZE, gdt.clone());
        }
        Ok(Plan { disk: self.disk })
    }
}
