//! The Intel 82443BX host bridge (i440BX) at PCI 00:00.0, in its AGP-disabled form (8086:7192),
//! as Virtual Server 2005 and Hyper-V generation 1 present it.
//!
//! Follows the 82443BX datasheet (order 290633), section 3.3 "PCI configuration space (device
//! 0)". Only the configuration registers are emulated: the memory controller itself is KVM's
//! memory map. The DRAM row boundaries describe the guest's RAM, the PAM registers are remembered
//! (and exposed through [`I440bx::pam`] / [`I440bx::pam_segments`] so the VMM can apply shadowing
//! later) but not applied, SMRAM is remembered with its lock semantics but SMM is not emulated.
//! Registers the datasheet leaves reserved read as 0 and ignore writes.
//!
//! Values copied from Hyper-V rather than from the datasheet are marked "Hyper-V"; they are what
//! the original product shows a guest (lspci): revision 03, command 0006h, status 0200h.

use std::ops::Range;

use crate::pci::{spec as pci, ConfigSpace, PciFunction};

/// Register offsets and values from the 82443BX datasheet, section 3.3.
pub mod spec {
    pub const VENDOR_INTEL: u16 = 0x8086;
    /// 82443BX host bridge with AGP disabled (7190 is the AGP-enabled variant).
    pub const DEVICE_ID: u16 = 0x7192;
    /// Hyper-V reports revision 03 (82443BX C1 stepping).
    pub const REVISION_ID: u8 = 0x03;
    /// Bridge, host bridge.
    pub const CLASS_CODE: u32 = 0x06_00_00;
    /// PCICMD as Hyper-V reports it: memory access and bus master enabled, read-only.
    pub const PCICMD_VALUE: u16 = 0x0006;
    /// PCISTS as Hyper-V reports it: DEVSEL medium, no capability list (AGP is disabled).
    pub const PCISTS_VALUE: u16 = 0x0200;

    /// NBXCFG, 440BX configuration (dword).
    pub const NBXCFG: u16 = 0x50;
    /// DRAMC, DRAM control.
    pub const DRAMC: u16 = 0x57;
    pub const DRAMC_WRITABLE: u8 = 0x3f;
    /// DRAMT, DRAM timing. Hyper-V reports 03h.
    pub const DRAMT: u16 = 0x58;
    pub const DRAMT_RESET: u8 = 0x03;
    /// PAM0-PAM6, programmable attribute map, one byte each.
    pub const PAM0: u16 = 0x59;
    pub const PAM_COUNT: usize = 7;
    /// PAM0 only has the high nibble (0xF0000-0xFFFFF); its low nibble is reserved.
    pub const PAM0_WRITABLE: u8 = 0x30;
    /// PAM1-6: bits 1:0 control the lower 16 KiB segment, bits 5:4 the upper one.
    pub const PAM_WRITABLE: u8 = 0x33;
    /// A PAM field's read-enable bit (reads go to DRAM).
    pub const PAM_READ_ENABLE: u8 = 0x1;
    /// A PAM field's write-enable bit (writes go to DRAM).
    pub const PAM_WRITE_ENABLE: u8 = 0x2;
    /// DRB0-DRB7, DRAM row boundaries in 8 MiB units, cumulative.
    pub const DRB0: u16 = 0x60;
    pub const DRB_COUNT: usize = 8;
    pub const DRB_UNIT: u64 = 8 << 20;
    /// FDHC, fixed DRAM hole control (bits 7:6).
    pub const FDHC: u16 = 0x68;
    pub const FDHC_WRITABLE: u8 = 0xc0;
    /// MBSC, memory buffer strength control (48 bits).
    pub const MBSC: u16 = 0x69;
    pub const MBSC_LEN: u16 = 6;
    /// SMRAM, system management RAM control.
    pub const SMRAM: u16 = 0x72;
    pub const SMRAM_D_OPEN: u8 = 1 << 6;
    pub const SMRAM_D_CLS: u8 = 1 << 5;
    pub const SMRAM_D_LCK: u8 = 1 << 4;
    pub const SMRAM_G_SMRAME: u8 = 1 << 3;
    /// C_BASE_SEG, hardwired to 010b: compatible SMRAM at 0xA0000.
    pub const SMRAM_C_BASE_SEG: u8 = 0x02;
    pub const SMRAM_WRITABLE: u8 = SMRAM_D_OPEN | SMRAM_D_CLS | SMRAM_D_LCK | SMRAM_G_SMRAME;
    /// ESMRAMC, extended SMRAM control. Hyper-V reports 38h (read-only).
    pub const ESMRAMC: u16 = 0x73;
    pub const ESMRAMC_VALUE: u8 = 0x38;
    /// RPS, DRAM row page size (word).
    pub const RPS: u16 = 0x74;
    /// SDRAMC, SDRAM control (word).
    pub const SDRAMC: u16 = 0x76;
    /// PGPOL, paging policy (word).
    pub const PGPOL: u16 = 0x78;
    /// PMCR, power management control. Hyper-V reports 0Ah (read-only).
    pub const PMCR: u16 = 0x7a;
    pub const PMCR_VALUE: u8 = 0x0a;
    /// SCRR, suspend CBR refresh rate (word). Hyper-V reports 0038h (read-only).
    pub const SCRR: u16 = 0x7b;
    pub const SCRR_VALUE: u16 = 0x0038;
    /// EAP, error address pointer (dword, read-only, no errors are ever logged).
    pub const EAP: u16 = 0x80;
    /// ERRCMD, error command; ERRSTS (0x91-0x92), error status. Read-only zeros here.
    pub const ERRCMD: u16 = 0x90;
    pub const ERRSTS: u16 = 0x91;
    /// BSPAD, BIOS scratch pad (8 bytes, read/write).
    pub const BSPAD: u16 = 0xd0;
    pub const BSPAD_LEN: u16 = 8;
    /// Manufacturer's ID register. Hyper-V reports 00000F20h.
    pub const MANID: u16 = 0xf8;
    pub const MANID_VALUE: u32 = 0x0000_0f20;
}

/// Where accesses to one PAM segment go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PamAccess {
    /// 00: DRAM disabled, reads and writes go to PCI (the BIOS ROM).
    Pci,
    /// 01: reads from DRAM, writes to PCI (write-protected shadow).
    ReadOnly,
    /// 10: writes to DRAM, reads from PCI (used while copying the ROM into shadow RAM).
    WriteOnly,
    /// 11: reads and writes go to DRAM.
    ReadWrite,
}

impl PamAccess {
    fn from_field(f: u8) -> Self {
        match f & 3 {
            0 => Self::Pci,
            1 => Self::ReadOnly,
            2 => Self::WriteOnly,
            _ => Self::ReadWrite,
        }
    }
}

/// Saved state of [`I440bx`]: the configuration space bytes.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct I440bxState {
    #[serde(with = "serde_big_array::BigArray")]
    pub config: [u8; pci::CONFIG_SPACE_SIZE],
}

/// The 82443BX host bridge's configuration space.
pub struct I440bx {
    config: ConfigSpace,
}

impl I440bx {
    /// A host bridge for a guest with `low_ram_size` bytes of RAM below the PCI hole (what the
    /// DRB registers describe).
    pub fn new(low_ram_size: u64) -> Self {
        let mut c = ConfigSpace::new(
            spec::VENDOR_INTEL,
            spec::DEVICE_ID,
            spec::REVISION_ID,
            spec::CLASS_CODE,
        );
        c.set_u16(pci::COMMAND, spec::PCICMD_VALUE);
        c.set_u16(pci::STATUS, spec::PCISTS_VALUE);
        // MLT, master latency timer: bits 7:3 writable.
        c.set_writable_u8(pci::LATENCY_TIMER, 0xf8);

        c.set_writable_u32(spec::NBXCFG, 0xffff_ffff);
        c.set_writable_u8(spec::DRAMC, spec::DRAMC_WRITABLE);
        c.set_u8(spec::DRAMT, spec::DRAMT_RESET);
        c.set_writable_u8(spec::DRAMT, 0x03);
        c.set_writable_u8(spec::PAM0, spec::PAM0_WRITABLE);
        for i in 1..spec::PAM_COUNT as u16 {
            c.set_writable_u8(spec::PAM0 + i, spec::PAM_WRITABLE);
        }
        for (i, v) in Self::row_boundaries(low_ram_size).into_iter().enumerate() {
            c.set_u8(spec::DRB0 + i as u16, v);
            c.set_writable_u8(spec::DRB0 + i as u16, 0xff);
        }
        c.set_writable_u8(spec::FDHC, spec::FDHC_WRITABLE);
        for i in 0..spec::MBSC_LEN {
            c.set_writable_u8(spec::MBSC + i, 0xff);
        }
        c.set_u8(spec::SMRAM, spec::SMRAM_C_BASE_SEG);
        c.set_writable_u8(spec::SMRAM, spec::SMRAM_WRITABLE);
        c.set_u8(spec::ESMRAMC, spec::ESMRAMC_VALUE);
        c.set_writable_u16(spec::RPS, 0xffff);
        c.set_writable_u16(spec::SDRAMC, 0xffff);
        c.set_u8(spec::PMCR, spec::PMCR_VALUE);
        c.set_u16(spec::SCRR, spec::SCRR_VALUE);
        for i in 0..spec::BSPAD_LEN {
            c.set_writable_u8(spec::BSPAD + i, 0xff);
        }
        c.set_u32(spec::MANID, spec::MANID_VALUE);
        Self { config: c }
    }

    /// DRB0-7 for `low_ram_size`: rows of up to 256 MiB, cumulative, in 8 MiB units. The
    /// registers are 8 bits wide, so the description saturates at 2040 MiB (a real 440BX
    /// supports 1 GiB); no guest relies on them for sizing, e820 does that.
    fn row_boundaries(low_ram_size: u64) -> [u8; spec::DRB_COUNT] {
        let units = (low_ram_size / spec::DRB_UNIT).min(0xff);
        let mut drb = [0u8; spec::DRB_COUNT];
        for (i, d) in drb.iter_mut().enumerate() {
            *d = units.min(32 * (i as u64 + 1)) as u8;
        }
        drb
    }

    /// PAM0-PAM6 as the guest last wrote them.
    pub fn pam(&self) -> [u8; spec::PAM_COUNT] {
        let mut p = [0; spec::PAM_COUNT];
        for (i, v) in p.iter_mut().enumerate() {
            *v = self.config.read_u8(spec::PAM0 + i as u16);
        }
        p
    }

    /// The 13 segments the PAM registers control, ascending by address, with where their
    /// accesses go: 0xC0000-0xEFFFF in 16 KiB pieces and 0xF0000-0xFFFFF as one.
    pub fn pam_segments(&self) -> Vec<(Range<u64>, PamAccess)> {
        let pam = self.pam();
        let mut v = Vec::with_capacity(13);
        for (i, &p) in pam.iter().enumerate().skip(1) {
            let base = 0xc_0000 + (i as u64 - 1) * 0x8000;
            v.push((base..base + 0x4000, PamAccess::from_field(p)));
            v.push((base + 0x4000..base + 0x8000, PamAccess::from_field(p >> 4)));
        }
        v.push((0xf_0000..0x10_0000, PamAccess::from_field(pam[0] >> 4)));
        v
    }

    /// DRB0-DRB7.
    pub fn drb(&self) -> [u8; spec::DRB_COUNT] {
        let mut d = [0; spec::DRB_COUNT];
        for (i, v) in d.iter_mut().enumerate() {
            *v = self.config.read_u8(spec::DRB0 + i as u16);
        }
        d
    }

    /// The SMRAM control register.
    pub fn smram(&self) -> u8 {
        self.config.read_u8(spec::SMRAM)
    }

    pub fn state(&self) -> I440bxState {
        I440bxState {
            config: *self.config.bytes(),
        }
    }

    pub fn restore(&mut self, state: &I440bxState) {
        self.config.restore_bytes(&state.config);
    }
}

impl PciFunction for I440bx {
    fn config_read(&mut self, offset: u16) -> u32 {
        self.config.read_dword(offset)
    }

    fn config_write(&mut self, offset: u16, data: &[u8]) {
        let end = offset + data.len() as u16;
        let smram_before = self.smram();
        let pam_before = self.pam();
        self.config.write(offset, data);
        if (offset..end).contains(&spec::SMRAM) {
            // Datasheet 3.3, SMRAM: once D_LCK is set, every writable SMRAM field is read-only until
            // reset, and setting D_LCK clears D_OPEN.
            let mut v = self.smram();
            if smram_before & spec::SMRAM_D_LCK != 0 {
                v = smram_before;
            } else if v & spec::SMRAM_D_LCK != 0 {
                v &= !spec::SMRAM_D_OPEN;
            }
            if v & spec::SMRAM_G_SMRAME != 0 && v != smram_before {
                log::debug!("i440BX: guest enabled SMRAM ({v:#04x}); SMM is not emulated");
            }
            self.config.set_u8(spec::SMRAM, v);
        }
        let pam = self.pam();
        if pam != pam_before {
            log::debug!("i440BX: PAM0-6 now {pam:02x?} (shadowing is not applied)");
        }
        if offset >= 0x40 && !Self::defined(offset, end) {
            crate::bus::warn_limited!(
                "i440BX: write of {data:02x?} to undefined config register {offset:#04x} ignored"
            );
        }
    }
}

impl I440bx {
    /// Whether any byte of `[offset, end)` is a register section 3.3 defines (for logging only).
    fn defined(offset: u16, end: u16) -> bool {
        const DEFINED: &[Range<u16>] = &[
            0x50..0x54, // NBXCFG
            0x57..0x68, // DRAMC, DRAMT, PAM, DRB
            0x68..0x6f, // FDHC, MBSC
            0x72..0x7d, // SMRAM .. SCRR
            0x80..0x84, // EAP
            0x90..0x93, // ERRCMD, ERRSTS
            0xa0..0xbc, // AGP registers (absent when AGP is disabled)
            0xd0..0xd8, // BSPAD
            0xf0..0xfc, // BUFFC, MANID
        ];
        DEFINED.iter().any(|r| r.start < end && offset < r.end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::cbor_round_trip;

    fn read8(d: &mut I440bx, off: u16) -> u8 {
        (d.config_read(off & !3) >> ((off & 3) * 8)) as u8
    }

    #[test]
    fn identity_is_the_agp_disabled_82443bx_and_read_only() {
        let mut d = I440bx::new(256 << 20);
        assert_eq!(d.config_read(0x00), 0x7192_8086);
        assert_eq!(d.config_read(0x04), 0x0200_0006);
        assert_eq!(d.config_read(0x08), 0x0600_0003);
        assert_eq!(d.config_read(0x0c), 0x0000_0000);
        d.config_write(0x00, &[0xff; 4]);
        d.config_write(0x04, &[0xff; 4]);
        d.config_write(0x08, &[0xff; 4]);
        d.config_write(0x0c, &[0xff; 4]);
        assert_eq!(d.config_read(0x00), 0x7192_8086);
        assert_eq!(d.config_read(0x04), 0x0200_0006);
        assert_eq!(d.config_read(0x08), 0x0600_0003);
        assert_eq!(d.config_read(0x0c), 0x0000_f800);
        // No BARs, no capabilities, no interrupt.
        for off in (0x10..0x40).step_by(4) {
            d.config_write(off, &[0xff; 4]);
            assert_eq!(d.config_read(off), 0, "offset {off:#x}");
        }
    }

    #[test]
    fn drb_describes_low_ram() {
        assert_eq!(I440bx::new(256 << 20).drb(), [32; 8]);
        assert_eq!(
            I440bx::new(512 << 20).drb(),
            [32, 64, 64, 64, 64, 64, 64, 64]
        );
        assert_eq!(
            I440bx::new(3 << 30).drb(),
            [32, 64, 96, 128, 160, 192, 224, 255]
        );
        assert_eq!(I440bx::new(16 << 20).drb(), [2; 8]);
        let mut d = I440bx::new(128 << 20);
        assert_eq!(d.config_read(0x60), 0x1010_1010);
    }

    #[test]
    fn pam_registers_are_writable_and_remembered() {
        let mut d = I440bx::new(64 << 20);
        assert_eq!(d.pam(), [0; 7]);
        // DRAMT at 0x58 shares the dword with PAM0-2.
        assert_eq!(d.config_read(0x58), 0x0000_0003);
        d.config_write(0x58, &[0x00, 0xff, 0x11, 0x33]);
        d.config_write(0x5c, &0x3311_2233u32.to_le_bytes());
        assert_eq!(d.pam(), [0x30, 0x11, 0x33, 0x33, 0x22, 0x11, 0x33]);
        assert_eq!(d.config_read(0x58), 0x3311_3000);
        let seg = d.pam_segments();
        assert_eq!(seg.len(), 13);
        assert_eq!(seg[0], (0xc_0000..0xc_4000, PamAccess::ReadOnly));
        assert_eq!(seg[1], (0xc_4000..0xc_8000, PamAccess::ReadOnly));
        assert_eq!(seg[6], (0xd_8000..0xd_c000, PamAccess::WriteOnly));
        assert_eq!(seg[7], (0xd_c000..0xe_0000, PamAccess::WriteOnly));
        assert_eq!(seg[12], (0xf_0000..0x10_0000, PamAccess::ReadWrite));
        // Word write to PAM5-6.
        d.config_write(0x5e, &0x1000u16.to_le_bytes());
        assert_eq!(d.pam()[5..], [0x00, 0x10]);
    }

    #[test]
    fn smram_lock_makes_the_register_read_only() {
        let mut d = I440bx::new(64 << 20);
        assert_eq!(read8(&mut d, 0x72), 0x02);
        assert_eq!(read8(&mut d, 0x73), 0x38);
        // C_BASE_SEG is hardwired.
        d.config_write(0x72, &[0x4f]);
        assert_eq!(d.smram(), 0x4a);
        // Locking clears D_OPEN.
        d.config_write(0x72, &[0x58]);
        assert_eq!(d.smram(), 0x1a);
        d.config_write(0x72, &[0x00]);
        assert_eq!(d.smram(), 0x1a);
        d.config_write(0x70, &[0, 0, 0, 0]);
        assert_eq!(d.smram(), 0x1a);
    }

    #[test]
    fn other_registers_have_defined_values() {
        let mut d = I440bx::new(64 << 20);
        assert_eq!(d.config_read(0x50), 0);
        d.config_write(0x50, &0x1234_5678u32.to_le_bytes());
        assert_eq!(d.config_read(0x50), 0x1234_5678);
        d.config_write(0x57, &[0xff]);
        assert_eq!(read8(&mut d, 0x57), 0x3f);
        assert_eq!(d.config_read(0x78), 0x380a_0000);
        assert_eq!(d.config_read(0xf8), 0x0000_0f20);
        // ERRCMD/ERRSTS are read-only zeros.
        d.config_write(0x90, &[0xff; 4]);
        assert_eq!(d.config_read(0x90), 0);
        // Scratch pad.
        d.config_write(0xd4, &[1, 2, 3, 4]);
        assert_eq!(d.config_read(0xd4), 0x0403_0201);
        // Undefined registers read 0 and ignore writes.
        for off in [0x40, 0x44, 0x4c, 0x84, 0xc0, 0xe0, 0xfc] {
            d.config_write(off, &[0xff; 4]);
            assert_eq!(d.config_read(off), 0, "offset {off:#x}");
        }
    }

    #[test]
    fn state_round_trips() {
        let mut d = I440bx::new(64 << 20);
        d.config_write(0x59, &[0x30]);
        d.config_write(0x72, &[0x18]);
        let s = d.state();
        let mut e = I440bx::new(64 << 20);
        e.restore(&s);
        assert_eq!(e.state(), s);
        assert_eq!(e.pam()[0], 0x30);
        // The lock survives the restore.
        e.config_write(0x72, &[0x00]);
        assert_eq!(e.smram(), 0x1a);
    }

    #[test]
    fn state_round_trips_through_cbor() {
        let mut d = I440bx::new(256 << 20);
        // Shadow RAM as a BIOS leaves it, a scratch pad value, SMRAM locked.
        d.config_write(0x58, &[0x00, 0x30, 0x33, 0x33]);
        d.config_write(0x5c, &[0x11, 0x11, 0x33, 0x33]);
        d.config_write(0xd4, &[1, 2, 3, 4]);
        d.config_write(0x72, &[0x18]);
        let s = d.state();
        let mut e = I440bx::new(256 << 20);
        e.restore(&cbor_round_trip(&s));
        assert_eq!(e.state(), s);
        assert_eq!(e.pam_segments(), d.pam_segments());
        for off in (0..0x100).step_by(4) {
            assert_eq!(e.config_read(off), d.config_read(off), "offset {off:#x}");
        }
        // The lock holds on both.
        for b in [&mut d, &mut e] {
            b.config_write(0x72, &[0x4a]);
            assert_eq!(b.smram(), 0x1a);
        }
    }
}
