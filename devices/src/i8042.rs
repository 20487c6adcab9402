//! TODO: i8042 (being written)
