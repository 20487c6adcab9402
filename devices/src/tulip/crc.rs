//! The CRCs the 21140A and its serial ROM use: the Ethernet CRC-32 (frame check sequence, hash
//! filter index, SROM checksum) and the CRC-8 of the SROM's ID block.

/// The reflected CRC-32 polynomial of IEEE 802.3.
const POLY_REFLECTED: u32 = 0xedb8_8320;

const fn table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ POLY_REFLECTED
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

static TABLE: [u32; 256] = table();

/// The CRC register after `data`, starting from all ones, without the final inversion (what
/// Linux calls `ether_crc_le`; the 21140A's hash filter uses its low 9 bits).
pub fn crc32_le_raw(data: &[u8]) -> u32 {
    data.iter().fold(!0u32, |c, &b| {
        TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8)
    })
}

/// The IEEE 802.3 CRC-32 (as zlib computes it): the frame check sequence of `data`, which goes
/// on the wire least significant byte first (`to_le_bytes`).
pub fn crc32(data: &[u8]) -> u32 {
    !crc32_le_raw(data)
}

/// The SROM ID block CRC (byte 16): CRC-8 with polynomial x^8 + x^2 + x + 1 and initial value FFh
/// over the first nine 16-bit words taken most significant bit first, where the ninth word
/// contributes only its high byte (byte 17) because its low byte holds the result. This is how
/// QEMU's 21143 model computes it; no driver kettle knows of checks it.
pub fn srom_id_block_crc(srom: &[u8]) -> u8 {
    let mut crc: u8 = 0xff;
    let mut feed = |bit: u8| {
        let top = crc >> 7;
        crc <<= 1;
        if top ^ bit != 0 {
            crc ^= 0x07;
        }
    };
    for word in 0..9 {
        let w = u16::from_le_bytes([srom[2 * word], srom[2 * word + 1]]);
        let last = if word == 8 { 8 } else { 0 };
        for bit in (last..16).rev() {
            feed(((w >> bit) & 1) as u8);
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        // The residue of a frame followed by its FCS.
        let mut f = b"some frame".to_vec();
        let fcs = crc32(&f);
        f.extend_from_slice(&fcs.to_le_bytes());
        assert_eq!(crc32_le_raw(&f), 0xdebb_20e3);
    }

    #[test]
    fn hash_index_of_broadcast_is_255() {
        // Linux's build_setup_frame_hash sets bit 255 for the broadcast address.
        assert_eq!(crc32_le_raw(&[0xff; 6]) & 0x1ff, 255);
    }

    /// The CRC byte is not an input to itself; byte 17 is.
    #[test]
    fn id_block_crc_is_stable() {
        let mut rom = [0u8; 18];
        rom[0] = 0x00;
        rom[1] = 0x0a;
        rom[2] = 0x14;
        rom[3] = 0x21;
        let a = srom_id_block_crc(&rom);
        rom[16] = a;
        assert_eq!(srom_id_block_crc(&rom), a);
        rom[17] = 1;
        assert_ne!(srom_id_block_crc(&rom), a);
    }
}
