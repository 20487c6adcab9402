//! TODO: i440bx (being written)
