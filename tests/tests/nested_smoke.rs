//! Smoke tests of the test infrastructure for Linux guests: the nested test host gives a
//! working KVM, the kettle binary starts inside it, and the guest initramfs keeps its /init
//! contract (checked under plain QEMU TCG, without kettle).
//!
//! These boot QEMU and take 10-30 s each; they fail (never skip) when QEMU or the Debian
//! tooling is missing, saying what is missing.

use std::time::Duration;

use kettle_tests::nested::{
    assets, guest_initrd_with_tests, marker_values, run_nested_with, run_qemu_tcg_guest,
    NestedOptions,
};

const NESTED_TIMEOUT: Duration = Duration::from_secs(300);

#[test]
fn nested_host_has_a_working_kvm() {
    let options = NestedOptions::without_kettle(NESTED_TIMEOUT)
        .bin(env!("CARGO_BIN_EXE_kvm-probe"), "/bin/kvm-probe");
    let run = run_nested_with(
        r#"
set -e
ls -l /dev/kvm
dmesg | grep -iE 'svm|kvm'
kvm-probe 10000000
"#,
        &options,
    );
    run.expect_success();
    let out = run
        .script_output()
        .expect("the script's output is delimited");
    assert!(out.contains("/dev/kvm"), "no /dev/kvm listing:\n{out}");
    assert!(
        out.contains("Nested Paging enabled"),
        "kvm-amd without nested paging:\n{out}"
    );
    assert!(
        out.contains("KVM-PROBE create_vm ok"),
        "KVM_CREATE_VM failed:\n{out}"
    );
    assert!(
        out.contains("KVM-PROBE out port 0x11 value 0x43"),
        "the probe guest did not run:\n{out}"
    );
    assert!(out.contains("KVM-PROBE OK"), "{out}");
    assert_eq!(marker_values(&run.console, "NESTED-EXIT"), ["0"]);
}

#[test]
fn kettle_binary_starts_in_the_nested_host() {
    let run = run_nested_with(
        r#"
ls -l "$KETTLE" "$GUEST_KERNEL" "$GUEST_INITRD"
"$KETTLE" --help
echo "KETTLE-HELP-EXIT $?"
"#,
        &NestedOptions::new(NESTED_TIMEOUT),
    );
    run.expect_success();
    let out = run
        .script_output()
        .expect("the script's output is delimited");
    assert!(
        !out.contains("error while loading shared libraries"),
        "a shared library is missing:\n{out}"
    );
    let exit = marker_values(out, "KETTLE-HELP-EXIT");
    assert!(
        exit.len() == 1 && exit[0] != "126" && exit[0] != "127",
        "kettle did not start in the nested host (exit {exit:?}):\n{out}"
    );
}

#[test]
fn guest_initrd_keeps_its_init_contract_under_qemu() {
    let assets = assets().unwrap_or_else(|e| panic!("{e}"));
    let initrd =
        std::env::temp_dir().join(format!("kettle-contract-{}.initrd", std::process::id()));
    guest_initrd_with_tests(
        &[(
            "contract",
            r#"
for m in ata_piix libata ext4 jbd2 tulip parport_pc lp sr_mod aic7xxx; do
    [ -d /sys/module/$m ] && echo "loaded $m" || echo "NOT LOADED $m"
done
echo "console prompt: $(. /etc/profile; echo "$PS1")"
exit 7
"#,
        )],
        &initrd,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let run = run_qemu_tcg_guest(
        &assets.vmlinux,
        &initrd,
        "kettle.modules=ata_piix,ext4,tulip,parport_pc,lp,sr_mod,aic7xxx,rtc_cmos kettle.run=contract",
        Duration::from_secs(180),
    );
    let _ = std::fs::remove_file(&initrd);
    let console = &run.console;
    assert!(
        !run.timed_out,
        "the guest did not power off within 180 s:\n{console}"
    );
    assert_eq!(run.status, Some(0), "QEMU did not exit cleanly:\n{console}");
    assert!(console.contains("KETTLE-GUEST-READY"), "{console}");
    assert!(!console.contains("KETTLE-MODULE-FAILED"), "{console}");
    assert!(!console.contains("NOT LOADED"), "{console}");
    assert!(
        console.contains("loaded ext4") && console.contains("loaded tulip"),
        "{console}"
    );
    assert!(console.contains("console prompt: kettle# "), "{console}");
    assert_eq!(
        marker_values(console, "KETTLE-TEST-EXIT"),
        ["7"],
        "{console}"
    );
    eprintln!(
        "guest boot under QEMU TCG: {:.1} s",
        run.elapsed.as_secs_f64()
    );
}
