//! `kettle vhd` through the real binary, the way a user runs it: every subcommand, what it
//! prints, its exit status, bad input (missing and damaged files, flags that do not fit),
//! the progress bar (only on a terminal) and Ctrl-C (the source stays untouched, no temporary
//! file is left).

mod vhd_common;

use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use vhd_common::*;

const SUBCOMMANDS: [&str; 10] = [
    "create", "info", "check", "convert", "merge", "compact", "resize", "commit", "discard",
    "clone",
];

#[test]
fn help_for_every_subcommand_and_flag() {
    let top = kettle(&["vhd", "--help"]).ok();
    for c in SUBCOMMANDS {
        assert!(
            top.stdout.contains(c),
            "kettle vhd --help lacks {c}:\n{}",
            top.stdout
        );
    }
    assert!(top.stdout.contains("Exit status"), "{}", top.stdout);
    assert!(kettle(&["--help"]).ok().stdout.contains("vhd"));
    let flags: [(&str, &[&str]); 10] = [
        (
            "create",
            &[
                "--type",
                "--size",
                "--block-size",
                "--parent",
                "--exact-size",
                "--preallocate",
            ],
        ),
        ("info", &["--json"]),
        ("check", &["--json", "Exit status"]),
        (
            "convert",
            &["--to", "--from", "--block-size", "--exact-size", "--force"],
        ),
        ("merge", &["--delete"]),
        ("compact", &["PATH"]),
        ("resize", &["--size", "--exact-size"]),
        ("commit", &["UNDO", ".vud"]),
        ("discard", &["UNDO", ".vud"]),
        ("clone", &["--count", "--dir", "--name"]),
    ];
    for (c, wanted) in flags {
        let h = kettle(&["vhd", c, "--help"]).ok();
        for w in wanted {
            assert!(
                h.stdout.contains(w),
                "kettle vhd {c} --help lacks {w}:\n{}",
                h.stdout
            );
        }
    }
}

#[test]
fn bad_flags_are_one_line_usage_errors() {
    let d = Scratch::new("vhd-flags");
    let p = d.path("x.vhd");
    let cases: Vec<(Vec<&str>, i32, Vec<&str>)> = vec![
        (vec!["vhd"], 2, vec![]),
        (vec!["vhd", "frobnicate"], 2, vec!["frobnicate"]),
        (vec!["vhd", "create"], 2, vec![]),
        (vec!["vhd", "create", s(&p), "--size", "3Q"], 2, vec!["3Q"]),
        (
            vec!["vhd", "create", s(&p), "--type", "sparse", "--size", "1M"],
            2,
            vec!["sparse"],
        ),
        (vec!["vhd", "create", s(&p)], 2, vec!["--size"]),
        (
            vec!["vhd", "create", s(&p), "--type", "differencing"],
            2,
            vec!["--parent"],
        ),
        (
            vec![
                "vhd",
                "create",
                s(&p),
                "--type",
                "fixed",
                "--parent",
                "y.vhd",
            ],
            2,
            vec!["--parent"],
        ),
        (
            vec!["vhd", "create", s(&p), "--size", "1M", "--preallocate"],
            2,
            vec!["--preallocate"],
        ),
        (
            vec![
                "vhd",
                "create",
                s(&p),
                "--type",
                "fixed",
                "--size",
                "1M",
                "--block-size",
                "1M",
            ],
            2,
            vec!["--block-size"],
        ),
        (vec!["vhd", "info"], 2, vec![]),
        (vec!["vhd", "info", s(&p), "--yaml"], 2, vec!["--yaml"]),
        (vec!["vhd", "convert", s(&p)], 2, vec![]),
        (vec!["vhd", "convert", s(&p), "out.qcow2"], 2, vec!["--to"]),
        (
            vec!["vhd", "convert", s(&p), "out.img", "--block-size", "1M"],
            2,
            vec!["--block-size"],
        ),
        (
            vec!["vhd", "convert", s(&p), "out.img", "--exact-size"],
            2,
            vec!["--exact-size"],
        ),
        (
            vec!["vhd", "convert", s(&p), "o.vhd", "--to", "qcow2"],
            2,
            vec!["qcow2"],
        ),
        (vec!["vhd", "resize", s(&p)], 2, vec!["--size"]),
        (vec!["vhd", "clone", s(&p)], 2, vec!["--count"]),
        (
            vec!["vhd", "clone", s(&p), "--count", "0"],
            2,
            vec!["--count"],
        ),
    ];
    for (args, code, needles) in cases {
        let o = kettle(&args);
        assert_eq!(o.code, Some(code), "kettle {args:?}:\n{}", o.describe());
        o.fails(code, &needles);
    }
    assert!(!p.exists(), "a refused create left a file");
}

#[test]
fn create_prints_the_size_it_made() {
    let d = Scratch::new("vhd-create");
    // 33 MiB is not CHS-exact: rounded up as qemu-img and Virtual PC do.
    let o = kettle(&["vhd", "create", s(&d.path("dyn.vhd")), "--size", "33M"]).ok();
    assert!(
        o.stdout.contains("dynamic VHD, 34607104 bytes")
            && o.stdout
                .contains("34603008 bytes requested, rounded up to a CHS-exact size")
            && o.stdout.contains("C/H/S 994/4/17")
            && o.stdout.contains("0 of 17 blocks allocated"),
        "{}",
        o.stdout
    );
    let i = info_json(&d.path("dyn.vhd"));
    assert_eq!(i["size"], 34607104);
    assert_eq!(i["dynamic_header"]["block_size"], 2 * MIB);

    let o = kettle(&[
        "vhd",
        "create",
        s(&d.path("exact.vhd")),
        "--size",
        "33M",
        "--exact-size",
        "--block-size",
        "512K",
    ])
    .ok();
    assert!(o.stdout.contains("34603008 bytes"), "{}", o.stdout);
    assert!(
        o.stdout
            .contains("readers that size disks by geometry see less"),
        "{}",
        o.stdout
    );
    let i = info_json(&d.path("exact.vhd"));
    assert_eq!(i["size"], 34603008);
    assert_eq!(i["dynamic_header"]["block_size"], 512 * 1024);
    assert_eq!(i["dynamic_header"]["max_table_entries"], 66);

    let fixed = d.path("fixed.vhd");
    let o = kettle(&[
        "vhd",
        "create",
        s(&fixed),
        "--type",
        "fixed",
        "--size",
        "10M",
    ])
    .ok();
    assert!(
        o.stdout.contains("fixed VHD, 10514432 bytes"),
        "{}",
        o.stdout
    );
    assert_eq!(fs::metadata(&fixed).unwrap().len(), 10514432 + 512);
    let pre = d.path("pre.vhd");
    kettle(&[
        "vhd",
        "create",
        s(&pre),
        "--type",
        "fixed",
        "--size",
        "4M",
        "--preallocate",
    ])
    .ok();
    let m = fs::metadata(&pre).unwrap();
    assert!(
        m.blocks() * 512 >= m.len() - 512,
        "--preallocate left holes"
    );

    // Differencing: takes the parent's size and block size; --parent alone implies the type.
    let o = kettle(&[
        "vhd",
        "create",
        s(&d.path("child.vhd")),
        "--parent",
        s(&d.path("exact.vhd")),
    ])
    .ok();
    assert!(
        o.stdout.contains("differencing VHD, 34603008 bytes"),
        "{}",
        o.stdout
    );
    kettle(&[
        "vhd",
        "create",
        s(&d.path("child2.vhd")),
        "--type",
        "differencing",
        "--parent",
        s(&d.path("child.vhd")),
    ])
    .ok();
    assert_eq!(
        info_json(&d.path("child2.vhd"))["dynamic_header"]["block_size"],
        512 * 1024
    );
    kettle(&[
        "vhd",
        "create",
        s(&d.path("c3.vhd")),
        "--parent",
        s(&fixed),
        "--size",
        "1G",
    ])
    .fails(2, &["--size"]);

    // Errors from the library name the file.
    kettle(&["vhd", "create", s(&fixed), "--size", "1M"])
        .fails(1, &["fixed.vhd", "already exists"]);
    kettle(&[
        "vhd",
        "create",
        s(&d.path("b.vhd")),
        "--size",
        "1M",
        "--block-size",
        "3000",
    ])
    .fails(1, &["block size 3000"]);
    kettle(&["vhd", "create", s(&d.path("b.vhd")), "--size", "3T"]).fails(1, &["2040 GiB"]);
    kettle(&[
        "vhd",
        "create",
        s(&d.path("c.vhd")),
        "--parent",
        s(&d.path("none.vhd")),
    ])
    .fails(1, &["none.vhd"]);
    assert!(!d.path("b.vhd").exists() && !d.path("c.vhd").exists());
}

#[test]
fn info_shows_every_field() {
    let d = Scratch::new("vhd-info");
    let base = d.path("base.vhd");
    let mid = d.path("mid.vhd");
    let top = d.path("top.vhd");
    kettle(&[
        "vhd",
        "create",
        s(&base),
        "--size",
        "20M",
        "--block-size",
        "1M",
    ])
    .ok();
    let mut model = vec![0u8; 20_994_048];
    vhd_write(&base, 3 * MIB, &Rng(7).bytes(1536 * 1024), &mut model);
    kettle(&["vhd", "create", s(&mid), "--parent", s(&base)]).ok();
    kettle(&["vhd", "create", s(&top), "--parent", s(&mid)]).ok();
    vhd_write(&top, 0, &Rng(9).bytes(4096), &mut model);

    let text = kettle(&["vhd", "info", s(&top)]).ok().stdout;
    for needle in [
        "type:",
        "differencing",
        "cookie:                conectix",
        "features:              0x00000002 (reserved)",
        "format version:        1.0",
        "data offset:           0x200",
        "time stamp:",
        " UTC (",
        "creator application:   kttl",
        "creator version:       1.0",
        "creator host OS:       Wi2k",
        "original size:         20994048 bytes",
        "current size:          20994048 bytes",
        "geometry (C/H/S):      603/4/17",
        "disk type:             4 (differencing)",
        "checksum:",
        "(valid)",
        "unique id:",
        "saved state:           no",
        "dynamic header (at 0x200):",
        "cookie:                cxsparse",
        "table offset:          0x600",
        "header version:        1.0",
        "max table entries:     21",
        "block size:            1048576 bytes (1 MiB)",
        "parent unique id:",
        "parent time stamp:",
        "parent name:",
        "W2ku",
        "W2ru",
        ".\\mid.vhd",
        "allocated blocks:      1 of 21 (4.76%)",
        "parent chain:",
        "mid.vhd (differencing",
        "base.vhd (dynamic",
    ] {
        assert!(text.contains(needle), "info lacks {needle:?}:\n{text}");
    }

    let j = info_json(&top);
    assert_eq!(j["type"], "differencing");
    assert_eq!(j["size"], 20994048);
    let f = &j["footer"];
    assert_eq!(f["cookie"], "conectix");
    assert_eq!(f["features"], 2);
    assert_eq!(f["creator_app"], "kttl");
    assert_eq!(f["creator_host_os"], "Wi2k");
    assert_eq!(f["disk_type"], 4);
    assert_eq!(f["saved_state"], false);
    assert_eq!(f["geometry"]["cylinders"], 603);
    assert!(f["timestamp_date"].as_str().unwrap().ends_with("UTC"));
    let h = &j["dynamic_header"];
    assert_eq!(h["block_size"], MIB);
    assert_eq!(h["max_table_entries"], 21);
    let mid_info = info_json(&mid);
    assert_eq!(h["parent_unique_id"], mid_info["footer"]["unique_id"]);
    let locs = h["locators"].as_array().unwrap();
    let kinds: Vec<&str> = locs
        .iter()
        .map(|l| l["platform"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["W2ku", "W2ru"]);
    assert_eq!(locs[1]["path"], ".\\mid.vhd");
    let abs_mid = fs::canonicalize(&mid).unwrap();
    assert_eq!(locs[0]["path"], s(&abs_mid).replace('/', "\\"));
    assert_eq!(h["parent_name"], s(&abs_mid).replace('/', "\\"));
    assert_eq!(j["allocation"]["allocated_blocks"], 1);
    assert_eq!(j["allocation"]["total_blocks"], 21);
    let chain = j["chain"].as_array().unwrap();
    assert_eq!(chain.len(), 3);
    let types: Vec<&str> = chain.iter().map(|c| c["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["differencing", "differencing", "dynamic"]);
    assert!(chain[2]["path"].as_str().unwrap().ends_with("base.vhd"));
    assert_eq!(chain[2]["allocated_blocks"], 2);
    assert_eq!(j["chain_error"], Value::Null);

    // Fixed disk: no header; allocation ratio 1.
    let fixed = d.path("f.vhd");
    kettle(&[
        "vhd",
        "create",
        s(&fixed),
        "--type",
        "fixed",
        "--size",
        "1M",
    ])
    .ok();
    let j = info_json(&fixed);
    assert_eq!(j["dynamic_header"], Value::Null);
    assert_eq!(j["allocation"]["ratio"], 1.0);
    assert_eq!(j["footer"]["data_offset"], u64::MAX);

    // A missing parent is reported in the chain; info itself succeeds.
    fs::rename(&base, d.path("elsewhere.vhd")).unwrap();
    let text = kettle(&["vhd", "info", s(&top)]).ok().stdout;
    assert!(
        text.contains("broken:") && text.contains("parent not found"),
        "{text}"
    );
    assert!(info_json(&top)["chain_error"]
        .as_str()
        .unwrap()
        .contains("base.vhd"));

    // Not a VHD / not there.
    let raw = d.path("disk.img");
    fs::write(&raw, vec![0u8; 4096]).unwrap();
    kettle(&["vhd", "info", s(&raw)]).fails(1, &["disk.img", "cookie", "conectix"]);
    kettle(&["vhd", "info", s(&d.path("nope.vhd"))]).fails(1, &["nope.vhd", "No such file"]);
}

/// Flips one byte at `offset`.
fn corrupt(p: &Path, offset: u64) {
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(p)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, offset).unwrap();
    b[0] ^= 0x5A;
    f.write_all_at(&b, offset).unwrap();
}

#[test]
fn check_reports_errors_and_warnings() {
    let d = Scratch::new("vhd-check");
    let p = d.path("disk.vhd");
    let src = d.path("src.img");
    pattern_raw(&src, 8 * MIB, &[(MIB, 3 * MIB)], 3);
    kettle(&["vhd", "convert", s(&src), s(&p)]).ok();
    let o = kettle(&["vhd", "check", s(&p)]).ok();
    assert!(
        o.stdout.contains("disk.vhd: no errors, 0 warnings"),
        "{}",
        o.stdout
    );
    let j: Value =
        serde_json::from_str(&kettle(&["vhd", "check", "--json", s(&p)]).ok().stdout).unwrap();
    assert_eq!(j["clean"], true);
    assert_eq!(j["errors"], 0);

    // Warning only: the parent was modified after the child was made. Exit 0.
    let child = d.path("child.vhd");
    kettle(&["vhd", "create", s(&child), "--parent", s(&p)]).ok();
    tool_ok("coreutils", "touch", &["-d", "2001-01-01", s(&p)]);
    let o = kettle(&["vhd", "check", s(&child)]).ok();
    assert!(
        o.stdout.contains("warning: ") && o.stdout.contains("was modified after"),
        "{}",
        o.stdout
    );
    assert!(o.stdout.contains("no errors, 1 warning"), "{}", o.stdout);
    assert!(
        o.stdout.contains("checked: ") && o.stdout.contains(" -> "),
        "{}",
        o.stdout
    );

    // Damage in the dynamic header: the library's message names structure, field, offset.
    let damaged = d.path("damaged.vhd");
    fs::copy(&p, &damaged).unwrap();
    corrupt(&damaged, 512 + 100);
    let o = kettle(&["vhd", "check", s(&damaged)]);
    assert!(
        o.stdout.contains("error: ")
            && o.stdout
                .contains("dynamic header checksum mismatch at offset 0x200"),
        "{}",
        o.describe()
    );
    o.fails(
        1,
        &[
            "damaged.vhd",
            "check found 1 error",
            "dynamic header checksum mismatch",
        ],
    );
    let j: Value =
        serde_json::from_str(&kettle(&["vhd", "check", "--json", s(&damaged)]).stdout).unwrap();
    assert_eq!(j["clean"], false);
    assert_eq!(j["findings"][0]["severity"], "error");
    // Opening it elsewhere is refused with the same message.
    kettle(&["vhd", "info", s(&damaged)]).fails(1, &["dynamic header checksum mismatch"]);
    kettle(&["vhd", "convert", s(&damaged), s(&d.path("out.img"))])
        .fails(1, &["dynamic header checksum mismatch"]);
    assert!(!d.path("out.img").exists());

    // A BAT entry pointing past the end of the file.
    let bat = d.path("bat.vhd");
    fs::copy(&p, &bat).unwrap();
    let f = fs::OpenOptions::new().write(true).open(&bat).unwrap();
    f.write_all_at(&0x00FF_0000u32.to_be_bytes(), 1536).unwrap();
    kettle(&["vhd", "check", s(&bat)]).fails(1, &["BAT entry 0 points past the end of the file"]);

    // A damaged footer copy: opening works around it, check reports it.
    let copy = d.path("copy.vhd");
    fs::copy(&p, &copy).unwrap();
    corrupt(&copy, 30);
    kettle(&["vhd", "check", s(&copy)]).fails(1, &["footer copy"]);

    // Truncated file.
    let short = d.path("short.vhd");
    fs::write(&short, b"conectix").unwrap();
    kettle(&["vhd", "check", s(&short)]).fails(1, &["short.vhd", "too small"]);

    // A broken chain is an error of the child.
    fs::rename(&p, d.path("moved.vhd")).unwrap();
    kettle(&["vhd", "check", s(&child)]).fails(1, &["parent not found", "looked for"]);

    kettle(&["vhd", "check", s(&d.path("missing.vhd"))]).fails(1, &["missing.vhd", "No such file"]);
}

#[test]
fn convert_round_trips_and_flattens() {
    let d = Scratch::new("vhd-convert");
    let src = d.path("src.img");
    // 9 MiB + 3 sectors: not CHS-exact; data in scattered places, most of it zeros.
    let size = 9 * MIB + 1536;
    let extents = [
        (0, 4096),
        (2 * MIB + 512, 70_000 - 70_000 % 512),
        (9 * MIB, 1536),
    ];
    let model = pattern_raw(&src, size, &extents, 11);
    let before = read(&src);

    // raw -> dynamic (name decides), exact size: only blocks with data are allocated.
    let dynv = d.path("d.vhd");
    let o = kettle(&["vhd", "convert", "--exact-size", s(&src), s(&dynv)]).ok();
    assert!(
        o.stdout.contains("dynamic VHD, 9438720 bytes"),
        "{}",
        o.stdout
    );
    assert!(o.stdout.contains("3 of 5 blocks allocated"), "{}", o.stdout);
    assert_same("dynamic -> raw", &kettle_raw(&dynv, &d, "a.raw"), &model);

    // Small blocks.
    let small = d.path("small.vhd");
    kettle(&[
        "vhd",
        "convert",
        "--exact-size",
        "--block-size",
        "64K",
        s(&src),
        s(&small),
    ])
    .ok();
    let j = info_json(&small);
    assert_eq!(j["dynamic_header"]["block_size"], 65536);
    assert_eq!(j["allocation"]["allocated_blocks"], 1 + 2 + 1);
    assert_same("64K blocks", &kettle_raw(&small, &d, "b.raw"), &model);

    // raw -> fixed (default rounding: larger, the tail reads as zeros) -> raw.
    let fixed = d.path("f.vhd");
    let o = kettle(&["vhd", "convert", "--to", "fixed", s(&src), s(&fixed)]).ok();
    let fsize = info_json(&fixed)["size"].as_u64().unwrap();
    assert!(fsize > size, "{}", o.stdout);
    let back = kettle_raw(&fixed, &d, "c.raw");
    assert_same("fixed prefix", &back[..size as usize], &model);
    assert!(back[size as usize..].iter().all(|b| *b == 0));
    // Sparse: the fixed file's zero ranges are holes.
    assert!(fs::metadata(&fixed).unwrap().blocks() * 512 < 2 * MIB);

    // fixed -> dynamic -> fixed.
    let d2 = d.path("d2.vhd");
    kettle(&["vhd", "convert", s(&fixed), s(&d2)]).ok();
    let f2 = d.path("f2.vhd");
    kettle(&["vhd", "convert", "--to", "fixed", s(&d2), s(&f2)]).ok();
    assert_same(
        "fixed -> dynamic -> fixed",
        &kettle_raw(&f2, &d, "d.raw"),
        &back,
    );

    // --from raw reads a VHD file as plain bytes (its footer included).
    let asraw = d.path("asraw.img");
    kettle(&["vhd", "convert", "--from", "raw", s(&fixed), s(&asraw)]).ok();
    assert_eq!(
        read(&asraw),
        read(&fixed)[..fs::metadata(&fixed).unwrap().len() as usize / 512 * 512]
    );

    // A differencing chain is flattened.
    let child = d.path("child.vhd");
    kettle(&["vhd", "create", s(&child), "--parent", s(&dynv)]).ok();
    let mut m = model.clone();
    vhd_write(&child, 2 * MIB, &Rng(5).bytes(8192), &mut m);
    vhd_write(&child, 0, &[0u8; 1024], &mut m); // zeros hide the parent's data
    let flat = d.path("flat.vhd");
    let o = kettle(&["vhd", "convert", "--exact-size", s(&child), s(&flat)]).ok();
    assert!(o.stdout.contains("dynamic VHD"), "{}", o.stdout);
    assert_eq!(
        info_json(&flat)["dynamic_header"]["parent_unique_id"],
        Value::Null
    );
    assert_same("flattened chain", &kettle_raw(&flat, &d, "e.raw"), &m);

    // The destination: refused if it exists, replaced with --force, never the source.
    kettle(&["vhd", "convert", s(&src), s(&flat)])
        .fails(1, &["flat.vhd", "already exists", "--force"]);
    kettle(&[
        "vhd",
        "convert",
        "--force",
        "--exact-size",
        s(&src),
        s(&flat),
    ])
    .ok();
    assert_same("replaced", &kettle_raw(&flat, &d, "f.raw"), &model);
    kettle(&["vhd", "convert", "--force", s(&child), s(&dynv)])
        .fails(1, &["the destination is the source or one of its parents"]);
    kettle(&[
        "vhd",
        "convert",
        s(&d.path("none.img")),
        s(&d.path("x.vhd")),
    ])
    .fails(1, &["none.img", "No such file"]);
    assert_eq!(read(&src), before, "the source changed");
    let leftovers: Vec<_> = fs::read_dir(&d.0)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("kettle-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn merge_compact_resize() {
    let d = Scratch::new("vhd-merge");
    let base = d.path("base.vhd");
    kettle(&[
        "vhd",
        "create",
        s(&base),
        "--size",
        "16M",
        "--block-size",
        "1M",
    ])
    .ok();
    let size = info_json(&base)["size"].as_u64().unwrap() as usize;
    let mut model = vec![0u8; size];
    vhd_write(&base, 0, &Rng(1).bytes(3 * MIB as usize), &mut model);
    let child = d.path("child.vhd");
    kettle(&["vhd", "create", s(&child), "--parent", s(&base)]).ok();
    vhd_write(&child, MIB, &Rng(2).bytes(512 * 1024), &mut model);
    vhd_write(&child, 10 * MIB, &Rng(3).bytes(4096), &mut model);
    let base_before = kettle_raw(&base, &d, "b0.raw");

    let o = kettle(&["vhd", "merge", s(&child)]).ok();
    assert!(
        o.stdout.contains("merged ")
            && o.stdout.contains("base.vhd")
            && o.stdout.contains("528384 bytes"),
        "{}",
        o.stdout
    );
    assert_ne!(kettle_raw(&base, &d, "b1.raw"), base_before);
    assert_same(
        "parent after merge",
        &kettle_raw(&base, &d, "b2.raw"),
        &model,
    );
    assert_same(
        "child after merge",
        &kettle_raw(&child, &d, "c.raw"),
        &model,
    );
    let o = kettle(&["vhd", "merge", "--delete", s(&child)]).ok();
    assert!(o.stdout.contains("deleted"), "{}", o.stdout);
    assert!(!child.exists());
    kettle(&["vhd", "merge", s(&base)]).fails(1, &["base.vhd", "no parent to merge into"]);
    kettle(&["vhd", "merge", s(&child)]).fails(1, &["child.vhd", "No such file"]);

    // Compact: zero a block's data through the engine (it stays allocated), then drop it.
    vhd_write(&base, 2 * MIB, &vec![0u8; MIB as usize], &mut model);
    let before = info_json(&base)["allocation"]["allocated_blocks"]
        .as_u64()
        .unwrap();
    let o = kettle(&["vhd", "compact", s(&base)]).ok();
    assert!(
        o.stdout
            .contains(&format!("{before} -> {} blocks allocated", before - 1)),
        "{}",
        o.stdout
    );
    assert_same("after compact", &kettle_raw(&base, &d, "b3.raw"), &model);
    kettle(&["vhd", "check", s(&base)]).ok();
    let fixed = d.path("f.vhd");
    kettle(&[
        "vhd",
        "create",
        s(&fixed),
        "--type",
        "fixed",
        "--size",
        "1M",
    ])
    .ok();
    kettle(&["vhd", "compact", s(&fixed)]).fails(1, &["fixed disk"]);

    // Resize: grow in place; the data stays, the new space reads as zeros.
    let o = kettle(&["vhd", "resize", s(&base), "--size", "100M"]).ok();
    assert!(
        o.stdout.contains(&format!("resized from {size} bytes"))
            && o.stdout.contains("to 104865792 bytes"),
        "{}",
        o.stdout
    );
    let grown = kettle_raw(&base, &d, "b4.raw");
    assert_eq!(grown.len(), 104865792);
    assert_same("grown prefix", &grown[..size], &model);
    assert!(grown[size..].iter().all(|b| *b == 0));
    kettle(&["vhd", "check", s(&base)]).ok();
    let o = kettle(&["vhd", "resize", s(&base), "--size", "104865792"]).ok();
    assert!(o.stdout.contains("nothing to do"), "{}", o.stdout);
    kettle(&["vhd", "resize", s(&base), "--size", "10M"]).fails(1, &["base.vhd", "shrinking"]);
    let o = kettle(&[
        "vhd",
        "resize",
        s(&fixed),
        "--size",
        "3000000",
        "--exact-size",
    ])
    .ok();
    assert!(o.stdout.contains("to 3000320 bytes"), "{}", o.stdout);
    assert_eq!(info_json(&fixed)["size"], 3000320);
    kettle(&["vhd", "check", s(&fixed)]).ok();
}

#[test]
fn undo_disks_commit_and_discard() {
    let d = Scratch::new("vhd-undo");
    let disk = d.path("disk.vhd");
    kettle(&["vhd", "create", s(&disk), "--size", "8M"]).ok();
    let size = info_json(&disk)["size"].as_u64().unwrap() as usize;
    let mut model = vec![0u8; size];
    vhd_write(&disk, 0, &Rng(4).bytes(65536), &mut model);
    let original = model.clone();

    // Discard: the undo file goes, the disk is as it was.
    let undo = d.path("disk.vud");
    kettle(&["vhd", "create", s(&undo), "--parent", s(&disk)]).ok();
    let mut scratch_model = model.clone();
    vhd_write(&undo, 4096, &Rng(5).bytes(8192), &mut scratch_model);
    let o = kettle(&["vhd", "discard", s(&undo)]).ok();
    assert!(
        o.stdout.contains("discarded") && o.stdout.contains("disk.vud"),
        "{}",
        o.stdout
    );
    assert!(!undo.exists());
    assert_same("after discard", &kettle_raw(&disk, &d, "a.raw"), &original);

    // Commit, naming the disk: its NAME.vud is used.
    kettle(&["vhd", "create", s(&undo), "--parent", s(&disk)]).ok();
    vhd_write(&undo, 4096, &Rng(6).bytes(8192), &mut model);
    vhd_write(&undo, 5 * MIB, &Rng(7).bytes(512), &mut model);
    let o = kettle(&["vhd", "commit", s(&disk)]).ok();
    assert!(
        o.stdout.contains("committed")
            && o.stdout.contains("disk.vud")
            && o.stdout.contains("deleted"),
        "{}",
        o.stdout
    );
    assert!(!undo.exists());
    assert_same("after commit", &kettle_raw(&disk, &d, "b.raw"), &model);

    // Discard through the disk's name too.
    kettle(&["vhd", "create", s(&undo), "--parent", s(&disk)]).ok();
    kettle(&["vhd", "discard", s(&disk)]).ok();
    assert!(!undo.exists() && disk.exists());

    // Refusals: not a differencing disk (the disk itself stays), missing file.
    kettle(&["vhd", "discard", s(&disk)]).fails(1, &["disk.vhd", "not an undo disk"]);
    kettle(&["vhd", "commit", s(&disk)]).fails(1, &["disk.vhd", "not an undo disk"]);
    assert!(disk.exists());
    kettle(&["vhd", "commit", s(&d.path("gone.vud"))]).fails(1, &["gone.vud"]);
    kettle(&["vhd", "discard", s(&d.path("gone.vud"))]).fails(1, &["gone.vud"]);
    assert_same("after refusals", &kettle_raw(&disk, &d, "c.raw"), &model);
}

#[test]
fn clones_of_a_golden_image() {
    let d = Scratch::new("vhd-clone");
    let golden = d.path("golden.vhd");
    kettle(&["vhd", "create", s(&golden), "--size", "4M"]).ok();
    let size = info_json(&golden)["size"].as_u64().unwrap() as usize;
    let mut model = vec![0u8; size];
    vhd_write(&golden, 0, &Rng(8).bytes(8192), &mut model);

    // Beside the golden image, relative paths from its directory.
    let o = kettle_in(Some(&d.0), &["vhd", "clone", "golden.vhd", "--count", "3"]).ok();
    let names: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(
        names,
        [
            "golden-clone-1.vhd",
            "golden-clone-2.vhd",
            "golden-clone-3.vhd"
        ]
    );
    let golden_id = info_json(&golden)["footer"]["unique_id"].clone();
    for n in &names {
        let j = info_json(&d.path(n));
        assert_eq!(j["type"], "differencing");
        assert_eq!(j["dynamic_header"]["parent_unique_id"], golden_id);
        assert_same(n, &kettle_raw(&d.path(n), &d, "x.raw"), &model);
    }

    // Into another directory, with a name stem; numbers padded to one width.
    let sub = d.path("vms");
    fs::create_dir(&sub).unwrap();
    let o = kettle(&[
        "vhd",
        "clone",
        s(&golden),
        "--count",
        "10",
        "--dir",
        s(&sub),
        "--name",
        "web",
    ])
    .ok();
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(lines.len(), 10);
    assert!(
        lines[0].ends_with("vms/web-01.vhd") && lines[9].ends_with("vms/web-10.vhd"),
        "{lines:?}"
    );
    // A clone reads the golden image's data and writes only into itself.
    let c = Path::new(lines[4]);
    let mut m = model.clone();
    vhd_write(c, 0, &Rng(9).bytes(512), &mut m);
    assert_same("written clone", &kettle_raw(c, &d, "y.raw"), &m);
    assert_same("golden", &kettle_raw(&golden, &d, "z.raw"), &model);

    // An existing name: nothing is created.
    kettle(&[
        "vhd",
        "clone",
        s(&golden),
        "--count",
        "12",
        "--dir",
        s(&sub),
        "--name",
        "web",
    ])
    .fails(1, &["web-01.vhd", "already exists"]);
    assert!(!sub.join("web-11.vhd").exists());
    kettle(&[
        "vhd",
        "clone",
        s(&golden),
        "--count",
        "2",
        "--dir",
        s(&d.path("nodir")),
    ])
    .fails(1, &["nodir", "not a directory"]);
    kettle(&["vhd", "clone", s(&d.path("none.vhd")), "--count", "2"]).fails(1, &["none.vhd"]);
    assert!(!d.path("none-clone-1.vhd").exists());
}

/// The `.NAME.kettle-tmp-*` files the library writes next to a destination.
fn temp_files(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("kettle-tmp"))
        .collect()
}

/// Starts a long conversion (a large sparse raw image: every byte is read), waits until its
/// temporary file exists, sends `signal`, and returns the finished process's output.
fn interrupt_convert(d: &Scratch, extra: &[&str], signal: &str) -> Out {
    let src = d.path("big.img");
    if !src.exists() {
        let f = fs::File::create(&src).unwrap();
        f.set_len(64 << 30).unwrap();
        f.write_all_at(b"kettle", 1 << 20).unwrap();
    }
    let dst = d.path("big.vhd");
    let child = Command::new(kettle_tests::nested::kettle_binary())
        .args(["vhd", "convert"])
        .args(extra)
        .arg(&src)
        .arg(&dst)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while temp_files(&d.0).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no temporary file appeared"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(200));
    let k = tool(
        "dash",
        "sh",
        &["-c", &format!("kill {signal} {}", child.id())],
    );
    assert_eq!(k.code, Some(0), "{}", k.describe());
    let out = child.wait_with_output().unwrap();
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn interrupted_convert_leaves_everything_as_it_was() {
    let d = Scratch::new("vhd-interrupt");
    let o = interrupt_convert(&d, &[], "-INT");
    o.fails(
        130,
        &[
            "interrupted",
            "big.img is untouched",
            "big.vhd was not created",
        ],
    );
    assert!(temp_files(&d.0).is_empty(), "left {:?}", temp_files(&d.0));
    assert!(!d.path("big.vhd").exists());

    // Replacing an existing destination: it stays as it was (SIGTERM works the same way).
    let dst = d.path("big.vhd");
    fs::write(&dst, b"previous contents").unwrap();
    let o = interrupt_convert(&d, &["--force"], "-TERM");
    o.fails(130, &["interrupted", "big.vhd was not replaced"]);
    assert!(temp_files(&d.0).is_empty(), "left {:?}", temp_files(&d.0));
    assert_eq!(read(&dst), b"previous contents");
    let src = fs::metadata(d.path("big.img")).unwrap();
    assert_eq!(src.len(), 64 << 30, "the source changed");
}

#[test]
fn progress_bar_only_on_a_terminal() {
    let d = Scratch::new("vhd-progress");
    let src = d.path("src.img");
    fs::File::create(&src).unwrap().set_len(2 << 30).unwrap();
    // Not a terminal: nothing on stderr.
    let o = kettle(&["vhd", "convert", s(&src), s(&d.path("a.vhd"))]).ok();
    assert_eq!(o.stderr, "");
    // On a pseudo-terminal (util-linux `script`): the bar is drawn, then cleared.
    let cmd = format!(
        "{} vhd convert {} {}",
        kettle_tests::nested::kettle_binary().display(),
        s(&src),
        s(&d.path("b.vhd"))
    );
    let o = tool("bsdutils", "script", &["-qfec", &cmd, "/dev/null"]);
    assert_eq!(o.code, Some(0), "{}", o.describe());
    assert!(
        o.stdout.contains("converting ["),
        "no progress bar:\n{}",
        o.stdout
    );
    assert!(o.stdout.contains("GiB"), "{}", o.stdout);
    assert!(o.stdout.contains("b.vhd: dynamic VHD"), "{}", o.stdout);
}
