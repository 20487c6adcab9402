//! Helpers shared by the `kettle vhd` tests: running the real binary and external tools,
//! scratch directories, data patterns, and writing into images through the `vhd` crate.

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use kettle_tests::nested::kettle_binary;

pub const MIB: u64 = 1024 * 1024;

/// What a finished command printed.
#[derive(Debug)]
pub struct Out {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    fn from(o: Output) -> Out {
        Out {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    pub fn describe(&self) -> String {
        format!(
            "exit {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }

    /// Asserts exit status 0 and nothing on stderr but logged warnings (`kettle: warn: ...`,
    /// such as a parent modified after its child was made): no progress bar is drawn when
    /// stderr is not a terminal.
    pub fn ok(self) -> Out {
        assert_eq!(self.code, Some(0), "expected success:\n{}", self.describe());
        assert!(
            self.stderr.lines().all(|l| l.starts_with("kettle: warn: ")),
            "unexpected stderr:\n{}",
            self.describe()
        );
        self
    }

    /// Asserts exit status `code` and exactly one line on stderr, `kettle: ...` containing
    /// every one of `needles`.
    pub fn fails(self, code: i32, needles: &[&str]) -> Out {
        assert_eq!(
            self.code,
            Some(code),
            "expected exit {code}:\n{}",
            self.describe()
        );
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "expected one error line:\n{}",
            self.describe()
        );
        assert!(
            lines[0].starts_with("kettle: "),
            "error line without the kettle: prefix:\n{}",
            self.describe()
        );
        for n in needles {
            assert!(
                lines[0].contains(n),
                "error line lacks {n:?}:\n{}",
                self.describe()
            );
        }
        self
    }
}

/// Runs `kettle ARGS...` with no standard input.
pub fn kettle<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Out {
    kettle_in(None, args)
}

/// Runs `kettle ARGS...` in directory `dir`.
pub fn kettle_in<S: AsRef<std::ffi::OsStr>>(dir: Option<&Path>, args: &[S]) -> Out {
    let mut c = Command::new(kettle_binary());
    c.args(args).stdin(Stdio::null());
    if let Some(d) = dir {
        c.current_dir(d);
    }
    Out::from(c.output().expect("run kettle"))
}

/// Runs an external tool; a missing tool fails the test naming the Debian package.
pub fn tool(package: &str, cmd: &str, args: &[&str]) -> Out {
    tool_in(package, None, cmd, args)
}

pub fn tool_in(package: &str, dir: Option<&Path>, cmd: &str, args: &[&str]) -> Out {
    let mut c = Command::new(cmd);
    c.args(args).stdin(Stdio::null());
    if let Some(d) = dir {
        c.current_dir(d);
    }
    match c.output() {
        Ok(o) => Out::from(o),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "{cmd} is not installed: these tests need Debian's {package} package (resources/setup.sh installs it)"
        ),
        Err(e) => panic!("cannot run {cmd}: {e}"),
    }
}

/// Runs an external tool and asserts success.
pub fn tool_ok(package: &str, cmd: &str, args: &[&str]) -> String {
    let o = tool(package, cmd, args);
    assert_eq!(o.code, Some(0), "{cmd} {args:?} failed:\n{}", o.describe());
    o.stdout
}

/// A scratch directory under the system temp dir, removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!("kettle-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        Scratch(d)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

pub fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// A small deterministic generator (xorshift) for test data.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub fn fill(&mut self, b: &mut [u8]) {
        for c in b.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut b = vec![0u8; n];
        self.fill(&mut b);
        b
    }
}

/// Writes a raw image of `size` bytes (a sparse file) holding `extents` of pseudo-random
/// data at the given byte offsets; returns its contents.
pub fn pattern_raw(path: &Path, size: u64, extents: &[(u64, u64)], seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed | 1);
    let mut model = vec![0u8; size as usize];
    for &(off, len) in extents {
        rng.fill(&mut model[off as usize..(off + len) as usize]);
    }
    let f = fs::File::create(path).unwrap();
    f.set_len(size).unwrap();
    use std::os::unix::fs::FileExt;
    for &(off, len) in extents {
        f.write_all_at(&model[off as usize..(off + len) as usize], off)
            .unwrap();
    }
    model
}

/// Writes `data` at byte `offset` (sector-aligned) of a VHD through the vhd crate, applying
/// the same write to `model`.
pub fn vhd_write(path: &Path, offset: u64, data: &[u8], model: &mut [u8]) {
    assert!(offset % 512 == 0 && data.len() % 512 == 0);
    let d = vhd::OpenOptions::new()
        .read_only(false)
        .open(path)
        .unwrap_or_else(|e| panic!("opening {} to write: {e}", path.display()));
    d.write(offset / 512, data).unwrap();
    d.flush().unwrap();
    model[offset as usize..offset as usize + data.len()].copy_from_slice(data);
}

/// Reads a whole file.
pub fn read(p: &Path) -> Vec<u8> {
    fs::read(p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

/// Asserts two disk images are equal, naming the first differing byte.
pub fn assert_same(what: &str, a: &[u8], b: &[u8]) {
    assert_eq!(a.len(), b.len(), "{what}: sizes differ");
    if let Some(i) = a.iter().zip(b).position(|(x, y)| x != y) {
        panic!(
            "{what}: first difference at byte {i} (sector {}): {:#04x} vs {:#04x}",
            i / 512,
            a[i],
            b[i]
        );
    }
}

/// `kettle vhd info --json PATH`, parsed.
pub fn info_json(p: &Path) -> serde_json::Value {
    let o = kettle(&["vhd", "info", "--json", s(p)]).ok();
    serde_json::from_str(&o.stdout).unwrap_or_else(|e| panic!("info --json: {e}\n{}", o.stdout))
}

/// kettle's flattened view of an image: `kettle vhd convert --to raw`.
pub fn kettle_raw(src: &Path, scratch: &Scratch, name: &str) -> Vec<u8> {
    let dst = scratch.path(name);
    let _ = fs::remove_file(&dst);
    kettle(&["vhd", "convert", "--to", "raw", s(src), s(&dst)]).ok();
    let data = read(&dst);
    fs::remove_file(&dst).unwrap();
    data
}
