//! VMware OVA: a ustar archive holding an OVF 1.x package (DMTF DSP0243)
//! in the order the spec requires, descriptor first, then the manifest:
//!
//! ```text
//! <name>.ovf          descriptor: known in `begin` (no file size or hash in it)
//! <name>.mf           SHA256(<name>.ovf)= <hex>\n SHA256(<name>-disk1.vmdk)= <hex>\n
//!                     fixed length: reserved in `begin`, filled in `finish`
//! <name>-disk1.vmdk   streamOptimized, written by VmdkStreamWriter through a
//!                     clone of the file whose cursor stands at the member's data
//! two zero blocks, zeros to the next 10240-byte record
//! ```
//!
//! The VMDK's size and hash are known only at the end, so its header and the
//! manifest are patched in `finish`, and the VMDK is hashed by reading its
//! member back (the writer owns its file; a read of the compressed VMDK is
//! cheap next to compressing it).

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::ops::Range;

use sha2::{Digest, Sha256};

use super::{tar, Member, OvfController, OvfSettings};
use crate::grain::GrainSink;
use crate::io::ReadAt;
use crate::vmdk::VmdkStreamWriter;
use crate::{Error, Format, ImageSink, ImageSummary, Result, WriteOptions};

/// CIM_OperatingSystem.OsType 96: "Debian 64-Bit" (DSP1027 value map).
const CIM_OS_DEBIAN_64: u32 = 96;
/// VMware's guest id. `debian10_64Guest` is known to ESXi 6.5 and later, so
/// to every host that runs `vmx-14`; newer ids (debian11, debian12) are not.
const VMW_OS_TYPE: &str = "debian10_64Guest";
/// Virtual hardware version 14: ESXi 6.7 and later, the first with EFI
/// Secure Boot.
const VIRTUAL_SYSTEM_TYPE: &str = "vmx-14";
/// DSP0243 `ovf:format` of a streamOptimized VMDK.
const VMDK_FORMAT_URI: &str =
    "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized";
const NETWORK: &str = "VM Network";

/// Writes an OVA around a streamOptimized VMDK.
pub struct OvaWriter {
    file: File,
    vmdk: Box<VmdkStreamWriter>,
    settings: OvfSettings,
    name: String,
    mtime: u64,
    /// Set in `begin`.
    layout: Option<Layout>,
}

/// Where the members lie, fixed in `begin`.
struct Layout {
    ovf_sha: [u8; 32],
    mf_data: u64,
    vmdk_header: u64,
}

impl OvaWriter {
    /// A writer into `file` (empty); members are named after `name`.
    pub fn new(
        file: File,
        name: &str,
        mtime: u64,
        settings: &OvfSettings,
        write: &WriteOptions,
    ) -> Result<Self> {
        if name.is_empty() || name.contains(['/', '\0']) {
            return Err(Error::InvalidOption {
                option: "package name",
                detail: format!("{name:?} cannot name the members of an OVA"),
            });
        }
        let clone = file
            .try_clone()
            .map_err(|e| Error::io("duplicating the OVA file handle", e))?;
        Ok(Self {
            file,
            vmdk: Box::new(VmdkStreamWriter::with_options(clone, write, "lsilogic")?),
            settings: settings.clone(),
            name: name.to_string(),
            mtime,
            layout: None,
        })
    }

    fn names(&self) -> [String; 3] {
        let n = &self.name;
        [
            format!("{n}.ovf"),
            format!("{n}.mf"),
            format!("{n}-disk1.vmdk"),
        ]
    }

    /// Writes member `name` with `data` at `at`; returns the end.
    fn put_member(&self, name: &str, data: &[u8], at: u64) -> Result<u64> {
        let header = tar::ustar(&tar::Entry::file(name, data.len() as u64, self.mtime))?;
        put_at(&self.file, &header, at)?;
        put_at(&self.file, data, at + tar::BLOCK)?;
        Ok(at + tar::BLOCK + tar::padded(data.len() as u64))
    }
}

/// The manifest's text: one `SHA256(<file>)= <hex>` line per file.
fn manifest(files: &[(&str, [u8; 32])]) -> Vec<u8> {
    let mut out = String::new();
    for (name, sha) in files {
        let hex: String = sha.iter().map(|b| format!("{b:02x}")).collect();
        out.push_str(&format!("SHA256({name})= {hex}\n"));
    }
    out.into_bytes()
}

impl ImageSink for OvaWriter {
    fn begin(&mut self, size: u64, allocated: &[Range<u64>]) -> Result<()> {
        let [ovf_name, mf_name, vmdk_name] = self.names();
        let ovf = descriptor(&self.settings, &vmdk_name, size);
        let ovf_sha: [u8; 32] = Sha256::digest(ovf.as_bytes()).into();
        let mf_at = self.put_member(&ovf_name, ovf.as_bytes(), 0)?;
        // Same length as the final text: only the digests change.
        let placeholder = manifest(&[(&ovf_name, [0; 32]), (&vmdk_name, [0; 32])]);
        let vmdk_header = self.put_member(&mf_name, &placeholder, mf_at)?;
        put_at(&self.file, &[0; tar::BLOCK as usize], vmdk_header)?;
        (&self.file)
            .seek(SeekFrom::Start(vmdk_header + tar::BLOCK))
            .map_err(|e| Error::io("seeking to the OVA's VMDK member", e))?;
        self.layout = Some(Layout {
            ovf_sha,
            mf_data: mf_at + tar::BLOCK,
            vmdk_header,
        });
        self.vmdk.begin(size, allocated)
    }

    fn write_data(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        self.vmdk.write_data(offset, data)
    }

    fn grain_sink(&mut self) -> Option<&mut dyn GrainSink> {
        Some(self.vmdk.as_mut())
    }

    fn finish(self: Box<Self>) -> Result<ImageSummary> {
        let Self {
            file,
            vmdk,
            name,
            mtime,
            layout,
            ..
        } = *self;
        let layout = layout.ok_or_else(|| Error::InvalidOption {
            option: "finish",
            detail: "called before begin".into(),
        })?;
        let inner = vmdk.finish()?;
        let data_at = layout.vmdk_header + tar::BLOCK;
        let vmdk_len = inner.file_size;
        let end = data_at + tar::padded(vmdk_len);
        let total = end + tar::end_padding(end);
        file.set_len(total)
            .map_err(|e| Error::io("sizing the OVA", e))?;
        let vmdk_sha = hash_range(&file, data_at, vmdk_len)?;
        let vmdk_name = format!("{name}-disk1.vmdk");
        let header = tar::ustar(&tar::Entry::file(&vmdk_name, vmdk_len, mtime))?;
        put_at(&file, &header, layout.vmdk_header)?;
        let mf = manifest(&[
            (&format!("{name}.ovf"), layout.ovf_sha),
            (&vmdk_name, vmdk_sha),
        ]);
        put_at(&file, &mf, layout.mf_data)?;
        Ok(ImageSummary {
            format: Format::Vmdk,
            virtual_size: inner.virtual_size,
            file_size: total,
            sha256: None,
            member: Some(Member {
                name: vmdk_name,
                offset: data_at,
                size: vmdk_len,
                format: Format::Vmdk,
            }),
        })
    }
}

fn put_at(file: &File, bytes: &[u8], at: u64) -> Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, bytes, at)
        .map_err(|e| Error::io(format!("writing the OVA at byte {at}"), e))
}

/// SHA-256 of `len` bytes of `file` from `at`.
pub(super) fn hash_range(file: &File, at: u64, len: u64) -> Result<[u8; 32]> {
    let mut sha = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    while done < len {
        let n = usize::try_from((len - done).min(buf.len() as u64)).expect("at most 1 MiB");
        ReadAt::read_exact_at(file, &mut buf[..n], at + done).map_err(|e| {
            Error::io(
                format!(
                    "reading back the VMDK member at byte {} (is the OVA open for reading?)",
                    at + done
                ),
                e,
            )
        })?;
        sha.update(&buf[..n]);
        done += n as u64;
    }
    Ok(sha.finalize().into())
}

/// Escapes text for XML content and attribute values.
fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// The OVF descriptor. The rasd and vssd elements of each item are in the
/// alphabetical order of the CIM schemas' sequences, as ovftool checks.
pub fn descriptor(settings: &OvfSettings, vmdk_name: &str, capacity: u64) -> String {
    let name = xml_escape(&settings.name);
    let href = xml_escape(vmdk_name);
    let (cpus, memory) = (settings.cpus, settings.memory_mib);
    let (controller_subtype, controller_name) = match settings.controller {
        OvfController::Pvscsi => ("VirtualSCSI", "VMware Paravirtual SCSI"),
        OvfController::LsiLogic => ("lsilogic", "LSI Logic Parallel"),
    };
    let firmware = if settings.efi { "efi" } else { "bios" };
    let secure_boot = if settings.secure_boot {
        "\n      <vmw:Config ovf:required=\"false\" vmw:key=\"bootOptions.efiSecureBootEnabled\" vmw:value=\"true\"/>"
    } else {
        ""
    };
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vmw="http://www.vmware.com/schema/ovf" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <References>
    <File ovf:href="{href}" ovf:id="file1"/>
  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>
    <Disk ovf:capacity="{capacity}" ovf:capacityAllocationUnits="byte" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="{VMDK_FORMAT_URI}"/>
  </DiskSection>
  <NetworkSection>
    <Info>The list of logical networks</Info>
    <Network ovf:name="{NETWORK}">
      <Description>The {NETWORK} network</Description>
    </Network>
  </NetworkSection>
  <VirtualSystem ovf:id="{name}">
    <Info>A virtual machine</Info>
    <Name>{name}</Name>
    <OperatingSystemSection ovf:id="{CIM_OS_DEBIAN_64}" vmw:osType="{VMW_OS_TYPE}">
      <Info>The kind of installed guest operating system</Info>
    </OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>{name}</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>{VIRTUAL_SYSTEM_TYPE}</vssd:VirtualSystemType>
      </System>
      <Item>
        <rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits>
        <rasd:Description>Number of Virtual CPUs</rasd:Description>
        <rasd:ElementName>{cpus} virtual CPU(s)</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>{cpus}</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>
        <rasd:Description>Memory Size</rasd:Description>
        <rasd:ElementName>{memory}MB of memory</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>{memory}</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:Address>0</rasd:Address>
        <rasd:Description>{controller_name}</rasd:Description>
        <rasd:ElementName>SCSI controller 0</rasd:ElementName>
        <rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceSubType>{controller_subtype}</rasd:ResourceSubType>
        <rasd:ResourceType>6</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AddressOnParent>0</rasd:AddressOnParent>
        <rasd:ElementName>Hard disk 1</rasd:ElementName>
        <rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource>
        <rasd:InstanceID>4</rasd:InstanceID>
        <rasd:Parent>3</rasd:Parent>
        <rasd:ResourceType>17</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AddressOnParent>7</rasd:AddressOnParent>
        <rasd:AutomaticAllocation>true</rasd:AutomaticAllocation>
        <rasd:Connection>{NETWORK}</rasd:Connection>
        <rasd:Description>VmxNet3 ethernet adapter on "{NETWORK}"</rasd:Description>
        <rasd:ElementName>Network adapter 1</rasd:ElementName>
        <rasd:InstanceID>5</rasd:InstanceID>
        <rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType>
        <rasd:ResourceType>10</rasd:ResourceType>
      </Item>
      <vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="{firmware}"/>{secure_boot}
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_lines_have_a_fixed_length() {
        let a = manifest(&[("x.ovf", [0; 32]), ("x-disk1.vmdk", [0; 32])]);
        let b = manifest(&[("x.ovf", [0xab; 32]), ("x-disk1.vmdk", [7; 32])]);
        assert_eq!(a.len(), b.len());
        assert!(b.starts_with(b"SHA256(x.ovf)= abab"));
    }

    #[test]
    fn names_are_escaped_in_the_descriptor() {
        let s = OvfSettings {
            name: "a<b>&\"c\"".into(),
            cpus: 2,
            memory_mib: 2048,
            efi: true,
            secure_boot: true,
            controller: OvfController::Pvscsi,
        };
        let d = descriptor(&s, "v-disk1.vmdk", 1 << 30);
        assert!(
            d.contains("<Name>a&lt;b&gt;&amp;&quot;c&quot;</Name>"),
            "{d}"
        );
        assert!(d.contains("efiSecureBootEnabled"));
    }
}
