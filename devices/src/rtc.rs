//! The Motorola MC146818A real-time clock with 128 bytes of CMOS RAM, at ports 0x70 (index,
//! bit 7 = NMI mask) and 0x71 (data), interrupting on IRQ 8, as integrated in the PIIX4 (PIIX4
//! datasheet, "Real time clock" registers; register layout and behaviour from the MC146818A
//! data sheet, "Address map" and "Registers"). CMOS layout from the IBM PC/AT technical
//! reference and QEMU's convention for memory above 4 GiB (0x5B-0x5D).
//!
//! Time model: the guest's time is a count of seconds (UTC when the machine starts, taken from
//! the host's wall clock), advancing with a monotonic [`Clock`] while the oscillator runs
//! (register A DV = 010) and SET (register B bit 7) is clear. The divider chain has a phase: the
//! one-second updates and the periodic interrupt taps all fall on `chain origin + k * period`.
//! Setting SET or resetting the divider freezes the time registers as stored bytes the guest can
//! overwrite; clearing SET continues from the guest's values with the divider's phase kept,
//! releasing the divider reset makes the first update happen 500 ms later, as the data sheet
//! says. The register encoding (BCD or binary, 12 or 24 hours) is applied when the registers are
//! read, so changing register B while the clock runs changes the representation, not the time.
//! The day of week is derived from the date; a value the guest writes is kept only while the
//! clock is stopped. DSE (daylight saving) and SQWE are stored but have no effect.
//!
//! Interrupts: PF, AF and UF are computed lazily from the clock whenever register C is read or
//! the device's [`Timer`] fires; the timer is armed only for an interrupt that is enabled and
//! would raise IRQF, never closer than 100 µs, and not at all while IRQF is already set (no new
//! edge can happen before the guest reads register C).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::bus::warn_limited;
use crate::bus::{BusDevice, Irq, Timer};

/// A monotonic time source for devices that count time (RTC, PM timer). The VMM may supply one
/// that stops while the VM is paused; tests supply a fake.
pub trait Clock: Send + Sync {
    /// Time elapsed since an arbitrary fixed origin; never decreases.
    fn now(&self) -> Duration;
}

/// The host's monotonic clock (`CLOCK_MONOTONIC` through [`Instant`]).
pub struct MonotonicClock {
    origin: Instant,
}

impl MonotonicClock {
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
        }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// Register indexes, bits and CMOS offsets.
pub mod spec {
    use std::time::Duration;

    /// Bytes of CMOS RAM (registers 0x00-0x0D included).
    pub const CMOS_SIZE: usize = 128;
    /// Port offsets from 0x70.
    pub const INDEX_PORT: u64 = 0;
    pub const DATA_PORT: u64 = 1;
    pub const PORTS_LEN: u64 = 2;
    /// Index port bit 7: NMI disabled.
    pub const INDEX_NMI_DISABLE: u8 = 0x80;
    pub const INDEX_MASK: u8 = 0x7f;

    // Clock registers.
    pub const SECONDS: u8 = 0x00;
    pub const SECONDS_ALARM: u8 = 0x01;
    pub const MINUTES: u8 = 0x02;
    pub const MINUTES_ALARM: u8 = 0x03;
    pub const HOURS: u8 = 0x04;
    pub const HOURS_ALARM: u8 = 0x05;
    pub const DAY_OF_WEEK: u8 = 0x06;
    pub const DAY_OF_MONTH: u8 = 0x07;
    pub const MONTH: u8 = 0x08;
    pub const YEAR: u8 = 0x09;
    pub const REG_A: u8 = 0x0a;
    pub const REG_B: u8 = 0x0b;
    pub const REG_C: u8 = 0x0c;
    pub const REG_D: u8 = 0x0d;
    /// IBM century byte, BCD (or binary in DM binary mode) like the year register.
    pub const CENTURY: u8 = 0x32;

    /// An alarm byte with both top bits set matches any value.
    pub const ALARM_DONT_CARE: u8 = 0xc0;
    /// 12-hour mode: bit 7 of the hour is PM.
    pub const HOUR_PM: u8 = 0x80;

    // Register A.
    pub const A_UIP: u8 = 0x80;
    pub const A_DV_MASK: u8 = 0x70;
    /// DV = 010: 32.768 kHz time base, the only setting that keeps time.
    pub const A_DV_32KHZ: u8 = 0x20;
    pub const A_RS_MASK: u8 = 0x0f;
    /// What the firmware leaves: 32.768 kHz, 1024 Hz periodic rate.
    pub const A_FIRMWARE: u8 = 0x26;

    // Register B.
    pub const B_SET: u8 = 0x80;
    pub const B_PIE: u8 = 0x40;
    pub const B_AIE: u8 = 0x20;
    pub const B_UIE: u8 = 0x10;
    pub const B_SQWE: u8 = 0x08;
    pub const B_DM_BINARY: u8 = 0x04;
    pub const B_24H: u8 = 0x02;
    pub const B_DSE: u8 = 0x01;
    /// What the firmware leaves: BCD, 24-hour, no interrupts (Linux's rtc_cmos refuses 12-hour).
    pub const B_FIRMWARE: u8 = B_24H;

    // Register C (read-only, cleared by reading). PF/AF/UF line up with PIE/AIE/UIE.
    pub const C_IRQF: u8 = 0x80;
    pub const C_PF: u8 = 0x40;
    pub const C_AF: u8 = 0x20;
    pub const C_UF: u8 = 0x10;

    // Register D.
    pub const D_VRT: u8 = 0x80;

    // CMOS RAM as the IBM PC/AT BIOS lays it out.
    pub const SHUTDOWN_STATUS: u8 = 0x0f;
    pub const FLOPPY_TYPES: u8 = 0x10;
    pub const DISK_TYPES: u8 = 0x12;
    /// Equipment byte: bit 1 coprocessor present, bit 2 PS/2 mouse, bits 5:4 = 00 VGA.
    pub const EQUIPMENT: u8 = 0x14;
    pub const EQUIPMENT_VALUE: u8 = 0x06;
    /// Base memory in KiB (0x15 low, 0x16 high).
    pub const BASE_MEMORY: u8 = 0x15;
    pub const BASE_MEMORY_KIB: u16 = 640;
    /// Extended memory above 1 MiB in KiB, capped at 0xFFFF (0x17 low, 0x18 high).
    pub const EXTENDED_MEMORY: u8 = 0x17;
    /// The checksum covers 0x10-0x2D and is stored big-endian at 0x2E/0x2F.
    pub const CHECKSUM_START: u8 = 0x10;
    pub const CHECKSUM_END: u8 = 0x2d;
    pub const CHECKSUM: u8 = 0x2e;
    /// The same extended memory size again (0x30 low, 0x31 high).
    pub const EXTENDED_MEMORY_2: u8 = 0x30;
    /// Memory above 16 MiB (up to the PCI hole) in 64 KiB units (0x34 low, 0x35 high).
    pub const MEMORY_ABOVE_16M: u8 = 0x34;
    /// Memory above 4 GiB in 64 KiB units, 24 bits (0x5B-0x5D), QEMU's convention.
    pub const MEMORY_ABOVE_4G: u8 = 0x5b;
    /// The INT 13h CHS translation of each IDE hard disk, two bits per IDE position (primary
    /// master in bits 1:0, primary slave 3:2, secondary master 5:4, secondary slave 7:6), the
    /// Bochs/QEMU BIOS convention SeaBIOS reads: 0 none, 1 LBA-assisted, 2 large, 3 revised
    /// ECHS.
    pub const DISK_TRANSLATION: u8 = 0x39;
    pub const TRANSLATION_LBA: u8 = 1;

    /// UIP is set for this long before each update.
    pub const UIP_WINDOW: Duration = Duration::from_micros(244);
    /// The timer is never armed closer than this, to bound host load.
    pub const MIN_TIMER_PERIOD: Duration = Duration::from_micros(100);
    /// After the divider reset is released the first update comes this much later.
    pub const FIRST_UPDATE_AFTER_RESET: Duration = Duration::from_millis(500);

    /// The range of guest times a saved state may hold, in seconds since 1970-01-01 UTC:
    /// 0000-01-01 00:00:00 to 9999-12-31 23:59:59.
    pub const TIME_MIN: i64 = -62_167_219_200;
    pub const TIME_MAX: i64 = 253_402_300_799;
}

const NS_PER_SEC: i128 = 1_000_000_000;
const SECS_PER_DAY: i64 = 86_400;

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01 (H. Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A broken-down UTC time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Calendar {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    /// 0 = Sunday.
    weekday: u32,
}

impl Calendar {
    fn from_secs(secs: i64) -> Self {
        let days = secs.div_euclid(SECS_PER_DAY);
        let sod = secs.rem_euclid(SECS_PER_DAY) as u32;
        let (year, month, day) = civil_from_days(days);
        Self {
            year,
            month,
            day,
            hour: sod / 3600,
            minute: sod / 60 % 60,
            second: sod % 60,
            weekday: (days + 4).rem_euclid(7) as u32,
        }
    }
}

/// One alarm byte, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AlarmField {
    Any,
    Value(i64),
    /// A value that can never match (out of range or not valid BCD).
    Never,
}

impl AlarmField {
    fn matches(self, v: i64) -> bool {
        match self {
            Self::Any => true,
            Self::Value(x) => x == v,
            Self::Never => false,
        }
    }
}

/// Saved state of [`Rtc`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RtcState {
    /// The CMOS bytes, with the clock registers holding the time at saving.
    #[serde(with = "serde_big_array::BigArray")]
    pub cmos: [u8; spec::CMOS_SIZE],
    /// The index register (bits 6:0).
    pub index: u8,
    pub nmi_masked: bool,
    /// Guest time in seconds since 1970-01-01 UTC at saving (while the clock is stopped the
    /// clock bytes in `cmos` are authoritative instead).
    pub time: i64,
    /// Nanoseconds since the divider chain's last one-second boundary.
    pub phase_ns: u64,
}

/// The MC146818A RTC and CMOS RAM. Insert it on the I/O bus at 0x70 with length 2.
pub struct Rtc {
    // Runtime handles.
    irq: Irq,
    timer: Box<dyn Timer>,
    clock: Arc<dyn Clock>,
    // Guest-visible state.
    cmos: [u8; spec::CMOS_SIZE],
    index: u8,
    nmi_masked: bool,
    /// Monotonic time (ns) at which the divider chain's count was zero: one-second updates and
    /// periodic taps fall on multiples of their period from here.
    chain_origin: i128,
    /// Guest time at `chain_origin`: while running, time = time_base + whole seconds since.
    time_base: i64,
    /// Monotonic time up to which PF/AF/UF have been accounted.
    last_check: i128,
    irq_high: bool,
}

impl Rtc {
    /// An RTC set to the host's UTC time, for a guest with `low_ram` bytes of RAM below the PCI
    /// hole (counting from address 0) and `high_ram` bytes above 4 GiB.
    pub fn new(irq: Irq, timer: Box<dyn Timer>, low_ram: u64, high_ram: u64) -> Self {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Self::with_clock(
            irq,
            timer,
            low_ram,
            high_ram,
            Arc::new(MonotonicClock::new()),
            wall,
        )
    }

    /// Like [`Rtc::new`] with an explicit monotonic clock and the wall-clock time (since the Unix
    /// epoch) the guest starts at.
    pub fn with_clock(
        irq: Irq,
        timer: Box<dyn Timer>,
        low_ram: u64,
        high_ram: u64,
        clock: Arc<dyn Clock>,
        wall: Duration,
    ) -> Self {
        let now = clock.now().as_nanos() as i128;
        let mut rtc = Self {
            irq,
            timer,
            clock,
            cmos: [0; spec::CMOS_SIZE],
            index: 0,
            nmi_masked: false,
            chain_origin: now - i128::from(wall.subsec_nanos()),
            time_base: wall.as_secs() as i64,
            last_check: now,
            irq_high: false,
        };
        rtc.cmos[spec::REG_A as usize] = spec::A_FIRMWARE;
        rtc.cmos[spec::REG_B as usize] = spec::B_FIRMWARE;
        rtc.cmos[spec::REG_D as usize] = spec::D_VRT;
        rtc.store_time(rtc.time_base);
        rtc.fill_memory_sizes(low_ram, high_ram);
        rtc
    }

    /// Records LBA-assisted translation (CMOS 0x39) for the hard disks at these IDE positions
    /// (0 primary master ... 3 secondary slave; others are ignored): what a BIOS that reads
    /// the CMOS for it (SeaBIOS) then reports, kettle's BIOS does anyway.
    pub fn set_lba_translation(&mut self, positions: &[usize]) {
        let mut v = 0u8;
        for &p in positions.iter().filter(|&&p| p < 4) {
            v |= spec::TRANSLATION_LBA << (2 * p);
        }
        self.cmos[spec::DISK_TRANSLATION as usize] = v;
    }

    fn fill_memory_sizes(&mut self, low_ram: u64, high_ram: u64) {
        let put16 = |cmos: &mut [u8; spec::CMOS_SIZE], at: u8, v: u16| {
            cmos[at as usize..at as usize + 2].copy_from_slice(&v.to_le_bytes());
        };
        let c = &mut self.cmos;
        c[spec::EQUIPMENT as usize] = spec::EQUIPMENT_VALUE;
        put16(c, spec::BASE_MEMORY, spec::BASE_MEMORY_KIB);
        let ext_kib = (low_ram.saturating_sub(1 << 20) / 1024).min(0xffff) as u16;
        put16(c, spec::EXTENDED_MEMORY, ext_kib);
        put16(c, spec::EXTENDED_MEMORY_2, ext_kib);
        let above_16m = (low_ram.saturating_sub(16 << 20) >> 16).min(0xffff) as u16;
        put16(c, spec::MEMORY_ABOVE_16M, above_16m);
        let above_4g = (high_ram >> 16).min(0xff_ffff) as u32;
        let at = spec::MEMORY_ABOVE_4G as usize;
        c[at..at + 3].copy_from_slice(&above_4g.to_le_bytes()[..3]);
        let sum: u16 = c[spec::CHECKSUM_START as usize..=spec::CHECKSUM_END as usize]
            .iter()
            .map(|&b| u16::from(b))
            .sum();
        c[spec::CHECKSUM as usize..spec::CHECKSUM as usize + 2].copy_from_slice(&sum.to_be_bytes());
    }

    /// Whether the guest has disabled NMIs through bit 7 of the index port.
    pub fn nmi_masked(&self) -> bool {
        self.nmi_masked
    }

    /// To be called by the VMM when the timer this device armed fires.
    pub fn timer_expired(&mut self) {
        let now = self.now();
        self.catch_up(now);
        self.rearm(now);
    }

    pub fn state(&mut self) -> RtcState {
        let now = self.now();
        self.catch_up(now);
        let time = self.secs_at(now);
        if self.running() {
            self.store_time(time);
        }
        RtcState {
            cmos: self.cmos,
            index: self.index,
            nmi_masked: self.nmi_masked,
            time,
            phase_ns: (now - self.chain_origin).rem_euclid(NS_PER_SEC) as u64,
        }
    }

    /// Restores `state`; the clock continues from the saved guest time and divider phase. A time
    /// outside the years 0000-9999 (which the clock registers cannot show anyway) is clamped into
    /// them, so that no later calculation overflows.
    pub fn restore(&mut self, state: &RtcState) {
        let now = self.now();
        let time = state.time.clamp(spec::TIME_MIN, spec::TIME_MAX);
        if time != state.time {
            warn_limited!(
                "RTC: saved time {} is outside the years 0000-9999; clamped to {time}",
                state.time
            );
        }
        self.cmos = state.cmos;
        self.cmos[spec::REG_A as usize] &= !spec::A_UIP;
        self.index = state.index & spec::INDEX_MASK;
        self.nmi_masked = state.nmi_masked;
        self.chain_origin = now - i128::from(state.phase_ns % NS_PER_SEC as u64);
        self.time_base = time;
        self.last_check = now;
        self.irq_high = self.reg(spec::REG_C) & spec::C_IRQF != 0;
        self.irq.set_level(self.irq_high);
        self.rearm(now);
    }

    fn now(&self) -> i128 {
        self.clock.now().as_nanos() as i128
    }

    fn reg(&self, index: u8) -> u8 {
        self.cmos[index as usize]
    }

    fn divider_on(&self) -> bool {
        self.reg(spec::REG_A) & spec::A_DV_MASK == spec::A_DV_32KHZ
    }

    /// Whether the time counts: oscillator on and SET clear.
    fn running(&self) -> bool {
        self.divider_on() && self.reg(spec::REG_B) & spec::B_SET == 0
    }

    fn sec_index(&self, t: i128) -> i128 {
        (t - self.chain_origin).div_euclid(NS_PER_SEC)
    }

    fn secs_at(&self, t: i128) -> i64 {
        self.time_base + self.sec_index(t) as i64
    }

    /// The periodic interrupt period as a power of two of 1/32768 s, from register A RS:
    /// RS 1 and 2 repeat the 256 Hz and 128 Hz taps, RS 3-15 give 8192 Hz .. 2 Hz, RS 0 is off.
    fn period_exponent(&self) -> Option<u32> {
        match u32::from(self.reg(spec::REG_A) & spec::A_RS_MASK) {
            0 => None,
            rs @ (1 | 2) => Some(rs + 6),
            rs => Some(rs - 1),
        }
    }

    fn tick_index(&self, t: i128, exp: u32) -> i128 {
        ((t - self.chain_origin) * 32768).div_euclid(NS_PER_SEC << exp)
    }

    fn tick_time(&self, index: i128, exp: u32) -> i128 {
        self.chain_origin + (index * (NS_PER_SEC << exp) + 32767).div_euclid(32768)
    }

    fn binary(&self) -> bool {
        self.reg(spec::REG_B) & spec::B_DM_BINARY != 0
    }

    fn encode(&self, v: u32) -> u8 {
        if self.binary() {
            v as u8
        } else {
            (((v / 10 % 10) << 4) | (v % 10)) as u8
        }
    }

    fn decode(&self, b: u8) -> i64 {
        if self.binary() {
            i64::from(b)
        } else {
            i64::from(b >> 4) * 10 + i64::from(b & 0xf)
        }
    }

    fn encode_hour(&self, h: u32) -> u8 {
        if self.reg(spec::REG_B) & spec::B_24H != 0 {
            self.encode(h)
        } else {
            let h12 = match h % 12 {
                0 => 12,
                r => r,
            };
            self.encode(h12) | if h >= 12 { spec::HOUR_PM } else { 0 }
        }
    }

    fn decode_hour(&self, b: u8) -> i64 {
        if self.reg(spec::REG_B) & spec::B_24H != 0 {
            self.decode(b)
        } else {
            self.decode(b & !spec::HOUR_PM) % 12 + if b & spec::HOUR_PM != 0 { 12 } else { 0 }
        }
    }

    /// The value clock register `index` shows for time `secs`, in the current encoding.
    fn clock_register(&self, index: u8, secs: i64) -> u8 {
        let c = Calendar::from_secs(secs);
        match index {
            spec::SECONDS => self.encode(c.second),
            spec::MINUTES => self.encode(c.minute),
            spec::HOURS => self.encode_hour(c.hour),
            spec::DAY_OF_WEEK => self.encode(c.weekday + 1),
            spec::DAY_OF_MONTH => self.encode(c.day),
            spec::MONTH => self.encode(c.month),
            spec::YEAR => self.encode(c.year.rem_euclid(100) as u32),
            spec::CENTURY => self.encode(c.year.div_euclid(100).clamp(0, 99) as u32),
            _ => self.reg(index),
        }
    }

    fn is_clock_register(index: u8) -> bool {
        matches!(
            index,
            spec::SECONDS
                | spec::MINUTES
                | spec::HOURS
                | spec::DAY_OF_WEEK
                | spec::DAY_OF_MONTH
                | spec::MONTH
                | spec::YEAR
                | spec::CENTURY
        )
    }

    /// Writes time `secs` into the clock bytes (freezing it there).
    fn store_time(&mut self, secs: i64) {
        for i in [
            spec::SECONDS,
            spec::MINUTES,
            spec::HOURS,
            spec::DAY_OF_WEEK,
            spec::DAY_OF_MONTH,
            spec::MONTH,
            spec::YEAR,
            spec::CENTURY,
        ] {
            self.cmos[i as usize] = self.clock_register(i, secs);
        }
    }

    /// The time the clock bytes hold. Out-of-range values roll over (month 13 is January of
    /// the next year, day 0 the last day of the previous month) rather than being refused.
    fn stored_time(&self) -> i64 {
        let year = self.decode(self.reg(spec::CENTURY)) * 100 + self.decode(self.reg(spec::YEAR));
        let month0 = self.decode(self.reg(spec::MONTH)) - 1;
        let days = days_from_civil(year + month0.div_euclid(12), month0.rem_euclid(12) + 1, 1)
            + self.decode(self.reg(spec::DAY_OF_MONTH))
            - 1;
        days * SECS_PER_DAY
            + self.decode_hour(self.reg(spec::HOURS)) * 3600
            + self.decode(self.reg(spec::MINUTES)) * 60
            + self.decode(self.reg(spec::SECONDS))
    }

    fn alarm_field(&self, index: u8, max: i64) -> AlarmField {
        let b = self.reg(index);
        if b & spec::ALARM_DONT_CARE == spec::ALARM_DONT_CARE {
            return AlarmField::Any;
        }
        let valid_bcd = self.binary() || (b & 0xf < 10 && (b & 0x7f) >> 4 < 10);
        let v = if index == spec::HOURS_ALARM {
            let h = b & !spec::HOUR_PM;
            let raw = self.decode(h);
            let twelve = self.reg(spec::REG_B) & spec::B_24H == 0;
            if twelve && !(1..=12).contains(&raw) {
                return AlarmField::Never;
            }
            self.decode_hour(b)
        } else {
            self.decode(b)
        };
        if valid_bcd && (0..max).contains(&v) {
            AlarmField::Value(v)
        } else {
            AlarmField::Never
        }
    }

    /// The first guest second after `after` at which the alarm matches, within a day.
    fn next_alarm(&self, after: i64) -> Option<i64> {
        let hour = self.alarm_field(spec::HOURS_ALARM, 24);
        let minute = self.alarm_field(spec::MINUTES_ALARM, 60);
        let second = self.alarm_field(spec::SECONDS_ALARM, 60);
        if [hour, minute, second].contains(&AlarmField::Never) {
            return None;
        }
        let start = after + 1;
        let mut minute_start = start - start.rem_euclid(60);
        // 1441 minutes cover a whole day from any starting point.
        for _ in 0..=1440 {
            let sod = minute_start.rem_euclid(SECS_PER_DAY);
            if hour.matches(sod / 3600) && minute.matches(sod / 60 % 60) {
                let lo = (start - minute_start).max(0);
                let s = match second {
                    AlarmField::Value(v) => v,
                    _ => lo,
                };
                if s >= lo {
                    return Some(minute_start + s);
                }
            }
            minute_start += 60;
        }
        None
    }

    /// Accounts the periodic ticks, updates and alarms that happened in (last_check, now].
    fn catch_up(&mut self, now: i128) {
        let last = self.last_check;
        if now <= last {
            return;
        }
        let mut flags = 0;
        if self.divider_on() {
            if let Some(exp) = self.period_exponent() {
                if self.tick_index(now, exp) > self.tick_index(last, exp) {
                    flags |= spec::C_PF;
                }
            }
        }
        if self.running() && self.sec_index(now) > self.sec_index(last) {
            flags |= spec::C_UF;
            if let Some(s) = self.next_alarm(self.secs_at(last)) {
                if s <= self.secs_at(now) {
                    flags |= spec::C_AF;
                }
            }
        }
        self.last_check = now;
        self.cmos[spec::REG_C as usize] |= flags;
        self.update_irqf();
    }

    /// IRQF = PF·PIE + AF·AIE + UF·UIE; the line follows it.
    fn update_irqf(&mut self) {
        let enabled = self.reg(spec::REG_B) & (spec::B_PIE | spec::B_AIE | spec::B_UIE);
        let c = &mut self.cmos[spec::REG_C as usize];
        if *c & enabled != 0 {
            *c |= spec::C_IRQF;
        } else {
            *c &= !spec::C_IRQF;
        }
        let want = *c & spec::C_IRQF != 0;
        if want != self.irq_high {
            self.irq_high = want;
            self.irq.set_level(want);
        }
    }

    /// Arms the timer for the next enabled event that would raise IRQF.
    fn rearm(&mut self, now: i128) {
        if self.reg(spec::REG_C) & spec::C_IRQF != 0 {
            self.timer.arm(None);
            return;
        }
        let b = self.reg(spec::REG_B);
        let mut next: Option<i128> = None;
        let mut consider = |t: i128| next = Some(next.map_or(t, |n| n.min(t)));
        if b & spec::B_PIE != 0 && self.divider_on() {
            if let Some(exp) = self.period_exponent() {
                consider(self.tick_time(self.tick_index(now, exp) + 1, exp));
            }
        }
        if self.running() {
            if b & spec::B_UIE != 0 {
                consider(self.chain_origin + (self.sec_index(now) + 1) * NS_PER_SEC);
            }
            if b & spec::B_AIE != 0 {
                if let Some(s) = self.next_alarm(self.secs_at(now)) {
                    consider(self.chain_origin + i128::from(s - self.time_base) * NS_PER_SEC);
                }
            }
        }
        let after = next.map(|t| {
            let ns = u64::try_from((t - now).max(0)).unwrap_or(u64::MAX);
            Duration::from_nanos(ns).max(spec::MIN_TIMER_PERIOD)
        });
        self.timer.arm(after);
    }

    /// Applies a change to registers A or B, keeping the time continuous: a running clock stays
    /// at the same time and phase, a clock that stops freezes its time into the clock bytes (in
    /// the new encoding), a clock that starts continues from the clock bytes.
    fn reconfigure(&mut self, now: i128, change: impl FnOnce(&mut Self)) {
        let before = self.running().then(|| self.secs_at(now));
        change(self);
        match (before, self.running()) {
            (Some(secs), true) => self.time_base = secs - self.sec_index(now) as i64,
            (Some(secs), false) => self.store_time(secs),
            (None, true) => self.time_base = self.stored_time() - self.sec_index(now) as i64,
            (None, false) => {}
        }
    }

    fn read_register(&mut self, index: u8) -> u8 {
        let now = self.now();
        match index {
            spec::REG_A => {
                let mut a = self.reg(spec::REG_A) & !spec::A_UIP;
                let phase = (now - self.chain_origin).rem_euclid(NS_PER_SEC);
                if self.running() && phase >= NS_PER_SEC - spec::UIP_WINDOW.as_nanos() as i128 {
                    a |= spec::A_UIP;
                }
                a
            }
            spec::REG_C => {
                self.catch_up(now);
                let c = self.reg(spec::REG_C);
                self.cmos[spec::REG_C as usize] = 0;
                self.update_irqf();
                self.rearm(now);
                c
            }
            spec::REG_D => spec::D_VRT,
            i if Self::is_clock_register(i) && self.running() => {
                self.clock_register(i, self.secs_at(now))
            }
            i => self.reg(i),
        }
    }

    fn write_register(&mut self, index: u8, value: u8) {
        let now = self.now();
        self.catch_up(now);
        match index {
            i if Self::is_clock_register(i) => {
                if self.running() {
                    // Set the running clock: freeze, change one field, continue in phase.
                    self.store_time(self.secs_at(now));
                    self.cmos[i as usize] = value;
                    self.time_base = self.stored_time() - self.sec_index(now) as i64;
                } else {
                    self.cmos[i as usize] = value;
                }
            }
            spec::REG_A => self.reconfigure(now, |rtc| {
                let was_on = rtc.divider_on();
                rtc.cmos[spec::REG_A as usize] = value & !spec::A_UIP;
                if !was_on && rtc.divider_on() {
                    // The chain restarts at its midpoint: the first update is 500 ms away.
                    rtc.chain_origin = now - spec::FIRST_UPDATE_AFTER_RESET.as_nanos() as i128;
                    rtc.last_check = now;
                }
            }),
            spec::REG_B => {
                // Setting SET clears UIE (MC146818A data sheet, register B).
                let v = if value & spec::B_SET != 0 {
                    value & !spec::B_UIE
                } else {
                    value
                };
                self.reconfigure(now, |rtc| rtc.cmos[spec::REG_B as usize] = v);
                self.update_irqf();
            }
            spec::REG_C | spec::REG_D => {
                warn_limited!(
                    "RTC: write of {value:#04x} to read-only register {index:#04x} ignored"
                );
            }
            i => self.cmos[i as usize] = value,
        }
        self.rearm(now);
    }
}

impl BusDevice for Rtc {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = match offset + i as u64 {
                // The index register is write-only.
                spec::INDEX_PORT => 0xff,
                spec::DATA_PORT => self.read_register(self.index),
                _ => 0xff,
            };
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        // A word write to 0x70 sets the index and then writes the data byte, like two byte writes.
        for (i, &v) in data.iter().enumerate() {
            match offset + i as u64 {
                spec::INDEX_PORT => {
                    self.index = v & spec::INDEX_MASK;
                    self.nmi_masked = v & spec::INDEX_NMI_DISABLE != 0;
                }
                spec::DATA_PORT => self.write_register(self.index, v),
                port => warn_limited!("RTC: write to port offset {port} ignored"),
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use super::Clock;
    use std::sync::Mutex;
    use std::time::Duration;

    /// A clock the test moves by hand.
    #[derive(Default)]
    pub struct FakeClock(Mutex<Duration>);

    impl FakeClock {
        pub fn advance(&self, by: Duration) {
            *self.0.lock().unwrap() += by;
        }
    }

    impl Clock for FakeClock {
        fn now(&self) -> Duration {
            *self.0.lock().unwrap()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::FakeClock;
    use super::*;
    use crate::bus::testing::{FakeIrq, FakeTimer};
    use crate::testing::cbor_round_trip;

    /// 2024-02-29 23:59:58 UTC, a Thursday.
    const LEAP_NIGHT: u64 = 1_709_251_198;

    struct T {
        rtc: Rtc,
        irq: Arc<FakeIrq>,
        timer: FakeTimer,
        clock: Arc<FakeClock>,
    }

    fn rtc_at(wall: Duration) -> T {
        rtc_with_ram(wall, 256 << 20, 0)
    }

    fn rtc_with_ram(wall: Duration, low: u64, high: u64) -> T {
        let irq = Arc::new(FakeIrq::default());
        let timer = FakeTimer::default();
        let clock = Arc::new(FakeClock::default());
        clock.advance(Duration::from_secs(1000));
        let rtc = Rtc::with_clock(
            irq.clone(),
            Box::new(timer.clone()),
            low,
            high,
            clock.clone(),
            wall,
        );
        T {
            rtc,
            irq,
            timer,
            clock,
        }
    }

    impl T {
        fn get(&mut self, index: u8) -> u8 {
            self.rtc.write(0, &[index]);
            let mut b = [0];
            self.rtc.read(1, &mut b);
            b[0]
        }
        fn set(&mut self, index: u8, v: u8) {
            self.rtc.write(0, &[index | 0x80]);
            self.rtc.write(1, &[v]);
        }
        fn time(&mut self) -> [u8; 8] {
            [0, 2, 4, 6, 7, 8, 9, 0x32].map(|i| self.get(i))
        }
        fn advance(&self, d: Duration) {
            self.clock.advance(d);
        }
        fn armed(&self) -> Option<Duration> {
            *self.timer.armed.lock().unwrap()
        }
        /// Advances to the armed deadline and fires the timer.
        fn fire(&mut self) {
            let d = self.armed().expect("timer armed");
            self.advance(d);
            self.rtc.timer_expired();
        }
    }

    #[test]
    fn calendar_conversions_round_trip() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        for days in [-1, 0, 59, 365, 11_016, 19_782, 100_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m.into(), d.into()), days);
        }
        let c = Calendar::from_secs(LEAP_NIGHT as i64);
        assert_eq!((c.year, c.month, c.day), (2024, 2, 29));
        assert_eq!((c.hour, c.minute, c.second, c.weekday), (23, 59, 58, 4));
    }

    #[test]
    fn starts_at_host_time_in_bcd_24h_and_advances() {
        let mut t = rtc_at(Duration::from_secs(LEAP_NIGHT));
        assert_eq!(t.get(spec::REG_A), 0x26);
        assert_eq!(t.get(spec::REG_B), 0x02);
        assert_eq!(t.get(spec::REG_D), 0x80);
        assert_eq!(t.time(), [0x58, 0x59, 0x23, 0x05, 0x29, 0x02, 0x24, 0x20]);
        t.advance(Duration::from_millis(1999));
        assert_eq!(t.get(spec::SECONDS), 0x59);
        t.advance(Duration::from_millis(1));
        // Leap day rolls into March; Friday.
        assert_eq!(t.time(), [0x00, 0x00, 0x00, 0x06, 0x01, 0x03, 0x24, 0x20]);
    }

    #[test]
    fn binary_and_12_hour_modes() {
        let mut t = rtc_at(Duration::from_secs(LEAP_NIGHT));
        t.set(spec::REG_B, spec::B_DM_BINARY | spec::B_24H);
        assert_eq!(t.time(), [58, 59, 23, 5, 29, 2, 24, 20]);
        t.set(spec::REG_B, spec::B_DM_BINARY);
        assert_eq!(t.get(spec::HOURS), 0x80 | 11);
        t.set(spec::REG_B, 0);
        assert_eq!(t.get(spec::HOURS), 0x91);
        t.advance(Duration::from_secs(2));
        // Midnight is 12 AM.
        assert_eq!(t.get(spec::HOURS), 0x12);
        t.advance(Duration::from_secs(12 * 3600));
        assert_eq!(t.get(spec::HOURS), 0x92);
        // The mode changes the representation, not the time.
        t.set(spec::REG_B, spec::B_24H);
        assert_eq!(t.get(spec::HOURS), 0x12);
    }

    #[test]
    fn set_bit_freezes_and_the_clock_continues_from_the_guest_time() {
        // Start half a second into a second.
        let mut t = rtc_at(Duration::from_millis(LEAP_NIGHT * 1000 + 500));
        t.set(spec::REG_B, spec::B_SET | spec::B_24H);
        t.advance(Duration::from_secs(5));
        assert_eq!(t.get(spec::SECONDS), 0x58);
        // The guest sets 2031-12-31 12:34:56 (with a wrong day of week, kept while stopped).
        for (i, v) in [
            (spec::SECONDS, 0x56),
            (spec::MINUTES, 0x34),
            (spec::HOURS, 0x12),
            (spec::DAY_OF_WEEK, 0x01),
            (spec::DAY_OF_MONTH, 0x31),
            (spec::MONTH, 0x12),
            (spec::YEAR, 0x31),
        ] {
            t.set(i, v);
        }
        assert_eq!(t.get(spec::DAY_OF_WEEK), 0x01);
        t.advance(Duration::from_secs(3));
        assert_eq!(t.get(spec::SECONDS), 0x56);
        // No update cycles while SET: UIP reads 0 anywhere in the second.
        t.advance(Duration::from_nanos(499_900_000));
        assert_eq!(t.get(spec::REG_A) & spec::A_UIP, 0);
        t.set(spec::REG_B, spec::B_24H);
        // The divider kept its phase: the next update is 100 µs away.
        assert_eq!(t.get(spec::REG_A) & spec::A_UIP, spec::A_UIP);
        assert_eq!(t.time(), [0x56, 0x34, 0x12, 0x04, 0x31, 0x12, 0x31, 0x20]);
        t.advance(Duration::from_micros(100));
        assert_eq!(t.get(spec::SECONDS), 0x57);
        t.advance(Duration::from_secs(63));
        assert_eq!(t.time()[..3], [0x00, 0x36, 0x12]);
    }

    #[test]
    fn writing_a_running_clock_register_sets_that_field() {
        let mut t = rtc_at(Duration::from_secs(LEAP_NIGHT));
        t.set(spec::YEAR, 0x28);
        assert_eq!(t.get(spec::YEAR), 0x28);
        assert_eq!(t.get(spec::MONTH), 0x02);
        assert_eq!(t.get(spec::SECONDS), 0x58);
        t.advance(Duration::from_secs(1));
        assert_eq!(t.get(spec::SECONDS), 0x59);
    }

    #[test]
    fn uip_is_set_in_the_last_244_us_of_each_second() {
        let mut t = rtc_at(Duration::from_secs(LEAP_NIGHT));
        assert_eq!(t.get(spec::REG_A), 0x26);
        t.advance(Duration::from_micros(999_755));
        assert_eq!(t.get(spec::REG_A), 0x26);
        t.advance(Duration::from_micros(2));
        assert_eq!(t.get(spec::REG_A), 0xa6);
        assert_eq!(t.get(spec::SECONDS), 0x58);
        t.advance(Duration::from_micros(243));
        assert_eq!(t.get(spec::REG_A), 0x26);
        assert_eq!(t.get(spec::SECONDS), 0x59);
        // UIP is read-only.
        t.set(spec::REG_A, 0xa6);
        assert_eq!(t.get(spec::REG_A), 0x26);
    }

    #[test]
    fn divider_reset_stops_the_clock_and_the_first_update_comes_500ms_after_release() {
        let mut t = rtc_at(Duration::from_millis(LEAP_NIGHT * 1000 + 900));
        t.set(spec::REG_A, 0x70);
        t.advance(Duration::from_secs(10));
        assert_eq!(t.get(spec::SECONDS), 0x58);
        assert_eq!(t.get(spec::REG_A) & spec::A_UIP, 0);
        t.set(spec::REG_A, 0x26);
        t.advance(Duration::from_millis(499));
        assert_eq!(t.get(spec::SECONDS), 0x58);
        t.advance(Duration::from_millis(1));
        assert_eq!(t.get(spec::SECONDS), 0x59);
    }

    #[test]
    fn periodic_interrupt_at_1024_hz() {
        let mut t = rtc_at(Duration::from_secs(LEAP_NIGHT));
        assert_eq!(t.armed(), None);
        t.set(spec::REG_B, spec::B_24H | spec::B_PIE);
        assert_eq!(t.armed(), Some(Duration::from_nanos(976_563)));
        assert!(!t.irq.is_high());
        t.fire();
        assert!(t.irq.is_high());
        assert_eq!(t.irq.edges(), 1);
        // While IRQF is set no timer is needed.
        assert_eq!(t.armed(), None);
        assert_eq!(t.get(spec::REG_C), spec::C_IRQF | spec::C_PF);
        assert!(!t.irq.is_high());
        assert_eq!(t.get(spec::REG_C), 0);
        // Re-armed for the next tick, measured from the chain phase.
        assert_eq!(t.armed(), Some(Duration::from_nanos(976_562)));
        t.fire();
        assert_eq!(t.irq.edges(), 2);
    }

    #[test]
    fn rate_select_and_the_100us_floor() {
        let mut t = rtc_at(Duration::from_secs(LEAP_NIGHT));
        // RS = 3: 8192 Hz, 122.07 µs.
        t.set(spec::REG_A, 0x23);
        t.set(spec::REG_B, spec::B_24H | spec::B_PIE);
        assert_eq!(t.armed(), Some(Duration::from_nanos(122_071)));
        // Read C 50 µs before the next tick: the timer is not armed closer than 100 µs.
        t.advance(Duration::from_nanos(122_071 - 50_000));
        assert_eq!(t.get(spec::REG_C), 0);
        assert_eq!(t.armed(), Some(Duration::from_micros(100)));
        // RS = 15: 2 Hz. RS = 1: 256 Hz (the 32.768 kHz quirk).
        t.set(spec::REG_A, 0x2f);
        let d = t.armed().unwrap();
        assert!(d <= Duration::from_millis(500) && d > Duration::from_millis(499));
        t.set(spec::REG_A, 0x21);
        assert!(t.armed().unwrap() <= Duration::from_nanos(3_906_250));
        // RS = 0 turns the periodic interrupt off.
        t.set(spec::REG_A, 0x20);
        assert_eq!(t.armed(), None);
    }

    #[test]
    fn flags_are_set_without_interrupts_enabled() {
        let mut t = rtc_at(Duration::from_secs(LEAP_NIGHT));
        t.advance(Duration::from_millis(1500));
        assert_eq!(t.get(spec::REG_C), spec::C_PF | spec::C_UF);
        assert_eq!(t.get(spec::REG_C), 0);
        assert_eq!(t.irq.edges(), 0);
        // Enabling an interrupt whose flag is already pending raises IRQF at once.
        t.advance(Duration::from_millis(2));
        t.set(spec::REG_B, spec::B_24H | spec::B_PIE);
        assert!(t.irq.is_high());
        // Disabling it again drops the request.
        t.set(spec::REG_B, spec::B_24H);
        assert!(!t.irq.is_high());
        assert_eq!(t.get(spec::REG_C), spec::C_PF);
    }

    #[test]
    fn update_ended_interrupt_every_second() {
        let mut t = rtc_at(Duration::from_millis(LEAP_NIGHT * 1000 + 250));
        t.set(spec::REG_B, spec::B_24H | spec::B_UIE);
        assert_eq!(t.armed(), Some(Duration::from_millis(750)));
        t.fire();
        assert!(t.irq.is_high());
        assert_eq!(t.get(spec::REG_C), spec::C_IRQF | spec::C_UF | spec::C_PF);
        assert_eq!(t.get(spec::SECONDS), 0x59);
        assert_eq!(t.armed(), Some(Duration::from_secs(1)));
        // SET clears UIE.
        t.set(spec::REG_B, spec::B_24H | spec::B_UIE | spec::B_SET);
        assert_eq!(t.get(spec::REG_B), spec::B_24H | spec::B_SET);
        assert_eq!(t.armed(), None);
    }

    #[test]
    fn alarm_with_dont_care_fields() {
        let mut t = rtc_at(Duration::from_secs(LEAP_NIGHT));
        // Every minute at :30 seconds.
        t.set(spec::HOURS_ALARM, 0xc0);
        t.set(spec::MINUTES_ALARM, 0xff);
        t.set(spec::SECONDS_ALARM, 0x30);
        t.set(spec::REG_B, spec::B_24H | spec::B_AIE);
        assert_eq!(t.armed(), Some(Duration::from_secs(32)));
        t.fire();
        assert!(t.irq.is_high());
        assert_eq!(
            t.get(spec::REG_C),
            spec::C_IRQF | spec::C_AF | spec::C_UF | spec::C_PF
        );
        assert_eq!(t.time()[..3], [0x30, 0x00, 0x00]);
        assert_eq!(t.armed(), Some(Duration::from_secs(60)));
        // A fully specified alarm: 01:02:03, next day's 01:02:03 after it passed.
        t.set(spec::HOURS_ALARM, 0x01);
        t.set(spec::MINUTES_ALARM, 0x02);
        t.set(spec::SECONDS_ALARM, 0x03);
        assert_eq!(t.armed(), Some(Duration::from_secs(3600 + 93)));
        // An impossible alarm (BCD 0x61 seconds) never fires.
        t.set(spec::SECONDS_ALARM, 0x61);
        assert_eq!(t.armed(), None);
        // 12-hour mode: 0x81 is 1 PM.
        t.set(spec::REG_B, spec::B_AIE);
        t.set(spec::HOURS_ALARM, 0x81);
        t.set(spec::MINUTES_ALARM, 0xc0);
        t.set(spec::SECONDS_ALARM, 0xc0);
        assert_eq!(t.armed(), Some(Duration::from_secs(13 * 3600 - 30)));
    }

    #[test]
    fn cmos_memory_layout_and_checksum() {
        let mut t = rtc_with_ram(
            Duration::from_secs(LEAP_NIGHT),
            arch::layout::PCI_HOLE_START,
            2 << 30,
        );
        assert_eq!(t.get(0x14), 0x06);
        assert_eq!((t.get(0x15), t.get(0x16)), (0x80, 0x02));
        assert_eq!((t.get(0x17), t.get(0x18)), (0xff, 0xff));
        assert_eq!((t.get(0x30), t.get(0x31)), (0xff, 0xff));
        // 3.5 GiB - 16 MiB in 64 KiB units = 0xDF00.
        assert_eq!((t.get(0x34), t.get(0x35)), (0x00, 0xdf));
        // 2 GiB in 64 KiB units = 0x8000.
        assert_eq!((t.get(0x5b), t.get(0x5c), t.get(0x5d)), (0x00, 0x80, 0x00));
        let sum: u16 = (0x10..=0x2d).map(|i| u16::from(t.get(i))).sum();
        assert_eq!(u16::from_be_bytes([t.get(0x2e), t.get(0x2f)]), sum);

        let mut t = rtc_with_ram(Duration::from_secs(LEAP_NIGHT), 64 << 20, 0);
        // 63 MiB = 0xFC00 KiB; 48 MiB = 0x300 units.
        assert_eq!((t.get(0x17), t.get(0x18)), (0x00, 0xfc));
        assert_eq!((t.get(0x34), t.get(0x35)), (0x00, 0x03));
        assert_eq!(t.get(0x5b), 0);
        // LBA translation for disks at primary master and both secondary positions.
        assert_eq!(t.get(0x39), 0);
        t.rtc.set_lba_translation(&[0, 2, 3, 7]);
        assert_eq!(t.get(0x39), 0x51);
        // Plain CMOS bytes are read/write.
        t.set(0x40, 0xa5);
        t.set(0x7f, 0x5a);
        assert_eq!((t.get(0x40), t.get(0x7f)), (0xa5, 0x5a));
    }

    #[test]
    fn index_port_nmi_mask_and_word_access() {
        let mut t = rtc_at(Duration::from_secs(LEAP_NIGHT));
        t.rtc.write(0, &[0x8d]);
        assert!(t.rtc.nmi_masked());
        let mut b = [0];
        t.rtc.read(0, &mut b);
        assert_eq!(b[0], 0xff);
        t.rtc.read(1, &mut b);
        assert_eq!(b[0], 0x80);
        t.rtc.write(0, &[0x0d]);
        assert!(!t.rtc.nmi_masked());
        // outw 0x70: index then data.
        t.rtc.write(0, &[0x41, 0x77]);
        assert_eq!(t.get(0x41), 0x77);
        // Writes to C and D are ignored.
        t.set(spec::REG_D, 0);
        t.set(spec::REG_C, 0xff);
        assert_eq!(t.get(spec::REG_D), 0x80);
        assert_eq!(t.get(spec::REG_C) & spec::C_IRQF, 0);
    }

    #[test]
    fn state_round_trips_and_continues_from_the_saved_time() {
        let mut t = rtc_at(Duration::from_millis(LEAP_NIGHT * 1000 + 300));
        t.set(spec::REG_B, spec::B_24H | spec::B_PIE);
        t.fire();
        t.set(0x50, 0x12);
        let s = t.rtc.state();
        assert_eq!(s.time, LEAP_NIGHT as i64);
        assert_eq!(s.cmos[0], 0x58);
        assert_eq!(s.cmos[spec::REG_C as usize] & spec::C_IRQF, spec::C_IRQF);

        // A machine created much later restores the same guest time and the pending interrupt.
        let mut u = rtc_at(Duration::from_secs(LEAP_NIGHT + 1_000_000));
        u.advance(Duration::from_secs(77));
        u.rtc.restore(&s);
        assert_eq!(u.rtc.state(), s);
        assert!(u.irq.is_high());
        assert_eq!(u.time(), t.time());
        assert_eq!(u.get(0x50), 0x12);
        assert_eq!(u.get(spec::REG_C), spec::C_IRQF | spec::C_PF);
        u.advance(Duration::from_millis(700));
        assert_eq!(u.get(spec::SECONDS), 0x59);
    }

    #[test]
    fn state_round_trips_through_cbor() {
        let mut t = rtc_at(Duration::from_millis(LEAP_NIGHT * 1000 + 250));
        // An alarm at second 30 of every minute with its interrupt enabled, and NVRAM bytes.
        t.set(spec::HOURS_ALARM, spec::ALARM_DONT_CARE);
        t.set(spec::MINUTES_ALARM, spec::ALARM_DONT_CARE);
        t.set(spec::SECONDS_ALARM, 0x30);
        t.set(spec::REG_B, spec::B_24H | spec::B_AIE);
        for (i, v) in [(0x40, 0xa5), (0x5f, 0x11), (0x7f, 0x5a)] {
            t.set(i, v);
        }
        t.advance(Duration::from_millis(300));
        let s = t.rtc.state();

        // Restored into a machine created a year later, after it ran for a while.
        let mut u = rtc_at(Duration::from_secs(LEAP_NIGHT + 366 * 86_400));
        u.advance(Duration::from_secs(12));
        u.rtc.restore(&cbor_round_trip(&s));
        assert_eq!(u.rtc.state(), s);
        assert!(!u.irq.is_high());
        // The alarm is 31.45 s away (00:00:30 from 23:59:58.55) and fires on both alike.
        let d = u.armed().expect("alarm armed");
        assert_eq!(d, Duration::from_millis(31_450));
        for r in [&mut t, &mut u] {
            r.advance(d);
            r.rtc.timer_expired();
            assert!(r.irq.is_high());
        }
        assert_eq!(u.get(spec::REG_C), t.get(spec::REG_C));
        assert_eq!(u.time(), t.time());
        assert_eq!(u.time()[..3], [0x30, 0x00, 0x00]);
        for i in [0x40, 0x5f, 0x7f, spec::SECONDS_ALARM, spec::REG_B] {
            assert_eq!(u.get(i), t.get(i), "CMOS byte {i:#x}");
        }
    }

    #[test]
    fn restore_clamps_a_time_the_registers_cannot_hold() {
        assert_eq!(spec::TIME_MIN, days_from_civil(0, 1, 1) * SECS_PER_DAY);
        assert_eq!(
            spec::TIME_MAX,
            days_from_civil(10_000, 1, 1) * SECS_PER_DAY - 1
        );
        let mut t = rtc_at(Duration::from_secs(LEAP_NIGHT));
        let mut s = t.rtc.state();
        s.time = i64::MAX;
        t.set(spec::REG_B, spec::B_24H | spec::B_AIE | spec::B_UIE);
        s.cmos[spec::REG_B as usize] = spec::B_24H | spec::B_AIE | spec::B_UIE;
        t.rtc.restore(&s);
        assert_eq!(t.rtc.state().time, spec::TIME_MAX);
        // 9999-12-31 23:59:59, then the clock keeps running (into a year it shows as 00).
        assert_eq!(t.time(), [0x59, 0x59, 0x23, 0x06, 0x31, 0x12, 0x99, 0x99]);
        t.fire();
        assert_eq!(t.get(spec::SECONDS), 0x00);
        s.time = i64::MIN;
        t.rtc.restore(&s);
        assert_eq!(t.rtc.state().time, spec::TIME_MIN);
    }
}
