//! Circuit admission (in progress).
