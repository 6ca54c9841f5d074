//! VMware OVA: a ustar archive holding an OVF 1.x package (DMTF DSP0243)
//! in the order the spec requires, descriptor first, then the manifest:
//!
//! ```text
//! <name>.ovf          descriptor: written in `begin` with the VMDK's size
//!                     left blank (a fixed-width field), rewritten in `finish`
//! <name>.mf           SHA1(<name>.ovf)= <hex>\n SHA1(<name>-disk1.vmdk)= <hex>\n
//!                     fixed length: reserved in `begin`, filled in `finish`
//! <name>-disk1.vmdk   streamOptimized, written by VmdkStreamWriter through a
//!                     clone of the file whose cursor stands at the member's data
//! two zero blocks, zeros to the next 10240-byte record
//! ```
//!
//! The VMDK's size and digest are known only at the end, so the descriptor's
//! `ovf:size`, the VMDK's tar header and the manifest are patched in
//! `finish`: each has the same length whatever the values (the size is
//! padded with spaces inside the `File` tag to the 20 digits of `u64::MAX`),
//! so nothing moves and the bytes depend only on the disk. The VMDK is
//! hashed by reading its member back (the writer owns its file; a read of
//! the compressed VMDK is cheap next to compressing it).
//!
//! # Envelope and digest: OVF 1.x with SHA-1 (docs/ova.md has the sources)
//! - DSP0243 1.1.0 (the `.../ovf/envelope/1` namespace) specifies SHA-1
//!   manifest lines; 2.x (`.../envelope/2`) moved to SHA-256. An OVF 1.x
//!   envelope with SHA-256 lines is what an independent reader, `cot info`
//!   (PyPI `cot`), reports as an ERROR for each file.
//! - vSphere: ESXi/vCenter before 6.5 and the vSphere C# client accept only
//!   SHA-1 manifests (William Lam, "Default hashing algorithm changed in
//!   OVFTool 4.2", 2016; VMware KB 2151537, `ovftool --shaAlgorithm=SHA1`);
//!   vCenter 8 accepts `SHA1(x)= ...` lines (home-assistant/operating-system
//!   issue 3654). The "Invalid OVF checksum algorithm: SHA1" reports against
//!   vSphere 6.5-8 are manifests in the spaced `SHA1 (x) = ...` form that
//!   VirtualBox and `sha1sum --tag` write (MISP 3947, librenms/packer-builds
//!   30, nextcloud/vm 2607; VMware community "Format of OVA manifest file":
//!   removing the spaces made ESXi take SHA-1): so the line is written as
//!   VMware writes it, no space before `(` or `=`, one after.
//! - VMware Workstation: SHA-1 only in older releases (turnkeylinux/tracker
//!   851), and 16.2.4 rejected a correct SHA-256 manifest
//!   (home-assistant/operating-system issue 2121).
//! - VirtualBox reads SHA-1, SHA-256 and SHA-512 lines, spaced or not
//!   (`RTManifestReadStandardEx`, src/VBox/Runtime/common/checksum/manifest2.cpp),
//!   and itself writes SHA-1 for OVF 1.0, SHA-256 only for 2.0
//!   (src/VBox/Main/src-server/ApplianceImplExport.cpp).
//! - The envelope stays 1.x: VMware's own exports and appliances use it
//!   (e.g. VMware's Operations Appliance 9.1 descriptor, in govmomi's
//!   `ovf/fixtures/vmware`), and the `vmw:` extensions are defined for it.
//!
//! SHA-1 here guards the transfer, not authenticity: the OVA itself is
//! listed with its SHA-256 in `SHA256SUMS` and `manifest.json`.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::ops::Range;

use sha1::{Digest, Sha1};

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
    /// The disk's virtual size, as the descriptor declares it.
    capacity: u64,
    /// The descriptor's length, the same before and after `finish`.
    ovf_len: usize,
    mf_data: u64,
    vmdk_header: u64,
}

/// Where the descriptor's data starts: right after its tar header.
const OVF_DATA: u64 = tar::BLOCK;
/// Digits of `u64::MAX`: the width `ovf:size` is padded to.
const SIZE_WIDTH: usize = 20;

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

/// The manifest's text: one `SHA1(<file>)= <hex>` line per file, spaced
/// as VMware writes it (DSP0243 1.1.0; vSphere refuses `SHA1 (<file>) =`).
fn manifest(files: &[(&str, [u8; 20])]) -> Vec<u8> {
    let mut out = String::new();
    for (name, sha) in files {
        let hex: String = sha.iter().map(|b| format!("{b:02x}")).collect();
        out.push_str(&format!("SHA1({name})= {hex}\n"));
    }
    out.into_bytes()
}

impl ImageSink for OvaWriter {
    fn begin(&mut self, size: u64, allocated: &[Range<u64>]) -> Result<()> {
        let [ovf_name, mf_name, vmdk_name] = self.names();
        // Same length as the final text: only the VMDK's size changes.
        let ovf = descriptor(&self.settings, &vmdk_name, size, 0);
        let mf_at = self.put_member(&ovf_name, ovf.as_bytes(), 0)?;
        // Same length as the final text: only the digests change.
        let placeholder = manifest(&[(&ovf_name, [0; 20]), (&vmdk_name, [0; 20])]);
        let vmdk_header = self.put_member(&mf_name, &placeholder, mf_at)?;
        put_at(&self.file, &[0; tar::BLOCK as usize], vmdk_header)?;
        (&self.file)
            .seek(SeekFrom::Start(vmdk_header + tar::BLOCK))
            .map_err(|e| Error::io("seeking to the OVA's VMDK member", e))?;
        self.layout = Some(Layout {
            capacity: size,
            ovf_len: ovf.len(),
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
            settings,
            name,
            mtime,
            layout,
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
        let vmdk_sha = sha1_range(&file, data_at, vmdk_len)?;
        let vmdk_name = format!("{name}-disk1.vmdk");
        let header = tar::ustar(&tar::Entry::file(&vmdk_name, vmdk_len, mtime))?;
        put_at(&file, &header, layout.vmdk_header)?;
        let ovf = descriptor(&settings, &vmdk_name, layout.capacity, vmdk_len);
        assert_eq!(ovf.len(), layout.ovf_len, "ovf:size has a fixed width");
        put_at(&file, ovf.as_bytes(), OVF_DATA)?;
        let mf = manifest(&[
            (&format!("{name}.ovf"), Sha1::digest(ovf.as_bytes()).into()),
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

/// SHA-1 of `len` bytes of `file` from `at`.
fn sha1_range(file: &File, at: u64, len: u64) -> Result<[u8; 20]> {
    let mut sha = Sha1::new();
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
/// `vmdk_size` is the VMDK file's length (`References/File/@ovf:size`),
/// padded with spaces inside the tag so that the text's length does not
/// depend on it.
pub fn descriptor(
    settings: &OvfSettings,
    vmdk_name: &str,
    capacity: u64,
    vmdk_size: u64,
) -> String {
    let name = xml_escape(&settings.name);
    let href = xml_escape(vmdk_name);
    let size = vmdk_size.to_string();
    let size_pad = " ".repeat(SIZE_WIDTH - size.len());
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
    <File ovf:href="{href}" ovf:id="file1" ovf:size="{size}"{size_pad}/>
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
        let a = manifest(&[("x.ovf", [0; 20]), ("x-disk1.vmdk", [0; 20])]);
        let b = manifest(&[("x.ovf", [0xab; 20]), ("x-disk1.vmdk", [7; 20])]);
        assert_eq!(a.len(), b.len());
        let first = "SHA1(x.ovf)= ".to_string() + &"ab".repeat(20) + "\n";
        assert!(
            b.starts_with(first.as_bytes()),
            "{}",
            String::from_utf8_lossy(&b)
        );
    }

    #[test]
    fn descriptor_length_does_not_depend_on_the_vmdk_size() {
        let s = OvfSettings {
            name: "v".into(),
            cpus: 1,
            memory_mib: 512,
            efi: false,
            secure_boot: false,
            controller: OvfController::LsiLogic,
        };
        let blank = descriptor(&s, "v-disk1.vmdk", 1 << 30, 0);
        for size in [1, 123_456_789, u64::MAX] {
            let d = descriptor(&s, "v-disk1.vmdk", 1 << 30, size);
            assert_eq!(d.len(), blank.len(), "size {size}");
            assert!(
                d.contains(&format!(" ovf:size=\"{size}\"")),
                "size {size}: {d}"
            );
        }
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
        let d = descriptor(&s, "v-disk1.vmdk", 1 << 30, 1 << 20);
        assert!(
            d.contains("<Name>a&lt;b&gt;&amp;&quot;c&quot;</Name>"),
            "{d}"
        );
        assert!(d.contains("efiSecureBootEnabled"));
    }
}
