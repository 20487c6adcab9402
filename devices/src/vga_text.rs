//! The colour text-mode buffer of a VGA adapter: 32 KiB of memory at 0xB8000-0xBFFFF, two bytes
//! per character cell (the character, then its attribute), 80x25 cells per page.
//!
//! kettle has no display adapter yet; this is the memory a BIOS's INT 10h and a guest's own
//! text output (boot loaders, DOS programs, Linux's vgacon) write to, so that what they wrote can
//! be read back and kept in a saved state. Nothing scans it out: the BIOS mirrors its text to COM1
//! for headless runs. Accesses are plain memory: any width, any offset inside the window; bytes
//! past the end read as 0xFF and writes there are dropped.

use serde::{Deserialize, Serialize};

use crate::bus::BusDevice;

/// Guest-physical base and size of the window.
pub const BASE: u64 = 0xb_8000;
pub const SIZE: usize = 0x8000;

/// The buffer's contents, for snapshots.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VgaTextState {
    pub memory: Vec<u8>,
}

impl VgaTextState {
    /// Whether a restore can take it: a buffer of another size is refused.
    pub fn check(&self) -> Result<(), String> {
        if self.memory.len() != SIZE {
            return Err(format!(
                "saved VGA text memory is {} bytes, not {SIZE}",
                self.memory.len()
            ));
        }
        Ok(())
    }
}

/// The text buffer. Register it on the MMIO bus at [`BASE`] with length [`SIZE`].
pub struct VgaText {
    memory: Vec<u8>,
}

impl Default for VgaText {
    fn default() -> Self {
        Self::new()
    }
}

impl VgaText {
    /// A blank screen: spaces in light grey on black, as a BIOS leaves it after setting mode 3.
    pub fn new() -> Self {
        let memory = [b' ', 0x07].repeat(SIZE / 2);
        Self { memory }
    }

    /// The characters of page 0 (80x25), one line per row, trailing spaces trimmed. The cells
    /// hold code page 437, the VGA's character ROM: box drawing (boot loader menus), accented
    /// letters and the glyphs of 01h-1Fh come out as the Unicode characters they show as; NUL
    /// and FFh as spaces. No control character ever comes out.
    pub fn text(&self) -> String {
        self.memory[..80 * 25 * 2]
            .chunks(160)
            .map(|row| {
                let line: String = row.iter().step_by(2).map(|&c| cp437(c)).collect();
                line.trim_end_matches(' ').to_string()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn state(&self) -> VgaTextState {
        VgaTextState {
            memory: self.memory.clone(),
        }
    }

    /// Restores saved contents; a saved buffer of another size is refused.
    pub fn restore(&mut self, s: &VgaTextState) -> Result<(), String> {
        s.check()?;
        self.memory.copy_from_slice(&s.memory);
        Ok(())
    }
}

/// What character `c` of code page 437 shows as.
fn cp437(c: u8) -> char {
    match c {
        0x00 | 0xff => ' ',
        0x01..=0x1f => CP437_LOW[usize::from(c) - 1],
        0x7f => '\u{2302}',
        0x80..=0xfe => CP437_HIGH[usize::from(c) - 0x80],
        _ => char::from(c),
    }
}

/// Code page 437, 01h-1Fh.
const CP437_LOW: [char; 31] = [
    '☺', '☻', '♥', '♦', '♣', '♠', '•', '◘', '○', '◙', '♂', '♀', '♪', '♫', '☼', //
    '►', '◄', '↕', '‼', '¶', '§', '▬', '↨', '↑', '↓', '→', '←', '∟', '↔', '▲', '▼',
];

/// Code page 437, 80h-FEh.
const CP437_HIGH: [char; 127] = [
    'Ç', 'ü', 'é', 'â', 'ä', 'à', 'å', 'ç', 'ê', 'ë', 'è', 'ï', 'î', 'ì', 'Ä', 'Å', //
    'É', 'æ', 'Æ', 'ô', 'ö', 'ò', 'û', 'ù', 'ÿ', 'Ö', 'Ü', '¢', '£', '¥', '₧', 'ƒ', //
    'á', 'í', 'ó', 'ú', 'ñ', 'Ñ', 'ª', 'º', '¿', '⌐', '¬', '½', '¼', '¡', '«', '»', //
    '░', '▒', '▓', '│', '┤', '╡', '╢', '╖', '╕', '╣', '║', '╗', '╝', '╜', '╛', '┐', //
    '└', '┴', '┬', '├', '─', '┼', '╞', '╟', '╚', '╔', '╩', '╦', '╠', '═', '╬', '╧', //
    '╨', '╤', '╥', '╙', '╘', '╒', '╓', '╫', '╪', '┘', '┌', '█', '▄', '▌', '▐', '▀', //
    'α', 'ß', 'Γ', 'π', 'Σ', 'σ', 'µ', 'τ', 'Φ', 'Θ', 'Ω', 'δ', '∞', 'φ', 'ε', '∩', //
    '≡', '±', '≥', '≤', '⌠', '⌡', '÷', '≈', '°', '∙', '·', '√', 'ⁿ', '²', '■',
];

impl BusDevice for VgaText {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = usize::try_from(offset)
                .ok()
                .and_then(|o| o.checked_add(i))
                .and_then(|o| self.memory.get(o).copied())
                .unwrap_or(0xff);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        for (i, &b) in data.iter().enumerate() {
            let at = usize::try_from(offset).ok().and_then(|o| o.checked_add(i));
            if let Some(slot) = at.and_then(|o| self.memory.get_mut(o)) {
                *slot = b;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_is_memory_and_shows_its_text() {
        let mut v = VgaText::new();
        v.write(0, b"H\x07i\x07");
        v.write(160, &[b'!', 0x1f]);
        let mut b = [0u8; 4];
        v.read(0, &mut b);
        assert_eq!(&b, b"H\x07i\x07");
        assert_eq!(v.text().lines().take(2).collect::<Vec<_>>(), ["Hi", "!"]);
        // Code page 437: a GRUB-style menu frame, arrows, letters; NUL and FFh are blanks.
        let mut w = VgaText::new();
        let cells = [
            0xc9u8, 0xcd, 0xbb, 0x18, 0x19, 0x81, 0x00, b'x', 0xff, 0x07, 0x7f,
        ];
        for (i, c) in cells.iter().enumerate() {
            w.write(2 * i as u64, &[*c, 0x07]);
        }
        assert_eq!(w.text().lines().next().unwrap(), "╔═╗↑↓ü x •⌂");
        assert!(w.text().chars().all(|c| c == '\n' || !c.is_control()));
        assert_eq!(w.text().split('\n').count(), 25);
        // Past the end: reads 0xFF, writes dropped, no panic.
        v.write(SIZE as u64 - 1, &[1, 2, 3]);
        let mut b = [0u8; 3];
        v.read(SIZE as u64 - 1, &mut b);
        assert_eq!(b, [1, 0xff, 0xff]);
        v.read(u64::MAX, &mut b);
        assert_eq!(b, [0xff; 3]);
    }

    #[test]
    fn state_round_trips_and_a_wrong_size_is_refused() {
        let mut v = VgaText::new();
        v.write(10, b"xy");
        let s = v.state();
        let mut bytes = Vec::new();
        ciborium::into_writer(&s, &mut bytes).unwrap();
        let back: VgaTextState = ciborium::from_reader(&bytes[..]).unwrap();
        let mut w = VgaText::new();
        w.restore(&back).unwrap();
        assert_eq!(w.state(), s);
        let bad = VgaTextState { memory: vec![0; 5] };
        assert!(w.restore(&bad).unwrap_err().contains("5 bytes"));
    }
}
