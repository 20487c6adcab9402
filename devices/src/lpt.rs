//! TODO: lpt (being written)
