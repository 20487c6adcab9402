//! An Intel 8042-compatible keyboard controller (PS/2 style, with the auxiliary port) with a
//! PS/2 keyboard (MF2, scan code set 2) on its keyboard port and a plain PS/2 mouse on its
//! auxiliary port.
//!
//! Follows the IBM Personal System/2 Hardware Interface Technical Reference, "Keyboard/Auxiliary
//! Device Controller" (status register, command byte, controller commands 20h-FFh, output port)
//! and "Keyboard and Auxiliary Device" (keyboard commands EDh-FFh and their ACK/BAT responses,
//! scan code set 2, mouse commands E6h-FFh, the 3-byte stream packet and status bytes), plus
//! the controller's set 2 -> set 1 translation when command-byte bit 6 is set.
//!
//! What Linux checks (drivers/input/serio/i8042.c, drivers/input/keyboard/atkbd.c):
//! - `i8042_controller_check`/`i8042_flush`: the output buffer drains; the input buffer is
//!   always empty (commands complete at once).
//! - `i8042_controller_selftest`: command AAh answers 55h.
//! - `i8042_controller_init`: two identical command-byte reads; status bit 4 set (not locked).
//! - `i8042_set_mux_mode`: AUX loopback (D3h) echoes every byte with status bit 5 set, so the
//!   third byte of the MUX handshake comes back unchanged and no multiplexer is found.
//! - `i8042_check_aux`: loopback works, A7h/A8h flip command-byte bit 5, and the loopback byte
//!   raises IRQ 12 while command-byte bit 1 is set.
//! - `atkbd_probe`: F2h answers FAh ABh 83h (83h reaches the guest as 41h when translating, as on
//!   every real controller), then F5h, EDh, F3h and F4h are acknowledged.
//!
//! One device covers ports 0x60-0x64: offset 0 is the data port, offset 4 the status/command
//! port; offsets 1-3 belong to other devices (port 0x61 is the PIT/speaker control, handled by
//! the in-kernel PIT) and read 0xFF here.
//!
//! The controller moves one byte at a time into its output buffer: its own command responses
//! first, then keyboard bytes (unless the keyboard interface is disabled), then mouse bytes
//! (unless the auxiliary interface is disabled). IRQ 1 is high while a keyboard-side byte waits
//! in the output buffer and command-byte bit 0 is set; IRQ 12 likewise for mouse bytes and bit 1.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::bus::warn_limited;
use crate::bus::{BusDevice, Irq, VmControl, VmRequest};

/// Register offsets, bit layouts, commands and responses.
pub mod spec {
    /// Length of the port range the device is registered for (0x60..=0x64).
    pub const PORT_RANGE_LEN: u64 = 5;
    /// Data port (0x60).
    pub const DATA: u64 = 0;
    /// Status (read) / command (write) port (0x64).
    pub const STATUS_COMMAND: u64 = 4;

    // Status register.
    pub const STATUS_OBF: u8 = 0x01;
    pub const STATUS_IBF: u8 = 0x02;
    pub const STATUS_SYSTEM: u8 = 0x04;
    /// The last write went to the command port.
    pub const STATUS_COMMAND_LAST: u8 = 0x08;
    /// The keyboard is not inhibited by the key lock.
    pub const STATUS_UNLOCKED: u8 = 0x10;
    /// The byte in the output buffer came from the auxiliary device.
    pub const STATUS_AUX_DATA: u8 = 0x20;
    pub const STATUS_TIMEOUT: u8 = 0x40;
    pub const STATUS_PARITY: u8 = 0x80;

    // Command byte (controller RAM byte 0).
    pub const CTR_KBD_INT: u8 = 0x01;
    pub const CTR_AUX_INT: u8 = 0x02;
    pub const CTR_SYSTEM: u8 = 0x04;
    pub const CTR_IGNORE_LOCK: u8 = 0x08;
    pub const CTR_KBD_DISABLE: u8 = 0x10;
    pub const CTR_AUX_DISABLE: u8 = 0x20;
    pub const CTR_XLATE: u8 = 0x40;
    /// The command byte as a BIOS leaves it after POST: translation on, keyboard interrupt on,
    /// system flag set, auxiliary port disabled. kettle's firmware does not program the
    /// controller, so the power-on value is this.
    pub const CTR_POWER_ON: u8 = CTR_XLATE | CTR_AUX_DISABLE | CTR_SYSTEM | CTR_KBD_INT;

    // Controller commands (written to port 0x64).
    pub const CMD_READ_RAM: u8 = 0x20; // ..=0x3f
    pub const CMD_WRITE_RAM: u8 = 0x60; // ..=0x7f
    pub const CMD_PASSWORD_INSTALLED: u8 = 0xa4;
    pub const CMD_AUX_DISABLE: u8 = 0xa7;
    pub const CMD_AUX_ENABLE: u8 = 0xa8;
    pub const CMD_AUX_TEST: u8 = 0xa9;
    pub const CMD_SELF_TEST: u8 = 0xaa;
    pub const CMD_KBD_TEST: u8 = 0xab;
    pub const CMD_KBD_DISABLE: u8 = 0xad;
    pub const CMD_KBD_ENABLE: u8 = 0xae;
    pub const CMD_READ_INPUT_PORT: u8 = 0xc0;
    pub const CMD_READ_OUTPUT_PORT: u8 = 0xd0;
    pub const CMD_WRITE_OUTPUT_PORT: u8 = 0xd1;
    pub const CMD_WRITE_KBD_OBUF: u8 = 0xd2;
    pub const CMD_WRITE_AUX_OBUF: u8 = 0xd3;
    pub const CMD_WRITE_AUX: u8 = 0xd4;
    pub const CMD_A20_OFF: u8 = 0xdd;
    pub const CMD_A20_ON: u8 = 0xdf;
    pub const CMD_READ_TEST_INPUTS: u8 = 0xe0;
    /// F0h-FFh: pulse the output-port bits whose command bits 3:0 are clear.
    pub const CMD_PULSE_BASE: u8 = 0xf0;

    // Controller responses.
    pub const SELF_TEST_OK: u8 = 0x55;
    pub const INTERFACE_TEST_OK: u8 = 0x00;
    pub const PASSWORD_NOT_INSTALLED: u8 = 0xf1;
    /// Input port: bit 7 set = keyboard not inhibited.
    pub const INPUT_PORT: u8 = 0x80;

    // Output port.
    /// Bit 0 low holds the CPU in reset.
    pub const OUT_NRESET: u8 = 0x01;
    pub const OUT_A20: u8 = 0x02;
    pub const OUT_KBD_OBF: u8 = 0x10;
    pub const OUT_AUX_OBF: u8 = 0x20;
    pub const OUT_POWER_ON: u8 = 0xcf;

    // Device responses.
    pub const ACK: u8 = 0xfa;
    pub const RESEND: u8 = 0xfe;
    pub const BAT_OK: u8 = 0xaa;
    pub const ECHO: u8 = 0xee;
    pub const KBD_ID: [u8; 2] = [0xab, 0x83];
    pub const MOUSE_ID: u8 = 0x00;

    // Keyboard commands.
    pub const KBD_SET_LEDS: u8 = 0xed;
    pub const KBD_ECHO: u8 = 0xee;
    pub const KBD_SCANCODE_SET: u8 = 0xf0;
    pub const KBD_IDENTIFY: u8 = 0xf2;
    pub const KBD_TYPEMATIC: u8 = 0xf3;
    pub const KBD_ENABLE: u8 = 0xf4;
    pub const KBD_DISABLE: u8 = 0xf5;
    pub const KBD_DEFAULTS: u8 = 0xf6;
    pub const KBD_RESEND: u8 = 0xfe;
    pub const KBD_RESET: u8 = 0xff;
    /// Typematic rate/delay after reset: 10.9 cps, 500 ms.
    pub const KBD_TYPEMATIC_DEFAULT: u8 = 0x2b;

    // Mouse commands.
    pub const MOUSE_SCALING_1_1: u8 = 0xe6;
    pub const MOUSE_SCALING_2_1: u8 = 0xe7;
    pub const MOUSE_SET_RESOLUTION: u8 = 0xe8;
    pub const MOUSE_STATUS: u8 = 0xe9;
    pub const MOUSE_STREAM_MODE: u8 = 0xea;
    pub const MOUSE_READ_DATA: u8 = 0xeb;
    pub const MOUSE_RESET_WRAP: u8 = 0xec;
    pub const MOUSE_WRAP_MODE: u8 = 0xee;
    pub const MOUSE_REMOTE_MODE: u8 = 0xf0;
    pub const MOUSE_IDENTIFY: u8 = 0xf2;
    pub const MOUSE_SAMPLE_RATE: u8 = 0xf3;
    pub const MOUSE_ENABLE: u8 = 0xf4;
    pub const MOUSE_DISABLE: u8 = 0xf5;
    pub const MOUSE_DEFAULTS: u8 = 0xf6;
    pub const MOUSE_RESEND: u8 = 0xfe;
    pub const MOUSE_RESET: u8 = 0xff;
    pub const MOUSE_SAMPLE_RATE_DEFAULT: u8 = 100;
    /// 4 counts per millimetre.
    pub const MOUSE_RESOLUTION_DEFAULT: u8 = 2;

    /// The controller's scan code translation (set 2 -> set 1) for codes 00h-7Fh. Code 83h (F7)
    /// becomes 41h; F0h (break prefix) is absorbed and sets bit 7 of the next translated code;
    /// every other code of 80h and above passes unchanged.
    pub const SET2_TO_SET1: [u8; 128] = [
        0x00, 0x43, 0x41, 0x3f, 0x3d, 0x3b, 0x3c, 0x58, 0x64, 0x44, 0x42, 0x40, 0x3e, 0x0f, 0x29,
        0x59, 0x65, 0x38, 0x2a, 0x70, 0x1d, 0x10, 0x02, 0x5a, 0x66, 0x71, 0x2c, 0x1f, 0x1e, 0x11,
        0x03, 0x5b, 0x67, 0x2e, 0x2d, 0x20, 0x12, 0x05, 0x04, 0x5c, 0x68, 0x39, 0x2f, 0x21, 0x14,
        0x13, 0x06, 0x5d, 0x69, 0x31, 0x30, 0x23, 0x22, 0x15, 0x07, 0x5e, 0x6a, 0x72, 0x32, 0x24,
        0x16, 0x08, 0x09, 0x5f, 0x6b, 0x33, 0x25, 0x17, 0x18, 0x0b, 0x0a, 0x60, 0x6c, 0x34, 0x35,
        0x26, 0x27, 0x19, 0x0c, 0x61, 0x6d, 0x73, 0x28, 0x74, 0x1a, 0x0d, 0x62, 0x6e, 0x3a, 0x36,
        0x1c, 0x1b, 0x75, 0x2b, 0x63, 0x76, 0x55, 0x56, 0x77, 0x78, 0x79, 0x7a, 0x0e, 0x7b, 0x7c,
        0x4f, 0x7d, 0x4b, 0x47, 0x7e, 0x7f, 0x6f, 0x52, 0x53, 0x50, 0x4c, 0x4d, 0x48, 0x01, 0x45,
        0x57, 0x4e, 0x51, 0x4a, 0x37, 0x49, 0x46, 0x54,
    ];
    pub const SET2_BREAK_PREFIX: u8 = 0xf0;
    pub const SET2_F7: u8 = 0x83;
    pub const SET1_F7: u8 = 0x41;

    /// Translates one set 2 byte (not the break prefix) to set 1.
    pub fn translate(code: u8) -> u8 {
        match code {
            0..=0x7f => SET2_TO_SET1[code as usize],
            SET2_F7 => SET1_F7,
            _ => code,
        }
    }
}

use spec::*;

/// Bytes a device may hold for the controller. A real keyboard buffers 16; host key input can
/// arrive in bursts (a paste), so this is larger.
pub const DEVICE_QUEUE_LIMIT: usize = 1024;

/// Which side of the controller a byte in the output buffer belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Channel {
    Keyboard,
    Aux,
}

/// The saved state of the PS/2 keyboard.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Ps2KeyboardState {
    pub queue: Vec<u8>,
    pub scanning: bool,
    pub scancode_set: u8,
    pub leds: u8,
    pub typematic: u8,
    /// A command waiting for its parameter byte.
    pub pending_command: Option<u8>,
    pub last_sent: u8,
}

/// The saved state of the PS/2 mouse.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Ps2MouseState {
    pub queue: Vec<u8>,
    pub reporting: bool,
    pub remote: bool,
    pub wrap: bool,
    pub scaling_2_1: bool,
    pub sample_rate: u8,
    pub resolution: u8,
    /// Buttons held: bit 0 left, bit 1 right, bit 2 middle.
    pub buttons: u8,
    pub pending_command: Option<u8>,
    pub last_sent: u8,
}

/// The guest-visible state of an [`I8042`] and its devices, for snapshots.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct I8042State {
    /// Controller RAM; byte 0 is the command byte.
    pub ram: [u8; 32],
    pub output_port: u8,
    /// Status bit 3: the last write went to the command port.
    pub command_last: bool,
    /// The output buffer and which channel its byte came from.
    pub output_buffer: Option<(u8, Channel)>,
    /// What port 0x60 returns while the output buffer is empty.
    pub last_data: u8,
    /// Controller responses waiting for the output buffer.
    pub controller_queue: Vec<(u8, Channel)>,
    /// A controller command waiting for its data byte on port 0x60.
    pub pending_command: Option<u8>,
    /// Translation saw a set 2 break prefix and will set bit 7 of the next code.
    pub xlate_break: bool,
    pub keyboard: Ps2KeyboardState,
    pub mouse: Ps2MouseState,
}

/// The PS/2 keyboard: answers commands, queues scan codes (set 2 on the wire).
struct Keyboard {
    queue: VecDeque<u8>,
    scanning: bool,
    scancode_set: u8,
    leds: u8,
    typematic: u8,
    pending: Option<u8>,
    last_sent: u8,
}

impl Keyboard {
    fn new() -> Self {
        Self {
            queue: VecDeque::new(),
            scanning: true,
            scancode_set: 2,
            leds: 0,
            typematic: KBD_TYPEMATIC_DEFAULT,
            pending: None,
            last_sent: 0,
        }
    }

    fn defaults(&mut self) {
        self.scancode_set = 2;
        self.typematic = KBD_TYPEMATIC_DEFAULT;
        self.queue.clear();
    }

    fn send(&mut self, b: u8) {
        if self.queue.len() < DEVICE_QUEUE_LIMIT {
            self.queue.push_back(b);
            self.last_sent = b;
        }
    }

    /// A byte from the host (the controller's data port or a D4h-less write).
    fn receive(&mut self, b: u8) {
        if let Some(cmd) = self.pending.take() {
            match cmd {
                KBD_SET_LEDS => {
                    self.leds = b & 0x07;
                    self.send(ACK);
                }
                KBD_TYPEMATIC => {
                    self.typematic = b & 0x7f;
                    self.send(ACK);
                }
                KBD_SCANCODE_SET => match b {
                    0 => {
                        self.send(ACK);
                        self.send(self.scancode_set);
                    }
                    1..=3 => {
                        self.scancode_set = b;
                        self.send(ACK);
                    }
                    _ => self.send(RESEND),
                },
                _ => self.send(ACK),
            }
            return;
        }
        match b {
            KBD_SET_LEDS | KBD_TYPEMATIC | KBD_SCANCODE_SET => {
                self.pending = Some(b);
                self.send(ACK);
            }
            KBD_ECHO => self.send(ECHO),
            KBD_IDENTIFY => {
                self.send(ACK);
                self.send(KBD_ID[0]);
                self.send(KBD_ID[1]);
            }
            KBD_ENABLE => {
                self.queue.clear();
                self.scanning = true;
                self.send(ACK);
            }
            KBD_DISABLE => {
                self.defaults();
                self.scanning = false;
                self.send(ACK);
            }
            KBD_DEFAULTS => {
                self.defaults();
                self.scanning = true;
                self.send(ACK);
            }
            // Set 3 key-type commands (all keys typematic/make-break/...): accepted.
            0xf7..=0xfd => self.send(ACK),
            KBD_RESEND => {
                let last = self.last_sent;
                self.send(last);
            }
            KBD_RESET => {
                self.defaults();
                self.leds = 0;
                self.scanning = true;
                self.send(ACK);
                self.send(BAT_OK);
            }
            _ => self.send(RESEND),
        }
    }

    /// Scan codes from the host, in set 2. While the guest selected set 1 they are converted;
    /// set 3 is not emulated and gets set 2 codes.
    fn key_input(&mut self, codes: &[u8]) -> usize {
        if !self.scanning {
            return 0;
        }
        let mut taken = 0;
        let mut brk = false;
        for &c in codes {
            if self.queue.len() >= DEVICE_QUEUE_LIMIT {
                break;
            }
            taken += 1;
            if self.scancode_set == 1 {
                if c == SET2_BREAK_PREFIX {
                    brk = true;
                    continue;
                }
                let t = translate(c) | if brk { 0x80 } else { 0 };
                brk = false;
                self.send(t);
            } else {
                self.send(c);
            }
        }
        taken
    }

    fn state(&self) -> Ps2KeyboardState {
        Ps2KeyboardState {
            queue: self.queue.iter().copied().collect(),
            scanning: self.scanning,
            scancode_set: self.scancode_set,
            leds: self.leds,
            typematic: self.typematic,
            pending_command: self.pending,
            last_sent: self.last_sent,
        }
    }

    fn restore(&mut self, s: &Ps2KeyboardState) {
        self.queue = s.queue.iter().copied().take(DEVICE_QUEUE_LIMIT).collect();
        self.scanning = s.scanning;
        self.scancode_set = s.scancode_set;
        self.leds = s.leds;
        self.typematic = s.typematic;
        self.pending = s.pending_command;
        self.last_sent = s.last_sent;
    }
}

/// A standard 3-byte PS/2 mouse (device ID 00h).
struct Mouse {
    queue: VecDeque<u8>,
    reporting: bool,
    remote: bool,
    wrap: bool,
    scaling_2_1: bool,
    sample_rate: u8,
    resolution: u8,
    buttons: u8,
    pending: Option<u8>,
    last_sent: u8,
}

impl Mouse {
    fn new() -> Self {
        Self {
            queue: VecDeque::new(),
            reporting: false,
            remote: false,
            wrap: false,
            scaling_2_1: false,
            sample_rate: MOUSE_SAMPLE_RATE_DEFAULT,
            resolution: MOUSE_RESOLUTION_DEFAULT,
            buttons: 0,
            pending: None,
            last_sent: 0,
        }
    }

    fn defaults(&mut self) {
        self.reporting = false;
        self.remote = false;
        self.scaling_2_1 = false;
        self.sample_rate = MOUSE_SAMPLE_RATE_DEFAULT;
        self.resolution = MOUSE_RESOLUTION_DEFAULT;
        self.queue.clear();
    }

    fn send(&mut self, b: u8) {
        if self.queue.len() < DEVICE_QUEUE_LIMIT {
            self.queue.push_back(b);
            self.last_sent = b;
        }
    }

    fn packet(&mut self, dx: i32, dy: i32) {
        let x = dx.clamp(-256, 255);
        let y = dy.clamp(-256, 255);
        let mut b0 = 0x08 | (self.buttons & 0x07);
        if x < 0 {
            b0 |= 0x10;
        }
        if y < 0 {
            b0 |= 0x20;
        }
        if x != dx {
            b0 |= 0x40;
        }
        if y != dy {
            b0 |= 0x80;
        }
        self.send(b0);
        self.send(x as u8);
        self.send(y as u8);
    }

    fn receive(&mut self, b: u8) {
        if self.wrap && b != MOUSE_RESET_WRAP && b != MOUSE_RESET {
            self.send(b);
            return;
        }
        if let Some(cmd) = self.pending.take() {
            match cmd {
                MOUSE_SAMPLE_RATE => self.sample_rate = b,
                MOUSE_SET_RESOLUTION => self.resolution = b & 0x03,
                _ => {}
            }
            self.send(ACK);
            return;
        }
        match b {
            MOUSE_SCALING_1_1 => {
                self.scaling_2_1 = false;
                self.send(ACK);
            }
            MOUSE_SCALING_2_1 => {
                self.scaling_2_1 = true;
                self.send(ACK);
            }
            MOUSE_SET_RESOLUTION | MOUSE_SAMPLE_RATE => {
                self.pending = Some(b);
                self.send(ACK);
            }
            MOUSE_STATUS => {
                // Byte 1: remote, enabled, scaling 2:1, then left, middle, right.
                let mut s = 0;
                if self.remote {
                    s |= 0x40;
                }
                if self.reporting {
                    s |= 0x20;
                }
                if self.scaling_2_1 {
                    s |= 0x10;
                }
                if self.buttons & 0x01 != 0 {
                    s |= 0x04;
                }
                if self.buttons & 0x04 != 0 {
                    s |= 0x02;
                }
                if self.buttons & 0x02 != 0 {
                    s |= 0x01;
                }
                self.send(ACK);
                self.send(s);
                self.send(self.resolution);
                self.send(self.sample_rate);
            }
            MOUSE_STREAM_MODE => {
                self.remote = false;
                self.send(ACK);
            }
            MOUSE_READ_DATA => {
                self.send(ACK);
                self.packet(0, 0);
            }
            MOUSE_RESET_WRAP => {
                self.wrap = false;
                self.send(ACK);
            }
            MOUSE_WRAP_MODE => {
                self.wrap = true;
                self.send(ACK);
            }
            MOUSE_REMOTE_MODE => {
                self.remote = true;
                self.send(ACK);
            }
            MOUSE_IDENTIFY => {
                self.send(ACK);
                self.send(MOUSE_ID);
            }
            MOUSE_ENABLE => {
                self.reporting = true;
                self.send(ACK);
            }
            MOUSE_DISABLE => {
                self.reporting = false;
                self.send(ACK);
            }
            MOUSE_DEFAULTS => {
                self.defaults();
                self.send(ACK);
            }
            MOUSE_RESEND => {
                let last = self.last_sent;
                self.send(last);
            }
            MOUSE_RESET => {
                self.defaults();
                self.wrap = false;
                self.send(ACK);
                self.send(BAT_OK);
                self.send(MOUSE_ID);
            }
            _ => self.send(RESEND),
        }
    }

    fn state(&self) -> Ps2MouseState {
        Ps2MouseState {
            queue: self.queue.iter().copied().collect(),
            reporting: self.reporting,
            remote: self.remote,
            wrap: self.wrap,
            scaling_2_1: self.scaling_2_1,
            sample_rate: self.sample_rate,
            resolution: self.resolution,
            buttons: self.buttons,
            pending_command: self.pending,
            last_sent: self.last_sent,
        }
    }

    fn restore(&mut self, s: &Ps2MouseState) {
        self.queue = s.queue.iter().copied().take(DEVICE_QUEUE_LIMIT).collect();
        self.reporting = s.reporting;
        self.remote = s.remote;
        self.wrap = s.wrap;
        self.scaling_2_1 = s.scaling_2_1;
        self.sample_rate = s.sample_rate;
        self.resolution = s.resolution;
        self.buttons = s.buttons;
        self.pending = s.pending_command;
        self.last_sent = s.last_sent;
    }
}

/// The keyboard controller with its keyboard and mouse. Register it on the I/O bus at port 0x60
/// with length 5 ([`spec::PORT_RANGE_LEN`]).
pub struct I8042 {
    // Runtime handles.
    kbd_irq: Irq,
    aux_irq: Irq,
    control: Arc<dyn VmControl>,
    kbd_irq_level: bool,
    aux_irq_level: bool,

    // Guest-visible state.
    ram: [u8; 32],
    output_port: u8,
    command_last: bool,
    output_buffer: Option<(u8, Channel)>,
    last_data: u8,
    controller_queue: VecDeque<(u8, Channel)>,
    pending_command: Option<u8>,
    xlate_break: bool,
    keyboard: Keyboard,
    mouse: Mouse,
}

impl I8042 {
    /// A controller in the state the BIOS leaves it in ([`spec::CTR_POWER_ON`]).
    pub fn new(kbd_irq: Irq, aux_irq: Irq, control: Arc<dyn VmControl>) -> Self {
        let mut ram = [0u8; 32];
        ram[0] = CTR_POWER_ON;
        Self {
            kbd_irq,
            aux_irq,
            control,
            kbd_irq_level: false,
            aux_irq_level: false,
            ram,
            output_port: OUT_POWER_ON,
            command_last: false,
            output_buffer: None,
            last_data: 0,
            controller_queue: VecDeque::new(),
            pending_command: None,
            xlate_break: false,
            keyboard: Keyboard::new(),
            mouse: Mouse::new(),
        }
    }

    /// Scan codes typed on the host, in scan code set 2 (make codes, `F0` break prefixes, `E0`/`E1`
    /// extended prefixes), as a PS/2 keyboard sends them. The controller translates them to set 1
    /// while the guest has translation on. Bytes are dropped while the keyboard is disabled (F5h)
    /// or its buffer is full.
    pub fn key_input(&mut self, scancodes: &[u8]) {
        let taken = self.keyboard.key_input(scancodes);
        if taken < scancodes.len() {
            log::debug!(
                "i8042: {} scan code bytes dropped (keyboard disabled or full)",
                scancodes.len() - taken
            );
        }
        self.fill_output_buffer();
        self.update_irqs();
    }

    /// Mouse movement and buttons from the host (`dx` right, `dy` up; buttons bit 0 left,
    /// bit 1 right, bit 2 middle). Sent as a stream packet while the guest has reporting on.
    pub fn mouse_input(&mut self, dx: i32, dy: i32, buttons: u8) {
        self.mouse.buttons = buttons & 0x07;
        if self.mouse.reporting && !self.mouse.remote && !self.mouse.wrap {
            self.mouse.packet(dx, dy);
        }
        self.fill_output_buffer();
        self.update_irqs();
    }

    /// The command byte (controller RAM byte 0).
    pub fn command_byte(&self) -> u8 {
        self.ram[0]
    }

    /// Whether the output port enables the A20 gate. KVM has no A20 mask; this is informational.
    pub fn a20_enabled(&self) -> bool {
        self.output_port & OUT_A20 != 0
    }

    pub fn state(&self) -> I8042State {
        I8042State {
            ram: self.ram,
            output_port: self.output_port,
            command_last: self.command_last,
            output_buffer: self.output_buffer,
            last_data: self.last_data,
            controller_queue: self.controller_queue.iter().copied().collect(),
            pending_command: self.pending_command,
            xlate_break: self.xlate_break,
            keyboard: self.keyboard.state(),
            mouse: self.mouse.state(),
        }
    }

    /// Loads a state produced by [`I8042::state`] and drives both interrupt lines to match it.
    pub fn restore(&mut self, s: &I8042State) {
        self.ram = s.ram;
        self.output_port = s.output_port;
        self.command_last = s.command_last;
        self.output_buffer = s.output_buffer;
        self.last_data = s.last_data;
        self.controller_queue = s
            .controller_queue
            .iter()
            .copied()
            .take(DEVICE_QUEUE_LIMIT)
            .collect();
        self.pending_command = s.pending_command;
        self.xlate_break = s.xlate_break;
        self.keyboard.restore(&s.keyboard);
        self.mouse.restore(&s.mouse);
        let (kbd, aux) = self.irq_levels();
        self.kbd_irq_level = kbd;
        self.aux_irq_level = aux;
        self.kbd_irq.set_level(kbd);
        self.aux_irq.set_level(aux);
    }

    fn ctr(&self) -> u8 {
        self.ram[0]
    }

    fn status(&self) -> u8 {
        let mut s = STATUS_UNLOCKED;
        if let Some((_, ch)) = self.output_buffer {
            s |= STATUS_OBF;
            if ch == Channel::Aux {
                s |= STATUS_AUX_DATA;
            }
        }
        if self.ctr() & CTR_SYSTEM != 0 {
            s |= STATUS_SYSTEM;
        }
        if self.command_last {
            s |= STATUS_COMMAND_LAST;
        }
        s
    }

    /// Loads the output buffer when it is empty: controller responses, then the keyboard (unless
    /// its interface is disabled), then the mouse (likewise).
    fn fill_output_buffer(&mut self) {
        if self.output_buffer.is_some() {
            return;
        }
        if let Some(entry) = self.controller_queue.pop_front() {
            self.output_buffer = Some(entry);
            return;
        }
        if self.ctr() & CTR_KBD_DISABLE == 0 {
            while let Some(b) = self.keyboard.queue.pop_front() {
                if self.ctr() & CTR_XLATE == 0 {
                    self.output_buffer = Some((b, Channel::Keyboard));
                    return;
                }
                if b == SET2_BREAK_PREFIX {
                    self.xlate_break = true;
                    continue;
                }
                let code = translate(b) | if self.xlate_break { 0x80 } else { 0 };
                self.xlate_break = false;
                self.output_buffer = Some((code, Channel::Keyboard));
                return;
            }
        }
        if self.ctr() & CTR_AUX_DISABLE == 0 {
            if let Some(b) = self.mouse.queue.pop_front() {
                self.output_buffer = Some((b, Channel::Aux));
            }
        }
    }

    fn irq_levels(&self) -> (bool, bool) {
        match self.output_buffer {
            Some((_, Channel::Keyboard)) => (self.ctr() & CTR_KBD_INT != 0, false),
            Some((_, Channel::Aux)) => (false, self.ctr() & CTR_AUX_INT != 0),
            None => (false, false),
        }
    }

    fn update_irqs(&mut self) {
        let (kbd, aux) = self.irq_levels();
        if kbd != self.kbd_irq_level {
            self.kbd_irq_level = kbd;
            self.kbd_irq.set_level(kbd);
        }
        if aux != self.aux_irq_level {
            self.aux_irq_level = aux;
            self.aux_irq.set_level(aux);
        }
    }

    fn respond(&mut self, b: u8, ch: Channel) {
        if self.controller_queue.len() < DEVICE_QUEUE_LIMIT {
            self.controller_queue.push_back((b, ch));
        }
    }

    fn unhandled(&mut self, what: &str, value: u8) {
        warn_limited!("i8042: {what} {value:#04x} ignored");
    }

    fn write_output_port(&mut self, v: u8) {
        let old = self.output_port;
        self.output_port = v;
        if (old ^ v) & OUT_A20 != 0 {
            log::debug!(
                "i8042: A20 gate {}",
                if v & OUT_A20 != 0 { "on" } else { "off" }
            );
        }
        if v & OUT_NRESET == 0 {
            log::info!("i8042: the guest pulled the CPU reset line (output port)");
            self.control.request(VmRequest::Reset);
        }
    }

    fn command(&mut self, cmd: u8) {
        // A new command abandons one still waiting for its data byte.
        self.pending_command = None;
        match cmd {
            0x20..=0x3f => {
                let v = self.ram[(cmd & 0x1f) as usize];
                self.respond(v, Channel::Keyboard);
            }
            0x60..=0x7f
            | CMD_WRITE_OUTPUT_PORT
            | CMD_WRITE_KBD_OBUF
            | CMD_WRITE_AUX_OBUF
            | CMD_WRITE_AUX => self.pending_command = Some(cmd),
            CMD_PASSWORD_INSTALLED => self.respond(PASSWORD_NOT_INSTALLED, Channel::Keyboard),
            CMD_AUX_DISABLE => self.ram[0] |= CTR_AUX_DISABLE,
            CMD_AUX_ENABLE => self.ram[0] &= !CTR_AUX_DISABLE,
            CMD_AUX_TEST | CMD_KBD_TEST => self.respond(INTERFACE_TEST_OK, Channel::Keyboard),
            CMD_SELF_TEST => {
                self.ram[0] |= CTR_SYSTEM;
                self.respond(SELF_TEST_OK, Channel::Keyboard);
            }
            CMD_KBD_DISABLE => self.ram[0] |= CTR_KBD_DISABLE,
            CMD_KBD_ENABLE => self.ram[0] &= !CTR_KBD_DISABLE,
            CMD_READ_INPUT_PORT => self.respond(INPUT_PORT, Channel::Keyboard),
            CMD_READ_OUTPUT_PORT => {
                let mut v = self.output_port & !(OUT_KBD_OBF | OUT_AUX_OBF);
                match self.output_buffer {
                    Some((_, Channel::Keyboard)) => v |= OUT_KBD_OBF,
                    Some((_, Channel::Aux)) => v |= OUT_AUX_OBF,
                    None => {}
                }
                self.respond(v, Channel::Keyboard);
            }
            CMD_A20_OFF => self.write_output_port(self.output_port & !OUT_A20),
            CMD_A20_ON => self.write_output_port(self.output_port | OUT_A20),
            CMD_READ_TEST_INPUTS => self.respond(0x00, Channel::Keyboard),
            CMD_PULSE_BASE..=0xff => {
                // Bits 3:0 clear select the output-port lines to pulse low; bit 0 is CPU reset.
                if cmd & OUT_NRESET == 0 {
                    log::info!("i8042: the guest pulsed the CPU reset line");
                    self.control.request(VmRequest::Reset);
                }
            }
            _ => self.unhandled("controller command", cmd),
        }
    }

    fn data(&mut self, v: u8) {
        match self.pending_command.take() {
            Some(cmd @ 0x60..=0x7f) => {
                self.ram[(cmd & 0x1f) as usize] = v;
            }
            Some(CMD_WRITE_OUTPUT_PORT) => self.write_output_port(v),
            Some(CMD_WRITE_KBD_OBUF) => self.respond(v, Channel::Keyboard),
            Some(CMD_WRITE_AUX_OBUF) => self.respond(v, Channel::Aux),
            Some(CMD_WRITE_AUX) => self.mouse.receive(v),
            Some(other) => self.unhandled("data for controller command", other),
            None => {
                // Sending to the keyboard enables its interface, as on AT-class controllers.
                self.ram[0] &= !CTR_KBD_DISABLE;
                self.keyboard.receive(v);
            }
        }
    }

    fn read_port(&mut self, offset: u64) -> u8 {
        match offset {
            DATA => {
                if let Some((b, _)) = self.output_buffer.take() {
                    self.last_data = b;
                    // The interrupt output follows OBF: it drops on this read and rises again
                    // when the next byte is loaded, giving the edge-triggered PIC a new edge.
                    self.update_irqs();
                    self.fill_output_buffer();
                }
                self.last_data
            }
            STATUS_COMMAND => self.status(),
            _ => 0xff,
        }
    }

    fn write_port(&mut self, offset: u64, v: u8) {
        match offset {
            DATA => {
                self.command_last = false;
                self.data(v);
            }
            STATUS_COMMAND => {
                self.command_last = true;
                self.command(v);
            }
            _ => self.unhandled(
                &format!("write to port 0x6{offset}, not the controller's:"),
                v,
            ),
        }
    }
}

impl BusDevice for I8042 {
    /// Multi-byte accesses are split into byte cycles on consecutive ports; the ports between
    /// 0x60 and 0x64 and beyond read 0xFF.
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = self.read_port(offset + i as u64);
        }
        self.fill_output_buffer();
        self.update_irqs();
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        for (i, &v) in data.iter().enumerate() {
            self.write_port(offset + i as u64, v);
        }
        self.fill_output_buffer();
        self.update_irqs();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::testing::{FakeControl, FakeIrq};
    use crate::testing::cbor_round_trip;

    struct Rig {
        dev: I8042,
        kbd: Arc<FakeIrq>,
        aux: Arc<FakeIrq>,
        control: Arc<FakeControl>,
    }

    fn rig() -> Rig {
        let kbd = Arc::new(FakeIrq::default());
        let aux = Arc::new(FakeIrq::default());
        let control = Arc::new(FakeControl::default());
        let dev = I8042::new(kbd.clone(), aux.clone(), control.clone());
        Rig {
            dev,
            kbd,
            aux,
            control,
        }
    }

    impl Rig {
        fn status(&mut self) -> u8 {
            let mut b = [0u8];
            self.dev.read(STATUS_COMMAND, &mut b);
            b[0]
        }
        fn data(&mut self) -> u8 {
            let mut b = [0u8];
            self.dev.read(DATA, &mut b);
            b[0]
        }
        fn cmd(&mut self, c: u8) {
            self.dev.write(STATUS_COMMAND, &[c]);
        }
        fn put(&mut self, v: u8) {
            self.dev.write(DATA, &[v]);
        }
        /// Linux's __i8042_command(): command, parameters, then responses read by polling.
        fn command(&mut self, c: u8, params: &[u8], responses: usize) -> Vec<u8> {
            assert_eq!(self.status() & STATUS_IBF, 0);
            self.cmd(c);
            for &p in params {
                assert_eq!(self.status() & STATUS_IBF, 0);
                self.put(p);
            }
            (0..responses)
                .map(|_| {
                    assert_eq!(self.status() & STATUS_OBF, STATUS_OBF, "response timeout");
                    self.data()
                })
                .collect()
        }
        /// Everything in the output buffer, with the status seen before each byte.
        fn drain(&mut self) -> Vec<(u8, u8)> {
            let mut v = Vec::new();
            while self.status() & STATUS_OBF != 0 {
                let s = self.status();
                v.push((s, self.data()));
                assert!(v.len() < 64);
            }
            v
        }
        fn drain_bytes(&mut self) -> Vec<u8> {
            self.drain().into_iter().map(|(_, b)| b).collect()
        }
        fn write_ctr(&mut self, v: u8) {
            self.command(0x60, &[v], 0);
        }
        fn read_ctr(&mut self) -> u8 {
            self.command(0x20, &[], 1)[0]
        }
    }

    #[test]
    fn power_on_state() {
        let mut r = rig();
        let st = r.status();
        assert_eq!(st & STATUS_OBF, 0);
        assert_eq!(st & STATUS_IBF, 0);
        assert_eq!(st & STATUS_UNLOCKED, STATUS_UNLOCKED);
        assert_eq!(st & STATUS_SYSTEM, STATUS_SYSTEM);
        assert_eq!(r.read_ctr(), CTR_POWER_ON);
        assert!(!r.kbd.is_high());
        assert!(!r.aux.is_high());
    }

    #[test]
    fn controller_self_test_and_interface_tests() {
        let mut r = rig();
        assert_eq!(r.command(CMD_SELF_TEST, &[], 1), [SELF_TEST_OK]);
        assert_eq!(r.command(CMD_KBD_TEST, &[], 1), [0x00]);
        assert_eq!(r.command(CMD_AUX_TEST, &[], 1), [0x00]);
        assert_eq!(
            r.command(CMD_PASSWORD_INSTALLED, &[], 1),
            [PASSWORD_NOT_INSTALLED]
        );
        assert_eq!(r.status() & STATUS_COMMAND_LAST, STATUS_COMMAND_LAST);
        r.put(0xf4);
        assert_eq!(r.status() & STATUS_COMMAND_LAST, 0);
    }

    #[test]
    fn command_byte_and_ram() {
        let mut r = rig();
        r.write_ctr(0x47);
        assert_eq!(r.read_ctr(), 0x47);
        assert_eq!(r.dev.command_byte(), 0x47);
        r.command(0x65, &[0x99], 0);
        assert_eq!(r.command(0x25, &[], 1), [0x99]);
        r.cmd(CMD_KBD_DISABLE);
        assert_eq!(r.read_ctr() & CTR_KBD_DISABLE, CTR_KBD_DISABLE);
        r.cmd(CMD_KBD_ENABLE);
        assert_eq!(r.read_ctr() & CTR_KBD_DISABLE, 0);
        // The system flag in the status follows the command byte.
        r.write_ctr(0x00);
        assert_eq!(r.status() & STATUS_SYSTEM, 0);
    }

    /// The probe order of Linux's i8042_controller_check(), _selftest(), _init(),
    /// i8042_set_mux_mode() and i8042_check_aux().
    #[test]
    fn linux_i8042_probe() {
        let mut r = rig();
        // i8042_flush: nothing there.
        assert!(r.drain().is_empty());
        // Self test.
        assert_eq!(r.command(CMD_SELF_TEST, &[], 1), [0x55]);
        // Two identical CTR reads.
        let a = r.read_ctr();
        let b = r.read_ctr();
        assert_eq!(a, b);
        let mut ctr = a;
        ctr |= CTR_KBD_DISABLE;
        ctr &= !CTR_KBD_INT;
        assert_ne!(r.status() & STATUS_UNLOCKED, 0, "no keylock warning");
        assert_ne!(ctr & CTR_XLATE, 0, "translated mode");
        r.write_ctr(ctr);
        assert!(r.drain().is_empty());

        // MUX detection: the loopback echoes F0, 56, A4 from the AUX side -> no multiplexer.
        for v in [0xf0, 0x56, 0xa4] {
            r.cmd(CMD_WRITE_AUX_OBUF);
            r.put(v);
            assert_eq!(r.status() & STATUS_AUX_DATA, STATUS_AUX_DATA);
            assert_eq!(r.data(), v);
        }

        // i8042_check_aux: loopback of 5A with AUXDATA.
        assert!(r.drain().is_empty());
        r.cmd(CMD_WRITE_AUX_OBUF);
        r.put(0x5a);
        assert_eq!(
            r.status() & (STATUS_OBF | STATUS_AUX_DATA),
            STATUS_OBF | STATUS_AUX_DATA
        );
        assert_eq!(r.data(), 0x5a);
        // Bit assignment test.
        r.cmd(CMD_AUX_DISABLE);
        assert_ne!(r.read_ctr() & CTR_AUX_DISABLE, 0);
        r.cmd(CMD_AUX_ENABLE);
        assert_eq!(r.read_ctr() & CTR_AUX_DISABLE, 0);
        // IRQ 12 delivery: enable the AUX port with its interrupt, loop back A5.
        ctr &= !CTR_AUX_DISABLE;
        ctr |= CTR_AUX_INT;
        r.write_ctr(ctr);
        let edges = r.aux.edges();
        r.cmd(CMD_WRITE_AUX_OBUF);
        r.put(0xa5);
        assert!(r.aux.is_high());
        assert_eq!(r.aux.edges(), edges + 1);
        assert!(!r.kbd.is_high());
        // The aux test IRQ handler reads status and data.
        let st = r.status();
        assert_ne!(st & STATUS_AUX_DATA, 0);
        assert_eq!(r.data(), 0xa5);
        assert!(!r.aux.is_high());
        // Disable the interface again.
        ctr |= CTR_AUX_DISABLE;
        ctr &= !CTR_AUX_INT;
        r.write_ctr(ctr);

        // i8042_enable_kbd_port.
        ctr &= !CTR_KBD_DISABLE;
        ctr |= CTR_KBD_INT;
        r.write_ctr(ctr);
        // The CTR read/write responses raised IRQ 1 only while KBD_INT was set; all consumed.
        assert!(!r.kbd.is_high());
    }

    /// atkbd_probe() + atkbd_reset_state() + atkbd_activate() through a translating controller,
    /// each byte delivered by IRQ 1.
    #[test]
    fn linux_atkbd_probe_translated() {
        let mut r = rig();
        r.write_ctr(CTR_XLATE | CTR_SYSTEM | CTR_KBD_INT | CTR_AUX_DISABLE);
        let exchange = |r: &mut Rig, bytes: &[u8]| -> Vec<u8> {
            let mut got = Vec::new();
            for &b in bytes {
                r.put(b);
                while r.kbd.is_high() {
                    let st = r.status();
                    assert_eq!(st & STATUS_AUX_DATA, 0);
                    got.push(r.data());
                }
            }
            got
        };
        // GETID: ACK, AB, 83 translated to 41.
        assert_eq!(exchange(&mut r, &[KBD_IDENTIFY]), [ACK, 0xab, 0x41]);
        // Deactivate, LEDs off, typematic, activate.
        assert_eq!(exchange(&mut r, &[KBD_DISABLE]), [ACK]);
        assert_eq!(exchange(&mut r, &[KBD_SET_LEDS, 0x00]), [ACK, ACK]);
        assert_eq!(exchange(&mut r, &[KBD_TYPEMATIC, 0x00]), [ACK, ACK]);
        assert_eq!(exchange(&mut r, &[KBD_ENABLE]), [ACK]);
        assert_eq!(exchange(&mut r, &[KBD_ECHO]), [ECHO]);
        // Reset: ACK then BAT (both >= 80h, untranslated).
        assert_eq!(exchange(&mut r, &[KBD_RESET]), [ACK, BAT_OK]);
        // Scan code set query: set 2 reads as 41h through the translation, as on real PCs.
        assert_eq!(
            exchange(&mut r, &[KBD_SCANCODE_SET, 0x00]),
            [ACK, ACK, 0x41]
        );
        // Unknown command: resend.
        assert_eq!(exchange(&mut r, &[0x01]), [RESEND]);
    }

    #[test]
    fn untranslated_keyboard_replies() {
        let mut r = rig();
        r.write_ctr(CTR_KBD_INT);
        r.put(KBD_IDENTIFY);
        assert_eq!(r.drain_bytes(), [ACK, 0xab, 0x83]);
        r.put(KBD_SCANCODE_SET);
        r.put(0x00);
        assert_eq!(r.drain_bytes(), [ACK, ACK, 0x02]);
        r.put(KBD_SCANCODE_SET);
        r.put(0x07);
        assert_eq!(r.drain_bytes(), [ACK, RESEND]);
        r.put(KBD_RESEND);
        assert_eq!(r.drain_bytes(), [RESEND]);
    }

    #[test]
    fn key_input_translated_and_raw() {
        let mut r = rig();
        // 'a' press and release, then right Ctrl (E0 14) press and release, in set 2.
        let codes = [0x1c, 0xf0, 0x1c, 0xe0, 0x14, 0xe0, 0xf0, 0x14];
        r.dev.key_input(&codes);
        assert!(r.kbd.is_high());
        assert_eq!(r.drain_bytes(), [0x1e, 0x9e, 0xe0, 0x1d, 0xe0, 0x9d]);
        assert!(!r.kbd.is_high());
        // F7 is the one code above 7Fh that the translation changes.
        r.dev.key_input(&[0x83, 0xf0, 0x83]);
        assert_eq!(r.drain_bytes(), [0x41, 0xc1]);
        // Without translation the set 2 bytes pass through.
        r.write_ctr(CTR_KBD_INT);
        r.dev.key_input(&codes);
        assert_eq!(r.drain_bytes(), codes);
    }

    #[test]
    fn keyboard_set_1_and_disable() {
        let mut r = rig();
        r.write_ctr(CTR_KBD_INT);
        r.put(KBD_SCANCODE_SET);
        r.put(0x01);
        assert_eq!(r.drain_bytes(), [ACK, ACK]);
        r.dev.key_input(&[0x76, 0xf0, 0x76]);
        assert_eq!(r.drain_bytes(), [0x01, 0x81]);
        // Disabled keyboard (F5h) sends nothing and forgets the set.
        r.put(KBD_DISABLE);
        assert_eq!(r.drain_bytes(), [ACK]);
        r.dev.key_input(&[0x1c]);
        assert!(r.drain().is_empty());
        r.put(KBD_ENABLE);
        assert_eq!(r.drain_bytes(), [ACK]);
        r.dev.key_input(&[0x1c]);
        assert_eq!(r.drain_bytes(), [0x1c]);
    }

    #[test]
    fn keyboard_interface_disable_holds_bytes() {
        let mut r = rig();
        r.cmd(CMD_KBD_DISABLE);
        r.dev.key_input(&[0x1c]);
        assert_eq!(r.status() & STATUS_OBF, 0);
        assert!(!r.kbd.is_high());
        r.cmd(CMD_KBD_ENABLE);
        assert!(r.kbd.is_high());
        assert_eq!(r.data(), 0x1e);
        // Writing to the keyboard enables its interface.
        r.cmd(CMD_KBD_DISABLE);
        r.put(KBD_ECHO);
        assert_eq!(r.drain_bytes(), [ECHO]);
        assert_eq!(r.read_ctr() & CTR_KBD_DISABLE, 0);
    }

    #[test]
    fn keyboard_irq_gated_by_command_byte() {
        let mut r = rig();
        r.write_ctr(CTR_XLATE);
        r.dev.key_input(&[0x1c]);
        assert_eq!(r.status() & STATUS_OBF, STATUS_OBF);
        assert!(!r.kbd.is_high());
        r.write_ctr(CTR_XLATE | CTR_KBD_INT);
        assert!(r.kbd.is_high());
        assert_eq!(r.data(), 0x1e);
        assert!(!r.kbd.is_high());
        // Each byte is its own rising edge.
        let e = r.kbd.edges();
        r.dev.key_input(&[0x1c, 0xf0, 0x1c]);
        r.data();
        r.data();
        assert_eq!(r.kbd.edges(), e + 2);
    }

    #[test]
    fn stale_data_reads_repeat_the_last_byte() {
        let mut r = rig();
        r.command(CMD_SELF_TEST, &[], 1);
        assert_eq!(r.data(), SELF_TEST_OK);
        assert_eq!(r.status() & STATUS_OBF, 0);
    }

    #[test]
    fn reset_through_pulse_and_output_port() {
        let mut r = rig();
        r.cmd(0xff); // pulse nothing
        assert!(r.control.requests.lock().unwrap().is_empty());
        r.cmd(0xfe);
        assert_eq!(*r.control.requests.lock().unwrap(), [VmRequest::Reset]);
        r.cmd(0xf0);
        assert_eq!(r.control.requests.lock().unwrap().len(), 2);
        // Output port: A20 off and on without reset, then bit 0 clear resets.
        let out = r.command(CMD_READ_OUTPUT_PORT, &[], 1)[0];
        assert_eq!(out & (OUT_NRESET | OUT_A20), OUT_NRESET | OUT_A20);
        r.command(CMD_WRITE_OUTPUT_PORT, &[out & !OUT_A20], 0);
        assert!(!r.dev.a20_enabled());
        r.cmd(CMD_A20_ON);
        assert!(r.dev.a20_enabled());
        assert_eq!(r.control.requests.lock().unwrap().len(), 2);
        r.command(CMD_WRITE_OUTPUT_PORT, &[0xfe], 0);
        assert_eq!(r.control.requests.lock().unwrap().len(), 3);
    }

    #[test]
    fn write_kbd_output_buffer() {
        let mut r = rig();
        r.cmd(CMD_WRITE_KBD_OBUF);
        r.put(0x1c);
        let st = r.status();
        assert_eq!(st & (STATUS_OBF | STATUS_AUX_DATA), STATUS_OBF);
        assert!(r.kbd.is_high());
        // D2h bytes are not translated.
        assert_eq!(r.data(), 0x1c);
    }

    #[test]
    fn mouse_protocol() {
        let mut r = rig();
        r.write_ctr(CTR_XLATE | CTR_KBD_INT | CTR_AUX_INT | CTR_SYSTEM);
        let aux = |r: &mut Rig, b: u8| -> Vec<u8> {
            r.command(CMD_WRITE_AUX, &[b], 0);
            let v = r.drain();
            assert!(v.iter().all(|(s, _)| s & STATUS_AUX_DATA != 0));
            v.into_iter().map(|(_, b)| b).collect()
        };
        // psmouse_probe: GETID -> ACK 00; reset -> ACK AA 00.
        assert_eq!(aux(&mut r, MOUSE_IDENTIFY), [ACK, 0x00]);
        assert_eq!(aux(&mut r, MOUSE_RESET), [ACK, BAT_OK, 0x00]);
        assert_eq!(aux(&mut r, MOUSE_SAMPLE_RATE), [ACK]);
        assert_eq!(aux(&mut r, 200), [ACK]);
        assert_eq!(aux(&mut r, MOUSE_SET_RESOLUTION), [ACK]);
        assert_eq!(aux(&mut r, 3), [ACK]);
        assert_eq!(aux(&mut r, MOUSE_SCALING_2_1), [ACK]);
        assert_eq!(aux(&mut r, MOUSE_STATUS), [ACK, 0x10, 3, 200]);
        assert_eq!(aux(&mut r, MOUSE_SCALING_1_1), [ACK]);
        assert_eq!(aux(&mut r, MOUSE_ENABLE), [ACK]);
        assert_eq!(aux(&mut r, MOUSE_STATUS), [ACK, 0x20, 3, 200]);
        // Movement while reporting: one 3-byte packet on IRQ 12.
        let e = r.aux.edges();
        r.dev.mouse_input(5, -3, 0x01);
        assert!(r.aux.is_high());
        assert!(!r.kbd.is_high());
        let pkt = r.drain();
        assert_eq!(
            pkt.iter().map(|&(_, b)| b).collect::<Vec<_>>(),
            [0x29, 5, 0xfd]
        );
        assert_eq!(r.aux.edges(), e + 3);
        assert_eq!(aux(&mut r, MOUSE_DISABLE), [ACK]);
        r.dev.mouse_input(1, 1, 0);
        assert!(r.drain().is_empty());
        // Remote mode and read data.
        assert_eq!(aux(&mut r, MOUSE_REMOTE_MODE), [ACK]);
        assert_eq!(aux(&mut r, MOUSE_READ_DATA), [ACK, 0x08, 0, 0]);
        assert_eq!(aux(&mut r, MOUSE_STREAM_MODE), [ACK]);
        // Wrap mode echoes until reset-wrap.
        assert_eq!(aux(&mut r, MOUSE_WRAP_MODE), [ACK]);
        assert_eq!(aux(&mut r, 0x42), [0x42]);
        assert_eq!(aux(&mut r, MOUSE_RESET_WRAP), [ACK]);
        assert_eq!(aux(&mut r, MOUSE_DEFAULTS), [ACK]);
        assert_eq!(aux(&mut r, MOUSE_RESEND), [ACK]);
        assert_eq!(aux(&mut r, 0x00), [RESEND]);
    }

    #[test]
    fn aux_disabled_holds_mouse_bytes_and_irq_gated() {
        let mut r = rig();
        // Power-on: aux disabled.
        r.command(CMD_WRITE_AUX, &[MOUSE_IDENTIFY], 0);
        assert_eq!(r.status() & STATUS_OBF, 0);
        r.cmd(CMD_AUX_ENABLE);
        assert_eq!(r.status() & STATUS_AUX_DATA, STATUS_AUX_DATA);
        assert!(!r.aux.is_high(), "AUX_INT is off");
        assert_eq!(r.drain_bytes(), [ACK, 0x00]);
    }

    #[test]
    fn controller_response_waits_for_a_full_output_buffer() {
        let mut r = rig();
        r.dev.key_input(&[0x1c]);
        r.cmd(0x20);
        assert_eq!(r.data(), 0x1e);
        assert_eq!(r.data(), CTR_POWER_ON);
    }

    #[test]
    fn wide_and_foreign_accesses_are_defined() {
        let mut r = rig();
        let mut d = [0u8; 4];
        r.dev.read(1, &mut d);
        assert_eq!(d[..3], [0xff; 3]);
        assert_eq!(
            d[3] & STATUS_UNLOCKED,
            STATUS_UNLOCKED,
            "offset 4 is the status port"
        );
        r.dev.write(1, &[1, 2, 3]);
        // A 16-bit read at 0x63 covers 0x63 (not ours) and 0x64 (status).
        let mut w = [0u8; 2];
        r.dev.read(3, &mut w);
        assert_eq!(w[0], 0xff);
        assert_eq!(w[1] & STATUS_UNLOCKED, STATUS_UNLOCKED);
        r.cmd(0x01); // unknown controller command
        r.dev.read(100, &mut d);
        assert_eq!(d, [0xff; 4]);
    }

    #[test]
    fn translation_table_is_a_permutation() {
        let mut seen = [false; 128];
        for &c in SET2_TO_SET1.iter() {
            assert!(!seen[c as usize]);
            seen[c as usize] = true;
        }
        // Spot checks: Esc, A, Enter, Space, F1, left Shift.
        assert_eq!(translate(0x76), 0x01);
        assert_eq!(translate(0x1c), 0x1e);
        assert_eq!(translate(0x5a), 0x1c);
        assert_eq!(translate(0x29), 0x39);
        assert_eq!(translate(0x05), 0x3b);
        assert_eq!(translate(0x12), 0x2a);
        assert_eq!(translate(0xe0), 0xe0);
    }

    /// A controller in the middle of things: translation and both interrupts on, the keyboard
    /// waiting for the LED byte, the mouse reporting, scan codes queued (one half-translated
    /// break), and a controller command waiting for its data byte.
    fn busy_rig() -> Rig {
        let mut r = rig();
        r.write_ctr(CTR_XLATE | CTR_KBD_INT | CTR_AUX_INT);
        r.put(KBD_SET_LEDS);
        r.data();
        r.command(CMD_WRITE_AUX, &[MOUSE_ENABLE], 0);
        r.dev.key_input(&[0x1c, 0xf0]);
        r.cmd(0x60);
        r
    }

    #[test]
    fn state_round_trip() {
        let r = busy_rig();
        let st = r.dev.state();
        assert_eq!(st.pending_command, Some(0x60));
        assert_eq!(st.keyboard.pending_command, Some(KBD_SET_LEDS));
        assert!(st.output_buffer.is_some());

        let mut q = rig();
        q.dev.restore(&st);
        assert_eq!(q.dev.state(), st);
        assert_eq!(q.kbd.is_high(), r.kbd.is_high());
        assert_eq!(q.aux.is_high(), r.aux.is_high());
    }

    #[test]
    fn state_round_trips_through_cbor() {
        let mut r = busy_rig();
        r.dev.mouse_input(5, -3, 0x01);
        let st = r.dev.state();
        assert!(!st.mouse.queue.is_empty());
        let mut q = rig();
        q.dev.restore(&cbor_round_trip(&st));
        assert_eq!(q.dev.state(), st);
        assert_eq!(q.kbd.is_high(), r.kbd.is_high());
        assert_eq!(q.aux.is_high(), r.aux.is_high());
        // Both finish the pending commands and hand out the same bytes on the same channels.
        for m in [&mut r, &mut q] {
            m.put(CTR_XLATE | CTR_KBD_INT | CTR_AUX_INT | CTR_SYSTEM);
        }
        assert_eq!(q.drain(), r.drain());
        for m in [&mut r, &mut q] {
            m.put(0x02);
        }
        assert_eq!(q.drain(), r.drain());
        assert_eq!(q.read_ctr(), r.read_ctr());
        assert_eq!(q.dev.state(), r.dev.state());
    }
}
