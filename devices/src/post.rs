//! TODO: post (being written)
