//! INT 10h, video, for a machine whose console is the serial port.
//!
//! kettle has no video adapter yet, so the BIOS is the adapter's BIOS as far as software can
//! tell: it keeps the mode, the cursors and the pages in the BIOS data area as the colour text
//! adapter's BIOS does (IBM PC/AT Technical Reference; Ralf Brown's interrupt list, INT 10h), and
//! answers the EGA/VGA identification calls (AH=12h BL=10h, AH=1Ah) the way a VGA BIOS does,
//! because Linux's real-mode setup and DOS probe the adapter with them before trusting the text
//! mode.
//!
//! What the user sees comes out of two places:
//!
//! - COM1: teletype output (AH=0Eh), strings (AH=13h) and the BIOS's own messages are written
//!   byte for byte to COM1's transmit register, untranslated (callers send CR and LF themselves,
//!   the BIOS's messages use "\r\n"). Only the active page reaches COM1.
//! - The text buffer at B800h (B000h in mode 7): every character a service writes also goes to
//!   its cell, so a guest that reads the screen back (AH=08h) or a future VGA model sees it.
//!   That memory need not be RAM in kettle; a failed access to it is ignored (the cursor, in the
//!   BIOS data area, still moves) and reads of it return a blank cell.
//!
//! AH=09h/0Ah (write character CX times) go to the buffer only: software that uses them paints
//! a screen and moves the cursor itself, which a serial line cannot follow.

use super::cpu::{Call, IoPorts, RealMem};
use super::services::VResult;
use super::spec::{self, bda, text, video};
use super::Bios;
use arch::layout::COM1_PORT;

impl Bios {
    pub(super) fn int10_video(&mut self, call: &mut Call, io: &mut dyn IoPorts) -> VResult {
        let regs = &mut *call.regs;
        match regs.ah() {
            // AH=00h set mode: AL the mode, bit 7 keeps the buffer.
            0x00 => {
                let mode = regs.al() & 0x7f;
                if !text::MODES.contains(&mode) {
                    log::debug!("BIOS: INT 10h AH=00h mode {mode:02x}h is not supported");
                    return Ok(());
                }
                let clear = regs.al() & 0x80 == 0;
                regs.set_al(text::MODE_SET_TEXT);
                set_mode(&mut call.mem, mode, clear)
            }
            // AH=01h set cursor shape: CH start, CL end scan line.
            0x01 => {
                let cx = regs.cx();
                call.mem.write_u16(bda::SEGMENT, bda::CURSOR_TYPE, cx)
            }
            // AH=02h set cursor position: BH page, DH row, DL column.
            0x02 => {
                let (page, row, col) = (regs.bh(), regs.dh(), regs.dl());
                set_cursor(&mut call.mem, page, row, col)
            }
            // AH=03h get cursor position and shape.
            0x03 => {
                let page = regs.bh();
                let (row, col) = cursor(&call.mem, page)?;
                let shape = call.mem.read_u16(bda::SEGMENT, bda::CURSOR_TYPE)?;
                call.regs.set_dh(row);
                call.regs.set_dl(col);
                call.regs.set_cx(shape);
                Ok(())
            }
            // AH=05h select active page.
            0x05 => {
                let page = regs.al() % video::PAGES;
                let size = call.mem.read_u16(bda::SEGMENT, bda::VIDEO_PAGE_SIZE)?;
                call.mem.write_u8(bda::SEGMENT, bda::ACTIVE_PAGE, page)?;
                let start = size.wrapping_mul(u16::from(page));
                call.mem
                    .write_u16(bda::SEGMENT, bda::VIDEO_PAGE_START, start)
            }
            // AH=06h/07h scroll the window CH,CL-DH,DL of the active page up/down by AL lines
            // (0: clear it), filling with attribute BH.
            0x06 | 0x07 => {
                let up = regs.ah() == 0x06;
                let window = Window {
                    top: regs.ch(),
                    left: regs.cl(),
                    bottom: regs.dh(),
                    right: regs.dl(),
                };
                let (lines, attr) = (regs.al(), regs.bh());
                let page = active_page(&call.mem)?;
                scroll(&mut call.mem, page, window, lines, attr, up)
            }
            // AH=08h read the character and attribute at page BH's cursor.
            0x08 => {
                let page = regs.bh();
                let (row, col) = cursor(&call.mem, page)?;
                let mut cell = [text::BLANK, text::ATTRIBUTE];
                if let Some((seg, off)) = cell_at(&call.mem, page, row, col)? {
                    if call.mem.read(seg, off, &mut cell).is_err() {
                        cell = [text::BLANK, text::ATTRIBUTE];
                    }
                }
                call.regs.set_al(cell[0]);
                call.regs.set_ah(cell[1]);
                Ok(())
            }
            // AH=09h write AL with attribute BL, AH=0Ah write AL keeping the attributes: CX
            // times from page BH's cursor, which does not move.
            0x09 | 0x0a => {
                let attr = (regs.ah() == 0x09).then_some(regs.bl());
                let (ch, page, count) = (regs.al(), regs.bh(), regs.cx());
                write_repeated(&mut call.mem, page, ch, attr, count)
            }
            // AH=0Eh teletype output: AL character, on the active page.
            0x0e => {
                let ch = regs.al();
                let page = active_page(&call.mem)?;
                teletype(&mut call.mem, io, page, ch)
            }
            // AH=0Fh get video mode: AL mode, AH columns, BH active page.
            0x0f => {
                let mode = call.mem.read_u8(bda::SEGMENT, bda::VIDEO_MODE)?;
                let cols = call.mem.read_u16(bda::SEGMENT, bda::VIDEO_COLUMNS)?;
                let page = active_page(&call.mem)?;
                call.regs.set_al(mode);
                call.regs.set_ah(cols.min(0xff) as u8);
                call.regs.set_bh(page);
                Ok(())
            }
            // AH=12h BL=10h get EGA information: colour, 256 KiB, no feature bits or switches.
            0x12 if regs.bl() == text::EGA_INFO => {
                regs.set_bh(0);
                regs.set_bl(text::MEMORY_256K);
                regs.set_cx(0);
                Ok(())
            }
            // AH=1Ah display combination: AL=00h get (BL active, BH alternate), AL=01h set.
            0x1a => {
                if regs.al() == 0x00 {
                    regs.set_bl(text::VGA_COLOUR);
                    regs.set_bh(0);
                }
                if regs.al() <= 0x01 {
                    regs.set_al(text::DISPLAY_COMBINATION);
                }
                Ok(())
            }
            // AH=13h write string.
            0x13 => write_string(call, io),
            // AH=0Bh palette, 10h palette registers, 11h fonts: nothing to set on a serial line.
            0x0b | 0x10 | 0x11 => Ok(()),
            other => {
                log::debug!("BIOS: INT 10h AH={other:02x}h is not implemented");
                Ok(())
            }
        }
    }
}

/// Prints the BIOS's own message `text` on the active page, like teletype output. The BIOS data
/// area may be anything by then (INT 18h/19h run after the guest had the machine): failures are
/// ignored, the message still reaches COM1.
pub(super) fn print(mem: &mut RealMem, io: &mut dyn IoPorts, message: &str) {
    let page = active_page(mem).unwrap_or(0);
    for ch in message.bytes() {
        if teletype(mem, io, page, ch).is_err() {
            io.outb(COM1_PORT, ch);
        }
    }
}

pub(super) fn active_page(mem: &RealMem) -> Result<u8, super::MemError> {
    Ok(mem.read_u8(bda::SEGMENT, bda::ACTIVE_PAGE)? % video::PAGES)
}

/// The (row, column) of `page`'s cursor.
fn cursor(mem: &RealMem, page: u8) -> Result<(u8, u8), super::MemError> {
    let off = bda::CURSOR_POS + 2 * u16::from(page % video::PAGES);
    let [col, row] = mem.read_u16(bda::SEGMENT, off)?.to_le_bytes();
    Ok((row, col))
}

fn set_cursor(mem: &mut RealMem, page: u8, row: u8, col: u8) -> VResult {
    let off = bda::CURSOR_POS + 2 * u16::from(page % video::PAGES);
    mem.write_u16(bda::SEGMENT, off, u16::from_le_bytes([col, row]))
}

/// The text screen's (rows, columns) from the BIOS data area, never zero.
fn screen_size(mem: &RealMem) -> Result<(u16, u16), super::MemError> {
    let cols = mem.read_u16(bda::SEGMENT, bda::VIDEO_COLUMNS)?;
    let rows = u16::from(mem.read_u8(bda::SEGMENT, bda::VIDEO_ROWS)?) + 1;
    let cols = if cols == 0 { video::COLUMNS } else { cols };
    Ok((rows, cols))
}

/// The text buffer's segment for the current mode.
fn buffer_segment(mem: &RealMem) -> Result<u16, super::MemError> {
    Ok(
        if mem.read_u8(bda::SEGMENT, bda::VIDEO_MODE)? == text::MONO_MODE {
            text::MONO_SEGMENT
        } else {
            text::COLOUR_SEGMENT
        },
    )
}

/// Where `page` starts in the buffer and how many bytes its screen takes, or `None` when the
/// BIOS data area describes a screen too big to be a text page (it is guest-writable).
fn page_span(mem: &RealMem, page: u8) -> Result<Option<(u16, u16, usize)>, super::MemError> {
    let (rows, cols) = screen_size(mem)?;
    let len = usize::from(rows) * usize::from(cols) * 2;
    if len > text::MAX_PAGE_BYTES {
        return Ok(None);
    }
    let size = mem.read_u16(bda::SEGMENT, bda::VIDEO_PAGE_SIZE)?;
    let start = size.wrapping_mul(u16::from(page % video::PAGES));
    Ok(Some((buffer_segment(mem)?, start, len)))
}

/// The buffer address of the cell (row, col) of `page`, `None` if it is off the screen.
fn cell_at(
    mem: &RealMem,
    page: u8,
    row: u8,
    col: u8,
) -> Result<Option<(u16, u16)>, super::MemError> {
    let (rows, cols) = screen_size(mem)?;
    let Some((seg, start, _)) = page_span(mem, page)? else {
        return Ok(None);
    };
    if u16::from(row) >= rows || u16::from(col) >= cols {
        return Ok(None);
    }
    let index = u16::from(row) * cols + u16::from(col);
    Ok(Some((seg, start.wrapping_add(index * 2))))
}

/// AH=00h: record `mode` with the 80x25 screen, page 0, every cursor home; blank the buffer.
fn set_mode(mem: &mut RealMem, mode: u8, clear: bool) -> VResult {
    mem.write_u8(bda::SEGMENT, bda::VIDEO_MODE, mode)?;
    mem.write_u16(bda::SEGMENT, bda::VIDEO_COLUMNS, video::COLUMNS)?;
    mem.write_u8(bda::SEGMENT, bda::VIDEO_ROWS, video::ROWS - 1)?;
    mem.write_u16(bda::SEGMENT, bda::VIDEO_PAGE_SIZE, video::PAGE_SIZE)?;
    mem.write_u16(bda::SEGMENT, bda::VIDEO_PAGE_START, 0)?;
    mem.write_u8(bda::SEGMENT, bda::ACTIVE_PAGE, 0)?;
    mem.write_u16(bda::SEGMENT, bda::CURSOR_TYPE, video::CURSOR_TYPE)?;
    mem.write(
        bda::SEGMENT,
        bda::CURSOR_POS,
        &[0; 2 * video::PAGES as usize],
    )?;
    if clear {
        clear_buffer(mem)?;
    }
    Ok(())
}

/// Blanks every page of the text buffer (best effort: it may not be RAM).
pub(super) fn clear_buffer(mem: &mut RealMem) -> VResult {
    let seg = buffer_segment(mem)?;
    let cells = usize::from(video::PAGE_SIZE) * usize::from(video::PAGES) / 2;
    let blank = [text::BLANK, text::ATTRIBUTE].repeat(cells);
    let _ = mem.write(seg, 0, &blank);
    Ok(())
}

/// A rectangle of the screen, inclusive.
#[derive(Clone, Copy)]
struct Window {
    top: u8,
    left: u8,
    bottom: u8,
    right: u8,
}

/// Scrolls `window` of `page` by `lines` (0 or more than its height: blank it), up or down,
/// filling the lines that open with blanks of `attr`. Best effort on the buffer.
fn scroll(mem: &mut RealMem, page: u8, w: Window, lines: u8, attr: u8, up: bool) -> VResult {
    let (rows, cols) = screen_size(mem)?;
    let Some((seg, start, len)) = page_span(mem, page)? else {
        return Ok(());
    };
    let bottom = u16::from(w.bottom).min(rows - 1);
    let right = u16::from(w.right).min(cols - 1);
    let (top, left) = (u16::from(w.top), u16::from(w.left));
    if top > bottom || left > right {
        return Ok(());
    }
    let mut buf = vec![0u8; len];
    if mem.read(seg, start, &mut buf).is_err() {
        return Ok(());
    }
    let height = bottom - top + 1;
    let lines = if lines == 0 || u16::from(lines) > height {
        height
    } else {
        u16::from(lines)
    };
    let cell = |row: u16, col: u16| usize::from(row * cols + col) * 2;
    for i in 0..height {
        // Filling top-down when scrolling up, bottom-up when scrolling down, reads each source
        // row before it is overwritten.
        let row = if up { top + i } else { bottom - i };
        let source = if up {
            row.checked_add(lines).filter(|r| *r <= bottom)
        } else {
            row.checked_sub(lines).filter(|r| *r >= top)
        };
        let (a, b) = (cell(row, left), cell(row, right) + 2);
        match source {
            Some(src) => {
                let s = cell(src, left);
                buf.copy_within(s..s + (b - a), a);
            }
            None => {
                for c in buf[a..b].chunks_exact_mut(2) {
                    c.copy_from_slice(&[text::BLANK, attr]);
                }
            }
        }
    }
    let _ = mem.write(seg, start, &buf);
    Ok(())
}

/// AH=09h/0Ah: `count` copies of `ch` from page's cursor on, stopping at the end of the screen.
fn write_repeated(mem: &mut RealMem, page: u8, ch: u8, attr: Option<u8>, count: u16) -> VResult {
    let (rows, cols) = screen_size(mem)?;
    let (row, col) = cursor(mem, page)?;
    let Some((seg, off)) = cell_at(mem, page, row, col)? else {
        return Ok(());
    };
    let index = u16::from(row) * cols + u16::from(col);
    let room = (rows * cols).saturating_sub(index);
    let count = usize::from(count.min(room));
    match attr {
        Some(attr) => {
            let _ = mem.write(seg, off, &[ch, attr].repeat(count));
        }
        None => {
            let mut cells = vec![0u8; count * 2];
            if mem.read(seg, off, &mut cells).is_ok() {
                for c in cells.chunks_exact_mut(2) {
                    c[0] = ch;
                }
                let _ = mem.write(seg, off, &cells);
            }
        }
    }
    Ok(())
}

/// Writes `ch` as a teletype on `page`: BEL, BS, LF and CR act on the cursor, everything else is
/// put in its cell (keeping the cell's attribute) and advances the cursor, wrapping at the end
/// of the line; a line feed on the last row scrolls the page up (the cursor stays on the row).
/// Characters for a page that is not shown do not reach COM1.
pub(super) fn teletype(mem: &mut RealMem, io: &mut dyn IoPorts, page: u8, ch: u8) -> VResult {
    let (rows, cols) = screen_size(mem)?;
    let (row, col) = cursor(mem, page)?;
    let (mut row, mut col) = (u16::from(row).min(rows - 1), u16::from(col).min(cols - 1));
    match ch {
        0x07 => {}
        0x08 => col = col.saturating_sub(1),
        0x0a => row += 1,
        0x0d => col = 0,
        _ => {
            if let Some((seg, off)) = cell_at(mem, page, row as u8, col as u8)? {
                let _ = mem.write(seg, off, &[ch]);
            }
            col += 1;
            if col >= cols {
                col = 0;
                row += 1;
            }
        }
    }
    if row >= rows {
        row = rows - 1;
        let whole = Window {
            top: 0,
            left: 0,
            bottom: (rows - 1).min(0xff) as u8,
            right: (cols - 1).min(0xff) as u8,
        };
        scroll(mem, page, whole, 1, text::ATTRIBUTE, true)?;
    }
    if page == active_page(mem)? {
        io.outb(COM1_PORT + spec::uart::DATA, ch);
    }
    set_cursor(mem, page, row.min(0xff) as u8, col.min(0xff) as u8)
}

/// INT 10h AH=13h: AL bit 0 leaves the cursor after the string, bit 1 says the string alternates
/// characters and attributes; BH page, CX length, DH/DL where to start, ES:BP the string.
fn write_string(call: &mut Call, io: &mut dyn IoPorts) -> VResult {
    let regs = &*call.regs;
    let (mode, page, count) = (regs.al(), regs.bh(), usize::from(regs.cx()));
    let (row, col, es, bp) = (regs.dh(), regs.dl(), regs.es, regs.bp());
    let stride = if mode & 0x02 != 0 { 2 } else { 1 };
    let mut chars = vec![0; count * stride];
    call.mem.read(es, bp, &mut chars)?;
    let saved = cursor(&call.mem, page)?;
    set_cursor(&mut call.mem, page, row, col)?;
    for ch in chars.iter().step_by(stride) {
        teletype(&mut call.mem, io, page, *ch)?;
    }
    if mode & 0x01 == 0 {
        set_cursor(&mut call.mem, page, saved.0, saved.1)?;
    }
    Ok(())
}
