//! Pure logic of mpaudit, free of I/O and of heap allocation on every path the
//! preload library uses, so that hooks can call it from signal handlers and
//! right after `fork`. The runner links the same code, so a glob or a path
//! means the same thing on both sides.

pub mod event;
pub mod flags;
pub mod glob;
pub mod handoff;
pub mod json;
pub mod launcher;
pub mod map;
pub mod namei;
pub mod objects;
pub mod path;
pub mod policy;
pub mod script;
pub mod table;
pub mod times;
pub mod walk;
