//! What `imgbuild check` prints of a [`Prepared`] build: one line per
//! target's drivers and per disk's boot.

use super::records::Prepared;

impl Prepared {
    /// One line per target for `imgbuild check`:
    /// `hyperv: hv_vmbus (builtin), hv_storvsc (initramfs+installed), …`.
    pub fn driver_lines(&self) -> Vec<String> {
        self.drivers
            .iter()
            .map(|(target, r)| format!("{target}: {}", r.summary()))
            .collect()
    }

    /// One line per disk for `imgbuild check`: its targets, the firmware
    /// modes it boots in and the loader (`kvm: boots with bios, uefi,
    /// secure-boot (grub)`).
    pub fn boot_lines(&self) -> Vec<String> {
        self.disks
            .iter()
            .map(|d| {
                format!(
                    "{}: boots with {} ({})",
                    d.boot.targets.join(", "),
                    d.boot.firmware.join(", "),
                    d.boot.loader
                )
            })
            .collect()
    }
}
