//! TODO: rtc (being written)
