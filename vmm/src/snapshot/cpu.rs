//! vCPU and in-kernel VM state: what KVM holds for the guest, read out on save and written back
//! on restore, in the order KVM needs it.

use kvm_bindings::{
    kvm_clock_data, kvm_cpuid_entry2, kvm_debugregs, kvm_irqchip, kvm_lapic_state, kvm_mp_state,
    kvm_msr_entry, kvm_pit_state2, kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave,
    CpuId, Msrs, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE,
};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use serde::{Deserialize, Serialize};

/// MSR IA32_TSC: the guest's time stamp counter.
pub const MSR_IA32_TSC: u32 = 0x10;

/// Everything KVM holds for one vCPU.
#[derive(Serialize, Deserialize)]
pub struct VcpuState {
    pub cpuid: Vec<kvm_cpuid_entry2>,
    pub mp_state: kvm_mp_state,
    pub regs: kvm_regs,
    pub sregs: kvm_sregs,
    pub xsave: kvm_xsave,
    pub xcrs: Option<kvm_xcrs>,
    pub debugregs: kvm_debugregs,
    pub lapic: kvm_lapic_state,
    pub msrs: Vec<kvm_msr_entry>,
    pub events: kvm_vcpu_events,
    /// The guest's TSC frequency, if KVM reports it.
    pub tsc_khz: Option<u32>,
}

/// The VM-wide in-kernel devices and clock.
#[derive(Clone, Serialize, Deserialize)]
pub struct VmKvmState {
    pub pic_master: kvm_irqchip,
    pub pic_slave: kvm_irqchip,
    pub ioapic: kvm_irqchip,
    pub pit: kvm_pit_state2,
    pub clock: kvm_clock_data,
}

#[derive(Debug, thiserror::Error)]
#[error("{what}: {err}")]
pub struct KvmStateError {
    pub what: String,
    pub err: kvm_ioctls::Error,
}

fn e(what: &str) -> impl FnOnce(kvm_ioctls::Error) -> KvmStateError + '_ {
    move |err| KvmStateError {
        what: what.to_string(),
        err,
    }
}

/// The MSRs worth saving: every one KVM lists as saveable and can read on this vCPU.
pub fn saveable_msrs(kvm: &Kvm, vcpu: &VcpuFd) -> Result<Vec<u32>, KvmStateError> {
    let list = kvm
        .get_msr_index_list()
        .map_err(e("listing saveable MSRs"))?;
    let mut ok = Vec::new();
    for &index in list.as_slice() {
        let mut one = Msrs::from_entries(&[kvm_msr_entry {
            index,
            ..Default::default()
        }])
        .expect("one MSR entry fits");
        // Some listed MSRs are not readable with this CPUID (KVM returns 0 read): skip them.
        if matches!(vcpu.get_msrs(&mut one), Ok(1)) {
            ok.push(index);
        }
    }
    Ok(ok)
}

impl VcpuState {
    /// Reads a stopped vCPU's state. `msr_indices` from [`saveable_msrs`].
    pub fn capture(vcpu: &VcpuFd, msr_indices: &[u32]) -> Result<Self, KvmStateError> {
        let mp_state = vcpu.get_mp_state().map_err(e("reading the MP state"))?;
        let regs = vcpu.get_regs().map_err(e("reading registers"))?;
        let sregs = vcpu.get_sregs().map_err(e("reading segment registers"))?;
        let xsave = vcpu.get_xsave().map_err(e("reading XSAVE state"))?;
        let xcrs = vcpu.get_xcrs().ok();
        let debugregs = vcpu
            .get_debug_regs()
            .map_err(e("reading debug registers"))?;
        let lapic = vcpu.get_lapic().map_err(e("reading the LAPIC"))?;
        let mut msrs = Vec::with_capacity(msr_indices.len());
        for chunk in msr_indices.chunks(64) {
            let entries: Vec<kvm_msr_entry> = chunk
                .iter()
                .map(|&index| kvm_msr_entry {
                    index,
                    ..Default::default()
                })
                .collect();
            let mut m = Msrs::from_entries(&entries).expect("64 MSR entries fit");
            let n = vcpu.get_msrs(&mut m).map_err(e("reading MSRs"))?;
            if n != chunk.len() {
                let failed = chunk.get(n).copied().unwrap_or_default();
                return Err(KvmStateError {
                    what: format!("reading MSR {failed:#x}"),
                    err: kvm_ioctls::Error::new(libc::EINVAL),
                });
            }
            msrs.extend_from_slice(m.as_slice());
        }
        let events = vcpu
            .get_vcpu_events()
            .map_err(e("reading pending events"))?;
        // The CPUID the VMM gave the vCPU is filled in by the caller: KVM_GET_CPUID2 does not
        // return it on every host.
        let cpuid = Vec::new();
        let tsc_khz = vcpu.get_tsc_khz().ok();
        Ok(Self {
            cpuid,
            mp_state,
            regs,
            sregs,
            xsave,
            xcrs,
            debugregs,
            lapic,
            msrs,
            events,
            tsc_khz,
        })
    }

    /// Writes the state into a fresh vCPU, advancing its TSC by `tsc_advance` ticks (the time
    /// the VM spent saved).
    pub fn restore(&self, vcpu: &VcpuFd, tsc_advance: u64) -> Result<(), KvmStateError> {
        let cpuid = CpuId::from_entries(&self.cpuid).map_err(|_| KvmStateError {
            what: format!("{} CPUID entries", self.cpuid.len()),
            err: kvm_ioctls::Error::new(libc::E2BIG),
        })?;
        vcpu.set_cpuid2(&cpuid).map_err(e("setting CPUID"))?;
        if let Some(khz) = self.tsc_khz {
            if vcpu.get_tsc_khz().ok() != Some(khz) {
                // Scaling may be missing; the guest then sees the host's rate.
                if let Err(err) = vcpu.set_tsc_khz(khz) {
                    log::warn!("cannot set the guest TSC to {khz} kHz: {err}");
                }
            }
        }
        vcpu.set_mp_state(self.mp_state)
            .map_err(e("setting the MP state"))?;
        vcpu.set_regs(&self.regs).map_err(e("setting registers"))?;
        vcpu.set_sregs(&self.sregs)
            .map_err(e("setting segment registers"))?;
        // SAFETY: `kvm_xsave` is the fixed 4 KiB legacy area KVM_GET_XSAVE filled on save.
        unsafe { vcpu.set_xsave(&self.xsave) }.map_err(e("setting XSAVE state"))?;
        if let Some(x) = &self.xcrs {
            vcpu.set_xcrs(x).map_err(e("setting XCRs"))?;
        }
        vcpu.set_debug_regs(&self.debugregs)
            .map_err(e("setting debug registers"))?;
        vcpu.set_lapic(&self.lapic)
            .map_err(e("setting the LAPIC"))?;
        let entries: Vec<kvm_msr_entry> = self
            .msrs
            .iter()
            .map(|m| {
                let mut m = *m;
                if m.index == MSR_IA32_TSC {
                    m.data = m.data.wrapping_add(tsc_advance);
                }
                m
            })
            .collect();
        for chunk in entries.chunks(64) {
            let m = Msrs::from_entries(chunk).expect("64 MSR entries fit");
            let n = vcpu.set_msrs(&m).map_err(e("setting MSRs"))?;
            if n != chunk.len() {
                let failed = chunk.get(n).map(|m| m.index).unwrap_or_default();
                return Err(KvmStateError {
                    what: format!("setting MSR {failed:#x} (this host's KVM refuses it)"),
                    err: kvm_ioctls::Error::new(libc::EINVAL),
                });
            }
        }
        vcpu.set_vcpu_events(&self.events)
            .map_err(e("setting pending events"))?;
        Ok(())
    }
}

fn irqchip(fd: &VmFd, id: u32) -> Result<kvm_irqchip, KvmStateError> {
    let mut c = kvm_irqchip {
        chip_id: id,
        ..Default::default()
    };
    fd.get_irqchip(&mut c).map_err(e("reading the irqchip"))?;
    Ok(c)
}

impl VmKvmState {
    pub fn capture(fd: &VmFd) -> Result<Self, KvmStateError> {
        Ok(Self {
            pic_master: irqchip(fd, KVM_IRQCHIP_PIC_MASTER)?,
            pic_slave: irqchip(fd, KVM_IRQCHIP_PIC_SLAVE)?,
            ioapic: irqchip(fd, KVM_IRQCHIP_IOAPIC)?,
            pit: fd.get_pit2().map_err(e("reading the PIT"))?,
            clock: fd.get_clock().map_err(e("reading the KVM clock"))?,
        })
    }

    /// Writes the state back, with the KVM clock advanced by `clock_advance_ns`.
    pub fn restore(&self, fd: &VmFd, clock_advance_ns: u64) -> Result<(), KvmStateError> {
        for (c, what) in [
            (&self.pic_master, "setting the master PIC"),
            (&self.pic_slave, "setting the slave PIC"),
            (&self.ioapic, "setting the IOAPIC"),
        ] {
            fd.set_irqchip(c).map_err(e(what))?;
        }
        fd.set_pit2(&self.pit).map_err(e("setting the PIT"))?;
        let clock = kvm_clock_data {
            clock: self.clock.clock.wrapping_add(clock_advance_ns),
            ..Default::default()
        };
        fd.set_clock(&clock).map_err(e("setting the KVM clock"))?;
        Ok(())
    }
}

/// CPUID feature bits a guest may have seen, by (leaf, subleaf, register, bit) and name.
const FEATURES: &[(u32, u32, Reg, u32, &str)] = &[
    (1, 0, Reg::Ecx, 0, "sse3"),
    (1, 0, Reg::Ecx, 1, "pclmulqdq"),
    (1, 0, Reg::Ecx, 9, "ssse3"),
    (1, 0, Reg::Ecx, 12, "fma"),
    (1, 0, Reg::Ecx, 13, "cx16"),
    (1, 0, Reg::Ecx, 19, "sse4.1"),
    (1, 0, Reg::Ecx, 20, "sse4.2"),
    (1, 0, Reg::Ecx, 22, "movbe"),
    (1, 0, Reg::Ecx, 23, "popcnt"),
    (1, 0, Reg::Ecx, 25, "aes"),
    (1, 0, Reg::Ecx, 26, "xsave"),
    (1, 0, Reg::Ecx, 28, "avx"),
    (1, 0, Reg::Ecx, 29, "f16c"),
    (1, 0, Reg::Ecx, 30, "rdrand"),
    (1, 0, Reg::Edx, 25, "sse"),
    (1, 0, Reg::Edx, 26, "sse2"),
    (7, 0, Reg::Ebx, 3, "bmi1"),
    (7, 0, Reg::Ebx, 5, "avx2"),
    (7, 0, Reg::Ebx, 8, "bmi2"),
    (7, 0, Reg::Ebx, 9, "erms"),
    (7, 0, Reg::Ebx, 16, "avx512f"),
    (7, 0, Reg::Ebx, 18, "rdseed"),
    (7, 0, Reg::Ebx, 19, "adx"),
    (7, 0, Reg::Ebx, 29, "sha"),
    (7, 0, Reg::Ecx, 9, "vaes"),
    (7, 0, Reg::Ecx, 10, "vpclmulqdq"),
    (0x8000_0001, 0, Reg::Ecx, 5, "lzcnt"),
    (0x8000_0001, 0, Reg::Edx, 27, "rdtscp"),
    (0x8000_0001, 0, Reg::Edx, 29, "lm"),
];

#[derive(Clone, Copy)]
enum Reg {
    Ebx,
    Ecx,
    Edx,
}

fn find(entries: &[kvm_cpuid_entry2], leaf: u32, sub: u32) -> Option<&kvm_cpuid_entry2> {
    entries
        .iter()
        .find(|e| e.function == leaf && (e.index == sub || e.flags & 1 == 0))
}

/// The named CPU features the saved guest saw that this host's KVM cannot offer.
pub fn missing_features(
    saved: &[kvm_cpuid_entry2],
    host: &[kvm_cpuid_entry2],
) -> Vec<&'static str> {
    let mut missing = Vec::new();
    for &(leaf, sub, reg, bit, name) in FEATURES {
        let get = |entries| {
            find(entries, leaf, sub).map(|e| match reg {
                Reg::Ebx => e.ebx,
                Reg::Ecx => e.ecx,
                Reg::Edx => e.edx,
            })
        };
        let seen = get(saved).unwrap_or(0) & (1 << bit) != 0;
        let offered = get(host).unwrap_or(0) & (1 << bit) != 0;
        if seen && !offered {
            missing.push(name);
        }
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, ecx: u32, edx: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            ecx,
            edx,
            ..Default::default()
        }
    }

    #[test]
    fn missing_features_are_named() {
        let saved = vec![entry(1, (1 << 28) | (1 << 20), 1 << 26)];
        let host = vec![entry(1, 1 << 20, 1 << 26)];
        assert_eq!(missing_features(&saved, &host), vec!["avx"]);
        assert!(missing_features(&host, &saved).is_empty());
    }

    #[test]
    fn states_round_trip_through_cbor() {
        let mut s = kvm_regs {
            rip: 0x1234,
            rax: 7,
            ..Default::default()
        };
        s.rflags = 2;
        let mut buf = Vec::new();
        ciborium::into_writer(&s, &mut buf).unwrap();
        let back: kvm_regs = ciborium::from_reader(&buf[..]).unwrap();
        assert_eq!((back.rip, back.rax, back.rflags), (0x1234, 7, 2));
    }
}
