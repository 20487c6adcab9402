//! `kettle run --restore FILE`: the configuration a restored VM runs with. The saved state fixes
//! the machine (memory, vCPUs, which drives and NICs exist, MAC addresses); the user may
//! re-attach host backends (disk images, network backends, serial ports), which default to the
//! ones the state was saved with. Disks must be the saved images, unchanged, or differencing
//! disks of them (clones), unless forced.

use std::path::PathBuf;

use crate::config::{LptSpec, Overrides, VmConfig};
use crate::nic::NicSpec;
use crate::snapshot::SavedConfig;
use crate::storage::{DriveKind, DriveSpec, IdeSlot};

/// Builds the configuration of a restored VM, or says which flag conflicts with the state.
pub fn restore_config(
    saved: &SavedConfig,
    o: Overrides,
    force_disks: bool,
) -> Result<VmConfig, String> {
    if let Some(m) = o.memory {
        if m.0 != saved.memory {
            return Err(format!(
                "--memory {m} differs from the saved state's {} bytes: memory size is fixed by the state",
                saved.memory
            ));
        }
    }
    if let Some(c) = o.cpus {
        if c != saved.cpus {
            return Err(format!(
                "--cpus {c} differs from the saved state's {}: the vCPU count is fixed by the state",
                saved.cpus
            ));
        }
    }
    if o.kernel.is_some() || o.initrd.is_some() || o.cmdline.is_some() {
        return Err("--kernel, --initrd and --cmdline cannot be given with --restore: the guest is already running".into());
    }
    if o.bios.is_some() || o.boot_order.is_some() {
        return Err("--bios and --boot cannot be given with --restore: the guest has already booted (its BIOS comes from the state)".into());
    }
    let parse_err = |what: &str, v: &str, e: String| format!("saved {what} {v:?}: {e}");
    // A serial port given on the command line, else the saved one.
    let console = |given: Option<_>, what: &str, saved: &str| match given {
        Some(s) => Ok(s),
        None => saved
            .parse()
            .map_err(|e: crate::console::ConsoleError| parse_err(what, saved, e.to_string())),
    };
    let serial = console(o.serial, "serial", &saved.serial)?;
    let serial2 = console(o.serial2, "serial2", &saved.serial2)?;
    let lpt = match (o.lpt, &saved.lpt) {
        (Some(l), Some(_)) => Some(l),
        (None, Some(p)) => Some(LptSpec::File(p.clone())),
        (Some(_), None) => return Err("--lpt: the saved machine has no parallel port".into()),
        (None, None) => None,
    };

    // Drives: the user's, in the saved slots with the saved kinds, or the saved ones.
    let mut drives = Vec::new();
    let given: Vec<DriveSpec> = o.disks.into_iter().chain(o.cdroms).collect();
    let saved_slots: Vec<(IdeSlot, &crate::snapshot::SavedDrive)> = saved
        .drives
        .iter()
        .map(|d| d.slot.parse().map(|s: IdeSlot| (s, d)))
        .collect::<Result<_, _>>()
        .map_err(|e: String| format!("the saved state's drives: {e}"))?;
    if given.is_empty() {
        for (slot, d) in &saved_slots {
            drives.push(DriveSpec {
                kind: kind_of(&d.kind)?,
                slot: Some(*slot),
                path: d.path.clone(),
                read_only: d.read_only,
                undo: d.undo,
            });
        }
    } else {
        let assigned = crate::storage::assign_slots(&given)?;
        if assigned.len() != saved_slots.len() {
            return Err(format!(
                "{} drives given, the saved machine has {} ({}): give one for each, or none to reuse the saved ones",
                assigned.len(),
                saved_slots.len(),
                saved
                    .drives
                    .iter()
                    .map(|d| format!("{} {}", d.slot, d.kind))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        for (slot, d) in assigned {
            let Some((_, s)) = saved_slots.iter().find(|(ss, _)| *ss == slot) else {
                return Err(format!("{slot}: the saved machine has no drive there"));
            };
            if kind_of(&s.kind)? != d.kind {
                return Err(format!("{slot}: the saved machine has a {} there", s.kind));
            }
            drives.push(d);
        }
    }
    // The disks' contents must be what the guest saved with.
    for d in drives.iter().filter(|d| d.kind == DriveKind::Disk) {
        let slot = d.slot.expect("restored drives have slots");
        let s = saved_slots
            .iter()
            .find(|(ss, _)| *ss == slot)
            .expect("matched above")
            .1;
        let path = if d.undo {
            vhd::undo::undo_path(&d.path)
        } else {
            d.path.clone()
        };
        if let Err(e) = crate::snapshot_disks::check_disk(&path, &s.identity) {
            if force_disks {
                log::warn!("{slot}: {e}; restoring anyway (--force-disks)");
            } else {
                return Err(format!(
                    "{slot} disk {e}: the guest's file systems would not match it (use a differencing clone made with `kettle vhd clone`, or --force-disks)"
                ));
            }
        }
    }

    // NICs: same count, the saved MACs.
    let mut nics = Vec::new();
    let saved_macs: Vec<[u8; 6]> = saved
        .nics
        .iter()
        .map(|n| crate::nic::parse_mac(&n.mac))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("the saved state's NICs: {e}"))?;
    if o.nics.is_empty() {
        for (n, mac) in saved.nics.iter().zip(&saved_macs) {
            let mut spec: NicSpec = format!("tulip,backend={}", n.backend)
                .parse()
                .map_err(|e: String| parse_err("NIC", &n.backend, e))?;
            spec.mac = Some(*mac);
            spec.pcap = n.pcap.clone();
            nics.push(spec);
        }
    } else {
        if o.nics.len() != saved.nics.len() {
            return Err(format!(
                "{} NICs given, the saved machine has {}",
                o.nics.len(),
                saved.nics.len()
            ));
        }
        for (i, (mut spec, mac)) in o.nics.into_iter().zip(&saved_macs).enumerate() {
            if let Some(m) = spec.mac {
                if m != *mac {
                    return Err(format!(
                        "NIC {i}: mac={} differs from the saved card's {} (the guest knows its address)",
                        crate::nic::format_mac(&m),
                        crate::nic::format_mac(mac)
                    ));
                }
            }
            spec.mac = Some(*mac);
            nics.push(spec);
        }
    }

    Ok(VmConfig {
        kernel: saved.kernel.clone(),
        bios: saved.bios.clone(),
        boot_order: match &saved.boot {
            Some(b) => b.parse().map_err(|e: crate::config::ConfigError| {
                parse_err("boot order", b, e.to_string())
            })?,
            None => Default::default(),
        },
        initrd: saved.initrd.clone(),
        cmdline: saved.cmdline.clone(),
        memory: saved.memory,
        cpus: saved.cpus,
        serial,
        serial2,
        lpt,
        no_reboot: o.no_reboot || saved.no_reboot,
        drives,
        undo_action: o.undo_action.unwrap_or_default(),
        name: o.name.or_else(|| saved.name.clone()),
        config_file: None::<PathBuf>,
        nics,
    })
}

fn kind_of(s: &str) -> Result<DriveKind, String> {
    match s {
        "disk" => Ok(DriveKind::Disk),
        "cdrom" => Ok(DriveKind::Cdrom),
        other => Err(format!(
            "the saved state names an unknown drive kind {other:?}"
        )),
    }
}
