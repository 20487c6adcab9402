//! Crash tests: a child process (this test binary, re-run with an environment variable)
//! writes and flushes random data, printing each write before issuing it and each completed
//! flush; it is killed with SIGKILL at a random moment. The image must then pass `check`,
//! open, hold every write flushed before the kill, and show for every other sector either
//! its flushed contents or those of a write issued after the last flush.

mod common;

use std::io::{BufRead, BufReader, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use vhd::{CreateOptions, OpenOptions, SizePolicy};

const ENV: &str = "KETTLE_VHD_CRASH_CHILD";
const SECTORS: u64 = 16384; // 8 MiB
const PARENT_ID: u32 = 0xFFFF_FFFF;

fn pattern(id: u32, sector: u64) -> Vec<u8> {
    let mut b = vec![0u8; 512];
    for c in b.chunks_exact_mut(12) {
        c[0..4].copy_from_slice(&id.to_le_bytes());
        c[4..12].copy_from_slice(&sector.to_le_bytes());
    }
    b
}

fn tag(b: &[u8], sector: u64) -> Option<u32> {
    if b.iter().all(|x| *x == 0) {
        return None;
    }
    let id = u32::from_le_bytes(b[0..4].try_into().unwrap());
    assert!(
        b == pattern(id, sector),
        "sector {sector} holds neither zeros nor a whole written sector"
    );
    Some(id)
}

/// The child: runs until killed. `KETTLE_VHD_CRASH_CHILD=path:seed:first-write-id`.
#[test]
fn crash_child() {
    let Ok(spec) = std::env::var(ENV) else { return };
    let (rest, first) = spec.rsplit_once(':').unwrap();
    let (path, seed) = rest.rsplit_once(':').unwrap();
    let first: u32 = first.parse().unwrap();
    let d = OpenOptions::new().read_only(false).open(path).unwrap();
    let mut rng = Rng(seed.parse().unwrap());
    let out = std::io::stdout();
    for id in first.. {
        if rng.below(6) == 0 {
            d.flush().unwrap();
            writeln!(out.lock(), "F {}", id - 1).unwrap();
            continue;
        }
        let max = if rng.below(4) == 0 { 600 } else { 16 };
        let count = 1 + rng.below(max);
        let sector = rng.below(SECTORS - count);
        let zeros = rng.below(8) == 0;
        let mut buf = Vec::with_capacity(count as usize * 512);
        for s in sector..sector + count {
            if zeros {
                buf.extend_from_slice(&[0u8; 512]);
            } else {
                buf.extend_from_slice(&pattern(id, s));
            }
        }
        writeln!(out.lock(), "W {id} {sector} {count} {}", zeros as u8).unwrap();
        out.lock().flush().unwrap();
        d.write(sector, &buf).unwrap();
    }
}

struct Logged {
    id: u32,
    sector: u64,
    count: u64,
    zeros: bool,
}

fn run_and_kill(path: &Path, seed: u64, first_id: u32, delay_ms: u64) -> (Vec<Logged>, u32) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(ENV, format!("{}:{seed}:{first_id}", path.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let lines = lines.clone();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines() {
                match l {
                    Ok(l) => lines.lock().unwrap().push(l),
                    Err(_) => break,
                }
            }
        })
    };
    // Wait until the child has written something, then a little more.
    for _ in 0..500 {
        if lines.lock().unwrap().len() > 5 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(delay_ms));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    reader.join().unwrap();
    let lines = lines.lock().unwrap();
    let mut writes = Vec::new();
    let mut flushed_upto = first_id - 1;
    for l in lines.iter() {
        // The test harness's "test crash_child ... " may precede the first line.
        let l = match l.find("W ").or_else(|| l.find("F ")) {
            Some(i) => &l[i..],
            None => continue,
        };
        let f: Vec<&str> = l.split_whitespace().collect();
        match f.as_slice() {
            ["W", id, s, c, z] => writes.push(Logged {
                id: id.parse().unwrap(),
                sector: s.parse().unwrap(),
                count: c.parse().unwrap(),
                zeros: *z == "1",
            }),
            ["F", id] => flushed_upto = id.parse().unwrap(),
            _ => {}
        }
    }
    assert!(!writes.is_empty(), "the child wrote nothing");
    (writes, flushed_upto)
}

fn verify(path: &Path, base: &[Option<u32>], writes: &[Logged], flushed_upto: u32, what: &str) {
    let report = vhd::check(path).unwrap();
    assert!(
        report.is_clean(),
        "{what}: check found {:?}",
        report.findings
    );
    let mut flushed = base.to_vec();
    for w in writes.iter().filter(|w| w.id <= flushed_upto) {
        for s in w.sector..w.sector + w.count {
            flushed[s as usize] = if w.zeros { None } else { Some(w.id) };
        }
    }
    let d = OpenOptions::new().open(path).unwrap();
    let data = read_all(&d);
    for s in 0..SECTORS {
        let got = tag(&data[s as usize * 512..(s as usize + 1) * 512], s);
        let ok = got == flushed[s as usize]
            || writes.iter().any(|w| {
                w.id > flushed_upto
                    && (w.sector..w.sector + w.count).contains(&s)
                    && got == if w.zeros { None } else { Some(w.id) }
            });
        assert!(
            ok,
            "{what}: sector {s} holds {got:?}; flushed through write {flushed_upto} it held {:?}",
            flushed[s as usize]
        );
    }
}

#[test]
fn killed_writers_leave_consistent_images() {
    let dir = tempfile::tempdir().unwrap();
    let exact = CreateOptions {
        size_policy: SizePolicy::Exact,
        ..Default::default()
    };
    // A parent with a pattern, for the differencing runs.
    let parent = dir.path().join("parent.vhd");
    vhd::create_dynamic(
        &parent,
        SECTORS * 512,
        64 * 1024,
        &exact,
        &mut no_progress(),
    )
    .unwrap();
    let mut parent_model = vec![None; SECTORS as usize];
    {
        let p = OpenOptions::new().read_only(false).open(&parent).unwrap();
        for s in (0..SECTORS).filter(|s| (s / 64) % 3 == 0) {
            p.write(s, &pattern(PARENT_ID, s)).unwrap();
            parent_model[s as usize] = Some(PARENT_ID);
        }
    }
    let mut rng = Rng(99);
    for iteration in 0..10u64 {
        let differencing = iteration % 2 == 1;
        let path = dir.path().join(format!("crash{iteration}.vhd"));
        let base = if differencing {
            vhd::create_differencing(
                &path,
                &parent,
                &CreateOptions::default(),
                &mut no_progress(),
            )
            .unwrap();
            parent_model.clone()
        } else {
            let block = [4096u32, 64 * 1024, 2 * 1024 * 1024][iteration as usize / 2 % 3];
            vhd::create_dynamic(&path, SECTORS * 512, block, &exact, &mut no_progress()).unwrap();
            vec![None; SECTORS as usize]
        };
        // Several kills of the same image: each run continues on what the previous left.
        let mut model_base = base;
        for round in 0..2 {
            let delay = 5 + rng.below(120);
            let first_id = 1 + round as u32 * 1_000_000;
            let (writes, flushed_upto) =
                run_and_kill(&path, iteration * 10 + round, first_id, delay);
            let what = format!("iteration {iteration} round {round} (killed after {delay} ms)");
            verify(&path, &model_base, &writes, flushed_upto, &what);
            // What the image holds now is the base of the next round.
            let d = OpenOptions::new().open(&path).unwrap();
            let data = read_all(&d);
            model_base = (0..SECTORS)
                .map(|s| tag(&data[s as usize * 512..(s as usize + 1) * 512], s))
                .collect();
        }
    }
}
