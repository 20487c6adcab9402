//! The Intel 82371AB PIIX4 south bridge, the parts that are not IDE: the PCI-to-ISA bridge
//! (function 0, 00:07.0, 8086:7110), port 92h (fast A20 and fast init), and the power management
//! function (function 3, 00:07.3, 8086:7113) with its I/O block of ACPI fixed-hardware
//! registers.
//!
//! Follows the 82371AB PIIX4 datasheet (order 290562): section 3.1 "PCI to ISA/EIO bridge
//! configuration registers (function 0)", "PORT92—Port 92 Register",
//! section 3.4 "Power management configuration registers (function 3)" and section 7.2 "Power
//! management I/O space registers" (PMSTS/PMEN/PMCNTRL are ACPI's PM1_STS/PM1_EN/PM1_CNT, PMTMR
//! is PM_TMR, GPSTS/GPEN the GPE0 block). Identification values that differ from the datasheet
//! come from Hyper-V generation 1 (what Virtual Server's descendants show a guest) and are marked
//! "Hyper-V".
//!
//! The PM function starts as the firmware leaves it: PMBA = `PM_IO_BASE` with PM I/O enabled and
//! SCI_EN set (ACPI mode, no SMI_CMD handshake), SMBBA = `SMBUS_IO_BASE` with the SMBus host
//! interface disabled (no SMBus controller is emulated). SMI is not emulated: GBL_RLS and the SMI
//! enables are remembered and do nothing.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arch::layout::{PM_IO_BASE, PM_IO_LEN, SMBUS_IO_BASE};

use crate::bus::warn_limited;
use crate::bus::{Bus, BusDevice, BusError, Irq, Timer, VmControl, VmRequest};
use crate::pci::{spec as pci, ConfigSpace, PciFunction};
use crate::rtc::{Clock, MonotonicClock};

/// Register offsets, reset values and bits from the PIIX4 datasheet.
pub mod spec {
    pub const VENDOR_INTEL: u16 = 0x8086;
    /// Hyper-V sets the subsystem vendor of the ISA bridge to Microsoft.
    pub const SUBSYSTEM_VENDOR_MICROSOFT: u16 = 0x1414;

    // Function 0: PCI-to-ISA bridge (section 3.1).
    pub const ISA_DEVICE_ID: u16 = 0x7110;
    /// Hyper-V reports revision 03.
    pub const ISA_REVISION_ID: u8 = 0x03;
    /// Bridge, ISA bridge.
    pub const ISA_CLASS_CODE: u32 = 0x06_01_00;
    /// Hyper-V: I/O, memory and bus master enabled, read-only.
    pub const ISA_PCICMD: u16 = 0x0007;
    /// Hyper-V: DEVSEL medium.
    pub const ISA_PCISTS: u16 = 0x0200;
    /// IORT, ISA I/O recovery timer.
    pub const IORT: u16 = 0x4c;
    pub const IORT_RESET: u8 = 0x4d;
    /// XBCS, X-bus chip select (word).
    pub const XBCS: u16 = 0x4e;
    pub const XBCS_RESET: u16 = 0x0003;
    /// PIRQRC[A:D], PCI interrupt routing, one byte per PIRQ line.
    pub const PIRQRC: u16 = 0x60;
    /// PIRQRC bit 7: routing disabled.
    pub const PIRQ_DISABLED: u8 = 0x80;
    pub const PIRQ_IRQ_MASK: u8 = 0x0f;
    /// Bits 6:4 are reserved.
    pub const PIRQ_WRITABLE: u8 = PIRQ_DISABLED | PIRQ_IRQ_MASK;
    /// SERIRQC, serial IRQ control.
    pub const SERIRQC: u16 = 0x64;
    pub const SERIRQC_RESET: u8 = 0x10;
    /// TOM, top of memory.
    pub const TOM: u16 = 0x69;
    pub const TOM_RESET: u8 = 0x02;
    /// MSTAT, miscellaneous status (word).
    pub const MSTAT: u16 = 0x6a;
    /// MBIRQ0-1, motherboard device IRQ routing.
    pub const MBIRQ0: u16 = 0x70;
    pub const MBIRQ_RESET: u8 = 0x80;
    /// MBDMA0-1, motherboard device DMA control.
    pub const MBDMA0: u16 = 0x76;
    pub const MBDMA_RESET: u8 = 0x04;
    /// PCSC, programmable chip select control (word).
    pub const PCSC: u16 = 0x78;
    pub const PCSC_RESET: u16 = 0x0002;
    /// APICBASE, IOAPIC base address relocation.
    pub const APICBASE: u16 = 0x80;
    /// DLC, deterministic latency control.
    pub const DLC: u16 = 0x82;
    pub const DLC_WRITABLE: u8 = 0x0f;
    /// PDMACFG, PCI DMA configuration (word).
    pub const PDMACFG: u16 = 0x90;
    /// DDMABP0-1, distributed DMA slave base pointers (words).
    pub const DDMABP0: u16 = 0x92;
    /// SMICNTL, SMI control.
    pub const SMICNTL: u16 = 0xa0;
    pub const SMICNTL_RESET: u8 = 0x08;
    /// SMIEN, SMI enable (word).
    pub const SMIEN: u16 = 0xa2;
    /// SEE, system event enable (dword).
    pub const SEE: u16 = 0xa4;
    /// FTMR, fast off timer.
    pub const FTMR: u16 = 0xa8;
    pub const FTMR_RESET: u8 = 0x0f;
    /// SMIREQ, SMI request (word).
    pub const SMIREQ: u16 = 0xaa;
    /// CTLTMR/CTHTMR, clock scale STPCLK# low/high timers.
    pub const CTLTMR: u16 = 0xac;
    pub const CTHTMR: u16 = 0xae;
    /// GENCFG, general configuration (dword).
    pub const GENCFG: u16 = 0xb0;
    /// RTCCFG, real time clock configuration (RTC enabled, upper 128 bytes disabled).
    pub const RTCCFG: u16 = 0xcb;
    pub const RTCCFG_RESET: u8 = 0x21;
    /// Hyper-V's manufacturer ID register.
    pub const ISA_MANID: u16 = 0xf8;
    pub const ISA_MANID_VALUE: u32 = 0x0000_0f30;

    /// The ISA IRQs a PIRQ line may be routed to (0, 1, 2, 8 and 13 are reserved).
    pub const PIRQ_VALID_IRQS: [u8; 11] = [3, 4, 5, 6, 7, 9, 10, 11, 12, 14, 15];

    // Port 92h ("PORT92—Port 92 Register").
    /// Bit 0, FAST_INIT: a 0->1 transition resets the CPU.
    pub const PORT92_FAST_INIT: u8 = 0x01;
    /// Bit 1, ALT_A20: 1 enables A20.
    pub const PORT92_A20: u8 = 0x02;

    // Function 3: power management (section 3.4).
    pub const PM_DEVICE_ID: u16 = 0x7113;
    /// Hyper-V reports revision 02 (PIIX4E).
    pub const PM_REVISION_ID: u8 = 0x02;
    /// Bridge, other.
    pub const PM_CLASS_CODE: u32 = 0x06_80_00;
    /// Hyper-V: DEVSEL medium, fast back-to-back capable.
    pub const PM_PCISTS: u16 = 0x0280;
    /// PCICMD bit 0 enables the SMBus I/O space.
    pub const PM_PCICMD_WRITABLE: u16 = 0x0001;
    /// Hard-wired to INTA#.
    pub const PM_INTERRUPT_PIN: u8 = 0x01;
    /// PMBA, power management base address: bit 0 reads 1 (I/O), bits 15:6 the base.
    pub const PMBA: u16 = 0x40;
    pub const PMBA_IO: u32 = 0x1;
    pub const PMBA_MASK: u32 = 0xffc0;
    /// CNTA, CNTB, GPICTL, DEVRESD, DEVACTA, DEVACTB, DEVRESA-C, DEVRESE-J: dwords at 0x44-0x7F,
    /// all read/write, reset 0.
    pub const CNTA: u16 = 0x44;
    pub const DEVACTB: u16 = 0x58;
    pub const DEVRESJ: u16 = 0x7c;
    /// PMREGMISC, bit 0 = PMIOSE, PM I/O space enable.
    pub const PMREGMISC: u16 = 0x80;
    pub const PMREGMISC_PMIOSE: u8 = 0x01;
    /// SMBBA, SMBus base address: bit 0 reads 1 (I/O), bits 15:4 the base.
    pub const SMBBA: u16 = 0x90;
    pub const SMBBA_MASK: u32 = 0xfff0;
    /// SMBHSTCFG: bit 0 host interface enable, bits 3:1 interrupt select.
    pub const SMBHSTCFG: u16 = 0xd2;
    pub const SMBHSTCFG_WRITABLE: u8 = 0x0f;
    /// SMBSLVC, SMBus slave command; SMBSHDW1/2, slave shadow ports.
    pub const SMBSLVC: u16 = 0xd3;
    pub const SMBSHDW1: u16 = 0xd4;
    pub const SMBSHDW2: u16 = 0xd5;
    /// SMBREV, SMBus revision (read-only 0).
    pub const SMBREV: u16 = 0xd6;

    // Power management I/O registers, offsets from PMBA (section 7.2).
    /// PMSTS (ACPI PM1_STS), write 1 to clear.
    pub const PMSTS: u8 = 0x00;
    pub const TMROF_STS: u16 = 1 << 0;
    pub const BM_STS: u16 = 1 << 4;
    pub const GBL_STS: u16 = 1 << 5;
    pub const PWRBTN_STS: u16 = 1 << 8;
    pub const RTC_STS: u16 = 1 << 10;
    pub const PWRBTNOR_STS: u16 = 1 << 11;
    /// RSM_STS, ACPI's WAK_STS.
    pub const WAK_STS: u16 = 1 << 15;
    pub const PMSTS_W1C: u16 =
        TMROF_STS | BM_STS | GBL_STS | PWRBTN_STS | RTC_STS | PWRBTNOR_STS | WAK_STS;
    /// PMEN (ACPI PM1_EN).
    pub const PMEN: u8 = 0x02;
    pub const TMROF_EN: u16 = 1 << 0;
    pub const GBL_EN: u16 = 1 << 5;
    pub const PWRBTN_EN: u16 = 1 << 8;
    pub const RTC_EN: u16 = 1 << 10;
    pub const PMEN_WRITABLE: u16 = TMROF_EN | GBL_EN | PWRBTN_EN | RTC_EN;
    /// PMCNTRL (ACPI PM1_CNT).
    pub const PMCNTRL: u8 = 0x04;
    pub const SCI_EN: u16 = 1 << 0;
    pub const BRLD_EN_BM: u16 = 1 << 1;
    /// Write-only: releases the global lock to the BIOS (would raise an SMI).
    pub const GBL_RLS: u16 = 1 << 2;
    pub const SUS_TYP_SHIFT: u32 = 10;
    pub const SUS_TYP_MASK: u16 = 0x7 << SUS_TYP_SHIFT;
    /// Write-only: enter the sleep state SUS_TYP selects.
    pub const SUS_EN: u16 = 1 << 13;
    pub const PMCNTRL_WRITABLE: u16 = SCI_EN | BRLD_EN_BM | SUS_TYP_MASK;
    /// SUS_TYP 000: soft off (S5). The DSDT's `_S5` package must say 0.
    pub const SUS_TYP_SOFT_OFF: u16 = 0;
    /// PMTMR (ACPI PM_TMR): 24-bit, read-only, 3.579545 MHz.
    pub const PMTMR: u8 = 0x08;
    pub const PM_TIMER_HZ: u64 = 3_579_545;
    pub const PM_TIMER_MASK: u32 = 0x00ff_ffff;
    /// TMROF_STS is set whenever bit 23 of the timer toggles.
    pub const PM_TIMER_MSB_SHIFT: u32 = 23;
    /// GPSTS (ACPI GPE0_STS), write 1 to clear; GPEN (GPE0_EN). Bits 0 and 8-11 exist.
    pub const GPSTS: u8 = 0x0c;
    pub const GPEN: u8 = 0x0e;
    pub const GP_BITS: u16 = 0x0f01;
    /// PCNTRL, processor control.
    pub const PCNTRL: u8 = 0x10;
    pub const PCNTRL_WRITABLE: u32 = 0x0002_3e1e;
    /// PLVL2/PLVL3: reading enters C2/C3 (a no-op here); read as 0.
    pub const PLVL2: u8 = 0x14;
    pub const PLVL3: u8 = 0x15;
    /// GLBSTS, global status, write 1 to clear, with read-only summary bits.
    pub const GLBSTS: u8 = 0x18;
    pub const GLBSTS_W1C: u16 = 0x0d25;
    pub const GLBSTS_DEVICE_SUMMARY: u16 = 1 << 4;
    pub const GLBSTS_PM1_SUMMARY: u16 = 1 << 6;
    pub const GLBSTS_GP_SUMMARY: u16 = 1 << 7;
    /// DEVSTS, device status (dword), write 1 to clear.
    pub const DEVSTS: u8 = 0x1c;
    /// GLBEN, global enable.
    pub const GLBEN: u8 = 0x20;
    pub const GLBEN_WRITABLE: u16 = 0x8d13;
    /// GLBCTL, global control (dword).
    pub const GLBCTL: u8 = 0x28;
    /// Write-only: BIOS releases the global lock, which sets GBL_STS.
    pub const BIOS_RLS: u32 = 1 << 1;
    pub const GLBCTL_WRITABLE: u32 = 0x0701_ffe5;
    /// DEVCTL, device control (dword).
    pub const DEVCTL: u8 = 0x2c;
    /// GPIREG, general purpose inputs (read-only, reads 0 here).
    pub const GPIREG: u8 = 0x30;
    /// Hyper-V's reset register at PMBA+0x33 (over GPIREG's top byte): writing
    /// [`HYPERV_RESET_VALUE`] resets the machine. Not in the PIIX4 datasheet; a FADT may point
    /// its RESET_REG here as Hyper-V's does.
    pub const HYPERV_RESET: u8 = 0x33;
    pub const HYPERV_RESET_VALUE: u8 = 0x01;
    /// GPOREG, general purpose outputs (dword).
    pub const GPOREG: u8 = 0x34;
    pub const GPOREG_RESET: u32 = 0x7fff_bfff;
    pub const GPOREG_WRITABLE: u32 = 0x7fff_ffff;
}

fn bit_set(set: u8, mask: u8) -> bool {
    set & mask != 0
}

// ------------------------------------------------------------------------------------------------
// Function 0: PCI-to-ISA bridge.

/// Saved state of [`Piix4Isa`]: the configuration space bytes.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Piix4IsaState {
    #[serde(with = "serde_big_array::BigArray")]
    pub config: [u8; pci::CONFIG_SPACE_SIZE],
}

/// The PIIX4 PCI-to-ISA bridge's configuration space (function 0). Interrupt routing is
/// reported, not applied: the VMM wires PCI interrupts to the IRQs the firmware programmed.
pub struct Piix4Isa {
    config: ConfigSpace,
}

impl Piix4Isa {
    /// A bridge with PIRQA-D routed to `pirq_irqs` (as the firmware programs them, usually
    /// `arch::layout::PIRQ_IRQS`); an IRQ that is not routable leaves that line disabled.
    pub fn new(pirq_irqs: [u8; 4]) -> Self {
        let mut c = ConfigSpace::new(
            spec::VENDOR_INTEL,
            spec::ISA_DEVICE_ID,
            spec::ISA_REVISION_ID,
            spec::ISA_CLASS_CODE,
        );
        c.set_u16(pci::COMMAND, spec::ISA_PCICMD);
        c.set_u16(pci::STATUS, spec::ISA_PCISTS);
        c.set_u8(pci::HEADER_TYPE, pci::HEADER_TYPE_MULTIFUNCTION);
        c.set_u16(pci::SUBSYSTEM_VENDOR_ID, spec::SUBSYSTEM_VENDOR_MICROSOFT);

        let mut reg = |off: u16, value: &[u8], mask: &[u8]| {
            c.set_bytes(off, value);
            for (i, &m) in mask.iter().enumerate() {
                c.set_writable_u8(off + i as u16, m);
            }
        };
        reg(spec::IORT, &[spec::IORT_RESET], &[0x7f]);
        reg(spec::XBCS, &spec::XBCS_RESET.to_le_bytes(), &[0xff, 0x07]);
        for (i, &irq) in pirq_irqs.iter().enumerate() {
            let v = if spec::PIRQ_VALID_IRQS.contains(&irq) {
                irq
            } else {
                spec::PIRQ_DISABLED
            };
            reg(spec::PIRQRC + i as u16, &[v], &[spec::PIRQ_WRITABLE]);
        }
        reg(spec::SERIRQC, &[spec::SERIRQC_RESET], &[0xff]);
        reg(spec::TOM, &[spec::TOM_RESET], &[0xfe]);
        reg(spec::MSTAT, &[0, 0], &[0xff, 0xff]);
        reg(
            spec::MBIRQ0,
            &[spec::MBIRQ_RESET, spec::MBIRQ_RESET],
            &[0xcf, 0xcf],
        );
        reg(
            spec::MBDMA0,
            &[spec::MBDMA_RESET, spec::MBDMA_RESET],
            &[0x87, 0x87],
        );
        reg(spec::PCSC, &spec::PCSC_RESET.to_le_bytes(), &[0xff, 0xff]);
        reg(spec::APICBASE, &[0], &[0x7f]);
        reg(spec::DLC, &[0], &[spec::DLC_WRITABLE]);
        reg(spec::PDMACFG, &[0, 0], &[0xff, 0xff]);
        reg(spec::DDMABP0, &[0; 4], &[0xff; 4]);
        reg(spec::SMICNTL, &[spec::SMICNTL_RESET], &[0x1f]);
        reg(spec::SMIEN, &[0, 0], &[0xff, 0xff]);
        reg(spec::SEE, &[0; 4], &[0xff; 4]);
        reg(spec::FTMR, &[spec::FTMR_RESET], &[0xff]);
        reg(spec::SMIREQ, &[0, 0], &[0xff, 0xff]);
        reg(spec::CTLTMR, &[0], &[0xff]);
        reg(spec::CTHTMR, &[0], &[0xff]);
        reg(spec::GENCFG, &[0; 4], &[0xff; 4]);
        reg(spec::RTCCFG, &[spec::RTCCFG_RESET], &[0x3f]);
        c.set_u32(spec::ISA_MANID, spec::ISA_MANID_VALUE);
        Self { config: c }
    }

    /// The ISA IRQ each of PIRQA-D is routed to, or None when routing is disabled or names a
    /// reserved IRQ.
    pub fn pirq_routing(&self) -> [Option<u8>; 4] {
        let mut r = [None; 4];
        for (i, slot) in r.iter_mut().enumerate() {
            let v = self.config.read_u8(spec::PIRQRC + i as u16);
            let irq = v & spec::PIRQ_IRQ_MASK;
            if !bit_set(v, spec::PIRQ_DISABLED) && spec::PIRQ_VALID_IRQS.contains(&irq) {
                *slot = Some(irq);
            }
        }
        r
    }

    pub fn state(&self) -> Piix4IsaState {
        Piix4IsaState {
            config: *self.config.bytes(),
        }
    }

    pub fn restore(&mut self, state: &Piix4IsaState) {
        self.config.restore_bytes(&state.config);
    }
}

impl PciFunction for Piix4Isa {
    fn config_read(&mut self, offset: u16) -> u32 {
        self.config.read_dword(offset)
    }

    fn config_write(&mut self, offset: u16, data: &[u8]) {
        let before = self.pirq_routing();
        self.config.write(offset, data);
        let after = self.pirq_routing();
        if after != before {
            log::info!(
                "PIIX4: guest changed PCI interrupt routing PIRQA-D from {before:?} to {after:?} \
                 (not applied)"
            );
        }
        let end = offset + data.len() as u16;
        // Section 3.1's registers above the header.
        const DEFINED: &[std::ops::Range<u16>] = &[
            0x4c..0x50, // IORT, XBCS
            0x60..0x65, // PIRQRC, SERIRQC
            0x69..0x6c, // TOM, MSTAT
            0x70..0x72, // MBIRQ
            0x76..0x7a, // MBDMA, PCSC
            0x80..0x81, // APICBASE
            0x82..0x83, // DLC
            0x90..0x96, // PDMACFG, DDMABP
            0xa0..0xb4, // SMICNTL .. GENCFG
            0xcb..0xcc, // RTCCFG
        ];
        if end > 0x40 && !DEFINED.iter().any(|r| r.start < end && offset < r.end) {
            warn_limited!(
                "PIIX4 ISA: write of {data:02x?} to undefined config register {offset:#04x} ignored"
            );
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Port 92h.

/// Saved state of [`Port92`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Port92State {
    pub value: u8,
}

/// PIIX4 port 92h: bit 1 fast A20 gate (remembered; KVM does not mask A20), bit 0 fast init
/// (a 0->1 write resets the machine). Insert it on the I/O bus at 0x92 with length 1.
pub struct Port92 {
    control: Arc<dyn VmControl>,
    value: u8,
}

impl Port92 {
    pub fn new(control: Arc<dyn VmControl>) -> Self {
        Self { control, value: 0 }
    }

    /// Whether the guest has enabled A20 through this port.
    pub fn a20_enabled(&self) -> bool {
        bit_set(self.value, spec::PORT92_A20)
    }

    pub fn state(&self) -> Port92State {
        Port92State { value: self.value }
    }

    pub fn restore(&mut self, state: &Port92State) {
        self.value = state.value & (spec::PORT92_A20 | spec::PORT92_FAST_INIT);
    }
}

impl BusDevice for Port92 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0xff);
        if let (0, Some(b)) = (offset, data.first_mut()) {
            *b = self.value;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset != 0 || data.len() != 1 {
            warn_limited!("port 92h: {}-byte write ignored", data.len());
            return;
        }
        let old = self.value;
        self.value = data[0] & (spec::PORT92_A20 | spec::PORT92_FAST_INIT);
        if bit_set(self.value, spec::PORT92_FAST_INIT) && !bit_set(old, spec::PORT92_FAST_INIT) {
            log::info!("guest requested a reset through port 92h");
            self.control.request(VmRequest::Reset);
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Function 3: power management, its I/O block.

/// Saved state of [`Piix4PmIo`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Piix4PmIoState {
    pub pmsts: u16,
    pub pmen: u16,
    pub pmcntrl: u16,
    /// The 24-bit PM timer value at saving; the timer continues from it.
    pub pm_timer: u32,
    pub gpsts: u16,
    pub gpen: u16,
    pub pcntrl: u32,
    pub glbsts: u16,
    pub devsts: u32,
    pub glben: u16,
    pub glbctl: u32,
    pub devctl: u32,
    pub gporeg: u32,
}

/// The PIIX4 power management I/O block (64 ports at PMBA): ACPI PM1 event and control
/// registers, the PM timer, the GPE0 block and the PIIX4 global registers. [`Piix4Pm`] maps it
/// where the guest's PMBA says.
///
/// The PM timer is computed from the clock on each read. TMROF_STS (timer bit 23 toggled) is
/// also computed lazily on each access; to raise the SCI for it on time the VMM may attach a
/// [`Timer`] with [`Piix4PmIo::set_overflow_timer`] and call [`Piix4PmIo::timer_expired`]. No
/// kettle guest needs that: Linux and Windows never enable TMROF_EN.
pub struct Piix4PmIo {
    // Runtime handles.
    sci: Irq,
    control: Arc<dyn VmControl>,
    clock: Arc<dyn Clock>,
    overflow_timer: Option<Box<dyn Timer>>,
    // Guest-visible state.
    pmsts: u16,
    pmen: u16,
    pmcntrl: u16,
    gpsts: u16,
    gpen: u16,
    pcntrl: u32,
    glbsts: u16,
    devsts: u32,
    glben: u16,
    glbctl: u32,
    devctl: u32,
    gporeg: u32,
    /// PM timer: ticks = timer_offset + (now - timer_base) * 3.579545 MHz.
    timer_base: i128,
    timer_offset: u64,
    /// Bit-23 toggles of the timer already reflected in TMROF_STS.
    timer_msb_seen: u64,
    sci_high: bool,
}

impl Piix4PmIo {
    /// The block as the firmware leaves it: SCI_EN set, everything else at reset values.
    pub fn new(sci: Irq, control: Arc<dyn VmControl>) -> Self {
        Self::with_clock(sci, control, Arc::new(MonotonicClock::new()))
    }

    /// Like [`Piix4PmIo::new`] with the clock the PM timer counts.
    pub fn with_clock(sci: Irq, control: Arc<dyn VmControl>, clock: Arc<dyn Clock>) -> Self {
        let now = clock.now().as_nanos() as i128;
        Self {
            sci,
            control,
            clock,
            overflow_timer: None,
            pmsts: 0,
            pmen: 0,
            // The firmware runs the machine in ACPI mode (the FADT has no SMI_CMD).
            pmcntrl: spec::SCI_EN,
            gpsts: 0,
            gpen: 0,
            pcntrl: 0,
            glbsts: 0,
            devsts: 0,
            glben: 0,
            glbctl: 0,
            devctl: 0,
            gporeg: spec::GPOREG_RESET,
            timer_base: now,
            timer_offset: 0,
            timer_msb_seen: 0,
            sci_high: false,
        }
    }

    /// Attaches a timer used to raise the SCI when the PM timer overflows with TMROF_EN set.
    pub fn set_overflow_timer(&mut self, timer: Box<dyn Timer>) {
        self.overflow_timer = Some(timer);
        let now = self.now();
        self.rearm(now);
    }

    /// To be called by the VMM when the overflow timer fires.
    pub fn timer_expired(&mut self) {
        let now = self.now();
        self.poll_timer(now);
        self.update_sci();
        self.rearm(now);
    }

    /// The power button: sets PWRBTN_STS and raises the SCI if the guest enabled PWRBTN_EN.
    /// Returns whether the guest is listening (PWRBTN_EN and SCI_EN set), so a caller can tell
    /// an ACPI shutdown request that will be seen from one that will not.
    pub fn press_power_button(&mut self) -> bool {
        self.pmsts |= spec::PWRBTN_STS;
        self.update_sci();
        self.pmen & spec::PWRBTN_EN != 0 && self.pmcntrl & spec::SCI_EN != 0
    }

    /// Latches general purpose event status bits (GPSTS bits 0 and 8-11) and updates the SCI.
    pub fn raise_gpe(&mut self, bits: u16) {
        self.gpsts |= bits & spec::GP_BITS;
        self.update_sci();
    }

    /// Whether the SCI line is asserted.
    pub fn sci_asserted(&self) -> bool {
        self.sci_high
    }

    pub fn state(&mut self) -> Piix4PmIoState {
        let now = self.now();
        self.poll_timer(now);
        Piix4PmIoState {
            pmsts: self.pmsts,
            pmen: self.pmen,
            pmcntrl: self.pmcntrl,
            pm_timer: (self.ticks(now) as u32) & spec::PM_TIMER_MASK,
            gpsts: self.gpsts,
            gpen: self.gpen,
            pcntrl: self.pcntrl,
            glbsts: self.glbsts,
            devsts: self.devsts,
            glben: self.glben,
            glbctl: self.glbctl,
            devctl: self.devctl,
            gporeg: self.gporeg,
        }
    }

    pub fn restore(&mut self, s: &Piix4PmIoState) {
        let now = self.now();
        self.pmsts = s.pmsts & spec::PMSTS_W1C;
        self.pmen = s.pmen & spec::PMEN_WRITABLE;
        self.pmcntrl = s.pmcntrl & spec::PMCNTRL_WRITABLE;
        self.timer_base = now;
        self.timer_offset = u64::from(s.pm_timer & spec::PM_TIMER_MASK);
        self.timer_msb_seen = self.timer_offset >> spec::PM_TIMER_MSB_SHIFT;
        self.gpsts = s.gpsts & spec::GP_BITS;
        self.gpen = s.gpen & spec::GP_BITS;
        self.pcntrl = s.pcntrl & spec::PCNTRL_WRITABLE;
        self.glbsts = s.glbsts & spec::GLBSTS_W1C;
        self.devsts = s.devsts;
        self.glben = s.glben & spec::GLBEN_WRITABLE;
        self.glbctl = s.glbctl & spec::GLBCTL_WRITABLE;
        self.devctl = s.devctl;
        self.gporeg = s.gporeg & spec::GPOREG_WRITABLE;
        self.update_sci();
        self.rearm(now);
    }

    fn now(&self) -> i128 {
        self.clock.now().as_nanos() as i128
    }

    fn ticks(&self, now: i128) -> u64 {
        let elapsed = (now - self.timer_base).max(0) as u128;
        self.timer_offset + (elapsed * u128::from(spec::PM_TIMER_HZ) / 1_000_000_000) as u64
    }

    /// Sets TMROF_STS if bit 23 of the timer toggled since the last look.
    fn poll_timer(&mut self, now: i128) {
        let toggles = self.ticks(now) >> spec::PM_TIMER_MSB_SHIFT;
        if toggles > self.timer_msb_seen {
            self.timer_msb_seen = toggles;
            self.pmsts |= spec::TMROF_STS;
        }
    }

    fn rearm(&mut self, now: i128) {
        let want = self.pmen & spec::TMROF_EN != 0
            && self.pmsts & spec::TMROF_STS == 0
            && self.pmcntrl & spec::SCI_EN != 0;
        let after = want.then(|| {
            let target = (self.timer_msb_seen + 1) << spec::PM_TIMER_MSB_SHIFT;
            let ticks = target.saturating_sub(self.timer_offset) as u128;
            let hz = u128::from(spec::PM_TIMER_HZ);
            let at = self.timer_base + ((ticks * 1_000_000_000).div_ceil(hz)) as i128;
            Duration::from_nanos((at - now).max(0) as u64)
        });
        if let Some(t) = self.overflow_timer.as_mut() {
            t.arm(after);
        }
    }

    /// SCI = SCI_EN and (an enabled PM1 event or an enabled GPE).
    fn update_sci(&mut self) {
        let pm1 = self.pmsts & self.pmen & spec::PMEN_WRITABLE != 0;
        let gpe = self.gpsts & self.gpen != 0;
        let level = self.pmcntrl & spec::SCI_EN != 0 && (pm1 || gpe);
        if level != self.sci_high {
            self.sci_high = level;
            self.sci.set_level(level);
        }
    }

    fn glbsts_with_summary(&self) -> u16 {
        let mut v = self.glbsts;
        if self.pmsts & !spec::TMROF_STS != 0 {
            v |= spec::GLBSTS_PM1_SUMMARY;
        }
        if self.gpsts != 0 {
            v |= spec::GLBSTS_GP_SUMMARY;
        }
        if self.devsts != 0 {
            v |= spec::GLBSTS_DEVICE_SUMMARY;
        }
        v
    }

    /// Byte `offset` of the block, or None for a reserved offset (which reads 0).
    fn read_byte(&self, offset: u8, timer: u32) -> Option<u8> {
        let b = |v: u32, base: u8| (v >> (8 * u32::from(offset - base))) as u8;
        Some(match offset {
            0x00..=0x01 => b(self.pmsts.into(), spec::PMSTS),
            0x02..=0x03 => b(self.pmen.into(), spec::PMEN),
            0x04..=0x05 => b(self.pmcntrl.into(), spec::PMCNTRL),
            0x08..=0x0b => b(timer, spec::PMTMR),
            0x0c..=0x0d => b(self.gpsts.into(), spec::GPSTS),
            0x0e..=0x0f => b(self.gpen.into(), spec::GPEN),
            0x10..=0x13 => b(self.pcntrl, spec::PCNTRL),
            spec::PLVL2 | spec::PLVL3 => 0,
            0x18..=0x19 => b(self.glbsts_with_summary().into(), spec::GLBSTS),
            0x1c..=0x1f => b(self.devsts, spec::DEVSTS),
            0x20..=0x21 => b(self.glben.into(), spec::GLBEN),
            0x28..=0x2b => b(self.glbctl, spec::GLBCTL),
            0x2c..=0x2f => b(self.devctl, spec::DEVCTL),
            0x30..=0x33 => 0,
            0x34..=0x37 => b(self.gporeg, spec::GPOREG),
            _ => return None,
        })
    }

    /// Writes byte `value` at `offset`; returns false for a reserved or read-only offset.
    fn write_byte(&mut self, offset: u8, value: u8) -> bool {
        fn put16(reg: &mut u16, byte: u8, value: u8, writable: u16) {
            let shift = 8 * u32::from(byte);
            let mask = writable & (0xff << shift);
            *reg = (*reg & !mask) | ((u16::from(value) << shift) & mask);
        }
        fn put32(reg: &mut u32, byte: u8, value: u8, writable: u32) {
            let shift = 8 * u32::from(byte);
            let mask = writable & (0xff << shift);
            *reg = (*reg & !mask) | ((u32::from(value) << shift) & mask);
        }
        fn clear16(reg: &mut u16, byte: u8, value: u8, w1c: u16) {
            *reg &= !((u16::from(value) << (8 * u32::from(byte))) & w1c);
        }
        match offset {
            0x00..=0x01 => clear16(&mut self.pmsts, offset, value, spec::PMSTS_W1C),
            0x02..=0x03 => put16(&mut self.pmen, offset - 2, value, spec::PMEN_WRITABLE),
            0x04 => {
                put16(&mut self.pmcntrl, 0, value, spec::PMCNTRL_WRITABLE);
                if u16::from(value) & spec::GBL_RLS != 0 {
                    log::debug!("PIIX4 PM: GBL_RLS written; SMI is not emulated");
                }
            }
            0x05 => {
                put16(&mut self.pmcntrl, 1, value, spec::PMCNTRL_WRITABLE);
                let v = u16::from(value) << 8;
                if v & spec::SUS_EN != 0 {
                    self.sleep((v & spec::SUS_TYP_MASK) >> spec::SUS_TYP_SHIFT);
                }
            }
            0x0c..=0x0d => clear16(&mut self.gpsts, offset - 0x0c, value, spec::GP_BITS),
            0x0e..=0x0f => put16(&mut self.gpen, offset - 0x0e, value, spec::GP_BITS),
            0x10..=0x13 => put32(
                &mut self.pcntrl,
                offset - 0x10,
                value,
                spec::PCNTRL_WRITABLE,
            ),
            spec::PLVL2 | spec::PLVL3 => {}
            0x18..=0x19 => clear16(&mut self.glbsts, offset - 0x18, value, spec::GLBSTS_W1C),
            0x1c..=0x1f => {
                self.devsts &= !(u32::from(value) << (8 * u32::from(offset - 0x1c)));
            }
            0x20..=0x21 => put16(&mut self.glben, offset - 0x20, value, spec::GLBEN_WRITABLE),
            0x28..=0x2b => {
                put32(
                    &mut self.glbctl,
                    offset - 0x28,
                    value,
                    spec::GLBCTL_WRITABLE,
                );
                if offset == 0x28 && u32::from(value) & spec::BIOS_RLS != 0 {
                    // The BIOS releasing the global lock raises GBL_STS for the OS.
                    self.pmsts |= spec::GBL_STS;
                }
            }
            0x2c..=0x2f => put32(&mut self.devctl, offset - 0x2c, value, u32::MAX),
            spec::HYPERV_RESET if value == spec::HYPERV_RESET_VALUE => {
                log::info!("guest requested a reset through the PM reset register");
                self.control.request(VmRequest::Reset);
            }
            0x34..=0x37 => put32(
                &mut self.gporeg,
                offset - 0x34,
                value,
                spec::GPOREG_WRITABLE,
            ),
            // The timer and GPIREG are read-only; the rest is reserved.
            _ => return false,
        }
        true
    }

    /// SUS_EN was written with sleep type `typ`.
    fn sleep(&mut self, typ: u16) {
        if typ == spec::SUS_TYP_SOFT_OFF {
            log::info!("guest entered S5 (soft off)");
            self.control.request(VmRequest::PowerOff);
        } else {
            // Sleeping states are not emulated: the machine wakes at once, as if a wake event
            // had arrived immediately.
            log::info!("guest requested sleep type {typ}; not emulated, waking at once");
            self.pmsts |= spec::WAK_STS;
        }
    }
}

impl BusDevice for Piix4PmIo {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let now = self.now();
        self.poll_timer(now);
        let timer = (self.ticks(now) as u32) & spec::PM_TIMER_MASK;
        let mut reserved = false;
        for (i, d) in data.iter_mut().enumerate() {
            let off = offset + i as u64;
            *d = match u8::try_from(off)
                .ok()
                .and_then(|o| self.read_byte(o, timer))
            {
                Some(v) => v,
                None => {
                    reserved |= i == 0;
                    0
                }
            };
        }
        if reserved {
            warn_limited!("PIIX4 PM: read of reserved offset {offset:#04x}");
        }
        self.update_sci();
        self.rearm(now);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let now = self.now();
        self.poll_timer(now);
        for (i, &v) in data.iter().enumerate() {
            let off = offset + i as u64;
            let ok = u8::try_from(off).is_ok_and(|o| self.write_byte(o, v));
            if !ok && i == 0 {
                warn_limited!(
                    "PIIX4 PM: write of {data:02x?} to read-only or reserved offset {offset:#04x}"
                );
            }
        }
        self.update_sci();
        self.rearm(now);
    }
}

// ------------------------------------------------------------------------------------------------
// Function 3: power management, its configuration space.

/// Saved state of [`Piix4Pm`]: the configuration space bytes (PMBA and PMREGMISC decide where
/// the PM I/O block is mapped after a restore).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Piix4PmState {
    #[serde(with = "serde_big_array::BigArray")]
    pub config: [u8; pci::CONFIG_SPACE_SIZE],
}

/// The PIIX4 power management function (function 3). It owns the PM I/O block and keeps it
/// mapped on the I/O bus at PMBA while PMREGMISC.PMIOSE is set.
pub struct Piix4Pm {
    // Runtime handles.
    io_bus: Arc<Bus>,
    pm_io: Arc<Mutex<Piix4PmIo>>,
    // Guest-visible state.
    config: ConfigSpace,
    /// Where the PM I/O block is currently inserted on `io_bus`.
    mapped_at: Option<u16>,
}

impl Piix4Pm {
    /// The function as the firmware leaves it, with its PM I/O block mapped at `PM_IO_BASE` on
    /// `io_bus`; `sci` is the ACPI SCI line (IRQ 9, level).
    pub fn new(io_bus: Arc<Bus>, sci: Irq, control: Arc<dyn VmControl>) -> Result<Self, BusError> {
        Self::with_pm_io(io_bus, Arc::new(Mutex::new(Piix4PmIo::new(sci, control))))
    }

    /// Like [`Piix4Pm::new`] with a PM I/O block built by the caller (another clock, a timer).
    pub fn with_pm_io(io_bus: Arc<Bus>, pm_io: Arc<Mutex<Piix4PmIo>>) -> Result<Self, BusError> {
        let mut c = ConfigSpace::new(
            spec::VENDOR_INTEL,
            spec::PM_DEVICE_ID,
            spec::PM_REVISION_ID,
            spec::PM_CLASS_CODE,
        );
        c.set_u16(pci::STATUS, spec::PM_PCISTS);
        c.set_writable_u16(pci::COMMAND, spec::PM_PCICMD_WRITABLE);
        c.set_writable_u8(pci::INTERRUPT_LINE, 0xff);
        c.set_u8(pci::INTERRUPT_PIN, spec::PM_INTERRUPT_PIN);
        c.set_u32(spec::PMBA, u32::from(PM_IO_BASE) | spec::PMBA_IO);
        c.set_writable_u32(spec::PMBA, spec::PMBA_MASK);
        let mut off = spec::CNTA;
        while off <= spec::DEVRESJ {
            c.set_writable_u32(off, u32::MAX);
            off += 4;
        }
        c.set_u8(spec::PMREGMISC, spec::PMREGMISC_PMIOSE);
        c.set_writable_u8(spec::PMREGMISC, spec::PMREGMISC_PMIOSE);
        c.set_u32(spec::SMBBA, u32::from(SMBUS_IO_BASE) | spec::PMBA_IO);
        c.set_writable_u32(spec::SMBBA, spec::SMBBA_MASK);
        c.set_writable_u8(spec::SMBHSTCFG, spec::SMBHSTCFG_WRITABLE);
        c.set_writable_u8(spec::SMBSLVC, 0xff);
        c.set_writable_u8(spec::SMBSHDW1, 0xff);
        c.set_writable_u8(spec::SMBSHDW2, 0xff);

        let mut pm = Self {
            io_bus,
            pm_io,
            config: c,
            mapped_at: None,
        };
        let base = pm.wanted_base().expect("the firmware enables PM I/O");
        pm.io_bus
            .insert(u64::from(base), u64::from(PM_IO_LEN), pm.pm_io.clone())?;
        pm.mapped_at = Some(base);
        Ok(pm)
    }

    /// The PM I/O block (for the power button and for saving its state).
    pub fn pm_io(&self) -> Arc<Mutex<Piix4PmIo>> {
        self.pm_io.clone()
    }

    /// The port the PM I/O block is mapped at, if it is.
    pub fn pm_base(&self) -> Option<u16> {
        self.mapped_at
    }

    pub fn state(&self) -> Piix4PmState {
        Piix4PmState {
            config: *self.config.bytes(),
        }
    }

    /// Restores the configuration space and maps the PM I/O block where it says. The block's
    /// own registers are restored through [`Piix4PmIo::restore`].
    pub fn restore(&mut self, state: &Piix4PmState) {
        self.config.restore_bytes(&state.config);
        self.update_mapping();
    }

    /// Where PMBA and PMIOSE say the block belongs. A base of 0 counts as unprogrammed.
    fn wanted_base(&self) -> Option<u16> {
        let enabled = bit_set(self.config.read_u8(spec::PMREGMISC), spec::PMREGMISC_PMIOSE);
        let base = (self.config.read_u32(spec::PMBA) & spec::PMBA_MASK) as u16;
        (enabled && base != 0).then_some(base)
    }

    /// Moves the PM I/O block to where the guest's PMBA/PMIOSE now say. The bus takes its own
    /// lock only inside insert/remove, and the block's mutex is not taken here, so this is safe
    /// from inside a configuration write dispatched by the same bus.
    fn update_mapping(&mut self) {
        let device: crate::bus::SharedDevice = self.pm_io.clone();
        let want = self.wanted_base();
        crate::bus::remap_io(
            &self.io_bus,
            &mut self.mapped_at,
            want,
            PM_IO_LEN,
            &device,
            "PIIX4 PM I/O block",
        );
    }
}

impl PciFunction for Piix4Pm {
    fn config_read(&mut self, offset: u16) -> u32 {
        self.config.read_dword(offset)
    }

    fn config_write(&mut self, offset: u16, data: &[u8]) {
        self.config.write(offset, data);
        let end = offset + data.len() as u16;
        let touches = |reg: u16, len: u16| offset < reg + len && reg < end;
        if touches(spec::PMBA, 4) || touches(spec::PMREGMISC, 1) {
            self.update_mapping();
        }
        let defined = end <= 0x40
            || (spec::PMBA..=spec::PMREGMISC).contains(&offset)
            || (spec::SMBBA..spec::SMBBA + 4).contains(&offset)
            || (spec::SMBHSTCFG..=spec::SMBREV).contains(&offset);
        if !defined {
            warn_limited!(
                "PIIX4 PM: write of {data:02x?} to undefined config register {offset:#04x} ignored"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::testing::{FakeControl, FakeIrq, FakeTimer};
    use crate::pci::{PciConfigMech1, PciRoot};
    use crate::rtc::testing::FakeClock;
    use crate::testing::cbor_round_trip;

    fn read8(f: &mut dyn PciFunction, off: u16) -> u8 {
        (f.config_read(off & !3) >> (8 * (off & 3))) as u8
    }

    // ---- ISA bridge ----

    #[test]
    fn isa_bridge_identity_is_read_only() {
        let mut d = Piix4Isa::new(arch::layout::PIRQ_IRQS);
        assert_eq!(d.config_read(0x00), 0x7110_8086);
        assert_eq!(d.config_read(0x04), 0x0200_0007);
        assert_eq!(d.config_read(0x08), 0x0601_0003);
        assert_eq!(d.config_read(0x0c), 0x0080_0000);
        assert_eq!(d.config_read(0x2c), 0x0000_1414);
        for off in [0x00, 0x04, 0x08, 0x0c, 0x2c] {
            let before = d.config_read(off);
            d.config_write(off, &[0xff; 4]);
            d.config_write(off, &[0; 4]);
            assert_eq!(d.config_read(off), before, "offset {off:#x}");
        }
    }

    #[test]
    fn pirq_routing_starts_as_the_firmware_programs_it() {
        let mut d = Piix4Isa::new([10, 10, 11, 11]);
        assert_eq!(d.config_read(0x60), 0x0b0b_0a0a);
        assert_eq!(d.pirq_routing(), [Some(10), Some(10), Some(11), Some(11)]);
        // Disable PIRQC, route PIRQD to 5; reserved bits 6:4 stay 0.
        d.config_write(0x62, &[0x80, 0x75]);
        assert_eq!(d.config_read(0x60), 0x0580_0a0a);
        assert_eq!(d.pirq_routing(), [Some(10), Some(10), None, Some(5)]);
        // IRQ 2 is reserved.
        d.config_write(0x60, &[0x02]);
        assert_eq!(d.pirq_routing()[0], None);
        // An unroutable firmware value leaves the line disabled, as at reset.
        let mut e = Piix4Isa::new([0, 13, 9, 16]);
        assert_eq!(e.config_read(0x60), 0x8009_8080);
        assert_eq!(e.pirq_routing(), [None, None, Some(9), None]);
    }

    #[test]
    fn isa_bridge_registers_have_datasheet_reset_values() {
        let mut d = Piix4Isa::new([10, 10, 11, 11]);
        assert_eq!(d.config_read(0x4c), 0x0003_004d);
        assert_eq!(read8(&mut d, 0x64), 0x10);
        assert_eq!(read8(&mut d, 0x69), 0x02);
        assert_eq!(d.config_read(0x70), 0x0000_8080);
        assert_eq!(d.config_read(0x74), 0x0404_0000);
        assert_eq!(d.config_read(0x78), 0x0000_0002);
        assert_eq!(d.config_read(0x80), 0);
        assert_eq!(d.config_read(0xa0), 0x0000_0008);
        assert_eq!(d.config_read(0xa8), 0x0000_000f);
        assert_eq!(read8(&mut d, 0xcb), 0x21);
        assert_eq!(d.config_read(0xf8), 0x0000_0f30);
        // Writable and remembered.
        d.config_write(0x69, &[0xfa]);
        assert_eq!(read8(&mut d, 0x69), 0xfa);
        d.config_write(0x82, &[0xff]);
        assert_eq!(read8(&mut d, 0x82), 0x0f);
        d.config_write(0x64, &[0xd0]);
        assert_eq!(read8(&mut d, 0x64), 0xd0);
        // Undefined registers read 0 and ignore writes.
        for off in [0x40, 0x44, 0x84, 0xc0, 0xe0, 0xfc] {
            d.config_write(off, &[0xff; 4]);
            assert_eq!(d.config_read(off), 0, "offset {off:#x}");
        }
    }

    #[test]
    fn isa_state_round_trips() {
        let mut d = Piix4Isa::new([10, 10, 11, 11]);
        d.config_write(0x61, &[0x0e]);
        let s = d.state();
        let mut e = Piix4Isa::new([10, 10, 11, 11]);
        e.restore(&s);
        assert_eq!(e.state(), s);
        assert_eq!(e.pirq_routing()[1], Some(14));
    }

    #[test]
    fn isa_state_round_trips_through_cbor() {
        let mut d = Piix4Isa::new([10, 10, 11, 11]);
        d.config_write(0x60, &[0x05, 0x80, 0x0b, 0x0e]);
        d.config_write(0x4e, &[0x03, 0x02]);
        let s = d.state();
        let mut e = Piix4Isa::new([10, 10, 11, 11]);
        e.restore(&cbor_round_trip(&s));
        assert_eq!(e.state(), s);
        assert_eq!(e.pirq_routing(), [Some(5), None, Some(11), Some(14)]);
        assert_eq!(e.pirq_routing(), d.pirq_routing());
        for off in (0..0x100).step_by(4) {
            assert_eq!(e.config_read(off), d.config_read(off), "offset {off:#x}");
        }
    }

    // ---- Port 92h ----

    #[test]
    fn port92_a20_and_fast_init() {
        let control = Arc::new(FakeControl::default());
        let mut p = Port92::new(control.clone());
        let mut b = [0];
        p.read(0, &mut b);
        assert_eq!(b[0], 0);
        assert!(!p.a20_enabled());
        p.write(0, &[0x02]);
        assert!(p.a20_enabled());
        p.read(0, &mut b);
        assert_eq!(b[0], 0x02);
        assert!(control.requests.lock().unwrap().is_empty());
        p.write(0, &[0x03]);
        assert_eq!(*control.requests.lock().unwrap(), vec![VmRequest::Reset]);
        // Writing 1 again without going through 0 is not a new edge.
        p.write(0, &[0x03]);
        assert_eq!(control.requests.lock().unwrap().len(), 1);
        p.write(0, &[0x02]);
        p.write(0, &[0x01]);
        assert_eq!(control.requests.lock().unwrap().len(), 2);
        assert!(!p.a20_enabled());
        // Reserved bits read 0.
        p.write(0, &[0xfc]);
        p.read(0, &mut b);
        assert_eq!(b[0], 0x00);
        let s = p.state();
        let mut q = Port92::new(control);
        q.restore(&s);
        assert_eq!(q.state(), s);
    }

    #[test]
    fn port92_state_round_trips_through_cbor() {
        let control = Arc::new(FakeControl::default());
        let mut p = Port92::new(control.clone());
        p.write(0, &[0x02]);
        let s = p.state();
        let mut q = Port92::new(control.clone());
        q.restore(&cbor_round_trip(&s));
        assert_eq!(q.state(), s);
        assert!(q.a20_enabled());
        let (mut a, mut b) = ([0u8], [0u8]);
        p.read(0, &mut a);
        q.read(0, &mut b);
        assert_eq!(a, b);
        // Fast init from the restored value is a new edge.
        q.write(0, &[0x03]);
        assert_eq!(*control.requests.lock().unwrap(), vec![VmRequest::Reset]);
    }

    // ---- PM I/O block ----

    struct Pm {
        io: Piix4PmIo,
        sci: Arc<FakeIrq>,
        control: Arc<FakeControl>,
        clock: Arc<FakeClock>,
    }

    fn pm_io() -> Pm {
        let sci = Arc::new(FakeIrq::default());
        let control = Arc::new(FakeControl::default());
        let clock = Arc::new(FakeClock::default());
        clock.advance(Duration::from_secs(5));
        let io = Piix4PmIo::with_clock(sci.clone(), control.clone(), clock.clone());
        Pm {
            io,
            sci,
            control,
            clock,
        }
    }

    impl Pm {
        fn inw(&mut self, off: u64) -> u16 {
            let mut d = [0; 2];
            self.io.read(off, &mut d);
            u16::from_le_bytes(d)
        }
        fn inl(&mut self, off: u64) -> u32 {
            let mut d = [0; 4];
            self.io.read(off, &mut d);
            u32::from_le_bytes(d)
        }
        fn outw(&mut self, off: u64, v: u16) {
            self.io.write(off, &v.to_le_bytes());
        }
        fn outl(&mut self, off: u64, v: u32) {
            self.io.write(off, &v.to_le_bytes());
        }
    }

    #[test]
    fn pm1_control_starts_in_acpi_mode() {
        let mut p = pm_io();
        assert_eq!(p.inw(0x00), 0);
        assert_eq!(p.inw(0x02), 0);
        assert_eq!(p.inw(0x04), spec::SCI_EN);
        assert_eq!(p.inl(0x34), 0x7fff_bfff);
        assert!(!p.sci.is_high());
    }

    #[test]
    fn pm1_status_is_write_one_to_clear_and_enables_mask() {
        let mut p = pm_io();
        p.outw(0x02, 0xffff);
        assert_eq!(p.inw(0x02), spec::PMEN_WRITABLE);
        // Status bits cannot be set by writing.
        p.outw(0x00, 0xffff);
        assert_eq!(p.inw(0x00), 0);
        p.io.press_power_button();
        assert_eq!(p.inw(0x00), spec::PWRBTN_STS);
        // Writing 0 or other bits does not clear it; writing its bit does.
        p.outw(0x00, spec::TMROF_STS);
        assert_eq!(p.inw(0x00), spec::PWRBTN_STS);
        p.io.write(0x01, &[0x01]);
        assert_eq!(p.inw(0x00), 0);
    }

    #[test]
    fn power_button_raises_sci_only_when_enabled() {
        let mut p = pm_io();
        assert!(!p.io.press_power_button());
        assert!(!p.sci.is_high());
        // Enabling the event with the status pending raises the SCI at once (level).
        p.outw(0x02, spec::PWRBTN_EN);
        assert!(p.sci.is_high());
        assert!(p.io.sci_asserted());
        p.outw(0x00, spec::PWRBTN_STS);
        assert!(!p.sci.is_high());
        assert!(p.io.press_power_button());
        assert!(p.sci.is_high());
        // With SCI_EN clear events go to SMI, which is not emulated: the SCI drops.
        p.outw(0x04, 0);
        assert!(!p.sci.is_high());
        assert!(!p.io.press_power_button());
        p.outw(0x04, spec::SCI_EN);
        assert!(p.sci.is_high());
        assert_eq!(p.sci.edges(), 3);
    }

    #[test]
    fn general_purpose_events_raise_sci() {
        let mut p = pm_io();
        p.io.raise_gpe(0x0100 | 0x0002);
        assert_eq!(p.inw(0x0c), 0x0100);
        assert!(!p.sci.is_high());
        p.outw(0x0e, 0xffff);
        assert_eq!(p.inw(0x0e), spec::GP_BITS);
        assert!(p.sci.is_high());
        // GLBSTS summarises it.
        assert_eq!(
            p.inw(0x18) & spec::GLBSTS_GP_SUMMARY,
            spec::GLBSTS_GP_SUMMARY
        );
        p.outw(0x0c, 0x0100);
        assert_eq!(p.inw(0x0c), 0);
        assert!(!p.sci.is_high());
    }

    #[test]
    fn sleep_enable_with_type_0_powers_off() {
        let mut p = pm_io();
        // SUS_TYP = 0, SUS_EN, SCI_EN kept.
        p.outw(0x04, spec::SUS_EN | spec::SCI_EN);
        assert_eq!(
            *p.control.requests.lock().unwrap(),
            vec![VmRequest::PowerOff]
        );
        // SUS_EN is write-only.
        assert_eq!(p.inw(0x04), spec::SCI_EN);
        // A byte write of the high half alone works too (SUS_TYP and SUS_EN share it).
        p.io.write(0x05, &[0x20]);
        assert_eq!(p.control.requests.lock().unwrap().len(), 2);
    }

    #[test]
    fn other_sleep_types_wake_at_once() {
        let mut p = pm_io();
        // S1 as SUS_TYP 1.
        p.outw(0x04, spec::SUS_EN | 1 << spec::SUS_TYP_SHIFT | spec::SCI_EN);
        assert!(p.control.requests.lock().unwrap().is_empty());
        assert_eq!(p.inw(0x00), spec::WAK_STS);
        assert_eq!(p.inw(0x04), 1 << spec::SUS_TYP_SHIFT | spec::SCI_EN);
        p.outw(0x00, spec::WAK_STS);
        assert_eq!(p.inw(0x00), 0);
        // Writing SUS_TYP without SUS_EN does nothing.
        p.outw(0x04, 5 << spec::SUS_TYP_SHIFT | spec::SCI_EN);
        assert_eq!(p.inw(0x00), 0);
    }

    #[test]
    fn pm_timer_counts_at_3_579545_mhz_and_is_read_only() {
        let mut p = pm_io();
        assert_eq!(p.inl(0x08), 0);
        p.clock.advance(Duration::from_secs(1));
        assert_eq!(p.inl(0x08), 3_579_545);
        p.outl(0x08, 0);
        assert_eq!(p.inl(0x08), 3_579_545);
        p.clock.advance(Duration::from_micros(1));
        assert_eq!(p.inl(0x08), 3_579_548);
        // Byte reads see the same counter; bits 31:24 read 0.
        let mut b = [0; 1];
        p.io.read(0x0a, &mut b);
        assert_eq!(b[0], (3_579_548u32 >> 16) as u8);
        p.io.read(0x0b, &mut b);
        assert_eq!(b[0], 0);
        // 24 bits wrap.
        p.clock.advance(Duration::from_secs(4));
        assert_eq!(p.inl(0x08), (3_579_548 + 4 * 3_579_545) & 0xff_ffff);
    }

    #[test]
    fn timer_overflow_status_follows_bit_23() {
        let mut p = pm_io();
        // 2^23 ticks take 2.3435 s.
        p.clock.advance(Duration::from_millis(2343));
        assert_eq!(p.inw(0x00) & spec::TMROF_STS, 0);
        p.clock.advance(Duration::from_millis(1));
        assert_eq!(p.inw(0x00) & spec::TMROF_STS, spec::TMROF_STS);
        p.outw(0x00, spec::TMROF_STS);
        assert_eq!(p.inw(0x00) & spec::TMROF_STS, 0);
        // The 1->0 toggle of bit 23 (the wrap) sets it again.
        p.clock.advance(Duration::from_millis(2344));
        assert_eq!(p.inw(0x00) & spec::TMROF_STS, spec::TMROF_STS);
    }

    #[test]
    fn overflow_timer_raises_sci_on_time_when_enabled() {
        let mut p = pm_io();
        let timer = FakeTimer::default();
        p.io.set_overflow_timer(Box::new(timer.clone()));
        assert_eq!(*timer.armed.lock().unwrap(), None);
        p.outw(0x02, spec::TMROF_EN);
        let d = timer.armed.lock().unwrap().expect("armed");
        assert_eq!(d, Duration::from_nanos(2_343_484_438));
        p.clock.advance(d);
        p.io.timer_expired();
        assert!(p.sci.is_high());
        assert_eq!(*timer.armed.lock().unwrap(), None);
        p.outw(0x00, spec::TMROF_STS);
        assert!(!p.sci.is_high());
        let d = timer.armed.lock().unwrap().expect("re-armed");
        assert!(d > Duration::from_millis(2343) && d < Duration::from_millis(2344));
    }

    #[test]
    fn global_registers() {
        let mut p = pm_io();
        p.outl(0x10, 0xffff_ffff);
        assert_eq!(p.inl(0x10), spec::PCNTRL_WRITABLE);
        p.outw(0x20, 0xffff);
        assert_eq!(p.inw(0x20), spec::GLBEN_WRITABLE);
        p.outl(0x2c, 0x1234_5678);
        assert_eq!(p.inl(0x2c), 0x1234_5678);
        p.outl(0x34, 0xffff_ffff);
        assert_eq!(p.inl(0x34), spec::GPOREG_WRITABLE);
        // BIOS_RLS is write-only and raises GBL_STS, an SCI source with GBL_EN.
        p.outw(0x02, spec::GBL_EN);
        p.outl(0x28, 0xffff_ffff);
        assert_eq!(p.inl(0x28), spec::GLBCTL_WRITABLE);
        assert_eq!(p.inw(0x00), spec::GBL_STS);
        assert!(p.sci.is_high());
        assert_eq!(p.inw(0x18), spec::GLBSTS_PM1_SUMMARY);
        // PLVL2/3, GPIREG and reserved offsets read 0.
        assert_eq!(p.inw(0x14), 0);
        assert_eq!(p.inl(0x30), 0);
        assert_eq!(p.inw(0x06), 0);
        assert_eq!(p.inl(0x38), 0);
        assert_eq!(p.inl(0x3c), 0);
        p.outl(0x38, 0xffff_ffff);
        assert!(p.control.requests.lock().unwrap().is_empty());
    }

    #[test]
    fn hyperv_reset_register() {
        let mut p = pm_io();
        p.io.write(0x33, &[0x00]);
        assert!(p.control.requests.lock().unwrap().is_empty());
        p.io.write(0x33, &[0x01]);
        assert_eq!(*p.control.requests.lock().unwrap(), vec![VmRequest::Reset]);
    }

    #[test]
    fn pm_io_state_round_trips_and_the_timer_continues() {
        let mut p = pm_io();
        p.outw(0x02, spec::PWRBTN_EN);
        p.io.press_power_button();
        p.outw(0x0e, 0x0001);
        p.clock.advance(Duration::from_millis(1500));
        let s = p.io.state();
        assert_eq!(s.pm_timer, 5_369_317);
        let mut q = pm_io();
        q.clock.advance(Duration::from_secs(100));
        q.io.restore(&s);
        assert!(q.sci.is_high());
        assert_eq!(q.io.state(), s);
        assert_eq!(q.inl(0x08), 5_369_317);
        q.clock.advance(Duration::from_secs(1));
        assert_eq!(q.inl(0x08), 5_369_317 + 3_579_545);
    }

    #[test]
    fn pm_io_state_round_trips_through_cbor() {
        let mut p = pm_io();
        p.outw(0x02, spec::PWRBTN_EN);
        p.io.press_power_button();
        p.outw(0x0e, 0x0001);
        p.io.raise_gpe(0x0001);
        p.outl(0x2c, 0x1234_5678);
        p.outl(0x34, 0x0000_ffff);
        p.clock.advance(Duration::from_millis(250));
        let s = p.io.state();
        let mut q = pm_io();
        q.clock.advance(Duration::from_secs(30));
        q.io.restore(&cbor_round_trip(&s));
        assert_eq!(q.io.state(), s);
        assert!(q.sci.is_high());
        // Every register and the timer read the same, now and a second later.
        for _ in 0..2 {
            for off in (0..0x38).step_by(4) {
                assert_eq!(q.inl(off), p.inl(off), "offset {off:#x}");
            }
            p.clock.advance(Duration::from_secs(1));
            q.clock.advance(Duration::from_secs(1));
        }
        // Clearing the status drops the SCI on both.
        for m in [&mut p, &mut q] {
            m.outw(0x00, spec::PWRBTN_STS);
            m.outw(0x0c, 0x0001);
            assert!(!m.sci.is_high());
        }
    }

    // ---- PM function and its mapping ----

    fn pm_machine() -> (Arc<Bus>, Arc<Mutex<Piix4Pm>>, Arc<FakeIrq>) {
        let bus = Arc::new(Bus::new());
        let sci = Arc::new(FakeIrq::default());
        let control = Arc::new(FakeControl::default());
        let pm = Piix4Pm::new(bus.clone(), sci.clone(), control.clone()).unwrap();
        let pm = Arc::new(Mutex::new(pm));
        let mut root = PciRoot::new();
        root.add((7, 3), pm.clone()).unwrap();
        let mech = PciConfigMech1::new(Arc::new(Mutex::new(root)), control);
        bus.insert(0xcf8, 8, Arc::new(Mutex::new(mech))).unwrap();
        (bus, pm, sci)
    }

    fn cfg_write(bus: &Bus, reg: u32, data: &[u8]) {
        let a: u32 = 0x8000_0000 | 7 << 11 | 3 << 8 | (reg & 0xfc);
        bus.write(0xcf8, &a.to_le_bytes());
        bus.write(0xcfc + u64::from(reg & 3), data);
    }

    fn cfg_read(bus: &Bus, reg: u32) -> u32 {
        let a: u32 = 0x8000_0000 | 7 << 11 | 3 << 8 | reg;
        bus.write(0xcf8, &a.to_le_bytes());
        let mut d = [0; 4];
        bus.read(0xcfc, &mut d);
        u32::from_le_bytes(d)
    }

    fn pm1_cnt_at(bus: &Bus, base: u16) -> Option<u16> {
        let mut d = [0; 2];
        bus.read(u64::from(base) + 4, &mut d)
            .then(|| u16::from_le_bytes(d))
    }

    #[test]
    fn pm_function_identity_and_firmware_state() {
        let (bus, pm, _) = pm_machine();
        assert_eq!(cfg_read(&bus, 0x00), 0x7113_8086);
        assert_eq!(cfg_read(&bus, 0x04), 0x0280_0000);
        assert_eq!(cfg_read(&bus, 0x08), 0x0680_0002);
        assert_eq!(cfg_read(&bus, 0x0c), 0);
        assert_eq!(cfg_read(&bus, 0x3c), 0x0000_0100);
        assert_eq!(cfg_read(&bus, 0x40), 0x0000_0601);
        assert_eq!(cfg_read(&bus, 0x80), 0x0000_0001);
        assert_eq!(cfg_read(&bus, 0x90), 0x0000_0701);
        assert_eq!(cfg_read(&bus, 0xd0), 0);
        assert_eq!(pm.lock().unwrap().pm_base(), Some(0x600));
        assert_eq!(pm1_cnt_at(&bus, 0x600), Some(spec::SCI_EN));
        // Read-only identity; PMBA's I/O bit and low bits are fixed.
        cfg_write(&bus, 0x00, &[0xff; 4]);
        assert_eq!(cfg_read(&bus, 0x00), 0x7113_8086);
        cfg_write(&bus, 0x90, &0xffff_ffffu32.to_le_bytes());
        assert_eq!(cfg_read(&bus, 0x90), 0x0000_fff1);
        cfg_write(&bus, 0xd2, &[0xff]);
        assert_eq!(cfg_read(&bus, 0xd0), 0x000f_0000);
        // DEVACTB and friends are remembered.
        cfg_write(&bus, 0x58, &0x0200_0000u32.to_le_bytes());
        assert_eq!(cfg_read(&bus, 0x58), 0x0200_0000);
        // Undefined registers read 0.
        cfg_write(&bus, 0x84, &[0xff; 4]);
        assert_eq!(cfg_read(&bus, 0x84), 0);
    }

    #[test]
    fn rewriting_pmba_moves_the_block_from_inside_a_config_write() {
        let (bus, pm, _) = pm_machine();
        // The 16-bit write covers PMBA bits 15:0; 0x803 keeps bit 0 and drops bits 5:1.
        cfg_write(&bus, 0x40, &0x0803u16.to_le_bytes());
        assert_eq!(cfg_read(&bus, 0x40), 0x0000_0801);
        assert_eq!(pm.lock().unwrap().pm_base(), Some(0x800));
        assert_eq!(pm1_cnt_at(&bus, 0x600), None);
        assert_eq!(pm1_cnt_at(&bus, 0x800), Some(spec::SCI_EN));
        // Clearing PMIOSE unmaps it; setting it maps it back.
        cfg_write(&bus, 0x80, &[0]);
        assert_eq!(pm.lock().unwrap().pm_base(), None);
        assert_eq!(pm1_cnt_at(&bus, 0x800), None);
        cfg_write(&bus, 0x41, &[0x04]);
        cfg_write(&bus, 0x80, &[1]);
        assert_eq!(pm.lock().unwrap().pm_base(), Some(0x400));
        assert_eq!(pm1_cnt_at(&bus, 0x400), Some(spec::SCI_EN));
        // A base of 0 is treated as unprogrammed.
        cfg_write(&bus, 0x40, &[0, 0, 0, 0]);
        assert_eq!(pm.lock().unwrap().pm_base(), None);
    }

    #[test]
    fn a_conflicting_base_leaves_the_block_unmapped_until_fixed() {
        let (bus, pm, _) = pm_machine();
        struct Other;
        impl BusDevice for Other {
            fn read(&mut self, _: u64, d: &mut [u8]) {
                d.fill(0x11);
            }
            fn write(&mut self, _: u64, _: &[u8]) {}
        }
        bus.insert(0x900, 8, Arc::new(Mutex::new(Other))).unwrap();
        cfg_write(&bus, 0x40, &0x0900u16.to_le_bytes());
        assert_eq!(pm.lock().unwrap().pm_base(), None);
        assert_eq!(pm1_cnt_at(&bus, 0x900), Some(0x1111));
        cfg_write(&bus, 0x40, &0x0a00u16.to_le_bytes());
        assert_eq!(pm.lock().unwrap().pm_base(), Some(0xa00));
    }

    #[test]
    fn power_button_through_the_function_reaches_the_sci_line() {
        let (bus, pm, sci) = pm_machine();
        bus.write(0x602, &spec::PWRBTN_EN.to_le_bytes());
        let io = pm.lock().unwrap().pm_io();
        assert!(io.lock().unwrap().press_power_button());
        assert!(sci.is_high());
        bus.write(0x600, &spec::PWRBTN_STS.to_le_bytes());
        assert!(!sci.is_high());
    }

    #[test]
    fn pm_function_state_restores_the_mapping() {
        let (bus, pm, _) = pm_machine();
        cfg_write(&bus, 0x40, &0x0b00u16.to_le_bytes());
        let s = pm.lock().unwrap().state();
        // Move it elsewhere, then restore.
        cfg_write(&bus, 0x40, &0x0c00u16.to_le_bytes());
        pm.lock().unwrap().restore(&s);
        assert_eq!(pm.lock().unwrap().pm_base(), Some(0xb00));
        assert_eq!(pm1_cnt_at(&bus, 0xc00), None);
        assert_eq!(pm1_cnt_at(&bus, 0xb00), Some(spec::SCI_EN));
        assert_eq!(pm.lock().unwrap().state(), s);
    }

    #[test]
    fn pm_function_state_round_trips_through_cbor() {
        let (bus, pm, _) = pm_machine();
        cfg_write(&bus, 0x40, &0x0e00u16.to_le_bytes());
        cfg_write(&bus, 0x58, &0x0200_0000u32.to_le_bytes());
        cfg_write(&bus, 0x3c, &[0x09]);
        let s = pm.lock().unwrap().state();
        let (bus2, pm2, _) = pm_machine();
        pm2.lock().unwrap().restore(&cbor_round_trip(&s));
        assert_eq!(pm2.lock().unwrap().state(), s);
        assert_eq!(pm2.lock().unwrap().pm_base(), Some(0xe00));
        assert_eq!(pm1_cnt_at(&bus2, 0x600), None);
        assert_eq!(pm1_cnt_at(&bus2, 0xe00), pm1_cnt_at(&bus, 0xe00));
        for reg in (0..0x100).step_by(4) {
            assert_eq!(cfg_read(&bus2, reg), cfg_read(&bus, reg), "offset {reg:#x}");
        }
    }
}
