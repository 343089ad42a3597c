//! Property tests: arbitrary peer bytes, and arbitrary operation sequences between two sessions.
