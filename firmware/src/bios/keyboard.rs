//! The keyboard: INT 09h (IRQ 1) turns the i8042's scancodes into key codes, INT 16h hands them
//! to software, and the serial console stands in for a keyboard as well.
//!
//! Key codes are the PC/AT BIOS's words, scancode in the high byte and ASCII (or 0, or E0h for
//! the keys only the 101-key keyboard has) in the low byte, kept in the 16-word ring buffer of
//! the BIOS data area (0040:001E-003D, head and tail at 001Ah/001Ch, bounds at 0080h/0082h).
//! Sources: IBM PC/AT Technical Reference (keyboard BIOS, the code tables), Ralf Brown's
//! interrupt list (INT 09h, INT 16h; MEMORY.LST for 0040:0017, 0018, 0096).
//!
//! Keys arrive two ways:
//!
//! - INT 09h, for IRQ 1: one set-1 scancode from port 60h (the i8042 translates the keyboard's
//!   set 2). Shift, Ctrl, Alt and the lock keys update the flags at 0040:0017/0018 (and 0096 for
//!   the right-hand Ctrl/Alt and the E0 prefix); a make code becomes a key code in the buffer.
//!   The service returns through [`rom::EOI_MASTER`].
//! - COM1, polled at every INT 16h call: each received byte (LSR bit 0, then RBR) becomes the
//!   key a terminal user meant: CR is Enter (1C0Dh), DEL and BS are Backspace (0E08h), TAB is
//!   0F09h, a lone ESC is 011Bh, the VT100/xterm sequences ESC [ A-D (or ESC O A-D) are the
//!   arrows 4800h/5000h/4D00h/4B00h, ESC [ H/F and ESC [ 1-6 ~ Home, End, Insert, Delete,
//!   PgUp, PgDn, ESC O P-S and ESC [ 11-24 ~ F1-F12; printable ASCII gets its US-layout
//!   scancode; Ctrl-A to Ctrl-Z their letter's scancode (Ctrl-C is 2E03h, as on a keyboard);
//!   LF is Ctrl-Enter (1C0Ah); any other byte is (0, byte). A lone ESC is told from a
//!   sequence's first byte by the next poll: if nothing followed by then, it was the key.
//!
//! INT 16h AH=00h/10h waits without blocking the VMM: with the buffer empty the service leaves
//! every register as it was and moves IP to [`rom::KBD_WAIT`], which idles in `sti; hlt` until an
//! interrupt (the timer's, 18.2 times a second, or the keyboard's) and re-enters the INT 16h
//! stub, so the call traps again with the caller's AX and frame.

use super::cpu::{Call, IoPorts, MemError, RealMem};
use super::rom;
use super::services::VResult;
use super::spec::{bda, kbd, uart};
use super::Bios;
use arch::layout::{COM1_PORT, I8042_DATA_PORT};

/// The set-1 scancodes 00h-39h of the US layout: (unshifted, shifted) ASCII, 0 where the key has
/// none. Letters are listed lower case; Caps Lock shifts them.
const US_LAYOUT: [(u8, u8); 0x3a] = [
    (0, 0),
    (0x1b, 0x1b),
    (b'1', b'!'),
    (b'2', b'@'),
    (b'3', b'#'),
    (b'4', b'$'),
    (b'5', b'%'),
    (b'6', b'^'),
    (b'7', b'&'),
    (b'8', b'*'),
    (b'9', b'('),
    (b'0', b')'),
    (b'-', b'_'),
    (b'=', b'+'),
    (0x08, 0x08),
    (0x09, 0),
    (b'q', b'Q'),
    (b'w', b'W'),
    (b'e', b'E'),
    (b'r', b'R'),
    (b't', b'T'),
    (b'y', b'Y'),
    (b'u', b'U'),
    (b'i', b'I'),
    (b'o', b'O'),
    (b'p', b'P'),
    (b'[', b'{'),
    (b']', b'}'),
    (0x0d, 0x0d),
    (0, 0), // Ctrl
    (b'a', b'A'),
    (b's', b'S'),
    (b'd', b'D'),
    (b'f', b'F'),
    (b'g', b'G'),
    (b'h', b'H'),
    (b'j', b'J'),
    (b'k', b'K'),
    (b'l', b'L'),
    (b';', b':'),
    (b'\'', b'"'),
    (b'`', b'~'),
    (0, 0), // left Shift
    (b'\\', b'|'),
    (b'z', b'Z'),
    (b'x', b'X'),
    (b'c', b'C'),
    (b'v', b'V'),
    (b'b', b'B'),
    (b'n', b'N'),
    (b'm', b'M'),
    (b',', b'<'),
    (b'.', b'>'),
    (b'/', b'?'),
    (0, 0), // right Shift
    (b'*', b'*'),
    (0, 0), // Alt
    (b' ', b' '),
];

/// The keypad 47h-53h with Num Lock on.
const KEYPAD_DIGITS: [u8; 13] = *b"789-456+1230.";

fn key(scan: u8, ascii: u8) -> u16 {
    u16::from_le_bytes([ascii, scan])
}

/// The scancode of the key that types `ascii` on the US layout.
fn scancode_of(ascii: u8) -> Option<u8> {
    US_LAYOUT
        .iter()
        .position(|&(n, s)| n == ascii || s == ascii)
        .map(|sc| sc as u8)
        .filter(|sc| *sc != 0)
}

/// The key code of the make code `sc` with the shift state `shift` (0040:0017), `e0` if it came
/// after the E0 prefix; `None` for keys that give none (modifiers, unknown codes).
pub(super) fn translate(sc: u8, shift: u8, e0: bool) -> Option<u16> {
    let shifted = shift & (kbd::LEFT_SHIFT | kbd::RIGHT_SHIFT) != 0;
    let ctrl = shift & kbd::CTRL != 0;
    let alt = shift & kbd::ALT != 0;
    if e0 {
        return match sc {
            0x1c => Some(key(0xe0, if ctrl { 0x0a } else { 0x0d })),
            0x35 => Some(key(0xe0, b'/')),
            _ if kbd::SC_KEYPAD.contains(&sc) && !matches!(sc, 0x4a | 0x4c | 0x4e) => {
                Some(key(sc, 0xe0))
            }
            _ => None,
        };
    }
    match sc {
        kbd::SC_F1..=kbd::SC_F10 => Some(key(
            if alt {
                sc + 0x2d
            } else if ctrl {
                sc + 0x23
            } else if shifted {
                sc + 0x19
            } else {
                sc
            },
            0,
        )),
        kbd::SC_F11 | kbd::SC_F12 => {
            let base = if alt {
                0x8b
            } else if ctrl {
                0x89
            } else if shifted {
                0x87
            } else {
                0x85
            };
            Some(key(base + sc - kbd::SC_F11, 0))
        }
        0x47..=0x53 => {
            let i = usize::from(sc - 0x47);
            let digit = KEYPAD_DIGITS[i];
            let num = shift & kbd::NUM_LOCK != 0;
            if matches!(sc, 0x4a | 0x4e) || num != shifted {
                Some(key(sc, digit))
            } else if sc == 0x4c {
                None
            } else {
                Some(key(sc, 0))
            }
        }
        0x01..=0x39 => {
            let (normal, upper) = US_LAYOUT[usize::from(sc)];
            if normal == 0 {
                return None;
            }
            let letter = normal.is_ascii_lowercase();
            if alt {
                // Alt+digit row and Alt+letters: no ASCII; Alt+1..= are 78h-83h.
                return Some(match sc {
                    0x02..=0x0d => key(sc + 0x76, 0),
                    _ => key(sc, 0),
                });
            }
            if ctrl {
                return Some(match sc {
                    _ if letter => key(sc, normal & 0x1f),
                    0x1c => key(sc, 0x0a),
                    0x0e => key(sc, 0x7f),
                    0x01 => key(sc, 0x1b),
                    0x39 => key(sc, b' '),
                    _ => key(sc, 0),
                });
            }
            let caps = letter && shift & kbd::CAPS_LOCK != 0;
            Some(if sc == 0x0f && shifted {
                key(sc, 0) // Shift+Tab
            } else if shifted != caps {
                key(sc, upper)
            } else {
                key(sc, normal)
            })
        }
        _ => None,
    }
}

/// The key a byte from the serial console stands for, outside an escape sequence.
fn serial_key(byte: u8) -> u16 {
    match byte {
        0x0d => key(0x1c, 0x0d),
        0x0a => key(0x1c, 0x0a),
        0x08 | 0x7f => key(0x0e, 0x08),
        0x09 => key(0x0f, 0x09),
        0x1b => key(0x01, 0x1b),
        // Ctrl-A ... Ctrl-Z: the letter's key.
        0x01..=0x1a => key(scancode_of(byte | 0x60).unwrap_or(0), byte),
        0x20..=0x7e => key(scancode_of(byte).unwrap_or(0), byte),
        _ => key(0, byte),
    }
}

/// The key of the final byte of `ESC [ ...` (or `ESC O ...` when `ss3`) with parameter `param`.
fn escape_key(final_byte: u8, param: u16, ss3: bool) -> Option<u16> {
    let scan = match (final_byte, param) {
        (b'A', _) => 0x48,
        (b'B', _) => 0x50,
        (b'C', _) => 0x4d,
        (b'D', _) => 0x4b,
        (b'H', _) => 0x47,
        (b'F', _) => 0x4f,
        (b'P'..=b'S', _) if ss3 => 0x3b + final_byte - b'P',
        (b'~', 1 | 7) => 0x47,
        (b'~', 2) => 0x52,
        (b'~', 3) => 0x53,
        (b'~', 4 | 8) => 0x4f,
        (b'~', 5) => 0x49,
        (b'~', 6) => 0x51,
        (b'~', 11..=15) => 0x3b + (param - 11) as u8,
        (b'~', 17..=21) => 0x40 + (param - 17) as u8,
        (b'~', 23) => 0x85,
        (b'~', 24) => 0x86,
        _ => return None,
    };
    Some(key(scan, 0))
}

/// Where the serial input decoder is in an escape sequence.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) enum SerialKeys {
    #[default]
    Idle,
    /// ESC seen.
    Escape,
    /// `ESC [` (or `ESC O` when `ss3`) and the decimal parameter so far.
    Sequence { param: u16, ss3: bool, digits: u8 },
}

impl SerialKeys {
    /// Feeds `byte`; returns the key it completes.
    fn feed(&mut self, byte: u8) -> Option<u16> {
        match *self {
            SerialKeys::Idle if byte == 0x1b => {
                *self = SerialKeys::Escape;
                None
            }
            SerialKeys::Idle => Some(serial_key(byte)),
            SerialKeys::Escape if byte == b'[' || byte == b'O' => {
                *self = SerialKeys::Sequence {
                    param: 0,
                    ss3: byte == b'O',
                    digits: 0,
                };
                None
            }
            SerialKeys::Escape if byte == 0x1b => Some(serial_key(0x1b)),
            SerialKeys::Escape => {
                // Alt+key, as terminals send it: the key without ASCII.
                *self = SerialKeys::Idle;
                Some(serial_key(byte) & 0xff00)
            }
            SerialKeys::Sequence { param, ss3, digits } => match byte {
                b'0'..=b'9' if digits < 4 => {
                    *self = SerialKeys::Sequence {
                        param: param * 10 + u16::from(byte - b'0'),
                        ss3,
                        digits: digits + 1,
                    };
                    None
                }
                // Modifier parameters (ESC [ 1 ; 5 A): keep the first number.
                b';' => None,
                0x40..=0x7e => {
                    *self = SerialKeys::Idle;
                    escape_key(byte, param, ss3)
                }
                _ => {
                    *self = SerialKeys::Idle;
                    None
                }
            },
        }
    }

    /// A poll found no new byte: a pending ESC was the Escape key; a half sequence is dropped.
    fn idle(&mut self) -> Option<u16> {
        let pending = *self;
        *self = SerialKeys::Idle;
        (pending == SerialKeys::Escape).then(|| serial_key(0x1b))
    }
}

/// The ring buffer in the BIOS data area.
struct KeyBuffer {
    start: u16,
    end: u16,
}

impl KeyBuffer {
    /// The buffer's bounds from 0040:0080/0082, the PC/AT's 001Eh-003Eh if they are garbage.
    fn of(mem: &RealMem) -> Result<Self, MemError> {
        let start = mem.read_u16(bda::SEGMENT, bda::KBD_BUFFER_START)?;
        let end = mem.read_u16(bda::SEGMENT, bda::KBD_BUFFER_END_PTR)?;
        let valid =
            start.is_multiple_of(2) && end.is_multiple_of(2) && start < end && end - start >= 4;
        Ok(if valid {
            Self { start, end }
        } else {
            Self {
                start: bda::KBD_BUFFER,
                end: bda::KBD_BUFFER_END,
            }
        })
    }

    fn next(&self, at: u16) -> u16 {
        if at + 2 >= self.end {
            self.start
        } else {
            at + 2
        }
    }

    /// Head and tail, reset to empty if the guest left them outside the buffer.
    fn head_tail(&self, mem: &mut RealMem) -> Result<(u16, u16), MemError> {
        let head = mem.read_u16(bda::SEGMENT, bda::KBD_HEAD)?;
        let tail = mem.read_u16(bda::SEGMENT, bda::KBD_TAIL)?;
        let ok = |p: u16| (self.start..self.end).contains(&p) && (p - self.start).is_multiple_of(2);
        if ok(head) && ok(tail) {
            return Ok((head, tail));
        }
        mem.write_u16(bda::SEGMENT, bda::KBD_HEAD, self.start)?;
        mem.write_u16(bda::SEGMENT, bda::KBD_TAIL, self.start)?;
        Ok((self.start, self.start))
    }

    /// Appends `code`; `false` if the buffer is full.
    fn push(&self, mem: &mut RealMem, code: u16) -> Result<bool, MemError> {
        let (head, tail) = self.head_tail(mem)?;
        let next = self.next(tail);
        if next == head {
            return Ok(false);
        }
        mem.write_u16(bda::SEGMENT, tail, code)?;
        mem.write_u16(bda::SEGMENT, bda::KBD_TAIL, next)?;
        Ok(true)
    }

    fn is_full(&self, mem: &mut RealMem) -> Result<bool, MemError> {
        let (head, tail) = self.head_tail(mem)?;
        Ok(self.next(tail) == head)
    }

    /// The oldest key, removed if `take`.
    fn first(&self, mem: &mut RealMem, take: bool) -> Result<Option<u16>, MemError> {
        let (head, tail) = self.head_tail(mem)?;
        if head == tail {
            return Ok(None);
        }
        let code = mem.read_u16(bda::SEGMENT, head)?;
        if take {
            mem.write_u16(bda::SEGMENT, bda::KBD_HEAD, self.next(head))?;
        }
        Ok(Some(code))
    }
}

/// How many bytes one poll takes from COM1 at most (its FIFO holds 16).
const SERIAL_POLL_LIMIT: usize = 32;

impl Bios {
    /// INT 09h, IRQ 1: one scancode from the i8042.
    pub(super) fn int09_keyboard(&mut self, call: &mut Call, io: &mut dyn IoPorts) -> VResult {
        call.regs.ip = rom::EOI_MASTER;
        let code = io.inb(I8042_DATA_PORT);
        let mem = &mut call.mem;
        let mut shift = mem.read_u8(bda::SEGMENT, bda::KBD_FLAGS)?;
        let mut held = mem.read_u8(bda::SEGMENT, bda::KBD_FLAGS_2)?;
        let mut status3 = mem.read_u8(bda::SEGMENT, bda::KBD_STATUS_3)?;
        if code == kbd::E0_PREFIX {
            status3 |= kbd::LAST_WAS_E0;
            return mem.write_u8(bda::SEGMENT, bda::KBD_STATUS_3, status3);
        }
        let e0 = status3 & kbd::LAST_WAS_E0 != 0;
        status3 &= !kbd::LAST_WAS_E0;
        let make = code & kbd::BREAK == 0;
        let sc = code & !kbd::BREAK;
        let mut new_key = None;
        let set = |bits: &mut u8, bit: u8, on: bool| {
            if on {
                *bits |= bit
            } else {
                *bits &= !bit
            }
        };
        match sc {
            // E0 2A / E0 36: the fake shifts around the grey keys.
            kbd::SC_LSHIFT | kbd::SC_RSHIFT if e0 => {}
            kbd::SC_LSHIFT => set(&mut shift, kbd::LEFT_SHIFT, make),
            kbd::SC_RSHIFT => set(&mut shift, kbd::RIGHT_SHIFT, make),
            kbd::SC_CTRL | kbd::SC_ALT => {
                let ctrl = sc == kbd::SC_CTRL;
                if e0 {
                    let bit = if ctrl {
                        kbd::RIGHT_CTRL_DOWN
                    } else {
                        kbd::RIGHT_ALT_DOWN
                    };
                    set(&mut status3, bit, make);
                } else {
                    let bit = if ctrl {
                        kbd::LEFT_CTRL_DOWN
                    } else {
                        kbd::LEFT_ALT_DOWN
                    };
                    set(&mut held, bit, make);
                }
                let (l, r) = if ctrl {
                    (kbd::LEFT_CTRL_DOWN, kbd::RIGHT_CTRL_DOWN)
                } else {
                    (kbd::LEFT_ALT_DOWN, kbd::RIGHT_ALT_DOWN)
                };
                let any = held & l != 0 || status3 & r != 0;
                set(&mut shift, if ctrl { kbd::CTRL } else { kbd::ALT }, any);
            }
            kbd::SC_CAPS | kbd::SC_NUM | kbd::SC_SCROLL if !e0 => {
                let (lock, down) = match sc {
                    kbd::SC_CAPS => (kbd::CAPS_LOCK, kbd::CAPS_DOWN),
                    kbd::SC_NUM => (kbd::NUM_LOCK, kbd::NUM_DOWN),
                    _ => (kbd::SCROLL_LOCK, kbd::SCROLL_DOWN),
                };
                // Toggle on the first make, not on the typematic repeats.
                if make && held & down == 0 {
                    shift ^= lock;
                }
                set(&mut held, down, make);
            }
            _ if make => {
                if sc == kbd::SC_INSERT && shift & (kbd::CTRL | kbd::ALT) == 0 {
                    shift ^= kbd::INSERT;
                }
                new_key = translate(sc, shift, e0);
            }
            _ => {}
        }
        mem.write_u8(bda::SEGMENT, bda::KBD_FLAGS, shift)?;
        mem.write_u8(bda::SEGMENT, bda::KBD_FLAGS_2, held)?;
        mem.write_u8(bda::SEGMENT, bda::KBD_STATUS_3, status3)?;
        if let Some(code) = new_key {
            if !KeyBuffer::of(mem)?.push(mem, code)? {
                log::debug!("BIOS: keyboard buffer full, key {code:#06x} dropped");
            }
        }
        Ok(())
    }

    /// Moves what COM1 received into the key buffer, as far as it has room.
    fn poll_serial(&mut self, mem: &mut RealMem, io: &mut dyn IoPorts) -> VResult {
        let buffer = KeyBuffer::of(mem)?;
        let mut got = 0;
        while got < SERIAL_POLL_LIMIT && !buffer.is_full(mem)? {
            if io.inb(COM1_PORT + uart::LSR) & uart::LSR_DATA_READY == 0 {
                break;
            }
            got += 1;
            let byte = io.inb(COM1_PORT + uart::DATA);
            if let Some(code) = self.serial_keys.feed(byte) {
                buffer.push(mem, code)?;
            }
        }
        if got == 0 {
            if let Some(code) = self.serial_keys.idle() {
                buffer.push(mem, code)?;
            }
        }
        Ok(())
    }

    /// INT 16h, keyboard services.
    pub(super) fn int16_keyboard(&mut self, call: &mut Call, io: &mut dyn IoPorts) -> VResult {
        self.poll_serial(&mut call.mem, io)?;
        let ah = call.regs.ah();
        match ah {
            // AH=00h/10h wait for a key and take it; 01h/11h look at it (ZF=1: none).
            0x00 | 0x10 | 0x01 | 0x11 => {
                let extended = ah & 0x10 != 0;
                let take = ah & 0x01 == 0;
                match next_key(&mut call.mem, extended, take)? {
                    Some(code) => {
                        call.regs.set_ax(code);
                        if !take {
                            call.set_zero(false)?;
                        }
                        Ok(())
                    }
                    None if take => {
                        call.regs.ip = rom::KBD_WAIT;
                        Ok(())
                    }
                    None => call.set_zero(true),
                }
            }
            // AH=02h shift flags in AL; 12h also the keys held in AH.
            0x02 => {
                let shift = call.mem.read_u8(bda::SEGMENT, bda::KBD_FLAGS)?;
                call.regs.set_al(shift);
                Ok(())
            }
            0x12 => {
                let shift = call.mem.read_u8(bda::SEGMENT, bda::KBD_FLAGS)?;
                let held = call.mem.read_u8(bda::SEGMENT, bda::KBD_FLAGS_2)?;
                let status3 = call.mem.read_u8(bda::SEGMENT, bda::KBD_STATUS_3)?;
                let ah = (held & (kbd::LEFT_CTRL_DOWN | kbd::LEFT_ALT_DOWN | 0x70))
                    | (status3 & (kbd::RIGHT_CTRL_DOWN | kbd::RIGHT_ALT_DOWN));
                call.regs.set_al(shift);
                call.regs.set_ah(ah);
                Ok(())
            }
            // AH=03h typematic rate: nothing to set on a virtual keyboard.
            0x03 => Ok(()),
            // AH=05h store CX as a key: AL=0 stored, 1 the buffer is full.
            0x05 => {
                let code = call.regs.cx();
                let stored = KeyBuffer::of(&call.mem)?.push(&mut call.mem, code)?;
                call.regs.set_al(u8::from(!stored));
                Ok(())
            }
            other => {
                log::debug!("BIOS: INT 16h AH={other:02x}h is not supported");
                Ok(())
            }
        }
    }
}

/// The next key for AH=00h/01h (`extended` false: keys only the 101-key keyboard has are
/// dropped, E0h in the low byte becomes 0) or AH=10h/11h (as stored), removed if `take`.
fn next_key(mem: &mut RealMem, extended: bool, take: bool) -> Result<Option<u16>, MemError> {
    let buffer = KeyBuffer::of(mem)?;
    // Bounded by the buffer's size: every pass either answers or drops a key.
    for _ in 0..=(buffer.end - buffer.start) / 2 {
        let Some(code) = buffer.first(mem, take)? else {
            return Ok(None);
        };
        if extended {
            return Ok(Some(code));
        }
        let [ascii, scan] = code.to_le_bytes();
        if scan > kbd::LAST_BASIC_SCAN && ascii == 0 {
            if !take {
                buffer.first(mem, true)?;
            }
            continue;
        }
        let ascii = if ascii == 0xe0 && scan != 0 { 0 } else { ascii };
        return Ok(Some(key(scan, ascii)));
    }
    Ok(None)
}
