//! Interrupt wiring on KVM's in-kernel irqchip: GSI routing as on a PC (ISA IRQ 0, the PIT, on
//! IOAPIC pin 2 as the MADT's interrupt source override says; IRQ 2 is the PIC cascade) and
//! [`IrqLine`]s that devices raise and lower with `KVM_IRQ_LINE`.

use std::sync::Arc;

use devices::IrqLine;
use kvm_bindings::{
    kvm_irq_routing_entry, KvmIrqRouting, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE, KVM_IRQ_ROUTING_IRQCHIP,
};
use kvm_ioctls::VmFd;

fn route(gsi: u32, chip: u32, pin: u32) -> kvm_irq_routing_entry {
    let mut e = kvm_irq_routing_entry {
        gsi,
        type_: KVM_IRQ_ROUTING_IRQCHIP,
        ..Default::default()
    };
    e.u.irqchip.irqchip = chip;
    e.u.irqchip.pin = pin;
    e
}

/// The routing table: GSI n < 16 goes to PIC pin n (except the cascade, 2) and to IOAPIC pin n,
/// except GSI 0 which the IOAPIC sees on pin 2; GSIs 16-23 go to the IOAPIC only.
pub fn pc_routes() -> Vec<kvm_irq_routing_entry> {
    let mut v = Vec::new();
    for gsi in 0..16 {
        if gsi == 2 {
            continue;
        }
        let (chip, pin) = if gsi < 8 {
            (KVM_IRQCHIP_PIC_MASTER, gsi)
        } else {
            (KVM_IRQCHIP_PIC_SLAVE, gsi - 8)
        };
        v.push(route(gsi, chip, pin));
    }
    for gsi in 0..arch::layout::IOAPIC_PINS {
        match gsi {
            0 => v.push(route(0, KVM_IRQCHIP_IOAPIC, 2)),
            2 => {}
            _ => v.push(route(gsi, KVM_IRQCHIP_IOAPIC, gsi)),
        }
    }
    v
}

pub fn set_pc_routing(vm: &VmFd) -> Result<(), kvm_ioctls::Error> {
    let routes = pc_routes();
    let table = KvmIrqRouting::from_entries(&routes).expect("routing table fits");
    vm.set_gsi_routing(&table)
}

/// Gives the in-kernel IOAPIC the APIC ID the MADT announces for it.
pub fn set_ioapic_id(vm: &VmFd, id: u32) -> Result<(), kvm_ioctls::Error> {
    let mut chip = kvm_bindings::kvm_irqchip {
        chip_id: KVM_IRQCHIP_IOAPIC,
        ..Default::default()
    };
    vm.get_irqchip(&mut chip)?;
    // chip_id is IOAPIC, so the ioapic member of the union is the one KVM filled.
    chip.chip.ioapic.id = id;
    vm.set_irqchip(&chip)
}

/// One interrupt line driven with `KVM_IRQ_LINE`.
pub struct KvmIrq {
    vm: Arc<VmFd>,
    gsi: u32,
}

impl KvmIrq {
    pub fn new(vm: Arc<VmFd>, gsi: u32) -> Arc<Self> {
        Arc::new(Self { vm, gsi })
    }
}

impl IrqLine for KvmIrq {
    fn set_level(&self, high: bool) {
        if let Err(e) = self.vm.set_irq_line(self.gsi, high) {
            log::warn!("setting IRQ {} to {high} failed: {e}", self.gsi);
        }
    }
}

/// A level-triggered line several PCI functions share (PCI interrupts are wired-OR: the line is
/// asserted while any function asserts it). Each function gets its own [`IrqLine`] from
/// [`SharedLevelIrq::source`].
pub struct SharedLevelIrq {
    line: Arc<dyn IrqLine>,
    /// One bit per source that currently asserts the line.
    asserted: std::sync::Mutex<u64>,
    sources: std::sync::atomic::AtomicU32,
}

impl SharedLevelIrq {
    pub fn new(line: Arc<dyn IrqLine>) -> Arc<Self> {
        Arc::new(Self {
            line,
            asserted: std::sync::Mutex::new(0),
            sources: std::sync::atomic::AtomicU32::new(0),
        })
    }

    /// A new input of the wired-OR; at most 64 per line.
    pub fn source(self: &Arc<Self>) -> Arc<dyn IrqLine> {
        let n = self
            .sources
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        assert!(n < 64, "more than 64 sources on one shared interrupt line");
        Arc::new(SharedSource {
            shared: self.clone(),
            bit: 1 << n,
        })
    }
}

struct SharedSource {
    shared: Arc<SharedLevelIrq>,
    bit: u64,
}

impl IrqLine for SharedSource {
    fn set_level(&self, high: bool) {
        let mut asserted = self.shared.asserted.lock().unwrap();
        let was = *asserted != 0;
        if high {
            *asserted |= self.bit;
        } else {
            *asserted &= !self.bit;
        }
        let now = *asserted != 0;
        // Under the lock, so two sources changing at once cannot reorder the line's edges.
        if now != was {
            self.shared.line.set_level(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder(std::sync::Mutex<Vec<bool>>);
    impl IrqLine for Recorder {
        fn set_level(&self, high: bool) {
            self.0.lock().unwrap().push(high);
        }
    }

    #[test]
    fn shared_line_is_the_or_of_its_sources() {
        let rec = Arc::new(Recorder::default());
        let shared = SharedLevelIrq::new(rec.clone());
        let (a, b) = (shared.source(), shared.source());
        a.set_level(true);
        b.set_level(true);
        a.set_level(false);
        assert_eq!(*rec.0.lock().unwrap(), vec![true], "still held by b");
        b.set_level(false);
        b.set_level(false);
        assert_eq!(*rec.0.lock().unwrap(), vec![true, false]);
    }

    #[test]
    fn gsi0_is_ioapic_pin2_and_cascade_is_unrouted() {
        let r = pc_routes();
        let pins = |gsi: u32| {
            r.iter()
                .filter(|e| e.gsi == gsi)
                // SAFETY: every entry is of type IRQCHIP.
                .map(|e| unsafe { (e.u.irqchip.irqchip, e.u.irqchip.pin) })
                .collect::<Vec<_>>()
        };
        assert_eq!(
            pins(0),
            vec![(KVM_IRQCHIP_PIC_MASTER, 0), (KVM_IRQCHIP_IOAPIC, 2)]
        );
        assert!(pins(2).is_empty());
        assert_eq!(
            pins(9),
            vec![(KVM_IRQCHIP_PIC_SLAVE, 1), (KVM_IRQCHIP_IOAPIC, 9)]
        );
        assert_eq!(pins(23), vec![(KVM_IRQCHIP_IOAPIC, 23)]);
    }
}
