//! The CPUID a vCPU sees: KVM's supported set, with the hypervisor bit and a topology that
//! matches the APIC IDs kettle gives (one package, `count` cores, one thread each, APIC ID = index).

use kvm_bindings::{kvm_cpuid_entry2, CpuId};

/// CPUID leaf 1 ECX bit 31: running under a hypervisor.
const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
/// CPUID leaf 1 EDX bit 28: the package has more than one logical processor.
const LEAF1_EDX_HTT: u32 = 1 << 28;
/// CPUID 0x80000001 ECX bit 1: CmpLegacy (AMD: multi-core reported through 0x80000008).
const EXT1_ECX_CMP_LEGACY: u32 = 1 << 1;

/// Bits needed to number `count` cores (the APIC-ID shift of the core level).
fn id_bits(count: u32) -> u32 {
    if count <= 1 {
        0
    } else {
        32 - (count - 1).leading_zeros()
    }
}

/// Adjusts `cpuid` (from `KVM_GET_SUPPORTED_CPUID`) for vCPU `index` of `count`.
pub fn configure(cpuid: &mut CpuId, index: u32, count: u32) {
    let shift = id_bits(count);
    for e in cpuid.as_mut_slice().iter_mut() {
        adjust(e, index, count, shift);
    }
}

fn adjust(e: &mut kvm_cpuid_entry2, index: u32, count: u32, shift: u32) {
    match e.function {
        1 => {
            e.ecx |= LEAF1_ECX_HYPERVISOR;
            // EBX: initial APIC ID (31:24), logical processors per package (23:16), CLFLUSH size
            // (15:8) stays as KVM reports it, brand index (7:0).
            let logical = (1u32 << shift).max(count).min(255);
            e.ebx = (index << 24) | (logical << 16) | (e.ebx & 0xff00);
            if count > 1 {
                e.edx |= LEAF1_EDX_HTT;
            } else {
                e.edx &= !LEAF1_EDX_HTT;
            }
        }
        4 => {
            // Deterministic cache parameters: EAX 31:26 = cores per package - 1,
            // 25:14 = logical processors sharing this cache - 1 (per core: 0).
            let cores = (1u32 << shift).max(1);
            e.eax = (e.eax & 0x3fff) | ((cores - 1) << 26);
        }
        0xb | 0x1f => {
            // Extended topology: subleaf 0 = SMT level (1 thread per core), subleaf 1 = core
            // level, anything else invalid. EDX always holds the x2APIC ID.
            match e.index {
                0 => {
                    e.eax = 0;
                    e.ebx = 1;
                    e.ecx = 1 << 8;
                }
                1 => {
                    e.eax = shift;
                    e.ebx = count;
                    e.ecx = 1 | (2 << 8);
                }
                n => {
                    e.eax = 0;
                    e.ebx = 0;
                    e.ecx = n & 0xff;
                }
            }
            e.edx = index;
        }
        0x8000_0001 => {
            if count > 1 {
                e.ecx |= EXT1_ECX_CMP_LEGACY;
            } else {
                e.ecx &= !EXT1_ECX_CMP_LEGACY;
            }
        }
        0x8000_0008 => {
            // AMD: ECX 7:0 = cores - 1, 15:12 = APIC ID size.
            e.ecx = (e.ecx & !0xf0ff) | (shift << 12) | (count - 1);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            ebx: 0x0800,
            ..Default::default()
        }
    }

    fn find(c: &CpuId, function: u32, index: u32) -> kvm_cpuid_entry2 {
        *c.as_slice()
            .iter()
            .find(|e| e.function == function && e.index == index)
            .unwrap()
    }

    #[test]
    fn topology_matches_apic_ids() {
        let entries = [
            entry(1, 0),
            entry(4, 0),
            entry(0xb, 0),
            entry(0xb, 1),
            entry(0xb, 2),
            entry(0x8000_0008, 0),
        ];
        let mut c = CpuId::from_entries(&entries).unwrap();
        configure(&mut c, 2, 3);
        let l1 = find(&c, 1, 0);
        assert_eq!(l1.ebx >> 24, 2);
        assert_eq!((l1.ebx >> 16) & 0xff, 4);
        assert_eq!(l1.ebx & 0xff00, 0x0800);
        assert_ne!(l1.ecx & LEAF1_ECX_HYPERVISOR, 0);
        assert_ne!(l1.edx & LEAF1_EDX_HTT, 0);
        assert_eq!(find(&c, 4, 0).eax >> 26, 3);
        assert_eq!(find(&c, 0xb, 1).eax, 2);
        assert_eq!(find(&c, 0xb, 1).ebx, 3);
        assert_eq!(find(&c, 0xb, 1).edx, 2);
        assert_eq!(find(&c, 0xb, 2).ecx, 2);
        assert_eq!(find(&c, 0x8000_0008, 0).ecx & 0xff, 2);
    }

    #[test]
    fn single_cpu_has_no_htt() {
        let mut c = CpuId::from_entries(&[entry(1, 0)]).unwrap();
        configure(&mut c, 0, 1);
        let l1 = find(&c, 1, 0);
        assert_eq!(l1.ebx >> 24, 0);
        assert_eq!(l1.edx & LEAF1_EDX_HTT, 0);
    }
}
