//! Behaviour tests of the yamux session: two sessions wired back to back in memory, and
//! hand-crafted frames for peer faults.

mod faults;
mod flow_control;
mod lifecycle;
mod pair;
mod proptests;
mod streams;
mod zero_copy_writes;
