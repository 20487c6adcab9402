//! The Differentiated System Description Table: the AML namespace of kettle's PC.
//!
//! ```text
//! \PICM, \_PIC      interrupt model the OS chose (recorded only: the _PRT is the same for both)
//! \_S5_             soft-off: SLP_TYP 0 in PM1a_CNT (PIIX4 datasheet 7.2.3, PMCNTRL SUS_TYP 000)
//! \_PR_.Cnnn        one Processor per vCPU, ids as in the MADT (ACPI 1.0/2.0 OSes look here)
//! \_SB_.PCI0        i440BX host bridge: bus 0-255, I/O and memory windows, _PRT
//! \_SB_.PCI0.ISA_   PIIX4 function 0 (00:07.0) and the legacy devices behind it
//! ```
//!
//! Built with `acpi_tables::aml`, plus the two encodings that crate lacks: the 2-byte IRQ
//! descriptor (`IRQNoFlags`) and the `Processor` object.

use acpi_tables::aml::{
    AddressSpace, AddressSpaceCacheable, Arg, Device, EISAName, Method, Name, Package,
    PackageBuilder, Path, ResourceTemplate, Scope, Store, IO, ZERO,
};
use acpi_tables::sdt::Sdt;
use acpi_tables::{Aml, AmlSink};
use arch::layout::{
    COM1_IRQ, COM1_PORT, COM2_IRQ, COM2_PORT, I8042_CMD_PORT, I8042_DATA_PORT, IOAPIC_ADDR,
    KEYBOARD_IRQ, LEGACY_WINDOW_START, LPT1_IRQ, LPT1_PORT, MOUSE_IRQ, PCI_CONFIG_PORT, PIRQ_IRQS,
    PM_IO_BASE, PM_IO_LEN, RTC_IRQ, RTC_PORT, SMBUS_IO_BASE, VGA_END,
};

use super::{AcpiConfig, OEM_ID, OEM_REVISION, OEM_TABLE_ID};

/// Fixed facts of the PC/AT and the PIIX4 that `arch::layout` does not name.
mod spec {
    /// DSDT revision 1: AML integers are 32 bits (nothing here needs more).
    pub const DSDT_REVISION: u8 = 1;

    /// Small resource item "IRQ Descriptor" without the information byte (ACPI 2.0c 6.4.2.1):
    /// type 0x04, length 2. It means edge-triggered, active-high, exclusive: an ISA IRQ.
    pub const IRQ_NO_FLAGS_TAG: u8 = (0x04 << 3) | 2;
    /// `ProcessorOp` (ACPI 2.0c 16.2.5.2): ExtOpPrefix 0x5B, 0x83.
    pub const EXT_OP_PREFIX: u8 = 0x5b;
    pub const PROCESSOR_OP: u8 = 0x83;

    /// Master and slave 8259 command/data ports, and the PIIX4 edge/level control registers
    /// (PIIX4 datasheet 4.1.13, ELCR1/ELCR2).
    pub const PIC_MASTER_PORT: u16 = 0x20;
    pub const PIC_SLAVE_PORT: u16 = 0xa0;
    pub const PIC_ELCR_PORT: u16 = 0x4d0;
    /// The slave 8259 cascades into the master's IRQ 2.
    pub const PIC_CASCADE_IRQ: u8 = 2;
    /// 8254 counters 0-2 and control word.
    pub const PIT_PORT: u16 = 0x40;
    pub const PIT_PORT_LEN: u8 = 4;
    pub const PIT_IRQ: u8 = 0;
    /// The math coprocessor error ports (0xF0 clear busy, 0xF1 reset) and its IRQ.
    pub const FPU_PORT: u16 = 0xf0;
    pub const FPU_PORT_LEN: u8 = 0x10;
    pub const FPU_IRQ: u8 = 13;
    pub const RTC_PORT_LEN: u8 = 2;
    pub const UART_PORT_LEN: u8 = 8;
    pub const LPT_PORT_LEN: u8 = 8;
    pub const PCI_CONFIG_PORT_LEN: u8 = 8;
    /// The PIIX4 SMBus I/O block (SMBBA, PIIX4 datasheet 7.3): 16 bytes.
    pub const SMBUS_IO_LEN: u8 = 0x10;

    /// _ADR of PIIX4 function 0, the PCI-to-ISA bridge at 00:07.0: device << 16 | function.
    pub const ISA_BRIDGE_ADR: u32 = 0x0007_0000;
    /// PCI devices per bus and interrupt pins per device (INTA#-INTD#).
    pub const PCI_SLOTS: u32 = 32;
    pub const PCI_PINS: u32 = 4;
    /// _PRT address for "any function of device s": s << 16 | 0xFFFF.
    pub const PRT_ANY_FUNCTION: u32 = 0xffff;

    /// Top of the 32-bit PCI memory window: the IOAPIC, LAPIC and BIOS ROM alias sit above it.
    pub const PCI_MMIO_END: u64 = 0xfebf_ffff;
    /// The 64-bit window above high RAM: starts at the next 1 GiB boundary, 32 GiB long (what
    /// QEMU's i440FX offers by default, well within a 39-bit physical address space).
    pub const PCI_MMIO64_ALIGN: u64 = 1 << 30;
    pub const PCI_MMIO64_SIZE: u64 = 32 << 30;
}

// The 32-bit window must stop below the IOAPIC (and so below the LAPIC and the BIOS alias).
const _: () = assert!(spec::PCI_MMIO_END < IOAPIC_ADDR);

/// Already-serialized AML, so that dynamically built pieces can be children of a Device or Scope
/// (the `aml` builders borrow their children).
struct Raw(Vec<u8>);

impl Aml for Raw {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        sink.vec(&self.0);
    }
}

fn raw(aml: &dyn Aml) -> Raw {
    let mut bytes = Vec::new();
    aml.to_aml_bytes(&mut bytes);
    Raw(bytes)
}

/// `IRQNoFlags() {irq}`: one edge-triggered, active-high ISA interrupt.
struct IrqNoFlags(u8);

impl Aml for IrqNoFlags {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        sink.byte(spec::IRQ_NO_FLAGS_TAG);
        sink.word(1 << self.0);
    }
}

/// `Processor(name, id, 0, 0) {}`: a processor without a P_BLK (no throttling, no C2/C3).
struct Processor {
    name: [u8; 4],
    id: u8,
}

impl Aml for Processor {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        // PkgLength counts itself (1 byte), NameSeg, ProcID, PblkAddr (DWord), PblkLen.
        const PKG_LENGTH: u8 = 1 + 4 + 1 + 4 + 1;
        sink.byte(spec::EXT_OP_PREFIX);
        sink.byte(spec::PROCESSOR_OP);
        sink.byte(PKG_LENGTH);
        sink.vec(&self.name);
        sink.byte(self.id);
        sink.dword(0);
        sink.byte(0);
    }
}

/// `IO(Decode16, port, port, 1, len)`: a fixed range of ISA ports.
fn io(port: u16, len: u8) -> IO {
    IO::new(port, port, 1, len)
}

/// A device with a PNP `_HID`, an optional `_UID` and a fixed `_CRS`.
fn pnp_device(name: &str, hid: &str, uid: Option<u32>, resources: Vec<&dyn Aml>) -> Raw {
    let hid = Name::new("_HID".into(), &EISAName::new(hid));
    let uid = uid.map(|uid| Name::new("_UID".into(), &uid));
    let crs = Name::new("_CRS".into(), &ResourceTemplate::new(resources));
    let mut children: Vec<&dyn Aml> = vec![&hid];
    if let Some(uid) = &uid {
        children.push(uid);
    }
    children.push(&crs);
    raw(&Device::new(name.into(), children))
}

/// The legacy devices the PIIX4 decodes, as an OS without ISA PnP must be told about them.
fn isa_devices(cfg: &AcpiConfig) -> Vec<Raw> {
    let irq = |line: u32| IrqNoFlags(line as u8);
    let mut devices = vec![
        pnp_device(
            "PIC_",
            "PNP0000",
            None,
            vec![
                &io(spec::PIC_MASTER_PORT, 2),
                &io(spec::PIC_SLAVE_PORT, 2),
                &io(spec::PIC_ELCR_PORT, 2),
                &IrqNoFlags(spec::PIC_CASCADE_IRQ),
            ],
        ),
        pnp_device(
            "TMR_",
            "PNP0100",
            None,
            vec![
                &io(spec::PIT_PORT, spec::PIT_PORT_LEN),
                &IrqNoFlags(spec::PIT_IRQ),
            ],
        ),
        pnp_device(
            "RTC_",
            "PNP0B00",
            None,
            vec![&io(RTC_PORT, spec::RTC_PORT_LEN), &irq(RTC_IRQ)],
        ),
        pnp_device(
            "KBD_",
            "PNP0303",
            None,
            vec![
                &io(I8042_DATA_PORT, 1),
                &io(I8042_CMD_PORT, 1),
                &irq(KEYBOARD_IRQ),
            ],
        ),
        pnp_device("MOU_", "PNP0F13", None, vec![&irq(MOUSE_IRQ)]),
        pnp_device(
            "COM1",
            "PNP0501",
            Some(1),
            vec![&io(COM1_PORT, spec::UART_PORT_LEN), &irq(COM1_IRQ)],
        ),
        pnp_device(
            "COM2",
            "PNP0501",
            Some(2),
            vec![&io(COM2_PORT, spec::UART_PORT_LEN), &irq(COM2_IRQ)],
        ),
    ];
    if cfg.lpt {
        devices.push(pnp_device(
            "LPT1",
            "PNP0400",
            None,
            vec![&io(LPT1_PORT, spec::LPT_PORT_LEN), &irq(LPT1_IRQ)],
        ));
    }
    devices.push(pnp_device(
        "FPU_",
        "PNP0C04",
        None,
        vec![
            &io(spec::FPU_PORT, spec::FPU_PORT_LEN),
            &IrqNoFlags(spec::FPU_IRQ),
        ],
    ));
    // The PIIX4 PM and SMBus I/O blocks (function 3's PMBA and SMBBA), claimed as motherboard
    // resources so that the OS keeps PCI allocations away from them.
    devices.push(pnp_device(
        "SYSR",
        "PNP0C02",
        Some(1),
        vec![
            &io(PM_IO_BASE, PM_IO_LEN as u8),
            &io(SMBUS_IO_BASE, spec::SMBUS_IO_LEN),
        ],
    ));
    devices
}

/// The host bridge's `_CRS`: every bus, all I/O but the configuration ports (which it
/// consumes), VGA memory, RAM's end to the IOAPIC, and above high RAM when there is some.
fn pci_crs(cfg: &AcpiConfig) -> Raw {
    let config_ports = PCI_CONFIG_PORT + u16::from(spec::PCI_CONFIG_PORT_LEN);
    let buses = AddressSpace::<u16>::new_bus_number(0, 0xff);
    let io_low = AddressSpace::<u16>::new_io(0, PCI_CONFIG_PORT - 1, None);
    let config = io(PCI_CONFIG_PORT, spec::PCI_CONFIG_PORT_LEN);
    let io_high = AddressSpace::<u16>::new_io(config_ports, 0xffff, None);
    let vga = AddressSpace::<u32>::new_memory(
        AddressSpaceCacheable::Cacheable,
        true,
        LEGACY_WINDOW_START as u32,
        VGA_END as u32 - 1,
        None,
    );
    let mmio32 = AddressSpace::<u32>::new_memory(
        AddressSpaceCacheable::NotCacheable,
        true,
        cfg.layout.low_ram_end() as u32,
        spec::PCI_MMIO_END as u32,
        None,
    );
    let mmio64 = (cfg.layout.high_ram_size() > 0).then(|| {
        let start = cfg.layout.top().next_multiple_of(spec::PCI_MMIO64_ALIGN);
        AddressSpace::<u64>::new_memory(
            AddressSpaceCacheable::NotCacheable,
            true,
            start,
            start + spec::PCI_MMIO64_SIZE - 1,
            None,
        )
    });
    let mut resources: Vec<&dyn Aml> = vec![&buses, &config, &io_low, &io_high, &vga, &mmio32];
    if let Some(mmio64) = &mmio64 {
        resources.push(mmio64);
    }
    raw(&Name::new("_CRS".into(), &ResourceTemplate::new(resources)))
}

/// The PCI interrupt routing table: pin INTA#-INTD# of device `s` reaches PIRQ(s + pin) mod 4
/// (the usual swizzle of a PC board), and the firmware programs the PIIX4 PIRQRC[A:D] registers
/// to the IRQs in `PIRQ_IRQS`.
///
/// The entries name those IRQs as static GSIs instead of going through PCI link devices
/// (LNKA-LNKD): KVM's irqchip delivers a GSI below 16 both to that 8259 input and to the IOAPIC
/// pin with the same number, so the same number is right whichever model the OS chose with
/// `\_PIC` — the 8259 IRQ in PIC mode (0), the IOAPIC GSI in APIC mode (1). The OS cannot
/// re-route the PIRQs, which it has no reason to.
fn pci_prt() -> Raw {
    let mut prt = PackageBuilder::new();
    for slot in 0..spec::PCI_SLOTS {
        for pin in 0..spec::PCI_PINS {
            let address = slot << 16 | spec::PRT_ANY_FUNCTION;
            let gsi = u32::from(PIRQ_IRQS[((slot + pin) % spec::PCI_PINS) as usize]);
            prt.add_element(&Package::new(vec![&address, &pin, &ZERO, &gsi]));
        }
    }
    raw(&Name::new("_PRT".into(), &prt))
}

/// `\_SB.PCI0`: the i440BX host bridge at 00:00.0, with the PIIX4's ISA bridge under it.
fn pci0(cfg: &AcpiConfig) -> Raw {
    let isa_devices = isa_devices(cfg);
    let isa_adr = Name::new("_ADR".into(), &spec::ISA_BRIDGE_ADR);
    let mut isa_children: Vec<&dyn Aml> = vec![&isa_adr];
    isa_children.extend(isa_devices.iter().map(|d| d as &dyn Aml));
    let isa = Device::new("ISA_".into(), isa_children);

    let hid = Name::new("_HID".into(), &EISAName::new("PNP0A03"));
    let adr = Name::new("_ADR".into(), &ZERO);
    let uid = Name::new("_UID".into(), &ZERO);
    let bbn = Name::new("_BBN".into(), &ZERO);
    let crs = pci_crs(cfg);
    let prt = pci_prt();
    raw(&Device::new(
        "PCI0".into(),
        vec![&hid, &adr, &uid, &bbn, &crs, &prt, &isa],
    ))
}

/// `\_PR`: `Processor(Cnnn, n, 0, 0)` for each vCPU, n = the MADT's ACPI processor ID.
fn processors(cpus: u8) -> Raw {
    let cpus: Vec<Processor> = (0..cpus)
        .map(|id| {
            let mut name = [0u8; 4];
            name.copy_from_slice(format!("C{id:03X}").as_bytes());
            Processor { name, id }
        })
        .collect();
    raw(&Scope::new(
        "\\_PR_".into(),
        cpus.iter().map(|c| c as &dyn Aml).collect(),
    ))
}

/// The DSDT's AML body (without the table header).
pub(super) fn aml(cfg: &AcpiConfig) -> Vec<u8> {
    let picm = Name::new("PICM".into(), &ZERO);
    let pic = raw(&Method::new(
        "_PIC".into(),
        1,
        false,
        vec![&Store::new(&Path::new("\\PICM"), &Arg(0))],
    ));
    let s5 = raw(&Name::new(
        "_S5_".into(),
        &Package::new(vec![&ZERO, &ZERO, &ZERO, &ZERO]),
    ));
    let processors = processors(cfg.cpus);
    let sb = raw(&Scope::new("\\_SB_".into(), vec![&pci0(cfg)]));

    let mut body = Vec::new();
    for part in [&picm as &dyn Aml, &pic, &s5, &processors, &sb] {
        part.to_aml_bytes(&mut body);
    }
    body
}

/// The complete DSDT, header and checksum included.
pub(super) fn build(cfg: &AcpiConfig) -> Vec<u8> {
    let mut dsdt = Sdt::new(
        *b"DSDT",
        super::spec::HEADER_LEN as u32,
        spec::DSDT_REVISION,
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
    );
    dsdt.append_slice(&aml(cfg));
    dsdt.as_slice().to_vec()
}
