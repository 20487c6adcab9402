//! Helpers the nested tests share: running host tools, assembling small static Linux programs
//! for guests, running an expensive preparation once per test binary, and reading the
//! `MARKER value` lines guest and host scripts print.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Runs a host tool that must succeed; returns its standard output. Panics, with its output,
/// when it cannot run or fails.
pub fn sh(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Assembles `source` (GNU as, x86-64, raw system calls, entry `_start`) into the static
/// program `dir/name` with binutils, for a guest initramfs.
pub fn assemble_static(dir: &Path, name: &str, source: &str) -> PathBuf {
    let src = dir.join(format!("{name}.S"));
    let obj = dir.join(format!("{name}.o"));
    let bin = dir.join(name);
    std::fs::write(&src, source).unwrap();
    sh(
        Command::new("as").arg("--64").arg("-o").arg(&obj).arg(&src),
        "as (binutils)",
    );
    sh(
        Command::new("ld")
            .args(["-m", "elf_x86_64", "-static", "-nostdlib", "-o"])
            .arg(&bin)
            .arg(&obj),
        "ld (binutils)",
    );
    bin
}

/// Runs `prepare` once for all the tests of a binary and keeps its result; a panic inside is
/// kept too, so every test reports it and none repeats the (slow) preparation.
pub fn once<T: Send + Sync>(
    cell: &'static OnceLock<Result<T, String>>,
    prepare: fn() -> T,
) -> &'static T {
    let result = cell.get_or_init(|| {
        std::panic::catch_unwind(prepare).map_err(|e| {
            e.downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "the preparation panicked".to_string())
        })
    });
    match result {
        Ok(r) => r,
        Err(e) => panic!("{e}"),
    }
}

/// The `MARKER value` lines of a script's output.
#[derive(Clone, Copy)]
pub struct Markers<'a>(pub &'a str);

impl<'a> Markers<'a> {
    /// The values of every line that starts with `marker` and a space (or is just `marker`):
    /// "RO-SHA" does not match "RO-SHA-BEFORE".
    ///
    /// A kernel message the guest's kernel printed on the console in the middle of the line (a
    /// `[  805.964027] watchdog: ...` record after the value, before the script's newline) is
    /// cut off the value, and said on standard error.
    pub fn values(&self, marker: &str) -> Vec<&'a str> {
        self.lines(marker)
            .into_iter()
            .map(|v| match kernel_record_start(v) {
                Some(i) => {
                    eprintln!(
                        "note: a kernel message interrupted the {marker:?} line; value taken \
                         without it: {v:?}"
                    );
                    v[..i].trim()
                }
                None => v,
            })
            .collect()
    }

    /// The rest of every line that starts with `marker` and a space (or is just `marker`), as
    /// printed (console lines, for messages).
    pub fn lines(&self, marker: &str) -> Vec<&'a str> {
        let with_space = format!("{marker} ");
        self.0
            .lines()
            .map(|l| l.trim_end_matches('\r'))
            .filter(|l| l.starts_with(&with_space) || *l == marker)
            .map(|l| l[marker.len()..].trim())
            .collect()
    }

    /// The value of the one line with `marker`; panics, showing the output, when there is not
    /// exactly one.
    #[track_caller]
    pub fn one(&self, marker: &str) -> &'a str {
        let v = self.values(marker);
        assert_eq!(v.len(), 1, "expected one {marker:?} line in:\n{}", self.0);
        v[0]
    }

    /// [`Markers::one`] as a number.
    #[track_caller]
    pub fn number(&self, marker: &str) -> i64 {
        let v = self.one(marker);
        v.parse()
            .unwrap_or_else(|_| panic!("{marker} is {v:?}, not a number, in:\n{}", self.0))
    }
}

/// Where a Linux console record (`[` spaces, seconds, `.`, six digits, `]`) starts in `line`.
fn kernel_record_start(line: &str) -> Option<usize> {
    let b = line.as_bytes();
    (0..b.len()).find(|&i| {
        if b[i] != b'[' {
            return false;
        }
        let mut j = i + 1;
        while j < b.len() && b[j] == b' ' {
            j += 1;
        }
        let digits = j;
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        if j == digits || j >= b.len() || b[j] != b'.' {
            return false;
        }
        let frac = j + 1;
        j = frac;
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        j - frac == 6 && j < b.len() && b[j] == b']'
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kernel_message_inside_a_marker_line_is_cut_off() {
        let text = "B-RECV-SHA f33e66b571[  805.964027] watchdog: BUG: soft lockup - CPU#0 \
                    stuck for 304s! [sh:99]\nCOUNT [1] 7\nT [12.5] x\nEMPTY\n";
        let m = Markers(text);
        assert_eq!(m.one("B-RECV-SHA"), "f33e66b571");
        assert!(m.lines("B-RECV-SHA")[0].contains("soft lockup"));
        assert_eq!(m.one("COUNT"), "[1] 7");
        assert_eq!(m.one("T"), "[12.5] x");
        assert_eq!(m.one("EMPTY"), "");
        assert_eq!(kernel_record_start("[    0.000000] Linux"), Some(0));
        assert_eq!(kernel_record_start("[ 1.5]"), None);
    }
}
