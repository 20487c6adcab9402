//! TODO: pci (being written)
