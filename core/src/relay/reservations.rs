//! Reservation admission (in progress).
