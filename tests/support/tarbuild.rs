//! A tiny ustar writer for hostile fixtures (what well-behaved tools refuse
//! to produce): `..` paths, sizes past the end, bad checksums, truncation.
#![allow(dead_code)]

/// One header's fields.
pub struct Hdr {
    pub name: Vec<u8>,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: u64,
    pub typeflag: u8,
    pub linkname: Vec<u8>,
}

impl Hdr {
    /// A regular file header.
    pub fn file(name: &str, size: u64) -> Self {
        Self {
            name: name.into(),
            mode: 0o644,
            uid: 0,
            gid: 0,
            size,
            mtime: 1_700_000_000,
            typeflag: b'0',
            linkname: Vec::new(),
        }
    }

    /// A header of another type.
    pub fn typed(name: &str, typeflag: u8, link: &str) -> Self {
        Self {
            typeflag,
            linkname: link.into(),
            ..Self::file(name, 0)
        }
    }

    /// The 512-byte POSIX ustar block with a correct checksum.
    pub fn encode(&self) -> [u8; 512] {
        let mut b = [0u8; 512];
        b[..self.name.len()].copy_from_slice(&self.name);
        octal(&mut b[100..108], u64::from(self.mode));
        octal(&mut b[108..116], u64::from(self.uid));
        octal(&mut b[116..124], u64::from(self.gid));
        octal(&mut b[124..136], self.size);
        octal(&mut b[136..148], self.mtime);
        b[156] = self.typeflag;
        b[157..157 + self.linkname.len()].copy_from_slice(&self.linkname);
        b[257..263].copy_from_slice(b"ustar\0");
        b[263..265].copy_from_slice(b"00");
        fix_checksum(&mut b);
        b
    }
}

fn octal(field: &mut [u8], v: u64) {
    let s = format!("{v:0width$o}\0", width = field.len() - 1);
    field.copy_from_slice(s.as_bytes());
}

/// Recomputes the checksum field (ustar: sum with the field as spaces).
pub fn fix_checksum(b: &mut [u8; 512]) {
    b[148..156].copy_from_slice(b"        ");
    let sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
    let s = format!("{sum:06o}\0 ");
    b[148..156].copy_from_slice(s.as_bytes());
}

/// An archive under construction.
#[derive(Default)]
pub struct TarBuf(pub Vec<u8>);

impl TarBuf {
    /// Appends a header and its data, padded to 512.
    pub fn entry(&mut self, h: &Hdr, data: &[u8]) -> &mut Self {
        self.0.extend_from_slice(&h.encode());
        self.data(data)
    }

    /// Appends raw data padded to 512.
    pub fn data(&mut self, data: &[u8]) -> &mut Self {
        self.0.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.0.extend(std::iter::repeat_n(0u8, pad));
        self
    }

    /// Appends a pax `x` header with these records.
    pub fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        let mut body = Vec::new();
        for (k, v) in records {
            let base = k.len() + v.len() + 3;
            let mut len = base + base.to_string().len();
            if (len).to_string().len() != base.to_string().len() {
                len += 1;
            }
            body.extend_from_slice(format!("{len} {k}=").as_bytes());
            body.extend_from_slice(v);
            body.push(b'\n');
        }
        let h = Hdr {
            typeflag: b'x',
            ..Hdr::file("PaxHeader", body.len() as u64)
        };
        self.entry(&h, &body)
    }

    /// Two zero blocks.
    pub fn finish(&mut self) -> Vec<u8> {
        self.0.extend_from_slice(&[0u8; 1024]);
        self.0.clone()
    }
}
