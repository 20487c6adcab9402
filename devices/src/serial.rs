//! TODO: serial (being written)
