//! `pcap=FILE`: a packet capture of one NIC, both directions, in the classic libpcap file
//! format (<https://wiki.wireshark.org/Development/LibpcapFileFormat>): a 24-byte global header
//! (magic 0xa1b2c3d4 in the host's byte order, i.e. microsecond timestamps; version 2.4;
//! snaplen 65535; link type 1, Ethernet) followed by one record per frame (seconds and
//! microseconds of the wall clock, captured length, original length, the frame). Read it with
//! `tcpdump -r FILE -e` or Wireshark.
//!
//! The file is created or truncated when the NIC is opened. Frames are recorded into memory
//! on the guest's threads and written to the file by a thread of their own (`net-pcap`) at
//! least every [`FLUSH_INTERVAL`], and when the NIC goes away, so the guest never waits for the
//! disk, and a crash loses at most the last half second. If the disk cannot keep up, records
//! beyond [`BUFFER_LIMIT`] are left out (and counted); a write error stops the capture with one
//! warning; the NIC itself carries on either way.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{NetBackend, NetError, NetStats};

/// Records reach the file at least this often.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(500);
/// Records waiting for the writer beyond this many bytes are left out.
pub const BUFFER_LIMIT: usize = 8 << 20;
/// The writer is woken early once this much waits.
const WAKE_AT: usize = 256 * 1024;
/// Frames longer than this are cut (the original length is still recorded).
pub const SNAPLEN: u32 = 65535;
const LINKTYPE_ETHERNET: u32 = 1;

/// The global header of a libpcap file.
fn file_header() -> [u8; 24] {
    let mut h = [0u8; 24];
    h[0..4].copy_from_slice(&0xa1b2_c3d4u32.to_ne_bytes());
    h[4..6].copy_from_slice(&2u16.to_ne_bytes());
    h[6..8].copy_from_slice(&4u16.to_ne_bytes());
    // thiszone and sigfigs stay 0.
    h[16..20].copy_from_slice(&SNAPLEN.to_ne_bytes());
    h[20..24].copy_from_slice(&LINKTYPE_ETHERNET.to_ne_bytes());
    h
}

/// What the guest threads and the writer share.
struct State {
    buf: Vec<u8>,
    stop: bool,
    failed: bool,
    /// Records left out because the writer fell behind.
    lost: u64,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

/// A backend whose frames are also written to a capture file.
pub struct Capture {
    inner: Arc<dyn NetBackend>,
    path: PathBuf,
    shared: Arc<Shared>,
    writer: Option<JoinHandle<()>>,
}

impl Capture {
    /// Creates (or truncates) `path`, writes the file header and starts the writer.
    pub fn new(inner: Arc<dyn NetBackend>, path: &Path) -> Result<Capture, NetError> {
        let err = |source| NetError::PcapCreate {
            path: path.to_path_buf(),
            source,
        };
        let mut file = File::create(path).map_err(err)?;
        file.write_all(&file_header()).map_err(err)?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                buf: Vec::new(),
                stop: false,
                failed: false,
                lost: 0,
            }),
            wake: Condvar::new(),
        });
        let writer = {
            let shared = shared.clone();
            let path = path.to_path_buf();
            std::thread::Builder::new()
                .name("net-pcap".into())
                .spawn(move || write_loop(file, &path, &shared))
                .map_err(err)?
        };
        log::info!(
            "capturing the frames of {} to {}",
            inner.describe(),
            path.display()
        );
        Ok(Capture {
            inner,
            path: path.to_path_buf(),
            shared,
            writer: Some(writer),
        })
    }

    /// Adds one record for `frame`, stamped now.
    fn record(&self, frame: &[u8]) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let caplen = frame.len().min(SNAPLEN as usize);
        let mut st = self.shared.state.lock().unwrap();
        if st.failed || st.stop {
            return;
        }
        if st.buf.len() + 16 + caplen > BUFFER_LIMIT {
            if st.lost == 0 {
                log::warn!(
                    "capture {}: the disk does not keep up; frames are left out of the capture",
                    self.path.display()
                );
            }
            st.lost += 1;
            return;
        }
        st.buf
            .extend_from_slice(&(now.as_secs() as u32).to_ne_bytes());
        st.buf.extend_from_slice(&now.subsec_micros().to_ne_bytes());
        st.buf.extend_from_slice(&(caplen as u32).to_ne_bytes());
        st.buf
            .extend_from_slice(&(frame.len() as u32).to_ne_bytes());
        st.buf.extend_from_slice(&frame[..caplen]);
        if st.buf.len() >= WAKE_AT {
            self.shared.wake.notify_one();
        }
    }
}

/// The writer thread: moves recorded bytes to the file every FLUSH_INTERVAL (or sooner when
/// much waits) until told to stop, then writes what is left.
fn write_loop(mut file: File, path: &Path, shared: &Shared) {
    loop {
        let (data, stop) = {
            let mut st = shared.state.lock().unwrap();
            if !st.stop && st.buf.len() < WAKE_AT {
                st = shared.wake.wait_timeout(st, FLUSH_INTERVAL).unwrap().0;
            }
            (std::mem::take(&mut st.buf), st.stop)
        };
        if !data.is_empty() {
            if let Err(e) = file.write_all(&data) {
                log::warn!(
                    "capture {}: cannot write ({e}); capturing stops, the NIC carries on",
                    path.display()
                );
                let mut st = shared.state.lock().unwrap();
                st.failed = true;
                st.buf = Vec::new();
                return;
            }
        }
        if stop {
            let lost = shared.state.lock().unwrap().lost;
            if lost > 0 {
                log::warn!(
                    "capture {}: {lost} frames were left out because the disk did not keep up",
                    path.display()
                );
            }
            return;
        }
    }
}

impl NetBackend for Capture {
    fn send(&self, frame: &[u8]) {
        self.record(frame);
        self.inner.send(frame);
    }

    fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        let r = self.inner.recv(buf)?;
        if let Some(n) = r {
            self.record(&buf[..n.min(buf.len())]);
        }
        Ok(r)
    }

    fn rx_fd(&self) -> Option<RawFd> {
        self.inner.rx_fd()
    }

    fn describe(&self) -> String {
        format!(
            "{} (captured to {})",
            self.inner.describe(),
            self.path.display()
        )
    }

    fn stats(&self) -> NetStats {
        self.inner.stats()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        {
            let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            st.stop = true;
        }
        self.shared.wake.notify_one();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::test_util::{frame, recv_until, TempDir};
    use crate::net::{open, BackendSpec, MAX_FRAME};
    use std::process::Command;

    const A: [u8; 6] = [0x00, 0x03, 0xff, 0x0c, 0xa0, 0x01];
    const B: [u8; 6] = [0x00, 0x03, 0xff, 0x0c, 0xa0, 0x02];

    fn tcpdump(path: &Path) -> Vec<String> {
        let out = match Command::new("tcpdump")
            .args(["-r"])
            .arg(path)
            .args(["-nn", "-e", "-t"])
            .output()
        {
            Ok(o) => o,
            Err(e) if e.kind() == io::ErrorKind::NotFound => panic!(
                "tcpdump is not installed (not found in PATH); the capture test checks kettle's \
                 files with it: run resources/setup.sh"
            ),
            Err(e) => panic!("cannot run tcpdump: {e}"),
        };
        assert!(
            out.status.success(),
            "tcpdump -r {} failed: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with(char::is_whitespace))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn capture_both_ways_reads_back_with_tcpdump() {
        let t = TempDir::new("pcap");
        let hub = t.0.join("hub");
        let file = t.0.join("a.pcap");
        let a = open(&BackendSpec::Socket(hub.clone()), A, Some(&file)).unwrap();
        let b = open(&BackendSpec::Socket(hub.clone()), B, None).unwrap();
        assert!(a
            .describe()
            .ends_with(&format!("(captured to {})", file.display())));
        // A sends 3 frames (one broadcast), B sends 2; A receives B's 2.
        let sent = [
            frame(B, A, &[1u8; 46]),
            frame([0xff; 6], A, &[2u8; 100]),
            frame(B, A, &[3u8; 1486]),
        ];
        for f in &sent {
            a.send(f);
        }
        let back = [frame(A, B, &[4u8; 46]), frame(A, B, &[5u8; 200])];
        for f in &back {
            b.send(f);
        }
        for f in &back {
            let got = recv_until(&*a, Duration::from_secs(2), |_| true);
            assert_eq!(got.as_deref(), Some(f.as_slice()));
        }
        let mut buf = vec![0u8; MAX_FRAME];
        assert_eq!(a.recv(&mut buf).unwrap(), None);
        // Within a second or so the records are on disk, before the NIC goes away.
        std::thread::sleep(FLUSH_INTERVAL + Duration::from_millis(300));
        let early = tcpdump(&file);
        assert_eq!(early.len(), 5, "{early:#?}");
        drop(a);
        let lines = tcpdump(&file);
        let want: Vec<(String, usize)> = sent
            .iter()
            .chain(back.iter())
            .map(|f| {
                let m = |x: &[u8]| crate::net::mac_colons(x.try_into().unwrap());
                (format!("{} > {}", m(&f[6..12]), m(&f[0..6])), f.len())
            })
            .collect();
        assert_eq!(lines.len(), want.len(), "{lines:#?}");
        for (line, (macs, len)) in lines.iter().zip(&want) {
            assert!(line.starts_with(macs), "{line} should start with {macs}");
            assert!(
                line.contains(&format!("length {len}")),
                "{line} should say length {len}"
            );
        }
        drop(b);
    }

    #[test]
    fn capture_header_and_records_are_libpcap() {
        let t = TempDir::new("pcaphdr");
        let file = t.0.join("n.pcap");
        let inner = open(&BackendSpec::None, A, None).unwrap();
        let c = Capture::new(inner, &file).unwrap();
        c.send(&frame(B, A, b"abc"));
        let big = vec![0u8; MAX_FRAME];
        c.send(&big);
        assert_eq!(c.stats().tx_dropped, 2, "the inner backend still counts");
        drop(c);
        let data = std::fs::read(&file).unwrap();
        assert_eq!(&data[..4], &0xa1b2_c3d4u32.to_ne_bytes());
        assert_eq!(u16::from_ne_bytes([data[4], data[5]]), 2);
        assert_eq!(u16::from_ne_bytes([data[6], data[7]]), 4);
        let u32_at = |o: usize| u32::from_ne_bytes(data[o..o + 4].try_into().unwrap());
        assert_eq!(u32_at(16), 65535);
        assert_eq!(u32_at(20), 1);
        // First record: 17 bytes, whole.
        assert_eq!((u32_at(24 + 8), u32_at(24 + 12)), (17, 17));
        let second = 24 + 16 + 17;
        // Second: cut to the snap length, original length kept.
        assert_eq!(
            (u32_at(second + 8), u32_at(second + 12)),
            (65535, MAX_FRAME as u32)
        );
        assert_eq!(data.len(), second + 16 + 65535);
    }

    #[test]
    fn capture_file_errors_name_the_path() {
        let e = open(
            &BackendSpec::None,
            A,
            Some(Path::new("/nonexistent/dir/x.pcap")),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("/nonexistent/dir/x.pcap"), "{e}");
    }
}
