//! The 21140A's destination address filter, loaded by setup frames (HRM section 4.2.3): 16
//! perfect addresses, the same table inverted, or a 512-bit multicast hash table with one perfect
//! physical address, or the hash table alone. Promiscuous mode, pass-all-multicast and
//! receive-all (CSR6) are applied by the caller on top of [`AddressFilter::matches`].
//!
//! The setup frame is 192 bytes read as 48 longwords of which only the low 16 bits count (the
//! 21140A reads them as little-endian words with CSR0 BLE clear): a perfect-filter address takes
//! three longwords, bytes 0-1 of each, so entry `k` is at bytes 12k, 12k+4 and 12k+8. In hash
//! mode longwords 0-31 hold the hash table, 16 bits each, and longwords 39-41 the physical
//! address. The hash index of an address is the low 9 bits of its little-endian CRC-32 register
//! (Linux's `ether_crc_le(6, addr) & 0x1ff`).

use super::crc::crc32_le_raw;
use super::spec::*;

/// How the table filters, from TDES1 FT1:FT0 of the setup frame that loaded it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterMode {
    /// 00: accept the 16 addresses of the table.
    Perfect,
    /// 01: multicast by the hash table, physical addresses by one perfect address.
    Hash,
    /// 10: accept everything except the 16 addresses of the table.
    Inverse,
    /// 11: every address by the hash table.
    HashOnly,
}

impl FilterMode {
    /// The mode a setup frame's TDES1 selects.
    pub fn from_tdes1(tdes1: u32) -> Self {
        match (tdes1 & TDES1_FT1 != 0, tdes1 & TDES1_FT0 != 0) {
            (false, false) => FilterMode::Perfect,
            (false, true) => FilterMode::Hash,
            (true, false) => FilterMode::Inverse,
            (true, true) => FilterMode::HashOnly,
        }
    }

    /// The read-only CSR6 bits that report the mode: HP, HO and IF.
    pub fn csr6_bits(self) -> u32 {
        match self {
            FilterMode::Perfect => 0,
            FilterMode::Hash => CSR6_HP,
            FilterMode::Inverse => CSR6_IF,
            FilterMode::HashOnly => CSR6_HP | CSR6_HO,
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            FilterMode::Perfect => 0,
            FilterMode::Hash => 1,
            FilterMode::Inverse => 2,
            FilterMode::HashOnly => 3,
        }
    }

    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => FilterMode::Perfect,
            1 => FilterMode::Hash,
            2 => FilterMode::Inverse,
            3 => FilterMode::HashOnly,
            _ => return None,
        })
    }
}

/// The hash table bit an address selects.
pub fn hash_index(addr: &[u8; ETH_ALEN]) -> usize {
    (crc32_le_raw(addr) & (HASH_BITS as u32 - 1)) as usize
}

/// Saved state of the filter.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FilterState {
    /// FT1:FT0 of the last setup frame (0 perfect, 1 hash, 2 inverse, 3 hash-only).
    pub mode: u8,
    /// False until the first setup frame after reset: the table is empty.
    pub loaded: bool,
    /// The perfect table (in hash mode entry 0 is the physical address).
    pub perfect: [[u8; ETH_ALEN]; PERFECT_ENTRIES],
    /// The hash table: bit n is bit n % 16 of word n / 16.
    pub hash: [u16; HASH_BITS / 16],
}

/// The address filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressFilter {
    mode: FilterMode,
    loaded: bool,
    perfect: [[u8; ETH_ALEN]; PERFECT_ENTRIES],
    hash: [u16; HASH_BITS / 16],
}

impl Default for AddressFilter {
    fn default() -> Self {
        Self::new()
    }
}

impl AddressFilter {
    /// The filter after reset: perfect mode with an empty table, matching nothing.
    pub fn new() -> Self {
        Self {
            mode: FilterMode::Perfect,
            loaded: false,
            perfect: [[0; ETH_ALEN]; PERFECT_ENTRIES],
            hash: [0; HASH_BITS / 16],
        }
    }

    pub fn mode(&self) -> FilterMode {
        self.mode
    }

    /// Loads a 192-byte setup frame in the given mode.
    pub fn load(&mut self, mode: FilterMode, frame: &[u8; SETUP_FRAME_LEN]) {
        let word = |i: usize| u16::from_le_bytes([frame[i], frame[i + 1]]);
        let address_at = |at: usize| {
            let mut a = [0u8; ETH_ALEN];
            for (k, chunk) in a.chunks_mut(2).enumerate() {
                chunk.copy_from_slice(&word(at + 4 * k).to_le_bytes());
            }
            a
        };
        self.mode = mode;
        self.loaded = true;
        self.perfect = [[0; ETH_ALEN]; PERFECT_ENTRIES];
        self.hash = [0; HASH_BITS / 16];
        match mode {
            FilterMode::Perfect | FilterMode::Inverse => {
                for (k, entry) in self.perfect.iter_mut().enumerate() {
                    *entry = address_at(12 * k);
                }
            }
            FilterMode::Hash | FilterMode::HashOnly => {
                for (i, w) in self.hash.iter_mut().enumerate() {
                    *w = word(4 * i);
                }
                if mode == FilterMode::Hash {
                    self.perfect[0] = address_at(HASH_MODE_PERFECT_OFFSET);
                }
            }
        }
    }

    fn in_table(&self, dest: &[u8; ETH_ALEN]) -> bool {
        self.loaded && self.perfect.iter().any(|e| e == dest)
    }

    fn in_hash(&self, dest: &[u8; ETH_ALEN]) -> bool {
        let n = hash_index(dest);
        self.hash[n / 16] & (1 << (n % 16)) != 0
    }

    /// Whether the table accepts a frame for `dest` (before PR, PM and RA are considered).
    pub fn matches(&self, dest: &[u8; ETH_ALEN]) -> bool {
        let multicast = dest[0] & 1 != 0;
        match self.mode {
            FilterMode::Perfect => self.in_table(dest),
            FilterMode::Inverse => !self.in_table(dest),
            FilterMode::Hash if multicast => self.in_hash(dest),
            FilterMode::Hash => self.loaded && self.perfect[0] == *dest,
            FilterMode::HashOnly => self.in_hash(dest),
        }
    }

    pub fn state(&self) -> FilterState {
        FilterState {
            mode: self.mode.to_u8(),
            loaded: self.loaded,
            perfect: self.perfect,
            hash: self.hash,
        }
    }

    /// Restores a saved filter; None when the mode is not one of the four.
    pub fn from_state(s: &FilterState) -> Option<Self> {
        Some(Self {
            mode: FilterMode::from_u8(s.mode)?,
            loaded: s.loaded,
            perfect: s.perfect,
            hash: s.hash,
        })
    }
}
