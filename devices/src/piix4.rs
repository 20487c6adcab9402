//! TODO: piix4 (being written)
